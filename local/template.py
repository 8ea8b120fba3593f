"""Reading a CloudFormation / SAM template: YAML with the short-form intrinsic tags, as plain data.

The loader turns ``!Ref X`` into ``{"Ref": "X"}``, ``!GetAtt A.B`` into ``{"Fn::GetAtt": ["A", "B"]}``,
``!Sub "..."`` into ``{"Fn::Sub": "..."}`` and so on, exactly the long forms CloudFormation itself
accepts, so the resolver (:mod:`local.intrinsics`) only ever sees one shape.  Timestamps stay strings
(``AWSTemplateFormatVersion: 2010-09-09`` is not a date to CloudFormation).  JSON templates load too.

Nothing here talks to AWS; :class:`Template` is a thin, validated view of the document's sections.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Final

import yaml

__all__ = ["Template", "TemplateError", "load_template", "parse_template"]


class TemplateError(ValueError):
    """The template cannot be read or uses something the local runtime cannot honour."""


#: Short-form tags whose argument is a scalar (``!Ref Name``) or a sequence/mapping (``!Sub [...]``).
_FUNCTION_TAGS: Final = {
    "Sub": "Fn::Sub",
    "If": "Fn::If",
    "Equals": "Fn::Equals",
    "Not": "Fn::Not",
    "And": "Fn::And",
    "Or": "Fn::Or",
    "Join": "Fn::Join",
    "Select": "Fn::Select",
    "Split": "Fn::Split",
    "FindInMap": "Fn::FindInMap",
    "ImportValue": "Fn::ImportValue",
    "Base64": "Fn::Base64",
    "GetAZs": "Fn::GetAZs",
    "Cidr": "Fn::Cidr",
    "Length": "Fn::Length",
    "ToJsonString": "Fn::ToJsonString",
    "Transform": "Fn::Transform",
}


#: SafeLoader with CloudFormation's tags, and without the timestamp resolver.
_Loader: Any = type("_Loader", (yaml.SafeLoader,), {})
_Loader.yaml_implicit_resolvers = {
    first: [(tag, regexp) for tag, regexp in resolvers if tag != "tag:yaml.org,2002:timestamp"]
    for first, resolvers in yaml.SafeLoader.yaml_implicit_resolvers.items()
}


def _construct(loader: Any, node: yaml.Node) -> Any:
    if isinstance(node, yaml.ScalarNode):
        return loader.construct_scalar(node)
    if isinstance(node, yaml.SequenceNode):
        return loader.construct_sequence(node, deep=True)
    if isinstance(node, yaml.MappingNode):
        return loader.construct_mapping(node, deep=True)
    raise TemplateError(f"unexpected YAML node {node!r}")  # pragma: no cover - yaml has three kinds


def _ref(loader: Any, node: yaml.Node) -> dict[str, Any]:
    return {"Ref": _construct(loader, node)}


def _condition(loader: Any, node: yaml.Node) -> dict[str, Any]:
    return {"Condition": _construct(loader, node)}


def _get_att(loader: Any, node: yaml.Node) -> dict[str, Any]:
    value = _construct(loader, node)
    if isinstance(value, str):
        resource, dot, attribute = value.partition(".")
        if not dot or not resource or not attribute:
            raise TemplateError(f"!GetAtt {value!r}: expected LogicalId.Attribute (line {_line(node)})")
        return {"Fn::GetAtt": [resource, attribute]}
    return {"Fn::GetAtt": value}


def _function(name: str) -> Any:
    def construct(loader: Any, node: yaml.Node) -> dict[str, Any]:
        return {name: _construct(loader, node)}

    return construct


def _line(node: yaml.Node) -> int:
    return int(node.start_mark.line) + 1


_Loader.add_constructor("!Ref", _ref)
_Loader.add_constructor("!Condition", _condition)
_Loader.add_constructor("!GetAtt", _get_att)
for _tag, _name in _FUNCTION_TAGS.items():
    _Loader.add_constructor(f"!{_tag}", _function(_name))


def _no_duplicate_keys(loader: Any, node: yaml.MappingNode, deep: bool = False) -> dict[Any, Any]:
    seen: set[Any] = set()
    for key_node, _ in node.value:
        key = loader.construct_object(key_node, deep=deep)
        if key in seen:
            raise TemplateError(f"duplicate key {key!r} (line {_line(key_node)})")
        seen.add(key)
    return dict(yaml.SafeLoader.construct_mapping(loader, node, deep=deep))


_Loader.construct_mapping = _no_duplicate_keys


@dataclass(frozen=True)
class Template:
    """The sections of one template, as loaded (intrinsics still unresolved).

    Attributes
    ----------
    path
        The file it came from; ``CodeUri`` and ``ContentUri`` are relative to its folder.
    document
        The whole document.
    """

    path: Path
    document: Mapping[str, Any]

    @property
    def base_dir(self) -> Path:
        return self.path.parent

    def section(self, name: str) -> dict[str, Any]:
        value = self.document.get(name) or {}
        if not isinstance(value, dict):
            raise TemplateError(f"{name} must be a mapping, not {type(value).__name__}")
        return value

    @property
    def parameters(self) -> dict[str, Any]:
        return self.section("Parameters")

    @property
    def conditions(self) -> dict[str, Any]:
        return self.section("Conditions")

    @property
    def mappings(self) -> dict[str, Any]:
        return self.section("Mappings")

    @property
    def resources(self) -> dict[str, Any]:
        resources = self.section("Resources")
        for logical_id, resource in resources.items():
            if not isinstance(resource, dict) or not isinstance(resource.get("Type"), str):
                raise TemplateError(f"resource {logical_id} needs a Type")
        return resources

    @property
    def outputs(self) -> dict[str, Any]:
        return self.section("Outputs")

    @property
    def globals(self) -> dict[str, Any]:
        return self.section("Globals")

    @property
    def transforms(self) -> list[str]:
        transform = self.document.get("Transform") or []
        return [transform] if isinstance(transform, str) else list(transform)


def parse_template(text: str, path: Path | str = "template.yaml") -> Template:
    """A template from its text (YAML or JSON)."""
    try:
        document = yaml.load(text, Loader=_Loader)  # noqa: S506 - _Loader is a SafeLoader
    except yaml.YAMLError as error:
        raise TemplateError(f"{path}: not valid YAML: {error}") from error
    if not isinstance(document, dict):
        raise TemplateError(f"{path}: a template is a mapping at the top level")
    template = Template(Path(path), document)
    _ = template.resources  # validate early
    return template


def load_template(path: Path | str) -> Template:
    """A template from a file."""
    path = Path(path)
    try:
        text = path.read_text(encoding="utf-8")
    except OSError as error:
        raise TemplateError(f"cannot read template {path}: {error}") from error
    return parse_template(text, path.resolve())

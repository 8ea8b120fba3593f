"""CloudFormation's intrinsic functions, parameters, pseudo parameters and conditions, resolved locally.

:class:`Resolver` evaluates a template value (as loaded by :mod:`local.template`) against the stack's
parameters, its pseudo parameters and its conditions; references to *resources* (``Ref`` of a resource,
``Fn::GetAtt``, ``${Res.Attr}`` in ``Fn::Sub``) go to a callback, so the same resolver serves unit
tests (a dict) and the runtime (the resources created so far).  :func:`references` finds the resources
a value depends on, following only the branch of ``Fn::If`` that the conditions select, and
:func:`creation_order` sorts resources so that every one comes after what it references.

Pure: no I/O, no AWS.
"""

from __future__ import annotations

import base64
import json
import re
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass
from typing import Any, Final

from local.template import TemplateError

__all__ = [
    "NO_VALUE",
    "AttributeLookup",
    "Parameters",
    "PseudoParameters",
    "Resolver",
    "creation_order",
    "references",
    "resolve_parameters",
]


class _NoValue:
    """``AWS::NoValue``: the property (or list item) is removed."""

    def __repr__(self) -> str:
        return "AWS::NoValue"


NO_VALUE: Final = _NoValue()

#: ``(logical_id, attribute)`` → value; ``attribute`` None means ``Ref``.
AttributeLookup = Callable[[str, str | None], Any]
Parameters = Mapping[str, Any]

_SUB_VARIABLE: Final = re.compile(r"\$\{([^}]*)\}")
_LIST_TYPES: Final = ("CommaDelimitedList",)


@dataclass(frozen=True)
class PseudoParameters:
    """The values of ``AWS::…`` pseudo parameters for one local stack."""

    stack_name: str = "local"
    region: str = "us-east-1"
    account_id: str = "123456789012"
    partition: str = "aws"
    url_suffix: str = "amazonaws.com"

    @property
    def stack_id(self) -> str:
        return (
            f"arn:{self.partition}:cloudformation:{self.region}:{self.account_id}:stack/{self.stack_name}/"
            "00000000-0000-0000-0000-000000000000"
        )

    def as_dict(self) -> dict[str, Any]:
        return {
            "AWS::Region": self.region,
            "AWS::AccountId": self.account_id,
            "AWS::StackName": self.stack_name,
            "AWS::StackId": self.stack_id,
            "AWS::Partition": self.partition,
            "AWS::URLSuffix": self.url_suffix,
            "AWS::NotificationARNs": [],
            "AWS::NoValue": NO_VALUE,
        }


def resolve_parameters(declared: Mapping[str, Any], overrides: Mapping[str, Any]) -> dict[str, Any]:
    """Each declared parameter's value: the override, else the default; checked like CloudFormation.

    ``Number`` values become ``int`` or ``float``; ``CommaDelimitedList`` and ``List<…>`` become lists.
    """
    unknown = sorted(set(overrides) - set(declared))
    if unknown:
        raise TemplateError(f"parameter override(s) not declared in the template: {', '.join(unknown)}")
    values: dict[str, Any] = {}
    for name, declaration in declared.items():
        spec = declaration or {}
        kind = str(spec.get("Type", "String"))
        if name in overrides:
            raw = overrides[name]
        elif "Default" in spec:
            raw = spec["Default"]
        else:
            raise TemplateError(f"parameter {name} has no Default: give it a value")
        values[name] = _parameter_value(name, kind, raw, spec)
    return values


def _parameter_value(name: str, kind: str, raw: Any, spec: Mapping[str, Any]) -> Any:
    if kind in _LIST_TYPES or kind.startswith("List<"):
        items = raw if isinstance(raw, list) else [part.strip() for part in str(raw).split(",")]
        items = [] if items == [""] else [str(item) for item in items]
        for item in items:
            _check_allowed(name, item, spec)
        return items
    text = _text(raw)
    _check_allowed(name, text, spec)
    if kind == "Number":
        try:
            number = float(text)
        except ValueError:
            raise TemplateError(f"parameter {name} is a Number, got {text!r}") from None
        if "MinValue" in spec and number < float(spec["MinValue"]):
            raise TemplateError(f"parameter {name}={text} is below MinValue {spec['MinValue']}")
        if "MaxValue" in spec and number > float(spec["MaxValue"]):
            raise TemplateError(f"parameter {name}={text} is above MaxValue {spec['MaxValue']}")
        return int(number) if number.is_integer() and "." not in text else number
    if "MinLength" in spec and len(text) < int(spec["MinLength"]):
        raise TemplateError(f"parameter {name} is shorter than MinLength {spec['MinLength']}")
    if "MaxLength" in spec and len(text) > int(spec["MaxLength"]):
        raise TemplateError(f"parameter {name} is longer than MaxLength {spec['MaxLength']}")
    pattern = spec.get("AllowedPattern")
    if pattern is not None and not re.fullmatch(str(pattern), text):
        raise TemplateError(f"parameter {name}={text!r} does not match AllowedPattern {pattern}")
    return text


def _check_allowed(name: str, value: str, spec: Mapping[str, Any]) -> None:
    allowed = spec.get("AllowedValues")
    if allowed is not None and value not in [_text(item) for item in allowed]:
        raise TemplateError(f"parameter {name}={value!r} is not one of AllowedValues {allowed}")


def _text(value: Any) -> str:
    """A scalar as CloudFormation passes it on: booleans in lower case, numbers as written."""
    if isinstance(value, bool):
        return "true" if value else "false"
    return str(value)


class Resolver:
    """Evaluates intrinsic functions in template values.

    Parameters
    ----------
    parameters
        Resolved parameter values (:func:`resolve_parameters`).
    conditions
        The template's ``Conditions`` section (evaluated on first use, cycles refused).
    lookup
        ``lookup(logical_id, None)`` is ``Ref`` of a resource, ``lookup(logical_id, "Arn")`` its
        ``Fn::GetAtt``.  Raise :class:`TemplateError` for what does not exist.
    mappings
        The ``Mappings`` section for ``Fn::FindInMap``.
    """

    def __init__(
        self,
        parameters: Parameters,
        *,
        pseudo: PseudoParameters | None = None,
        conditions: Mapping[str, Any] | None = None,
        mappings: Mapping[str, Any] | None = None,
        lookup: AttributeLookup | None = None,
    ) -> None:
        self.parameters = dict(parameters)
        self.pseudo = pseudo or PseudoParameters()
        self._pseudo = self.pseudo.as_dict()
        self._condition_specs = dict(conditions or {})
        self._conditions: dict[str, bool] = {}
        self._evaluating: list[str] = []
        self.mappings = dict(mappings or {})
        self._lookup = lookup or _no_resources

    # ------------------------------------------------------------------ conditions
    def condition(self, name: str) -> bool:
        """The value of a named condition."""
        if name in self._conditions:
            return self._conditions[name]
        if name not in self._condition_specs:
            raise TemplateError(f"condition {name} is not defined")
        if name in self._evaluating:
            cycle = " → ".join([*self._evaluating, name])
            raise TemplateError(f"conditions refer to each other in a cycle: {cycle}")
        self._evaluating.append(name)
        try:
            value = self._boolean(self.resolve(self._condition_specs[name], f"Conditions.{name}"), name)
        finally:
            self._evaluating.pop()
        self._conditions[name] = value
        return value

    def conditions(self) -> dict[str, bool]:
        """Every condition of the template, evaluated."""
        return {name: self.condition(name) for name in self._condition_specs}

    @staticmethod
    def _boolean(value: Any, where: str) -> bool:
        if isinstance(value, bool):
            return value
        if isinstance(value, str) and value.lower() in ("true", "false"):
            return value.lower() == "true"
        raise TemplateError(f"{where}: a condition must be true or false, got {value!r}")

    # ------------------------------------------------------------------ values
    def resolve(self, value: Any, where: str = "template") -> Any:
        """``value`` with every intrinsic function evaluated; ``AWS::NoValue`` entries removed."""
        if isinstance(value, dict):
            if len(value) == 1:
                ((key, argument),) = value.items()
                if key in ("Ref", "Condition") or key.startswith("Fn::"):
                    return self._function(key, argument, where)
            resolved = {key: self.resolve(item, f"{where}.{key}") for key, item in value.items()}
            return {key: item for key, item in resolved.items() if item is not NO_VALUE}
        if isinstance(value, list):
            items = [self.resolve(item, f"{where}[{index}]") for index, item in enumerate(value)]
            return [item for item in items if item is not NO_VALUE]
        return value

    def _function(self, name: str, argument: Any, where: str) -> Any:
        handler = _FUNCTIONS.get(name)
        if handler is None:
            raise TemplateError(f"{where}: {name} is not supported by the local runtime")
        return handler(self, argument, f"{where} ({name})")

    def ref(self, name: str, where: str) -> Any:
        if not isinstance(name, str):
            raise TemplateError(f"{where}: Ref takes a name, got {name!r}")
        if name in self.parameters:
            return self.parameters[name]
        if name in self._pseudo:
            return self._pseudo[name]
        if name.startswith("AWS::"):
            raise TemplateError(f"{where}: unknown pseudo parameter {name}")
        return self._lookup(name, None)

    def get_att(self, resource: str, attribute: str, where: str) -> Any:
        del where
        return self._lookup(resource, attribute)

    # ------------------------------------------------------------------ functions
    def _fn_ref(self, argument: Any, where: str) -> Any:
        return self.ref(self.resolve(argument, where), where)

    def _fn_condition(self, argument: Any, where: str) -> Any:
        if not isinstance(argument, str):
            raise TemplateError(f"{where}: Condition takes a condition name")
        return self.condition(argument)

    def _fn_get_att(self, argument: Any, where: str) -> Any:
        if isinstance(argument, str):
            resource, _, attribute = argument.partition(".")
            argument = [resource, attribute]
        if not isinstance(argument, list) or len(argument) != 2:
            raise TemplateError(f"{where}: Fn::GetAtt takes [LogicalId, Attribute]")
        resource, attribute = argument[0], self.resolve(argument[1], where)
        if not isinstance(resource, str) or not isinstance(attribute, str) or not attribute:
            raise TemplateError(f"{where}: Fn::GetAtt takes [LogicalId, Attribute], got {argument!r}")
        return self.get_att(resource, attribute, where)

    def _fn_sub(self, argument: Any, where: str) -> str:
        if isinstance(argument, str):
            text, variables = argument, {}
        elif isinstance(argument, list) and len(argument) == 2 and isinstance(argument[1], dict):
            text, variables = argument[0], self.resolve(argument[1], where)
        else:
            raise TemplateError(f"{where}: Fn::Sub takes a string or [string, {{variables}}]")
        if not isinstance(text, str):
            raise TemplateError(f"{where}: Fn::Sub's template must be a string")

        def substitute(match: re.Match[str]) -> str:
            inner = match.group(1)
            if inner.startswith("!"):
                return "${" + inner[1:] + "}"
            name = inner.strip()
            if name in variables:
                value = variables[name]
            elif "." in name and not name.startswith("AWS::"):
                resource, _, attribute = name.partition(".")
                value = self.get_att(resource, attribute, where)
            else:
                value = self.ref(name, where)
            if isinstance(value, list | dict) or value is NO_VALUE:
                raise TemplateError(f"{where}: ${{{name}}} is not a string ({value!r})")
            return _text(value)

        return _SUB_VARIABLE.sub(substitute, text)

    def _fn_if(self, argument: Any, where: str) -> Any:
        if not isinstance(argument, list) or len(argument) != 3 or not isinstance(argument[0], str):
            raise TemplateError(f"{where}: Fn::If takes [ConditionName, ValueIfTrue, ValueIfFalse]")
        chosen = argument[1] if self.condition(argument[0]) else argument[2]
        return self.resolve(chosen, where)

    def _fn_equals(self, argument: Any, where: str) -> bool:
        values = self._arguments(argument, 2, where)
        left, right = (self.resolve(value, where) for value in values)
        return bool(_comparable(left) == _comparable(right))

    def _fn_not(self, argument: Any, where: str) -> bool:
        (value,) = self._arguments(argument, 1, where)
        return not self._boolean(self.resolve(value, where), where)

    def _fn_and(self, argument: Any, where: str) -> bool:
        values = self._arguments(argument, None, where)
        return all(self._boolean(self.resolve(value, where), where) for value in values)

    def _fn_or(self, argument: Any, where: str) -> bool:
        values = self._arguments(argument, None, where)
        return any(self._boolean(self.resolve(value, where), where) for value in values)

    def _fn_join(self, argument: Any, where: str) -> str:
        delimiter, values = self._arguments(argument, 2, where)
        items = self.resolve(values, where)
        if not isinstance(delimiter, str) or not isinstance(items, list):
            raise TemplateError(f"{where}: Fn::Join takes [delimiter, [values]]")
        return str(delimiter).join(_text(item) for item in items)

    def _fn_select(self, argument: Any, where: str) -> Any:
        index, values = self._arguments(argument, 2, where)
        position, items = int(self.resolve(index, where)), self.resolve(values, where)
        if not isinstance(items, list) or not 0 <= position < len(items):
            raise TemplateError(f"{where}: Fn::Select index {position} out of range for {items!r}")
        return items[position]

    def _fn_split(self, argument: Any, where: str) -> list[str]:
        delimiter, value = self._arguments(argument, 2, where)
        text = self.resolve(value, where)
        if not isinstance(delimiter, str) or not isinstance(text, str):
            raise TemplateError(f"{where}: Fn::Split takes [delimiter, string]")
        return text.split(delimiter)

    def _fn_find_in_map(self, argument: Any, where: str) -> Any:
        if not isinstance(argument, list) or len(argument) not in (3, 4):
            raise TemplateError(f"{where}: Fn::FindInMap takes [MapName, TopLevelKey, SecondLevelKey]")
        names = [self.resolve(item, where) for item in argument[:3]]
        try:
            return self.mappings[names[0]][names[1]][names[2]]
        except (KeyError, TypeError):
            if len(argument) == 4 and isinstance(argument[3], dict) and "DefaultValue" in argument[3]:
                return self.resolve(argument[3]["DefaultValue"], where)
            raise TemplateError(f"{where}: no mapping entry {'/'.join(map(str, names))}") from None

    def _fn_base64(self, argument: Any, where: str) -> str:
        return base64.b64encode(_text(self.resolve(argument, where)).encode()).decode()

    def _fn_get_azs(self, argument: Any, where: str) -> list[str]:
        region = self.resolve(argument, where) or self.pseudo.region
        return [f"{region}{zone}" for zone in "abc"]

    def _fn_length(self, argument: Any, where: str) -> int:
        items = self.resolve(argument, where)
        if not isinstance(items, list):
            raise TemplateError(f"{where}: Fn::Length takes a list")
        return len(items)

    def _fn_to_json_string(self, argument: Any, where: str) -> str:
        return json.dumps(self.resolve(argument, where), separators=(",", ":"))

    def _fn_import_value(self, argument: Any, where: str) -> Any:
        raise TemplateError(
            f"{where}: Fn::ImportValue reads another stack's exports, which do not exist locally; "
            "pass the value as a parameter instead"
        )

    def _unsupported(self, argument: Any, where: str) -> Any:
        raise TemplateError(f"{where}: not supported by the local runtime")

    @staticmethod
    def _arguments(argument: Any, count: int | None, where: str) -> list[Any]:
        if not isinstance(argument, list) or (count is not None and len(argument) != count):
            expected = f"{count} arguments" if count is not None else "a list of arguments"
            raise TemplateError(f"{where}: expected {expected}, got {argument!r}")
        return argument


def _comparable(value: Any) -> Any:
    return _text(value) if isinstance(value, bool | int | float) else value


def _no_resources(logical_id: str, attribute: str | None) -> Any:
    what = logical_id if attribute is None else f"{logical_id}.{attribute}"
    raise TemplateError(f"{what}: unknown parameter or resource")


_FUNCTIONS: Final[dict[str, Callable[[Resolver, Any, str], Any]]] = {
    "Ref": Resolver._fn_ref,
    "Condition": Resolver._fn_condition,
    "Fn::GetAtt": Resolver._fn_get_att,
    "Fn::Sub": Resolver._fn_sub,
    "Fn::If": Resolver._fn_if,
    "Fn::Equals": Resolver._fn_equals,
    "Fn::Not": Resolver._fn_not,
    "Fn::And": Resolver._fn_and,
    "Fn::Or": Resolver._fn_or,
    "Fn::Join": Resolver._fn_join,
    "Fn::Select": Resolver._fn_select,
    "Fn::Split": Resolver._fn_split,
    "Fn::FindInMap": Resolver._fn_find_in_map,
    "Fn::Base64": Resolver._fn_base64,
    "Fn::GetAZs": Resolver._fn_get_azs,
    "Fn::Length": Resolver._fn_length,
    "Fn::ToJsonString": Resolver._fn_to_json_string,
    "Fn::ImportValue": Resolver._fn_import_value,
    "Fn::Cidr": Resolver._unsupported,
    "Fn::Transform": Resolver._unsupported,
}


# ---------------------------------------------------------------------- dependencies
def references(value: Any, resolver: Resolver, resources: Iterable[str]) -> set[str]:
    """The resources ``value`` refers to (``Ref``, ``Fn::GetAtt``, ``Fn::Sub``), in chosen branches only."""
    known = set(resources)
    found: set[str] = set()
    _collect(value, resolver, known, found)
    return found


def _collect(value: Any, resolver: Resolver, known: set[str], found: set[str]) -> None:
    if isinstance(value, list):
        for item in value:
            _collect(item, resolver, known, found)
        return
    if not isinstance(value, dict):
        return
    if len(value) == 1:
        ((key, argument),) = value.items()
        if key in ("Ref", "Fn::GetAtt"):
            found.update({_referenced_name(key, argument)} & known)
            return
        if key == "Fn::If" and isinstance(argument, list) and len(argument) == 3:
            _collect(argument[1] if resolver.condition(argument[0]) else argument[2], resolver, known, found)
            return
        if key == "Fn::Sub":
            text, variables = (argument, {}) if isinstance(argument, str) else (argument[0], argument[1])
            _collect(variables, resolver, known, found)
            names = {match.group(1).strip().partition(".")[0] for match in _SUB_VARIABLE.finditer(str(text))}
            found.update({name for name in names if not name.startswith("!")} & known - set(variables))
            return
    for item in value.values():
        _collect(item, resolver, known, found)


def _referenced_name(key: str, argument: Any) -> str:
    if key == "Ref":
        return argument if isinstance(argument, str) else ""
    if isinstance(argument, str):
        return argument.partition(".")[0]
    return str(argument[0]) if isinstance(argument, list) and argument else ""


def creation_order(dependencies: Mapping[str, set[str]]) -> list[str]:
    """Resources sorted so each comes after its dependencies (template order among equals)."""
    order: list[str] = []
    state: dict[str, str] = {}
    position = list(dependencies)

    def visit(name: str, path: list[str]) -> None:
        if state.get(name) == "done":
            return
        if state.get(name) == "visiting":
            cycle = " → ".join([*path[path.index(name) :], name])
            raise TemplateError(f"circular dependency between resources: {cycle}")
        state[name] = "visiting"
        missing = sorted(dependencies[name] - set(dependencies))
        if missing:
            raise TemplateError(f"{name} depends on {', '.join(missing)}, which is not in the stack")
        for dependency in sorted(dependencies[name], key=position.index):
            visit(dependency, [*path, name])
        state[name] = "done"
        order.append(name)

    for name in dependencies:
        visit(name, [])
    return order

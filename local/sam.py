"""The parts of the SAM transform the local runtime needs, on template data (pure).

* :func:`apply_globals` merges ``Globals`` into each serverless resource the way SAM does: a resource's
  own scalar wins, maps merge key by key (the resource's keys win), lists are additive (globals
  first), and a value that is an intrinsic function is never merged, only replaced.
* :func:`implicit_resources` adds the resources SAM generates that templates commonly reference, today
  the execution role ``<Function>Role`` of a function without ``Role``.
* :func:`expand_events` turns a function's ``Events`` into the resources SAM generates for them, with
  the same logical ids (``<Function><Event>``): an ``AWS::Lambda::EventSourceMapping`` for ``SQS``, an
  ``AWS::Events::Rule`` targeting the function for ``EventBridgeRule``, ``Schedule`` and
  ``ScheduleV2``.  Other event types are refused with an error naming them.
"""

from __future__ import annotations

import copy
from collections.abc import Mapping
from typing import Any, Final

from local.template import TemplateError

__all__ = [
    "GLOBAL_SECTIONS",
    "SUPPORTED_EVENTS",
    "apply_globals",
    "expand_events",
    "implicit_resources",
    "is_intrinsic",
]

#: ``Globals`` section → the resource type it applies to.
GLOBAL_SECTIONS: Final = {
    "Function": "AWS::Serverless::Function",
    "SimpleTable": "AWS::Serverless::SimpleTable",
}

_LAMBDA_TRUST: Final = {
    "Version": "2012-10-17",
    "Statement": [
        {"Effect": "Allow", "Principal": {"Service": ["lambda.amazonaws.com"]}, "Action": ["sts:AssumeRole"]}
    ],
}


def is_intrinsic(value: Any) -> bool:
    """True for ``{"Ref": …}``, ``{"Fn::…": …}`` and ``{"Condition": …}``."""
    if not isinstance(value, dict) or len(value) != 1:
        return False
    key = next(iter(value))
    return key in ("Ref", "Condition") or key.startswith("Fn::")


def _merge(global_value: Any, local_value: Any) -> Any:
    if is_intrinsic(global_value) or is_intrinsic(local_value):
        return copy.deepcopy(local_value)
    if isinstance(global_value, dict) and isinstance(local_value, dict):
        merged = copy.deepcopy(global_value)
        for key, value in local_value.items():
            merged[key] = _merge(global_value[key], value) if key in global_value else copy.deepcopy(value)
        return merged
    if isinstance(global_value, list) and isinstance(local_value, list):
        return copy.deepcopy(global_value) + copy.deepcopy(local_value)
    return copy.deepcopy(local_value)


def apply_globals(resources: Mapping[str, Any], globals_section: Mapping[str, Any]) -> dict[str, Any]:
    """A copy of ``resources`` with ``Globals`` merged into the serverless resources' properties."""
    merged: dict[str, Any] = {}
    for logical_id, declared in resources.items():
        resource = copy.deepcopy(declared)
        for section, resource_type in GLOBAL_SECTIONS.items():
            defaults = globals_section.get(section)
            if resource.get("Type") == resource_type and isinstance(defaults, dict):
                resource["Properties"] = _merge(defaults, resource.get("Properties") or {})
        merged[logical_id] = resource
    return merged


def implicit_resources(resources: Mapping[str, Any]) -> dict[str, Any]:
    """``resources`` plus the execution role SAM creates for each function that names none."""
    expanded = dict(resources)
    for logical_id, resource in resources.items():
        properties = resource.get("Properties") or {}
        role_id = f"{logical_id}Role"
        if (
            resource.get("Type") == "AWS::Serverless::Function"
            and "Role" not in properties
            and role_id not in expanded
        ):
            expanded[role_id] = {
                "Type": "AWS::IAM::Role",
                "Properties": {"AssumeRolePolicyDocument": copy.deepcopy(_LAMBDA_TRUST)},
                **({"Condition": resource["Condition"]} if "Condition" in resource else {}),
            }
    return expanded


#: SAM event types the local runtime runs.
SUPPORTED_EVENTS: Final = ("SQS", "EventBridgeRule", "Schedule", "ScheduleV2")
_MAPPING_KEYS: Final = (
    "BatchSize",
    "MaximumBatchingWindowInSeconds",
    "FunctionResponseTypes",
    "Enabled",
    "FilterCriteria",
    "ScalingConfig",
)


def expand_events(resources: Mapping[str, Any]) -> dict[str, Any]:
    """``resources`` with each function's ``Events`` replaced by the resources SAM generates for them."""
    expanded: dict[str, Any] = {}
    for logical_id, declared in resources.items():
        if declared.get("Type") != "AWS::Serverless::Function":
            expanded[logical_id] = declared
            continue
        resource = copy.deepcopy(declared)
        properties = resource.setdefault("Properties", {}) or {}
        events = properties.pop("Events", None) or {}
        expanded[logical_id] = resource
        for event_name, event in events.items():
            event_id = f"{logical_id}{event_name}"
            if event_id in resources or event_id in expanded:
                raise TemplateError(f"{logical_id}.Events.{event_name}: logical id {event_id} is taken")
            generated = _event_resource(logical_id, event_name, event or {})
            if "Condition" in resource:
                generated["Condition"] = resource["Condition"]
            expanded[event_id] = generated
    return expanded


def _event_resource(function_id: str, event_name: str, event: Mapping[str, Any]) -> dict[str, Any]:
    kind = event.get("Type")
    props = dict(event.get("Properties") or {})
    where = f"{function_id}.Events.{event_name}"
    function_arn = {"Fn::GetAtt": [function_id, "Arn"]}
    if kind == "SQS":
        mapping = {"EventSourceArn": props["Queue"], "FunctionName": {"Ref": function_id}}
        mapping.update({key: props[key] for key in _MAPPING_KEYS if key in props})
        return {"Type": "AWS::Lambda::EventSourceMapping", "Properties": mapping}
    if kind == "EventBridgeRule":
        target: dict[str, Any] = {
            "Arn": function_arn,
            "Id": (props.get("Target") or {}).get("Id", f"{function_id}{event_name}LambdaTarget"),
        }
        target.update(
            {
                key: props[key]
                for key in ("Input", "InputPath", "InputTransformer", "RetryPolicy", "DeadLetterConfig")
                if key in props
            }
        )
        rule: dict[str, Any] = {"EventPattern": props["Pattern"], "Targets": [target]}
        if "EventBusName" in props:
            rule["EventBusName"] = props["EventBusName"]
        if "RuleName" in props:
            rule["Name"] = props["RuleName"]
        if "State" in props:
            rule["State"] = props["State"]
        elif props.get("Enabled") is False:
            rule["State"] = "DISABLED"
        return {"Type": "AWS::Events::Rule", "Properties": rule}
    if kind in ("Schedule", "ScheduleV2"):
        expression = props.get("Schedule") if kind == "Schedule" else props.get("ScheduleExpression")
        if expression is None:
            raise TemplateError(f"{where}: a {kind} event needs a schedule expression")
        target = {"Arn": function_arn, "Id": f"{function_id}{event_name}LambdaTarget"}
        if "Input" in props:
            target["Input"] = props["Input"]
        rule = {"ScheduleExpression": expression, "Targets": [target]}
        if "Name" in props:
            rule["Name"] = props["Name"]
        state = props.get("State")
        if state is None and props.get("Enabled") is False:
            state = "DISABLED"
        if state is not None:
            rule["State"] = state
        return {"Type": "AWS::Events::Rule", "Properties": rule}
    raise TemplateError(
        f"{where}: event type {kind!r} is not supported by the local runtime "
        f"(supported: {', '.join(SUPPORTED_EVENTS)})"
    )

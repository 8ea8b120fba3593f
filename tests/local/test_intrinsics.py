"""Parameters, pseudo parameters, conditions and intrinsic functions, resolved without AWS."""

from __future__ import annotations

from typing import Any

import pytest

from local.intrinsics import (
    NO_VALUE,
    PseudoParameters,
    Resolver,
    creation_order,
    references,
    resolve_parameters,
)
from local.template import TemplateError, parse_template

pytestmark = pytest.mark.unit

RESOURCES = {
    ("Bucket", None): "my-bucket",
    ("Bucket", "Arn"): "arn:aws:s3:::my-bucket",
    ("Queue", None): "https://queue",
    ("Queue", "Arn"): "arn:aws:sqs:us-east-1:123456789012:q",
}


def lookup(logical_id: str, attribute: str | None) -> Any:
    try:
        return RESOURCES[(logical_id, attribute)]
    except KeyError:
        raise TemplateError(f"no {logical_id}.{attribute}") from None


def resolver(parameters: dict[str, Any] | None = None, conditions: dict[str, Any] | None = None) -> Resolver:
    return Resolver(
        parameters or {"Env": "dev", "Size": 3, "Names": ["a", "b"]},
        pseudo=PseudoParameters(stack_name="demo", region="eu-west-1", account_id="111122223333"),
        conditions=conditions or {"IsDev": {"Fn::Equals": [{"Ref": "Env"}, "dev"]}},
        mappings={"Sizes": {"dev": {"Memory": 256}}},
        lookup=lookup,
    )


def value(text: str) -> Any:
    return parse_template(f"Resources: {{}}\nV: {text}\n").document["V"]


# ---------------------------------------------------------------------- parameters
def test_parameters_take_overrides_then_defaults_and_are_typed() -> None:
    declared = {
        "Env": {"Type": "String", "Default": "dev", "AllowedValues": ["dev", "prod"]},
        "Size": {"Type": "Number", "Default": 10, "MinValue": 1, "MaxValue": 100},
        "Ratio": {"Type": "Number", "Default": "0.5"},
        "Names": {"Type": "CommaDelimitedList", "Default": "a, b"},
        "Empty": {"Type": "String", "Default": ""},
        "Flag": {"Type": "String", "Default": True},
    }
    values = resolve_parameters(declared, {"Env": "prod", "Size": "42"})
    assert values == {
        "Env": "prod",
        "Size": 42,
        "Ratio": 0.5,
        "Names": ["a", "b"],
        "Empty": "",
        "Flag": "true",
    }


@pytest.mark.parametrize(
    ("declared", "overrides", "message"),
    [
        ({"Env": {"AllowedValues": ["dev"], "Default": "dev"}}, {"Env": "prod"}, "not one of AllowedValues"),
        ({"Id": {"AllowedPattern": "^[0-9]*$", "Default": ""}}, {"Id": "x"}, "does not match AllowedPattern"),
        ({"N": {"Type": "Number", "Default": 1}}, {"N": "ten"}, "is a Number"),
        ({"N": {"Type": "Number", "Default": 1, "MaxValue": 5}}, {"N": 6}, "above MaxValue"),
        ({"N": {"Type": "Number", "Default": 1, "MinValue": 1}}, {"N": 0}, "below MinValue"),
        ({"S": {"Default": "abc", "MaxLength": 2}}, {}, "longer than MaxLength"),
        ({"S": {"Type": "String"}}, {}, "has no Default"),
        ({"S": {"Default": "x"}}, {"Other": "y"}, "not declared in the template: Other"),
    ],
)
def test_invalid_parameters_are_refused(
    declared: dict[str, Any], overrides: dict[str, Any], message: str
) -> None:
    with pytest.raises(TemplateError, match=message):
        resolve_parameters(declared, overrides)


# ---------------------------------------------------------------------- Ref, GetAtt, Sub
def test_ref_reaches_parameters_pseudo_parameters_and_resources() -> None:
    r = resolver()
    assert r.resolve(value("!Ref Env")) == "dev"
    assert r.resolve(value("!Ref AWS::Region")) == "eu-west-1"
    assert r.resolve(value("!Ref AWS::AccountId")) == "111122223333"
    assert r.resolve(value("!Ref AWS::StackName")) == "demo"
    assert r.resolve(value("!Ref AWS::Partition")) == "aws"
    assert r.resolve(value("!Ref AWS::URLSuffix")) == "amazonaws.com"
    assert r.resolve(value("!Ref AWS::StackId")).startswith(
        "arn:aws:cloudformation:eu-west-1:111122223333:stack/demo/"
    )
    assert r.resolve(value("!Ref Bucket")) == "my-bucket"
    assert r.resolve(value("!GetAtt Queue.Arn")) == "arn:aws:sqs:us-east-1:123456789012:q"


def test_unknown_names_are_errors() -> None:
    with pytest.raises(TemplateError, match="unknown pseudo parameter AWS::Nope"):
        resolver().resolve(value("!Ref AWS::Nope"))
    with pytest.raises(TemplateError, match="no Missing"):
        resolver().resolve(value("!Ref Missing"))


def test_sub_substitutes_names_attributes_variables_and_keeps_literals() -> None:
    r = resolver()
    assert r.resolve(value('!Sub "${AWS::StackName}-${Env}-${Size}"')) == "demo-dev-3"
    assert r.resolve(value('!Sub "${Bucket.Arn}/*"')) == "arn:aws:s3:::my-bucket/*"
    assert r.resolve(value('!Sub "${!Literal} ${ Env }"')) == "${Literal} dev"
    assert r.resolve(value("!Sub ['${Name}.${Env}', {Name: !Ref Bucket}]")) == "my-bucket.dev"
    with pytest.raises(TemplateError, match="is not a string"):
        r.resolve(value('!Sub "${Names}"'))


# ---------------------------------------------------------------------- conditions
def test_conditions_and_if_select_a_branch_and_no_value_removes_it() -> None:
    r = resolver(
        conditions={
            "IsDev": {"Fn::Equals": [{"Ref": "Env"}, "dev"]},
            "IsProd": {"Fn::Not": [{"Condition": "IsDev"}]},
            "Both": {"Fn::And": [{"Condition": "IsDev"}, {"Fn::Equals": [{"Ref": "Size"}, "3"]}]},
            "Either": {"Fn::Or": [{"Condition": "IsProd"}, {"Condition": "Both"}]},
        }
    )
    assert r.conditions() == {"IsDev": True, "IsProd": False, "Both": True, "Either": True}
    resolved = r.resolve(
        value(
            "{A: !If [IsProd, 1, !Ref AWS::NoValue], B: !If [IsDev, x, y], "
            "L: [a, !If [IsProd, b, !Ref AWS::NoValue]]}"
        )
    )
    assert resolved == {"B": "x", "L": ["a"]}
    assert r.resolve(value("!Ref AWS::NoValue")) is NO_VALUE


def test_conditions_that_refer_to_each_other_in_a_cycle_are_refused() -> None:
    r = resolver(conditions={"A": {"Condition": "B"}, "B": {"Fn::Not": [{"Condition": "A"}]}})
    with pytest.raises(TemplateError, match="cycle: A → B → A"):
        r.condition("A")


def test_a_condition_must_be_boolean() -> None:
    with pytest.raises(TemplateError, match="true or false"):
        resolver(conditions={"Bad": {"Ref": "Env"}}).condition("Bad")


# ---------------------------------------------------------------------- the other functions
@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("!Join ['-', [a, !Ref Env, 3]]", "a-dev-3"),
        ("!Join [',', !Ref Names]", "a,b"),
        ("!Select [1, !Ref Names]", "b"),
        ("!Select [0, !Split ['/', 'x/y']]", "x"),
        ("!FindInMap [Sizes, !Ref Env, Memory]", 256),
        ("{'Fn::FindInMap': [Sizes, prod, Memory, {DefaultValue: 128}]}", 128),
        ("!Base64 hi", "aGk="),
        ("!GetAZs ''", ["eu-west-1a", "eu-west-1b", "eu-west-1c"]),
        ("{'Fn::Length': [a, b, c]}", 3),
        ("{'Fn::ToJsonString': {a: [1]}}", '{"a":[1]}'),
    ],
)
def test_list_and_string_functions(text: str, expected: Any) -> None:
    assert resolver().resolve(value(text)) == expected


@pytest.mark.parametrize(
    ("text", "message"),
    [
        ("!Select [5, [a]]", "out of range"),
        ("!FindInMap [Sizes, prod, Memory]", "no mapping entry Sizes/prod/Memory"),
        ("{'Fn::Cidr': ['10.0.0.0/16', 2, 8]}", "Fn::Cidr.*not supported"),
        ("{'Fn::Nope': 1}", "Fn::Nope is not supported"),
        ("!If [IsDev, 1]", "Fn::If takes"),
    ],
)
def test_misused_or_unsupported_functions_are_errors(text: str, message: str) -> None:
    with pytest.raises(TemplateError, match=message):
        resolver().resolve(value(text), "Resources.X")


# ---------------------------------------------------------------------- dependencies
def test_references_follow_only_the_chosen_branch() -> None:
    r = resolver(conditions={"IsDev": {"Fn::Equals": [{"Ref": "Env"}, "dev"]}})
    props = value(
        "{A: !Ref Bucket, B: !GetAtt Queue.Arn, C: !Sub '${Table}/${Env}/${Stream.Arn}', "
        "D: !If [IsDev, !Ref Dev, !Ref Prod], E: !Sub ['${X}', {X: !Ref Key}], F: !Ref AWS::Region}"
    )
    known = ["Bucket", "Queue", "Table", "Stream", "Dev", "Prod", "Key"]
    assert references(props, r, known) == {"Bucket", "Queue", "Table", "Stream", "Dev", "Key"}


def test_creation_order_puts_dependencies_first_and_refuses_cycles() -> None:
    order = creation_order({"Function": {"Queue", "Table"}, "Queue": {"Dlq"}, "Dlq": set(), "Table": set()})
    assert order.index("Dlq") < order.index("Queue") < order.index("Function")
    assert order.index("Table") < order.index("Function")
    with pytest.raises(TemplateError, match="circular dependency between resources: A → B → A"):
        creation_order({"A": {"B"}, "B": {"A"}})
    with pytest.raises(TemplateError, match="depends on Ghost"):
        creation_order({"A": {"Ghost"}})

"""The template loader: CloudFormation's short-form tags as long forms, plain YAML otherwise."""

from __future__ import annotations

from pathlib import Path

import pytest

from local.intrinsics import Resolver
from local.template import TemplateError, load_template, parse_template

pytestmark = pytest.mark.unit

FIXTURE = Path(__file__).parent / "fixtures" / "template.yaml"


def _value(text: str) -> object:
    return parse_template(f"Resources: {{}}\nValue: {text}\n").document["Value"]


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("!Ref Bucket", {"Ref": "Bucket"}),
        ("!GetAtt Queue.Arn", {"Fn::GetAtt": ["Queue", "Arn"]}),
        ("!GetAtt Db.Endpoint.Address", {"Fn::GetAtt": ["Db", "Endpoint.Address"]}),
        ("!GetAtt [Queue, Arn]", {"Fn::GetAtt": ["Queue", "Arn"]}),
        ('!Sub "arn:${AWS::Partition}:s3:::${Bucket}"', {"Fn::Sub": "arn:${AWS::Partition}:s3:::${Bucket}"}),
        ("!Sub ['${A}-x', {A: !Ref B}]", {"Fn::Sub": ["${A}-x", {"A": {"Ref": "B"}}]}),
        ("!If [C, 1, !Ref AWS::NoValue]", {"Fn::If": ["C", 1, {"Ref": "AWS::NoValue"}]}),
        ("!Equals [!Ref P, '']", {"Fn::Equals": [{"Ref": "P"}, ""]}),
        ("!Not [!Condition C]", {"Fn::Not": [{"Condition": "C"}]}),
        ("!And [!Condition A, !Condition B]", {"Fn::And": [{"Condition": "A"}, {"Condition": "B"}]}),
        ("!Or [!Condition A, !Condition B]", {"Fn::Or": [{"Condition": "A"}, {"Condition": "B"}]}),
        ("!Join [',', [a, b]]", {"Fn::Join": [",", ["a", "b"]]}),
        ("!Select [0, !Split [',', 'a,b']]", {"Fn::Select": [0, {"Fn::Split": [",", "a,b"]}]}),
        ("!FindInMap [M, K, V]", {"Fn::FindInMap": ["M", "K", "V"]}),
        ("!ImportValue shared-vpc", {"Fn::ImportValue": "shared-vpc"}),
        ("!Base64 text", {"Fn::Base64": "text"}),
        ("!GetAZs ''", {"Fn::GetAZs": ""}),
    ],
)
def test_short_forms_load_as_the_long_forms(text: str, expected: object) -> None:
    # Given a value written with a short-form tag / When it is loaded / Then it is the long form
    assert _value(text) == expected


def test_dates_and_numbers_keep_their_template_meaning() -> None:
    # Given a template whose version looks like a date
    template = parse_template("AWSTemplateFormatVersion: 2010-09-09\nResources: {}\nN: 10\nB: true\n")
    # Then the date stays a string while numbers and booleans are typed
    assert template.document["AWSTemplateFormatVersion"] == "2010-09-09"
    assert template.document["N"] == 10
    assert template.document["B"] is True


def test_json_templates_load_too() -> None:
    template = parse_template('{"Resources": {"Q": {"Type": "AWS::SQS::Queue"}}}', "t.json")
    assert template.resources == {"Q": {"Type": "AWS::SQS::Queue"}}


@pytest.mark.parametrize(
    ("text", "message"),
    [
        ("Resources: {A: {Type: X}}\nResources: {}\n", "duplicate key 'Resources'"),
        ("Resources:\n  A: {Properties: {}}\n", "resource A needs a Type"),
        ("- a list\n", "mapping at the top level"),
        ("Resources: {A: {Type: X, Properties: {V: !GetAtt NoDot}}}\n", "expected LogicalId.Attribute"),
        ("Resources: [\n", "not valid YAML"),
    ],
)
def test_malformed_templates_are_refused_with_the_reason(text: str, message: str) -> None:
    with pytest.raises(TemplateError, match=message):
        parse_template(text)


def test_import_value_is_refused_when_it_is_resolved() -> None:
    # Given a value importing another stack's export
    value = _value("!ImportValue shared-vpc")
    # When it is resolved, Then the error says why and what to do instead
    with pytest.raises(TemplateError, match=r"Fn::ImportValue .* pass the value as a parameter"):
        Resolver({}).resolve(value, "Outputs.Vpc")


def test_the_fixture_template_exposes_its_sections() -> None:
    template = load_template(FIXTURE)
    assert template.base_dir == FIXTURE.parent.resolve()
    assert "BatchSize" in template.parameters
    assert set(template.conditions) == {"CreateDatastore", "Strict"}
    assert template.globals["Function"]["Runtime"] == "python3.12"
    assert template.resources["UploadQueue"]["Type"] == "AWS::SQS::Queue"
    assert template.transforms == ["AWS::Serverless-2016-10-31"]


def test_a_missing_file_is_reported() -> None:
    with pytest.raises(TemplateError, match="cannot read template"):
        load_template("does/not/exist.yaml")

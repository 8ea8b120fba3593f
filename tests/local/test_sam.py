"""The SAM transform's parts the runtime needs: Globals, implicit roles, events as resources."""

from __future__ import annotations

import pytest

from local.sam import apply_globals, expand_events, implicit_resources
from local.template import TemplateError

pytestmark = pytest.mark.unit


def test_globals_merge_like_sam() -> None:
    # Given Globals and a function overriding some of them
    globals_section = {
        "Function": {
            "Runtime": "python3.12",
            "Timeout": 60,
            "Layers": [{"Ref": "Shared"}],
            "Environment": {"Variables": {"A": "global", "B": "global"}},
            "Tags": {"Fn::If": ["C", {"x": "1"}, {"x": "2"}]},
        }
    }
    resources = {
        "Fn": {
            "Type": "AWS::Serverless::Function",
            "Properties": {
                "Timeout": 300,
                "Layers": [{"Ref": "Own"}],
                "Environment": {"Variables": {"B": "local", "C": "local"}},
                "Tags": {"y": "1"},
            },
        },
        "Queue": {"Type": "AWS::SQS::Queue", "Properties": {"Timeout": 1}},
    }
    # When Globals are applied
    merged = apply_globals(resources, globals_section)
    # Then scalars are overridden, maps merged, lists concatenated, intrinsics replaced
    props = merged["Fn"]["Properties"]
    assert props["Runtime"] == "python3.12"
    assert props["Timeout"] == 300
    assert props["Layers"] == [{"Ref": "Shared"}, {"Ref": "Own"}]
    assert props["Environment"]["Variables"] == {"A": "global", "B": "local", "C": "local"}
    assert props["Tags"] == {"y": "1"}
    assert merged["Queue"] == resources["Queue"]
    assert resources["Fn"]["Properties"]["Timeout"] == 300  # the input is not modified


def test_a_function_without_role_gets_the_role_sam_generates() -> None:
    resources = {
        "Fn": {"Type": "AWS::Serverless::Function", "Condition": "On", "Properties": {}},
        "Own": {"Type": "AWS::Serverless::Function", "Properties": {"Role": "arn:aws:iam::1:role/x"}},
    }
    expanded = implicit_resources(resources)
    assert expanded["FnRole"]["Type"] == "AWS::IAM::Role"
    assert expanded["FnRole"]["Condition"] == "On"
    assert "OwnRole" not in expanded


def test_events_become_the_resources_sam_generates() -> None:
    # Given a function with an SQS, an EventBridge and a schedule event
    resources = {
        "Fn": {
            "Type": "AWS::Serverless::Function",
            "Properties": {
                "Handler": "app.handler",
                "Events": {
                    "Uploads": {
                        "Type": "SQS",
                        "Properties": {
                            "Queue": {"Fn::GetAtt": ["Q", "Arn"]},
                            "BatchSize": 5,
                            "FunctionResponseTypes": ["ReportBatchItemFailures"],
                        },
                    },
                    "Jobs": {
                        "Type": "EventBridgeRule",
                        "Properties": {"Pattern": {"source": ["aws.medical-imaging"]}, "EventBusName": "bus"},
                    },
                    "Nightly": {
                        "Type": "Schedule",
                        "Properties": {"Schedule": "cron(0 2 * * ? *)", "Input": "{}", "Enabled": False},
                    },
                },
            },
        }
    }
    # When they are expanded
    expanded = expand_events(resources)
    # Then each is a resource named <Function><Event> and the function no longer has Events
    assert "Events" not in expanded["Fn"]["Properties"]
    assert expanded["FnUploads"] == {
        "Type": "AWS::Lambda::EventSourceMapping",
        "Properties": {
            "EventSourceArn": {"Fn::GetAtt": ["Q", "Arn"]},
            "FunctionName": {"Ref": "Fn"},
            "BatchSize": 5,
            "FunctionResponseTypes": ["ReportBatchItemFailures"],
        },
    }
    rule = expanded["FnJobs"]["Properties"]
    assert expanded["FnJobs"]["Type"] == "AWS::Events::Rule"
    assert rule["EventPattern"] == {"source": ["aws.medical-imaging"]}
    assert rule["EventBusName"] == "bus"
    assert rule["Targets"] == [{"Arn": {"Fn::GetAtt": ["Fn", "Arn"]}, "Id": "FnJobsLambdaTarget"}]
    schedule = expanded["FnNightly"]["Properties"]
    assert schedule["ScheduleExpression"] == "cron(0 2 * * ? *)"
    assert schedule["State"] == "DISABLED"
    assert schedule["Targets"][0]["Input"] == "{}"


def test_unsupported_event_types_are_named() -> None:
    resources = {
        "Fn": {
            "Type": "AWS::Serverless::Function",
            "Properties": {"Events": {"Api": {"Type": "Api", "Properties": {"Path": "/", "Method": "get"}}}},
        }
    }
    with pytest.raises(TemplateError, match=r"Fn.Events.Api: event type 'Api' is not supported"):
        expand_events(resources)

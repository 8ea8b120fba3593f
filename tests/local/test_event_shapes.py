"""Pure pieces of the runtime: Lambda's SQS records, partial batch responses, S3 event details, names."""

from __future__ import annotations

import json

import pytest

from local.event_sources import batch_failures, json_path, sqs_record
from local.moto_patches import build_detail, eventbridge_event, rule_receives_events, target_body
from local.providers import physical_name

pytestmark = pytest.mark.unit

IDS = ["m1", "m2", "m3"]


@pytest.mark.parametrize(
    ("response", "failed"),
    [
        (None, set()),
        ({}, set()),
        ("done", set()),
        ({"batchItemFailures": []}, set()),
        ({"batchItemFailures": None}, set()),
        ({"batchItemFailures": [{"itemIdentifier": "m2"}]}, {"m2"}),
        ({"batchItemFailures": [{"itemIdentifier": "m1"}, {"itemIdentifier": "m3"}]}, {"m1", "m3"}),
        ({"batchItemFailures": [{"itemIdentifier": ""}]}, None),
        ({"batchItemFailures": [{"itemIdentifier": None}]}, None),
        ({"batchItemFailures": [{"id": "m1"}]}, None),
        ({"batchItemFailures": [{"itemIdentifier": "other"}]}, None),
        ({"batchItemFailures": ["m1"]}, None),
        ({"batchItemFailures": "m1"}, None),
    ],
)
def test_partial_batch_responses_are_read_as_lambda_documents(
    response: object, failed: set[str] | None
) -> None:
    assert batch_failures(response, IDS) == failed


def test_an_sqs_message_becomes_lambdas_record() -> None:
    # Given a message as ReceiveMessage returns it
    message = {
        "MessageId": "m1",
        "ReceiptHandle": "rh",
        "MD5OfBody": "md5",
        "Body": "{}",
        "Attributes": {
            "ApproximateReceiveCount": "2",
            "SentTimestamp": "1",
            "SenderId": "s",
            "ApproximateFirstReceiveTimestamp": "2",
            "Unrelated": "x",
        },
        "MessageAttributes": {
            "kind": {"DataType": "String", "StringValue": "upload"},
            "raw": {"DataType": "Binary", "BinaryValue": b"\x01"},
        },
        "MD5OfMessageAttributes": "md5a",
    }
    # When it is turned into a record
    record = sqs_record(message, queue_arn="arn:aws:sqs:us-east-1:1:q", region="us-east-1")
    # Then it has Lambda's keys and spellings
    assert record == {
        "messageId": "m1",
        "receiptHandle": "rh",
        "body": "{}",
        "attributes": {
            "ApproximateReceiveCount": "2",
            "SentTimestamp": "1",
            "SenderId": "s",
            "ApproximateFirstReceiveTimestamp": "2",
        },
        "messageAttributes": {
            "kind": {
                "stringValue": "upload",
                "binaryValue": None,
                "stringListValues": [],
                "binaryListValues": [],
                "dataType": "String",
            },
            "raw": {
                "stringValue": None,
                "binaryValue": "AQ==",
                "stringListValues": [],
                "binaryListValues": [],
                "dataType": "Binary",
            },
        },
        "md5OfBody": "md5",
        "md5OfMessageAttributes": "md5a",
        "eventSource": "aws:sqs",
        "eventSourceARN": "arn:aws:sqs:us-east-1:1:q",
        "awsRegion": "us-east-1",
    }


def test_json_paths() -> None:
    event = {"detail": {"object": {"key": "k"}}}
    assert json_path(event, "$") is event
    assert json_path(event, "$.detail.object.key") == "k"
    assert json_path(event, "$.detail.missing") is None


def test_s3_event_details_follow_the_documented_structure() -> None:
    created = build_detail(
        event_name="s3:ObjectCreated:Put",
        bucket="b",
        key="incoming/a b/é.dcm",
        size=5,
        etag='"abc"',
        version_id=None,
        sequencer="0001",
        requester="123456789012",
    )
    assert created["object"] == {"key": "incoming/a b/é.dcm", "size": 5, "etag": "abc", "sequencer": "0001"}
    assert created["reason"] == "PutObject"
    assert created["requester"] == "123456789012"
    assert created["bucket"] == {"name": "b"}
    copied = build_detail(
        event_name="s3:ObjectCreated:Copy",
        bucket="b",
        key="k",
        size=1,
        etag="e",
        version_id="v1",
        sequencer="0002",
        requester="1",
    )
    assert copied["reason"] == "CopyObject"
    assert copied["object"]["version-id"] == "v1"
    deleted = build_detail(
        event_name="s3:ObjectRemoved:DeleteMarkerCreated",
        bucket="b",
        key="k",
        size=0,
        etag="",
        version_id="v2",
        sequencer="0003",
        requester="1",
    )
    assert (deleted["reason"], deleted["deletion-type"]) == ("DeleteObject", "Delete Marker Created")
    assert "etag" not in deleted["object"]


def test_only_enabled_rules_with_a_pattern_receive_events() -> None:
    assert rule_receives_events("ENABLED", {"source": ["x"]})
    assert not rule_receives_events("DISABLED", {"source": ["x"]})
    assert not rule_receives_events("ENABLED", {})  # a schedule-only rule


def test_generated_names_are_cloudformation_like_stable_and_bounded() -> None:
    name = physical_name("my-stack", "LandingBucket", 63, lower=True)
    assert name.startswith("my-stack-landingbucket-")
    assert name == physical_name("my-stack", "LandingBucket", 63, lower=True)
    assert name != physical_name("other", "LandingBucket", 63, lower=True)
    long = physical_name("a" * 60, "B" * 60, 64)
    assert len(long) == 64
    assert physical_name("s", "Q", 80, suffix=".fifo").endswith(".fifo")


def test_queue_targets_receive_the_event_as_eventbridge_delivers_it() -> None:
    # Given an event as moto keeps it (epoch time, an extra ingestion-time)
    event = {
        "version": "0",
        "id": "i",
        "detail-type": "T",
        "source": "s",
        "account": "1",
        "time": 0.0,
        "region": "r",
        "resources": [],
        "detail": {"a": {"b": 1}},
        "ingestion-time": 5.0,
    }
    # Then a plain target gets the envelope in order with an ISO time, and Input/InputPath apply
    delivered = json.loads(target_body({"Arn": "q"}, event))
    assert list(delivered) == [
        "version",
        "id",
        "detail-type",
        "source",
        "account",
        "time",
        "region",
        "resources",
        "detail",
    ]
    assert delivered["time"] == "1970-01-01T00:00:00Z"
    assert eventbridge_event(event)["account"] == "1"
    assert target_body({"Arn": "q", "InputPath": "$.detail.a"}, event) == '{"b": 1}'
    assert target_body({"Arn": "q", "Input": '{"fixed": true}'}, event) == '{"fixed": true}'

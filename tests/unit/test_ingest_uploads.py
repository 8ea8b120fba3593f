"""Parsing StartImport's event (ahi_pipeline.uploads): SQS records of S3 EventBridge events."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest

from ahi_pipeline.uploads import (
    IgnoredMessage,
    PoisonMessage,
    Upload,
    UploadMessage,
    parse_sqs_event,
    parse_upload_message,
)

pytestmark = pytest.mark.unit

SAMPLE = Path(__file__).parents[2] / "events" / "start_import.json"


def s3_event(**object_fields: Any) -> dict[str, Any]:
    obj = {"key": "incoming/a.dcm", "size": 10, "etag": "abc", "version-id": "v1", **object_fields}
    return {
        "version": "0",
        "id": "e1",
        "detail-type": "Object Created",
        "source": "aws.s3",
        "detail": {"version": "0", "bucket": {"name": "landing"}, "object": obj},
    }


def test_the_sample_event_parses_into_three_uploads() -> None:
    # Given the sample event of events/ (also used by `sam local invoke -e`)
    event = json.loads(SAMPLE.read_text())

    # When it is parsed
    messages = parse_sqs_event(event)

    # Then each record is an upload, in order, with its message id
    assert [type(m) for m in messages] == [UploadMessage] * 3
    uploads = [m.upload for m in messages if isinstance(m, UploadMessage)]
    assert uploads[0].key == "incoming/study-0001/series-2/IM-0001-0001.dcm"
    assert uploads[0].size == 527426
    assert uploads[0].version_id == "Hn2fPz0cX3mQ1vYkq8WJ3u6lJtA9rB7e"
    assert uploads[1].size == 0
    assert uploads[2].key.endswith("/")
    assert [m.message_id for m in messages] == [r["messageId"] for r in event["Records"]]


def test_keys_are_taken_as_they_are() -> None:
    # Given a key with spaces, a plus sign, a percent sign and non-ASCII letters
    key = "incoming/Études 2024/a+b %41 ü.dcm"

    # When parsed
    message = parse_upload_message("m1", json.dumps(s3_event(key=key)))

    # Then the key is unchanged (EventBridge keys are not URL-encoded; decoding would corrupt + and %)
    assert isinstance(message, UploadMessage)
    assert message.upload.key == key


def test_moto_style_etag_and_null_version_are_accepted() -> None:
    # Given moto's field spelling (eTag) and an unversioned bucket (version-id null)
    body = s3_event()
    del body["detail"]["object"]["etag"]
    body["detail"]["object"].update({"eTag": '"abc"', "version-id": None})

    # When parsed
    message = parse_upload_message("m1", json.dumps(body))

    # Then the ETag (unquoted) identifies the upload
    assert isinstance(message, UploadMessage)
    assert message.upload == Upload("landing", "incoming/a.dcm", 10, etag="abc", version_id=None)


def test_other_s3_events_are_ignored_not_poison() -> None:
    # Given an Object Deleted event
    body = s3_event()
    body["detail-type"] = "Object Deleted"

    # When parsed
    message = parse_upload_message("m1", json.dumps(body))

    # Then it is ignored with a reason
    assert isinstance(message, IgnoredMessage)
    assert "Object Deleted" in message.reason


@pytest.mark.parametrize(
    ("body", "reason"),
    [
        ("not json {", "not JSON"),
        ("[1, 2]", "not a JSON object"),
        (json.dumps({"Records": [{"s3": {}}]}), "an S3 notification (Records)"),
        (json.dumps({**s3_event(), "source": "aws.ec2"}), "not an S3 event: source is 'aws.ec2'"),
        (json.dumps({k: v for k, v in s3_event().items() if k != "detail-type"}), "detail-type is missing"),
        (json.dumps({k: v for k, v in s3_event().items() if k != "detail"}), "detail is missing"),
        (json.dumps(s3_event(key="")), "detail.object.key is missing"),
        (json.dumps(s3_event(size="10")), "detail.object.size must be a non-negative integer"),
        (json.dumps(s3_event(size=-1)), "detail.object.size must be a non-negative integer"),
        (json.dumps(s3_event(size=True)), "detail.object.size must be a non-negative integer"),
        (json.dumps(s3_event(etag=None, **{"version-id": None})), "neither etag nor version-id"),
        (json.dumps(s3_event(etag=5)), "detail.object.etag must be a string"),
    ],
)
def test_malformed_bodies_are_poison_with_a_reason(body: str, reason: str) -> None:
    # Given a malformed body
    # When parsed
    message = parse_upload_message("m1", body)

    # Then it is poison, and the reason says what is wrong
    assert isinstance(message, PoisonMessage)
    assert reason in message.reason


def test_a_missing_body_is_poison() -> None:
    # Given an SQS record without a body
    event = {"Records": [{"messageId": "m1"}]}

    # When parsed
    messages = parse_sqs_event(event)

    # Then only that record is poison
    assert messages == [PoisonMessage("m1", "the message body is not a JSON object")]


@pytest.mark.parametrize("event", [{}, {"Records": "x"}, {"Records": [{"body": "{}"}]}, {"Records": [5]}])
def test_an_event_that_is_not_sqs_fails_the_invocation(event: dict[str, Any]) -> None:
    # Given an event that is not an SQS batch (no partial response is possible)
    # When parsed
    # Then it raises
    with pytest.raises(ValueError, match="not an SQS event"):
        parse_sqs_event(event)


def test_object_ids_depend_on_identity_only() -> None:
    # Given the same upload seen twice, and a new version and another ETag of it
    upload = Upload("landing", "incoming/a.dcm", 10, etag="abc", version_id="v1")
    again = Upload("landing", "incoming/a.dcm", 10, etag="abc", version_id="v1")
    new_version = Upload("landing", "incoming/a.dcm", 10, etag="abc", version_id="v2")
    unversioned = Upload("landing", "incoming/a.dcm", 10, etag="abc")
    rewritten = Upload("landing", "incoming/a.dcm", 10, etag="def")

    # Then the id is stable, differs per revision, and carries no key
    assert upload.object_id == again.object_id
    ids = {upload.object_id, new_version.object_id, unversioned.object_id, rewritten.object_id}
    assert len(ids) == 4
    assert all(len(i) == 32 and "dcm" not in i for i in ids)

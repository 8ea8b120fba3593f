"""The pipeline's own events (ahi_pipeline.pipeline_events): the entries, and how they are put.

Batching and end-to-end delivery run against moto's EventBridge (with a rule on the custom bus
targeting an SQS queue).  moto never reports failed entries, so the retry of failed entries is driven
by a small fake client.
"""

from __future__ import annotations

import io
import json
import logging
import time
from collections.abc import Iterator, Mapping
from typing import Any

import boto3
import pytest
from aws_lambda_powertools.utilities.data_classes.sqs_event import SQSRecord
from moto import mock_aws

from ahi_pipeline.job_results import ImageSetCount
from ahi_pipeline.observability import logger
from ahi_pipeline.pipeline_events import (
    IMAGE_SET_IMPORTED,
    IMAGE_SET_READY,
    IMPORT_FILES_FAILED,
    SOURCE,
    EventBusGateway,
    PublishError,
    ReadyEventError,
    image_set_imported,
    import_files_failed,
    parse_ready_event,
    ready_event_in,
)

pytestmark = pytest.mark.unit

REGION = "us-east-1"
BUS = "ahi-pipeline"
DATASTORE_ID = "0123456789abcdef0123456789abcdef"
IMAGE_SET_ID = "fedcba9876543210fedcba9876543210"
JOB_ID = "09876543210987654321098765432109"
BATCH_ID = "batch-0001"
REPORT_URI = f"s3://output-bucket/reports/import-jobs/{JOB_ID}.json"
IMAGE_SET_ARN = (
    f"arn:aws:medical-imaging:{REGION}:123456789012:datastore/{DATASTORE_ID}/imageset/{IMAGE_SET_ID}"
)


def imported_entry(number: int = 0, **image_set: Any) -> dict[str, Any]:
    return image_set_imported(
        bus=BUS,
        datastore_id=DATASTORE_ID,
        image_set=ImageSetCount(image_set.pop("image_set_id", f"{number:032x}"), 1 + number, **image_set),
        job_id=JOB_ID,
        batch_id=BATCH_ID,
    )


# ======================================================================================== the entries
def test_image_set_imported_entry_carries_the_documented_fields() -> None:
    # Given an image set with a version and a primary flag
    image_set = ImageSetCount(IMAGE_SET_ID, 12, "1", True)

    # When its entry is built
    entry = image_set_imported(
        bus=BUS,
        datastore_id=DATASTORE_ID,
        image_set=image_set,
        job_id=JOB_ID,
        batch_id=BATCH_ID,
        image_set_arn=IMAGE_SET_ARN,
    )

    # Then it is a PutEvents entry of the pipeline's source on the bus, with the documented detail
    assert entry == {
        "Source": SOURCE,
        "DetailType": IMAGE_SET_IMPORTED,
        "Detail": entry["Detail"],
        "Resources": [IMAGE_SET_ARN],
        "EventBusName": BUS,
    }
    assert (SOURCE, IMAGE_SET_IMPORTED) == ("healthimaging-automation", "Image Set Imported")
    assert json.loads(entry["Detail"]) == {
        "schemaVersion": 1,
        "datastoreId": DATASTORE_ID,
        "imageSetId": IMAGE_SET_ID,
        "importJobId": JOB_ID,
        "batchId": BATCH_ID,
        "instanceCount": 12,
        "imageSetVersion": "1",
        "isPrimary": True,
    }


def test_image_set_imported_leaves_out_unknown_version_and_flag_and_allows_a_null_batch() -> None:
    # Given an image set of the guide's 2024 shape, from a job the pipeline did not start
    # When its entry is built without an ARN
    entry = image_set_imported(
        bus=BUS,
        datastore_id=DATASTORE_ID,
        image_set=ImageSetCount(IMAGE_SET_ID, 3),
        job_id=JOB_ID,
        batch_id=None,
    )

    # Then the detail has no version or flag, batchId is null, and no resources are named
    detail = json.loads(entry["Detail"])
    assert "imageSetVersion" not in detail
    assert "isPrimary" not in detail
    assert detail["batchId"] is None
    assert '"batchId":null' in entry["Detail"]
    assert entry["Resources"] == []


def test_a_false_primary_flag_is_kept() -> None:
    # Given an image set the import added a non-primary version to
    entry = imported_entry(image_set_id=IMAGE_SET_ID, version="2", is_primary=False)

    # Then isPrimary is false, not left out
    detail = json.loads(entry["Detail"])
    assert (detail["imageSetVersion"], detail["isPrimary"]) == ("2", False)


def test_import_files_failed_entry_carries_the_documented_fields() -> None:
    # Given a completed job with failed files
    # When its entry is built
    entry = import_files_failed(
        bus=BUS,
        datastore_id=DATASTORE_ID,
        job_id=JOB_ID,
        batch_id=BATCH_ID,
        job_status="COMPLETED",
        failed_files=3,
        error_types={"ValidationException": 2, "InternalServerException": 1},
        report_uri=REPORT_URI,
    )

    # Then it is a PutEvents entry of the pipeline's source on the bus, with the documented detail
    assert entry["Source"] == "healthimaging-automation"
    assert entry["DetailType"] == IMPORT_FILES_FAILED == "Import Files Failed"
    assert entry["EventBusName"] == BUS
    assert entry["Resources"] == []
    detail = json.loads(entry["Detail"])
    assert detail == {
        "schemaVersion": 1,
        "datastoreId": DATASTORE_ID,
        "importJobId": JOB_ID,
        "batchId": BATCH_ID,
        "jobStatus": "COMPLETED",
        "failedFiles": 3,
        "errorTypes": {"InternalServerException": 1, "ValidationException": 2},
        "reportUri": REPORT_URI,
    }
    # errorTypes is sorted, so the same failures always give the same detail text
    assert list(detail["errorTypes"]) == ["InternalServerException", "ValidationException"]


def test_import_files_failed_allows_a_null_batch() -> None:
    # Given a failed job the pipeline did not start
    entry = import_files_failed(
        bus=BUS,
        datastore_id=DATASTORE_ID,
        job_id=JOB_ID,
        batch_id=None,
        job_status="FAILED",
        failed_files=0,
        error_types={},
        report_uri=REPORT_URI,
    )

    # Then batchId is null
    detail = json.loads(entry["Detail"])
    assert detail["batchId"] is None
    assert (detail["jobStatus"], detail["failedFiles"], detail["errorTypes"]) == ("FAILED", 0, {})


def test_detail_is_compact_json_with_the_schema_version_first() -> None:
    # Given an entry
    entry = imported_entry(image_set_id=IMAGE_SET_ID)

    # Then its detail is compact and begins with the schema version
    assert entry["Detail"].startswith('{"schemaVersion":1,')
    assert ": " not in entry["Detail"]
    assert ", " not in entry["Detail"]


# ======================================================================================== a fake client
class FakeEvents:
    """``put_events`` answering from a script of per-call outcomes; records what it was sent.

    Each script item maps an entry's position in the call to an error code; positions not listed succeed.
    """

    def __init__(self, *script: Mapping[int, str]) -> None:
        self.script = list(script)
        self.sent: list[list[dict[str, Any]]] = []

    def put_events(self, Entries: list[dict[str, Any]]) -> dict[str, Any]:  # noqa: N803 (boto3's name)
        self.sent.append([dict(entry) for entry in Entries])
        failures = self.script.pop(0) if self.script else {}
        results: list[dict[str, Any]] = []
        for index, _ in enumerate(Entries):
            if index in failures:
                results.append({"ErrorCode": failures[index], "ErrorMessage": "try again"})
            else:
                results.append({"EventId": f"event-{len(self.sent)}-{index}"})
        return {"FailedEntryCount": len([i for i in failures if i < len(Entries)]), "Entries": results}


def details(call: list[dict[str, Any]]) -> list[str]:
    return [json.loads(entry["Detail"])["imageSetId"] for entry in call]


def test_only_the_failed_entries_are_resent_after_a_pause() -> None:
    # Given five entries, two of which are throttled on the first call
    entries = [imported_entry(n) for n in range(5)]
    client = FakeEvents({1: "ThrottlingException", 3: "ThrottlingException"})
    pauses: list[float] = []
    gateway = EventBusGateway(client, sleep=pauses.append)

    # When they are put
    put = gateway.put(entries)

    # Then every entry is put, the second call re-sends exactly the two failed entries after one pause
    assert put == 5
    assert len(client.sent) == 2 == gateway.calls
    assert details(client.sent[1]) == details([entries[1], entries[3]])
    assert client.sent[1] == [entries[1], entries[3]]
    assert len(pauses) == 1
    assert 0.1 <= pauses[0] <= 0.2  # half to all of base_delay on the first retry


def test_the_pause_grows_exponentially_and_is_capped() -> None:
    # Given an entry failing four times before it is put
    client = FakeEvents(*[{0: "InternalFailure"}] * 4)
    pauses: list[float] = []
    gateway = EventBusGateway(client, attempts=5, base_delay=1.0, max_delay=3.0, sleep=pauses.append)

    # When it is put
    assert gateway.put([imported_entry()]) == 1

    # Then the pauses lie within [c/2, c] for ceilings 1, 2, 3 (capped), 3 (capped)
    assert len(pauses) == 4
    for pause, ceiling in zip(pauses, [1.0, 2.0, 3.0, 3.0], strict=True):
        assert ceiling / 2 <= pause <= ceiling


def test_entries_that_keep_failing_raise_publish_error_with_their_codes() -> None:
    # Given three entries, two of which fail on every attempt (with different codes)
    entries = [imported_entry(n) for n in range(3)]
    script = [{0: "ThrottlingException", 2: "InternalFailure"}] + [
        {0: "ThrottlingException", 1: "InternalFailure"}
    ] * 2
    client = FakeEvents(*script)
    pauses: list[float] = []
    gateway = EventBusGateway(client, attempts=3, sleep=pauses.append)

    # When they are put
    with pytest.raises(PublishError) as info:
        gateway.put(entries)

    # Then after 3 attempts (2 pauses, no pause after the last) the two are reported with their last codes
    assert len(client.sent) == 3 == gateway.calls
    assert len(pauses) == 2
    assert client.sent[1] == [entries[0], entries[2]]
    assert client.sent[2] == [entries[0], entries[2]]
    assert info.value.failed == 2
    assert info.value.codes == {"ThrottlingException": 1, "InternalFailure": 1}
    assert str(info.value) == "2 event(s) could not be put on the bus (InternalFailure, ThrottlingException)"
    assert isinstance(info.value, RuntimeError)


def test_a_failing_batch_does_not_stop_the_following_batches() -> None:
    # Given 15 entries where entry 0 of the first batch fails on every attempt
    entries = [imported_entry(n) for n in range(15)]
    client = FakeEvents({0: "ThrottlingException"}, {0: "ThrottlingException"})
    gateway = EventBusGateway(client, attempts=2, sleep=lambda _: None)

    # When they are put
    with pytest.raises(PublishError) as info:
        gateway.put(entries)

    # Then the second batch was still sent, and only the one entry is reported
    assert [len(call) for call in client.sent] == [10, 1, 5]
    assert client.sent[2] == entries[10:]
    assert (info.value.failed, info.value.codes) == (1, {"ThrottlingException": 1})


def test_failures_of_several_batches_are_added_up() -> None:
    # Given 12 entries, one failing for good in each batch
    entries = [imported_entry(n) for n in range(12)]
    client = FakeEvents({9: "ThrottlingException"}, {1: "InternalFailure"})
    gateway = EventBusGateway(client, attempts=1, sleep=lambda _: None)

    # When they are put
    with pytest.raises(PublishError) as info:
        gateway.put(entries)

    # Then both are counted, by code
    assert (info.value.failed, info.value.codes) == (2, {"ThrottlingException": 1, "InternalFailure": 1})


def test_the_entries_given_are_not_modified() -> None:
    # Given entries, one of which is retried
    entries = [imported_entry(n) for n in range(2)]
    snapshot = json.dumps(entries)
    client = FakeEvents({0: "ThrottlingException"})

    # When they are put
    EventBusGateway(client, sleep=lambda _: None).put(entries)

    # Then the caller's entries are unchanged
    assert json.dumps(entries) == snapshot


def test_no_entries_make_no_call() -> None:
    # Given a gateway
    client = FakeEvents()
    gateway = EventBusGateway(client)

    # When nothing is put
    # Then nothing is sent
    assert gateway.put([]) == 0
    assert client.sent == []
    assert gateway.calls == 0


# ======================================================================================== moto's EventBridge
class Counting:
    """Wraps a boto3 ``events`` client and records the size of each PutEvents call."""

    def __init__(self, client: Any) -> None:
        self.client = client
        self.sizes: list[int] = []

    def put_events(self, **kwargs: Any) -> Any:
        self.sizes.append(len(kwargs["Entries"]))
        return self.client.put_events(**kwargs)


@pytest.fixture(scope="module")
def aws() -> Iterator[dict[str, Any]]:
    """moto's EventBridge with the pipeline bus, a rule for the pipeline's source, and its SQS queue."""
    with mock_aws():
        sqs = boto3.client("sqs", region_name=REGION)
        url = sqs.create_queue(QueueName="pipeline-events")["QueueUrl"]
        arn = sqs.get_queue_attributes(QueueUrl=url, AttributeNames=["QueueArn"])["Attributes"]["QueueArn"]
        events = boto3.client("events", region_name=REGION)
        events.create_event_bus(Name=BUS)
        events.put_rule(
            Name="pipeline-to-queue", EventBusName=BUS, EventPattern=json.dumps({"source": [SOURCE]})
        )
        events.put_targets(Rule="pipeline-to-queue", EventBusName=BUS, Targets=[{"Id": "queue", "Arn": arn}])
        yield {"events": events, "sqs": sqs, "queue_url": url}


def drain(aws: dict[str, Any], count: int | None = None) -> list[dict[str, Any]]:
    """The queue's messages (``count`` of them, or whatever is there), deleted once read."""
    sqs, url = aws["sqs"], aws["queue_url"]
    messages: list[dict[str, Any]] = []
    deadline = time.monotonic() + 5
    while time.monotonic() < deadline:
        batch = sqs.receive_message(QueueUrl=url, MaxNumberOfMessages=10).get("Messages", [])
        for message in batch:
            messages.append(json.loads(message["Body"]))
            sqs.delete_message(QueueUrl=url, ReceiptHandle=message["ReceiptHandle"])
        if (count is None and not batch) or (count is not None and len(messages) >= count):
            break
    return messages


def test_twenty_five_entries_are_put_in_calls_of_ten_ten_and_five(aws: dict[str, Any]) -> None:
    # Given 25 entries and a gateway on moto's EventBridge
    entries = [imported_entry(n) for n in range(25)]
    client = Counting(aws["events"])
    gateway = EventBusGateway(client, sleep=lambda _: pytest.fail("no retry expected"))

    # When they are put
    put = gateway.put(entries)

    # Then three calls of 10, 10 and 5 put all of them, in order
    assert put == 25
    assert client.sizes == [10, 10, 5]
    assert gateway.calls == 3
    delivered = drain(aws, 25)
    assert sorted(m["detail"]["imageSetId"] for m in delivered) == sorted(
        json.loads(e["Detail"])["imageSetId"] for e in entries
    )


@pytest.mark.parametrize(("count", "sizes"), [(1, [1]), (10, [10]), (11, [10, 1]), (20, [10, 10])])
def test_batch_boundaries(aws: dict[str, Any], count: int, sizes: list[int]) -> None:
    # Given a number of entries around the limit of 10
    client = Counting(aws["events"])

    # When they are put
    # Then the calls are as large as allowed, and the count is returned
    assert EventBusGateway(client).put([imported_entry(n) for n in range(count)]) == count
    assert client.sizes == sizes
    drain(aws, count)


def test_an_entry_reaches_a_rule_target_on_the_custom_bus(aws: dict[str, Any]) -> None:
    # Given an Image Set Imported and an Import Files Failed entry
    image_set = image_set_imported(
        bus=BUS,
        datastore_id=DATASTORE_ID,
        image_set=ImageSetCount(IMAGE_SET_ID, 12, "1", True),
        job_id=JOB_ID,
        batch_id=None,
        image_set_arn=IMAGE_SET_ARN,
    )
    failed = import_files_failed(
        bus=BUS,
        datastore_id=DATASTORE_ID,
        job_id=JOB_ID,
        batch_id=BATCH_ID,
        job_status="COMPLETED",
        failed_files=2,
        error_types={"ValidationException": 2},
        report_uri=REPORT_URI,
    )

    # When they are put on the pipeline bus
    assert EventBusGateway(aws["events"]).put([image_set, failed]) == 2

    # Then the rule's SQS target receives both, with source, detail-type and detail as built
    delivered = {m["detail-type"]: m for m in drain(aws, 2)}
    assert set(delivered) == {"Image Set Imported", "Import Files Failed"}
    imported = delivered["Image Set Imported"]
    assert imported["source"] == "healthimaging-automation"
    assert imported["resources"] == [IMAGE_SET_ARN]
    assert imported["detail"] == {
        "schemaVersion": 1,
        "datastoreId": DATASTORE_ID,
        "imageSetId": IMAGE_SET_ID,
        "importJobId": JOB_ID,
        "batchId": None,
        "instanceCount": 12,
        "imageSetVersion": "1",
        "isPrimary": True,
    }
    files = delivered["Import Files Failed"]["detail"]
    assert files["failedFiles"] == 2
    assert files["errorTypes"] == {"ValidationException": 2}
    assert files["reportUri"] == REPORT_URI
    assert files["batchId"] == BATCH_ID


def test_an_entry_for_another_bus_does_not_reach_the_pipeline_rule(aws: dict[str, Any]) -> None:
    # Given an entry addressed to the default bus
    entry = {**imported_entry(), "EventBusName": "default"}

    # When it is put
    assert EventBusGateway(aws["events"]).put([entry]) == 1

    # Then the pipeline bus's rule does not deliver it
    assert drain(aws) == []


# ======================================================================================== the Ready event
def ready_body(**detail: Any) -> str:
    fields = {"datastoreId": DATASTORE_ID, "imageSetId": IMAGE_SET_ID, **detail}
    return json.dumps({"source": SOURCE, "detail-type": IMAGE_SET_READY, "detail": fields})


def test_a_ready_event_is_parsed_from_a_message_body() -> None:
    event = parse_ready_event(ready_body(batchId=BATCH_ID))
    assert (event.datastore_id, event.image_set_id) == (DATASTORE_ID, IMAGE_SET_ID)
    assert event.detail["batchId"] == BATCH_ID


@pytest.mark.parametrize(
    ("body", "reason"),
    [
        ("{not json", "not JSON"),
        (json.dumps({"source": SOURCE, "detail-type": "Image Set Imported", "detail": {}}), "not an Image"),
        (json.dumps({"source": SOURCE, "detail-type": IMAGE_SET_READY, "detail": []}), "no detail object"),
        (ready_body(imageSetId="../../etc"), "detail.imageSetId"),
        (ready_body(datastoreId=None), "detail.datastoreId"),
    ],
)
def test_anything_but_a_ready_event_is_refused_saying_why(body: str, reason: str) -> None:
    with pytest.raises(ReadyEventError, match=reason):
        parse_ready_event(body)


@pytest.fixture
def log() -> Iterator[io.StringIO]:
    """What the package's Powertools logger writes during the test."""
    handler = logger.registered_handler
    assert isinstance(handler, logging.StreamHandler)
    stream = io.StringIO()
    previous = handler.setStream(stream)
    yield stream
    handler.setStream(previous)


def test_a_poison_record_is_logged_by_message_id_and_reason_never_by_its_body(log: io.StringIO) -> None:
    # Given a queue message whose body is not a Ready event (and holds a value that must not be logged)
    record = SQSRecord({"messageId": "m-1", "body": json.dumps({"PatientName": "NOT^LOGGED"})})
    # When the stages read it, then it is refused
    with pytest.raises(ReadyEventError):
        ready_event_in(record)
    # … and the log names the message and the reason, not the body
    (line,) = [json.loads(text) for text in log.getvalue().splitlines()]
    assert (line["level"], line["message"]) == ("ERROR", "poison Ready event")
    assert (line["message_id"], line["reason"]) == ("m-1", "the message is not an Image Set Ready event")
    logged = log.getvalue()
    assert "m-1" in logged
    assert "not an Image Set Ready event" in logged
    assert "NOT^LOGGED" not in logged


def test_a_ready_record_gives_its_event() -> None:
    record = SQSRecord({"messageId": "m-2", "body": ready_body()})
    assert ready_event_in(record).image_set_id == IMAGE_SET_ID

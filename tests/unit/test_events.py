"""EventBridge entries and their publication (emulator/events.py)."""

from __future__ import annotations

import json
import logging
import threading
import time
from collections.abc import Iterator
from datetime import UTC, datetime
from typing import Any

import boto3
import pytest
from botocore.stub import Stubber
from moto import mock_aws

from emulator import events
from emulator.events import EventPublisher

pytestmark = pytest.mark.unit

# The identifiers of the spec's example events (platform spec 1.4).
ACCOUNT = "111122223333"
REGION = "us-west-2"
DATASTORE_ID = "bbc4f3cccbae4095a34170fddc19b13d"
JOB_ID = "a6a1d220f152e7aab6d8925d995d8b76"
IMAGE_SET_ID = "5b3a711878c34d40e888253319388649"
DATASTORE_ARN = f"arn:aws:medical-imaging:{REGION}:{ACCOUNT}:datastore/{DATASTORE_ID}"
# Consistent, unlike the examples' ARN (other account, other image set: platform spec 1.5).
IMAGE_SET_ARN = f"{DATASTORE_ARN}/imageset/{IMAGE_SET_ID}"
INPUT_URI = "s3://healthimaging-test-bucket/input/"
OUTPUT_URI = "s3://healthimaging-test-bucket/output/"

# Three example events verbatim (platform spec 1.4: Data Store Creating, Import Job Submitted, Image Set
# Created); the other sixteen differ from these only in detail-type and status.
SPEC_DATASTORE_EVENT = """{
  "version": "0",
  "id": "7cf0fb1c-8720-4d48-baa3-6eb97b35a10e",
  "detail-type": "Data Store Creating",
  "source": "aws.medical-imaging",
  "account": "111122223333",
  "time": "2024-03-14T00:01:00Z",
  "region": "us-west-2",
  "resources": ["arn:aws:medical-imaging:us-west-2:111122223333:datastore/bbc4f3cccbae4095a34170fddc19b13d"],
  "detail": {
    "imagingVersion": "1.0",
    "datastoreId": "bbc4f3cccbae4095a34170fddc19b13d",
    "datastoreName": "test",
    "datastoreStatus": "CREATING"
  }
}"""
SPEC_IMPORT_JOB_EVENT = """{
  "version": "0",
  "id": "7cf0fb1c-8720-4d48-baa3-6eb97b35a10e",
  "detail-type": "Import Job Submitted",
  "source": "aws.medical-imaging",
  "account": "111122223333",
  "time": "2024-03-14T00:01:00Z",
  "region": "us-west-2",
  "resources": ["arn:aws:medical-imaging:us-west-2:111122223333:datastore/bbc4f3cccbae4095a34170fddc19b13d"],
  "detail": {
    "imagingVersion": "1.0",
    "datastoreId": "bbc4f3cccbae4095a34170fddc19b13d",
    "jobId": "a6a1d220f152e7aab6d8925d995d8b76",
    "jobName": "test_only_1",
    "jobStatus": "SUBMITTED",
    "inputS3Uri": "s3://healthimaging-test-bucket/input/",
    "outputS3Uri": "s3://healthimaging-test-bucket/output/"
  }
}"""
SPEC_IMAGE_SET_EVENT = """{
  "version": "0",
  "id": "7cf0fb1c-8720-4d48-baa3-6eb97b35a10e",
  "detail-type": "Image Set Created",
  "source": "aws.medical-imaging",
  "account": "111122223333",
  "time": "2024-03-14T00:01:00Z",
  "region": "us-west-2",
  "resources": ["<EXAMPLE_IMAGE_SET_ARN>"],
  "detail": {
    "imagingVersion": "1.0",
    "datastoreId": "bbc4f3cccbae4095a34170fddc19b13d",
    "imagesetId": "5b3a711878c34d40e888253319388649",
    "imageSetState": "ACTIVE",
    "imageSetWorkflowStatus": "CREATED"
  }
}""".replace(  # the example's ARN, split only to fit the line length
    "<EXAMPLE_IMAGE_SET_ARN>",
    "arn:aws:medical-imaging:us-west-2:846006145877:datastore/bbc4f3cccbae4095a34170fddc19b13d"
    "/imageset/207284eef860ac01c4b2a8de27a6fc11",
)

# Every example of platform spec 1.4: (detail-type, status) per category, and the state of image set ones.
DATASTORE_EXAMPLES = [
    ("Data Store Creating", "CREATING"),
    ("Data Store Creation Failed", "CREATE_FAILED"),
    ("Data Store Created", "ACTIVE"),
    ("Data Store Deleting", "DELETING"),
    ("Data Store Deleted", "DELETED"),
]
IMPORT_JOB_EXAMPLES = [
    ("Import Job Submitted", "SUBMITTED"),
    ("Import Job In Progress", "IN_PROGRESS"),
    ("Import Job Completed", "COMPLETED"),
    ("Import Job Failed", "FAILED"),
]
IMAGE_SET_EXAMPLES = [
    ("Image Set Created", "CREATED", "ACTIVE"),
    ("Image Set Copying", "COPYING", "LOCKED"),
    ("Image Set Copying With Read Only Access", "COPYING_WITH_READ_ONLY_ACCESS", "LOCKED"),
    ("Image Set Copied", "COPIED", "ACTIVE"),
    ("Image Set Copy Failed", "COPY_FAILED", "ACTIVE"),
    ("Image Set Updating", "UPDATING", "LOCKED"),
    ("Image Set Updated", "UPDATED", "ACTIVE"),
    ("Image Set Update Failed", "UPDATE_FAILED", "ACTIVE"),
    ("Image Set Deleting", "DELETING", "LOCKED"),
    ("Image Set Deleted", "DELETED", "DELETED"),
]
EXAMPLE_TIME = datetime(2024, 3, 14, 0, 1, tzinfo=UTC)


def spec_detail(example: str, **changes: str) -> dict[str, Any]:
    detail: dict[str, Any] = json.loads(example)["detail"]
    return detail | changes


# --------------------------------------------------------------------------------------------------
# Pure builders: every detail-type exactly


@pytest.mark.parametrize(("detail_type", "status"), DATASTORE_EXAMPLES)
def test_datastore_entries_match_the_examples(detail_type: str, status: str) -> None:
    # When building the entry for a data store status
    entry = events.datastore_entry(
        account=ACCOUNT,
        region=REGION,
        datastore_id=DATASTORE_ID,
        datastore_name="test",
        status=status,
        time=EXAMPLE_TIME,
    )

    # Then it is the example's event, as a PutEvents entry
    assert entry == {
        "Time": EXAMPLE_TIME,
        "Source": "aws.medical-imaging",
        "DetailType": detail_type,
        "Resources": [DATASTORE_ARN],
        "Detail": entry["Detail"],
        "EventBusName": "default",
    }
    assert json.loads(entry["Detail"]) == spec_detail(SPEC_DATASTORE_EVENT, datastoreStatus=status)


@pytest.mark.parametrize(("detail_type", "status"), IMPORT_JOB_EXAMPLES)
def test_import_job_entries_match_the_examples(detail_type: str, status: str) -> None:
    # When building the entry for an import job status
    entry = events.import_job_entry(
        account=ACCOUNT,
        region=REGION,
        datastore_id=DATASTORE_ID,
        job_id=JOB_ID,
        job_name="test_only_1",
        status=status,
        input_s3_uri=INPUT_URI,
        output_s3_uri=OUTPUT_URI,
    )

    # Then detail-type, data store ARN and detail are the example's
    assert entry["DetailType"] == detail_type
    assert entry["Resources"] == [DATASTORE_ARN]
    assert json.loads(entry["Detail"]) == spec_detail(SPEC_IMPORT_JOB_EVENT, jobStatus=status)
    assert "Time" not in entry


@pytest.mark.parametrize(("detail_type", "status", "state"), IMAGE_SET_EXAMPLES)
def test_image_set_entries_match_the_examples(detail_type: str, status: str, state: str) -> None:
    # When building the entry for an image set workflow status
    entry = events.image_set_entry(
        account=ACCOUNT,
        region=REGION,
        datastore_id=DATASTORE_ID,
        image_set_id=IMAGE_SET_ID,
        state=state,
        workflow_status=status,
    )

    # Then detail-type and detail are the example's, and the ARN names this account and this image set
    assert entry["DetailType"] == detail_type
    assert entry["Resources"] == [IMAGE_SET_ARN]
    detail = json.loads(entry["Detail"])
    assert detail == spec_detail(SPEC_IMAGE_SET_EVENT, imageSetState=state, imageSetWorkflowStatus=status)
    assert list(detail) == [
        "imagingVersion",
        "datastoreId",
        "imagesetId",
        "imageSetState",
        "imageSetWorkflowStatus",
    ]


def test_tables_list_exactly_the_nineteen_event_types() -> None:
    # Then the three tables are the spec's 19 detail-types (platform spec 1.2)
    assert list(events.DATASTORE_DETAIL_TYPES.items()) == [(s, d) for d, s in DATASTORE_EXAMPLES]
    assert list(events.IMPORT_JOB_DETAIL_TYPES.items()) == [(s, d) for d, s in IMPORT_JOB_EXAMPLES]
    assert list(events.IMAGE_SET_DETAIL_TYPES.items()) == [(s, d) for d, s, _ in IMAGE_SET_EXAMPLES]


def test_job_without_a_name_keeps_the_key() -> None:
    # When building an import job entry for a job started without a name
    entry = events.import_job_entry(
        account=ACCOUNT,
        region=REGION,
        datastore_id=DATASTORE_ID,
        job_id=JOB_ID,
        job_name=None,
        status="SUBMITTED",
        input_s3_uri=INPUT_URI,
        output_s3_uri=OUTPUT_URI,
    )

    # Then jobName is null, so every import job event has the same keys
    assert json.loads(entry["Detail"])["jobName"] is None


@pytest.mark.parametrize(
    "build",
    [
        pytest.param(
            lambda: events.datastore_entry(
                account=ACCOUNT,
                region=REGION,
                datastore_id=DATASTORE_ID,
                datastore_name="t",
                status="UPDATING",
            ),
            id="datastore-status",
        ),
        pytest.param(
            lambda: events.import_job_entry(
                account=ACCOUNT,
                region=REGION,
                datastore_id=DATASTORE_ID,
                job_id=JOB_ID,
                job_name=None,
                status="CANCELLED",
                input_s3_uri=INPUT_URI,
                output_s3_uri=OUTPUT_URI,
            ),
            id="job-status",
        ),
        pytest.param(
            lambda: events.image_set_entry(
                account=ACCOUNT,
                region=REGION,
                datastore_id=DATASTORE_ID,
                image_set_id=IMAGE_SET_ID,
                state="ACTIVE",
                workflow_status="IMPORTED",
            ),
            id="workflow-status",
        ),
        pytest.param(
            lambda: events.image_set_entry(
                account=ACCOUNT,
                region=REGION,
                datastore_id=DATASTORE_ID,
                image_set_id=IMAGE_SET_ID,
                state="FROZEN",
                workflow_status="CREATED",
            ),
            id="image-set-state",
        ),
    ],
)
def test_unknown_status_is_a_value_error(build: Any) -> None:
    # When building an entry for a status without an event
    # Then it is refused
    with pytest.raises(ValueError, match="known"):
        build()


def test_publisher_rejects_unknown_status_even_when_off() -> None:
    # Given a publisher without a client
    publisher = EventPublisher(None, account=ACCOUNT, region=REGION)

    # When announcing an unknown status
    # Then the programming error still surfaces
    with pytest.raises(ValueError, match="no data store event"):
        publisher.datastore(datastore_id=DATASTORE_ID, datastore_name="t", status="BROKEN")


def test_publisher_without_client_is_a_no_op() -> None:
    # Given a publisher without a client
    publisher = EventPublisher(None, account=ACCOUNT, region=REGION)

    # When announcing, flushing and closing
    publisher.image_set(
        datastore_id=DATASTORE_ID, image_set_id=IMAGE_SET_ID, state="ACTIVE", workflow_status="CREATED"
    )
    started = time.monotonic()
    publisher.flush(timeout=5)
    publisher.close()

    # Then nothing was pending
    assert not publisher.enabled
    assert time.monotonic() - started < 1


# --------------------------------------------------------------------------------------------------
# Publication through moto's EventBridge: a rule on source aws.medical-imaging to an SQS queue

MOTO_ACCOUNT = "123456789012"  # moto's default account: EventBridge stamps it into the envelope


@pytest.fixture
def aws(monkeypatch: pytest.MonkeyPatch) -> Iterator[None]:
    for name, value in {
        "AWS_ACCESS_KEY_ID": "testing",
        "AWS_SECRET_ACCESS_KEY": "testing",
        "AWS_SESSION_TOKEN": "testing",
        "AWS_DEFAULT_REGION": REGION,
    }.items():
        monkeypatch.setenv(name, value)
    with mock_aws():
        yield


@pytest.fixture
def queue_url(aws: None) -> str:
    """An SQS queue receiving every aws.medical-imaging event of the default bus."""
    sqs = boto3.client("sqs", region_name=REGION)
    url: str = sqs.create_queue(QueueName="medical-imaging-events")["QueueUrl"]
    arn = sqs.get_queue_attributes(QueueUrl=url, AttributeNames=["QueueArn"])["Attributes"]["QueueArn"]
    bridge = boto3.client("events", region_name=REGION)
    bridge.put_rule(Name="medical-imaging", EventPattern=json.dumps({"source": ["aws.medical-imaging"]}))
    bridge.put_targets(Rule="medical-imaging", Targets=[{"Id": "queue", "Arn": arn}])
    return url


def received(url: str, count: int) -> list[dict[str, Any]]:
    sqs = boto3.client("sqs", region_name=REGION)
    messages: list[dict[str, Any]] = []
    deadline = time.monotonic() + 10
    while len(messages) < count and time.monotonic() < deadline:
        batch = sqs.receive_message(QueueUrl=url, MaxNumberOfMessages=10).get("Messages", [])
        messages += [json.loads(m["Body"]) for m in batch]
    return messages


def test_events_reach_a_rule_target_through_eventbridge(queue_url: str) -> None:
    # Given a publisher on moto's EventBridge, for moto's account (the account EventBridge stamps)
    publisher = EventPublisher(
        boto3.client("events", region_name=REGION), account=MOTO_ACCOUNT, region=REGION
    )

    # When announcing one state of each kind
    publisher.datastore(datastore_id=DATASTORE_ID, datastore_name="test", status="CREATING")
    publisher.import_job(
        datastore_id=DATASTORE_ID,
        job_id=JOB_ID,
        job_name="test_only_1",
        status="SUBMITTED",
        input_s3_uri=INPUT_URI,
        output_s3_uri=OUTPUT_URI,
    )
    publisher.image_set(
        datastore_id=DATASTORE_ID, image_set_id=IMAGE_SET_ID, state="ACTIVE", workflow_status="CREATED"
    )
    publisher.flush()
    publisher.close()

    # Then the rule delivers events shaped as the spec's examples, with this account in envelope and ARNs
    delivered = {m["detail-type"]: m for m in received(queue_url, 3)}
    arn = f"arn:aws:medical-imaging:{REGION}:{MOTO_ACCOUNT}:datastore/{DATASTORE_ID}"
    for example, resource in [
        (SPEC_DATASTORE_EVENT, arn),
        (SPEC_IMPORT_JOB_EVENT, arn),
        (SPEC_IMAGE_SET_EVENT, f"{arn}/imageset/{IMAGE_SET_ID}"),
    ]:
        expected = json.loads(example)
        event = delivered[expected["detail-type"]]
        # moto's default target template drops "account" (EventBridge adds it from the caller's account)
        assert set(expected) - {"account"} <= set(event)
        assert event["version"] == "0"
        assert event["source"] == "aws.medical-imaging"
        assert event["region"] == REGION
        assert event["resources"] == [resource]
        assert event["detail"] == expected["detail"]
        assert datetime.fromisoformat(event["time"]).tzinfo is not None


def test_many_events_are_sent_in_batches_of_ten(queue_url: str) -> None:
    # Given a publisher whose PutEvents calls are recorded by a botocore hook
    client = boto3.client("events", region_name=REGION)
    sizes: list[int] = []
    client.meta.events.register(
        "provide-client-params.events.PutEvents", lambda params, **_: sizes.append(len(params["Entries"]))
    )
    publisher = EventPublisher(client, account=MOTO_ACCOUNT, region=REGION)

    # When announcing 25 image sets quickly
    for n in range(25):
        publisher.image_set(
            datastore_id=DATASTORE_ID, image_set_id=f"{n:032x}", state="ACTIVE", workflow_status="CREATED"
        )
    publisher.close()

    # Then no call exceeds PutEvents' limit and every event arrives
    assert max(sizes) <= 10
    assert sum(sizes) == 25
    assert len(received(queue_url, 25)) == 25


def test_publishing_does_not_wait_for_eventbridge(queue_url: str) -> None:
    # Given an EventBridge call that blocks until released
    client = boto3.client("events", region_name=REGION)
    release = threading.Event()
    client.meta.events.register("before-parameter-build.events.PutEvents", hold_until(release))
    publisher = EventPublisher(client, account=MOTO_ACCOUNT, region=REGION)

    # When announcing
    started = time.monotonic()
    publisher.datastore(datastore_id=DATASTORE_ID, datastore_name="test", status="ACTIVE")
    elapsed = time.monotonic() - started

    # Then the caller returns at once and the event goes out once released
    assert elapsed < 0.5
    release.set()
    publisher.close()
    assert [m["detail-type"] for m in received(queue_url, 1)] == ["Data Store Created"]


# --------------------------------------------------------------------------------------------------
# Failures: retried with backoff, then logged, never raised


def hold_until(release: threading.Event, entered: threading.Event | None = None) -> Any:
    """A hook that blocks a PutEvents call until ``release`` is set (``entered`` tells it has started)."""

    def hook(**_: Any) -> None:
        if entered is not None:
            entered.set()
        release.wait(5)

    return hook


def stubbed_client() -> tuple[Any, Stubber, list[list[str]]]:
    """An events client answering from a Stubber, with each call's DetailTypes recorded."""
    client = boto3.client(
        "events", region_name=REGION, aws_access_key_id="testing", aws_secret_access_key="testing"
    )
    calls: list[list[str]] = []
    client.meta.events.register(
        "provide-client-params.events.PutEvents",
        lambda params, **_: calls.append([e["DetailType"] for e in params["Entries"]]),
    )
    return client, Stubber(client), calls


def test_failed_entries_are_retried_alone() -> None:
    # Given a first call held until two more entries wait in the queue, and EventBridge then failing the
    # first entry of that batch of two once
    client, stubber, calls = stubbed_client()
    release, entered = threading.Event(), threading.Event()
    client.meta.events.register("before-parameter-build.events.PutEvents", hold_until(release, entered))
    stubber.add_response("put_events", {"FailedEntryCount": 0, "Entries": [{"EventId": "0"}]})
    stubber.add_response(
        "put_events",
        {
            "FailedEntryCount": 1,
            "Entries": [{"ErrorCode": "InternalFailure", "ErrorMessage": "try again"}, {"EventId": "2"}],
        },
    )
    stubber.add_response("put_events", {"FailedEntryCount": 0, "Entries": [{"EventId": "1"}]})
    publisher = EventPublisher(client, account=ACCOUNT, region=REGION, backoff=0)

    # When announcing three states, the last two while the first is being sent
    with stubber:
        publisher.datastore(datastore_id=DATASTORE_ID, datastore_name="t", status="CREATING")
        assert entered.wait(5)
        publisher.datastore(datastore_id=DATASTORE_ID, datastore_name="t", status="ACTIVE")
        publisher.datastore(datastore_id=DATASTORE_ID, datastore_name="t", status="DELETING")
        release.set()
        publisher.close()

    # Then the second and third go in one batch, and only the failed entry is sent again
    stubber.assert_no_pending_responses()
    assert calls == [
        ["Data Store Creating"],
        ["Data Store Created", "Data Store Deleting"],
        ["Data Store Created"],
    ]


def test_exceptions_are_retried_then_logged_never_raised(caplog: pytest.LogCaptureFixture) -> None:
    # Given EventBridge raising on every attempt
    client, stubber, calls = stubbed_client()
    for _ in range(3):
        stubber.add_client_error("put_events", service_error_code="InternalException", http_status_code=500)
    publisher = EventPublisher(client, account=ACCOUNT, region=REGION, max_attempts=3, backoff=0)

    # When announcing
    with stubber, caplog.at_level(logging.INFO, logger="emulator.events"):
        publisher.image_set(
            datastore_id=DATASTORE_ID, image_set_id=IMAGE_SET_ID, state="LOCKED", workflow_status="UPDATING"
        )
        publisher.flush()
        publisher.close()

    # Then three attempts were made and the drop is logged as an error
    stubber.assert_no_pending_responses()
    assert len(calls) == 3
    errors = [r for r in caplog.records if r.levelno == logging.ERROR]
    assert len(errors) == 1
    assert "Image Set Updating" in errors[0].getMessage()
    assert "InternalException" in errors[0].getMessage()


def test_backoff_doubles_between_attempts() -> None:
    # Given failures on every attempt and a 20 ms backoff
    client, stubber, calls = stubbed_client()
    for _ in range(3):
        stubber.add_response(
            "put_events", {"FailedEntryCount": 1, "Entries": [{"ErrorCode": "ThrottlingException"}]}
        )
    publisher = EventPublisher(client, account=ACCOUNT, region=REGION, max_attempts=3, backoff=0.02)

    # When announcing and waiting
    started = time.monotonic()
    with stubber:
        publisher.datastore(datastore_id=DATASTORE_ID, datastore_name="t", status="DELETING")
        publisher.close()
    elapsed = time.monotonic() - started

    # Then the waits were 20 ms and 40 ms
    assert len(calls) == 3
    assert elapsed >= 0.06


def test_events_after_close_are_dropped_with_a_warning(caplog: pytest.LogCaptureFixture) -> None:
    # Given a closed publisher
    client, stubber, calls = stubbed_client()
    publisher = EventPublisher(client, account=ACCOUNT, region=REGION)
    publisher.close()

    # When announcing
    with stubber, caplog.at_level(logging.WARNING, logger="emulator.events"):
        publisher.datastore(datastore_id=DATASTORE_ID, datastore_name="t", status="DELETED")
        publisher.flush(timeout=0.1)

    # Then nothing is sent and the drop is logged
    assert calls == []
    assert "closed" in caplog.text
    publisher.close()


def test_max_attempts_must_be_positive() -> None:
    # When building a publisher that would never send
    # Then it is refused
    with pytest.raises(ValueError, match="max_attempts"):
        EventPublisher(None, account=ACCOUNT, region=REGION, max_attempts=0)

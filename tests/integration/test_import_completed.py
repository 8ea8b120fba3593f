"""ImportCompleted and ReconcileJobs end to end: the handlers against moto (S3, DynamoDB, EventBridge,
SQS) and the emulator.

Every test imports real files through StartImport (a real batch, a real job in the emulator), then
hands the job's completion event (or the reconciler) to the completion stage and checks what it did:
the events on the pipeline bus (through a rule into a queue, as a subscriber would see them), the
report, the batch record and the job record.
"""

from __future__ import annotations

import json
import secrets
import uuid
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from typing import Any

import boto3
import pytest

from ahi_pipeline.runtime import reset_environment
from emulator.config import Quotas
from emulator.server import Emulator
from tests.emulator import helpers
from tests.integration.conftest import REGION, FakeContext, IngestStack, failed_ids, log_lines
from tests.integration.test_start_import import bundled, dicom_files, metric_totals

pytestmark = pytest.mark.integration


@dataclass
class CompletionStack:
    """An ingest stack plus the completion stage's bus, queues and settings."""

    ingest: IngestStack
    events: Any
    sqs: Any
    bus: str
    capture_url: str
    job_events_url: str
    _seen_jobs: set[str] = field(default_factory=set)

    # -------------------------------------------------------------- importing
    def import_files(self, files: dict[str, bytes]) -> str:
        """Upload ``files``, run StartImport, wait for the job; its id."""
        uploads = self.ingest.put_many(files)
        response = self.ingest.invoke(self.ingest.event(uploads))
        assert response == {"batchItemFailures": []}
        [summary] = [j for j in self.ingest.jobs() if j["jobId"] not in self._seen_jobs]
        self._seen_jobs.add(summary["jobId"])
        helpers.wait_job(self.ingest.ahi, self.ingest.datastore_id, summary["jobId"])
        return str(summary["jobId"])

    def job(self, job_id: str) -> dict[str, Any]:
        properties: dict[str, Any] = self.ingest.ahi.get_dicom_import_job(
            datastoreId=self.ingest.datastore_id, jobId=job_id
        )["jobProperties"]
        return properties

    # -------------------------------------------------------------- events and handlers
    def job_event(self, job_id: str, *, status: str | None = None, datastore_id: str | None = None) -> str:
        """The body of HealthImaging's completion event for ``job_id``, as the rule delivers it."""
        job = self.job(job_id)
        status = status or job["jobStatus"]
        return json.dumps(
            {
                "version": "0",
                "id": str(uuid.uuid4()),
                "detail-type": "Import Job Completed" if status == "COMPLETED" else "Import Job Failed",
                "source": "aws.medical-imaging",
                "account": "123456789012",
                "time": "2026-11-22T10:00:00Z",
                "region": REGION,
                "resources": [
                    f"arn:aws:medical-imaging:{REGION}:123456789012:datastore/{job['datastoreId']}"
                ],
                "detail": {
                    "imagingVersion": "1.0",
                    "datastoreId": datastore_id or job["datastoreId"],
                    "jobId": job_id,
                    "jobName": job["jobName"],
                    "jobStatus": status,
                    "inputS3Uri": job["inputS3Uri"],
                    "outputS3Uri": f"s3://{self.ingest.output}/import-results/",
                },
            }
        )

    @staticmethod
    def sqs_event(*bodies: str) -> dict[str, Any]:
        return {
            "Records": [
                {
                    "messageId": str(uuid.uuid4()),
                    "receiptHandle": secrets.token_hex(16),
                    "body": body,
                    "attributes": {"ApproximateReceiveCount": "1"},
                    "messageAttributes": {},
                    "eventSource": "aws:sqs",
                    "eventSourceARN": "arn:aws:sqs:us-east-1:123456789012:JobEventsQueue",
                    "awsRegion": REGION,
                }
                for body in bodies
            ]
        }

    def completed(self, *bodies: str) -> dict[str, Any]:
        """Call ImportCompleted's handler on an SQS event of ``bodies``."""
        from functions.import_completed.app import lambda_handler  # noqa: PLC0415 - after the env is set

        response: dict[str, Any] = lambda_handler(self.sqs_event(*bodies), FakeContext("ImportCompleted"))
        return response

    def reconcile(self) -> dict[str, Any]:
        from functions.reconcile_jobs.app import lambda_handler  # noqa: PLC0415 - after the env is set

        response: dict[str, Any] = lambda_handler({}, FakeContext("ReconcileJobs"))
        return response

    # -------------------------------------------------------------- what happened
    def bus_events(self) -> list[dict[str, Any]]:
        """Every event the pipeline bus delivered so far (drained from the capture queue)."""
        events: list[dict[str, Any]] = []
        while True:
            messages = self.sqs.receive_message(
                QueueUrl=self.capture_url, MaxNumberOfMessages=10, WaitTimeSeconds=0
            ).get("Messages", [])
            if not messages:
                return events
            for message in messages:
                events.append(json.loads(message["Body"]))
                self.sqs.delete_message(QueueUrl=self.capture_url, ReceiptHandle=message["ReceiptHandle"])

    def queued_job_events(self) -> list[str]:
        bodies: list[str] = []
        while True:
            messages = self.sqs.receive_message(
                QueueUrl=self.job_events_url, MaxNumberOfMessages=10, WaitTimeSeconds=0
            ).get("Messages", [])
            if not messages:
                return bodies
            for message in messages:
                bodies.append(message["Body"])
                self.sqs.delete_message(QueueUrl=self.job_events_url, ReceiptHandle=message["ReceiptHandle"])

    def item(self, key: str) -> dict[str, Any]:
        found = self.ingest.ddb.get_item(TableName=self.ingest.batch_table, Key={"batchId": {"S": key}})
        return {name: next(iter(value.values())) for name, value in found.get("Item", {}).items()}

    def report(self, job_id: str) -> dict[str, Any]:
        body = self.ingest.s3.get_object(Bucket=self.ingest.output, Key=f"reports/import-jobs/{job_id}.json")
        document: dict[str, Any] = json.loads(body["Body"].read())
        return document

    def report_at(self, uri: str) -> dict[str, Any]:
        bucket, _, key = uri.removeprefix("s3://").partition("/")
        document: dict[str, Any] = json.loads(
            self.ingest.s3.get_object(Bucket=bucket, Key=key)["Body"].read()
        )
        return document

    def job_folder(self, job_id: str) -> tuple[str, str]:
        bucket, _, folder = self.job(job_id)["outputS3Uri"].removeprefix("s3://").partition("/")
        return bucket, folder


@pytest.fixture
def make_completion(
    make_stack: Callable[..., IngestStack], moto_url: str, monkeypatch: pytest.MonkeyPatch
) -> Iterator[Callable[..., CompletionStack]]:
    def make(emulator: Emulator, **environment: str) -> CompletionStack:
        ingest = make_stack(emulator)
        suffix = secrets.token_hex(4)
        events = boto3.client("events", region_name=REGION, endpoint_url=moto_url)
        sqs = boto3.client("sqs", region_name=REGION, endpoint_url=moto_url)
        bus = f"pipeline-{suffix}"
        events.create_event_bus(Name=bus)
        capture_url = sqs.create_queue(QueueName=f"capture-{suffix}")["QueueUrl"]
        capture_arn = sqs.get_queue_attributes(QueueUrl=capture_url, AttributeNames=["QueueArn"])[
            "Attributes"
        ]["QueueArn"]
        events.put_rule(
            Name=f"everything-{suffix}",
            EventBusName=bus,
            EventPattern=json.dumps({"source": ["healthimaging-automation"]}),
        )
        events.put_targets(
            Rule=f"everything-{suffix}", EventBusName=bus, Targets=[{"Id": "capture", "Arn": capture_arn}]
        )
        job_events_url = sqs.create_queue(QueueName=f"job-events-{suffix}")["QueueUrl"]
        for name, value in {
            "EVENT_BUS_NAME": bus,
            "JOB_EVENTS_QUEUE_URL": job_events_url,
            "RECONCILE_GRACE_MINUTES": "0",
            "MANIFEST_WAIT_SECONDS": "1",
            "AWS_ENDPOINT_URL_EVENTBRIDGE": moto_url,
            "AWS_ENDPOINT_URL_SQS": moto_url,
            **environment,
        }.items():
            monkeypatch.setenv(name, value)
        reset_environment()
        return CompletionStack(ingest, events, sqs, bus, capture_url, job_events_url)

    yield make
    reset_environment()


@pytest.fixture
def completion(make_completion: Callable[..., CompletionStack], emulator: Emulator) -> CompletionStack:
    return make_completion(emulator)


def by_type(events: list[dict[str, Any]], detail_type: str) -> list[dict[str, Any]]:
    return [event["detail"] for event in events if event["detail-type"] == detail_type]


MIXED = {
    "incoming/bundled/CT_small.dcm": bundled("CT_small.dcm"),
    "incoming/bundled/MR_small.dcm": bundled("MR_small.dcm"),
    **dicom_files(3),
    "incoming/notes/readme.txt": b"not a DICOM file",
}


# ------------------------------------------------------------------------------------ the happy path
def test_good_and_bad_files_become_image_set_events_a_report_and_a_partial_batch(
    completion: CompletionStack, capfd: pytest.CaptureFixture[str]
) -> None:
    # Given a job that imported two bundled files and a synthetic series, and failed on a text file
    job_id = completion.import_files(MIXED)
    batch_id = completion.ingest.batch_by_job(job_id)["batchId"]["S"]

    # When ImportCompleted handles its completion event
    response = completion.completed(completion.job_event(job_id))

    # Then the message succeeded, and one "Image Set Imported" per image set is on the pipeline bus
    assert response == {"batchItemFailures": []}
    events = completion.bus_events()
    imported = by_type(events, "Image Set Imported")
    manifest = helpers.read_results(completion.ingest.s3, completion.job(job_id)).summary
    assert sorted(e["imageSetId"] for e in imported) == sorted(
        s["imageSetId"] for s in manifest["imageSetsSummary"]
    )
    assert sum(e["instanceCount"] for e in imported) == 5
    assert {e["importJobId"] for e in imported} == {job_id}
    assert {e["batchId"] for e in imported} == {batch_id}
    assert {e["datastoreId"] for e in imported} == {completion.ingest.datastore_id}
    assert all(e["imageSetVersion"] == "1" and isinstance(e["isPrimary"], bool) for e in imported)
    # and one "Import Files Failed" with the count and the report's location
    [failed] = by_type(events, "Import Files Failed")
    report_uri = f"s3://{completion.ingest.output}/reports/import-jobs/{job_id}.json"
    assert failed == {
        "schemaVersion": 1,
        "datastoreId": completion.ingest.datastore_id,
        "importJobId": job_id,
        "batchId": batch_id,
        "jobStatus": "COMPLETED",
        "failedFiles": 1,
        "errorTypes": {"ValidationException": 1},
        "reportUri": report_uri,
    }
    # and the report maps every file back to its upload key
    report = completion.report(job_id)
    assert report["outcome"] == "PARTIAL"
    assert report["counts"]["scanned"] == 6
    assert {f["key"] for f in report["importedFiles"]} == set(MIXED) - {"incoming/notes/readme.txt"}
    [bad] = report["failedFiles"]
    assert bad["key"] == "incoming/notes/readme.txt"
    assert bad["exceptionType"] == "ValidationException"
    assert bad["message"]
    assert report["latencySeconds"] >= 0
    # and the batch and the job are recorded
    batch = completion.item(batch_id)
    assert (batch["state"], batch["jobStatus"], batch["importedFiles"], batch["failedFiles"]) == (
        "PARTIAL",
        "COMPLETED",
        "5",
        "1",
    )
    assert batch["reportUri"] == report_uri
    record = completion.item(f"job#{job_id}")
    assert (record["state"], record["outcome"], record["attempts"]) == ("HANDLED", "PARTIAL", "1")
    # and the metrics are counted
    totals = metric_totals(capfd.readouterr().out)
    assert totals["FilesImported"] == 5
    assert totals["FilesFailedToImport"] == 1
    assert totals["ImageSetsImported"] == len(imported)
    assert "ImportJobLatency" in totals


def test_a_job_that_imported_everything_completes_its_batch(completion: CompletionStack) -> None:
    # Given a job of valid files only
    job_id = completion.import_files(dicom_files(2, folder="incoming/clean/"))

    # When its event is handled
    assert completion.completed(completion.job_event(job_id)) == {"batchItemFailures": []}

    # Then the batch is COMPLETED, and no "Import Files Failed" is put
    batch_id = completion.ingest.batch_by_job(job_id)["batchId"]["S"]
    assert completion.item(batch_id)["state"] == "COMPLETED"
    events = completion.bus_events()
    assert not by_type(events, "Import Files Failed")
    assert len(by_type(events, "Image Set Imported")) >= 1


def test_the_same_job_event_twice_fans_out_once(completion: CompletionStack) -> None:
    # Given a handled job
    job_id = completion.import_files(MIXED)
    event = completion.job_event(job_id)
    assert completion.completed(event) == {"batchItemFailures": []}
    first = completion.bus_events()

    # When the same event arrives again, alone and then twice in one batch
    assert completion.completed(event) == {"batchItemFailures": []}
    assert completion.completed(event, event) == {"batchItemFailures": []}

    # Then nothing more is announced, and the job was handled in one attempt
    assert first
    assert completion.bus_events() == []
    assert completion.item(f"job#{job_id}")["attempts"] == "1"


def test_a_dropped_event_is_found_by_the_reconciler_and_handled_once(completion: CompletionStack) -> None:
    # Given a job whose completion event never arrived, and one whose event was handled
    handled = completion.import_files(dicom_files(2, folder="incoming/first/"))
    assert completion.completed(completion.job_event(handled)) == {"batchItemFailures": []}
    completion.bus_events()
    dropped = completion.import_files(dicom_files(2, folder="incoming/second/"))

    # When the reconciler runs
    outcome = completion.reconcile()

    # Then it sends the dropped job, and only that one, to the job events queue
    assert outcome["queued"] == 1
    assert outcome["handled"] == 1
    [body] = completion.queued_job_events()
    assert json.loads(body)["detail"]["jobId"] == dropped
    assert completion.item(f"job#{dropped}")["state"] == "QUEUED"
    # and a second run sends nothing more while that message is on its way
    assert completion.reconcile()["queued"] == 0
    assert completion.queued_job_events() == []

    # When ImportCompleted handles the reconciler's message
    assert completion.completed(body) == {"batchItemFailures": []}

    # Then the dropped job is announced and recorded, and the reconciler leaves it alone from now on
    assert {e["importJobId"] for e in by_type(completion.bus_events(), "Image Set Imported")} == {dropped}
    assert completion.item(f"job#{dropped}")["state"] == "HANDLED"
    assert completion.reconcile() | {"states": None} == {
        "listed": 2,
        "ours": 2,
        "handled": 2,
        "pending": 0,
        "queued": 0,
        "states": None,
    }
    # and the late original event changes nothing
    assert completion.completed(completion.job_event(dropped)) == {"batchItemFailures": []}
    assert completion.bus_events() == []


def test_the_reconciler_waits_for_recent_jobs_events(
    make_completion: Callable[..., CompletionStack], emulator: Emulator
) -> None:
    # Given a job that ended moments ago, and a grace period of ten minutes
    completion = make_completion(emulator, RECONCILE_GRACE_MINUTES="10")
    completion.import_files(dicom_files(1, folder="incoming/recent/"))

    # When the reconciler runs, then it leaves the job to its own event
    outcome = completion.reconcile()
    assert (outcome["pending"], outcome["queued"]) == (1, 0)


def test_a_failed_job_reports_every_file(
    make_completion: Callable[..., CompletionStack], start_emulator: Callable[..., Emulator]
) -> None:
    # Given a service that fails any job of more than two files, and a batch of three
    completion = make_completion(start_emulator(quotas=Quotas(files_per_import_job=2)))
    files = dicom_files(3, folder="incoming/too many/")
    job_id = completion.import_files(files)
    assert completion.job(job_id)["jobStatus"] == "FAILED"

    # When its "Import Job Failed" event is handled
    assert completion.completed(completion.job_event(job_id)) == {"batchItemFailures": []}

    # Then every file is reported with the reason, the batch is FAILED, and no image set is announced
    report = completion.report(job_id)
    assert report["outcome"] == "FAILED"
    assert {f["key"] for f in report["failedFiles"]} == set(files)
    events = completion.bus_events()
    assert not by_type(events, "Image Set Imported")
    [failed] = by_type(events, "Import Files Failed")
    assert (failed["jobStatus"], failed["failedFiles"]) == ("FAILED", 3)
    batch_id = completion.ingest.batch_by_job(job_id)["batchId"]["S"]
    batch = completion.item(batch_id)
    assert (batch["state"], batch["jobStatus"]) == ("FAILED", "FAILED")
    assert batch["error"]


# ------------------------------------------------------------------------------------ bad input
def test_a_missing_manifest_fails_the_message_and_keeps_the_job_for_retry(
    completion: CompletionStack,
) -> None:
    # Given a finished job whose manifest is gone
    job_id = completion.import_files(MIXED)
    bucket, folder = completion.job_folder(job_id)
    manifest = completion.ingest.s3.get_object(Bucket=bucket, Key=f"{folder}job-output-manifest.json")
    body = manifest["Body"].read()
    completion.ingest.s3.delete_object(Bucket=bucket, Key=f"{folder}job-output-manifest.json")
    event = completion.job_event(job_id)

    # When its event is handled
    response = completion.completed(event)

    # Then the message fails alone, nothing is announced, and the job record says why
    assert len(failed_ids(response)) == 1
    assert completion.bus_events() == []
    record = completion.item(f"job#{job_id}")
    assert record["state"] == "ERROR"
    assert "job-output-manifest.json" in record["error"]
    assert "missing" in record["error"]

    # When the manifest appears and the message is retried, then the job is handled
    completion.ingest.s3.put_object(Bucket=bucket, Key=f"{folder}job-output-manifest.json", Body=body)
    assert completion.completed(event) == {"batchItemFailures": []}
    assert by_type(completion.bus_events(), "Image Set Imported")
    assert completion.item(f"job#{job_id}")["state"] == "HANDLED"


@pytest.mark.parametrize(
    ("damage", "expected"),
    [
        pytest.param(
            lambda text: text[: len(text) // 2],
            "SUCCESS/success.ndjson line",
            id="truncated success.ndjson",
        ),
        pytest.param(
            lambda text: text.replace('"importResponse"', '"importReponse"', 1),
            "has no importResponse",
            id="malformed line",
        ),
        pytest.param(
            lambda text: "\n".join(text.splitlines()[1:]) + "\n",
            "the manifest counts",
            id="a line missing",
        ),
    ],
)
def test_damaged_results_fail_the_message_with_a_clear_error(
    completion: CompletionStack, damage: Callable[[str], str], expected: str
) -> None:
    # Given a finished job whose success.ndjson was damaged
    job_id = completion.import_files(MIXED)
    bucket, folder = completion.job_folder(job_id)
    key = f"{folder}SUCCESS/success.ndjson"
    text = completion.ingest.s3.get_object(Bucket=bucket, Key=key)["Body"].read().decode()
    completion.ingest.s3.put_object(Bucket=bucket, Key=key, Body=damage(text).encode())

    # When its event is handled
    response = completion.completed(completion.job_event(job_id))

    # Then the message fails, nothing is announced or reported, and the record names the problem
    assert len(failed_ids(response)) == 1
    assert completion.bus_events() == []
    record = completion.item(f"job#{job_id}")
    assert record["state"] == "ERROR"
    assert expected in record["error"]
    assert "incoming/" not in record["error"]  # no upload key (they may hold names) in the error
    batch_id = completion.ingest.batch_by_job(job_id)["batchId"]["S"]
    assert completion.item(batch_id)["state"] == "SUBMITTED"


def test_an_image_set_the_data_store_does_not_have_fails_the_message(completion: CompletionStack) -> None:
    # Given a job whose results name an image set that is not in the data store (consistently)
    job_id = completion.import_files(dicom_files(2, folder="incoming/ghost/"))
    bucket, folder = completion.job_folder(job_id)
    real = helpers.read_results(completion.ingest.s3, completion.job(job_id)).image_set_ids[0]
    ghost = "0" * 32
    for name in ("job-output-manifest.json", "SUCCESS/success.ndjson"):
        text = completion.ingest.s3.get_object(Bucket=bucket, Key=folder + name)["Body"].read().decode()
        completion.ingest.s3.put_object(
            Bucket=bucket, Key=folder + name, Body=text.replace(real, ghost).encode()
        )

    # When its event is handled
    response = completion.completed(completion.job_event(job_id))

    # Then the message fails and the record names the missing image set
    assert len(failed_ids(response)) == 1
    record = completion.item(f"job#{job_id}")
    assert record["state"] == "ERROR"
    assert ghost in record["error"]
    assert "not in the data store" in record["error"]
    assert completion.bus_events() == []


@pytest.mark.parametrize(
    "body",
    [
        pytest.param("not json", id="not JSON"),
        pytest.param(
            json.dumps({"source": "aws.s3", "detail-type": "Object Created", "detail": {}}), id="S3"
        ),
        pytest.param(
            json.dumps(
                {"source": "aws.medical-imaging", "detail-type": "Import Job Completed", "detail": {}}
            ),
            id="no job id",
        ),
    ],
)
def test_a_poison_message_fails_alone(
    completion: CompletionStack, body: str, capfd: pytest.CaptureFixture[str]
) -> None:
    # Given a good job event and a poison message in one batch
    job_id = completion.import_files(dicom_files(1, folder="incoming/poison/"))

    # When both are handled
    response = completion.completed(completion.job_event(job_id), body)

    # Then only the poison one fails (for the dead-letter queue, after its retries), with its reason logged
    assert len(failed_ids(response)) == 1
    assert completion.item(f"job#{job_id}")["state"] == "HANDLED"
    assert any(line.get("message") == "poison job event" for line in log_lines(capfd.readouterr().out))


def test_events_of_another_data_store_and_foreign_jobs_are_acknowledged(completion: CompletionStack) -> None:
    # Given an event naming another data store, and a job started outside the pipeline
    ours = completion.import_files(dicom_files(1, folder="incoming/ours/"))
    other_store = completion.job_event(ours, datastore_id="f" * 32)
    ahi, s3 = completion.ingest.ahi, completion.ingest.s3
    s3.put_object(Bucket=completion.ingest.landing, Key="manual/IM1.dcm", Body=bundled("CT_small.dcm"))
    foreign = ahi.start_dicom_import_job(
        datastoreId=completion.ingest.datastore_id,
        jobName="someone-else",
        dataAccessRoleArn="arn:aws:iam::123456789012:role/ImportJobDataAccessRole",
        inputS3Uri=f"s3://{completion.ingest.landing}/manual/",
        outputS3Uri=f"s3://{completion.ingest.output}/manual-results/",
    )["jobId"]
    helpers.wait_job(ahi, completion.ingest.datastore_id, foreign)

    # When both events are handled
    response = completion.completed(other_store, completion.job_event(foreign))

    # Then both are acknowledged without announcing anything; the foreign job is recorded as IGNORED
    assert response == {"batchItemFailures": []}
    assert completion.bus_events() == []
    assert completion.item(f"job#{foreign}")["state"] == "IGNORED"
    assert completion.item(f"job#{ours}") == {}


def test_an_event_that_overtakes_its_job_waits_for_it(completion: CompletionStack) -> None:
    # Given a job just started, its completion event delivered before the job has finished
    uploads = completion.ingest.put_many(dicom_files(8, folder="incoming/early/"))
    assert completion.ingest.invoke(completion.ingest.event(uploads)) == {"batchItemFailures": []}
    [summary] = completion.ingest.jobs()
    event = completion.job_event(summary["jobId"], status="COMPLETED")

    # When ImportCompleted handles it at once
    response = completion.completed(event)

    # Then it waited for the job (up to MANIFEST_WAIT_SECONDS) and handled it
    assert response == {"batchItemFailures": []}
    assert completion.item(f"job#{summary['jobId']}")["state"] == "HANDLED"


def test_a_batch_whose_job_was_never_recorded_gets_it_and_keeps_its_outcome(
    completion: CompletionStack,
) -> None:
    # Given a job whose batch item lost its job id (StartImport stopped between starting the job and
    # recording it)
    from ahi_pipeline.batch_store import BatchStore  # noqa: PLC0415

    job_id = completion.import_files(dicom_files(1, folder="incoming/unrecorded/"))
    batch_id = completion.ingest.batch_by_job(job_id)["batchId"]["S"]
    completion.ingest.ddb.update_item(
        TableName=completion.ingest.batch_table,
        Key={"batchId": {"S": batch_id}},
        UpdateExpression="SET #state = :staged REMOVE jobId",
        ExpressionAttributeNames={"#state": "state"},
        ExpressionAttributeValues={":staged": {"S": "STAGED"}},
    )

    # When the job's event is handled (the job name names the batch), and StartImport's retry then
    # records the job as submitted
    assert completion.completed(completion.job_event(job_id)) == {"batchItemFailures": []}
    BatchStore(completion.ingest.ddb, completion.ingest.batch_table).mark_submitted(batch_id, job_id=job_id)

    # Then the batch holds its job and its outcome, not SUBMITTED again
    batch = completion.item(batch_id)
    assert (batch["jobId"], batch["state"]) == (job_id, "COMPLETED")


def test_the_sample_events_of_events_run(completion: CompletionStack) -> None:
    # Given events/import_completed.json pointed at a real finished job of this stack
    job_id = completion.import_files(dicom_files(1, folder="incoming/sample/"))
    with open("events/import_completed.json") as handle:
        event = json.load(handle)
    body = json.loads(event["Records"][0]["body"])
    real = json.loads(completion.job_event(job_id))
    body["detail"].update({k: real["detail"][k] for k in ("datastoreId", "jobId", "jobName", "inputS3Uri")})
    event["Records"][0]["body"] = json.dumps(body)

    # When ImportCompleted handles it, and ReconcileJobs its scheduled event
    from functions.import_completed.app import lambda_handler  # noqa: PLC0415
    from functions.reconcile_jobs.app import lambda_handler as reconcile  # noqa: PLC0415

    response = lambda_handler(event, FakeContext("ImportCompleted"))
    with open("events/reconcile_jobs.json") as handle:
        outcome = reconcile(json.load(handle), FakeContext("ReconcileJobs"))

    # Then the job is handled, and the reconciler finds nothing left to send
    assert response == {"batchItemFailures": []}
    assert completion.item(f"job#{job_id}")["state"] == "HANDLED"
    assert (outcome["handled"], outcome["queued"]) == (1, 0)


def test_a_truncated_manifest_fails_the_message_with_a_clear_error(completion: CompletionStack) -> None:
    # Given a finished job whose manifest was cut short
    job_id = completion.import_files(MIXED)
    bucket, folder = completion.job_folder(job_id)
    key = f"{folder}job-output-manifest.json"
    body = completion.ingest.s3.get_object(Bucket=bucket, Key=key)["Body"].read()
    completion.ingest.s3.put_object(Bucket=bucket, Key=key, Body=body[: len(body) // 2])

    # When its event is handled
    response = completion.completed(completion.job_event(job_id))

    # Then the message fails, and the record says the manifest is not valid JSON
    assert len(failed_ids(response)) == 1
    record = completion.item(f"job#{job_id}")
    assert record["state"] == "ERROR"
    assert "job-output-manifest.json is not valid JSON" in record["error"]
    assert completion.bus_events() == []

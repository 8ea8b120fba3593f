"""Fixtures of the handler integration tests: a StartImport stack on moto and the emulator.

``ingest_stack`` creates what the template would (a versioned landing bucket, an output bucket, the
batch table with its ``byJobId`` index, the idempotency table, a data store), points the handler's
environment at them through the standard variables (``AWS_ENDPOINT_URL_S3``, …), and forgets the
package's cached settings and clients before and after each test.
"""

from __future__ import annotations

import json
import logging
import secrets
import sys
import uuid
from collections.abc import Callable, Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

import boto3
import pytest

from ahi_pipeline.runtime import reset_environment
from emulator.server import Emulator
from tests.emulator import helpers
from tests.emulator.conftest import start_emulator  # noqa: F401 - the fixture, for the throttling test

REGION = "us-east-1"
ROLE_ARN = "arn:aws:iam::123456789012:role/ImportJobDataAccessRole"


@dataclass
class FakeContext:
    """The attributes of a Lambda context that Powertools reads."""

    function_name: str = "StartImport"
    memory_limit_in_mb: int = 512
    invoked_function_arn: str = "arn:aws:lambda:us-east-1:123456789012:function:StartImport"
    aws_request_id: str = field(default_factory=lambda: str(uuid.uuid4()))
    remaining_ms: int = 300_000

    def get_remaining_time_in_millis(self) -> int:
        return self.remaining_ms


@dataclass(frozen=True)
class Uploaded:
    """An object put in the landing bucket, as its S3 event describes it."""

    bucket: str
    key: str
    size: int
    etag: str
    version_id: str | None


@dataclass
class IngestStack:
    landing: str
    output: str
    batch_table: str
    idempotency_table: str
    datastore_id: str
    s3: Any
    ddb: Any
    ahi: Any

    def environment(self) -> dict[str, str]:
        return {
            "DATASTORE_ID": self.datastore_id,
            "LANDING_BUCKET": self.landing,
            "OUTPUT_BUCKET": self.output,
            "IMPORT_ROLE_ARN": ROLE_ARN,
            "BATCH_TABLE": self.batch_table,
            "IDEMPOTENCY_TABLE": self.idempotency_table,
        }

    # -------------------------------------------------------------- uploads and events
    def put(self, key: str, body: bytes, bucket: str | None = None) -> Uploaded:
        bucket = bucket or self.landing
        response = self.s3.put_object(Bucket=bucket, Key=key, Body=body)
        return Uploaded(bucket, key, len(body), response["ETag"].strip('"'), response.get("VersionId"))

    def put_many(self, files: Mapping[str, bytes]) -> list[Uploaded]:
        return [self.put(key, body) for key, body in files.items()]

    @staticmethod
    def event(objects: Sequence[Uploaded], *, message_ids: Sequence[str] | None = None) -> dict[str, Any]:
        """The SQS event UploadQueue would deliver for ``objects`` (one EventBridge event per message)."""
        ids = list(message_ids or [str(uuid.uuid4()) for _ in objects])
        return {
            "Records": [sqs_record(message_id, obj) for message_id, obj in zip(ids, objects, strict=True)]
        }

    def invoke(self, event: Mapping[str, Any], context: FakeContext | None = None) -> dict[str, Any]:
        """Call the handler as Lambda would, in a fresh-enough environment."""
        from functions.start_import.app import lambda_handler  # noqa: PLC0415 - after the env is set

        response: dict[str, Any] = lambda_handler(dict(event), context or FakeContext())
        return response

    # -------------------------------------------------------------- what happened
    def batch_items(self) -> list[dict[str, Any]]:
        """Every batch item of the batch table (claims and the lease left out)."""
        items: list[dict[str, Any]] = []
        paginator = self.ddb.get_paginator("scan")
        for page in paginator.paginate(TableName=self.batch_table):
            items.extend(i for i in page["Items"] if i["kind"]["S"] == "batch")
        return items

    def batch_by_job(self, job_id: str) -> dict[str, Any]:
        """The batch item of a job, through the ``byJobId`` index."""
        items = self.ddb.query(
            TableName=self.batch_table,
            IndexName="byJobId",
            KeyConditionExpression="jobId = :job",
            ExpressionAttributeValues={":job": {"S": job_id}},
        )["Items"]
        assert len(items) == 1, items
        item: dict[str, Any] = items[0]
        return item

    def jobs(self) -> list[dict[str, Any]]:
        summaries: list[dict[str, Any]] = self.ahi.list_dicom_import_jobs(datastoreId=self.datastore_id)[
            "jobSummaries"
        ]
        return summaries

    def manifest(self, batch_id: str) -> dict[str, Any]:
        body = self.s3.get_object(Bucket=self.output, Key=f"batches/{batch_id}.json")["Body"].read()
        document: dict[str, Any] = json.loads(body)
        return document

    def finished_jobs(self, timeout: float = 60.0) -> list[helpers.ImportResult]:
        """Every job of the data store, once finished, with its result files."""
        results = []
        for summary in self.jobs():
            job = helpers.wait_job(self.ahi, self.datastore_id, summary["jobId"], timeout=timeout)
            assert job["jobStatus"] == "COMPLETED", job
            results.append(helpers.read_results(self.s3, job))
        return results

    def staged_keys(self, batch_id: str) -> list[str]:
        keys: list[str] = []
        paginator = self.s3.get_paginator("list_objects_v2")
        for page in paginator.paginate(Bucket=self.landing, Prefix=f"staging/{batch_id}/"):
            keys.extend(item["Key"] for item in page.get("Contents", []))
        return keys


def sqs_record(message_id: str, obj: Uploaded, *, detail_type: str = "Object Created") -> dict[str, Any]:
    body = {
        "version": "0",
        "id": str(uuid.uuid4()),
        "detail-type": detail_type,
        "source": "aws.s3",
        "account": "123456789012",
        "time": "2026-11-22T09:00:00Z",
        "region": REGION,
        "resources": [f"arn:aws:s3:::{obj.bucket}"],
        "detail": {
            "version": "0",
            "bucket": {"name": obj.bucket},
            "object": {
                "key": obj.key,
                "size": obj.size,
                "etag": obj.etag,
                "version-id": obj.version_id,
                "sequencer": "0062F0A1B2C3D4E5F6",
            },
            "request-id": "N4N7GDK58NMKJ12R",
            "requester": "123456789012",
            "source-ip-address": "203.0.113.10",
            "reason": "PutObject",
        },
    }
    return {
        "messageId": message_id,
        "receiptHandle": secrets.token_hex(16),
        "body": json.dumps(body),
        "attributes": {"ApproximateReceiveCount": "1"},
        "messageAttributes": {},
        "eventSource": "aws:sqs",
        "eventSourceARN": "arn:aws:sqs:us-east-1:123456789012:UploadQueue",
        "awsRegion": REGION,
    }


def create_tables(ddb: Any, batch_table: str, idempotency_table: str) -> None:
    """The two tables as the template defines them."""
    ddb.create_table(
        TableName=batch_table,
        BillingMode="PAY_PER_REQUEST",
        AttributeDefinitions=[
            {"AttributeName": "batchId", "AttributeType": "S"},
            {"AttributeName": "jobId", "AttributeType": "S"},
        ],
        KeySchema=[{"AttributeName": "batchId", "KeyType": "HASH"}],
        GlobalSecondaryIndexes=[
            {
                "IndexName": "byJobId",
                "KeySchema": [{"AttributeName": "jobId", "KeyType": "HASH"}],
                "Projection": {"ProjectionType": "ALL"},
            }
        ],
    )
    ddb.create_table(
        TableName=idempotency_table,
        BillingMode="PAY_PER_REQUEST",
        AttributeDefinitions=[{"AttributeName": "id", "AttributeType": "S"}],
        KeySchema=[{"AttributeName": "id", "KeyType": "HASH"}],
    )


class _CurrentStdout:
    """A stream that writes to whatever ``sys.stdout`` is at the time (pytest swaps it per test)."""

    def write(self, text: str) -> int:
        return sys.stdout.write(text)

    def flush(self) -> None:
        sys.stdout.flush()


@pytest.fixture(autouse=True)
def quiet_moto_access_log() -> Iterator[None]:
    """moto's server logs every request at INFO; thousands of copies need not be kept for a report."""
    access_log = logging.getLogger("werkzeug")
    level = access_log.level
    access_log.setLevel(logging.WARNING)
    yield
    access_log.setLevel(level)


@pytest.fixture(autouse=True)
def powertools_logs_to_stdout() -> None:
    """Make Powertools' log handler write to the current test's captured stdout.

    The handler keeps the stream that was ``sys.stdout`` when the package was first imported.
    """
    from ahi_pipeline.observability import logger  # noqa: PLC0415

    handler = logger.registered_handler
    if isinstance(handler, logging.StreamHandler):
        handler.setStream(_CurrentStdout())


@pytest.fixture
def make_stack(
    moto_url: str,
    monkeypatch: pytest.MonkeyPatch,
    emulator: Emulator,
    start_emulator: Callable[..., Emulator],  # noqa: F811 - the fixture imported above
) -> Iterator[Callable[..., IngestStack]]:
    """``make_stack(emulator, versioned=True)``: a StartImport stack whose imports go to ``emulator``.

    Depends on ``start_emulator`` so that emulators it started outlive the stack's teardown.  Only the
    session emulator's data stores are deleted afterwards (it allows 10 active ones); the others go
    away with their emulator.
    """
    created: list[IngestStack] = []
    session_emulator = emulator

    def make(emulator: Emulator, *, versioned: bool = True) -> IngestStack:
        suffix = secrets.token_hex(4)
        s3 = boto3.client("s3", region_name=REGION, endpoint_url=moto_url)
        ddb = boto3.client("dynamodb", region_name=REGION, endpoint_url=moto_url)
        ahi = helpers.medical_imaging(
            emulator.endpoint_url, retries={"mode": "adaptive", "total_max_attempts": 10}
        )
        landing, output = f"landing-{suffix}", f"output-{suffix}"
        for bucket in (landing, output):
            s3.create_bucket(Bucket=bucket)
        if versioned:  # as the template's landing bucket; unversioned uploads are told apart by ETag
            s3.put_bucket_versioning(Bucket=landing, VersioningConfiguration={"Status": "Enabled"})
        create_tables(ddb, f"batches-{suffix}", f"idempotency-{suffix}")
        stack = IngestStack(
            landing=landing,
            output=output,
            batch_table=f"batches-{suffix}",
            idempotency_table=f"idempotency-{suffix}",
            datastore_id=helpers.create_datastore(ahi),
            s3=s3,
            ddb=ddb,
            ahi=ahi,
        )
        for name, value in {
            **stack.environment(),
            "AWS_ENDPOINT_URL_S3": moto_url,
            "AWS_ENDPOINT_URL_DYNAMODB": moto_url,
            "AWS_ENDPOINT_URL_MEDICAL_IMAGING": emulator.endpoint_url,
            "POWERTOOLS_SERVICE_NAME": "start-import-test",
        }.items():
            monkeypatch.setenv(name, value)
        reset_environment()
        if emulator is session_emulator:
            created.append(stack)
        return stack

    yield make
    reset_environment()
    for stack in created:
        session_emulator.wait_idle()
        helpers.delete_datastore(stack.ahi, stack.datastore_id)


@pytest.fixture
def ingest_stack(make_stack: Callable[..., IngestStack], emulator: Emulator) -> IngestStack:
    """A StartImport stack importing into the session's emulator."""
    return make_stack(emulator)


def failed_ids(response: Mapping[str, Any]) -> list[str]:
    return [item["itemIdentifier"] for item in response["batchItemFailures"]]


def log_lines(text: str) -> list[dict[str, Any]]:
    """The JSON lines Powertools wrote (structured logs and EMF metrics)."""
    lines = []
    for line in text.splitlines():
        if line.startswith("{"):
            try:
                lines.append(json.loads(line))
            except ValueError:
                continue
    return lines

"""Helpers of the end-to-end tests: the real template on the local stack, and what its stages recorded."""

from __future__ import annotations

import json
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from local.samples import sample_paths
from local.stack import LocalStack

ROOT = Path(__file__).parents[2]
TEMPLATE = ROOT / "template.yaml"


@contextmanager
def pipeline(tmp_path: Path, **options: Any) -> Iterator[LocalStack]:
    """The real template on a fresh local stack, with a short batching window unless told otherwise."""
    parameters = {"UploadBatchingWindowSeconds": "1", **options.pop("parameters", {})}
    with LocalStack(
        TEMPLATE,
        port=0,
        stack_name="e2e",
        parameters=parameters,
        data_dir=tmp_path,
        function_log=tmp_path / "functions.log",
        **options,
    ) as stack:
        yield stack


def samples(count: int | None = None) -> list[Path]:
    paths = [path for _, path in sample_paths()]
    return paths[:count] if count is not None else paths


def upload(stack: LocalStack, files: dict[str, Path | bytes]) -> None:
    s3 = stack.client("s3")
    bucket = stack.outputs["LandingBucketName"]
    for key, content in files.items():
        if isinstance(content, Path):
            s3.upload_file(str(content), bucket, key)
        else:
            s3.put_object(Bucket=bucket, Key=key, Body=content)


def queue_arn(stack: LocalStack, url: str) -> str:
    attributes = stack.client("sqs").get_queue_attributes(QueueUrl=url, AttributeNames=["QueueArn"])
    return str(attributes["Attributes"]["QueueArn"])


def batches(stack: LocalStack) -> list[dict[str, Any]]:
    """The batch items of the batch table (claims and leases left out)."""
    found = []
    for page in (
        stack.client("dynamodb").get_paginator("scan").paginate(TableName=stack.outputs["BatchTableName"])
    ):
        for item in page["Items"]:
            if item.get("kind", {}).get("S") == "batch":
                found.append({name: next(iter(value.values())) for name, value in item.items()})
    return found


def manifest_members(stack: LocalStack, batch: dict[str, Any]) -> list[dict[str, Any]]:
    bucket, _, key = str(batch["manifestUri"]).removeprefix("s3://").partition("/")
    document = json.loads(stack.client("s3").get_object(Bucket=bucket, Key=key)["Body"].read())
    members: list[dict[str, Any]] = document["members"]
    return members


@dataclass
class JobResult:
    job_id: str
    status: str
    client_token_batch: str | None
    submitted_at: float
    summary: dict[str, Any]
    imported: list[str]
    failed: list[dict[str, Any]]


def jobs(stack: LocalStack) -> list[JobResult]:
    """Every import job of the data store, with its manifest and per-file results."""
    ahi, s3 = stack.client("medical-imaging"), stack.client("s3")
    datastore = stack.outputs["DatastoreId"]
    results = []
    for summary in ahi.list_dicom_import_jobs(datastoreId=datastore, maxResults=50)["jobSummaries"]:
        job = ahi.get_dicom_import_job(datastoreId=datastore, jobId=summary["jobId"])["jobProperties"]
        bucket, _, folder = job["outputS3Uri"].removeprefix("s3://").partition("/")

        def read(key: str, bucket: str = bucket) -> str:
            try:
                return str(s3.get_object(Bucket=bucket, Key=key)["Body"].read().decode())
            except s3.exceptions.NoSuchKey:
                return ""

        manifest = json.loads(read(f"{folder}job-output-manifest.json") or "{}")
        success = [json.loads(line) for line in read(f"{folder}SUCCESS/success.ndjson").splitlines() if line]
        failure = [json.loads(line) for line in read(f"{folder}FAILURE/failure.ndjson").splitlines() if line]
        results.append(
            JobResult(
                job_id=job["jobId"],
                status=job["jobStatus"],
                client_token_batch=None,
                submitted_at=job["submittedAt"].timestamp(),
                summary=manifest.get("jobSummary", {}),
                imported=[staged_key(record["inputFile"]) for record in success],
                failed=failure,
            )
        )
    return results


def staged_key(input_file: str) -> str:
    """A job's ``inputFile`` (``s3://bucket/key`` or ``key``) as a key."""
    return (
        input_file.removeprefix("s3://").partition("/")[2] if input_file.startswith("s3://") else input_file
    )


def handled(stack: LocalStack, queue: str) -> list[Any]:
    """The deliveries from a queue (by URL)."""
    arn = queue_arn(stack, queue)
    return [delivery for delivery in stack.deliveries.snapshot() if delivery.source == arn]


def dead_letters(stack: LocalStack) -> list[dict[str, Any]]:
    sqs = stack.client("sqs")
    url = stack.outputs["UploadDeadLetterQueueUrl"]
    messages: list[dict[str, Any]] = []
    while batch := sqs.receive_message(QueueUrl=url, MaxNumberOfMessages=10, VisibilityTimeout=60).get(
        "Messages", []
    ):
        messages += batch
    return messages

"""The batch table (DynamoDB ``BATCH_TABLE``, partition key ``batchId``, GSI ``byJobId`` on ``jobId``).

Three kinds of item share the table, told apart by the ``batchId`` value and a ``kind`` attribute:

``<40 hex>`` (kind ``batch``)
    One per batch: ``state`` (PLANNED → STAGED → SUBMITTED, or FAILED with ``error``, or EMPTY when no
    member could be staged), ``files``, ``bytes``, ``manifestUri`` (the member list in S3),
    ``inputS3Uri``, ``datastoreId``, ``jobId`` once submitted (indexed by ``byJobId``), ``stagedFiles``,
    ``unavailableFiles``, ``attempts``, timestamps.
``object#<object id>`` (kind ``claim``)
    One per accepted upload: ``owner`` is the batch it belongs to.  Claims make an upload belong to one
    batch forever, so a redelivered message that arrives grouped with other uploads resumes that batch
    instead of planning a second one around the same file.
``lease#planner`` (kind ``lease``)
    A short lease held while claims are read and written, so that check-then-claim is atomic even if
    two invocations ever run at once (StartImport's reserved concurrency is 1, so it is never contended
    in normal operation).  It expires on its own if its holder dies.
``imageset#<image set id>`` (kind ``imageset``)
    The de-identification stage's record of an imported image set: ``state`` IN_PROGRESS, READY,
    SKIPPED (de-identification disabled) or FAILED (cannot be de-identified: ``error`` says why);
    ``startVersion`` (the version de-identification started from: its values are the originals),
    ``copyImageSetId`` (the clean copy, once made), ``finalImageSetId``, ``attempts``, ``reportUri``.
``job#<job id>`` (kind ``job``)
    The completion stage's record of an import job: ``state`` QUEUED (the reconciler sent it for
    handling), IN_PROGRESS (an attempt started; ``attempts`` counts them), HANDLED (results read,
    report written, events put: final), ERROR (the last attempt failed; ``error`` says why, and the
    message is retried until the dead-letter queue) or IGNORED (not started by this pipeline).
    ``batchId``, ``jobStatus``, ``outcome``, counts and ``reportUri`` once handled.  The item has no
    ``jobId`` attribute, so the ``byJobId`` index holds batch items only.

Once the completion stage has read a batch's job, the batch's ``state`` becomes COMPLETED (every file
imported), PARTIAL (some failed) or FAILED with ``jobStatus`` (the job failed or imported nothing), and
StartImport never changes a batch that has a ``jobId`` again.

A batch item is written only after all of its claims: a claim whose batch item does not exist is an
orphan of an interrupted invocation and counts as no claim.
"""

from __future__ import annotations

import contextlib
import enum
import time
from collections.abc import Callable, Iterable, Iterator, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any, Final

from botocore.exceptions import BotoCoreError, ClientError

from ahi_pipeline.clients import error_code

__all__ = [
    "BatchRecord",
    "BatchState",
    "BatchStore",
    "DeidRecord",
    "DeidState",
    "JobRecord",
    "JobState",
    "LeaseUnavailableError",
]

CLAIM_PREFIX: Final = "object#"
JOB_PREFIX: Final = "job#"
IMAGE_SET_PREFIX: Final = "imageset#"
LEASE_KEY: Final = "lease#planner"
_GET_CHUNK: Final = 100  # BatchGetItem's limit
_WRITE_CHUNK: Final = 25  # BatchWriteItem's limit


class BatchState(enum.StrEnum):
    PLANNED = "PLANNED"
    STAGED = "STAGED"
    SUBMITTED = "SUBMITTED"
    FAILED = "FAILED"
    EMPTY = "EMPTY"
    COMPLETED = "COMPLETED"
    PARTIAL = "PARTIAL"


class JobState(enum.StrEnum):
    QUEUED = "QUEUED"
    IN_PROGRESS = "IN_PROGRESS"
    HANDLED = "HANDLED"
    ERROR = "ERROR"
    IGNORED = "IGNORED"

    @property
    def final(self) -> bool:
        return self in (JobState.HANDLED, JobState.IGNORED)


class DeidState(enum.StrEnum):
    IN_PROGRESS = "IN_PROGRESS"
    READY = "READY"
    SKIPPED = "SKIPPED"
    FAILED = "FAILED"

    @property
    def final(self) -> bool:
        return self is not DeidState.IN_PROGRESS


@dataclass(frozen=True, slots=True)
class DeidRecord:
    image_set_id: str
    state: DeidState
    attempts: int = 0
    start_version: str | None = None
    copy_image_set_id: str | None = None
    final_image_set_id: str | None = None
    error: str | None = None
    report_uri: str | None = None


@dataclass(frozen=True, slots=True)
class JobRecord:
    job_id: str
    state: JobState
    attempts: int = 0
    batch_id: str | None = None
    error: str | None = None
    report_uri: str | None = None


@dataclass(frozen=True, slots=True)
class BatchRecord:
    batch_id: str
    state: BatchState
    manifest_uri: str
    job_id: str | None = None
    staged: bool = False
    error: str | None = None

    @property
    def finished(self) -> bool:
        """Nothing is left for StartImport to do: the batch has a job, or nothing could be staged."""
        return self.job_id is not None or self.state in (BatchState.SUBMITTED, BatchState.EMPTY)


class LeaseUnavailableError(RuntimeError):
    """Another invocation holds the planning lease for longer than we may wait."""


def _now_iso(now: float) -> str:
    return datetime.fromtimestamp(now, UTC).isoformat(timespec="milliseconds").replace("+00:00", "Z")


def _chunks(items: Sequence[Any], size: int) -> Iterator[Sequence[Any]]:
    for start in range(0, len(items), size):
        yield items[start : start + size]


class BatchStore:
    """Batch records, upload claims and the planning lease.

    Parameters
    ----------
    client
        A boto3 DynamoDB client.
    table
        ``BATCH_TABLE``.
    clock, sleep
        Wall-clock seconds and sleep; injected in tests.
    """

    def __init__(
        self,
        client: Any,
        table: str,
        *,
        clock: Callable[[], float] = time.time,
        sleep: Callable[[float], None] = time.sleep,
    ) -> None:
        self._client = client
        self._table = table
        self._clock = clock
        self._sleep = sleep

    # ------------------------------------------------------------------ claims
    def owners(self, object_ids: Iterable[str]) -> dict[str, str]:
        """``{object_id: batch_id}`` for the uploads already claimed by a batch (strongly consistent)."""
        keys = [CLAIM_PREFIX + object_id for object_id in sorted(set(object_ids))]
        items = self._get_many(keys, projection="batchId, #owner", names={"#owner": "owner"})
        return {item["batchId"]["S"].removeprefix(CLAIM_PREFIX): item["owner"]["S"] for item in items}

    def claim(self, batch_id: str, object_ids: Iterable[str]) -> None:
        """Make ``batch_id`` the owner of every upload in ``object_ids`` (call under the lease)."""
        stamp = _now_iso(self._clock())
        items = [
            {
                "batchId": {"S": CLAIM_PREFIX + object_id},
                "kind": {"S": "claim"},
                "owner": {"S": batch_id},
                "claimedAt": {"S": stamp},
            }
            for object_id in sorted(set(object_ids))
        ]
        for chunk in _chunks(items, _WRITE_CHUNK):
            requests: list[dict[str, Any]] = [{"PutRequest": {"Item": item}} for item in chunk]
            for attempt in range(10):
                response = self._client.batch_write_item(RequestItems={self._table: requests})
                requests = response.get("UnprocessedItems", {}).get(self._table, [])
                if not requests:
                    break
                self._sleep(min(2.0, 0.05 * 2**attempt))
            else:
                raise RuntimeError(f"DynamoDB left {len(requests)} claims unprocessed after 10 attempts")

    # ------------------------------------------------------------------ batches
    def records(self, batch_ids: Iterable[str]) -> dict[str, BatchRecord]:
        """The batch items that exist among ``batch_ids``."""
        items = self._get_many(sorted(set(batch_ids)))
        return {item["batchId"]["S"]: _record(item) for item in items}

    def create(
        self, *, batch_id: str, files: int, size: int, manifest_uri: str, input_s3_uri: str, datastore_id: str
    ) -> None:
        """Write a PLANNED batch item unless the batch already has one."""
        stamp = _now_iso(self._clock())
        try:
            self._client.put_item(
                TableName=self._table,
                Item={
                    "batchId": {"S": batch_id},
                    "kind": {"S": "batch"},
                    "state": {"S": BatchState.PLANNED.value},
                    "files": {"N": str(files)},
                    "bytes": {"N": str(size)},
                    "manifestUri": {"S": manifest_uri},
                    "inputS3Uri": {"S": input_s3_uri},
                    "datastoreId": {"S": datastore_id},
                    "attempts": {"N": "0"},
                    "createdAt": {"S": stamp},
                    "updatedAt": {"S": stamp},
                },
                ConditionExpression="attribute_not_exists(batchId)",
            )
        except ClientError as error:
            if error_code(error) != "ConditionalCheckFailedException":
                raise

    def mark_staged(self, batch_id: str, *, staged_files: int, staged_bytes: int, unavailable: int) -> None:
        self._update(
            batch_id,
            "SET #state = :state, stagedFiles = :files, stagedBytes = :bytes, unavailableFiles = :gone, "
            "stagedAt = :now, updatedAt = :now",
            {
                ":state": {"S": BatchState.STAGED.value},
                ":files": {"N": str(staged_files)},
                ":bytes": {"N": str(staged_bytes)},
                ":gone": {"N": str(unavailable)},
            },
        )

    def mark_submitted(self, batch_id: str, *, job_id: str) -> None:
        """Record the batch's job (again, harmlessly, until the completion stage has read the job)."""
        self._update(
            batch_id,
            "SET #state = :state, jobId = :job, submittedAt = :now, updatedAt = :now, "
            "attempts = attempts + :one REMOVE #error",
            {":state": {"S": BatchState.SUBMITTED.value}, ":job": {"S": job_id}, ":one": {"N": "1"}},
            names={"#error": "error"},
            condition="attribute_not_exists(jobId) OR (jobId = :job AND #state = :state)",
        )

    def mark_empty(self, batch_id: str) -> None:
        self._update(
            batch_id,
            "SET #state = :state, updatedAt = :now",
            {":state": {"S": BatchState.EMPTY.value}},
        )

    def mark_failed(self, batch_id: str, reason: str) -> None:
        """Record why the last attempt failed (never touches a batch that has a job)."""
        self._update(
            batch_id,
            "SET #state = :state, #error = :error, updatedAt = :now, attempts = attempts + :one",
            {":state": {"S": BatchState.FAILED.value}, ":error": {"S": reason[:1000]}, ":one": {"N": "1"}},
            names={"#error": "error"},
        )

    def mark_imported(
        self,
        batch_id: str,
        *,
        job_id: str,
        state: BatchState,
        job_status: str,
        imported: int,
        failed: int,
        image_sets: int,
        report_uri: str,
        error: str | None = None,
    ) -> None:
        """Record what the batch's import job did (COMPLETED, PARTIAL or FAILED); only for that job."""
        values: dict[str, Any] = {
            ":state": {"S": state.value},
            ":job": {"S": job_id},
            ":status": {"S": job_status},
            ":imported": {"N": str(imported)},
            ":failed": {"N": str(failed)},
            ":sets": {"N": str(image_sets)},
            ":report": {"S": report_uri},
        }
        expression = (
            "SET #state = :state, jobId = :job, jobStatus = :status, importedFiles = :imported, "
            "failedFiles = :failed, imageSets = :sets, reportUri = :report, completedAt = :now, "
            "updatedAt = :now"
        )
        if error:
            expression += ", #error = :error"
            values[":error"] = {"S": error[:1000]}
        else:
            expression += " REMOVE #error"
        # A batch whose job started but was never recorded as SUBMITTED (StartImport stopped in between)
        # gets its job here; StartImport's later mark_submitted then leaves the outcome alone.
        self._update(
            batch_id,
            expression,
            values,
            names={"#error": "error"},
            condition="attribute_not_exists(jobId) OR jobId = :job",
        )

    def batch_of_job(self, job_id: str) -> str | None:
        """The batch whose job is ``job_id`` (the ``byJobId`` index), or ``None``."""
        response = self._client.query(
            TableName=self._table,
            IndexName="byJobId",
            KeyConditionExpression="jobId = :job",
            ExpressionAttributeValues={":job": {"S": job_id}},
            ProjectionExpression="batchId, kind",
        )
        for item in response.get("Items", []):
            if item.get("kind", {}).get("S", "batch") == "batch":
                return str(item["batchId"]["S"])
        return None

    # ------------------------------------------------------------------ jobs
    def job_records(self, job_ids: Iterable[str]) -> dict[str, JobRecord]:
        """The job records that exist among ``job_ids`` (strongly consistent)."""
        items = self._get_many([JOB_PREFIX + job_id for job_id in sorted(set(job_ids))])
        records = (_job_record(item) for item in items)
        return {record.job_id: record for record in records}

    def queue_job(self, job_id: str, *, job_status: str) -> bool:
        """Write a QUEUED record unless the job has any record; ``True`` when written."""
        stamp = _now_iso(self._clock())
        try:
            self._client.put_item(
                TableName=self._table,
                Item={
                    "batchId": {"S": JOB_PREFIX + job_id},
                    "kind": {"S": "job"},
                    "state": {"S": JobState.QUEUED.value},
                    "jobStatus": {"S": job_status},
                    "attempts": {"N": "0"},
                    "queuedAt": {"S": stamp},
                    "updatedAt": {"S": stamp},
                },
                ConditionExpression="attribute_not_exists(batchId)",
            )
        except ClientError as error:
            if error_code(error) == "ConditionalCheckFailedException":
                return False
            raise
        return True

    def begin_job(self, job_id: str, *, batch_id: str | None, job_status: str) -> JobRecord | None:
        """Count an attempt and mark the job IN_PROGRESS, unless it is already final.

        Returns the final record instead when the job was handled or ignored before.
        """
        values: dict[str, Any] = {
            ":state": {"S": JobState.IN_PROGRESS.value},
            ":status": {"S": job_status},
            ":zero": {"N": "0"},
            ":one": {"N": "1"},
        }
        expression = (
            "SET #state = :state, #kind = :kind, jobStatus = :status, startedAt = :now, updatedAt = :now, "
            "attempts = if_not_exists(attempts, :zero) + :one"
        )
        if batch_id:
            expression += ", sourceBatchId = :batch"
            values[":batch"] = {"S": batch_id}
        if self._update_open_job(job_id, expression, values):
            return None
        return self.job_records([job_id]).get(job_id)

    def finish_job(
        self,
        job_id: str,
        *,
        state: JobState,
        outcome: str | None = None,
        counts: dict[str, int] | None = None,
        report_uri: str | None = None,
    ) -> bool:
        """Mark the job final (HANDLED or IGNORED); ``False`` if another attempt already did."""
        values: dict[str, Any] = {":state": {"S": state.value}}
        expression = "SET #state = :state, #kind = :kind, handledAt = :now, updatedAt = :now"
        if outcome:
            expression += ", outcome = :outcome"
            values[":outcome"] = {"S": outcome}
        if report_uri:
            expression += ", reportUri = :report"
            values[":report"] = {"S": report_uri}
        for index, (name, value) in enumerate(sorted((counts or {}).items())):
            expression += f", {name} = :n{index}"
            values[f":n{index}"] = {"N": str(value)}
        return self._update_open_job(job_id, expression + " REMOVE #error", values)

    def fail_job(self, job_id: str, reason: str) -> None:
        """Record why the last attempt failed (the job stays open for a retry); best effort."""
        with contextlib.suppress(ClientError, BotoCoreError):
            self._update_open_job(
                job_id,
                "SET #state = :state, #kind = :kind, #error = :error, updatedAt = :now",
                {":state": {"S": JobState.ERROR.value}, ":error": {"S": reason[:1000]}},
            )

    def _update_open_job(self, job_id: str, expression: str, values: dict[str, Any]) -> bool:
        """Update the job's record unless it is final (HANDLED or IGNORED); ``False`` when it is."""
        return self._update_open(JOB_PREFIX + job_id, expression, values, kind="job", final=_JOB_FINAL)

    def _update_open(
        self, key: str, expression: str, values: dict[str, Any], *, kind: str, final: tuple[str, ...]
    ) -> bool:
        """Update a record unless its state is one of ``final``; ``False`` when it is."""
        names = {"#state": "state", "#kind": "kind"}
        if "#error" in expression:
            names["#error"] = "error"
        finals = {f":final{index}": {"S": state} for index, state in enumerate(final)}
        try:
            self._client.update_item(
                TableName=self._table,
                Key={"batchId": {"S": key}},
                UpdateExpression=expression,
                ConditionExpression=f"attribute_not_exists(#state) OR NOT #state IN ({', '.join(finals)})",
                ExpressionAttributeNames=names,
                ExpressionAttributeValues={
                    ":kind": {"S": kind},
                    ":now": {"S": _now_iso(self._clock())},
                    **finals,
                    **values,
                },
            )
        except ClientError as error:
            if error_code(error) == "ConditionalCheckFailedException":
                return False
            raise
        return True

    # ------------------------------------------------------------------ image sets (de-identification)
    def deid_record(self, image_set_id: str) -> DeidRecord | None:
        items = self._get_many([IMAGE_SET_PREFIX + image_set_id])
        return _deid_record(items[0]) if items else None

    def begin_deid(self, image_set_id: str, *, start_version: str) -> DeidRecord | None:
        """Count an attempt (keeping the first ``startVersion``); the final record instead if there is one."""
        written = self._update_open(
            IMAGE_SET_PREFIX + image_set_id,
            "SET #state = :state, #kind = :kind, startVersion = if_not_exists(startVersion, :version), "
            "attempts = if_not_exists(attempts, :zero) + :one, updatedAt = :now",
            {
                ":state": {"S": DeidState.IN_PROGRESS.value},
                ":version": {"S": start_version},
                ":zero": {"N": "0"},
                ":one": {"N": "1"},
            },
            kind="imageset",
            final=_DEID_FINAL,
        )
        return None if written else self.deid_record(image_set_id)

    def record_copy(self, image_set_id: str, copy_image_set_id: str) -> None:
        self._update_open(
            IMAGE_SET_PREFIX + image_set_id,
            "SET #kind = :kind, copyImageSetId = :copy, updatedAt = :now",
            {":copy": {"S": copy_image_set_id}},
            kind="imageset",
            final=_DEID_FINAL,
        )

    def finish_deid(
        self,
        image_set_id: str,
        *,
        state: DeidState,
        final_image_set_id: str | None,
        report_uri: str | None,
        error: str | None = None,
    ) -> bool:
        values: dict[str, Any] = {":state": {"S": state.value}}
        expression = "SET #state = :state, #kind = :kind, finishedAt = :now, updatedAt = :now"
        for name, value in (
            ("finalImageSetId", final_image_set_id),
            ("reportUri", report_uri),
            ("#error", error),
        ):
            if value:
                placeholder = ":" + name.lstrip("#")
                expression += f", {name} = {placeholder}"
                values[placeholder] = {"S": value[:1000]}
        return self._update_open(
            IMAGE_SET_PREFIX + image_set_id, expression, values, kind="imageset", final=_DEID_FINAL
        )

    # ------------------------------------------------------------------ lease
    @contextlib.contextmanager
    def lease(self, owner: str, *, hold_for: float, wait_for: float = 20.0) -> Iterator[None]:
        """Hold the planning lease for at most ``hold_for`` seconds, waiting up to ``wait_for`` for it.

        Raises
        ------
        LeaseUnavailableError
            When another holder kept it for longer than ``wait_for``.
        """
        give_up = self._clock() + wait_for
        delay = 0.1
        while not self._acquire(owner, hold_for):
            if self._clock() + delay > give_up:
                raise LeaseUnavailableError("another StartImport invocation is planning batches")
            self._sleep(delay)
            delay = min(delay * 2, 2.0)
        try:
            yield
        finally:
            with contextlib.suppress(ClientError):
                self._client.delete_item(
                    TableName=self._table,
                    Key={"batchId": {"S": LEASE_KEY}},
                    ConditionExpression="#owner = :me",
                    ExpressionAttributeNames={"#owner": "owner"},
                    ExpressionAttributeValues={":me": {"S": owner}},
                )

    def _acquire(self, owner: str, hold_for: float) -> bool:
        now = self._clock()
        try:
            self._client.put_item(
                TableName=self._table,
                Item={
                    "batchId": {"S": LEASE_KEY},
                    "kind": {"S": "lease"},
                    "owner": {"S": owner},
                    "expiresAt": {"N": f"{now + hold_for:.3f}"},
                },
                ConditionExpression="attribute_not_exists(batchId) OR expiresAt < :now OR #owner = :me",
                ExpressionAttributeNames={"#owner": "owner"},
                ExpressionAttributeValues={":now": {"N": f"{now:.3f}"}, ":me": {"S": owner}},
            )
        except ClientError as error:
            if error_code(error) == "ConditionalCheckFailedException":
                return False
            raise
        return True

    # ------------------------------------------------------------------ helpers
    def _update(
        self,
        batch_id: str,
        expression: str,
        values: dict[str, Any],
        *,
        names: dict[str, str] | None = None,
        condition: str = "attribute_not_exists(jobId) AND #state <> :submitted",
    ) -> None:
        """Update a batch item that exists, if ``condition`` holds (StartImport's default: no job yet)."""
        condition = f"attribute_exists(batchId) AND ({condition})"
        if ":submitted" in condition:
            values = {**values, ":submitted": {"S": BatchState.SUBMITTED.value}}
        try:
            self._client.update_item(
                TableName=self._table,
                Key={"batchId": {"S": batch_id}},
                UpdateExpression=expression,
                ConditionExpression=condition,
                ExpressionAttributeNames={"#state": "state", **(names or {})},
                ExpressionAttributeValues={":now": {"S": _now_iso(self._clock())}, **values},
            )
        except ClientError as error:
            if error_code(error) != "ConditionalCheckFailedException":
                raise

    def _get_many(
        self, keys: Sequence[str], *, projection: str | None = None, names: dict[str, str] | None = None
    ) -> list[dict[str, Any]]:
        found: list[dict[str, Any]] = []
        for chunk in _chunks(keys, _GET_CHUNK):
            request: dict[str, Any] = {
                "Keys": [{"batchId": {"S": key}} for key in chunk],
                "ConsistentRead": True,
            }
            if projection:
                request["ProjectionExpression"] = projection
            if names:
                request["ExpressionAttributeNames"] = names
            for attempt in range(10):
                response = self._client.batch_get_item(RequestItems={self._table: request})
                found.extend(response.get("Responses", {}).get(self._table, []))
                unprocessed = response.get("UnprocessedKeys", {}).get(self._table)
                if not unprocessed:
                    break
                request = unprocessed
                self._sleep(min(2.0, 0.05 * 2**attempt))
            else:
                raise RuntimeError("DynamoDB left keys unprocessed after 10 attempts")
        return found


_JOB_FINAL: Final = (JobState.HANDLED.value, JobState.IGNORED.value)
_DEID_FINAL: Final = (DeidState.READY.value, DeidState.SKIPPED.value, DeidState.FAILED.value)


def _deid_record(item: dict[str, Any]) -> DeidRecord:
    def text(name: str) -> str | None:
        value = item.get(name)
        return value["S"] if value else None

    return DeidRecord(
        image_set_id=item["batchId"]["S"].removeprefix(IMAGE_SET_PREFIX),
        state=DeidState(item["state"]["S"]),
        attempts=int(item.get("attempts", {}).get("N", "0")),
        start_version=text("startVersion"),
        copy_image_set_id=text("copyImageSetId"),
        final_image_set_id=text("finalImageSetId"),
        error=text("error"),
        report_uri=text("reportUri"),
    )


def _job_record(item: dict[str, Any]) -> JobRecord:
    def text(name: str) -> str | None:
        value = item.get(name)
        return value["S"] if value else None

    return JobRecord(
        job_id=item["batchId"]["S"].removeprefix(JOB_PREFIX),
        state=JobState(item["state"]["S"]),
        attempts=int(item.get("attempts", {}).get("N", "0")),
        batch_id=text("sourceBatchId"),
        error=text("error"),
        report_uri=text("reportUri"),
    )


def _record(item: dict[str, Any]) -> BatchRecord:
    def text(name: str) -> str | None:
        value = item.get(name)
        return value["S"] if value else None

    return BatchRecord(
        batch_id=item["batchId"]["S"],
        state=BatchState(item["state"]["S"]),
        manifest_uri=text("manifestUri") or "",
        job_id=text("jobId"),
        staged="stagedAt" in item,
        error=text("error"),
    )

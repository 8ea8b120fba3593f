"""The ingest stage (StartImport): uploads → batches → staged copies → one import job per batch.

For the messages of one SQS invocation, :func:`start_imports`

1. skips what is not an import (other buckets, outside ``incoming/``, folder markers, empty or oversized
   objects, S3 events other than Object Created), logging and counting each with its reason, and fails
   poison messages alone (they reach the dead-letter queue through the queue's redrive policy);
2. under the planning lease, looks up which accepted uploads already belong to a batch (their
   *claim*): uploads of a batch whose job was started are acknowledged; uploads of an unfinished batch
   resume that batch, whatever other uploads they arrive with; the rest are cut into new batches
   (:mod:`ahi_pipeline.batching`), each written as a manifest in S3, claims and a PLANNED item;
3. runs each batch under Powertools idempotency (key: the batch id): server-side copies to
   ``staging/<batchId>/`` (skipped when a previous attempt finished them), StartDICOMImportJob with
   ``clientToken = batchId``, and the SUBMITTED record;
4. returns the message ids of the batches that could not be started, for SQS to redeliver.

So a redelivered message never starts a second job: it finds its claim, and its batch's job (or the
service's ``clientToken`` idempotency returns the same job).  Nothing is lost: each upload is in a
started batch, or reported (log, metric, manifest status) with a reason, or its message is returned to
the queue.
"""

from __future__ import annotations

import time
import uuid
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, Final

from aws_lambda_powertools.utilities.idempotency import (
    DynamoDBPersistenceLayer,
    IdempotencyConfig,
    idempotent_function,
)
from aws_lambda_powertools.utilities.idempotency.exceptions import IdempotencyAlreadyInProgressError
from aws_lambda_powertools.utilities.idempotency.persistence.base import BasePersistenceLayer

from ahi_pipeline import clients
from ahi_pipeline.batch_manifest import batch_from_manifest, manifest_document
from ahi_pipeline.batch_store import BatchRecord, BatchState, BatchStore
from ahi_pipeline.batching import Batch, Limits, plan_batches, skip_reason
from ahi_pipeline.imaging_gateway import ImagingGateway, ImportJobRequest, ImportStartError
from ahi_pipeline.observability import Metric, count, logger, tracer
from ahi_pipeline.runtime import per_environment
from ahi_pipeline.s3_gateway import CopyFailedError, ObjectCopy, S3Gateway
from ahi_pipeline.settings import Settings
from ahi_pipeline.uploads import IgnoredMessage, Message, PoisonMessage, Upload

if TYPE_CHECKING:
    from aws_lambda_powertools.utilities.typing import LambdaContext

__all__ = ["BatchResult", "IngestOutcome", "IngestServices", "services_for", "start_imports"]

#: A batch is not started with less time left than this (seconds): its copies and a throttled
#: StartDICOMImportJob need it; its messages return to the queue instead.
START_MARGIN: Final = 60.0
#: The planning lease is held at most this long (seconds), and never past the invocation's end.
LEASE_SECONDS: Final = 120.0
#: Powertools idempotency records of a batch live this long (seconds).
IDEMPOTENCY_SECONDS: Final = 24 * 3600


@dataclass(frozen=True)
class IngestServices:
    """The gateways the stage talks through (fakes or moto-backed ones in tests)."""

    s3: S3Gateway
    imaging: ImagingGateway
    batches: BatchStore
    idempotency: BasePersistenceLayer | None = None


@per_environment
def services_for(settings: Settings) -> IngestServices:
    """The stage's gateways on boto3 clients, made once per execution environment."""
    return IngestServices(
        s3=S3Gateway(clients.s3()),
        imaging=ImagingGateway(clients.medical_imaging()),
        batches=BatchStore(clients.dynamodb(), settings.batch_table),
        idempotency=DynamoDBPersistenceLayer(
            table_name=settings.idempotency_table, boto3_client=clients.dynamodb()
        ),
    )


@dataclass(frozen=True, slots=True)
class BatchResult:
    batch_id: str
    state: str
    files: int
    resumed: bool
    job_id: str | None = None
    error: str | None = None


@dataclass
class IngestOutcome:
    """What one invocation did; :meth:`as_response` is the SQS partial batch response."""

    failures: dict[str, str] = field(default_factory=dict)  # message id → reason, in event order
    accepted: int = 0
    skipped: int = 0
    already_submitted: int = 0
    batches: list[BatchResult] = field(default_factory=list)

    def fail(self, message_ids: Sequence[str], reason: str) -> None:
        for message_id in message_ids:
            self.failures.setdefault(message_id, reason)

    def as_response(self) -> dict[str, list[dict[str, str]]]:
        return {"batchItemFailures": [{"itemIdentifier": message_id} for message_id in self.failures]}


@dataclass
class _Pending:
    upload: Upload
    message_ids: list[str] = field(default_factory=list)


@dataclass(frozen=True)
class _Task:
    batch_id: str
    object_ids: tuple[str, ...]  # the uploads of this invocation that belong to the batch
    batch: Batch | None  # None: resumed, its manifest is read back from S3
    record: BatchRecord | None


@tracer.capture_method(capture_response=False)
def start_imports(
    messages: Sequence[Message],
    *,
    settings: Settings,
    services: IngestServices,
    lambda_context: LambdaContext | None = None,
    clock: Callable[[], float] = time.monotonic,
) -> IngestOutcome:
    """Plan, stage and start the import jobs for one invocation's messages (see the module docstring)."""
    outcome = IngestOutcome()
    pending = _accepted_uploads(messages, Limits.of(settings), outcome)
    if not pending:
        return outcome
    remaining = lambda_context.get_remaining_time_in_millis() / 1000 if lambda_context else None
    deadline = clock() + remaining if remaining is not None else None
    owner = lambda_context.aws_request_id if lambda_context else uuid.uuid4().hex
    try:
        tasks = _plan(pending, settings, services, owner=owner, hold_for=min(LEASE_SECONDS, remaining or 1e9))
    except Exception as error:  # noqa: BLE001 - whatever stops planning, every message is retried
        logger.exception("planning failed; every accepted upload returns to the queue")
        outcome.fail([m for p in pending.values() for m in p.message_ids], f"planning failed: {error!r}")
        count(Metric.FILES_FAILED, len(pending))
        return outcome
    run = _batch_runner(services, lambda_context)
    for task in tasks:
        message_ids = [m for object_id in task.object_ids for m in pending[object_id].message_ids]
        if deadline is not None and deadline - clock() < START_MARGIN:
            logger.warning("batch deferred: too little time left", extra={"batch_id": task.batch_id})
            outcome.fail(message_ids, "deferred to a later invocation")
            continue
        result = _run_guarded(task, run, settings, services, deadline)
        outcome.batches.append(result)
        if result.state not in (BatchState.SUBMITTED, BatchState.EMPTY):
            outcome.fail(message_ids, result.error or result.state)
            count(Metric.FILES_FAILED, len(task.object_ids))
    return outcome


def _accepted_uploads(
    messages: Sequence[Message], limits: Limits, outcome: IngestOutcome
) -> dict[str, _Pending]:
    pending: dict[str, _Pending] = {}
    for message in messages:
        if isinstance(message, PoisonMessage):
            logger.error(
                "poison message: not an S3 Object Created event; it fails alone and goes to the DLQ",
                extra={"message_id": message.message_id, "reason": message.reason},
            )
            count(Metric.POISON_MESSAGES)
            outcome.fail([message.message_id], message.reason)
            continue
        if isinstance(message, IgnoredMessage):
            _skipped(outcome, message.message_id, message.reason)
            continue
        upload = message.upload
        reason = skip_reason(upload, limits)
        if reason is not None:
            _skipped(outcome, message.message_id, reason.value, upload)
            continue
        pending.setdefault(upload.object_id, _Pending(upload)).message_ids.append(message.message_id)
    outcome.accepted = len(pending)
    count(Metric.FILES_ACCEPTED, len(pending))
    return pending


def _skipped(outcome: IngestOutcome, message_id: str, reason: str, upload: Upload | None = None) -> None:
    details: dict[str, Any] = {"message_id": message_id, "reason": reason}
    if upload is not None:  # never the key: it may name a patient
        details.update(object_id=upload.object_id, bucket=upload.bucket, size=upload.size)
    logger.info("upload skipped", extra=details)
    outcome.skipped += 1
    count(Metric.FILES_SKIPPED)


@tracer.capture_method(capture_response=False)
def _plan(
    pending: dict[str, _Pending], settings: Settings, services: IngestServices, *, owner: str, hold_for: float
) -> list[_Task]:
    """Claims looked up and written under the lease; the batches to run, resumed ones first."""
    with services.batches.lease(owner, hold_for=hold_for):
        owners = services.batches.owners(pending)
        records = services.batches.records(set(owners.values()))
        resumed: dict[str, list[str]] = {}
        fresh: list[Upload] = []
        for object_id, item in pending.items():
            record = records.get(owners.get(object_id, ""))
            if record is None:  # no claim, or an orphan claim of an interrupted invocation
                fresh.append(item.upload)
            elif record.finished:
                logger.info(
                    "upload already in a started batch",
                    extra={"object_id": object_id, "batch_id": record.batch_id, "job_id": record.job_id},
                )
                count(Metric.FILES_ALREADY_SUBMITTED)
            else:
                resumed.setdefault(record.batch_id, []).append(object_id)
        batches = plan_batches(fresh, Limits.of(settings))
        for batch in batches:
            _record_new_batch(batch, settings, services)
    count(Metric.BATCHES_PLANNED, len(batches))
    count(Metric.BATCHES_RESUMED, len(resumed))
    tasks = [
        _Task(batch_id, tuple(object_ids), None, records[batch_id])
        for batch_id, object_ids in sorted(resumed.items())
    ]
    tasks += [
        _Task(b.batch_id, tuple(m.object_id for m in b.members if m.object_id in pending), b, None)
        for b in batches
    ]
    return tasks


def _record_new_batch(batch: Batch, settings: Settings, services: IngestServices) -> None:
    """Manifest, then claims, then the batch item: an item exists only once all its claims do."""
    folder = settings.staging_folder(batch.batch_id)
    manifest_key = settings.manifest_key(batch.batch_id)
    services.s3.put_json(
        settings.output_bucket,
        manifest_key,
        manifest_document(batch, staging_folder=folder, input_s3_uri=settings.input_s3_uri(batch.batch_id)),
    )
    services.batches.claim(batch.batch_id, [member.object_id for member in batch.members])
    services.batches.create(
        batch_id=batch.batch_id,
        files=batch.files,
        size=batch.bytes,
        manifest_uri=f"s3://{settings.output_bucket}/{manifest_key}",
        input_s3_uri=settings.input_s3_uri(batch.batch_id),
        datastore_id=settings.datastore_id,
    )
    logger.info(
        "batch planned", extra={"batch_id": batch.batch_id, "files": batch.files, "bytes": batch.bytes}
    )


_Runner = Callable[..., dict[str, Any]]


def _batch_runner(services: IngestServices, lambda_context: LambdaContext | None) -> _Runner:
    """:func:`_run_batch`, made idempotent on the batch id when an idempotency table is configured.

    The idempotency record is a lock while a batch runs (a concurrent invocation holding a message of
    the same batch gets ``IdempotencyAlreadyInProgressError`` and retries later) and remembers the job
    afterwards.
    """
    if services.idempotency is None:
        return _run_batch
    config = IdempotencyConfig(
        event_key_jmespath="batchId",
        raise_on_no_idempotency_key=True,
        expires_after_seconds=IDEMPOTENCY_SECONDS,
    )
    if lambda_context is not None:
        config.register_lambda_context(lambda_context)
    runner: _Runner = idempotent_function(
        _run_batch,
        data_keyword_argument="batch_key",
        persistence_store=services.idempotency,
        config=config,
    )
    return runner


def _run_guarded(
    task: _Task, run: _Runner, settings: Settings, services: IngestServices, deadline: float | None
) -> BatchResult:
    """Run one batch; whatever goes wrong stays with this batch."""
    resumed = task.batch is None
    files = task.batch.files if task.batch else len(task.object_ids)
    try:
        summary = run(
            batch_key={"batchId": task.batch_id},
            task=task,
            settings=settings,
            services=services,
            deadline=deadline,
        )
    except IdempotencyAlreadyInProgressError:
        logger.warning("batch is being run by another invocation", extra={"batch_id": task.batch_id})
        return BatchResult(task.batch_id, "IN_PROGRESS", files, resumed, error="batch in progress elsewhere")
    except Exception as error:  # noqa: BLE001 - one batch's failure must not lose the others' work
        reason = _reason(error)
        extra = {"batch_id": task.batch_id, "reason": reason}
        if isinstance(error, ImportStartError):
            count(Metric.THROTTLES, error.throttled)
            logger.warning("import job not started", extra={**extra, "retryable": error.retryable})
        else:
            logger.exception("batch failed", extra=extra)
        count(Metric.BATCHES_FAILED)
        try:
            services.batches.mark_failed(task.batch_id, reason)
        except Exception:  # noqa: BLE001 - the messages are retried whether or not this is recorded
            logger.exception("could not record the batch's failure", extra={"batch_id": task.batch_id})
        return BatchResult(task.batch_id, BatchState.FAILED, files, resumed, error=reason)
    return BatchResult(task.batch_id, str(summary["state"]), files, resumed, job_id=summary.get("jobId"))


def _reason(error: Exception) -> str:
    if isinstance(error, ImportStartError | CopyFailedError):
        return str(error)
    return f"{type(error).__name__}: {error}"


@tracer.capture_method(capture_response=False)
def _run_batch(
    *,
    batch_key: dict[str, str],
    task: _Task,
    settings: Settings,
    services: IngestServices,
    deadline: float | None,
) -> dict[str, Any]:
    """Stage (unless already staged), start the import job, record it.  Raises on any failure."""
    batch_id = batch_key["batchId"]
    tracer.put_annotation("batch_id", batch_id)
    folder = settings.staging_folder(batch_id)
    batch = task.batch or batch_from_manifest(
        services.s3.get_json(settings.output_bucket, settings.manifest_key(batch_id)), staging_folder=folder
    )
    if task.record is None or not task.record.staged:
        copies = [
            ObjectCopy(
                object_id=m.object_id,
                source_bucket=m.upload.bucket,
                source_key=m.upload.key,
                version_id=m.upload.version_id,
                etag=m.upload.etag,
                size=m.upload.size,
                bucket=settings.landing_bucket,
                key=folder + m.staged_relative_key,
            )
            for m in batch.members
        ]
        unavailable = services.s3.copy_objects(copies)
        for object_id, reason in sorted(unavailable.items()):
            logger.warning(
                "upload not imported", extra={"batch_id": batch_id, "object_id": object_id, "reason": reason}
            )
        services.s3.put_json(
            settings.output_bucket,
            settings.manifest_key(batch_id),
            manifest_document(
                batch,
                staging_folder=folder,
                input_s3_uri=settings.input_s3_uri(batch_id),
                unavailable=unavailable,
                staged=True,
            ),
        )
        staged = [m for m in batch.members if m.object_id not in unavailable]
        count(Metric.FILES_STAGED, len(staged))
        count(Metric.FILES_UNAVAILABLE, len(unavailable))
        if not staged:
            services.batches.mark_empty(batch_id)
            logger.warning("no member of the batch could be staged; no job", extra={"batch_id": batch_id})
            return {"batchId": batch_id, "state": BatchState.EMPTY.value}
        services.batches.mark_staged(
            batch_id,
            staged_files=len(staged),
            staged_bytes=sum(m.upload.size for m in staged),
            unavailable=len(unavailable),
        )
    job = services.imaging.start_import_job(
        ImportJobRequest(
            datastore_id=settings.datastore_id,
            job_name=f"ingest-{batch_id}",
            client_token=batch_id,
            data_access_role_arn=settings.import_role_arn,
            input_s3_uri=settings.input_s3_uri(batch_id),
            output_s3_uri=settings.output_s3_uri,
        ),
        deadline=None if deadline is None else deadline - 10.0,
    )
    count(Metric.THROTTLES, job.throttled)
    services.batches.mark_submitted(batch_id, job_id=job.job_id)
    count(Metric.JOBS_STARTED)
    logger.info(
        "import job started",
        extra={"batch_id": batch_id, "job_id": job.job_id, "files": batch.files, "throttled": job.throttled},
    )
    return {"batchId": batch_id, "state": BatchState.SUBMITTED.value, "jobId": job.job_id}

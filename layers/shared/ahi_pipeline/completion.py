"""The completion stage (ImportCompleted): a finished import job → one event per image set, and a report.

For each job event (HealthImaging's "Import Job Completed" / "Import Job Failed", or the reconciler's
stand-in for one that never came), :func:`handle_job_event`

1. acknowledges events of another data store, and jobs already handled (its job record is final);
2. reads the job with GetDICOMImportJob (its ``outputS3Uri`` is the authoritative job folder) and
   finds its batch (the job name ``ingest-<batchId>``, checked against the batch record, else the
   ``byJobId`` index); a job the pipeline did not start is recorded as IGNORED;
3. under Powertools idempotency (key: the job id; a concurrent attempt gets
   ``IdempotencyAlreadyInProgressError`` and its message is retried), counts an attempt, then
   :func:`_process`: reads the manifest (waiting briefly until it is visible), streams SUCCESS and
   FAILURE line by line, checks them against the manifest and every staged file against the lines,
   maps each input file back to its upload through the batch's member list, checks that every image
   set exists, writes the report, puts one "Image Set Imported" event per image set and, when a file
   failed, "Import Files Failed", then records the batch's outcome and the job as HANDLED.

A missing or malformed result, an image set the data store does not have, or a failed call raises:
the job record keeps the reason (state ERROR), nothing is announced as handled, and the message is
retried until the queue's dead-letter queue holds it.  Events are put before the job is marked
HANDLED, so a crash in between can announce an image set twice, never zero times; the next stages
are idempotent on the image set.

:func:`reconcile_jobs` lists the data store's recent COMPLETED and FAILED jobs and sends the ones of
this pipeline that have no job record to the same queue, marked QUEUED, so each job is handled through
the same path, once.
"""

from __future__ import annotations

import json
import re
import time
import uuid
from collections import Counter
from collections.abc import Callable, Iterable, Iterator, Mapping
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from typing import TYPE_CHECKING, Any, Final

from aws_lambda_powertools.metrics import MetricUnit
from aws_lambda_powertools.utilities.idempotency import (
    DynamoDBPersistenceLayer,
    IdempotencyConfig,
    idempotent_function,
)
from aws_lambda_powertools.utilities.idempotency.exceptions import IdempotencyAlreadyInProgressError
from aws_lambda_powertools.utilities.idempotency.persistence.base import BasePersistenceLayer

from ahi_pipeline import clients
from ahi_pipeline.batch_store import BatchState, BatchStore, JobState
from ahi_pipeline.imaging_gateway import ImagingGateway, ImportJob
from ahi_pipeline.job_results import (
    FAILURE_FILE,
    MANIFEST_FILE,
    SUCCESS_FILE,
    ImageSetCount,
    JobManifest,
    ResultsError,
    ResultsTally,
    check_consistency,
    failure_records,
    input_key,
    parse_manifest,
    success_records,
)
from ahi_pipeline.observability import count, logger, metrics, tracer
from ahi_pipeline.pipeline_events import EventBusGateway, image_set_imported, import_files_failed
from ahi_pipeline.runtime import per_environment
from ahi_pipeline.s3_gateway import DocumentMissingError, S3Gateway
from ahi_pipeline.settings import CompletionSettings, current_completion_settings

if TYPE_CHECKING:
    from aws_lambda_powertools.utilities.data_classes.sqs_event import SQSRecord
    from aws_lambda_powertools.utilities.typing import LambdaContext

__all__ = [
    "HEALTHIMAGING_SOURCE",
    "RECONCILER_SOURCE",
    "CompletionServices",
    "JobEvent",
    "JobEventError",
    "JobFiles",
    "JobOutcome",
    "JobResults",
    "JobRetryLater",
    "ReconcileOutcome",
    "announcements",
    "batch_members",
    "completion_services",
    "gather_results",
    "handle_job_event",
    "handle_job_message",
    "parse_job_event",
    "read_results",
    "reconcile_jobs",
]

HEALTHIMAGING_SOURCE: Final = "aws.medical-imaging"
RECONCILER_SOURCE: Final = "healthimaging-automation.reconciler"
JOB_DETAIL_TYPES: Final = {"Import Job Completed": "COMPLETED", "Import Job Failed": "FAILED"}
FINISHED: Final = frozenset({"COMPLETED", "FAILED"})
UNFINISHED: Final = frozenset({"SUBMITTED", "IN_PROGRESS"})
REPORT_SCHEMA_VERSION: Final = 1
#: Powertools idempotency records of a job live this long (seconds); the job record is permanent.
IDEMPOTENCY_SECONDS: Final = 24 * 3600
_BATCH_JOB_NAME = re.compile(r"ingest-([0-9a-f]{40})")
_ID = re.compile(r"[0-9a-z]{32}")


class Metric:
    """Metric names of the completion stage."""

    JOBS_HANDLED: Final = "ImportJobsHandled"
    JOBS_DUPLICATE: Final = "ImportJobEventsDuplicate"
    JOBS_IGNORED: Final = "ImportJobsIgnored"
    JOBS_FAILED: Final = "ImportJobsFailed"
    FILES_IMPORTED: Final = "FilesImported"
    FILES_FAILED: Final = "FilesFailedToImport"
    IMAGE_SETS: Final = "ImageSetsImported"
    IMAGE_SETS_PER_JOB: Final = "ImageSetsPerJob"
    JOB_LATENCY: Final = "ImportJobLatency"
    JOBS_RECONCILED: Final = "ImportJobsReconciled"


# ---------------------------------------------------------------------- the event, parsed at the edge
class JobEventError(ValueError):
    """A message that is not a job event this stage can handle (a poison message)."""


class JobRetryLater(RuntimeError):  # noqa: N818 - it names what happens to the message
    """The job cannot be handled yet (still running, or being handled by another invocation)."""


@dataclass(frozen=True, slots=True)
class JobEvent:
    """An import job that ended, as HealthImaging's event (or the reconciler) announced it."""

    datastore_id: str
    job_id: str
    job_status: str
    source: str
    job_name: str = ""


def parse_job_event(body: Any) -> JobEvent:
    """The job event in an SQS message body (an EventBridge event, as JSON text or parsed).

    Raises
    ------
    JobEventError
        For anything that is not an "Import Job Completed" / "Import Job Failed" event with a data store
        id and a job id.
    """
    if isinstance(body, str | bytes):
        try:
            body = json.loads(body)
        except ValueError:
            raise JobEventError("the message is not JSON") from None
    if not isinstance(body, Mapping):
        raise JobEventError("the message is not a JSON object")
    source, detail_type, detail = body.get("source"), body.get("detail-type"), body.get("detail")
    if source not in (HEALTHIMAGING_SOURCE, RECONCILER_SOURCE):
        raise JobEventError(f"unexpected event source {source!r}")
    if detail_type not in JOB_DETAIL_TYPES:
        raise JobEventError(f"unexpected detail-type {detail_type!r}")
    if not isinstance(detail, Mapping):
        raise JobEventError("the event has no detail object")
    datastore_id, job_id = detail.get("datastoreId"), detail.get("jobId")
    if not isinstance(datastore_id, str) or not _ID.fullmatch(datastore_id):
        raise JobEventError("detail.datastoreId is missing or not a data store id")
    if not isinstance(job_id, str) or not _ID.fullmatch(job_id):
        raise JobEventError("detail.jobId is missing or not a job id")
    status = detail.get("jobStatus") or JOB_DETAIL_TYPES[detail_type]
    return JobEvent(datastore_id, job_id, str(status), str(source), str(detail.get("jobName") or ""))


# ---------------------------------------------------------------------- services
@dataclass(frozen=True)
class CompletionServices:
    """The gateways the stage talks through."""

    imaging: ImagingGateway
    s3: S3Gateway
    bus: EventBusGateway
    batches: BatchStore
    sqs: Any = None
    idempotency: BasePersistenceLayer | None = None
    sleep: Callable[[float], None] = time.sleep
    now: Callable[[], datetime] = field(default=lambda: datetime.now(UTC))


@per_environment
def completion_services(settings: CompletionSettings) -> CompletionServices:
    """The stage's gateways on boto3 clients, made once per execution environment."""
    return CompletionServices(
        imaging=ImagingGateway(clients.medical_imaging()),
        s3=S3Gateway(clients.s3()),
        bus=EventBusGateway(clients.events()),
        batches=BatchStore(clients.dynamodb(), settings.batch_table),
        sqs=clients.sqs() if settings.job_events_queue_url else None,
        idempotency=DynamoDBPersistenceLayer(
            table_name=settings.idempotency_table, boto3_client=clients.dynamodb()
        ),
    )


# ---------------------------------------------------------------------- handling one job
@dataclass(frozen=True, slots=True)
class JobOutcome:
    """What handling a job event did; ``action`` is handled, duplicate, ignored or other-datastore."""

    job_id: str
    action: str
    outcome: str | None = None
    batch_id: str | None = None
    imported: int = 0
    failed: int = 0
    image_sets: int = 0
    events: int = 0
    report_uri: str | None = None

    def as_dict(self) -> dict[str, Any]:
        return {
            "jobId": self.job_id,
            "action": self.action,
            "outcome": self.outcome,
            "batchId": self.batch_id,
            "importedFiles": self.imported,
            "failedFiles": self.failed,
            "imageSets": self.image_sets,
            "events": self.events,
            "reportUri": self.report_uri,
        }


@tracer.capture_method(capture_response=False)
def handle_job_event(
    event: JobEvent,
    *,
    settings: CompletionSettings,
    services: CompletionServices,
    lambda_context: LambdaContext | None = None,
) -> JobOutcome:
    """Handle one finished job exactly once (see the module docstring).

    Raises
    ------
    JobRetryLater
        The job is still running, or another invocation is handling it.
    Exception
        Whatever else went wrong; the job record says why, and the message should be retried.
    """
    tracer.put_annotation("job_id", event.job_id)
    if event.datastore_id != settings.datastore_id:
        logger.warning("job event of another data store ignored", extra={"job_id": event.job_id})
        return JobOutcome(event.job_id, "other-datastore")
    known = services.batches.job_records([event.job_id]).get(event.job_id)
    if known is not None and known.state.final:
        logger.info("job already handled", extra={"job_id": event.job_id, "state": known.state.value})
        count(Metric.JOBS_DUPLICATE)
        return JobOutcome(event.job_id, "duplicate", batch_id=known.batch_id, report_uri=known.report_uri)
    try:
        job = _finished_job(event, settings, services)
        if job.status not in FINISHED:
            raise JobEventError(f"import job {job.job_id} has an unknown status {job.status!r}")
        batch_id = _batch_of(job, services.batches)
        if batch_id is None:
            services.batches.finish_job(event.job_id, state=JobState.IGNORED)
            logger.warning("import job not started by this pipeline; ignored", extra={"job_id": job.job_id})
            count(Metric.JOBS_IGNORED)
            return JobOutcome(job.job_id, "ignored")
        result: dict[str, Any] = _runner(services, lambda_context)(
            job_key={"jobId": job.job_id}, job=job, batch_id=batch_id, settings=settings, services=services
        )
    except IdempotencyAlreadyInProgressError:
        raise JobRetryLater(f"import job {event.job_id} is being handled by another invocation") from None
    except JobRetryLater:
        raise
    except Exception as error:
        reason = f"{type(error).__name__}: {error}"
        logger.exception(
            "import job not handled; the message will be retried", extra={"job_id": event.job_id}
        )
        count(Metric.JOBS_FAILED)
        services.batches.fail_job(event.job_id, reason)
        raise
    return JobOutcome(
        job_id=result["jobId"],
        action=result["action"],
        outcome=result.get("outcome"),
        batch_id=result.get("batchId"),
        imported=int(result.get("importedFiles", 0)),
        failed=int(result.get("failedFiles", 0)),
        image_sets=int(result.get("imageSets", 0)),
        events=int(result.get("events", 0)),
        report_uri=result.get("reportUri"),
    )


def _finished_job(event: JobEvent, settings: CompletionSettings, services: CompletionServices) -> ImportJob:
    """GetDICOMImportJob, waiting up to ``manifest_wait_seconds`` if the job does not look finished yet
    (the event can overtake the job's own record).

    Raises
    ------
    JobRetryLater
        When it is still SUBMITTED or IN_PROGRESS after that.
    """
    waited, delay = 0.0, 1.0
    while True:
        job = services.imaging.get_import_job(event.datastore_id, event.job_id)
        if job.status not in UNFINISHED:
            return job
        if waited + delay > settings.manifest_wait_seconds:
            raise JobRetryLater(f"import job {job.job_id} is still {job.status}")
        services.sleep(delay)
        waited += delay


def _batch_of(job: ImportJob, batches: BatchStore) -> str | None:
    """The batch whose job this is: named by the job (and confirmed by its record), else by the index."""
    named = _BATCH_JOB_NAME.fullmatch(job.job_name)
    if named:
        record = batches.records([named.group(1)]).get(named.group(1))
        if record is not None and record.job_id in (None, job.job_id):
            return record.batch_id
    return batches.batch_of_job(job.job_id)


_Runner = Callable[..., dict[str, Any]]


def _runner(services: CompletionServices, lambda_context: LambdaContext | None) -> _Runner:
    if services.idempotency is None:
        return _process
    config = IdempotencyConfig(
        event_key_jmespath="jobId",
        raise_on_no_idempotency_key=True,
        expires_after_seconds=IDEMPOTENCY_SECONDS,
    )
    if lambda_context is not None:
        config.register_lambda_context(lambda_context)
    runner: _Runner = idempotent_function(
        _process, data_keyword_argument="job_key", persistence_store=services.idempotency, config=config
    )
    return runner


@dataclass
class JobFiles:
    """Every input file of the job, as the report lists it (upload bucket, key and version)."""

    imported: list[dict[str, Any]] = field(default_factory=list)
    failed: list[dict[str, Any]] = field(default_factory=list)
    not_in_batch: int = 0


@dataclass
class JobResults:
    """A job's results, read, checked and mapped back to the uploads."""

    manifest: JobManifest | None
    image_sets: list[ImageSetCount]
    files: JobFiles
    tally: ResultsTally


def batch_members(document: Mapping[str, Any]) -> dict[str, tuple[str, str, str | None]]:
    """Staged key → (bucket, key, version id) of each staged upload of a batch's member list.

    Raises
    ------
    ResultsError
        When the list has no staged member.
    """
    members: dict[str, tuple[str, str, str | None]] = {}
    for member in document.get("members", []):
        if isinstance(member, Mapping) and member.get("status") != "unavailable" and member.get("stagedKey"):
            members[str(member["stagedKey"])] = (
                str(member["bucket"]),
                str(member["key"]),
                member.get("versionId"),
            )
    if not members:
        raise ResultsError(["the batch's member list has no staged member"])
    return members


def gather_results(
    job: ImportJob,
    members: Mapping[str, tuple[str, str, str | None]],
    manifest: JobManifest | None,
    success_lines: Iterable[bytes],
    failure_lines: Iterable[bytes],
) -> JobResults:
    """Stream SUCCESS and FAILURE, check them against the manifest, map each file to its upload, and
    report every staged file the lines do not mention.

    Raises
    ------
    ResultsError
        For a malformed line or results that contradict the manifest.
    """
    tally = ResultsTally()
    files = JobFiles()
    seen: set[str] = set()
    input_bucket = _split_s3_uri(job.input_s3_uri)[0] if job.input_s3_uri else None

    def member_of(input_file: str) -> dict[str, Any]:
        key = input_key(input_file, input_bucket)
        seen.add(key)
        member = members.get(key)
        if member is None:
            files.not_in_batch += 1
            return {"stagedKey": key, "key": None}
        return {"bucket": member[0], "key": member[1], "versionId": member[2]}

    for record in success_records(success_lines):
        tally.add_success(record)
        entry = member_of(record.input_file)
        entry["imageSetId"] = record.image_set_id
        files.imported.append(entry)
    for failure in failure_records(failure_lines):
        tally.add_failure(failure)
        entry = member_of(failure.input_file)
        entry["exceptionType"] = failure.exception_type
        entry["message"] = failure.message
        files.failed.append(entry)
    if manifest is not None:
        image_sets = check_consistency(manifest, tally)
    else:
        image_sets = list(tally.image_sets.values())
    _report_unscanned(job, members, seen, files, tally)
    return JobResults(manifest, image_sets, files, tally)


def read_results(
    job: ImportJob,
    members: Mapping[str, tuple[str, str, str | None]],
    manifest: JobManifest | None,
    s3: S3Gateway,
) -> JobResults:
    """:func:`gather_results` on the job folder's SUCCESS and FAILURE files, streamed from S3."""
    bucket, folder = _split_s3_uri(job.output_s3_uri)
    return gather_results(
        job,
        members,
        manifest,
        _lines(s3, bucket, folder + SUCCESS_FILE),
        _lines(s3, bucket, folder + FAILURE_FILE),
    )


def announcements(
    job: ImportJob, batch_id: str | None, results: JobResults, *, bus: str, report_uri: str
) -> list[dict[str, Any]]:
    """The ``PutEvents`` entries of a job: one per image set, and one for its failed files if any."""
    entries = [
        image_set_imported(
            bus=bus, datastore_id=job.datastore_id, image_set=image_set, job_id=job.job_id, batch_id=batch_id
        )
        for image_set in results.image_sets
    ]
    if results.files.failed:
        entries.append(
            import_files_failed(
                bus=bus,
                datastore_id=job.datastore_id,
                job_id=job.job_id,
                batch_id=batch_id,
                job_status=job.status,
                failed_files=len(results.files.failed),
                error_types=results.tally.error_types,
                report_uri=report_uri,
            )
        )
    return entries


@tracer.capture_method(capture_response=False)
def _process(
    *,
    job_key: dict[str, str],
    job: ImportJob,
    batch_id: str,
    settings: CompletionSettings,
    services: CompletionServices,
) -> dict[str, Any]:
    """Read, check, report and announce one job (raises on any problem; see the module docstring)."""
    final = services.batches.begin_job(job.job_id, batch_id=batch_id, job_status=job.status)
    if final is not None:
        count(Metric.JOBS_DUPLICATE)
        return {
            "jobId": job.job_id,
            "action": "duplicate",
            "batchId": batch_id,
            "reportUri": final.report_uri,
        }
    members = batch_members(services.s3.get_json(settings.output_bucket, settings.manifest_key(batch_id)))
    results = read_results(job, members, _read_manifest(job, settings, services), services.s3)
    image_sets, files = results.image_sets, results.files
    _check_image_sets_exist(job, image_sets, services)

    report_uri = f"s3://{settings.output_bucket}/{settings.report_key(job.job_id)}"
    outcome = _outcome(job, files)
    services.s3.put_json(
        settings.output_bucket,
        settings.report_key(job.job_id),
        _report(job, batch_id, results, outcome, services.now()),
    )
    entries = announcements(job, batch_id, results, bus=settings.event_bus_name, report_uri=report_uri)
    services.bus.put(entries)
    counts = {
        "importedFiles": len(files.imported),
        "failedFiles": len(files.failed),
        "imageSets": len(image_sets),
    }
    services.batches.mark_imported(
        batch_id,
        job_id=job.job_id,
        state=outcome,
        job_status=job.status,
        imported=counts["importedFiles"],
        failed=counts["failedFiles"],
        image_sets=counts["imageSets"],
        report_uri=report_uri,
        error=job.message if job.status == "FAILED" else None,
    )
    services.batches.finish_job(
        job.job_id, state=JobState.HANDLED, outcome=outcome.value, counts=counts, report_uri=report_uri
    )
    _count(job, counts)
    logger.info(
        "import job handled",
        extra={"job_id": job.job_id, "batch_id": batch_id, "outcome": outcome.value, **counts},
    )
    return {
        "jobId": job.job_id,
        "action": "handled",
        "outcome": outcome.value,
        "batchId": batch_id,
        "events": len(entries),
        "reportUri": report_uri,
        **counts,
    }


def _split_s3_uri(uri: str) -> tuple[str, str]:
    if not uri.startswith("s3://"):
        raise ResultsError([f"the job's outputS3Uri is not an S3 URI: {uri!r}"])
    bucket, _, prefix = uri.removeprefix("s3://").partition("/")
    if prefix and not prefix.endswith("/"):
        prefix += "/"
    return bucket, prefix


def _read_manifest(
    job: ImportJob, settings: CompletionSettings, services: CompletionServices
) -> JobManifest | None:
    """The job's manifest, waiting up to ``manifest_wait_seconds`` for it to appear.

    A FAILED job may have written none (``None``); a COMPLETED job always has one.
    """
    bucket, folder = _split_s3_uri(job.output_s3_uri)
    waited, delay = 0.0, 0.5
    while True:
        try:
            document = services.s3.get_json(bucket, folder + MANIFEST_FILE)
        except DocumentMissingError:
            if waited + delay > settings.manifest_wait_seconds:
                if job.status == "FAILED":
                    return None
                raise ResultsError(
                    [f"{MANIFEST_FILE} of job {job.job_id} missing {waited:.1f} s after the job ended"]
                ) from None
            services.sleep(delay)
            waited += delay
            delay = min(delay * 2, 4.0)
            continue
        except ValueError as error:
            raise ResultsError([str(error)]) from error
        return parse_manifest(document, job_id=job.job_id, datastore_id=job.datastore_id)


def _lines(s3: S3Gateway, bucket: str, key: str) -> Iterator[bytes]:
    """The lines of a result file; none when the file does not exist (the counts then tell)."""
    try:
        yield from s3.lines(bucket, key)
    except DocumentMissingError:
        return


def _report_unscanned(
    job: ImportJob,
    members: Mapping[str, tuple[str, str, str | None]],
    seen: set[str],
    files: JobFiles,
    tally: ResultsTally,
) -> None:
    """Every staged file the results do not mention is reported, so none is lost silently."""
    if job.status == "FAILED":
        kind, message = "ImportJobFailed", f"the import job failed: {job.message or 'no reason given'}"
    else:
        kind, message = "NotScanned", "the import job did not report this file (was it staged?)"
    for staged_key, (bucket, key, version_id) in members.items():
        if staged_key not in seen:
            files.failed.append(
                {
                    "bucket": bucket,
                    "key": key,
                    "versionId": version_id,
                    "exceptionType": kind,
                    "message": message,
                }
            )
            tally.error_types[kind] += 1


def _check_image_sets_exist(
    job: ImportJob, image_sets: Iterable[ImageSetCount], services: CompletionServices
) -> None:
    states = services.imaging.image_set_states(job.datastore_id, [s.image_set_id for s in image_sets])
    missing = sorted(state.image_set_id for state in states if state.state is None)
    if missing:
        raise ResultsError(
            [f"{len(missing)} image set(s) of job {job.job_id} are not in the data store: {missing}"]
        )


def _outcome(job: ImportJob, files: JobFiles) -> BatchState:
    if job.status == "FAILED" or not files.imported:
        return BatchState.FAILED
    return BatchState.PARTIAL if files.failed else BatchState.COMPLETED


def _iso(moment: datetime | None) -> str | None:
    return (
        None
        if moment is None
        else moment.astimezone(UTC).isoformat(timespec="milliseconds").replace("+00:00", "Z")
    )


def _report(
    job: ImportJob, batch_id: str, results: JobResults, outcome: BatchState, now: datetime
) -> dict[str, Any]:
    """The job's report: ids, keys, counts, error types and messages (never DICOM content)."""
    manifest, image_sets, files, tally = results.manifest, results.image_sets, results.files, results.tally
    latency = (job.ended_at - job.submitted_at).total_seconds() if job.ended_at and job.submitted_at else None
    return {
        "schemaVersion": REPORT_SCHEMA_VERSION,
        "jobId": job.job_id,
        "jobName": job.job_name,
        "datastoreId": job.datastore_id,
        "batchId": batch_id,
        "jobStatus": job.status,
        "jobMessage": job.message,
        "outcome": outcome.value,
        "submittedAt": _iso(job.submitted_at),
        "endedAt": _iso(job.ended_at),
        "latencySeconds": latency,
        "reportedAt": _iso(now),
        "jobFolder": job.output_s3_uri,
        "counts": {
            "scanned": manifest.scanned if manifest else None,
            "imported": len(files.imported),
            "failed": len(files.failed),
            "customerErrors": manifest.customer_errors if manifest else None,
            "serverErrors": manifest.server_errors if manifest else None,
            "imageSets": len(image_sets),
            "notInBatch": files.not_in_batch,
        },
        "errorTypes": dict(sorted(tally.error_types.items())),
        "imageSets": [
            {
                "imageSetId": s.image_set_id,
                "instances": s.instances,
                "imageSetVersion": s.version,
                "isPrimary": s.is_primary,
            }
            for s in image_sets
        ],
        "failedFiles": files.failed,
        "importedFiles": files.imported,
    }


def _count(job: ImportJob, counts: Mapping[str, int]) -> None:
    count(Metric.JOBS_HANDLED)
    count(Metric.FILES_IMPORTED, counts["importedFiles"])
    count(Metric.FILES_FAILED, counts["failedFiles"])
    count(Metric.IMAGE_SETS, counts["imageSets"])
    metrics.add_metric(name=Metric.IMAGE_SETS_PER_JOB, unit=MetricUnit.Count, value=counts["imageSets"])
    if job.ended_at and job.submitted_at:
        latency = max(0.0, (job.ended_at - job.submitted_at).total_seconds())
        metrics.add_metric(name=Metric.JOB_LATENCY, unit=MetricUnit.Seconds, value=latency)


def handle_job_message(record: SQSRecord, lambda_context: LambdaContext | None = None) -> dict[str, Any]:
    """Powertools' SQS record handler: one JobEventsQueue message → :func:`handle_job_event`.

    Raising fails the record alone (``batchItemFailures``): it comes back after the visibility timeout,
    and the queue's redrive policy moves it to the dead-letter queue after its last receive.
    """
    settings = current_completion_settings()
    try:
        event = parse_job_event(record.body)
    except JobEventError as error:
        logger.error("poison job event", extra={"message_id": record.message_id, "reason": str(error)})
        raise
    try:
        outcome = handle_job_event(
            event, settings=settings, services=completion_services(settings), lambda_context=lambda_context
        )
    except JobRetryLater as later:
        logger.warning(
            "job event returned to the queue", extra={"job_id": event.job_id, "reason": str(later)}
        )
        raise
    return outcome.as_dict()


# ---------------------------------------------------------------------- the reconciler
@dataclass
class ReconcileOutcome:
    """What one reconciler run found and did."""

    listed: int = 0
    ours: int = 0
    handled: int = 0
    pending: int = 0
    queued: list[str] = field(default_factory=list)
    states: Counter[str] = field(default_factory=Counter)

    def as_dict(self) -> dict[str, Any]:
        return {
            "listed": self.listed,
            "ours": self.ours,
            "handled": self.handled,
            "pending": self.pending,
            "queued": len(self.queued),
            "states": dict(self.states),
        }


@tracer.capture_method(capture_response=False)
def reconcile_jobs(*, settings: CompletionSettings, services: CompletionServices) -> ReconcileOutcome:
    """Send every recent finished job of this pipeline that has no job record to the job events queue.

    "Recent": ended within ``reconcile_lookback_hours``, and at least ``reconcile_grace_minutes`` ago
    (its own event is probably on its way).  Jobs with a record are left alone: handled, being
    handled, or failing towards the dead-letter queue, where an operator re-drives them.
    """
    if services.sqs is None or settings.job_events_queue_url is None:
        raise RuntimeError("JOB_EVENTS_QUEUE_URL is not set: the reconciler has nowhere to send jobs")
    now = services.now()
    ended_after = now - timedelta(hours=settings.reconcile_lookback_hours)
    ended_before = now - timedelta(minutes=settings.reconcile_grace_minutes)
    outcome = ReconcileOutcome()
    candidates: dict[str, ImportJob] = {}
    for status in sorted(FINISHED):
        for job in services.imaging.list_import_jobs(settings.datastore_id, status, ended_after=ended_after):
            outcome.listed += 1
            if not _BATCH_JOB_NAME.fullmatch(job.job_name):
                continue
            outcome.ours += 1
            if job.ended_at is not None and job.ended_at > ended_before:
                outcome.pending += 1
                continue
            candidates[job.job_id] = job
    records = services.batches.job_records(candidates)
    for job_id, job in sorted(candidates.items()):
        record = records.get(job_id)
        if record is not None:
            outcome.states[record.state.value] += 1
            outcome.handled += record.state.final
            continue
        _send_job(job, settings, services)
        if services.batches.queue_job(job_id, job_status=job.status):
            outcome.queued.append(job_id)
            logger.warning("job event never handled; sent by the reconciler", extra={"job_id": job_id})
    metrics.add_metric(name=Metric.JOBS_RECONCILED, unit=MetricUnit.Count, value=len(outcome.queued))
    logger.info("reconciled import jobs", extra=outcome.as_dict())
    return outcome


def _send_job(job: ImportJob, settings: CompletionSettings, services: CompletionServices) -> None:
    detail_type = next(name for name, status in JOB_DETAIL_TYPES.items() if status == job.status)
    body: dict[str, Any] = {
        "version": "0",
        "id": str(uuid.uuid4()),
        "detail-type": detail_type,
        "source": RECONCILER_SOURCE,
        "time": _iso(services.now()),
        "resources": [],
        "detail": {
            "datastoreId": job.datastore_id,
            "jobId": job.job_id,
            "jobName": job.job_name,
            "jobStatus": job.status,
        },
    }
    services.sqs.send_message(QueueUrl=settings.job_events_queue_url, MessageBody=json.dumps(body))

"""HealthImaging for the pipeline: StartDICOMImportJob, patient with the service's limits; job reads.

botocore (adaptive retry mode, :mod:`ahi_pipeline.clients`) already retries ``ThrottlingException``
and server errors with exponential backoff.  On top of that, this gateway retries — a bounded number of
times, with exponential backoff and jitter, never past the caller's deadline — what botocore leaves:

* ``ServiceQuotaExceededException``: 100 concurrent import jobs per data store are running;
* ``ConflictException``: the data store is busy (e.g. not ACTIVE for a moment);
* ``ThrottlingException`` / ``InternalServerException`` that outlasted botocore's attempts.

Anything else (``ValidationException``, ``AccessDeniedException``, ``ResourceNotFoundException``) is a
configuration problem and is raised at once.  Because every call carries ``clientToken = batchId``, a
retry that follows a lost response returns the job already started instead of a second one.

The completion stage reads jobs (GetDICOMImportJob, ListDICOMImportJobs) and checks that image sets
exist (GetImageSet, at 25 TPS: a few threads, botocore's adaptive mode slowing them down if throttled).
"""

from __future__ import annotations

import time
from collections.abc import Callable, Iterable, Iterator
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from datetime import datetime
from typing import TYPE_CHECKING, Any, Final

from botocore.exceptions import BotoCoreError, ClientError

from ahi_pipeline.backoff import equal_jitter
from ahi_pipeline.clients import error_code
from ahi_pipeline.observability import in_this_trace

if TYPE_CHECKING:
    from mypy_boto3_medical_imaging import HealthImagingClient

__all__ = [
    "ImageSetState",
    "ImagingGateway",
    "ImportJob",
    "ImportJobRequest",
    "ImportStartError",
    "JobNotFoundError",
    "StartedJob",
]

#: GetImageSet calls in flight at once when checking a job's image sets (the service allows 25 TPS).
IMAGE_SET_CHECK_THREADS: Final = 4

RETRYABLE: Final = frozenset(
    {
        "ServiceQuotaExceededException",
        "ConflictException",
        "ThrottlingException",
        "InternalServerException",
    }
)
THROTTLING: Final = frozenset({"ThrottlingException", "ServiceQuotaExceededException"})


@dataclass(frozen=True, slots=True)
class ImportJobRequest:
    datastore_id: str
    job_name: str
    client_token: str
    data_access_role_arn: str
    input_s3_uri: str
    output_s3_uri: str


@dataclass(frozen=True, slots=True)
class StartedJob:
    job_id: str
    status: str
    #: Attempts that were throttled or refused for quota, botocore's and this gateway's together.
    throttled: int


@dataclass(frozen=True, slots=True)
class ImportJob:
    """``jobProperties`` of GetDICOMImportJob, or a summary of ListDICOMImportJobs (no URIs then)."""

    job_id: str
    datastore_id: str
    job_name: str
    status: str
    submitted_at: datetime | None = None
    ended_at: datetime | None = None
    input_s3_uri: str = ""
    output_s3_uri: str = ""
    message: str | None = None

    @classmethod
    def from_wire(cls, properties: dict[str, Any]) -> ImportJob:
        return cls(
            job_id=str(properties["jobId"]),
            datastore_id=str(properties["datastoreId"]),
            job_name=str(properties.get("jobName") or ""),
            status=str(properties["jobStatus"]),
            submitted_at=properties.get("submittedAt"),
            ended_at=properties.get("endedAt"),
            input_s3_uri=str(properties.get("inputS3Uri") or ""),
            output_s3_uri=str(properties.get("outputS3Uri") or ""),
            message=properties.get("message"),
        )


@dataclass(frozen=True, slots=True)
class ImageSetState:
    """What GetImageSet says of an image set (``None``: the data store has no such image set)."""

    image_set_id: str
    state: str | None
    version_id: str | None = None
    is_primary: bool | None = None


class JobNotFoundError(LookupError):
    """GetDICOMImportJob does not know the job (wrong data store, or older than 90 days)."""


class ImportStartError(RuntimeError):
    """The job could not be started; ``retryable`` tells whether a later attempt may succeed."""

    def __init__(self, code: str, message: str, *, retryable: bool, throttled: int = 0) -> None:
        super().__init__(f"StartDICOMImportJob failed: {code}: {message}")
        self.code = code
        self.retryable = retryable
        self.throttled = throttled


class ImagingGateway:
    """The HealthImaging calls of the ingest stage.

    Parameters
    ----------
    client
        A boto3 ``medical-imaging`` client.
    attempts, base_delay, max_delay
        This gateway's own retries of :data:`RETRYABLE` errors (after botocore's).
    sleep, clock
        Injected in unit tests.
    """

    def __init__(
        self,
        client: HealthImagingClient,
        *,
        attempts: int = 4,
        base_delay: float = 2.0,
        max_delay: float = 20.0,
        sleep: Callable[[float], None] = time.sleep,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self._client = client
        self._attempts = attempts
        self._base_delay = base_delay
        self._max_delay = max_delay
        self._sleep = sleep
        self._clock = clock

    def start_import_job(self, request: ImportJobRequest, *, deadline: float | None = None) -> StartedJob:
        """Start (or, for a known ``client_token``, find) the import job.

        ``deadline`` is a ``clock()`` value after which no retry is attempted.

        Raises
        ------
        ImportStartError
            With ``retryable`` set when the job may start later (quota, throttling, conflict).
        """
        throttled = 0
        attempt = 0
        while True:
            attempt += 1
            try:
                response = self._client.start_dicom_import_job(
                    datastoreId=request.datastore_id,
                    jobName=request.job_name,
                    clientToken=request.client_token,
                    dataAccessRoleArn=request.data_access_role_arn,
                    inputS3Uri=request.input_s3_uri,
                    outputS3Uri=request.output_s3_uri,
                )
            except ClientError as error:
                code = error_code(error)
                message = str(error.response.get("Error", {}).get("Message", ""))
                throttled += _retries_of(error.response) + (code in THROTTLING)
                if code not in RETRYABLE:
                    raise ImportStartError(code, message, retryable=False, throttled=throttled) from error
                delay = self._delay(attempt)
                if attempt >= self._attempts or (deadline is not None and self._clock() + delay > deadline):
                    raise ImportStartError(code, message, retryable=True, throttled=throttled) from error
                self._sleep(delay)
            except BotoCoreError as error:  # connection errors that outlasted botocore's retries
                raise ImportStartError(type(error).__name__, str(error), retryable=True) from error
            else:
                throttled += _retries_of(response)
                return StartedJob(job_id=response["jobId"], status=response["jobStatus"], throttled=throttled)

    # ------------------------------------------------------------------ reads
    def get_import_job(self, datastore_id: str, job_id: str) -> ImportJob:
        """GetDICOMImportJob.

        Raises
        ------
        JobNotFoundError
            When the service answers ``ResourceNotFoundException``.
        """
        try:
            response = self._client.get_dicom_import_job(datastoreId=datastore_id, jobId=job_id)
        except ClientError as error:
            if error_code(error) == "ResourceNotFoundException":
                raise JobNotFoundError(
                    f"import job {job_id} is not known in data store {datastore_id}"
                ) from error
            raise
        return ImportJob.from_wire(dict(response["jobProperties"]))

    def list_import_jobs(
        self, datastore_id: str, status: str, *, ended_after: datetime | None = None
    ) -> Iterator[ImportJob]:
        """Every job of ``datastore_id`` in ``status`` (ListDICOMImportJobs, every page).

        With ``ended_after``, jobs that ended before it are left out (the service does not document an
        order, so every page is read).
        """
        paginator = self._client.get_paginator("list_dicom_import_jobs")
        for page in paginator.paginate(
            datastoreId=datastore_id,
            jobStatus=status,  # type: ignore[arg-type]
            PaginationConfig={"PageSize": 50},
        ):
            for summary in page.get("jobSummaries", []):
                job = ImportJob.from_wire(dict(summary))
                if ended_after is not None and job.ended_at is not None and job.ended_at < ended_after:
                    continue
                yield job

    def image_set_states(self, datastore_id: str, image_set_ids: Iterable[str]) -> list[ImageSetState]:
        """GetImageSet for each id, a few at a time; ``state`` is ``None`` for an id the store lacks."""

        def one(image_set_id: str) -> ImageSetState:
            try:
                response = self._client.get_image_set(datastoreId=datastore_id, imageSetId=image_set_id)
            except ClientError as error:
                if error_code(error) == "ResourceNotFoundException":
                    return ImageSetState(image_set_id, None)
                raise
            return ImageSetState(
                image_set_id,
                str(response["imageSetState"]),
                str(response.get("versionId") or "") or None,
                response.get("isPrimary"),
            )

        ids = list(image_set_ids)
        if len(ids) <= 1:
            return [one(image_set_id) for image_set_id in ids]
        with ThreadPoolExecutor(max_workers=min(IMAGE_SET_CHECK_THREADS, len(ids))) as pool:
            return list(pool.map(in_this_trace(one), ids))

    def _delay(self, attempt: int) -> float:
        return equal_jitter(attempt, self._base_delay, self._max_delay)


def _retries_of(response: object) -> int:
    """botocore's retry count for a call (``ResponseMetadata.RetryAttempts``)."""
    if isinstance(response, dict):
        metadata = response.get("ResponseMetadata")
        if isinstance(metadata, dict):
            return int(metadata.get("RetryAttempts", 0) or 0)
    return 0

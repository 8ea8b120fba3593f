"""Running one import job: S3 prefix in, image sets and the job's result files out.

The job lists every object under ``inputS3Uri`` (nested folders included), checks the job-level limits
(files, total size, size of a file, nested folders), reads each file from S3 one at a time into a temporary
file and imports it with ``emulator.imaging``, groups the instances into image sets, and writes under
``<outputS3Uri><datastoreId>-DicomImport-<jobId>/`` the ``job-output-manifest.json``,
``SUCCESS/success.ndjson`` and ``FAILURE/failure.ndjson`` the service writes (spec §3.5).  A COMPLETED job
may have failed files; a FAILED job has a ``message`` saying why.
"""

from __future__ import annotations

import itertools
import json
import logging
from collections import deque
from collections.abc import Callable, Iterable, Iterator
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass, field
from functools import partial
from tempfile import SpooledTemporaryFile
from typing import TYPE_CHECKING, Any, BinaryIO, cast
from urllib.parse import urlparse

from botocore.exceptions import BotoCoreError, ClientError

from emulator import imaging
from emulator.backend import new_id
from emulator.store import Store

if TYPE_CHECKING:
    from emulator.backend import Backend

log = logging.getLogger(__name__)

PREFETCH_THREADS = 4
PREFETCH_FILES = 8  # files read ahead of the one being imported
SPOOL_BYTES = 32 * 1024 * 1024  # a prefetched file larger than this waits on disk, not in memory


@dataclass(frozen=True)
class S3Object:
    key: str
    size: int


@dataclass
class JobOutcome:
    """What the job found, file by file, and the image sets it made."""

    scanned: int = 0
    imported: list[tuple[str, str]] = field(default_factory=list)  # (input file, image set id)
    failures: list[tuple[str, str, str]] = field(default_factory=list)  # (input file, type, message)
    image_sets: list[tuple[str, int, bool]] = field(default_factory=list)  # (id, instance count, primary)

    @property
    def customer_errors(self) -> int:
        return sum(1 for _, kind, _ in self.failures if kind != "InternalServerException")

    @property
    def server_errors(self) -> int:
        return len(self.failures) - self.customer_errors


def split_s3_uri(uri: str) -> tuple[str, str]:
    """``s3://bucket/prefix/`` → (bucket, prefix)."""
    parsed = urlparse(uri)
    return parsed.netloc, parsed.path.lstrip("/")


class JobLimitError(Exception):
    """The input breaks a job-level limit: the job fails and every file is reported with the reason."""


class ImportJobRunner:
    """Runs the import job ``job_id`` of ``backend`` to completion (on an import worker thread)."""

    def __init__(self, backend: Backend, job_id: str) -> None:
        self.backend = backend
        self.job_id = job_id
        self.s3 = backend.s3_client()
        self._listed_keys: list[str] = []

    def run(self) -> None:
        store = self.backend.store
        job = store.one("SELECT * FROM jobs WHERE id = ?", (self.job_id,))
        if job is None or job["status"] not in ("SUBMITTED", "IN_PROGRESS"):
            return
        self.backend.set_job_status(self.job_id, "IN_PROGRESS")
        datastore_id = job["datastore_id"]
        output_uri = self.backend.job_output_uri(job)
        outcome = JobOutcome()
        status, message = "COMPLETED", None
        try:
            objects = self._list(job["input_s3_uri"])
            self._listed_keys = [o.key for o in objects]
            outcome.scanned = len(objects)
            try:
                self._check_limits(objects)
            except JobLimitError as limit:
                status, message = "FAILED", str(limit)
                outcome.failures = [(o.key, "ValidationException", str(limit)) for o in objects]
            else:
                self._import(job, datastore_id, objects, outcome)
        except (ClientError, BotoCoreError) as error:
            status = "FAILED"
            message = f"Unable to read the input S3 location {job['input_s3_uri']}: {_error_code(error)}"
        except Exception:
            # A job never stays IN_PROGRESS: an unexpected error fails it, and every file not already
            # reported is reported as a server error, so nothing is lost silently.
            log.exception("import job %s failed unexpectedly", self.job_id)
            status, message = "FAILED", "Internal error while running the import job"
            reported = {key for key, _, _ in outcome.failures}
            outcome.failures.extend(
                (key, "InternalServerException", message) for key in self._listed_keys if key not in reported
            )
            outcome.imported, outcome.image_sets = [], []
        try:
            self._write_results(job, output_uri, outcome)
        except (ClientError, BotoCoreError) as error:
            status = "FAILED"
            message = f"Unable to write the job results to {output_uri}: {_error_code(error)}"
        if status == "COMPLETED":
            self._publish_image_sets(outcome)
        self.backend.set_job_status(self.job_id, status, message)

    # ------------------------------------------------------------------ input
    def _list(self, input_uri: str) -> list[S3Object]:
        bucket, prefix = split_s3_uri(input_uri)
        objects = []
        for page in self.s3.get_paginator("list_objects_v2").paginate(Bucket=bucket, Prefix=prefix):
            for item in page.get("Contents", []):
                key = item["Key"]
                if key.endswith("/"):
                    continue  # a folder marker, not a file
                objects.append(S3Object(key, int(item["Size"])))
        return objects

    def _check_limits(self, objects: list[S3Object]) -> None:
        quotas = self.backend.quotas
        if len(objects) > quotas.files_per_import_job:
            raise JobLimitError(
                f"The input has {len(objects)} files; an import job accepts at most "
                f"{quotas.files_per_import_job}"
            )
        total = sum(o.size for o in objects)
        if total > quotas.bytes_per_import_job:
            raise JobLimitError(
                f"The input totals {total} bytes; an import job accepts at most {quotas.bytes_per_import_job}"
            )
        folders = {o.key.rsplit("/", 1)[0] for o in objects if "/" in o.key}
        if len(folders) > quotas.nested_folders_per_import_job:
            raise JobLimitError(
                f"The input has {len(folders)} folders; an import job accepts at most "
                f"{quotas.nested_folders_per_import_job}"
            )

    def _import(self, job: Any, datastore_id: str, objects: list[S3Object], outcome: JobOutcome) -> None:
        bucket, _ = split_s3_uri(job["input_s3_uri"])
        quotas = self.backend.quotas
        importable = []
        for obj in objects:
            if obj.size > quotas.bytes_per_file:
                message = f"The file has {obj.size} bytes; the limit is {quotas.bytes_per_file}"
                outcome.failures.append((obj.key, "ValidationException", message))
            elif obj.size == 0:
                outcome.failures.append(
                    (obj.key, "ValidationException", "The file is empty, not a DICOM P10 file")
                )
            else:
                importable.append(obj)
        # Files are read ahead by a few I/O threads (bounded, spooled to disk past SPOOL_BYTES) while
        # this worker imports them in order.
        with ThreadPoolExecutor(PREFETCH_THREADS, thread_name_prefix="emulator-fetch") as pool:
            pending: deque[tuple[S3Object, Future[SpooledTemporaryFile[bytes]]]] = deque()
            queue = iter(importable)
            for obj in itertools.islice(queue, PREFETCH_FILES):
                pending.append((obj, pool.submit(self._fetch, bucket, obj.key)))

            def fetched() -> Iterator[tuple[str, Callable[[], BinaryIO]]]:
                while pending:
                    obj, future = pending.popleft()
                    following = next(queue, None)
                    if following is not None:
                        pending.append((following, pool.submit(self._fetch, bucket, following.key)))
                    yield obj.key, partial(_result, future)

            instances = import_files(
                fetched(),
                self.backend.store,
                datastore_id,
                outcome,
                retain_original_encoding=self.backend.config.retain_original_encoding,
            )
        self._create_image_sets(datastore_id, instances, outcome)

    def _fetch(self, bucket: str, key: str) -> SpooledTemporaryFile[bytes]:
        body = self.s3.get_object(Bucket=bucket, Key=key)["Body"]
        # The caller owns (and closes) the spool it gets back.
        spool: SpooledTemporaryFile[bytes] = SpooledTemporaryFile(max_size=SPOOL_BYTES)  # noqa: SIM115
        try:
            for chunk in body.iter_chunks(1024 * 1024):
                spool.write(chunk)
        except BaseException:
            spool.close()
            raise
        spool.seek(0)
        return spool

    def _create_image_sets(
        self, datastore_id: str, instances: list[imaging.ImportedInstance], outcome: JobOutcome
    ) -> None:
        groups = imaging.group_into_image_sets(instances)
        with self.backend.store.transaction() as db:
            primary_series = {
                row["series_uid"]
                for row in db.execute(
                    "SELECT series_uid FROM image_sets WHERE datastore_id = ? AND is_primary = 1 "
                    "AND state != 'DELETED'",
                    (datastore_id,),
                )
            }
            for group in groups:
                image_set_id = new_id()
                document = imaging.build_metadata_document(datastore_id, image_set_id, group)
                series_uid = group[0].series_instance_uid
                is_primary = series_uid not in primary_series
                self.backend.create_image_set(
                    db,
                    datastore_id=datastore_id,
                    image_set_id=image_set_id,
                    document=document,
                    workflow_status="CREATED",
                    is_primary=is_primary,
                )
                primary_series.add(series_uid)
                outcome.image_sets.append((image_set_id, len(group), is_primary))
                outcome.imported.extend((instance.input_file, image_set_id) for instance in group)

    def _publish_image_sets(self, outcome: JobOutcome) -> None:
        for image_set_id, _, _ in outcome.image_sets:
            self.backend.image_set_event(image_set_id)

    # ------------------------------------------------------------------ output
    def _write_results(self, job: Any, output_uri: str, outcome: JobOutcome) -> None:
        bucket, folder = split_s3_uri(output_uri)
        # The newer shape: imports always create version 1 here, and say whether the image set is
        # primary (the first of its series in the data store), in the lines and in the summary.
        primary = {image_set_id: is_primary for image_set_id, _, is_primary in outcome.image_sets}
        success_lines = _ndjson(
            {
                "inputFile": key,
                "importResponse": {
                    "imageSetId": image_set_id,
                    "imageSetVersion": "1",
                    "isPrimary": primary[image_set_id],
                },
            }
            for key, image_set_id in outcome.imported
        )
        failure_lines = _ndjson(
            {"inputFile": key, "exception": {"exceptionType": kind, "message": message}}
            for key, kind, message in outcome.failures
        )
        self.s3.put_object(Bucket=bucket, Key=f"{folder}SUCCESS/success.ndjson", Body=success_lines)
        self.s3.put_object(Bucket=bucket, Key=f"{folder}FAILURE/failure.ndjson", Body=failure_lines)
        manifest = {
            "jobSummary": {
                "jobId": job["id"],
                "datastoreId": job["datastore_id"],
                "inputS3Uri": job["input_s3_uri"],
                "outputS3Uri": output_uri,
                "successOutputS3Uri": f"{output_uri}SUCCESS/",
                "failureOutputS3Uri": f"{output_uri}FAILURE/",
                "numberOfScannedFiles": outcome.scanned,
                "numberOfImportedFiles": len(outcome.imported),
                "numberOfFilesWithCustomerError": outcome.customer_errors,
                "numberOfFilesWithServerError": outcome.server_errors,
                "numberOfGeneratedImageSets": len(outcome.image_sets),
                "imageSetsSummary": [
                    {
                        "imageSetId": image_set_id,
                        "imageSetVersion": "1",
                        "isPrimary": is_primary,
                        "numberOfMatchedSOPInstances": count,
                    }
                    for image_set_id, count, is_primary in outcome.image_sets
                ],
            }
        }
        # The manifest goes last: its presence tells a reader that SUCCESS and FAILURE are complete.
        self.s3.put_object(
            Bucket=bucket,
            Key=f"{folder}job-output-manifest.json",
            Body=json.dumps(manifest, indent=2).encode(),
            ContentType="application/json",
        )


def _ndjson(records: Iterator[dict[str, Any]] | Any) -> bytes:
    return b"".join(json.dumps(record, separators=(",", ":")).encode() + b"\n" for record in records)


def _error_code(error: Exception) -> str:
    if isinstance(error, ClientError):
        return str(error.response.get("Error", {}).get("Code", "Unknown"))
    return type(error).__name__


def _result(future: Future[SpooledTemporaryFile[bytes]]) -> BinaryIO:
    return cast(BinaryIO, future.result())


def import_files(
    files: Iterable[tuple[str, Callable[[], BinaryIO]]],
    store: Store,
    datastore_id: str,
    outcome: JobOutcome,
    *,
    retain_original_encoding: bool = True,
) -> list[imaging.ImportedInstance]:
    """Import ``(key, open)`` pairs in order, one file being read while the previous one's frames encode.

    Each file that fails is recorded in ``outcome.failures`` with its reason (its stored frames are
    removed); the instances of the others are returned.  At most two files are in flight, so memory
    stays bounded by a few frames whatever the number of files.  ``retain_original_encoding`` is
    :attr:`emulator.config.EmulatorConfig.retain_original_encoding`.
    """
    instances: list[imaging.ImportedInstance] = []
    in_flight: tuple[str, imaging.PendingInstance, list[str]] | None = None

    def finish(key: str, pending: imaging.PendingInstance, written: list[str]) -> None:
        try:
            instances.append(pending.result())
        except Exception as error:  # noqa: BLE001 - every failure is reported for its file
            _record_failure(store, datastore_id, key, written, error, outcome=outcome)

    for key, opener in files:
        written: list[str] = []

        def store_frame(data: bytes, written: list[str] = written) -> str:
            frame_id = new_id()
            store.write_frame(datastore_id, frame_id, data)
            written.append(frame_id)
            return frame_id

        try:
            with opener() as handle:
                pending = imaging.begin_import(
                    handle, key, store_frame, retain_original_encoding=retain_original_encoding
                )
        except Exception as error:  # noqa: BLE001 - every failure is reported for its file
            _record_failure(store, datastore_id, key, written, error, outcome=outcome)
            continue
        if in_flight is not None:
            finish(*in_flight)
        in_flight = (key, pending, written)
    if in_flight is not None:
        finish(*in_flight)
    return instances


def _record_failure(
    store: Store, datastore_id: str, key: str, written: list[str], error: Exception, *, outcome: JobOutcome
) -> None:
    store.delete_frames(datastore_id, written)
    if isinstance(error, imaging.ImportFileError):
        outcome.failures.append((key, error.exception_type, error.message))
    elif isinstance(error, ClientError | BotoCoreError):
        outcome.failures.append(
            (key, "ValidationException", f"Unable to read the file: {_error_code(error)}")
        )
    else:
        log.error("unexpected failure importing a file", exc_info=error)
        outcome.failures.append((key, "InternalServerException", "Internal error while importing the file"))

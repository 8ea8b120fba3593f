"""The pipeline's own events, on its own event bus: what they say, and how they are put.

Every stage announces its results as EventBridge events with source :data:`SOURCE` on the pipeline
bus (``EVENT_BUS_NAME``), so the next stage (or anyone else) subscribes with a rule.  ``detail`` carries
ids and counts only, never DICOM content.

``Image Set Imported`` (one per image set an import job created or added a version to)::

    {"schemaVersion": 1, "datastoreId": "…", "imageSetId": "…", "importJobId": "…",
     "batchId": "…", "instanceCount": 12, "imageSetVersion": "1", "isPrimary": true}

    (``imageSetVersion`` and ``isPrimary`` only when the service said; ``batchId`` null for a job
    the pipeline did not start)

``Image Set Ready`` (one per image set the de-identification stage finished; ``imageSetId`` is the clean
copy when the history was purged)::

    {"schemaVersion": 1, "datastoreId": "…", "imageSetId": "…", "sourceImageSetId": "…",
     "importJobId": "…", "batchId": "…",
     "deidentification": {"status": "deidentified", "edition": "2025b", "options": ["CleanDescriptors"]}}

``Thumbnail Rendered`` (one per Ready image set whose thumbnail, contact sheets and sidecar were written)::

    {"schemaVersion": 1, "datastoreId": "…", "imageSetId": "…", "bucket": "…",
     "thumbnailKey": "thumbnails/<datastoreId>/<imageSetId>/thumbnail.png", "width": 256, "height": 256,
     "sidecarKey": "…/thumbnail.json", "contactSheetKeys": ["…/contact-sheet-01.png"]}

``Import Files Failed`` (one per job with at least one file that did not import)::

    {"schemaVersion": 1, "datastoreId": "…", "importJobId": "…", "batchId": "…", "jobStatus": "COMPLETED",
     "failedFiles": 2, "errorTypes": {"ValidationException": 2}, "reportUri": "s3://…/<jobId>.json"}

:class:`EventBusGateway` puts entries 10 per ``PutEvents`` call (the API's limit) and retries the
entries that failed (``FailedEntryCount``: throttling, internal errors) with backoff; botocore's retry
mode already retries the calls themselves.
"""

from __future__ import annotations

import json
import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, Final

from ahi_pipeline.backoff import equal_jitter
from ahi_pipeline.job_results import ImageSetCount
from ahi_pipeline.observability import logger

if TYPE_CHECKING:
    from aws_lambda_powertools.utilities.data_classes.sqs_event import SQSRecord

__all__ = [
    "IMAGE_SET_IMPORTED",
    "IMAGE_SET_READY",
    "IMPORT_FILES_FAILED",
    "SOURCE",
    "THUMBNAIL_RENDERED",
    "EventBusGateway",
    "PublishError",
    "ReadyEvent",
    "ReadyEventError",
    "image_set_imported",
    "image_set_ready",
    "import_files_failed",
    "parse_ready_event",
    "ready_event_in",
    "thumbnail_rendered",
]

SOURCE: Final = "healthimaging-automation"
IMAGE_SET_IMPORTED: Final = "Image Set Imported"
IMPORT_FILES_FAILED: Final = "Import Files Failed"
IMAGE_SET_READY: Final = "Image Set Ready"
THUMBNAIL_RENDERED: Final = "Thumbnail Rendered"
SCHEMA_VERSION: Final = 1
#: ``PutEvents`` accepts at most 10 entries per call.
PUT_EVENTS_BATCH: Final = 10


def _entry(bus: str, detail_type: str, detail: Mapping[str, Any], resources: Sequence[str]) -> dict[str, Any]:
    return {
        "Source": SOURCE,
        "DetailType": detail_type,
        "Detail": json.dumps({"schemaVersion": SCHEMA_VERSION, **detail}, separators=(",", ":")),
        "Resources": list(resources),
        "EventBusName": bus,
    }


def image_set_imported(
    *,
    bus: str,
    datastore_id: str,
    image_set: ImageSetCount,
    job_id: str,
    batch_id: str | None,
    image_set_arn: str | None = None,
) -> dict[str, Any]:
    """The ``PutEvents`` entry announcing one imported image set."""
    detail: dict[str, Any] = {
        "datastoreId": datastore_id,
        "imageSetId": image_set.image_set_id,
        "importJobId": job_id,
        "batchId": batch_id,
        "instanceCount": image_set.instances,
    }
    if image_set.version is not None:
        detail["imageSetVersion"] = image_set.version
    if image_set.is_primary is not None:
        detail["isPrimary"] = image_set.is_primary
    return _entry(bus, IMAGE_SET_IMPORTED, detail, [image_set_arn] if image_set_arn else [])


def import_files_failed(
    *,
    bus: str,
    datastore_id: str,
    job_id: str,
    batch_id: str | None,
    job_status: str,
    failed_files: int,
    error_types: Mapping[str, int],
    report_uri: str,
) -> dict[str, Any]:
    """The ``PutEvents`` entry reporting the files of a job that did not import."""
    detail = {
        "datastoreId": datastore_id,
        "importJobId": job_id,
        "batchId": batch_id,
        "jobStatus": job_status,
        "failedFiles": failed_files,
        "errorTypes": dict(sorted(error_types.items())),
        "reportUri": report_uri,
    }
    return _entry(bus, IMPORT_FILES_FAILED, detail, [])


def image_set_ready(
    *,
    bus: str,
    datastore_id: str,
    image_set_id: str,
    source_image_set_id: str,
    job_id: str | None,
    batch_id: str | None,
    status: str,
    profile: Mapping[str, Any],
) -> dict[str, Any]:
    """The ``PutEvents`` entry announcing an image set ready for the next stages.

    ``status`` is ``deidentified`` or ``skipped``; ``profile`` names the edition and options applied.
    """
    detail = {
        "datastoreId": datastore_id,
        "imageSetId": image_set_id,
        "sourceImageSetId": source_image_set_id,
        "importJobId": job_id,
        "batchId": batch_id,
        "deidentification": {"status": status, **profile},
    }
    return _entry(bus, IMAGE_SET_READY, detail, [])


def thumbnail_rendered(
    *,
    bus: str,
    datastore_id: str,
    image_set_id: str,
    bucket: str,
    thumbnail_key: str,
    sidecar_key: str,
    contact_sheet_keys: Sequence[str],
    width: int,
    height: int,
    image_set_arn: str | None = None,
) -> dict[str, Any]:
    """The ``PutEvents`` entry announcing an image set's thumbnail (and contact sheets) in S3."""
    detail = {
        "datastoreId": datastore_id,
        "imageSetId": image_set_id,
        "bucket": bucket,
        "thumbnailKey": thumbnail_key,
        "width": width,
        "height": height,
        "sidecarKey": sidecar_key,
        "contactSheetKeys": list(contact_sheet_keys),
    }
    return _entry(bus, THUMBNAIL_RENDERED, detail, [image_set_arn] if image_set_arn else [])


class PublishError(RuntimeError):
    """Some entries could still not be put after every attempt; ``codes`` counts their error codes."""

    def __init__(self, failed: int, codes: Mapping[str, int]) -> None:
        self.failed = failed
        self.codes = dict(codes)
        super().__init__(f"{failed} event(s) could not be put on the bus ({', '.join(sorted(self.codes))})")


class EventBusGateway:
    """``PutEvents`` in batches of 10, retrying failed entries.

    Parameters
    ----------
    client
        A boto3 ``events`` client.
    attempts, base_delay, max_delay
        Attempts per batch for entries that failed, with exponential backoff and jitter between them.
    sleep
        Injected in unit tests.
    """

    def __init__(
        self,
        client: Any,
        *,
        attempts: int = 5,
        base_delay: float = 0.2,
        max_delay: float = 5.0,
        sleep: Callable[[float], None] = time.sleep,
    ) -> None:
        self._client = client
        self._attempts = attempts
        self._base_delay = base_delay
        self._max_delay = max_delay
        self._sleep = sleep
        #: PutEvents calls made (for the benchmark and the stage's report).
        self.calls = 0

    def put(self, entries: Sequence[Mapping[str, Any]]) -> int:
        """Put every entry; return how many were put.

        Raises
        ------
        PublishError
            After every batch has been tried, if some entries still failed.
        """
        failed: dict[str, int] = {}
        total_failed = 0
        for start in range(0, len(entries), PUT_EVENTS_BATCH):
            pending = [dict(entry) for entry in entries[start : start + PUT_EVENTS_BATCH]]
            for attempt in range(1, self._attempts + 1):
                self.calls += 1
                response = self._client.put_events(Entries=pending)
                if not response.get("FailedEntryCount"):
                    pending = []
                    break
                results = list(response.get("Entries", []))
                # One result per entry, in order; an entry without a result counts as failed too.
                results += [{"ErrorCode": "MissingResult"}] * (len(pending) - len(results))
                failures = [
                    (entry, str(result.get("ErrorCode") or "Unknown"))
                    for entry, result in zip(pending, results, strict=False)
                    if result.get("ErrorCode") or not result.get("EventId")
                ]
                pending = [entry for entry, _ in failures]
                if not pending or attempt == self._attempts:
                    for _, code in failures:
                        failed[code] = failed.get(code, 0) + 1
                    break
                self._sleep(equal_jitter(attempt, self._base_delay, self._max_delay))
            total_failed += len(pending)
        if total_failed:
            raise PublishError(total_failed, failed)
        return len(entries)


class ReadyEventError(ValueError):
    """A message that is not an "Image Set Ready" event (a poison message)."""


@dataclass(frozen=True, slots=True)
class ReadyEvent:
    datastore_id: str
    image_set_id: str
    detail: Mapping[str, Any]


def parse_ready_event(body: Any) -> ReadyEvent:
    """The "Image Set Ready" event in an SQS message body.

    Raises
    ------
    ReadyEventError
        For anything else.
    """
    if isinstance(body, str | bytes):
        try:
            body = json.loads(body)
        except ValueError:
            raise ReadyEventError("the message is not JSON") from None
    if (
        not isinstance(body, Mapping)
        or body.get("source") != SOURCE
        or body.get("detail-type") != IMAGE_SET_READY
    ):
        raise ReadyEventError("the message is not an Image Set Ready event")
    detail = body.get("detail")
    if not isinstance(detail, Mapping):
        raise ReadyEventError("the event has no detail object")
    datastore_id, image_set_id = detail.get("datastoreId"), detail.get("imageSetId")
    for name, value in (("datastoreId", datastore_id), ("imageSetId", image_set_id)):
        if not isinstance(value, str) or len(value) != 32 or not value.isalnum():
            raise ReadyEventError(f"detail.{name} is missing or not an id")
    return ReadyEvent(str(datastore_id), str(image_set_id), dict(detail))


def ready_event_in(record: SQSRecord) -> ReadyEvent:
    """The "Image Set Ready" event a queue message carries (the stages that follow de-identification).

    Raises
    ------
    ReadyEventError
        For a poison message, logged first with its message id and the reason (never its body).
    """
    try:
        return parse_ready_event(record.body)
    except ReadyEventError as error:
        logger.error("poison Ready event", extra={"message_id": record.message_id, "reason": str(error)})
        raise

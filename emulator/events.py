"""EventBridge notifications of data store, import job and image set state changes.

HealthImaging sends an event with source ``aws.medical-imaging`` to the default event bus each time a
data store, an import job or an image set changes state (``../shared/spec/healthimaging-platform.md``
section 1).  The pure builders here make the ``PutEvents`` entry for a state: the exact
``detail-type`` of spec 1.2, the ``detail`` fields of spec 1.3 (``imagingVersion`` "1.0", the
``imagesetId`` spelling) and a consistent ARN in ``Resources`` (spec 1.5 notes the examples' mismatch).
EventBridge itself adds the envelope (``version``, ``id``, ``account``, ``region``, ``time``).

:class:`EventPublisher` sends the entries from a background thread so that API responses are not
delayed, retries failures with backoff, and logs what it finally drops; it never raises into the caller.
"""

from __future__ import annotations

import json
import logging
import queue
import threading
from collections.abc import Mapping
from datetime import UTC, datetime
from time import sleep
from typing import Any, Final

from botocore.exceptions import BotoCoreError, ClientError

__all__ = [
    "DATASTORE_DETAIL_TYPES",
    "IMAGE_SET_DETAIL_TYPES",
    "IMAGE_SET_STATES",
    "IMAGING_VERSION",
    "IMPORT_JOB_DETAIL_TYPES",
    "SOURCE",
    "EventPublisher",
    "build_entry",
    "datastore_arn",
    "datastore_entry",
    "image_set_arn",
    "image_set_entry",
    "import_job_entry",
]

logger = logging.getLogger(__name__)

SOURCE: Final = "aws.medical-imaging"
IMAGING_VERSION: Final = "1.0"
#: ``PutEvents`` accepts at most 10 entries per call.
_MAX_BATCH: Final = 10

#: ``datastoreStatus`` -> ``detail-type`` (spec 1.2).
DATASTORE_DETAIL_TYPES: Final[Mapping[str, str]] = {
    "CREATING": "Data Store Creating",
    "CREATE_FAILED": "Data Store Creation Failed",
    "ACTIVE": "Data Store Created",
    "DELETING": "Data Store Deleting",
    "DELETED": "Data Store Deleted",
}
#: ``jobStatus`` -> ``detail-type`` (spec 1.2).
IMPORT_JOB_DETAIL_TYPES: Final[Mapping[str, str]] = {
    "SUBMITTED": "Import Job Submitted",
    "IN_PROGRESS": "Import Job In Progress",
    "COMPLETED": "Import Job Completed",
    "FAILED": "Import Job Failed",
}
#: ``imageSetWorkflowStatus`` -> ``detail-type`` (spec 1.2).
IMAGE_SET_DETAIL_TYPES: Final[Mapping[str, str]] = {
    "CREATED": "Image Set Created",
    "COPYING": "Image Set Copying",
    "COPYING_WITH_READ_ONLY_ACCESS": "Image Set Copying With Read Only Access",
    "COPIED": "Image Set Copied",
    "COPY_FAILED": "Image Set Copy Failed",
    "UPDATING": "Image Set Updating",
    "UPDATED": "Image Set Updated",
    "UPDATE_FAILED": "Image Set Update Failed",
    "DELETING": "Image Set Deleting",
    "DELETED": "Image Set Deleted",
}
#: ``imageSetState`` values (api spec 1.7).
IMAGE_SET_STATES: Final[tuple[str, ...]] = ("ACTIVE", "LOCKED", "DELETED")


def datastore_arn(*, region: str, account: str, datastore_id: str) -> str:
    """``arn:aws:medical-imaging:<region>:<account>:datastore/<datastoreId>`` (api spec 1.6)."""
    return f"arn:aws:medical-imaging:{region}:{account}:datastore/{datastore_id}"


def image_set_arn(*, region: str, account: str, datastore_id: str, image_set_id: str) -> str:
    """``arn:aws:medical-imaging:<region>:<account>:datastore/<id>/imageset/<id>`` (api spec 1.6)."""
    return (
        f"{datastore_arn(region=region, account=account, datastore_id=datastore_id)}/imageset/{image_set_id}"
    )


def _detail_type(table: Mapping[str, str], status: str, what: str) -> str:
    try:
        return table[status]
    except KeyError:
        raise ValueError(f"no {what} event for status {status!r}; known: {', '.join(table)}") from None


def build_entry(
    *,
    detail_type: str,
    resource_arn: str,
    detail: Mapping[str, Any],
    time: datetime | None = None,
    event_bus_name: str = "default",
) -> dict[str, Any]:
    """A ``PutEvents`` request entry from the service (the other builders call this one).

    Parameters
    ----------
    detail_type
        The ``detail-type``.
    resource_arn
        The single ARN of ``Resources``.
    detail
        The ``detail`` object without ``imagingVersion``, which is put first.
    time
        When the state changed; ``None`` leaves it to EventBridge (the time it receives the entry).
    event_bus_name
        The bus; the service itself always sends to ``default``.
    """
    entry: dict[str, Any] = {}
    if time is not None:
        entry["Time"] = time
    entry |= {
        "Source": SOURCE,
        "DetailType": detail_type,
        "Resources": [resource_arn],
        "Detail": json.dumps({"imagingVersion": IMAGING_VERSION, **detail}, separators=(",", ":")),
        "EventBusName": event_bus_name,
    }
    return entry


def datastore_entry(
    *,
    account: str,
    region: str,
    datastore_id: str,
    datastore_name: str,
    status: str,
    time: datetime | None = None,
    event_bus_name: str = "default",
) -> dict[str, Any]:
    """The entry for a data store entering ``status`` (``CREATING``, ``ACTIVE``, ...).

    Raises
    ------
    ValueError
        If no event exists for ``status``.
    """
    return build_entry(
        detail_type=_detail_type(DATASTORE_DETAIL_TYPES, status, "data store"),
        resource_arn=datastore_arn(region=region, account=account, datastore_id=datastore_id),
        detail={"datastoreId": datastore_id, "datastoreName": datastore_name, "datastoreStatus": status},
        time=time,
        event_bus_name=event_bus_name,
    )


def import_job_entry(
    *,
    account: str,
    region: str,
    datastore_id: str,
    job_id: str,
    job_name: str | None,
    status: str,
    input_s3_uri: str,
    output_s3_uri: str,
    time: datetime | None = None,
    event_bus_name: str = "default",
) -> dict[str, Any]:
    """The entry for an import job entering ``status``; ``Resources`` holds the data store ARN.

    ``jobName`` is optional in ``StartDICOMImportJob``; a job started without one gets ``"jobName":
    null`` so that every import job event has the same keys.  ``outputS3Uri`` is the caller's prefix, as
    in the examples (spec 1.5), not the suffixed prefix ``GetDICOMImportJob`` returns.

    Raises
    ------
    ValueError
        If no event exists for ``status``.
    """
    return build_entry(
        detail_type=_detail_type(IMPORT_JOB_DETAIL_TYPES, status, "import job"),
        resource_arn=datastore_arn(region=region, account=account, datastore_id=datastore_id),
        detail={
            "datastoreId": datastore_id,
            "jobId": job_id,
            "jobName": job_name,
            "jobStatus": status,
            "inputS3Uri": input_s3_uri,
            "outputS3Uri": output_s3_uri,
        },
        time=time,
        event_bus_name=event_bus_name,
    )


def image_set_entry(
    *,
    account: str,
    region: str,
    datastore_id: str,
    image_set_id: str,
    state: str,
    workflow_status: str,
    time: datetime | None = None,
    event_bus_name: str = "default",
) -> dict[str, Any]:
    """The entry for an image set entering ``workflow_status``; ``Resources`` holds its image set ARN.

    The detail key is ``imagesetId`` (lower-case s), as in every example and field table (spec 1.3).

    Raises
    ------
    ValueError
        If no event exists for ``workflow_status``, or ``state`` is not ACTIVE, LOCKED or DELETED.
    """
    detail_type = _detail_type(IMAGE_SET_DETAIL_TYPES, workflow_status, "image set")
    if state not in IMAGE_SET_STATES:
        raise ValueError(f"unknown image set state {state!r}; known: {', '.join(IMAGE_SET_STATES)}")
    return build_entry(
        detail_type=detail_type,
        resource_arn=image_set_arn(
            region=region, account=account, datastore_id=datastore_id, image_set_id=image_set_id
        ),
        detail={
            "datastoreId": datastore_id,
            "imagesetId": image_set_id,
            "imageSetState": state,
            "imageSetWorkflowStatus": workflow_status,
        },
        time=time,
        event_bus_name=event_bus_name,
    )


_STOP: Final = object()


class EventPublisher:
    """Sends state-change events to EventBridge from a background thread.

    Parameters
    ----------
    events_client
        A boto3 ``events`` client, or ``None`` to turn publishing off (every method is then a no-op,
        though an unknown status still raises).
    account, region
        Used in the resource ARNs.
    event_bus_name
        The target bus (``default`` as the service uses).
    max_attempts
        ``PutEvents`` attempts per batch before the failed entries are logged and dropped.
    backoff
        Seconds before the first retry; doubled for each further one.

    Notes
    -----
    The entries are built (and ``Time`` stamped) in the caller's thread, then queued; one daemon thread,
    started on the first event, sends them in batches of up to 10.  Entries reported in
    ``FailedEntries`` and calls that raise are retried; nothing is ever raised into the caller.
    """

    def __init__(
        self,
        events_client: Any | None,
        *,
        account: str,
        region: str,
        event_bus_name: str = "default",
        max_attempts: int = 4,
        backoff: float = 0.1,
    ) -> None:
        if max_attempts < 1:
            raise ValueError("max_attempts must be at least 1")
        self._client = events_client
        self._account = account
        self._region = region
        self._event_bus_name = event_bus_name
        self._max_attempts = max_attempts
        self._backoff = backoff
        self._queue: queue.SimpleQueue[object] = queue.SimpleQueue()
        self._pending = 0
        self._idle = threading.Condition()
        self._thread: threading.Thread | None = None
        self._closed = False

    @property
    def enabled(self) -> bool:
        """Whether events are sent at all."""
        return self._client is not None

    # ---------------------------------------------------------------------------------------------
    # What the backend calls

    def datastore(self, *, datastore_id: str, datastore_name: str, status: str) -> None:
        """Announce that a data store entered ``status``."""
        self._publish(
            datastore_entry(
                account=self._account,
                region=self._region,
                datastore_id=datastore_id,
                datastore_name=datastore_name,
                status=status,
                time=datetime.now(UTC),
                event_bus_name=self._event_bus_name,
            )
        )

    def import_job(
        self,
        *,
        datastore_id: str,
        job_id: str,
        job_name: str | None,
        status: str,
        input_s3_uri: str,
        output_s3_uri: str,
    ) -> None:
        """Announce that an import job entered ``status``."""
        self._publish(
            import_job_entry(
                account=self._account,
                region=self._region,
                datastore_id=datastore_id,
                job_id=job_id,
                job_name=job_name,
                status=status,
                input_s3_uri=input_s3_uri,
                output_s3_uri=output_s3_uri,
                time=datetime.now(UTC),
                event_bus_name=self._event_bus_name,
            )
        )

    def image_set(self, *, datastore_id: str, image_set_id: str, state: str, workflow_status: str) -> None:
        """Announce that an image set entered ``workflow_status`` (with its ``state``)."""
        self._publish(
            image_set_entry(
                account=self._account,
                region=self._region,
                datastore_id=datastore_id,
                image_set_id=image_set_id,
                state=state,
                workflow_status=workflow_status,
                time=datetime.now(UTC),
                event_bus_name=self._event_bus_name,
            )
        )

    def flush(self, timeout: float = 10.0) -> None:
        """Wait until every queued event has been sent (or dropped), at most ``timeout`` seconds."""
        with self._idle:
            if not self._idle.wait_for(lambda: self._pending == 0, timeout=timeout):
                logger.warning("%d events still queued after waiting %.1f s", self._pending, timeout)

    def close(self) -> None:
        """Send what is queued, then stop the sending thread.  Later events are dropped with a warning."""
        with self._idle:
            if self._closed:
                return
            self._closed = True
            thread = self._thread
        if thread is None:
            return
        self._queue.put(_STOP)
        thread.join()

    # ---------------------------------------------------------------------------------------------
    # The queue and the sending thread

    def _publish(self, entry: dict[str, Any]) -> None:
        if self._client is None:
            return
        with self._idle:
            if self._closed:
                logger.warning("event publisher closed; dropping %s event", entry["DetailType"])
                return
            self._pending += 1
            if self._thread is None:
                self._thread = threading.Thread(target=self._run, name="medical-imaging-events", daemon=True)
                self._thread.start()
        self._queue.put(entry)

    def _run(self) -> None:
        stop = False
        while not stop:
            item = self._queue.get()
            batch: list[dict[str, Any]] = []
            while True:
                if item is _STOP:
                    stop = True
                elif isinstance(item, dict):
                    batch.append(item)
                if stop or len(batch) >= _MAX_BATCH:
                    break
                try:
                    item = self._queue.get_nowait()
                except queue.Empty:
                    break
            if batch:
                try:
                    self._send(batch)
                except Exception:
                    logger.exception("unexpected error sending %d events; dropped", len(batch))
                with self._idle:
                    self._pending -= len(batch)
                    self._idle.notify_all()

    def _send(self, entries: list[dict[str, Any]]) -> None:
        client = self._client
        assert client is not None  # only queued when publishing is on
        reason = ""
        for attempt in range(1, self._max_attempts + 1):
            try:
                response = client.put_events(Entries=entries)
            except (BotoCoreError, ClientError) as error:
                reason = f"{type(error).__name__}: {error}"
            else:
                if not response.get("FailedEntryCount"):
                    return
                results = response.get("Entries") or []
                failed = [e for e, r in zip(entries, results, strict=False) if r.get("ErrorCode")]
                reason = "; ".join(
                    f"{r.get('ErrorCode')}: {r.get('ErrorMessage')}" for r in results if r.get("ErrorCode")
                )
                entries = failed or entries
            if attempt < self._max_attempts:
                delay = self._backoff * 2 ** (attempt - 1)
                logger.info(
                    "PutEvents attempt %d failed (%s); retrying %d entries", attempt, reason, len(entries)
                )
                sleep(delay)
        logger.error(
            "dropping %d events (%s) after %d PutEvents attempts: %s",
            len(entries),
            ", ".join(e["DetailType"] for e in entries),
            self._max_attempts,
            reason,
        )

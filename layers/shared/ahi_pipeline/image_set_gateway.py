"""HealthImaging image sets for the de-identification, tagging and thumbnail stages: metadata, frames,
writes, tags.

UpdateImageSetMetadata, CopyImageSet and DeleteImageSet allow 0.25 calls per second (burst 1) and lock
the image set while they run.  botocore's adaptive retry mode (:mod:`ahi_pipeline.clients`) retries
``ThrottlingException``; this gateway adds a bounded retry with backoff for throttling that outlasted
botocore's attempts and for ``ServiceQuotaExceededException`` (100 concurrent updates per data store),
waits for the image set to leave LOCKED after each write, and counts every call by operation for the
stage's report.  ``ConflictException`` (the image set changed, or is locked by someone else) is raised
as :class:`ImageSetConflict` for the stage to re-read and re-plan.
"""

from __future__ import annotations

import gzip
import json
import time
from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, Final

from botocore.exceptions import ClientError

from ahi_pipeline.backoff import equal_jitter
from ahi_pipeline.clients import error_code

if TYPE_CHECKING:
    from mypy_boto3_medical_imaging import HealthImagingClient

    from ahi_pipeline.deid_plan import Payload

__all__ = ["FrameStream", "ImageSetConflict", "ImageSetGateway", "ImageSetProperties", "WriteFailed"]

_RETRYABLE: Final = frozenset(
    {"ThrottlingException", "ServiceQuotaExceededException", "InternalServerException"}
)


class ImageSetConflict(RuntimeError):  # noqa: N818 - the service's own word
    """ConflictException: the image set changed or is locked; re-read and re-plan."""


class WriteFailed(RuntimeError):  # noqa: N818 - mirrors UPDATE_FAILED / COPY_FAILED
    """A write ended in a failed workflow status; ``message`` is the service's reason."""

    def __init__(self, status: str, message: str) -> None:
        super().__init__(f"{status}: {message}")
        self.status = status
        self.message = message


@dataclass(frozen=True, slots=True)
class ImageSetProperties:
    image_set_id: str
    version_id: str
    state: str
    workflow_status: str
    arn: str | None = None
    message: str | None = None

    @classmethod
    def from_wire(cls, response: dict[str, Any]) -> ImageSetProperties:
        return cls(
            image_set_id=str(response["imageSetId"]),
            version_id=str(response["versionId"]),
            state=str(response["imageSetState"]),
            workflow_status=str(response.get("imageSetWorkflowStatus") or ""),
            arn=response.get("imageSetArn"),
            message=response.get("message"),
        )


@dataclass(frozen=True, slots=True)
class FrameStream:
    """A GetImageFrame response: the unread stream (read what you need, then close it)."""

    body: Any
    content_type: str | None
    #: The frame's size in bytes (the response's Content-Length), when the service sent it.
    length: int | None


class ImageSetGateway:
    """The HealthImaging calls of the stage.

    Parameters
    ----------
    client
        A boto3 ``medical-imaging`` client.
    attempts, base_delay, max_delay
        This gateway's own retries of throttling and quota errors (after botocore's).
    poll, timeout
        The longest pause between GetImageSet polls while a write runs (polls start at 50 ms and
        double), and how long to wait at most.
    sleep, clock
        Injected in unit tests.
    """

    def __init__(
        self,
        client: HealthImagingClient,
        *,
        attempts: int = 6,
        base_delay: float = 2.0,
        max_delay: float = 30.0,
        poll: float = 1.0,
        timeout: float = 120.0,
        sleep: Callable[[float], None] = time.sleep,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self._client = client
        self._attempts = attempts
        self._base_delay = base_delay
        self._max_delay = max_delay
        self._poll = poll
        self._timeout = timeout
        self._sleep = sleep
        self._clock = clock
        #: Calls made, by operation (botocore's own retries are not counted).
        self.calls: Counter[str] = Counter()

    # ------------------------------------------------------------------ reads
    def image_set(self, datastore_id: str, image_set_id: str) -> ImageSetProperties:
        self.calls["GetImageSet"] += 1
        response = self._client.get_image_set(datastoreId=datastore_id, imageSetId=image_set_id)
        return ImageSetProperties.from_wire(dict(response))

    def image_set_or_none(self, datastore_id: str, image_set_id: str) -> ImageSetProperties | None:
        """GetImageSet; ``None`` when the data store has no such image set."""
        try:
            return self.image_set(datastore_id, image_set_id)
        except ClientError as error:
            if error_code(error) == "ResourceNotFoundException":
                return None
            raise

    def metadata(self, datastore_id: str, image_set_id: str, version_id: str | None = None) -> dict[str, Any]:
        """GetImageSetMetadata, decompressed and parsed (the latest version unless ``version_id``)."""
        self.calls["GetImageSetMetadata"] += 1
        params: dict[str, Any] = {"datastoreId": datastore_id, "imageSetId": image_set_id}
        if version_id is not None:
            params["versionId"] = version_id
        response = self._client.get_image_set_metadata(**params)
        body = response["imageSetMetadataBlob"].read()
        if response.get("contentEncoding") == "gzip" or body[:2] == b"\x1f\x8b":
            body = gzip.decompress(body)
        document: dict[str, Any] = json.loads(body)
        return document

    def frame(self, datastore_id: str, image_set_id: str, frame_id: str) -> FrameStream:
        """GetImageFrame, not read: the caller reads as much of the frame as it needs."""
        self.calls["GetImageFrame"] += 1
        response = self._client.get_image_frame(
            datastoreId=datastore_id,
            imageSetId=image_set_id,
            imageFrameInformation={"imageFrameId": frame_id},
        )
        headers = response.get("ResponseMetadata", {}).get("HTTPHeaders", {})
        length = headers.get("content-length")
        return FrameStream(
            response["imageFrameBlob"],
            response.get("contentType"),
            int(length) if length and str(length).isdigit() else None,
        )

    def versions(self, datastore_id: str, image_set_id: str) -> list[dict[str, Any]]:
        self.calls["ListImageSetVersions"] += 1
        found: list[dict[str, Any]] = []
        for page in self._client.get_paginator("list_image_set_versions").paginate(
            datastoreId=datastore_id, imageSetId=image_set_id
        ):
            found += [dict(p) for p in page["imageSetPropertiesList"]]
        return found

    # ------------------------------------------------------------------ writes
    def update(self, datastore_id: str, image_set_id: str, latest_version: str, payload: Payload) -> str:
        """One UpdateImageSetMetadata; waits until the image set is ACTIVE again; the new version id.

        Raises
        ------
        ImageSetConflict
            The version is not the latest any more, or the image set is locked.
        WriteFailed
            The update ended UPDATE_FAILED (the service's message says why).
        """
        response = self._write(
            "UpdateImageSetMetadata",
            lambda: self._client.update_image_set_metadata(
                datastoreId=datastore_id,
                imageSetId=image_set_id,
                latestVersionId=latest_version,
                force=payload.force,
                updateImageSetMetadataUpdates=payload.as_updates(),  # type: ignore[arg-type]
            ),
        )
        version = str(response["latestVersionId"])
        self._settle(datastore_id, image_set_id, failed="UPDATE_FAILED")
        return version

    def copy(self, datastore_id: str, image_set_id: str, version_id: str) -> str:
        """CopyImageSet of one version into a new image set; waits for both to be ACTIVE; the new id."""
        response = self._write(
            "CopyImageSet",
            lambda: self._client.copy_image_set(
                datastoreId=datastore_id,
                sourceImageSetId=image_set_id,
                copyImageSetInformation={"sourceImageSet": {"latestVersionId": version_id}},
            ),
        )
        destination = str(response["destinationImageSetProperties"]["imageSetId"])
        self._settle(datastore_id, destination, failed="COPY_FAILED")
        self._settle(datastore_id, image_set_id, failed="COPY_FAILED")
        return destination

    def delete(self, datastore_id: str, image_set_id: str) -> None:
        """DeleteImageSet; waits until it is DELETED (or gone)."""
        self._write(
            "DeleteImageSet",
            lambda: self._client.delete_image_set(datastoreId=datastore_id, imageSetId=image_set_id),
        )
        deadline = self._clock() + self._timeout
        while self._clock() < deadline:
            try:
                properties = self.image_set(datastore_id, image_set_id)
            except ClientError as error:
                if error_code(error) == "ResourceNotFoundException":
                    return
                raise
            if properties.state == "DELETED":
                return
            self._sleep(min(self._poll, 0.2))
        raise TimeoutError(f"image set {image_set_id} not deleted after {self._timeout:.0f} s")

    def tag(self, arn: str, tags: dict[str, str]) -> None:
        self.calls["TagResource"] += 1
        self._client.tag_resource(resourceArn=arn, tags=tags)

    def tags(self, arn: str) -> dict[str, str]:
        self.calls["ListTagsForResource"] += 1
        return dict(self._client.list_tags_for_resource(resourceArn=arn).get("tags", {}))

    # ------------------------------------------------------------------ helpers
    def _write(self, operation: str, call: Callable[[], Any]) -> Any:
        attempt = 0
        while True:
            attempt += 1
            self.calls[operation] += 1
            try:
                return call()
            except ClientError as error:
                code = error_code(error)
                if code == "ConflictException":
                    raise ImageSetConflict(f"{operation}: {code}") from error
                if code not in _RETRYABLE or attempt >= self._attempts:
                    raise
                self._sleep(equal_jitter(attempt, self._base_delay, self._max_delay))

    def _settle(self, datastore_id: str, image_set_id: str, *, failed: str) -> ImageSetProperties:
        deadline = self._clock() + self._timeout
        pause = 0.05
        while True:
            properties = self.image_set(datastore_id, image_set_id)
            if properties.state != "LOCKED":
                if properties.workflow_status == failed:
                    raise WriteFailed(failed, properties.message or "no reason given")
                return properties
            if self._clock() > deadline:
                raise TimeoutError(f"image set {image_set_id} still LOCKED after {self._timeout:.0f} s")
            self._sleep(pause)
            pause = min(pause * 2, self._poll)

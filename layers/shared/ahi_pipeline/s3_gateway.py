"""S3 for the ingest stage: server-side copies of uploads into a batch folder, and JSON documents.

Copies go through s3transfer's TransferManager on a thread pool: ``CopyObject`` below
:data:`COPY_MULTIPART_THRESHOLD`, a parallel multipart copy (``UploadPartCopy``) above it, which is
also the only way past CopyObject's 5 GB limit.  The size and ETag come from the upload event, so no
``HeadObject`` precedes a copy.  An unversioned upload is copied with ``CopySourceIfMatch`` on its
ETag: if the key was overwritten since, the newer upload has its own event and this one is reported
as unavailable instead of importing the newer content twice.
"""

from __future__ import annotations

import json
from collections.abc import Iterator, Mapping, Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, Final

from botocore.exceptions import BotoCoreError, ClientError
from s3transfer.manager import TransferConfig, TransferManager
from s3transfer.subscribers import BaseSubscriber

from ahi_pipeline.clients import error_code

if TYPE_CHECKING:
    from mypy_boto3_s3 import S3Client

__all__ = [
    "COPY_MULTIPART_THRESHOLD",
    "CopyFailedError",
    "DocumentMissingError",
    "ObjectCopy",
    "S3Gateway",
]

#: Objects from this size on are copied in parallel parts of :data:`COPY_PART_SIZE`.
COPY_MULTIPART_THRESHOLD: Final = 256 * 1024**2
COPY_PART_SIZE: Final = 128 * 1024**2
COPY_THREADS: Final = 32
#: Bytes read at a time when an object is streamed line by line.
LINE_CHUNK: Final = 64 * 1024

#: Error codes meaning "this upload no longer exists as its event described it": final, not transient.
#: (``NoSuchBucket`` is not one: a missing bucket is a configuration error, and retried.)
_GONE: Final = frozenset(
    {"NoSuchKey", "NoSuchVersion", "404", "PreconditionFailed", "412", "InvalidObjectState"}
)


@dataclass(frozen=True, slots=True)
class ObjectCopy:
    """One server-side copy: an upload (at its version or ETag) to a key of the landing bucket."""

    object_id: str
    source_bucket: str
    source_key: str
    version_id: str | None
    etag: str | None
    size: int
    bucket: str
    key: str


class CopyFailedError(RuntimeError):
    """Some copies failed for a reason that may pass (throttling, access, service errors)."""

    def __init__(self, failures: Mapping[str, str]) -> None:
        self.failures = dict(failures)
        codes = sorted(set(self.failures.values()))
        super().__init__(f"{len(self.failures)} copies failed ({', '.join(codes)})")


class DocumentMissingError(LookupError):
    """The JSON document asked for does not exist."""


class _KnownObject(BaseSubscriber):
    """Tells s3transfer the source's size and ETag, so it skips its HeadObject.

    The ETag also guards every part of a multipart copy (``CopySourceIfMatch``).
    """

    def __init__(self, size: int, etag: str | None) -> None:
        self._size = size
        self._etag = etag

    def on_queued(self, future: Any, **kwargs: Any) -> None:
        future.meta.provide_transfer_size(self._size)
        if self._etag:
            future.meta.provide_object_etag(self._etag)


class S3Gateway:
    """The S3 calls of the ingest stage.

    Parameters
    ----------
    client
        A boto3 S3 client (its ``max_pool_connections`` should be at least ``threads``).
    threads, multipart_threshold, part_size
        Copy concurrency and multipart settings (tests lower the threshold to exercise multipart).
    """

    def __init__(
        self,
        client: S3Client,
        *,
        threads: int = COPY_THREADS,
        multipart_threshold: int = COPY_MULTIPART_THRESHOLD,
        part_size: int = COPY_PART_SIZE,
    ) -> None:
        self._client = client
        self._transfer_config = TransferConfig(
            multipart_threshold=multipart_threshold,
            multipart_chunksize=part_size,
            max_request_concurrency=threads,
        )

    def copy_objects(self, copies: Sequence[ObjectCopy]) -> dict[str, str]:
        """Copy every object; return ``{object_id: reason}`` for uploads that are gone.

        Raises
        ------
        CopyFailedError
            After every copy has finished, if any failed for another reason; the copies that
            succeeded are in place (a retry copies them again, harmlessly).
        """
        gone: dict[str, str] = {}
        failed: dict[str, str] = {}
        with TransferManager(self._client, self._transfer_config) as manager:
            futures = []
            for copy in copies:
                source: dict[str, str] = {"Bucket": copy.source_bucket, "Key": copy.source_key}
                extra: dict[str, str] = {}
                etag = f'"{copy.etag}"' if copy.etag else None
                if copy.version_id:
                    source["VersionId"] = copy.version_id
                elif etag:
                    extra["CopySourceIfMatch"] = etag
                future = manager.copy(
                    source,
                    copy.bucket,
                    copy.key,
                    extra_args=extra,
                    subscribers=[_KnownObject(copy.size, etag)],
                )
                futures.append((copy, future))
            for copy, future in futures:
                try:
                    future.result()
                except ClientError as error:
                    code = error_code(error)
                    if code in _GONE:
                        gone[copy.object_id] = f"the upload could not be copied: {code}"
                    else:
                        failed[copy.object_id] = code
                except BotoCoreError as error:
                    failed[copy.object_id] = error_code(error)
        if failed:
            raise CopyFailedError(failed)
        return gone

    def put_json(self, bucket: str, key: str, document: Mapping[str, Any]) -> None:
        body = json.dumps(document, separators=(",", ":"), ensure_ascii=False).encode()
        self._client.put_object(Bucket=bucket, Key=key, Body=body, ContentType="application/json")

    def get_json(self, bucket: str, key: str) -> dict[str, Any]:
        """The JSON object stored at ``key``.

        Raises
        ------
        DocumentMissingError
            When there is no such object.
        """
        response = self._get(bucket, key)
        try:
            document = json.loads(response["Body"].read())
        except ValueError as error:
            raise ValueError(f"s3://{bucket}/{key} is not valid JSON (truncated or corrupt?)") from error
        if not isinstance(document, dict):
            raise ValueError(f"s3://{bucket}/{key} is not a JSON object")
        return document

    def lines(self, bucket: str, key: str, *, chunk_size: int = LINE_CHUNK) -> Iterator[bytes]:
        """The lines of an object, streamed ``chunk_size`` bytes at a time (never the whole object).

        Raises
        ------
        DocumentMissingError
            When there is no such object (raised on the first ``next``).
        """
        body = self._get(bucket, key)["Body"]
        try:
            yield from body.iter_lines(chunk_size=chunk_size)
        finally:
            body.close()

    def _get(self, bucket: str, key: str) -> Any:
        try:
            return self._client.get_object(Bucket=bucket, Key=key)
        except ClientError as error:
            if error_code(error) in ("NoSuchKey", "404"):
                raise DocumentMissingError(f"s3://{bucket}/{key} does not exist") from error
            raise

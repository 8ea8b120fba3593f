"""Parse the edge: SQS messages carrying S3 "Object Created" events from EventBridge → typed uploads.

UploadQueue receives what the EventBridge rule forwards: each message body is one EventBridge event from
S3 (``source: aws.s3``).  Each SQS record becomes exactly one of

* :class:`UploadMessage`: an object was created (bucket, key, size, ETag, version id);
* :class:`IgnoredMessage`: a well-formed S3 event of another kind (``Object Deleted``, …), nothing to do;
* :class:`PoisonMessage`: anything else (not JSON, not from S3, a field missing or of the wrong type).

Keys in EventBridge events are plain (not URL-encoded like S3's own notifications), so they are used
as they are: decoding would corrupt a key containing ``+`` or ``%``.  Pure: no I/O, no clock.
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any, Final

__all__ = [
    "IgnoredMessage",
    "Message",
    "PoisonMessage",
    "Upload",
    "UploadMessage",
    "parse_sqs_event",
    "parse_upload_message",
]

OBJECT_CREATED: Final = "Object Created"
S3_SOURCE: Final = "aws.s3"


@dataclass(frozen=True, slots=True)
class Upload:
    """One created S3 object, as its event describes it.

    ``version_id`` is set when the bucket is versioned; otherwise the ETag tells two uploads of the
    same key apart.
    """

    bucket: str
    key: str
    size: int
    etag: str | None = None
    version_id: str | None = None

    @property
    def identity(self) -> tuple[str, str, str]:
        """``(bucket, key, "v:<version>" or "e:<etag>")``: what makes two uploads the same upload."""
        revision = f"v:{self.version_id}" if self.version_id else f"e:{self.etag}"
        return (self.bucket, self.key, revision)

    @property
    def object_id(self) -> str:
        """A stable id of the upload (128-bit hash of its identity), safe to log: no key, no PHI."""
        return hashlib.sha256("\x00".join(self.identity).encode()).hexdigest()[:32]


@dataclass(frozen=True, slots=True)
class UploadMessage:
    message_id: str
    upload: Upload


@dataclass(frozen=True, slots=True)
class IgnoredMessage:
    """A valid S3 event that does not create an object; acknowledged with a log line."""

    message_id: str
    reason: str


@dataclass(frozen=True, slots=True)
class PoisonMessage:
    """A message that is not an S3 EventBridge event; it fails alone and ends in the dead-letter queue."""

    message_id: str
    reason: str


Message = UploadMessage | IgnoredMessage | PoisonMessage


class _InvalidEventError(ValueError):
    pass


def parse_sqs_event(event: Mapping[str, Any]) -> list[Message]:
    """Every record of an SQS event, in order, as an upload, an ignored event or a poison message.

    Raises
    ------
    ValueError
        When ``event`` itself is not an SQS event (no ``Records`` list, or a record without
        ``messageId``): without message ids, no partial batch response can be given.
    """
    records = event.get("Records")
    if not isinstance(records, list):
        raise ValueError("not an SQS event: 'Records' is missing or not a list")
    messages: list[Message] = []
    for record in records:
        message_id = record.get("messageId") if isinstance(record, dict) else None
        if not isinstance(message_id, str) or not message_id:
            raise ValueError("not an SQS event: a record has no 'messageId'")
        body = record.get("body")
        messages.append(parse_upload_message(message_id, body if isinstance(body, str) else None))
    return messages


def parse_upload_message(message_id: str, body: str | None) -> Message:
    """One SQS message body → :data:`Message`."""
    try:
        document = json.loads(body) if body is not None else None
    except ValueError:
        return PoisonMessage(message_id, "the message body is not JSON")
    try:
        return _parse_event(message_id, document)
    except _InvalidEventError as problem:
        return PoisonMessage(message_id, str(problem))


def _parse_event(message_id: str, document: Any) -> Message:
    if not isinstance(document, dict):
        raise _InvalidEventError("the message body is not a JSON object")
    if "Records" in document and "detail" not in document:
        raise _InvalidEventError("an S3 notification (Records), not an EventBridge event from S3")
    source = document.get("source")
    if source != S3_SOURCE:
        raise _InvalidEventError(f"not an S3 event: source is {_shown(source)}, expected {S3_SOURCE!r}")
    detail_type = document.get("detail-type")
    if not isinstance(detail_type, str):
        raise _InvalidEventError("detail-type is missing")
    detail = _object(document, "detail")
    if detail_type != OBJECT_CREATED:
        return IgnoredMessage(message_id, f"an S3 {detail_type!r} event, not {OBJECT_CREATED!r}")
    bucket = _text(_object(detail, "bucket", "detail."), "name", "detail.bucket.")
    obj = _object(detail, "object", "detail.")
    key = _text(obj, "key", "detail.object.")
    size = obj.get("size")
    if isinstance(size, bool) or not isinstance(size, int) or size < 0:
        raise _InvalidEventError(f"detail.object.size must be a non-negative integer; got {_shown(size)}")
    etag = _optional_text(obj, "etag", "eTag")
    version_id = _optional_text(obj, "version-id", "versionId")
    if etag is None and version_id is None:
        raise _InvalidEventError(
            "detail.object has neither etag nor version-id: two uploads could not be told apart"
        )
    return UploadMessage(message_id, Upload(bucket, key, size, etag, version_id))


def _object(parent: Mapping[str, Any], name: str, path: str = "") -> Mapping[str, Any]:
    value = parent.get(name)
    if not isinstance(value, dict):
        raise _InvalidEventError(f"{path}{name} is missing or not an object")
    return value


def _text(parent: Mapping[str, Any], name: str, path: str) -> str:
    value = parent.get(name)
    if not isinstance(value, str) or not value:
        raise _InvalidEventError(f"{path}{name} is missing or not a non-empty string")
    return value


def _optional_text(parent: Mapping[str, Any], *names: str) -> str | None:
    for name in names:
        value = parent.get(name)
        if value is None or value == "":
            continue
        if not isinstance(value, str):
            raise _InvalidEventError(f"detail.object.{name} must be a string; got {_shown(value)}")
        return value.strip('"')
    return None


def _shown(value: Any) -> str:
    """A short, safe rendering of an unexpected value for an error message (types, not content)."""
    if value is None:
        return "missing"
    if isinstance(value, str) and len(value) <= 40 and value.isprintable():
        return repr(value)
    return f"a {type(value).__name__}"

"""Batching rules of the ingest stage: which uploads are accepted, batches, batch ids, staged keys.

Pure functions over :class:`~ahi_pipeline.uploads.Upload` values; no I/O, no clock, no randomness.

* An upload is **accepted** when it is in the landing bucket under ``incoming/``, is not a folder marker,
  is not empty and fits an import job (≤ 4 GiB, the service's per-file limit, and ≤ the batch byte limit).
* Accepted uploads are de-duplicated by identity (bucket, key, version id or ETag), **sorted by key**, and
  cut greedily into batches of at most ``max_files`` files and ``max_bytes`` bytes.  The same set of
  uploads therefore always gives the same batches, whatever order or duplicates the messages came in.
* A **batch id** is a hash of its members' identities: 40 hex digits, a valid ``clientToken``
  (``[A-Za-z0-9._-]{1,64}``) and S3 folder name.  A redelivered message yields the same id, so the
  service's ``clientToken`` idempotency never starts a second job for it.
* A member is staged at ``staging/<batchId>/<its key relative to incoming/>``, sanitised so that every
  path segment is made of S3's safe characters: no ``.`` or ``..`` segment (which S3 clients and URL
  normalisers may collapse, escaping the batch folder), no empty segment, no spaces or non-ASCII.  A key
  that had to change gets a short hash of the original, so two keys never collide; the batch manifest
  keeps the mapping back to the original key.
"""

from __future__ import annotations

import enum
import hashlib
import re
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from typing import Final

from ahi_pipeline.settings import FILE_MAX_BYTES, Settings
from ahi_pipeline.uploads import Upload

__all__ = [
    "MAX_KEY_BYTES",
    "Batch",
    "Limits",
    "Member",
    "SkipReason",
    "batch_id_of",
    "plan_batches",
    "sanitize_relative_key",
    "skip_reason",
    "staged_relative_keys",
]

#: S3's limit on a key, in UTF-8 bytes.
MAX_KEY_BYTES: Final = 1024
#: Characters S3 documents as safe in keys (besides ``/``).
_UNSAFE = re.compile(r"[^A-Za-z0-9!_.*'()-]")
_HASH_DIGITS: Final = 12
_LONG_SEGMENT_BYTES: Final = 200


class SkipReason(enum.StrEnum):
    """Why an upload is not imported; logged and counted, never silently dropped."""

    OTHER_BUCKET = "not in the landing bucket"
    OUTSIDE_PREFIX = "not under the incoming prefix"
    FOLDER_MARKER = "a folder marker (key ends with '/')"
    EMPTY = "a zero-byte object"
    TOO_LARGE_FOR_SERVICE = "larger than the 4 GiB an import accepts per file"
    TOO_LARGE_FOR_BATCH = "larger than MAX_BYTES_PER_JOB"


@dataclass(frozen=True, slots=True)
class Limits:
    """Batch limits and where uploads are expected."""

    landing_bucket: str
    incoming_prefix: str
    max_files: int
    max_bytes: int
    staging_prefix: str = "staging/"

    @property
    def key_budget(self) -> int:
        """UTF-8 bytes left for a staged key below ``staging/<batchId>/``, keeping room for a suffix."""
        return MAX_KEY_BYTES - len(self.staging_prefix.encode()) - 41 - (1 + _HASH_DIGITS)

    @classmethod
    def of(cls, settings: Settings) -> Limits:
        return cls(
            landing_bucket=settings.landing_bucket,
            incoming_prefix=settings.incoming_prefix,
            max_files=settings.max_files_per_job,
            max_bytes=settings.max_bytes_per_job,
            staging_prefix=settings.staging_prefix,
        )


@dataclass(frozen=True, slots=True)
class Member:
    """An upload placed in a batch, with its key relative to the batch's staging folder."""

    upload: Upload
    staged_relative_key: str

    @property
    def object_id(self) -> str:
        return self.upload.object_id


@dataclass(frozen=True, slots=True)
class Batch:
    """Uploads that go to one import job, in key order."""

    batch_id: str
    members: tuple[Member, ...]

    @property
    def files(self) -> int:
        return len(self.members)

    @property
    def bytes(self) -> int:
        return sum(member.upload.size for member in self.members)


def skip_reason(upload: Upload, limits: Limits) -> SkipReason | None:
    """Why ``upload`` is not imported, or None when it is accepted (first failing rule, in order)."""
    rules = (
        (upload.bucket != limits.landing_bucket, SkipReason.OTHER_BUCKET),
        (not upload.key.startswith(limits.incoming_prefix), SkipReason.OUTSIDE_PREFIX),
        (upload.key.endswith("/"), SkipReason.FOLDER_MARKER),
        (upload.size == 0, SkipReason.EMPTY),
        (upload.size > FILE_MAX_BYTES, SkipReason.TOO_LARGE_FOR_SERVICE),
        (upload.size > limits.max_bytes, SkipReason.TOO_LARGE_FOR_BATCH),
    )
    return next((reason for broken, reason in rules if broken), None)


def _order(upload: Upload) -> tuple[str, str, str]:
    bucket, key, revision = upload.identity
    return (key, bucket, revision)


def plan_batches(uploads: Iterable[Upload], limits: Limits) -> list[Batch]:
    """Cut accepted uploads into batches within the limits (see the module docstring).

    Every upload must be accepted (:func:`skip_reason` is None); duplicates are merged.
    """
    unique: list[Upload] = []
    # Sorted on every field, so which of two events for one identity is kept never depends on order.
    for upload in sorted(uploads, key=lambda u: (_order(u), u.size, u.etag or "", u.version_id or "")):
        if not unique or unique[-1].identity != upload.identity:
            unique.append(upload)
    groups: list[list[Upload]] = []
    files = size = 0
    for upload in unique:
        if upload.size > limits.max_bytes:
            raise ValueError("an upload larger than the batch byte limit cannot be batched")
        if not groups or files + 1 > limits.max_files or size + upload.size > limits.max_bytes:
            groups.append([])
            files = size = 0
        groups[-1].append(upload)
        files += 1
        size += upload.size
    return [_batch(group, limits) for group in groups]


def _batch(uploads: Sequence[Upload], limits: Limits) -> Batch:
    batch_id = batch_id_of(uploads)
    relatives = staged_relative_keys(uploads, limits.incoming_prefix, limits.key_budget)
    return Batch(batch_id, tuple(Member(u, r) for u, r in zip(uploads, relatives, strict=True)))


def batch_id_of(uploads: Iterable[Upload]) -> str:
    """40 hex digits of SHA-256 over the sorted member identities (order and duplicates do not matter)."""
    digest = hashlib.sha256()
    for identity in sorted({upload.identity for upload in uploads}):
        for part in identity:
            digest.update(part.encode())
            digest.update(b"\x00")
        digest.update(b"\x01")
    return digest.hexdigest()[:40]


def staged_relative_keys(uploads: Sequence[Upload], incoming_prefix: str, budget: int = 900) -> list[str]:
    """Keys of ``uploads`` (one batch, in order) relative to the batch folder, unique within it.

    Two members can only share a sanitised key when they are versions of one key (or ETags of one
    unversioned key); the later ones then get their object id appended.
    """
    keys: list[str] = []
    seen: set[str] = set()
    for upload in uploads:
        relative = sanitize_relative_key(upload.key.removeprefix(incoming_prefix), budget)
        if relative in seen:
            relative = f"{relative}~{upload.object_id[:_HASH_DIGITS]}"
        seen.add(relative)
        keys.append(relative)
    return keys


def sanitize_relative_key(relative: str, budget: int = 900) -> str:
    """A safe key below a batch folder for ``relative`` (a key below ``incoming/``).

    Each ``/``-separated segment keeps S3's safe characters (``A-Z a-z 0-9 ! _ . * ' ( ) -``); others
    become ``_``; empty, ``.`` and ``..`` segments become ``_``, ``_.`` and ``_..``, so no segment can
    refer to a parent folder.  If anything changed, ``~`` and 12 hex digits of the original's SHA-256
    are appended, so distinct originals stay distinct.  Keys longer than ``budget`` UTF-8 bytes (what is
    left of S3's 1,024 after the batch folder) keep a hash and the end of their file name.
    """
    segments = []
    for segment in relative.split("/"):
        clean = _UNSAFE.sub("_", segment)
        if clean in ("", ".", ".."):
            clean = "_" + clean
        if len(clean) > _LONG_SEGMENT_BYTES:
            clean = clean[:_LONG_SEGMENT_BYTES]
        segments.append(clean)
    sanitized = "/".join(segments)
    if sanitized == relative and len(sanitized) <= budget:
        return sanitized
    digest = hashlib.sha256(relative.encode()).hexdigest()[:_HASH_DIGITS]
    result = f"{sanitized}~{digest}"
    if len(result) > budget:
        tail = segments[-1][-(budget // 4) :]
        result = f"_long/{digest}-{tail}"
    return result

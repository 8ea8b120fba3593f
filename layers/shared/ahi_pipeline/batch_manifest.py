"""The member list of a batch, as the JSON document kept at ``s3://<output>/batches/<batchId>.json``.

A batch of 5,000 keys does not fit DynamoDB's 400 KB item limit, so the batch's item references this
document instead.  It maps every staged key (what the import job reports as ``inputFile`` in
``SUCCESS/success.ndjson`` and ``FAILURE/failure.ndjson``) back to the original upload (bucket, key,
version id, ETag), and after staging records each member's status.  StartImport reads it back to resume
a batch whose messages were redelivered.  Pure: dicts in, dicts out.

Example::

    {"schemaVersion": 1, "batchId": "…40 hex…", "inputS3Uri": "s3://landing/staging/…/",
     "files": 2, "bytes": 1052,
     "members": [{"objectId": "…", "bucket": "landing", "key": "incoming/a b.dcm", "versionId": null,
                  "etag": "…", "size": 526, "stagedKey": "staging/…/a_b.dcm~…", "status": "staged"}, …]}
"""

from __future__ import annotations

import enum
from collections.abc import Mapping
from typing import Any, Final

from ahi_pipeline.batching import Batch, Member, batch_id_of
from ahi_pipeline.uploads import Upload

__all__ = ["SCHEMA_VERSION", "ManifestError", "MemberStatus", "batch_from_manifest", "manifest_document"]

SCHEMA_VERSION: Final = 1


class MemberStatus(enum.StrEnum):
    PLANNED = "planned"
    STAGED = "staged"
    UNAVAILABLE = "unavailable"  # the upload could not be copied (deleted, replaced): see "reason"


class ManifestError(ValueError):
    """A manifest that does not describe a batch (wrong schema, or members that do not hash to its id)."""


def manifest_document(
    batch: Batch,
    *,
    staging_folder: str,
    input_s3_uri: str,
    unavailable: Mapping[str, str] | None = None,
    staged: bool = False,
) -> dict[str, Any]:
    """The manifest of ``batch``; with ``staged``, each member's status (``unavailable``: id → reason)."""
    unavailable = unavailable or {}
    members = []
    for member in batch.members:
        upload = member.upload
        entry: dict[str, Any] = {
            "objectId": member.object_id,
            "bucket": upload.bucket,
            "key": upload.key,
            "versionId": upload.version_id,
            "etag": upload.etag,
            "size": upload.size,
            "stagedKey": staging_folder + member.staged_relative_key,
            "status": MemberStatus.PLANNED.value,
        }
        if staged:
            reason = unavailable.get(member.object_id)
            entry["status"] = (MemberStatus.UNAVAILABLE if reason else MemberStatus.STAGED).value
            if reason:
                entry["reason"] = reason
        members.append(entry)
    return {
        "schemaVersion": SCHEMA_VERSION,
        "batchId": batch.batch_id,
        "inputS3Uri": input_s3_uri,
        "files": batch.files,
        "bytes": batch.bytes,
        "members": members,
    }


def batch_from_manifest(document: Mapping[str, Any], *, staging_folder: str) -> Batch:
    """The batch a manifest describes.

    Raises
    ------
    ManifestError
        For another schema version, malformed members, or members whose identities do not hash to
        ``batchId``.
    """
    if document.get("schemaVersion") != SCHEMA_VERSION:
        raise ManifestError(f"unsupported manifest schemaVersion {document.get('schemaVersion')!r}")
    batch_id = document.get("batchId")
    entries = document.get("members")
    if not isinstance(batch_id, str) or not isinstance(entries, list) or not entries:
        raise ManifestError("a manifest needs a batchId and a non-empty members list")
    members = []
    try:
        for entry in entries:
            upload = Upload(
                bucket=str(entry["bucket"]),
                key=str(entry["key"]),
                size=int(entry["size"]),
                etag=entry.get("etag"),
                version_id=entry.get("versionId"),
            )
            staged_key = str(entry["stagedKey"])
            if not staged_key.startswith(staging_folder):
                raise ManifestError(f"member {upload.object_id} is staged outside {staging_folder}")
            members.append(Member(upload, staged_key.removeprefix(staging_folder)))
    except (KeyError, TypeError, ValueError) as error:
        if isinstance(error, ManifestError):
            raise
        raise ManifestError(f"malformed manifest member: {error!r}") from error
    if batch_id_of(m.upload for m in members) != batch_id:
        raise ManifestError(f"the members of manifest {batch_id} do not hash to its batch id")
    return Batch(batch_id, tuple(members))

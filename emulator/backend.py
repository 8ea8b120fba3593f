"""State and rules of the emulated service: one method per API operation, no HTTP.

Methods take the validated request parameters (as ``emulator.protocol`` parses them) plus the caller's
``RequestContext`` and return the operation's output members.  Resources move through the service's
state tables (spec §1.7 and platform §1):

* data store: CREATING → ACTIVE; ACTIVE → DELETING → DELETED
* import job: SUBMITTED → IN_PROGRESS → COMPLETED | FAILED (``emulator.importer``)
* image set: ACTIVE ↔ LOCKED with workflow status CREATED, UPDATING → UPDATED | UPDATE_FAILED,
  COPYING / COPYING_WITH_READ_ONLY_ACCESS → COPIED | COPY_FAILED, DELETING → DELETED

Every write on a LOCKED image set is refused with ConflictException, and every change emits the
EventBridge event the service emits.
"""

from __future__ import annotations

import hashlib
import json
import secrets
import sqlite3
import threading
from collections.abc import Iterator, Mapping
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import Any

import boto3
from botocore.config import Config

from emulator import image_set_copy, metadata_update, search
from emulator.config import EmulatorConfig
from emulator.events import EventPublisher
from emulator.exceptions import (
    ConflictException,
    ResourceNotFoundException,
    ServiceError,
    ServiceQuotaExceededException,
    ValidationException,
)
from emulator.imaging.stored_syntax import frame_content_type
from emulator.protocol import StreamingBody
from emulator.scheduler import Scheduler
from emulator.store import Store, compress_document, decompress_document, now, to_datetime

ARCHIVE_AFTER = timedelta(days=30)
_FRAME_ID_CACHE_SIZE = 1024  # versions whose frame ids are kept (oldest dropped first)
_UNSUPPORTED = "is not supported by the HealthImaging emulator"


@dataclass(frozen=True)
class RequestContext:
    """Who is calling and where: the account and the Region of the request's signature."""

    account: str
    region: str


@dataclass(frozen=True)
class ImageSetView:
    """An image set as search sees it (``emulator.search.SearchableImageSet``)."""

    image_set_id: str
    version: int
    created_at: datetime
    updated_at: datetime
    is_primary: bool
    document: Mapping[str, Any]
    last_accessed_at: datetime | None = None

    @property
    def storage_tier(self) -> str:
        return storage_tier(self.last_accessed_at)


def new_id() -> str:
    """A 32-character lowercase hex identifier, the service's format for every id."""
    return secrets.token_hex(16)


def storage_tier(last_accessed: datetime | None) -> str:
    """FREQUENT_ACCESS until 30 days pass without a touch, then ARCHIVE_INSTANT_ACCESS (spec §1.10)."""
    if last_accessed is None or datetime.now(UTC) - last_accessed < ARCHIVE_AFTER:
        return "FREQUENT_ACCESS"
    return "ARCHIVE_INSTANT_ACCESS"


def _request_hash(params: Mapping[str, Any]) -> str:
    canonical = json.dumps(
        {k: v for k, v in params.items() if k != "clientToken"}, sort_keys=True, default=str
    )
    return hashlib.sha256(canonical.encode()).hexdigest()


class Backend:
    """The emulated HealthImaging service for every account and Region of one emulator."""

    def __init__(self, config: EmulatorConfig, store: Store, scheduler: Scheduler) -> None:
        self.config = config
        self.store = store
        self.scheduler = scheduler
        self.quotas = config.quotas
        self._events_client: Any = None
        self._publishers: dict[tuple[str, str], EventPublisher] = {}
        self._publishers_lock = threading.Lock()
        self._frame_id_cache: dict[tuple[str, int], dict[str, str]] = {}

    # ------------------------------------------------------------------ plumbing
    def s3_client(self) -> Any:
        """A boto3 S3 client for reading inputs and writing results (endpoint from config or env)."""
        return boto3.client(
            "s3",
            region_name=self.config.region,
            endpoint_url=self.config.s3_endpoint_url,
            config=Config(retries={"mode": "standard", "max_attempts": 5}),
        )

    def events(self, account: str, region: str) -> EventPublisher:
        """The event publisher for a data store's account and Region (a no-op when events are off)."""
        key = (account, region)
        with self._publishers_lock:
            return self._publishers.get(key) or self._new_publisher(key)

    def _new_publisher(self, key: tuple[str, str]) -> EventPublisher:
        account, region = key
        client = None
        if self.config.events:
            client = boto3.client("events", region_name=region, endpoint_url=self.config.events_endpoint_url)
        publisher = EventPublisher(
            client, account=account, region=region, event_bus_name=self.config.event_bus_name
        )
        self._publishers[key] = publisher
        return publisher

    def close(self) -> None:
        for publisher in self._publishers.values():
            publisher.close()

    def flush_events(self) -> None:
        for publisher in self._publishers.values():
            publisher.flush()

    def recover(self) -> None:
        """Finish, after a restart, whatever was in flight when the emulator stopped."""
        for row in self.store.query("SELECT * FROM datastores WHERE status IN ('CREATING', 'DELETING')"):
            target = "ACTIVE" if row["status"] == "CREATING" else "DELETED"
            self._set_datastore_status(row["id"], target)
        for row in self.store.query("SELECT * FROM image_sets WHERE state = 'LOCKED'"):
            self._finish_lock(row["id"])
        for row in self.store.query("SELECT id FROM jobs WHERE status IN ('SUBMITTED', 'IN_PROGRESS')"):
            self.store.execute("UPDATE jobs SET status = 'SUBMITTED' WHERE id = ?", (row["id"],))
            self._queue_import(row["id"])

    # ------------------------------------------------------------------ data stores
    def _datastore_row(self, ctx: RequestContext, datastore_id: str) -> sqlite3.Row:
        row = self.store.one(
            "SELECT * FROM datastores WHERE id = ? AND account = ? AND region = ?",
            (datastore_id, ctx.account, ctx.region),
        )
        if row is None or row["status"] == "DELETED":
            raise ResourceNotFoundException(f"Datastore {datastore_id} does not exist")
        return row

    def _active_datastore(self, ctx: RequestContext, datastore_id: str) -> sqlite3.Row:
        row = self._datastore_row(ctx, datastore_id)
        if row["status"] != "ACTIVE":
            raise ConflictException(f"Datastore {datastore_id} is not ACTIVE (status {row['status']})")
        return row

    def datastore_arn(self, row: sqlite3.Row) -> str:
        return f"arn:aws:medical-imaging:{row['region']}:{row['account']}:datastore/{row['id']}"

    def create_datastore(self, ctx: RequestContext, **params: Any) -> dict[str, Any]:
        token = params.get("clientToken")
        request_hash = _request_hash(params)
        if token:
            existing = self.store.one(
                "SELECT * FROM datastores WHERE client_token = ? AND account = ? AND region = ?",
                (token, ctx.account, ctx.region),
            )
            if existing is not None:
                if existing["request_hash"] != request_hash:
                    raise ConflictException("clientToken was already used with different parameters")
                return {"datastoreId": existing["id"], "datastoreStatus": existing["status"]}
        if params.get("losslessStorageFormat", "HTJ2K") != "HTJ2K":
            raise ValidationException(
                f"losslessStorageFormat {params['losslessStorageFormat']} {_UNSUPPORTED}"
            )
        if params.get("lambdaAuthorizerArn"):
            raise ValidationException(f"lambdaAuthorizerArn (DICOMweb authorization) {_UNSUPPORTED}")
        self._check_tags(params.get("tags") or {}, existing=0)
        datastore_id = new_id()
        stamp = now()
        with self.store.transaction() as db:
            (active,) = db.execute(
                "SELECT COUNT(*) FROM datastores WHERE account = ? AND region = ? "
                "AND status IN ('CREATING', 'ACTIVE', 'DELETING')",
                (ctx.account, ctx.region),
            ).fetchone()
            if active >= self.quotas.active_datastores:
                raise ServiceQuotaExceededException(
                    f"The quota of {self.quotas.active_datastores} active data stores per Region is reached"
                )
            db.execute(
                "INSERT INTO datastores VALUES (?, ?, ?, ?, 'CREATING', ?, NULL, 'HTJ2K', ?, ?, ?, ?)",
                (
                    datastore_id,
                    ctx.account,
                    ctx.region,
                    params["datastoreName"],
                    params.get("kmsKeyArn"),
                    token,
                    request_hash,
                    stamp,
                    stamp,
                ),
            )
            arn = f"arn:aws:medical-imaging:{ctx.region}:{ctx.account}:datastore/{datastore_id}"
            for key, value in (params.get("tags") or {}).items():
                db.execute("INSERT INTO tags VALUES (?, ?, ?)", (arn, key, value))
        self.events(ctx.account, ctx.region).datastore(
            datastore_id=datastore_id, datastore_name=params["datastoreName"], status="CREATING"
        )
        self.scheduler.later(
            self.config.transition_delay, lambda: self._set_datastore_status(datastore_id, "ACTIVE")
        )
        return {"datastoreId": datastore_id, "datastoreStatus": "CREATING"}

    def _set_datastore_status(self, datastore_id: str, status: str) -> None:
        self.store.execute(
            "UPDATE datastores SET status = ?, updated_at = ? WHERE id = ?", (status, now(), datastore_id)
        )
        row = self.store.one("SELECT * FROM datastores WHERE id = ?", (datastore_id,))
        if row is not None:
            self.events(row["account"], row["region"]).datastore(
                datastore_id=datastore_id, datastore_name=row["name"], status=status
            )

    def _datastore_properties(self, row: sqlite3.Row) -> dict[str, Any]:
        return {
            "datastoreId": row["id"],
            "datastoreName": row["name"],
            "datastoreStatus": row["status"],
            "kmsKeyArn": row["kms_key_arn"],
            "losslessStorageFormat": row["lossless_storage_format"],
            "datastoreArn": self.datastore_arn(row),
            "createdAt": to_datetime(row["created_at"]),
            "updatedAt": to_datetime(row["updated_at"]),
        }

    def get_datastore(self, ctx: RequestContext, **params: Any) -> dict[str, Any]:
        row = self._datastore_row(ctx, params["datastoreId"])
        return {"datastoreProperties": self._datastore_properties(row)}

    def list_datastores(self, ctx: RequestContext, **params: Any) -> dict[str, Any]:
        status = params.get("datastoreStatus")
        rows = self.store.query(
            "SELECT * FROM datastores WHERE account = ? AND region = ? ORDER BY created_at, id",
            (ctx.account, ctx.region),
        )
        rows = [r for r in rows if (r["status"] == status if status else r["status"] != "DELETED")]
        page, token = search.paginate(
            rows,
            max_results=params.get("maxResults"),
            next_token=params.get("nextToken"),
            default_max=50,
            scope=f"ListDatastores/{ctx.account}/{ctx.region}/{status}",
        )
        summaries = [
            {
                k: v
                for k, v in self._datastore_properties(r).items()
                if k not in ("kmsKeyArn", "losslessStorageFormat")
            }
            for r in page
        ]
        return {"datastoreSummaries": summaries, "nextToken": token}

    def delete_datastore(self, ctx: RequestContext, **params: Any) -> dict[str, Any]:
        datastore_id = params["datastoreId"]
        with self.store.transaction() as db:
            row = self._datastore_row(ctx, datastore_id)
            if row["status"] != "ACTIVE":
                raise ConflictException(f"Datastore {datastore_id} cannot be deleted while {row['status']}")
            (remaining,) = db.execute(
                "SELECT COUNT(*) FROM image_sets WHERE datastore_id = ? AND state != 'DELETED'",
                (datastore_id,),
            ).fetchone()
            if remaining:
                raise ConflictException(
                    f"Datastore {datastore_id} still contains {remaining} image set(s); delete them first"
                )
            (running,) = db.execute(
                "SELECT COUNT(*) FROM jobs WHERE datastore_id = ? AND status IN ('SUBMITTED', 'IN_PROGRESS')",
                (datastore_id,),
            ).fetchone()
            if running:
                raise ConflictException(f"Datastore {datastore_id} has {running} import job(s) in progress")
            db.execute(
                "UPDATE datastores SET status = 'DELETING', updated_at = ? WHERE id = ?",
                (now(), datastore_id),
            )
        self.events(ctx.account, ctx.region).datastore(
            datastore_id=datastore_id, datastore_name=row["name"], status="DELETING"
        )
        self.scheduler.later(
            self.config.transition_delay, lambda: self._set_datastore_status(datastore_id, "DELETED")
        )
        return {"datastoreId": datastore_id, "datastoreStatus": "DELETING"}

    # ------------------------------------------------------------------ import jobs
    def start_dicom_import_job(self, ctx: RequestContext, **params: Any) -> dict[str, Any]:
        datastore = self._active_datastore(ctx, params["datastoreId"])
        if params.get("importConfiguration"):
            raise ValidationException(f"importConfiguration {_UNSUPPORTED}")
        for member in ("inputS3Uri", "outputS3Uri"):
            if not params[member].endswith("/") or params[member].count("/") < 3:
                raise ValidationException(
                    f"{member} must be an S3 prefix ending with '/', like s3://bucket/prefix/"
                )
        token = params.get("clientToken")
        request_hash = _request_hash(params)
        with self.store.transaction() as db:
            if token:
                existing = db.execute(
                    "SELECT * FROM jobs WHERE datastore_id = ? AND client_token = ?", (datastore["id"], token)
                ).fetchone()
                if existing is not None:
                    if existing["request_hash"] != request_hash:
                        raise ConflictException("clientToken was already used with different parameters")
                    return {
                        "datastoreId": existing["datastore_id"],
                        "jobId": existing["id"],
                        "jobStatus": existing["status"],
                        "submittedAt": to_datetime(existing["submitted_at"]),
                    }
            (running,) = db.execute(
                "SELECT COUNT(*) FROM jobs WHERE datastore_id = ? AND status IN ('SUBMITTED', 'IN_PROGRESS')",
                (datastore["id"],),
            ).fetchone()
            if running >= self.quotas.concurrent_import_jobs:
                raise ServiceQuotaExceededException(
                    f"The quota of {self.quotas.concurrent_import_jobs} concurrent import jobs "
                    "per data store is reached"
                )
            job_id = new_id()
            submitted = now()
            db.execute(
                "INSERT INTO jobs VALUES (?, ?, ?, 'SUBMITTED', ?, ?, ?, ?, ?, ?, NULL, ?, NULL)",
                (
                    job_id,
                    datastore["id"],
                    params.get("jobName"),
                    params["dataAccessRoleArn"],
                    params["inputS3Uri"],
                    params["outputS3Uri"],
                    params.get("inputOwnerAccountId"),
                    token,
                    request_hash,
                    submitted,
                ),
            )
        self._job_event(job_id)
        self._queue_import(job_id)
        return {
            "datastoreId": datastore["id"],
            "jobId": job_id,
            "jobStatus": "SUBMITTED",
            "submittedAt": to_datetime(submitted),
        }

    def _queue_import(self, job_id: str) -> None:
        from emulator.importer import ImportJobRunner  # noqa: PLC0415 - the runner imports this module

        self.scheduler.submit(lambda: ImportJobRunner(self, job_id).run())

    def job_output_uri(self, row: sqlite3.Row) -> str:
        """The job folder the service writes results to and GetDICOMImportJob returns (spec §3.5)."""
        return f"{row['output_s3_uri']}{row['datastore_id']}-DicomImport-{row['id']}/"

    def _job_event(self, job_id: str) -> None:
        row = self.store.one(
            "SELECT jobs.*, datastores.account, datastores.region FROM jobs "
            "JOIN datastores ON datastores.id = jobs.datastore_id WHERE jobs.id = ?",
            (job_id,),
        )
        if row is not None:
            self.events(row["account"], row["region"]).import_job(
                datastore_id=row["datastore_id"],
                job_id=row["id"],
                job_name=row["name"],
                status=row["status"],
                input_s3_uri=row["input_s3_uri"],
                output_s3_uri=row["output_s3_uri"],
            )

    def set_job_status(self, job_id: str, status: str, message: str | None = None) -> None:
        """Move a job to ``status`` (the importer's transitions) and emit its event."""
        ended = now() if status in ("COMPLETED", "FAILED") else None
        self.store.execute(
            "UPDATE jobs SET status = ?, message = COALESCE(?, message), ended_at = COALESCE(?, ended_at) "
            "WHERE id = ?",
            (status, message, ended, job_id),
        )
        self._job_event(job_id)

    def _job_row(self, ctx: RequestContext, datastore_id: str, job_id: str) -> sqlite3.Row:
        self._datastore_row(ctx, datastore_id)
        row = self.store.one("SELECT * FROM jobs WHERE id = ? AND datastore_id = ?", (job_id, datastore_id))
        if row is None:
            raise ResourceNotFoundException(f"Import job {job_id} does not exist in datastore {datastore_id}")
        return row

    def _job_summary(self, row: sqlite3.Row) -> dict[str, Any]:
        return {
            "jobId": row["id"],
            "jobName": row["name"],
            "jobStatus": row["status"],
            "datastoreId": row["datastore_id"],
            "dataAccessRoleArn": row["role_arn"],
            "endedAt": to_datetime(row["ended_at"]),
            "submittedAt": to_datetime(row["submitted_at"]),
            "message": row["message"],
        }

    def get_dicom_import_job(self, ctx: RequestContext, **params: Any) -> dict[str, Any]:
        row = self._job_row(ctx, params["datastoreId"], params["jobId"])
        properties = self._job_summary(row)
        properties["inputS3Uri"] = row["input_s3_uri"]
        properties["outputS3Uri"] = self.job_output_uri(row)
        return {"jobProperties": properties}

    def list_dicom_import_jobs(self, ctx: RequestContext, **params: Any) -> dict[str, Any]:
        datastore_id = params["datastoreId"]
        self._datastore_row(ctx, datastore_id)
        status = params.get("jobStatus")
        horizon = now() - timedelta(days=90).total_seconds()
        rows = self.store.query(
            "SELECT * FROM jobs WHERE datastore_id = ? AND submitted_at >= ? ORDER BY submitted_at DESC, id",
            (datastore_id, horizon),
        )
        rows = [r for r in rows if status is None or r["status"] == status]
        page, token = search.paginate(
            rows,
            max_results=params.get("maxResults"),
            next_token=params.get("nextToken"),
            default_max=50,
            scope=f"ListDICOMImportJobs/{datastore_id}/{status}",
        )
        return {"jobSummaries": [self._job_summary(r) for r in page], "nextToken": token}

    # ------------------------------------------------------------------ image sets: reads
    def image_set_arn(self, ctx: RequestContext, datastore_id: str, image_set_id: str) -> str:
        datastore = f"arn:aws:medical-imaging:{ctx.region}:{ctx.account}:datastore/{datastore_id}"
        return f"{datastore}/imageset/{image_set_id}"

    def _image_set_row(self, ctx: RequestContext, datastore_id: str, image_set_id: str) -> sqlite3.Row:
        self._datastore_row(ctx, datastore_id)
        row = self.store.one(
            "SELECT * FROM image_sets WHERE id = ? AND datastore_id = ?", (image_set_id, datastore_id)
        )
        if row is None:
            raise ResourceNotFoundException(
                f"Image set {image_set_id} does not exist in datastore {datastore_id}"
            )
        return row

    def _live_image_set(self, ctx: RequestContext, datastore_id: str, image_set_id: str) -> sqlite3.Row:
        row = self._image_set_row(ctx, datastore_id, image_set_id)
        if row["state"] == "DELETED":
            raise ResourceNotFoundException(f"Image set {image_set_id} is deleted")
        return row

    def _version_row(self, image_set_id: str, version: int) -> sqlite3.Row:
        row = self.store.one(
            "SELECT * FROM versions WHERE image_set_id = ? AND version = ?", (image_set_id, version)
        )
        if row is None:
            raise ResourceNotFoundException(f"Version {version} of image set {image_set_id} does not exist")
        return row

    @staticmethod
    def _version_number(value: str | None, latest: int) -> int:
        if value is None:
            return latest
        return int(value)

    def document(self, image_set_id: str, version: int) -> dict[str, Any]:
        return decompress_document(self._version_row(image_set_id, version)["document"])

    def _touch(self, image_set_id: str) -> None:
        self.store.execute("UPDATE image_sets SET last_accessed_at = ? WHERE id = ?", (now(), image_set_id))

    def get_image_set(self, ctx: RequestContext, **params: Any) -> dict[str, Any]:
        row = self._image_set_row(ctx, params["datastoreId"], params["imageSetId"])
        version = self._version_number(params.get("versionId"), row["latest_version"])
        version_row = self._version_row(row["id"], version)
        latest = version == row["latest_version"]
        return {
            "datastoreId": row["datastore_id"],
            "imageSetId": row["id"],
            "versionId": str(version),
            "imageSetState": row["state"] if latest else version_row["state"],
            "imageSetWorkflowStatus": row["workflow_status"] if latest else version_row["workflow_status"],
            "createdAt": to_datetime(row["created_at"]),
            "updatedAt": to_datetime(version_row["updated_at"] or row["created_at"]),
            "deletedAt": to_datetime(row["deleted_at"]),
            "message": (row["message"] if latest else version_row["message"]),
            "imageSetArn": self.image_set_arn(ctx, row["datastore_id"], row["id"]),
            "overrides": {"forced": True} if version_row["forced"] else None,
            "isPrimary": bool(row["is_primary"]),
            "lastAccessedAt": to_datetime(row["last_accessed_at"]),
            "storageTier": storage_tier(to_datetime(row["last_accessed_at"])),
        }

    def get_image_set_metadata(self, ctx: RequestContext, **params: Any) -> dict[str, Any]:
        row = self._live_image_set(ctx, params["datastoreId"], params["imageSetId"])
        version = self._version_number(params.get("versionId"), row["latest_version"])
        blob = self._version_row(row["id"], version)["document"]
        self._touch(row["id"])
        return {
            "imageSetMetadataBlob": bytes(blob),
            "contentType": "application/json",
            "contentEncoding": "gzip",
        }

    def get_image_frame(self, ctx: RequestContext, **params: Any) -> dict[str, Any]:
        row = self._live_image_set(ctx, params["datastoreId"], params["imageSetId"])
        frame_id = params["imageFrameInformation"]["imageFrameId"]
        content_type = self._frame_content_types(row["id"], row["latest_version"]).get(frame_id)
        if content_type is None:
            raise ResourceNotFoundException(f"Image frame {frame_id} does not exist in image set {row['id']}")
        path = self.store.frame_path(row["datastore_id"], frame_id)
        if not path.exists():
            raise ResourceNotFoundException(f"Image frame {frame_id} does not exist in image set {row['id']}")
        self._touch(row["id"])
        return {
            "imageFrameBlob": StreamingBody(_read_chunks(path), path.stat().st_size),
            "contentType": content_type,
        }

    def _frame_content_types(self, image_set_id: str, version: int) -> dict[str, str]:
        """Frame id to content type for one version, cached: a version never changes, and GetImageFrame is
        the hottest call (1,000 TPS on the service), so it must not decompress the metadata every time.
        The content type follows the instance's ``StoredTransferSyntaxUID`` (``image/jph`` without it)."""
        key = (image_set_id, version)
        cached = self._frame_id_cache.get(key)
        if cached is None:
            cached = dict(iter_frame_content_types(self.document(image_set_id, version)))
            if len(self._frame_id_cache) >= _FRAME_ID_CACHE_SIZE:
                self._frame_id_cache.pop(next(iter(self._frame_id_cache)))
            self._frame_id_cache[key] = cached
        return cached

    def list_image_set_versions(self, ctx: RequestContext, **params: Any) -> dict[str, Any]:
        row = self._image_set_row(ctx, params["datastoreId"], params["imageSetId"])
        versions = self.store.query(
            "SELECT * FROM versions WHERE image_set_id = ? ORDER BY version DESC", (row["id"],)
        )
        page, token = search.paginate(
            versions,
            max_results=params.get("maxResults"),
            next_token=params.get("nextToken"),
            default_max=50,
            scope=f"ListImageSetVersions/{row['id']}",
        )
        items = []
        for version in page:
            latest = version["version"] == row["latest_version"]
            items.append(
                {
                    "imageSetId": row["id"],
                    "versionId": str(version["version"]),
                    "imageSetState": row["state"] if latest else version["state"],
                    "ImageSetWorkflowStatus": row["workflow_status"]
                    if latest
                    else version["workflow_status"],
                    "createdAt": to_datetime(row["created_at"]),
                    "updatedAt": to_datetime(version["updated_at"]),
                    "deletedAt": to_datetime(row["deleted_at"]) if latest else None,
                    "message": version["message"],
                    "overrides": {"forced": True} if version["forced"] else None,
                    "isPrimary": bool(row["is_primary"]),
                }
            )
        return {"imageSetPropertiesList": items, "nextToken": token}

    def search_image_sets(self, ctx: RequestContext, **params: Any) -> dict[str, Any]:
        datastore = self._active_datastore(ctx, params["datastoreId"])
        criteria = params.get("searchCriteria")
        search.validate_search_criteria(criteria)
        rows = self.store.query(
            "SELECT image_sets.*, versions.document FROM image_sets JOIN versions "
            "ON versions.image_set_id = image_sets.id AND versions.version = image_sets.latest_version "
            "WHERE image_sets.datastore_id = ? AND image_sets.state != 'DELETED'",
            (datastore["id"],),
        )
        views = [
            ImageSetView(
                image_set_id=r["id"],
                version=r["latest_version"],
                created_at=to_datetime(r["created_at"]) or datetime.now(UTC),
                updated_at=to_datetime(r["updated_at"]) or datetime.now(UTC),
                is_primary=bool(r["is_primary"]),
                document=decompress_document(r["document"]),
                last_accessed_at=to_datetime(r["last_accessed_at"]),
            )
            for r in rows
        ]
        found = search.search_image_sets(views, criteria)
        page, token = search.paginate(
            found,
            max_results=params.get("maxResults"),
            next_token=params.get("nextToken"),
            default_max=50,
            scope=f"SearchImageSets/{datastore['id']}/{json.dumps(criteria, sort_keys=True, default=str)}",
        )
        summaries = []
        for view in page:
            summaries.append(search.summary(view))
        sort = (criteria or {}).get("sort")
        result: dict[str, Any] = {"imageSetsMetadataSummaries": summaries, "nextToken": token}
        if sort:
            result["sort"] = sort
        return result

    # ------------------------------------------------------------------ image sets: writes
    def create_image_set(
        self,
        db: sqlite3.Connection,
        *,
        datastore_id: str,
        image_set_id: str,
        document: Mapping[str, Any],
        workflow_status: str,
        state: str = "ACTIVE",
        is_primary: bool = True,
    ) -> None:
        """Insert a new image set at version 1 (an import or a copy into a new image set)."""
        stamp = now()
        series = next(iter(document.get("Study", {}).get("Series", {}) or {"": None}))
        db.execute(
            "INSERT INTO image_sets VALUES (?, ?, ?, ?, 1, ?, ?, NULL, NULL, ?, ?, 0, ?)",
            (
                image_set_id,
                datastore_id,
                state,
                workflow_status,
                stamp,
                stamp,
                int(is_primary),
                stamp,
                series,
            ),
        )
        db.execute(
            "INSERT INTO versions VALUES (?, 1, ?, ?, ?, NULL, NULL, 0, ?)",
            (image_set_id, state, workflow_status, stamp, compress_document(document)),
        )

    def image_set_event(self, image_set_id: str) -> None:
        row = self.store.one(
            "SELECT image_sets.*, datastores.account, datastores.region FROM image_sets "
            "JOIN datastores ON datastores.id = image_sets.datastore_id WHERE image_sets.id = ?",
            (image_set_id,),
        )
        if row is not None:
            self.events(row["account"], row["region"]).image_set(
                datastore_id=row["datastore_id"],
                image_set_id=row["id"],
                state=row["state"],
                workflow_status=row["workflow_status"],
            )

    def _lock_for_write(
        self, db: sqlite3.Connection, ctx: RequestContext, datastore_id: str, image_set_id: str
    ) -> sqlite3.Row:
        self._active_datastore(ctx, datastore_id)
        row: sqlite3.Row | None = db.execute(
            "SELECT * FROM image_sets WHERE id = ? AND datastore_id = ?", (image_set_id, datastore_id)
        ).fetchone()
        if row is None:
            raise ResourceNotFoundException(
                f"Image set {image_set_id} does not exist in datastore {datastore_id}"
            )
        if row["state"] == "DELETED":
            raise ConflictException(f"Image set {image_set_id} is already deleted")
        if row["state"] == "LOCKED":
            raise ConflictException(
                f"Image set {image_set_id} is LOCKED ({row['workflow_status']}); retry when it is ACTIVE"
            )
        return row

    @staticmethod
    def _check_latest(row: sqlite3.Row, given: str) -> None:
        if str(row["latest_version"]) != given:
            raise ConflictException(
                f"latestVersionId {given} is not the latest version of image set {row['id']} "
                f"(latest is {row['latest_version']})"
            )

    def _add_version(
        self,
        db: sqlite3.Connection,
        row: sqlite3.Row,
        *,
        document: Mapping[str, Any] | bytes,
        workflow_status: str,
        forced: bool,
    ) -> int:
        version = int(row["latest_version"]) + 1
        stamp = now()
        blob = document if isinstance(document, bytes) else compress_document(document)
        db.execute(
            "INSERT INTO versions VALUES (?, ?, 'LOCKED', ?, ?, ?, NULL, ?, ?)",
            (row["id"], version, workflow_status, row["created_at"], stamp, int(forced), blob),
        )
        db.execute(
            "UPDATE image_sets SET latest_version = ?, state = 'LOCKED', workflow_status = ?, "
            "updated_at = ?, message = NULL, forced = ?, last_accessed_at = ? WHERE id = ?",
            (version, workflow_status, stamp, int(forced), stamp, row["id"]),
        )
        return version

    def update_image_set_metadata(self, ctx: RequestContext, **params: Any) -> dict[str, Any]:
        datastore_id, image_set_id = params["datastoreId"], params["imageSetId"]
        updates = params["updateImageSetMetadataUpdates"]
        force = bool(params.get("force"))
        dicom = updates.get("DICOMUpdates") or {}
        failures: dict[str, str | None] = {}
        with self.store.transaction() as db:
            row = self._lock_for_write(db, ctx, datastore_id, image_set_id)
            self._check_latest(row, params["latestVersionId"])
            current = self._stored_document(db, image_set_id, row["latest_version"])
            if "revertToVersionId" in updates:
                target = updates["revertToVersionId"]
                old = db.execute(
                    "SELECT document FROM versions WHERE image_set_id = ? AND version = ?",
                    (image_set_id, int(target)),
                ).fetchone()
                if old is None:
                    raise ValidationException(
                        f"revertToVersionId {target} is not a version of image set {image_set_id}"
                    )
                blob: bytes | dict[str, Any] = bytes(old["document"])
            else:
                new_document = metadata_update.apply_dicom_updates(
                    current,
                    updatable=dicom.get("updatableAttributes"),
                    removable=dicom.get("removableAttributes"),
                    force=force,
                    max_payload_bytes=self.quotas.update_payload_bytes,
                )
                blob, failures[image_set_id] = self._within_size(new_document, current)
            siblings = []
            if params.get("includeStudyImageSets") and "revertToVersionId" not in updates:
                siblings = self._study_siblings(db, datastore_id, image_set_id, current)
            version = self._add_version(db, row, document=blob, workflow_status="UPDATING", forced=force)
            for sibling in siblings:
                failures[sibling["id"]] = self._update_sibling(db, sibling, dicom, force)
            result_row = db.execute("SELECT * FROM image_sets WHERE id = ?", (image_set_id,)).fetchone()
        for updated in failures.keys() | {image_set_id}:
            self.image_set_event(updated)

        def finish() -> None:
            for updated in failures.keys() | {image_set_id}:
                self._finish_lock(updated, failures.get(updated))

        self.scheduler.later(self.config.transition_delay, finish)
        return {
            "datastoreId": datastore_id,
            "imageSetId": image_set_id,
            "latestVersionId": str(version),
            "imageSetState": "LOCKED",
            "imageSetWorkflowStatus": "UPDATING",
            "createdAt": to_datetime(result_row["created_at"]),
            "updatedAt": to_datetime(result_row["updated_at"]),
        }

    @staticmethod
    def _stored_document(db: sqlite3.Connection, image_set_id: str, version: int) -> dict[str, Any]:
        row = db.execute(
            "SELECT document FROM versions WHERE image_set_id = ? AND version = ?", (image_set_id, version)
        ).fetchone()
        return decompress_document(row["document"])

    def _within_size(
        self, document: dict[str, Any], fallback: dict[str, Any]
    ) -> tuple[dict[str, Any], str | None]:
        """The new document, or the old one and the failure message when the result exceeds 50 MB."""
        try:
            metadata_update.validate_metadata_size(document, max_bytes=self.quotas.metadata_bytes)
        except ServiceError as error:
            return fallback, error.message
        return document, None

    def _study_siblings(
        self, db: sqlite3.Connection, datastore_id: str, image_set_id: str, document: Mapping[str, Any]
    ) -> list[sqlite3.Row]:
        """The other live image sets of the same study (``includeStudyImageSets``); all must be ACTIVE."""
        study_uid = (document.get("Study", {}).get("DICOM") or {}).get("StudyInstanceUID")
        if not study_uid:
            return []
        siblings = []
        for other in db.execute(
            "SELECT * FROM image_sets WHERE datastore_id = ? AND id != ? AND state != 'DELETED'",
            (datastore_id, image_set_id),
        ).fetchall():
            other_document = self._stored_document(db, other["id"], other["latest_version"])
            if (other_document.get("Study", {}).get("DICOM") or {}).get("StudyInstanceUID") != study_uid:
                continue
            if other["state"] == "LOCKED":
                raise ConflictException(
                    f"Image set {other['id']} of the same study is LOCKED; retry includeStudyImageSets later"
                )
            siblings.append(other)
        return siblings

    def _update_sibling(
        self, db: sqlite3.Connection, sibling: sqlite3.Row, dicom: Mapping[str, Any], force: bool
    ) -> str | None:
        """Apply the Patient/Study part of an update to a sibling; return its failure message, if any."""
        current = self._stored_document(db, sibling["id"], sibling["latest_version"])
        updatable = metadata_update.study_level_payload(dicom.get("updatableAttributes"))
        removable = metadata_update.study_level_payload(dicom.get("removableAttributes"))
        failure: str | None = None
        try:
            document, failure = self._within_size(
                metadata_update.apply_dicom_updates(
                    current,
                    updatable=updatable,
                    removable=removable,
                    force=force,
                    max_payload_bytes=self.quotas.update_payload_bytes,
                ),
                current,
            )
        except ServiceError as error:
            document, failure = current, error.message
        self._add_version(
            db, sibling, document=document, workflow_status="UPDATING_FOR_STUDY_CONSISTENCY", forced=force
        )
        return failure

    _TERMINAL = {
        "UPDATING": ("UPDATED", "UPDATE_FAILED"),
        "UPDATING_FOR_STUDY_CONSISTENCY": ("UPDATED", "UPDATE_FAILED"),
        "COPYING": ("COPIED", "COPY_FAILED"),
        "DELETING": ("DELETED", "DELETED"),
    }

    def _finish_lock(self, image_set_id: str, failure: str | None = None) -> None:
        """End a LOCKED image set's operation: UPDATED/COPIED/DELETED, or *_FAILED with ``message``."""
        with self.store.transaction() as db:
            row = db.execute("SELECT * FROM image_sets WHERE id = ?", (image_set_id,)).fetchone()
            if row is None or row["state"] != "LOCKED":
                return
            status = row["workflow_status"]
            if status == "COPYING_WITH_READ_ONLY_ACCESS":
                # A copy source goes back to ACTIVE with the status it had; no event is defined for it.
                previous = db.execute(
                    "SELECT workflow_status FROM versions WHERE image_set_id = ? AND version = ?",
                    (image_set_id, row["latest_version"]),
                ).fetchone()["workflow_status"]
                db.execute(
                    "UPDATE image_sets SET state = 'ACTIVE', workflow_status = ? WHERE id = ?",
                    (previous, image_set_id),
                )
                return
            success, failed = self._TERMINAL[status]
            final = failed if failure else success
            state = "DELETED" if final == "DELETED" else "ACTIVE"
            stamp = now()
            db.execute(
                "UPDATE image_sets SET state = ?, workflow_status = ?, message = ?, updated_at = ?, "
                "deleted_at = CASE WHEN ? = 'DELETED' THEN ? ELSE deleted_at END WHERE id = ?",
                (state, final, failure, stamp, state, stamp, image_set_id),
            )
            db.execute(
                "UPDATE versions SET state = ?, workflow_status = ?, message = ?, updated_at = ? "
                "WHERE image_set_id = ? AND version = ?",
                (state, final, failure, stamp, image_set_id, row["latest_version"]),
            )
        self.image_set_event(image_set_id)

    def copy_image_set(self, ctx: RequestContext, **params: Any) -> dict[str, Any]:
        datastore_id, source_id = params["datastoreId"], params["sourceImageSetId"]
        information = params["copyImageSetInformation"]
        source_info = information["sourceImageSet"]
        destination_info = information.get("destinationImageSet")
        force = bool(params.get("force"))
        copiable = (source_info.get("DICOMCopies") or {}).get("copiableAttributes")
        failure: str | None = None
        with self.store.transaction() as db:
            source = self._lock_for_write(db, ctx, datastore_id, source_id)
            self._check_latest(source, source_info["latestVersionId"])
            source_document = self._stored_document(db, source_id, source["latest_version"])
            selected = image_set_copy.select_copy(
                source_document, copiable.encode() if isinstance(copiable, str) else copiable
            )
            frames = image_set_copy.count_frames(selected)
            if frames > self.quotas.frames_per_copy:
                raise ValidationException(
                    f"CopyImageSet can copy at most {self.quotas.frames_per_copy} image frames per request; "
                    f"this request copies {frames}"
                )
            if destination_info:
                destination_id = destination_info["imageSetId"]
                if destination_id == source_id:
                    raise ValidationException(
                        "The destination image set must differ from the source image set"
                    )
                destination = self._lock_for_write(db, ctx, datastore_id, destination_id)
                self._check_latest(destination, destination_info["latestVersionId"])
                destination_document = self._stored_document(
                    db, destination_id, destination["latest_version"]
                )
                try:
                    merged, failure = self._within_size(
                        image_set_copy.merge_into(destination_document, selected, force=force),
                        destination_document,
                    )
                except image_set_copy.CopyFailure as error:
                    failure, merged = error.message, destination_document
                self._add_version(db, destination, document=merged, workflow_status="COPYING", forced=force)
                if params.get("promoteToPrimary"):
                    db.execute("UPDATE image_sets SET is_primary = 1 WHERE id = ?", (destination_id,))
            else:
                destination_id = new_id()
                document = image_set_copy.new_image_set_from_copy(
                    selected, datastore_id=datastore_id, image_set_id=destination_id
                )
                self.create_image_set(
                    db,
                    datastore_id=datastore_id,
                    image_set_id=destination_id,
                    document=document,
                    workflow_status="COPYING",
                    state="LOCKED",
                    is_primary=bool(params.get("promoteToPrimary")) or not source["is_primary"],
                )
            db.execute(
                "UPDATE image_sets SET state = 'LOCKED', workflow_status = 'COPYING_WITH_READ_ONLY_ACCESS', "
                "last_accessed_at = ? WHERE id = ?",
                (now(), source_id),
            )
            source_after = db.execute("SELECT * FROM image_sets WHERE id = ?", (source_id,)).fetchone()
            destination_after = db.execute(
                "SELECT * FROM image_sets WHERE id = ?", (destination_id,)
            ).fetchone()
        self.image_set_event(source_id)
        self.image_set_event(destination_id)

        def finish() -> None:
            self._finish_lock(source_id)
            self._finish_lock(destination_id, failure)

        self.scheduler.later(self.config.transition_delay, finish)
        return {
            "datastoreId": datastore_id,
            "sourceImageSetProperties": self._copy_properties(ctx, datastore_id, source_after),
            "destinationImageSetProperties": self._copy_properties(ctx, datastore_id, destination_after),
        }

    def _copy_properties(self, ctx: RequestContext, datastore_id: str, row: sqlite3.Row) -> dict[str, Any]:
        return {
            "imageSetId": row["id"],
            "latestVersionId": str(row["latest_version"]),
            "imageSetState": row["state"],
            "imageSetWorkflowStatus": row["workflow_status"],
            "createdAt": to_datetime(row["created_at"]),
            "updatedAt": to_datetime(row["updated_at"]),
            "imageSetArn": self.image_set_arn(ctx, datastore_id, row["id"]),
        }

    def delete_image_set(self, ctx: RequestContext, **params: Any) -> dict[str, Any]:
        datastore_id, image_set_id = params["datastoreId"], params["imageSetId"]
        with self.store.transaction() as db:
            row = self._lock_for_write(db, ctx, datastore_id, image_set_id)
            db.execute(
                "UPDATE image_sets SET state = 'LOCKED', workflow_status = 'DELETING', updated_at = ? "
                "WHERE id = ?",
                (now(), row["id"]),
            )
        self.image_set_event(image_set_id)
        self.scheduler.later(self.config.transition_delay, lambda: self._finish_delete(image_set_id))
        return {
            "datastoreId": datastore_id,
            "imageSetId": image_set_id,
            "imageSetState": "LOCKED",
            "imageSetWorkflowStatus": "DELETING",
        }

    def _finish_delete(self, image_set_id: str) -> None:
        self._finish_lock(image_set_id)
        row = self.store.one("SELECT datastore_id FROM image_sets WHERE id = ?", (image_set_id,))
        if row is None:
            return
        # Frames no longer referenced by any live image set are removed from disk.
        live: set[str] = set()
        for other in self.store.query(
            "SELECT versions.document FROM image_sets JOIN versions ON versions.image_set_id = image_sets.id "
            "WHERE image_sets.datastore_id = ? AND image_sets.state != 'DELETED'",
            (row["datastore_id"],),
        ):
            live.update(iter_frame_ids(decompress_document(other["document"])))
        mine: set[str] = set()
        for version in self.store.query(
            "SELECT document FROM versions WHERE image_set_id = ?", (image_set_id,)
        ):
            mine.update(iter_frame_ids(decompress_document(version["document"])))
        self.store.delete_frames(row["datastore_id"], sorted(mine - live))

    # ------------------------------------------------------------------ tags
    def _resource(self, ctx: RequestContext, arn: str) -> str:
        parts = arn.split(":", 5)
        if len(parts) != 6 or parts[3] != ctx.region or parts[4] != ctx.account:
            raise ResourceNotFoundException(f"Resource {arn} does not exist")
        path = parts[5].split("/")
        if len(path) == 2:
            self._datastore_row(ctx, path[1])
        elif len(path) == 4:
            self._live_image_set(ctx, path[1], path[3])
        else:
            raise ResourceNotFoundException(f"Resource {arn} does not exist")
        return arn

    def _check_tags(self, tags: Mapping[str, str], existing: int) -> None:
        for key, value in tags.items():
            if key.lower().startswith("aws:"):
                raise ValidationException("Tag keys starting with 'aws:' are reserved")
            if not 1 <= len(key) <= 128:
                raise ValidationException("Tag keys must be 1 to 128 characters long")
            if len(value) > 256:
                raise ValidationException("Tag values must be at most 256 characters long")
        if existing + len(tags) > self.quotas.tags_per_resource:
            raise ValidationException(f"A resource can have at most {self.quotas.tags_per_resource} tags")

    def tag_resource(self, ctx: RequestContext, **params: Any) -> dict[str, Any]:
        arn = self._resource(ctx, params["resourceArn"])
        tags: dict[str, str] = params["tags"]
        with self.store.transaction() as db:
            existing = {r["key"] for r in db.execute("SELECT key FROM tags WHERE arn = ?", (arn,))}
            self._check_tags(tags, existing=len(existing - set(tags)))
            for key, value in tags.items():
                db.execute("INSERT OR REPLACE INTO tags VALUES (?, ?, ?)", (arn, key, value))
        return {}

    def untag_resource(self, ctx: RequestContext, **params: Any) -> dict[str, Any]:
        arn = self._resource(ctx, params["resourceArn"])
        with self.store.transaction() as db:
            for key in params["tagKeys"]:
                db.execute("DELETE FROM tags WHERE arn = ? AND key = ?", (arn, key))
        return {}

    def list_tags_for_resource(self, ctx: RequestContext, **params: Any) -> dict[str, Any]:
        arn = self._resource(ctx, params["resourceArn"])
        rows = self.store.query("SELECT key, value FROM tags WHERE arn = ? ORDER BY key", (arn,))
        return {"tags": {r["key"]: r["value"] for r in rows}}


def iter_frame_ids(document: Mapping[str, Any]) -> Iterator[str]:
    """Every ``ImageFrames[].ID`` of a metadata document."""
    for series in (document.get("Study", {}).get("Series") or {}).values():
        for instance in (series.get("Instances") or {}).values():
            for frame in instance.get("ImageFrames") or []:
                if frame.get("ID"):
                    yield frame["ID"]


def iter_frame_content_types(document: Mapping[str, Any]) -> Iterator[tuple[str, str]]:
    """``(ID, GetImageFrame content type)`` of every ``ImageFrames`` entry of a metadata document."""
    for series in (document.get("Study", {}).get("Series") or {}).values():
        for instance in (series.get("Instances") or {}).values():
            content_type = frame_content_type(instance.get("StoredTransferSyntaxUID"))
            for frame in instance.get("ImageFrames") or []:
                if frame.get("ID"):
                    yield frame["ID"], content_type


def _read_chunks(path: Any, size: int = 64 * 1024) -> Iterator[bytes]:
    with open(path, "rb") as handle:
        while chunk := handle.read(size):
            yield chunk

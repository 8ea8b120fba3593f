"""Persistence: an embedded SQLite database for state plus files for frames, under one data directory.

The emulator's state survives a restart: data stores, import jobs, image sets with every version of their
metadata (gzip JSON, as the service serves it), and tags live in ``<data-dir>/state.sqlite3``; frames live
in ``<data-dir>/frames/<datastoreId>/<frameId[:2]>/<frameId>.jph`` (HTJ2K codestreams, or a frame's original
encoding for the syntaxes the service keeps: the metadata's ``StoredTransferSyntaxUID`` says which).
``Store.reset`` empties both (the test hook).  All access goes through one lock, so callers on several
threads see consistent rows.
"""

from __future__ import annotations

import gzip
import json
import math
import shutil
import sqlite3
import tempfile
import threading
from collections.abc import Iterator, Mapping
from contextlib import contextmanager
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

_SCHEMA = """
CREATE TABLE IF NOT EXISTS datastores (
    id TEXT PRIMARY KEY, account TEXT NOT NULL, region TEXT NOT NULL, name TEXT NOT NULL,
    status TEXT NOT NULL, kms_key_arn TEXT, lambda_authorizer_arn TEXT, lossless_storage_format TEXT,
    client_token TEXT, request_hash TEXT, created_at REAL NOT NULL, updated_at REAL NOT NULL
);
CREATE TABLE IF NOT EXISTS jobs (
    id TEXT PRIMARY KEY, datastore_id TEXT NOT NULL, name TEXT, status TEXT NOT NULL,
    role_arn TEXT NOT NULL, input_s3_uri TEXT NOT NULL, output_s3_uri TEXT NOT NULL,
    input_owner_account_id TEXT, client_token TEXT, request_hash TEXT, message TEXT,
    submitted_at REAL NOT NULL, ended_at REAL
);
CREATE INDEX IF NOT EXISTS jobs_by_datastore ON jobs (datastore_id, submitted_at);
CREATE TABLE IF NOT EXISTS image_sets (
    id TEXT PRIMARY KEY, datastore_id TEXT NOT NULL, state TEXT NOT NULL, workflow_status TEXT NOT NULL,
    latest_version INTEGER NOT NULL, created_at REAL NOT NULL, updated_at REAL NOT NULL,
    deleted_at REAL, message TEXT, is_primary INTEGER NOT NULL DEFAULT 1, last_accessed_at REAL,
    forced INTEGER NOT NULL DEFAULT 0, series_uid TEXT
);
CREATE INDEX IF NOT EXISTS image_sets_by_datastore ON image_sets (datastore_id);
CREATE TABLE IF NOT EXISTS versions (
    image_set_id TEXT NOT NULL, version INTEGER NOT NULL, state TEXT NOT NULL,
    workflow_status TEXT NOT NULL, created_at REAL NOT NULL, updated_at REAL, message TEXT,
    forced INTEGER NOT NULL DEFAULT 0, document BLOB NOT NULL,
    PRIMARY KEY (image_set_id, version)
);
CREATE TABLE IF NOT EXISTS tags (
    arn TEXT NOT NULL, key TEXT NOT NULL, value TEXT NOT NULL, PRIMARY KEY (arn, key)
);
"""


def now() -> float:
    """The current time as epoch seconds (the unit every ``*At`` column uses), to the millisecond.

    The service's timestamps have millisecond precision and the wire carries them so; storing more would
    make a returned ``createdAt``/``updatedAt`` differ from the stored one (a search BETWEEN a returned
    timestamp and itself would miss the image set).
    """
    return math.floor(datetime.now(UTC).timestamp() * 1000) / 1000


def to_datetime(epoch: float | None) -> datetime | None:
    """Epoch seconds from a row as an aware UTC datetime (None stays None)."""
    return None if epoch is None else datetime.fromtimestamp(epoch, UTC)


def compress_document(document: Mapping[str, Any]) -> bytes:
    """The metadata document as the service stores and serves it: compact JSON, gzip-compressed."""
    return gzip.compress(json.dumps(document, separators=(",", ":")).encode(), compresslevel=6, mtime=0)


def decompress_document(blob: bytes) -> dict[str, Any]:
    """Inverse of ``compress_document``."""
    document: dict[str, Any] = json.loads(gzip.decompress(blob))
    return document


class Store:
    """SQLite state and frame files under ``data_dir`` (a temporary directory when None)."""

    def __init__(self, data_dir: str | Path | None) -> None:
        self._temporary = data_dir is None
        self.data_dir = Path(tempfile.mkdtemp(prefix="ahi-emulator-")) if data_dir is None else Path(data_dir)
        self.data_dir.mkdir(parents=True, exist_ok=True)
        self.frames_dir = self.data_dir / "frames"
        self.frames_dir.mkdir(exist_ok=True)
        self._frame_dirs: set[Path] = set()
        self._lock = threading.RLock()
        self._db = sqlite3.connect(
            self.data_dir / "state.sqlite3", check_same_thread=False, isolation_level=None
        )
        self._db.row_factory = sqlite3.Row
        self._db.execute("PRAGMA journal_mode=WAL")
        self._db.execute("PRAGMA synchronous=NORMAL")
        self._db.executescript(_SCHEMA)

    # ------------------------------------------------------------------ SQL
    @contextmanager
    def transaction(self) -> Iterator[sqlite3.Connection]:
        """Run the enclosed statements atomically, holding the store lock."""
        with self._lock:
            self._db.execute("BEGIN IMMEDIATE")
            try:
                yield self._db
            except BaseException:
                self._db.execute("ROLLBACK")
                raise
            self._db.execute("COMMIT")

    def query(self, sql: str, params: tuple[Any, ...] | Mapping[str, Any] = ()) -> list[sqlite3.Row]:
        with self._lock:
            return list(self._db.execute(sql, params))

    def one(self, sql: str, params: tuple[Any, ...] | Mapping[str, Any] = ()) -> sqlite3.Row | None:
        rows = self.query(sql, params)
        return rows[0] if rows else None

    def execute(self, sql: str, params: tuple[Any, ...] | Mapping[str, Any] = ()) -> None:
        with self._lock:
            self._db.execute(sql, params)

    # ------------------------------------------------------------------ frames
    def frame_path(self, datastore_id: str, frame_id: str) -> Path:
        return self.frames_dir / datastore_id / frame_id[:2] / f"{frame_id}.jph"

    def write_frame(self, datastore_id: str, frame_id: str, data: bytes) -> None:
        """Write a frame file.  It is referenced only once its image set is committed, so a frame
        interrupted by a crash is an unreferenced file, never a truncated frame of an image set."""
        path = self.frame_path(datastore_id, frame_id)
        if path.parent not in self._frame_dirs:
            path.parent.mkdir(parents=True, exist_ok=True)
            self._frame_dirs.add(path.parent)
        with open(path, "wb") as handle:
            handle.write(data)

    def delete_frames(self, datastore_id: str, frame_ids: list[str]) -> None:
        for frame_id in frame_ids:
            self.frame_path(datastore_id, frame_id).unlink(missing_ok=True)

    # ------------------------------------------------------------------ lifecycle
    def reset(self) -> None:
        """Forget everything (the test hook)."""
        with self._lock:
            for table in ("datastores", "jobs", "image_sets", "versions", "tags"):
                self._db.execute(f"DELETE FROM {table}")  # noqa: S608 - fixed table names
            shutil.rmtree(self.frames_dir, ignore_errors=True)
            self.frames_dir.mkdir(exist_ok=True)
            self._frame_dirs.clear()

    def close(self) -> None:
        with self._lock:
            self._db.close()
        if self._temporary:
            shutil.rmtree(self.data_dir, ignore_errors=True)

"""The ingest stage's settings: read from the environment once, validated, immutable.

``Settings.from_env()`` is pure (it reads the mapping it is given); :func:`current_settings` caches it
for the life of the execution environment, so a handler reads its environment once, at cold start.
Every problem is reported at once, naming the variable, so a misconfigured stack fails on its first
invocation with a message that says what to fix.
"""

from __future__ import annotations

import os
import re
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Final

from ahi_pipeline.runtime import per_environment

__all__ = [
    "JOB_MAX_BYTES",
    "JOB_MAX_FILES",
    "Settings",
    "SettingsError",
    "current_settings",
]

#: Service limits of one import job (platform spec §7.2): 5,000 files, 10 GB, 4 GB a file.
JOB_MAX_FILES: Final = 5_000
JOB_MAX_BYTES: Final = 10 * 1024**3
FILE_MAX_BYTES: Final = 4 * 1024**3

#: Where the member list of each batch is written in the output bucket (``<prefix><batchId>.json``).
MANIFEST_PREFIX: Final = "batches/"

_DATASTORE_ID = re.compile(r"[0-9a-z]{32}")
_BUCKET = re.compile(r"[a-z0-9][a-z0-9.-]{1,61}[a-z0-9]")
_ROLE_ARN = re.compile(r"arn:aws(-[^:]+)?:iam::[0-9]{12}:role/.+")
_TABLE = re.compile(r"[A-Za-z0-9_.-]{3,255}")
_PREFIX = re.compile(r"[A-Za-z0-9!_.*'()/-]+/")


class SettingsError(ValueError):
    """The environment is missing or has invalid values; the message lists every problem."""


@dataclass(frozen=True, slots=True)
class Settings:
    """What StartImport needs to know about its stack.

    Attributes
    ----------
    datastore_id
        The HealthImaging data store imports go to (``DATASTORE_ID``).
    landing_bucket
        Where uploads arrive under ``incoming_prefix`` and batches are staged under ``staging_prefix``.
    output_bucket
        Where import jobs write their results (``results_prefix``) and batches their member lists.
    import_role_arn
        The data access role HealthImaging assumes for the import (``IMPORT_ROLE_ARN``).
    batch_table, idempotency_table
        DynamoDB tables: batches and object claims; Powertools idempotency records.
    max_files_per_job, max_bytes_per_job
        Batch limits, at most the service's 5,000 files and 10 GiB.
    """

    datastore_id: str
    landing_bucket: str
    output_bucket: str
    import_role_arn: str
    batch_table: str
    idempotency_table: str
    incoming_prefix: str = "incoming/"
    staging_prefix: str = "staging/"
    results_prefix: str = "import-results/"
    max_files_per_job: int = JOB_MAX_FILES
    max_bytes_per_job: int = JOB_MAX_BYTES

    def __post_init__(self) -> None:
        problems = self._problems()
        if problems:
            raise SettingsError("invalid StartImport settings: " + "; ".join(problems))

    @classmethod
    def from_env(cls, environ: Mapping[str, str] | None = None) -> Settings:
        """Settings from ``environ`` (default ``os.environ``).

        Raises
        ------
        SettingsError
            Listing every missing or invalid variable.
        """
        env = os.environ if environ is None else environ
        problems: list[str] = []

        def text(name: str, default: str | None = None) -> str:
            value = env.get(name, "").strip()
            if not value and default is None:
                problems.append(f"{name} is not set")
            return value or default or ""

        def number(name: str, default: int) -> int:
            value = env.get(name, "").strip()
            try:
                return int(value) if value else default
            except ValueError:
                problems.append(f"{name} must be an integer; got {value!r}")
                return default

        values = {
            "datastore_id": text("DATASTORE_ID"),
            "landing_bucket": text("LANDING_BUCKET"),
            "output_bucket": text("OUTPUT_BUCKET"),
            "import_role_arn": text("IMPORT_ROLE_ARN"),
            "batch_table": text("BATCH_TABLE"),
            "idempotency_table": text("IDEMPOTENCY_TABLE"),
            "incoming_prefix": text("INCOMING_PREFIX", "incoming/"),
            "staging_prefix": text("STAGING_PREFIX", "staging/"),
            "results_prefix": text("RESULTS_PREFIX", "import-results/"),
        }
        max_files = number("MAX_FILES_PER_JOB", JOB_MAX_FILES)
        max_bytes = number("MAX_BYTES_PER_JOB", JOB_MAX_BYTES)
        if problems:
            raise SettingsError("invalid StartImport settings: " + "; ".join(problems))
        return cls(**values, max_files_per_job=max_files, max_bytes_per_job=max_bytes)

    # ------------------------------------------------------------------ derived values
    @property
    def output_s3_uri(self) -> str:
        """``outputS3Uri`` of every import job: the results prefix of the output bucket."""
        return f"s3://{self.output_bucket}/{self.results_prefix}"

    def staging_folder(self, batch_id: str) -> str:
        """The key prefix a batch is staged under, ``staging/<batchId>/``."""
        return f"{self.staging_prefix}{batch_id}/"

    def input_s3_uri(self, batch_id: str) -> str:
        """``inputS3Uri`` of a batch's import job."""
        return f"s3://{self.landing_bucket}/{self.staging_folder(batch_id)}"

    def manifest_key(self, batch_id: str) -> str:
        """Key of a batch's member list in the output bucket."""
        return f"{MANIFEST_PREFIX}{batch_id}.json"

    # ------------------------------------------------------------------ validation
    def _problems(self) -> list[str]:
        problems = []
        if not _DATASTORE_ID.fullmatch(self.datastore_id):
            problems.append(f"DATASTORE_ID must be 32 lowercase letters or digits; got {self.datastore_id!r}")
        for name, bucket in (("LANDING_BUCKET", self.landing_bucket), ("OUTPUT_BUCKET", self.output_bucket)):
            if not _BUCKET.fullmatch(bucket) or ".." in bucket:
                problems.append(f"{name} is not a valid S3 bucket name: {bucket!r}")
        if not _ROLE_ARN.fullmatch(self.import_role_arn):
            problems.append(f"IMPORT_ROLE_ARN is not an IAM role ARN: {self.import_role_arn!r}")
        for name, table in (("BATCH_TABLE", self.batch_table), ("IDEMPOTENCY_TABLE", self.idempotency_table)):
            if not _TABLE.fullmatch(table):
                problems.append(f"{name} is not a valid DynamoDB table name: {table!r}")
        for name, prefix in (
            ("INCOMING_PREFIX", self.incoming_prefix),
            ("STAGING_PREFIX", self.staging_prefix),
            ("RESULTS_PREFIX", self.results_prefix),
        ):
            if not _PREFIX.fullmatch(prefix) or prefix.startswith("/") or "//" in prefix:
                problems.append(
                    f"{name} must be a key prefix ending with '/' made of S3-safe characters; got {prefix!r}"
                )
        problems.extend(self._overlaps())
        if not 1 <= self.max_files_per_job <= JOB_MAX_FILES:
            problems.append(f"MAX_FILES_PER_JOB must be 1–{JOB_MAX_FILES}; got {self.max_files_per_job}")
        if not 1 <= self.max_bytes_per_job <= JOB_MAX_BYTES:
            problems.append(f"MAX_BYTES_PER_JOB must be 1–{JOB_MAX_BYTES}; got {self.max_bytes_per_job}")
        return problems

    def _overlaps(self) -> list[str]:
        """Prefixes sharing a bucket must be disjoint.

        A staged copy under ``incoming/`` would raise a new upload event for itself, forever.
        """
        folders = [
            ("INCOMING_PREFIX", self.landing_bucket, self.incoming_prefix),
            ("STAGING_PREFIX", self.landing_bucket, self.staging_prefix),
            ("RESULTS_PREFIX", self.output_bucket, self.results_prefix),
            ("the batch manifests", self.output_bucket, MANIFEST_PREFIX),
        ]
        problems = []
        for index, (name, bucket, prefix) in enumerate(folders):
            for other_name, other_bucket, other_prefix in folders[index + 1 :]:
                if bucket == other_bucket and (
                    prefix.startswith(other_prefix) or other_prefix.startswith(prefix)
                ):
                    problems.append(
                        f"{name} ({prefix!r}) overlaps {other_name} ({other_prefix!r}) in {bucket}"
                    )
        return problems


@per_environment
def current_settings() -> Settings:
    """The process's settings, read from ``os.environ`` on first use (reset with ``reset_environment``)."""
    return Settings.from_env()

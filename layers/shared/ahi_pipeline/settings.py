"""The ingest stage's settings: read from the environment once, validated, immutable.

``Settings.from_env()`` is pure (it reads the mapping it is given); :func:`current_settings` caches it
for the life of the execution environment, so a handler reads its environment once, at cold start.
Every problem is reported at once, naming the variable, so a misconfigured stack fails on its first
invocation with a message that says what to fix.
"""

from __future__ import annotations

import os
import re
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Final

from ahi_pipeline.runtime import per_environment

__all__ = [
    "JOB_MAX_BYTES",
    "JOB_MAX_FILES",
    "CompletionSettings",
    "DeidSettings",
    "Settings",
    "SettingsError",
    "TagSettings",
    "ThumbnailSettings",
    "current_completion_settings",
    "current_deid_settings",
    "current_settings",
    "current_tag_settings",
    "current_thumbnail_settings",
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
_EVENT_BUS = re.compile(r"(arn:aws[a-z-]*:events:[a-z0-9-]+:[0-9]{12}:event-bus/)?[A-Za-z0-9._\-/]{1,256}")
_QUEUE_URL = re.compile(r"https?://\S+/[0-9]{12}/[A-Za-z0-9_-]{1,80}(\.fifo)?")


class SettingsError(ValueError):
    """The environment is missing or has invalid values; the message lists every problem."""

    def __init__(self, stage: str, problems: list[str]) -> None:
        self.problems = list(problems)
        super().__init__(f"invalid {stage} settings: " + "; ".join(self.problems))


class _Environment:
    """Reads variables, collecting a problem for each one missing or malformed."""

    def __init__(self, environ: Mapping[str, str] | None) -> None:
        self.env = os.environ if environ is None else environ
        self.problems: list[str] = []

    def text(self, name: str, default: str | None = None) -> str:
        value = self.env.get(name, "").strip()
        if not value and default is None:
            self.problems.append(f"{name} is not set")
        return value or default or ""

    def optional(self, name: str) -> str | None:
        return self.env.get(name, "").strip() or None

    def number(self, name: str, default: int) -> int:
        value = self.env.get(name, "").strip()
        try:
            return int(value) if value else default
        except ValueError:
            self.problems.append(f"{name} must be an integer; got {value!r}")
            return default

    def flag(self, name: str, default: bool) -> bool:
        value = self.env.get(name, "").strip().lower()
        if not value:
            return default
        if value in ("true", "yes", "1", "on"):
            return True
        if value in ("false", "no", "0", "off"):
            return False
        self.problems.append(f"{name} must be true or false; got {value!r}")
        return default

    def seconds(self, name: str, default: float) -> float:
        value = self.env.get(name, "").strip()
        try:
            return float(value) if value else default
        except ValueError:
            self.problems.append(f"{name} must be a number of seconds; got {value!r}")
            return default


def _resource_problems(
    datastore_id: str,
    *,
    buckets: Mapping[str, str],
    tables: Mapping[str, str],
    event_bus: str | None = None,
) -> list[str]:
    """The checks every stage's settings share: the data store id, bucket and table names, the bus."""
    problems = []
    if not _DATASTORE_ID.fullmatch(datastore_id):
        problems.append(f"DATASTORE_ID must be 32 lowercase letters or digits; got {datastore_id!r}")
    for name, bucket in buckets.items():
        if not _BUCKET.fullmatch(bucket) or ".." in bucket:
            problems.append(f"{name} is not a valid S3 bucket name: {bucket!r}")
    for name, table in tables.items():
        if not _TABLE.fullmatch(table):
            problems.append(f"{name} is not a valid DynamoDB table name: {table!r}")
    if event_bus is not None and not _EVENT_BUS.fullmatch(event_bus):
        problems.append(f"EVENT_BUS_NAME is not an event bus name or ARN: {event_bus!r}")
    return problems


def _every_problem(stage: str, build: Callable[[], object], read_problems: list[str]) -> None:
    """Raise one :class:`SettingsError` listing the problems found while reading the environment and
    those the values themselves have (except for variables already reported as missing or malformed).
    """
    value_problems: list[str] = []
    try:
        build()
    except SettingsError as error:
        value_problems = error.problems
    named = {problem.split(" ", 1)[0] for problem in read_problems}
    problems = read_problems + [p for p in value_problems if p.split(" ", 1)[0] not in named]
    if problems:
        raise SettingsError(stage, problems)


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
            raise SettingsError("StartImport", problems)

    @classmethod
    def from_env(cls, environ: Mapping[str, str] | None = None) -> Settings:
        """Settings from ``environ`` (default ``os.environ``).

        Raises
        ------
        SettingsError
            Listing every missing or invalid variable.
        """
        env = _Environment(environ)
        text, number = env.text, env.number
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

        def build() -> Settings:
            return cls(**values, max_files_per_job=max_files, max_bytes_per_job=max_bytes)

        _every_problem("StartImport", build, env.problems)
        return build()

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
        problems = _resource_problems(
            self.datastore_id,
            buckets={"LANDING_BUCKET": self.landing_bucket, "OUTPUT_BUCKET": self.output_bucket},
            tables={"BATCH_TABLE": self.batch_table, "IDEMPOTENCY_TABLE": self.idempotency_table},
        )
        if not _ROLE_ARN.fullmatch(self.import_role_arn):
            problems.append(f"IMPORT_ROLE_ARN is not an IAM role ARN: {self.import_role_arn!r}")
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


def _prefix_problem(name: str, prefix: str) -> str | None:
    if not _PREFIX.fullmatch(prefix) or prefix.startswith("/") or "//" in prefix:
        return f"{name} must be a key prefix ending with '/' made of S3-safe characters; got {prefix!r}"
    return None


@dataclass(frozen=True, slots=True)
class CompletionSettings:
    """What ImportCompleted and ReconcileJobs need to know about their stack.

    Attributes
    ----------
    datastore_id
        The data store whose import jobs the stage handles (``DATASTORE_ID``).
    output_bucket
        Holds the jobs' results (``results_prefix``), the batch member lists and the job reports
        (``reports_prefix``).
    batch_table, idempotency_table
        The batch table (batches, claims, job records) and Powertools' idempotency table.
    event_bus_name
        The pipeline's own event bus, where "Image Set Imported" and "Import Files Failed" go.
    job_events_queue_url
        ReconcileJobs only: where it sends the jobs whose completion event never arrived.
    manifest_wait_seconds
        How long a job's manifest may take to become readable after the job ended.
    reconcile_lookback_hours, reconcile_grace_minutes
        ReconcileJobs looks at jobs that ended within the lookback and at least the grace ago.
    """

    datastore_id: str
    output_bucket: str
    batch_table: str
    idempotency_table: str
    event_bus_name: str
    results_prefix: str = "import-results/"
    reports_prefix: str = "reports/"
    job_events_queue_url: str | None = None
    manifest_wait_seconds: float = 10.0
    reconcile_lookback_hours: int = 72
    reconcile_grace_minutes: int = 10

    def __post_init__(self) -> None:
        problems = self._problems()
        if problems:
            raise SettingsError("ImportCompleted", problems)

    @classmethod
    def from_env(cls, environ: Mapping[str, str] | None = None) -> CompletionSettings:
        """Settings from ``environ`` (default ``os.environ``).

        Raises
        ------
        SettingsError
            Listing every missing or invalid variable.
        """
        env = _Environment(environ)
        text, number = env.text, env.number
        values = {
            "datastore_id": text("DATASTORE_ID"),
            "output_bucket": text("OUTPUT_BUCKET"),
            "batch_table": text("BATCH_TABLE"),
            "idempotency_table": text("IDEMPOTENCY_TABLE"),
            "event_bus_name": text("EVENT_BUS_NAME"),
            "results_prefix": text("RESULTS_PREFIX", "import-results/"),
            "reports_prefix": text("REPORTS_PREFIX", "reports/"),
        }
        queue_url = env.optional("JOB_EVENTS_QUEUE_URL")
        manifest_wait = env.seconds("MANIFEST_WAIT_SECONDS", 10.0)
        lookback = number("RECONCILE_LOOKBACK_HOURS", 72)
        grace = number("RECONCILE_GRACE_MINUTES", 10)

        def build() -> CompletionSettings:
            return cls(
                **values,
                job_events_queue_url=queue_url,
                manifest_wait_seconds=manifest_wait,
                reconcile_lookback_hours=lookback,
                reconcile_grace_minutes=grace,
            )

        _every_problem("ImportCompleted", build, env.problems)
        return build()

    def report_key(self, job_id: str) -> str:
        """Key of a job's report in the output bucket, ``reports/import-jobs/<jobId>.json``."""
        return f"{self.reports_prefix}import-jobs/{job_id}.json"

    def manifest_key(self, batch_id: str) -> str:
        """Key of a batch's member list in the output bucket (written by StartImport)."""
        return f"{MANIFEST_PREFIX}{batch_id}.json"

    def _problems(self) -> list[str]:
        problems = _resource_problems(
            self.datastore_id,
            buckets={"OUTPUT_BUCKET": self.output_bucket},
            tables={"BATCH_TABLE": self.batch_table, "IDEMPOTENCY_TABLE": self.idempotency_table},
            event_bus=self.event_bus_name,
        )
        problems.extend(self._prefix_problems())
        if self.job_events_queue_url is not None and not _QUEUE_URL.fullmatch(self.job_events_queue_url):
            problems.append(f"JOB_EVENTS_QUEUE_URL is not an SQS queue URL: {self.job_events_queue_url!r}")
        if not 0 <= self.manifest_wait_seconds <= 300:
            problems.append(f"MANIFEST_WAIT_SECONDS must be 0–300; got {self.manifest_wait_seconds:g}")
        if not 1 <= self.reconcile_lookback_hours <= 24 * 90:
            problems.append(
                f"RECONCILE_LOOKBACK_HOURS must be 1–2160 (90 days); got {self.reconcile_lookback_hours}"
            )
        if not 0 <= self.reconcile_grace_minutes <= 24 * 60:
            problems.append(f"RECONCILE_GRACE_MINUTES must be 0–1440; got {self.reconcile_grace_minutes}")
        return problems

    def _prefix_problems(self) -> list[str]:
        problems = []
        folders = [
            ("RESULTS_PREFIX", self.results_prefix),
            ("REPORTS_PREFIX", self.reports_prefix),
            ("the batch manifests", MANIFEST_PREFIX),
        ]
        for index, (name, prefix) in enumerate(folders):
            problem = _prefix_problem(name, prefix)
            if problem:
                problems.append(problem)
            for other_name, other in folders[index + 1 :]:
                if prefix.startswith(other) or other.startswith(prefix):
                    problems.append(f"{name} ({prefix!r}) overlaps {other_name} ({other!r})")
        return problems


@per_environment
def current_completion_settings() -> CompletionSettings:
    """The completion stage's settings, read from ``os.environ`` on first use."""
    return CompletionSettings.from_env()


_SECRET_ARN = re.compile(r"arn:aws[a-z-]*:secretsmanager:[a-z0-9-]+:[0-9]{12}:secret:.+")


@dataclass(frozen=True, slots=True)
class DeidSettings:
    """What Deidentify needs to know about its stack.

    Attributes
    ----------
    enabled
        ``DEIDENTIFY`` (``true``/``false``): when false, image sets are announced Ready as ``skipped``.
    options
        ``DEID_OPTIONS``: the PS3.15 options (see :mod:`ahi_pipeline.deid_profile`).
    purge_history
        ``PURGE_HISTORY``: copy the verified version into a new image set and delete the original, so
        that no version of the result holds the original values.
    key_secret_arn
        ``DEID_KEY_SECRET_ARN``: the Secrets Manager secret holding the pseudonymization key.
    """

    datastore_id: str
    output_bucket: str
    batch_table: str
    idempotency_table: str
    event_bus_name: str
    key_secret_arn: str
    enabled: bool = True
    purge_history: bool = True
    options: str = ""
    safe_private: str = ""
    reports_prefix: str = "reports/"

    def __post_init__(self) -> None:
        problems = self._problems()
        if problems:
            raise SettingsError("Deidentify", problems)

    @classmethod
    def from_env(cls, environ: Mapping[str, str] | None = None) -> DeidSettings:
        """Settings from ``environ`` (default ``os.environ``).

        Raises
        ------
        SettingsError
            Listing every missing or invalid variable.
        """
        env = _Environment(environ)
        values = {
            "datastore_id": env.text("DATASTORE_ID"),
            "output_bucket": env.text("OUTPUT_BUCKET"),
            "batch_table": env.text("BATCH_TABLE"),
            "idempotency_table": env.text("IDEMPOTENCY_TABLE"),
            "event_bus_name": env.text("EVENT_BUS_NAME"),
            "key_secret_arn": env.text("DEID_KEY_SECRET_ARN"),
            "options": env.text("DEID_OPTIONS", ""),
            "safe_private": env.text("DEID_SAFE_PRIVATE", ""),
            "reports_prefix": env.text("REPORTS_PREFIX", "reports/"),
        }
        enabled, purge = env.flag("DEIDENTIFY", True), env.flag("PURGE_HISTORY", True)

        def build() -> DeidSettings:
            return cls(**values, enabled=enabled, purge_history=purge)

        _every_problem("Deidentify", build, env.problems)
        return build()

    def report_key(self, image_set_id: str) -> str:
        """Key of an image set's de-identification report, ``reports/deidentification/<id>.json``."""
        return f"{self.reports_prefix}deidentification/{image_set_id}.json"

    def _problems(self) -> list[str]:
        from ahi_pipeline.deid_profile import (  # noqa: PLC0415 - no import cycle at module level
            ProfileError,
            parse_options,
            parse_safe_private,
        )

        problems = _resource_problems(
            self.datastore_id,
            buckets={"OUTPUT_BUCKET": self.output_bucket},
            tables={"BATCH_TABLE": self.batch_table, "IDEMPOTENCY_TABLE": self.idempotency_table},
            event_bus=self.event_bus_name,
        )
        if not _SECRET_ARN.fullmatch(self.key_secret_arn):
            problems.append(
                f"DEID_KEY_SECRET_ARN is not a Secrets Manager secret ARN: {self.key_secret_arn!r}"
            )
        problem = _prefix_problem("REPORTS_PREFIX", self.reports_prefix)
        if problem:
            problems.append(problem)
        try:
            parse_options(self.options)
        except ProfileError as error:
            problems.append(f"DEID_OPTIONS: {error}")
        try:
            parse_safe_private(self.safe_private)
        except ProfileError as error:
            problems.append(f"DEID_SAFE_PRIVATE: {error}")
        return problems


@per_environment
def current_deid_settings() -> DeidSettings:
    """The de-identification stage's settings, read from ``os.environ`` on first use."""
    return DeidSettings.from_env()


@dataclass(frozen=True, slots=True)
class TagSettings:
    """What TagImageSet needs to know about its stack.

    Attributes
    ----------
    rules
        ``TAG_RULES``: the deployment's own rules (``key=Keyword`` pairs separated by ``;``), added to
        the default ones.
    deid_options
        ``DEID_OPTIONS``: the de-identification options, whose profile says which attributes hold
        identifying values (the PHI guard).
    """

    datastore_id: str
    rules: str = ""
    deid_options: str = ""

    def __post_init__(self) -> None:
        from ahi_pipeline.deid_profile import ProfileError, parse_options  # noqa: PLC0415
        from ahi_pipeline.tag_rules import TagRuleError, parse_rules  # noqa: PLC0415

        problems = _resource_problems(self.datastore_id, buckets={}, tables={})
        try:
            parse_rules(self.rules)
        except TagRuleError as error:
            problems.append(f"TAG_RULES: {error}")
        try:
            parse_options(self.deid_options)
        except ProfileError as error:
            problems.append(f"DEID_OPTIONS: {error}")
        if problems:
            raise SettingsError("TagImageSet", problems)

    @classmethod
    def from_env(cls, environ: Mapping[str, str] | None = None) -> TagSettings:
        """Settings from ``environ`` (default ``os.environ``).

        Raises
        ------
        SettingsError
            Listing every missing or invalid variable.
        """
        env = _Environment(environ)
        values = {
            "datastore_id": env.text("DATASTORE_ID"),
            "rules": env.text("TAG_RULES", ""),
            "deid_options": env.text("DEID_OPTIONS", ""),
        }

        def build() -> TagSettings:
            return cls(**values)

        _every_problem("TagImageSet", build, env.problems)
        return build()


@per_environment
def current_tag_settings() -> TagSettings:
    """The tagging stage's settings, read from ``os.environ`` on first use."""
    return TagSettings.from_env()


@dataclass(frozen=True, slots=True)
class ThumbnailSettings:
    """What RenderThumbnail needs to know about its stack.

    Attributes
    ----------
    size
        ``THUMBNAIL_SIZE``: the longest side of a thumbnail, in pixels (32 to 2048); contact-sheet
        tiles are half as large (at least 32).
    prefix
        ``THUMBNAILS_PREFIX``: where thumbnails go in the output bucket
        (``<prefix><datastoreId>/<imageSetId>/…``).
    """

    datastore_id: str
    output_bucket: str
    event_bus_name: str
    size: int = 256
    prefix: str = "thumbnails/"

    def __post_init__(self) -> None:
        problems = _resource_problems(
            self.datastore_id,
            buckets={"OUTPUT_BUCKET": self.output_bucket},
            tables={},
            event_bus=self.event_bus_name,
        )
        if not 32 <= self.size <= 2048:
            problems.append(f"THUMBNAIL_SIZE must be 32 to 2048 pixels; got {self.size}")
        problem = _prefix_problem("THUMBNAILS_PREFIX", self.prefix)
        if problem:
            problems.append(problem)
        if problems:
            raise SettingsError("RenderThumbnail", problems)

    @classmethod
    def from_env(cls, environ: Mapping[str, str] | None = None) -> ThumbnailSettings:
        """Settings from ``environ`` (default ``os.environ``).

        Raises
        ------
        SettingsError
            Listing every missing or invalid variable.
        """
        env = _Environment(environ)
        values = {
            "datastore_id": env.text("DATASTORE_ID"),
            "output_bucket": env.text("OUTPUT_BUCKET"),
            "event_bus_name": env.text("EVENT_BUS_NAME"),
            "prefix": env.text("THUMBNAILS_PREFIX", "thumbnails/"),
        }
        size = env.number("THUMBNAIL_SIZE", 256)

        def build() -> ThumbnailSettings:
            return cls(**values, size=size)

        _every_problem("RenderThumbnail", build, env.problems)
        return build()

    @property
    def tile_size(self) -> int:
        """The longest side of a contact-sheet tile."""
        return max(32, self.size // 2)

    def folder(self, datastore_id: str, image_set_id: str) -> str:
        """``thumbnails/<datastoreId>/<imageSetId>/``."""
        return f"{self.prefix}{datastore_id}/{image_set_id}/"


@per_environment
def current_thumbnail_settings() -> ThumbnailSettings:
    """The thumbnail stage's settings, read from ``os.environ`` on first use."""
    return ThumbnailSettings.from_env()

"""An import job's results, parsed and checked: ``job-output-manifest.json``, SUCCESS and FAILURE (pure).

HealthImaging writes three files under the job folder ``<outputS3Uri><datastoreId>-DicomImport-<jobId>/``
(api spec §3.5)::

    job-output-manifest.json   {"jobSummary": {counts…, "imageSetsSummary": [{imageSetId, …}, …]}}
    SUCCESS/success.ndjson     {"inputFile": "…", "importResponse": {"imageSetId": "…"}}   one per file
    FAILURE/failure.ndjson     {"inputFile": "…", "exception": {"exceptionType": "…", "message": "…"}}

The 2024 shape is what the guide shows.  Newer service versions add ``imageSetVersion`` and
``isPrimary`` to ``importResponse`` and to the ``imageSetsSummary`` entries (an import may then add a
version to an existing primary image set instead of creating one); both are read when present and
optional otherwise.  Unknown fields are ignored.

:func:`parse_manifest` reads the manifest; :func:`success_records` and :func:`failure_records` turn
NDJSON lines (an iterator, so a 5,000-line file is never held whole) into records, naming the file and
line of anything malformed; :class:`ResultsTally` gathers them per image set; :func:`check_consistency`
holds the manifest's invariants against what the lines said:

* scanned = imported + files with customer errors + files with server errors;
* ``numberOfGeneratedImageSets`` = the image sets in ``imageSetsSummary`` (an id listed twice counts once,
  as the guide's JavaScript sample de-duplicates them);
* the SUCCESS lines are ``numberOfImportedFiles``, the FAILURE lines the customer and server errors;
* every image set of a SUCCESS line is in the summary and the other way round, with the same number of
  instances.

Error messages name files, line numbers and counts, never the content of a line (keys may hold patient
names).
"""

from __future__ import annotations

import json
import re
from collections import Counter
from collections.abc import Iterable, Iterator, Mapping
from dataclasses import dataclass, field
from typing import Any, Final

__all__ = [
    "FAILURE_FILE",
    "MANIFEST_FILE",
    "SUCCESS_FILE",
    "FailureRecord",
    "ImageSetCount",
    "JobManifest",
    "ResultsError",
    "ResultsTally",
    "SuccessRecord",
    "check_consistency",
    "failure_records",
    "input_key",
    "parse_manifest",
    "success_records",
]

MANIFEST_FILE: Final = "job-output-manifest.json"
SUCCESS_FILE: Final = "SUCCESS/success.ndjson"
FAILURE_FILE: Final = "FAILURE/failure.ndjson"

_ID = re.compile(r"[0-9a-z]{32}")
_VERSION = re.compile(r"[0-9]+")
_COUNTS: Final = (
    ("numberOfScannedFiles", "scanned"),
    ("numberOfImportedFiles", "imported"),
    ("numberOfFilesWithCustomerError", "customer_errors"),
    ("numberOfFilesWithServerError", "server_errors"),
    ("numberOfGeneratedImageSets", "generated_image_sets"),
)


class ResultsError(ValueError):
    """The job's results are missing, malformed or contradict each other.

    ``problems`` lists every problem found (the message joins them).
    """

    def __init__(self, problems: Iterable[str]) -> None:
        self.problems = list(problems)
        super().__init__("; ".join(self.problems))


# ---------------------------------------------------------------------- the manifest
@dataclass(frozen=True, slots=True)
class ImageSetCount:
    """One image set of the job: how many instances the job put in it, and what the service said of it."""

    image_set_id: str
    instances: int
    version: str | None = None
    is_primary: bool | None = None


@dataclass(frozen=True, slots=True)
class JobManifest:
    """``jobSummary`` of ``job-output-manifest.json``; ``image_sets`` merges repeated ids."""

    job_id: str
    datastore_id: str
    input_s3_uri: str
    output_s3_uri: str
    scanned: int
    imported: int
    customer_errors: int
    server_errors: int
    generated_image_sets: int
    image_sets: tuple[ImageSetCount, ...]
    summary_entries: int

    @property
    def failed(self) -> int:
        return self.customer_errors + self.server_errors


def parse_manifest(
    document: Any, *, job_id: str | None = None, datastore_id: str | None = None
) -> JobManifest:
    """The manifest ``document`` (parsed JSON), checked for shape and for its own arithmetic.

    ``job_id`` and ``datastore_id``, when given, must be the ones the manifest names.

    Raises
    ------
    ResultsError
        Listing every problem: missing or mistyped fields, counts that do not add up, a manifest of
        another job.
    """
    problems: list[str] = []
    summary = document.get("jobSummary") if isinstance(document, Mapping) else None
    if not isinstance(summary, Mapping):
        raise ResultsError([f"{MANIFEST_FILE} has no jobSummary object"])

    def text(name: str) -> str:
        value = summary.get(name)
        if not isinstance(value, str) or not value:
            problems.append(f"{MANIFEST_FILE}: jobSummary.{name} is missing or not a string")
            return ""
        return value

    def number(name: str) -> int:
        value = summary.get(name)
        if isinstance(value, bool) or not isinstance(value, int) or value < 0:
            problems.append(f"{MANIFEST_FILE}: jobSummary.{name} is missing or not a count")
            return 0
        return value

    found_job, found_datastore = text("jobId"), text("datastoreId")
    if job_id is not None and found_job and found_job != job_id:
        problems.append(f"{MANIFEST_FILE} belongs to job {found_job}, not {job_id}")
    if datastore_id is not None and found_datastore and found_datastore != datastore_id:
        problems.append(f"{MANIFEST_FILE} belongs to data store {found_datastore}, not {datastore_id}")
    counts = {attribute: number(name) for name, attribute in _COUNTS}
    image_sets, entries = _image_sets_summary(summary.get("imageSetsSummary"), problems)
    manifest = JobManifest(
        job_id=found_job,
        datastore_id=found_datastore,
        input_s3_uri=str(summary.get("inputS3Uri") or ""),
        output_s3_uri=str(summary.get("outputS3Uri") or ""),
        image_sets=image_sets,
        summary_entries=entries,
        **counts,
    )
    if not problems:
        problems.extend(_arithmetic(manifest))
    if problems:
        raise ResultsError(problems)
    return manifest


def _image_sets_summary(value: Any, problems: list[str]) -> tuple[tuple[ImageSetCount, ...], int]:
    if value is None:
        value = []
    if not isinstance(value, list):
        problems.append(f"{MANIFEST_FILE}: jobSummary.imageSetsSummary is not a list")
        return (), 0
    merged: dict[str, ImageSetCount] = {}
    for index, entry in enumerate(value):
        where = f"{MANIFEST_FILE}: imageSetsSummary[{index}]"
        if not isinstance(entry, Mapping):
            problems.append(f"{where} is not an object")
            continue
        image_set_id = entry.get("imageSetId")
        instances = entry.get("numberOfMatchedSOPInstances")
        if not isinstance(image_set_id, str) or not _ID.fullmatch(image_set_id):
            problems.append(f"{where}.imageSetId is not an image set id")
            continue
        if isinstance(instances, bool) or not isinstance(instances, int) or instances < 0:
            problems.append(f"{where}.numberOfMatchedSOPInstances is not a count")
            continue
        version, is_primary = _version_and_primary(entry, where, problems)
        known = merged.get(image_set_id)
        if known is not None:
            instances += known.instances
            version = _later(known.version, version)
            is_primary = known.is_primary if is_primary is None else is_primary
        merged[image_set_id] = ImageSetCount(image_set_id, instances, version, is_primary)
    return tuple(merged.values()), len(value)


def _version_and_primary(
    entry: Mapping[str, Any], where: str, problems: list[str]
) -> tuple[str | None, bool | None]:
    """``imageSetVersion`` (a string or an integer of digits) and ``isPrimary`` (a boolean), if present."""
    version = entry.get("imageSetVersion")
    if version is not None:
        if (
            isinstance(version, bool)
            or not isinstance(version, str | int)
            or not _VERSION.fullmatch(str(version))
        ):
            problems.append(f"{where}.imageSetVersion is not a version number")
            version = None
        else:
            version = str(version)
    is_primary = entry.get("isPrimary")
    if is_primary is not None and not isinstance(is_primary, bool):
        problems.append(f"{where}.isPrimary is not a boolean")
        is_primary = None
    return version, is_primary


def _later(first: str | None, second: str | None) -> str | None:
    if first is None or second is None:
        return first or second
    return max(first, second, key=int)


def _arithmetic(manifest: JobManifest) -> list[str]:
    problems = []
    accounted = manifest.imported + manifest.customer_errors + manifest.server_errors
    if manifest.scanned != accounted:
        problems.append(
            f"{MANIFEST_FILE}: {manifest.scanned} files scanned but {manifest.imported} imported + "
            f"{manifest.customer_errors} customer errors + {manifest.server_errors} server errors "
            f"= {accounted}"
        )
    if manifest.generated_image_sets not in (len(manifest.image_sets), manifest.summary_entries):
        problems.append(
            f"{MANIFEST_FILE}: numberOfGeneratedImageSets is {manifest.generated_image_sets} but "
            f"imageSetsSummary lists {len(manifest.image_sets)} image sets"
        )
    matched = sum(image_set.instances for image_set in manifest.image_sets)
    if matched != manifest.imported:
        problems.append(
            f"{MANIFEST_FILE}: imageSetsSummary matches {matched} instances but {manifest.imported} files "
            "were imported"
        )
    return problems


# ---------------------------------------------------------------------- the NDJSON files
@dataclass(frozen=True, slots=True)
class SuccessRecord:
    """One line of ``SUCCESS/success.ndjson``."""

    input_file: str
    image_set_id: str
    version: str | None = None
    is_primary: bool | None = None


@dataclass(frozen=True, slots=True)
class FailureRecord:
    """One line of ``FAILURE/failure.ndjson``."""

    input_file: str
    exception_type: str
    message: str


def _objects(lines: Iterable[bytes | str], source: str) -> Iterator[tuple[str, Mapping[str, Any]]]:
    """``(where, object)`` for every non-blank line; a line that is not a JSON object raises."""
    for number, line in enumerate(lines, start=1):
        if not line.strip():
            continue
        where = f"{source} line {number}"
        try:
            value = json.loads(line)
        except (ValueError, UnicodeDecodeError):
            raise ResultsError([f"{where} is not valid JSON (truncated or corrupt file?)"]) from None
        if not isinstance(value, Mapping):
            raise ResultsError([f"{where} is not a JSON object"])
        yield where, value


def _input_file(record: Mapping[str, Any], where: str) -> str:
    value = record.get("inputFile")
    if not isinstance(value, str) or not value:
        raise ResultsError([f"{where} has no inputFile"])
    return value


def success_records(lines: Iterable[bytes | str], *, source: str = SUCCESS_FILE) -> Iterator[SuccessRecord]:
    """The records of ``SUCCESS/success.ndjson``, one per non-blank line, in order.

    Raises
    ------
    ResultsError
        At the first malformed line, naming it.
    """
    for where, record in _objects(lines, source):
        response = record.get("importResponse")
        if not isinstance(response, Mapping):
            raise ResultsError([f"{where} has no importResponse object"])
        image_set_id = response.get("imageSetId")
        if not isinstance(image_set_id, str) or not _ID.fullmatch(image_set_id):
            raise ResultsError([f"{where}: importResponse.imageSetId is not an image set id"])
        if "imageSetVersion" not in response and "isPrimary" not in response:  # the 2024 shape
            yield SuccessRecord(_input_file(record, where), image_set_id)
            continue
        problems: list[str] = []
        version, is_primary = _version_and_primary(response, f"{where}: importResponse", problems)
        if problems:
            raise ResultsError(problems)
        yield SuccessRecord(_input_file(record, where), image_set_id, version, is_primary)


def failure_records(lines: Iterable[bytes | str], *, source: str = FAILURE_FILE) -> Iterator[FailureRecord]:
    """The records of ``FAILURE/failure.ndjson``, one per non-blank line, in order.

    A line without an ``exception`` object is still a failed file: it is reported as
    ``UnknownException``, not dropped.

    Raises
    ------
    ResultsError
        At the first line that is not a JSON object or names no input file.
    """
    for where, record in _objects(lines, source):
        exception = record.get("exception")
        exception = exception if isinstance(exception, Mapping) else {}
        kind = exception.get("exceptionType")
        message = exception.get("message")
        yield FailureRecord(
            _input_file(record, where),
            kind if isinstance(kind, str) and kind else "UnknownException",
            message if isinstance(message, str) else "",
        )


def input_key(input_file: str, bucket: str | None = None) -> str:
    """The object key an ``inputFile`` names: the guide shows a key; ``s3://bucket/key`` is accepted too."""
    if input_file.startswith("s3://"):
        found_bucket, _, key = input_file.removeprefix("s3://").partition("/")
        if bucket is not None and found_bucket != bucket:
            return input_file
        return key
    return input_file


# ---------------------------------------------------------------------- gathering and checking
class _Counted:
    """One image set's running count (mutable while the lines stream by)."""

    __slots__ = ("instances", "is_primary", "version")

    def __init__(self) -> None:
        self.instances = 0
        self.version: str | None = None
        self.is_primary: bool | None = None


@dataclass
class ResultsTally:
    """Success records gathered per image set, and failure counts, as the lines stream by."""

    imported: int = 0
    failed: int = 0
    error_types: Counter[str] = field(default_factory=Counter)
    _counted: dict[str, _Counted] = field(default_factory=dict, repr=False)

    @property
    def image_sets(self) -> dict[str, ImageSetCount]:
        """Image set id → what the SUCCESS lines said of it, in order of first appearance."""
        return {
            image_set_id: ImageSetCount(image_set_id, counted.instances, counted.version, counted.is_primary)
            for image_set_id, counted in self._counted.items()
        }

    def add_success(self, record: SuccessRecord) -> None:
        self.imported += 1
        counted = self._counted.get(record.image_set_id)
        if counted is None:
            counted = self._counted[record.image_set_id] = _Counted()
        counted.instances += 1
        if record.version is not None and record.version != counted.version:
            counted.version = _later(counted.version, record.version)
        if record.is_primary is not None:
            counted.is_primary = record.is_primary

    def add_failure(self, record: FailureRecord) -> None:
        self.failed += 1
        self.error_types[record.exception_type] += 1


def check_consistency(manifest: JobManifest, tally: ResultsTally) -> list[ImageSetCount]:
    """The job's image sets, once the lines have been checked against the manifest.

    Version and primary flag come from the manifest where it gives them, else from the SUCCESS lines.

    Raises
    ------
    ResultsError
        Listing every disagreement between the manifest and the lines.
    """
    problems = []
    if tally.imported != manifest.imported:
        problems.append(
            f"{SUCCESS_FILE} has {tally.imported} lines but the manifest counts "
            f"{manifest.imported} imported files"
        )
    if tally.failed != manifest.failed:
        problems.append(
            f"{FAILURE_FILE} has {tally.failed} lines but the manifest counts {manifest.failed} failed files"
        )
    summary = {image_set.image_set_id: image_set for image_set in manifest.image_sets}
    lines = tally.image_sets
    missing = lines.keys() - summary.keys()
    if missing:
        problems.append(
            f"{len(missing)} image set(s) of {SUCCESS_FILE} are not in imageSetsSummary: {sorted(missing)}"
        )
    unseen = summary.keys() - lines.keys()
    if unseen:
        problems.append(
            f"{len(unseen)} image set(s) of imageSetsSummary have no line in {SUCCESS_FILE}: {sorted(unseen)}"
        )
    for image_set_id in sorted(summary.keys() & lines.keys()):
        listed, counted = summary[image_set_id].instances, lines[image_set_id].instances
        if listed != counted:
            problems.append(
                f"image set {image_set_id}: imageSetsSummary matches {listed} instances, "
                f"{SUCCESS_FILE} {counted}"
            )
    if problems:
        raise ResultsError(problems)
    merged = []
    for image_set_id, entry in summary.items():
        seen = lines[image_set_id]
        merged.append(
            ImageSetCount(
                image_set_id,
                entry.instances,
                entry.version or seen.version,
                entry.is_primary if entry.is_primary is not None else seen.is_primary,
            )
        )
    return merged

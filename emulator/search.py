"""SearchImageSets semantics, image set summaries and pagination tokens (pure; no HTTP, no state).

The HTTP layer has already checked the request against botocore's ``medical-imaging`` shapes (types,
lengths, enums, union arity).  This module adds what the shapes cannot say, from the spec
(``../shared/spec/healthimaging-api.md`` section 7) and the model's documentation strings:

* ``EQUAL`` takes exactly one value; ``BETWEEN`` takes two values of the same attribute, lower bound
  first (``(lowerBound, upperBound)``, SearchImageSets documentation; spec 7.1), and only on the
  attributes that have an order: ``createdAt``, ``updatedAt`` and ``DICOMStudyDateAndTime``.
* Several filters are ANDed (spec 7.2); at most two (``SearchCriteriaFiltersList`` max 2).
* ``DICOMStudyDate`` is ``YYYYMMDD`` (the model's "yyMMdd" is contradicted by every example);
  ``DICOMStudyTime`` is a DICOM TM ``HH[MM[SS[.F{1,6}]]]`` and, when absent, means 00:00 (spec 7.2).
* Without a ``sort`` the order is ``updatedAt`` descending (spec 7.1; SearchImageSets documentation).
* Timestamps are compared in UTC.

Summaries follow ``ImageSetsMetadataSummary`` and ``DICOMTags`` of the model.  Pagination tokens are
opaque, signed, and bound to the request they came from (see :func:`paginate`).
"""

from __future__ import annotations

import base64
import binascii
import functools
import hashlib
import hmac
import json
import re
import secrets
from collections.abc import Callable, Iterable, Mapping, Sequence
from datetime import UTC, date, datetime, time
from typing import Any, Final, Protocol, TypeVar

from emulator.exceptions import ValidationException

__all__ = [
    "DEFAULT_SORT",
    "DICOM_TAG_MEMBERS",
    "MAX_FILTERS",
    "RANGE_ATTRIBUTES",
    "SEARCH_ATTRIBUTES",
    "SORT_FIELDS",
    "SearchableImageSet",
    "dicom_tags",
    "paginate",
    "scope_key",
    "search_image_sets",
    "summary",
    "validate_search_criteria",
]

T = TypeVar("T")

#: Members of the ``SearchByAttributeValue`` union, in model order.
SEARCH_ATTRIBUTES: Final[tuple[str, ...]] = (
    "DICOMPatientId",
    "DICOMAccessionNumber",
    "DICOMStudyId",
    "DICOMStudyInstanceUID",
    "DICOMSeriesInstanceUID",
    "createdAt",
    "updatedAt",
    "DICOMStudyDateAndTime",
    "isPrimary",
)
#: Attributes with an order, hence the only ones ``BETWEEN`` accepts ("All date range queries must be
#: input as (lowerBound, upperBound)").
RANGE_ATTRIBUTES: Final[frozenset[str]] = frozenset({"createdAt", "updatedAt", "DICOMStudyDateAndTime"})
#: ``SearchCriteriaFiltersList`` has ``max: 2``.
MAX_FILTERS: Final = 2
#: ``SortField`` enum.
SORT_FIELDS: Final[tuple[str, ...]] = ("updatedAt", "createdAt", "DICOMStudyDateAndTime")
SORT_ORDERS: Final[tuple[str, ...]] = ("ASC", "DESC")
#: Spec 7.1: "Default order: updatedAt descending (newest first)".
DEFAULT_SORT: Final[Mapping[str, str]] = {"sortField": "updatedAt", "sortOrder": "DESC"}
#: Members of the ``DICOMTags`` shape, in model order.
DICOM_TAG_MEMBERS: Final[tuple[str, ...]] = (
    "DICOMPatientId",
    "DICOMPatientName",
    "DICOMPatientBirthDate",
    "DICOMPatientSex",
    "DICOMStudyInstanceUID",
    "DICOMStudyId",
    "DICOMStudyDescription",
    "DICOMNumberOfStudyRelatedSeries",
    "DICOMNumberOfStudyRelatedInstances",
    "DICOMAccessionNumber",
    "DICOMSeriesInstanceUID",
    "DICOMSeriesModality",
    "DICOMSeriesBodyPart",
    "DICOMSeriesNumber",
    "DICOMStudyDate",
    "DICOMStudyTime",
)

_OPERATORS: Final = ("EQUAL", "BETWEEN")
_DATE_RE: Final = re.compile(r"\d{8}")
# DICOM TM: HH, HHMM, HHMMSS, HHMMSS.F{1,6}
_TIME_RE: Final = re.compile(r"(?P<h>\d{2})(?:(?P<m>\d{2})(?:(?P<s>\d{2})(?:\.(?P<f>\d{1,6}))?)?)?")
_REFUSED_NEXT_PAGE: Final = (
    "Invalid nextToken: the token is malformed, expired or belongs to another request."
)


class SearchableImageSet(Protocol):
    """What the backend hands to the search: one image set and its latest metadata document."""

    @property
    def image_set_id(self) -> str: ...
    @property
    def version(self) -> int: ...
    @property
    def created_at(self) -> datetime: ...
    @property
    def updated_at(self) -> datetime: ...
    @property
    def is_primary(self) -> bool: ...
    @property
    def document(self) -> Mapping[str, Any]: ...


# --------------------------------------------------------------------------------------------------
# Validation


def validate_search_criteria(criteria: Mapping[str, Any] | None) -> None:
    """Check the semantics of a ``SearchCriteria`` that the model's shapes cannot express.

    Parameters
    ----------
    criteria
        The botocore-parsed ``searchCriteria`` member, or ``None`` (no criteria: every image set).
        Timestamps (``createdAt``/``updatedAt`` values) are aware ``datetime`` objects.

    Raises
    ------
    ValidationException
        With a message naming the offending filter (1-based, as a user counts) and the rule.
    """
    if criteria is None:
        return
    if not isinstance(criteria, Mapping):
        raise ValidationException("searchCriteria must be an object.")
    filters = criteria.get("filters")
    if filters is not None:
        if not isinstance(filters, Sequence) or isinstance(filters, str | bytes):
            raise ValidationException("searchCriteria.filters must be a list.")
        if not 1 <= len(filters) <= MAX_FILTERS:
            raise ValidationException(
                f"searchCriteria.filters must hold 1 to {MAX_FILTERS} filters; got {len(filters)}."
            )
        for number, search_filter in enumerate(filters, start=1):
            _validate_filter(number, search_filter)
    sort = criteria.get("sort")
    if sort is not None:
        _validate_sort(sort)


def _validate_filter(number: int, search_filter: Any) -> None:
    where = f"searchCriteria.filters[{number}]"
    if not isinstance(search_filter, Mapping):
        raise ValidationException(f"{where} must be an object with 'values' and 'operator'.")
    operator = search_filter.get("operator")
    if operator not in _OPERATORS:
        raise ValidationException(
            f"{where}.operator must be one of {', '.join(_OPERATORS)}; got {operator!r}."
        )
    values = search_filter.get("values")
    if not isinstance(values, Sequence) or isinstance(values, str | bytes) or not values:
        raise ValidationException(f"{where}.values must be a non-empty list.")
    attributes = [_validate_value(f"{where}.values[{i}]", v) for i, v in enumerate(values, start=1)]
    if operator == "EQUAL":
        if len(values) != 1:
            raise ValidationException(
                f"{where}: the EQUAL operator takes exactly one value; got {len(values)}."
            )
        return
    # BETWEEN
    if len(values) != 2:
        raise ValidationException(
            f"{where}: the BETWEEN operator takes exactly two values (lowerBound, upperBound); "
            f"got {len(values)}."
        )
    if attributes[0] != attributes[1]:
        raise ValidationException(
            f"{where}: both BETWEEN values must use the same attribute; "
            f"got {attributes[0]} and {attributes[1]}."
        )
    attribute = attributes[0]
    if attribute not in RANGE_ATTRIBUTES:
        allowed = ", ".join(sorted(RANGE_ATTRIBUTES))
        raise ValidationException(
            f"{where}: the BETWEEN operator is not supported for {attribute}; it applies to {allowed}."
        )
    lower, upper = (_query_value(attribute, v[attribute]) for v in values)
    if lower > upper:
        raise ValidationException(
            f"{where}: BETWEEN values must be given as (lowerBound, upperBound); "
            "the lower bound is after the upper bound."
        )


def _validate_value(where: str, value: Any) -> str:
    """Check one ``SearchByAttributeValue`` and return the attribute it sets."""
    if not isinstance(value, Mapping):
        raise ValidationException(f"{where} must be an object with exactly one search attribute.")
    present: list[str] = [key for key, member in value.items() if member is not None]
    if len(present) != 1:
        raise ValidationException(
            f"{where} must set exactly one of {', '.join(SEARCH_ATTRIBUTES)}; got {len(present)}."
        )
    attribute = present[0]
    if attribute not in SEARCH_ATTRIBUTES:
        raise ValidationException(f"{where}: unknown search attribute {attribute!r}.")
    member = value[attribute]
    if attribute in {"createdAt", "updatedAt"}:
        _timestamp(member, where=f"{where}.{attribute}")
    elif attribute == "DICOMStudyDateAndTime":
        _query_study_datetime(member, where=f"{where}.{attribute}")
    elif attribute == "isPrimary":
        if not isinstance(member, bool):
            raise ValidationException(f"{where}.isPrimary must be a boolean.")
    elif not isinstance(member, str):
        raise ValidationException(f"{where}.{attribute} must be a string.")
    return attribute


def _validate_sort(sort: Any) -> None:
    if not isinstance(sort, Mapping):
        raise ValidationException("searchCriteria.sort must be an object with 'sortField' and 'sortOrder'.")
    field, order = sort.get("sortField"), sort.get("sortOrder")
    if field not in SORT_FIELDS:
        raise ValidationException(
            f"searchCriteria.sort.sortField must be one of {', '.join(SORT_FIELDS)}; got {field!r}."
        )
    if order not in SORT_ORDERS:
        raise ValidationException(
            f"searchCriteria.sort.sortOrder must be one of {', '.join(SORT_ORDERS)}; got {order!r}."
        )


# --------------------------------------------------------------------------------------------------
# Values: query side (strict) and document side (lenient)


def _timestamp(value: Any, *, where: str) -> datetime:
    """A request timestamp as an aware UTC datetime (naive means UTC, as botocore serializes it)."""
    if isinstance(value, datetime):
        return value.replace(tzinfo=UTC) if value.tzinfo is None else value.astimezone(UTC)
    if isinstance(value, int | float) and not isinstance(value, bool):
        return datetime.fromtimestamp(value, tz=UTC)
    if isinstance(value, str):
        try:
            parsed = datetime.fromisoformat(value)
        except ValueError:
            pass
        else:
            return _timestamp(parsed, where=where)
    raise ValidationException(f"{where} must be a timestamp; got {value!r}.")


def _as_utc(value: datetime) -> datetime:
    return value.replace(tzinfo=UTC) if value.tzinfo is None else value.astimezone(UTC)


def _query_study_datetime(value: Any, *, where: str) -> datetime:
    """``DICOMStudyDateAndTime`` → naive datetime; a missing or empty time is 00:00 (spec 7.2)."""
    if not isinstance(value, Mapping):
        raise ValidationException(
            f"{where} must be an object with DICOMStudyDate and optional DICOMStudyTime."
        )
    study_date = value.get("DICOMStudyDate")
    if not isinstance(study_date, str) or not _DATE_RE.fullmatch(study_date):
        raise ValidationException(
            f"{where}.DICOMStudyDate must be a date in YYYYMMDD format; got {study_date!r}."
        )
    parsed_date = _parse_date(study_date)
    if parsed_date is None:
        raise ValidationException(f"{where}.DICOMStudyDate is not a valid calendar date: {study_date!r}.")
    study_time = value.get("DICOMStudyTime")
    if study_time is None or study_time == "":
        return datetime.combine(parsed_date, time())
    parsed_time = _parse_time(study_time) if isinstance(study_time, str) else None
    if parsed_time is None:
        raise ValidationException(
            f"{where}.DICOMStudyTime must be a time in HHMMSS.FFFFFF format (HH, HHMM, HHMMSS and up to six "
            f"fraction digits); got {study_time!r}."
        )
    return datetime.combine(parsed_date, parsed_time)


def _query_value(attribute: str, member: Any) -> Any:
    """A validated query value in the form it is compared in."""
    if attribute in {"createdAt", "updatedAt"}:
        return _timestamp(member, where=attribute)
    if attribute == "DICOMStudyDateAndTime":
        return _query_study_datetime(member, where=attribute)
    return member


def _parse_date(text: str) -> date | None:
    digits = text.strip().replace(".", "").replace("-", "")
    if not _DATE_RE.fullmatch(digits):
        return None
    try:
        return date(int(digits[:4]), int(digits[4:6]), int(digits[6:]))
    except ValueError:
        return None


def _parse_time(text: str) -> time | None:
    match = _TIME_RE.fullmatch(text.strip().replace(":", ""))
    if match is None:
        return None
    hour, minute, second = (int(match[g] or 0) for g in ("h", "m", "s"))
    micro = int((match["f"] or "").ljust(6, "0"))
    if hour > 23 or minute > 59 or second > 59:
        return None
    return time(hour, minute, second, micro)


def _dicom(level: Any) -> Mapping[str, Any]:
    """The ``DICOM`` object of a document level, or an empty mapping."""
    if isinstance(level, Mapping):
        dicom = level.get("DICOM")
        if isinstance(dicom, Mapping):
            return dicom
    return {}


def _series(document: Mapping[str, Any]) -> Mapping[str, Any]:
    study = document.get("Study")
    series = study.get("Series") if isinstance(study, Mapping) else None
    return series if isinstance(series, Mapping) else {}


def _text(value: Any) -> str | None:
    """A document value as the string the summary carries (multi-values joined with a backslash)."""
    if value is None:
        return None
    if isinstance(value, str):
        return value
    if isinstance(value, Mapping):  # a PN in DICOM JSON form
        return _text(value.get("Alphabetic"))
    if isinstance(value, list):
        return "\\".join("" if v is None else str(v) for v in value)
    return str(value)


def _integer(value: Any) -> int | None:
    """An IS value (``"3"``, ``" 3 "``) or a number as an int; anything else is ``None``."""
    if isinstance(value, bool):
        return None
    if isinstance(value, int):
        return value
    if isinstance(value, list) and value:
        return _integer(value[0])
    if isinstance(value, str):
        try:
            return int(value.strip())
        except ValueError:
            return None
    return None


def _document_study_datetime(document: Mapping[str, Any]) -> datetime | None:
    study = _dicom(document.get("Study"))
    study_date = _text(study.get("StudyDate"))
    parsed_date = _parse_date(study_date) if study_date else None
    if parsed_date is None:
        return None
    study_time = _text(study.get("StudyTime"))
    parsed_time = (_parse_time(study_time) if study_time else None) or time()
    return datetime.combine(parsed_date, parsed_time)


def _series_uids(document: Mapping[str, Any]) -> set[str]:
    uids: set[str] = set()
    for key, series in _series(document).items():
        uids.add(str(key))
        uid = _text(_dicom(series).get("SeriesInstanceUID"))
        if uid:
            uids.add(uid)
    return uids


# --------------------------------------------------------------------------------------------------
# Filtering and sorting


def _patient(attribute: str) -> Callable[[SearchableImageSet], str | None]:
    return lambda image_set: _text(_dicom(image_set.document.get("Patient")).get(attribute))


def _study(attribute: str) -> Callable[[SearchableImageSet], str | None]:
    return lambda image_set: _text(_dicom(image_set.document.get("Study")).get(attribute))


#: How each comparable search (and sort) attribute is read from an image set; ``None`` when the document
#: lacks it.  ``DICOMSeriesInstanceUID`` is a membership test instead (see :func:`_matcher`).
_ACTUAL: Final[Mapping[str, Callable[[SearchableImageSet], Any]]] = {
    "DICOMPatientId": _patient("PatientID"),
    "DICOMAccessionNumber": _study("AccessionNumber"),
    "DICOMStudyId": _study("StudyID"),
    "DICOMStudyInstanceUID": _study("StudyInstanceUID"),
    "createdAt": lambda image_set: _as_utc(image_set.created_at),
    "updatedAt": lambda image_set: _as_utc(image_set.updated_at),
    "DICOMStudyDateAndTime": lambda image_set: _document_study_datetime(image_set.document),
    "isPrimary": lambda image_set: image_set.is_primary,
}


def _matcher(search_filter: Mapping[str, Any]) -> Callable[[SearchableImageSet], bool]:
    values: list[Mapping[str, Any]] = list(search_filter["values"])
    attribute = next(key for key, member in values[0].items() if member is not None)
    wanted = [_query_value(attribute, v[attribute]) for v in values]
    if attribute == "DICOMSeriesInstanceUID":
        uid = wanted[0]
        return lambda image_set: uid in _series_uids(image_set.document)
    actual = _ACTUAL[attribute]
    if search_filter["operator"] == "EQUAL":
        target = wanted[0]
        return lambda image_set: (value := actual(image_set)) is not None and value == target
    lower, upper = wanted
    return lambda image_set: (value := actual(image_set)) is not None and lower <= value <= upper


def search_image_sets(
    image_sets: Iterable[SearchableImageSet], criteria: Mapping[str, Any] | None
) -> list[SearchableImageSet]:
    """Filter and sort image sets as SearchImageSets does.

    Parameters
    ----------
    image_sets
        The candidate image sets of one ACTIVE data store (the backend leaves out deleted ones).
    criteria
        The botocore-parsed ``searchCriteria``; ``None`` or ``{}`` matches every image set.

    Returns
    -------
    list
        The matching image sets (all filters ANDed), ordered by ``sort`` or, by default, ``updatedAt``
        descending.  Ties are broken by ``imageSetId`` ascending so pages are stable; image sets without a
        parsable ``(0008,0020) StudyDate`` sort last when sorting on ``DICOMStudyDateAndTime``.

    Raises
    ------
    ValidationException
        If the criteria break a rule of :func:`validate_search_criteria`.
    """
    validate_search_criteria(criteria)
    criteria = criteria or {}
    matchers = [_matcher(f) for f in criteria.get("filters") or ()]
    selected = [s for s in image_sets if all(match(s) for match in matchers)]
    sort = criteria.get("sort") or DEFAULT_SORT
    actual = _ACTUAL[sort["sortField"]]
    selected.sort(key=lambda s: s.image_set_id)
    present = [s for s in selected if actual(s) is not None]
    missing = [s for s in selected if actual(s) is None]
    present.sort(key=actual, reverse=sort["sortOrder"] == "DESC")
    return present + missing


# --------------------------------------------------------------------------------------------------
# Summaries


def dicom_tags(document: Mapping[str, Any]) -> dict[str, Any]:
    """The ``DICOMTags`` of a search summary, built from an image set's metadata document.

    Every member of the model's ``DICOMTags`` shape is present, in model order; a value the document
    lacks (or holds as ``null``) is ``None``.

    * Patient members from ``Patient.DICOM``: ``(0010,0020) PatientID``, ``(0010,0010) PatientName``,
      ``(0010,0030) PatientBirthDate``, ``(0010,0040) PatientSex``.
    * Study members from ``Study.DICOM``: ``(0020,000D) StudyInstanceUID``, ``(0020,0010) StudyID``,
      ``(0008,1030) StudyDescription``, ``(0008,0050) AccessionNumber``, ``(0008,0020) StudyDate``,
      ``(0008,0030) StudyTime`` (kept verbatim, fraction included: spec 7.3).
    * ``DICOMNumberOfStudyRelatedSeries`` / ``...Instances`` (integers in the model) are counted in the
      document: ``(0020,1206)`` and ``(0020,1208)`` are not in the service's study-level normalization
      list, so the document never carries them.
    * Series members from the image set's series (the first one, should a document hold several):
      ``(0020,000E) SeriesInstanceUID`` (the series key if the attribute is missing), ``(0008,0060)
      Modality``, ``(0018,0015) BodyPartExamined``, ``(0020,0011) SeriesNumber`` as an integer (an IS
      that does not parse is ``None``).
    """
    patient = _dicom(document.get("Patient"))
    study = _dicom(document.get("Study"))
    series_map = _series(document)
    series_uid, series_level = next(iter(series_map.items()), (None, None))
    series = _dicom(series_level)
    instances = 0
    for each in series_map.values():
        members = each.get("Instances") if isinstance(each, Mapping) else None
        instances += len(members) if isinstance(members, Mapping) else 0
    return {
        "DICOMPatientId": _text(patient.get("PatientID")),
        "DICOMPatientName": _text(patient.get("PatientName")),
        "DICOMPatientBirthDate": _text(patient.get("PatientBirthDate")),
        "DICOMPatientSex": _text(patient.get("PatientSex")),
        "DICOMStudyInstanceUID": _text(study.get("StudyInstanceUID")),
        "DICOMStudyId": _text(study.get("StudyID")),
        "DICOMStudyDescription": _text(study.get("StudyDescription")),
        "DICOMNumberOfStudyRelatedSeries": len(series_map),
        "DICOMNumberOfStudyRelatedInstances": instances,
        "DICOMAccessionNumber": _text(study.get("AccessionNumber")),
        "DICOMSeriesInstanceUID": _text(series.get("SeriesInstanceUID")) or _text(series_uid),
        "DICOMSeriesModality": _text(series.get("Modality")),
        "DICOMSeriesBodyPart": _text(series.get("BodyPartExamined")),
        "DICOMSeriesNumber": _integer(series.get("SeriesNumber")),
        "DICOMStudyDate": _text(study.get("StudyDate")),
        "DICOMStudyTime": _text(study.get("StudyTime")),
    }


def summary(image_set: SearchableImageSet) -> dict[str, Any]:
    """One ``ImageSetsMetadataSummary`` as Python values (datetimes stay ``datetime``).

    Members in model order: ``imageSetId``, ``version`` (an integer, unlike ``versionId`` elsewhere),
    ``createdAt``, ``updatedAt``, then ``lastAccessedAt`` and ``storageTier`` only when the backend's
    object has such attributes (``last_accessed_at``, ``storage_tier``) set, ``DICOMTags`` and
    ``isPrimary``.
    """
    result: dict[str, Any] = {
        "imageSetId": image_set.image_set_id,
        "version": int(image_set.version),
        "createdAt": image_set.created_at,
        "updatedAt": image_set.updated_at,
    }
    last_accessed_at = getattr(image_set, "last_accessed_at", None)
    if last_accessed_at is not None:
        result["lastAccessedAt"] = last_accessed_at
    storage_tier = getattr(image_set, "storage_tier", None)
    if storage_tier is not None:
        result["storageTier"] = storage_tier
    result["DICOMTags"] = dicom_tags(image_set.document)
    result["isPrimary"] = image_set.is_primary
    return result


# --------------------------------------------------------------------------------------------------
# Pagination


@functools.cache
def _token_key() -> bytes:
    """The per-process key that signs pagination tokens (made on first use, not at import)."""
    return secrets.token_bytes(32)


def _json_default(value: Any) -> Any:
    if isinstance(value, datetime):
        return _as_utc(value).isoformat()
    if isinstance(value, date | time):
        return value.isoformat()
    if isinstance(value, bytes):
        return base64.b64encode(value).decode("ascii")
    raise TypeError(f"cannot encode {type(value).__name__} in a pagination scope")


def scope_key(*parts: Any) -> str:
    """A canonical string naming one listing, for :func:`paginate`'s ``scope``.

    Pass everything that defines the result list, e.g. ``scope_key("SearchImageSets", datastore_id,
    criteria)`` or ``scope_key("ListDICOMImportJobs", datastore_id, job_status)``.  Mappings are
    serialized with sorted keys and datetimes in UTC, so equal requests give equal scopes.
    """
    return json.dumps(parts, sort_keys=True, separators=(",", ":"), default=_json_default)


def _scope_digest(scope: str) -> str:
    return hashlib.sha256(scope.encode("utf-8")).hexdigest()[:16]


def _sign(payload: bytes) -> bytes:
    return hmac.new(_token_key(), payload, hashlib.sha256).digest()[:16]


def _encode_token(offset: int, scope: str) -> str:
    payload = json.dumps({"o": offset, "s": _scope_digest(scope)}, separators=(",", ":")).encode("ascii")
    return base64.urlsafe_b64encode(payload + _sign(payload)).decode("ascii")


def _decode_token(token: str, scope: str) -> int:
    try:
        raw = base64.urlsafe_b64decode(token.encode("ascii"))
    except (binascii.Error, ValueError, UnicodeEncodeError):
        raise ValidationException(_REFUSED_NEXT_PAGE) from None
    payload, mac = raw[:-16], raw[-16:]
    if len(raw) <= 16 or not hmac.compare_digest(mac, _sign(payload)):
        raise ValidationException(_REFUSED_NEXT_PAGE)
    try:
        fields = json.loads(payload)
    except ValueError:
        raise ValidationException(_REFUSED_NEXT_PAGE) from None
    if not isinstance(fields, dict) or fields.get("s") != _scope_digest(scope):
        raise ValidationException(_REFUSED_NEXT_PAGE)
    offset = fields.get("o")
    if not isinstance(offset, int) or isinstance(offset, bool) or offset < 0:
        raise ValidationException(_REFUSED_NEXT_PAGE)
    return offset


def paginate(
    items: Sequence[T], *, max_results: int | None, next_token: str | None, default_max: int, scope: str
) -> tuple[list[T], str | None]:
    """One page of ``items`` and the token for the next page, for every List*/Search operation.

    Parameters
    ----------
    items
        The full, already ordered result list.  Build it the same way on every page.
    max_results
        The request's ``maxResults`` (range already checked by the HTTP layer), or ``None``.
    next_token
        The request's ``nextToken``, or ``None`` for the first page.
    default_max
        Page size when ``max_results`` is ``None``.
    scope
        What the token is valid for, e.g. from :func:`scope_key`: the operation, the parent resource
        and every filter.  A token is refused in any other scope.

    Returns
    -------
    tuple
        ``(page, token)``; ``token`` is ``None`` on the last page.  Tokens are URL-safe base64 of a small
        JSON offset record and a scope digest, signed with a per-process HMAC key: opaque to clients,
        tamper-evident, and invalid after an emulator restart (as an expired token would be).

    Raises
    ------
    ValidationException
        ``"Invalid nextToken: ..."`` for garbage, a modified token, or a token from another scope;
        or when ``max_results`` is below 1.
    """
    if default_max < 1:
        raise ValueError("default_max must be at least 1")
    if max_results is not None and max_results < 1:
        raise ValidationException(f"maxResults must be at least 1; got {max_results}.")
    size = default_max if max_results is None else max_results
    start = 0 if next_token is None else _decode_token(next_token, scope)
    end = start + size
    page = list(items[start:end])
    return page, (_encode_token(end, scope) if end < len(items) else None)

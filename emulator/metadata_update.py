"""UpdateImageSetMetadata ``DICOMUpdates``: apply an update payload to an image set metadata document.

Pure: documents in, documents out; the input document is never modified.  The document is the
``SchemaVersion`` 1.1 metadata of spec §4.2, and a payload is the decoded ``updatableAttributes`` or
``removableAttributes`` blob of spec §5.3: a partial copy of that hierarchy.

Decisions where the seeds are silent (the backend and the tests rely on each of them):

* **What ``force`` lifts.**  The constraint list of spec §5.4 (FR:18520-18535) is an older translation of
  the Developer Guide page "DICOM metadata constraints"; its current English edition adds "unless the
  ``force`` flag is set" to items 3-7, and botocore's ``force`` documentation names
  ``Tag.StudyInstanceUID``, ``Tag.SeriesInstanceUID``, ``Tag.SOPInstanceUID``, ``Tag.StudyID`` and
  "adding, removing, or updating private tags for an individual SOP Instance".  So ``force`` lifts:
  private attributes (instance level only), the four UID/ID attributes, SQ attributes, multi-valued
  attributes, values that do not fit the VR, and attributes outside the DICOM dictionary.  It never
  lifts: the service-generated attributes (``(7FE0,0010) PixelData`` is one of them, so it stays
  refused although the force list also names it), attributes at the wrong level ("across modules"),
  series or SOP instances absent from the image set, and malformed payloads.
* **Private attributes** are refused in both blobs without ``force`` (the garbled proviso of §5.4 item 1,
  "unless the update constraint applies to both updatableAttributes and removableAttributes", is read
  as "the constraint applies to both").  A private attribute added with ``force`` must carry its VR in
  ``DICOMVRs`` (EX ex.5) unless the instance already holds it (EX ex.6); the VR is kept in the
  instance's ``DICOMVRs`` map and dropped when the attribute is removed.
* **Removals are checked like updates** for items 1-5 and 7 (an SQ or multi-valued attribute cannot be
  removed without ``force`` either); the VR value rules (item 6) do not apply because a removal names
  the value the document already holds.  "Attribute key and value must match the existing attribute"
  (FR:5460, FR:5587): a removal whose key is absent, or whose value differs from the stored one, is
  refused with :class:`MetadataConstraintError` and nothing is applied; it is never skipped silently.
* **Order**: removals first, then updates, each validated against the document as it stands at that
  point.  The removal rule speaks of the *existing* attribute, i.e. the stored value before this
  request; updates "insert or overwrite" (FR:5102-5104), so an attribute both removed and updated ends
  with the updated value, and an update aimed at a series or instance removed by the same request is
  refused because its module no longer exists.
* **Forced UID updates re-key the hierarchy**: ``SOPInstanceUID`` at instance level (EX ex.7) moves the
  instance to the new key of ``Instances``, ``SeriesInstanceUID`` at series level moves the series in
  ``Study.Series``, ``StudyInstanceUID`` only changes ``Study.DICOM``.  These three must always be
  valid UIDs (they are keys of the document and of DICOMweb paths) and unique in the image set, with or
  without ``force``.  Removing them with ``force`` leaves the keys as they are.
* **Multi-valued** means the dictionary VM allows more than one value (``(0008,0008) ImageType`` 2-n,
  ``(0008,1048) PhysiciansOfRecord`` 1-n, ...) or the payload gives a JSON array.
* **VR value rules** are pydicom's (lengths, character repertoires, numeric ranges) with calendar checks
  for DA/DT, no ranges (stored values, not queries), and the service's own relaxations of 2024-06-28
  (spec §1.5, §4.8): UIDs up to 256 characters with leading zeros allowed, ``(0010,0010) PatientName``,
  ``(0010,0020) PatientID`` and ``(0008,0050) AccessionNumber`` up to 256 characters.  Binary VRs
  (OB, OW, OD, OF, OL, OV, UN) cannot be given as JSON and need ``force``.
* **Payload size**: each blob on its own may hold at most 10 KB = 10,240 bytes (the quota "max payload
  accepted by UpdateImageSetMetadata", FR:18710).  Per blob, because botocore's ``DICOMUpdates`` gives
  each blob its own maximum length (10000 in the first API reference, 30000 in the current model).
  Exceeding it raises ServiceQuotaExceededException, the model's error for "the request caused a service
  quota to be exceeded"; the quota is adjustable, hence the ``max_payload_bytes`` parameter.
* **Errors**: malformed payloads raise :class:`~emulator.exceptions.ValidationException`; well-formed
  payloads that break a constraint of §5.4 or the removal rule raise :class:`MetadataConstraintError`
  (a ValidationException too, so the wire error is the same).  The backend may report the latter
  synchronously or as ``UPDATE_FAILED`` with ``message`` (FR:5086); every message matches the model's
  ``message`` pattern ``[\\w -:`]+`` and never contains an attribute value.
"""

from __future__ import annotations

import copy
import datetime
import json
import math
import re
from collections.abc import Callable, Iterator, Mapping
from dataclasses import dataclass, field
from typing import Any, Final

from pydicom.datadict import (
    dictionary_has_tag,
    dictionary_VM,
    dictionary_VR,
    keyword_for_tag,
    tag_for_keyword,
)
from pydicom.valuerep import VR

from emulator.exceptions import ServiceQuotaExceededException, ValidationException
from emulator.imaging.levels import Level, level_of_tag

MAX_UPDATE_PAYLOAD_BYTES: Final = 10 * 1024
"""Default quota on each of ``updatableAttributes`` and ``removableAttributes``, in decoded bytes."""

MAX_METADATA_BYTES: Final = 50 * 1024 * 1024
"""Default quota on the size of an image set's metadata document (FR:18715), as compact UTF-8 JSON."""

SCHEMA_VERSION: Final = "1.1"

UPDATABLE: Final = "updatableAttributes"
REMOVABLE: Final = "removableAttributes"

GENERATED_ATTRIBUTES: Final = frozenset(
    {
        "SchemaVersion",
        "DatastoreID",
        "ImageSetID",
        "PixelData",
        "Checksum",
        "Width",
        "Height",
        "MinPixelValue",
        "MaxPixelValue",
        "FrameSizeInBytes",
        "ImageFrames",
        "PixelDataChecksumFromBaseToFullResolution",
    }
)
"""Keys the service generates (FR:18525-18528, plus the frame containers); never changeable."""

FORCE_ONLY_ATTRIBUTES: Final = frozenset(
    {"StudyInstanceUID", "SeriesInstanceUID", "SOPInstanceUID", "StudyID"}
)
"""Attributes only a forced update may change (botocore's ``force`` documentation)."""

_HIERARCHY_UIDS: Final = {
    "StudyInstanceUID": Level.STUDY,
    "SeriesInstanceUID": Level.SERIES,
    "SOPInstanceUID": Level.INSTANCE,
}

_SERVICE_MAX_LENGTH: Final = {"PatientName": 256, "PatientID": 256, "AccessionNumber": 256}
"""Import limits raised by the 2024-06-28 release (spec §4.8); updates accept what imports accept."""

_MAX_UID_LENGTH: Final = 256
_STANDARD_VRS: Final = frozenset(vr.value for vr in VR if " or " not in vr.value)
_BULK_VRS: Final = frozenset({"OB", "OD", "OF", "OL", "OV", "OW", "UN"})
_HEX_TAG = re.compile(r"[0-9A-Fa-f]{8}")
_UID = re.compile(r"[0-9]+(\.[0-9]+)*")
_MESSAGE_UNSAFE = re.compile(r"[^A-Za-z0-9_ -:`]")


class MetadataConstraintError(ValidationException):
    """A well-formed payload that breaks a DICOM metadata constraint (spec §5.4) or the removal rule."""


# --------------------------------------------------------------------------------------------------
# Public API


def apply_dicom_updates(
    document: Mapping[str, Any],
    *,
    updatable: bytes | None,
    removable: bytes | None,
    force: bool,
    max_payload_bytes: int = MAX_UPDATE_PAYLOAD_BYTES,
) -> dict[str, Any]:
    """Return ``document`` with a ``DICOMUpdates`` request applied: removals first, then updates.

    Parameters
    ----------
    document : Mapping
        The image set's current metadata document (spec §4.2).  Not modified.
    updatable, removable : bytes or None
        The decoded ``updatableAttributes`` / ``removableAttributes`` blobs (JSON, spec §5.3).
    force : bool
        The request's ``force`` flag (see the module docstring for what it lifts).
    max_payload_bytes : int
        The payload quota, per blob.

    Returns
    -------
    dict
        A new document; the input shares nothing with it.

    Raises
    ------
    ServiceQuotaExceededException
        A blob is larger than ``max_payload_bytes``.
    ValidationException
        A blob is not a well-formed update payload, or neither blob is given.
    MetadataConstraintError
        The payload breaks a constraint, or a removal does not match the stored attribute.
    """
    if updatable is None and removable is None:
        raise ValidationException("DICOMUpdates must contain updatableAttributes or removableAttributes")
    for role, blob in ((REMOVABLE, removable), (UPDATABLE, updatable)):
        if blob is not None and len(blob) > max_payload_bytes:
            raise ServiceQuotaExceededException(
                f"{role} is {len(blob)} bytes, above the UpdateImageSetMetadata quota of "
                f"{max_payload_bytes} bytes per payload"
            )
    removals = _parse_payload(removable, REMOVABLE) if removable is not None else None
    updates = _parse_payload(updatable, UPDATABLE) if updatable is not None else None
    result: dict[str, Any] = copy.deepcopy(dict(document))
    if removals is not None:
        _Removal(result, force).apply(removals)
    if updates is not None:
        _Update(result, force).apply(updates)
    return result


def metadata_size(document: Mapping[str, Any]) -> int:
    """Size of ``document`` in bytes, as compact UTF-8 JSON (how the quota of FR:18715 is measured here)."""
    return len(json.dumps(document, separators=(",", ":"), ensure_ascii=False).encode())


def validate_metadata_size(document: Mapping[str, Any], *, max_bytes: int = MAX_METADATA_BYTES) -> None:
    """Refuse a metadata document above the 50 MB quota (FR:18715: per import, copy and update).

    Raises
    ------
    ServiceQuotaExceededException
        The quota is adjustable, so exceeding it is a quota error rather than a validation error.  The
        message fits the model's ``message`` pattern, so the backend can record it as the
        ``UPDATE_FAILED`` / ``COPY_FAILED`` message of an asynchronous failure.
    """
    size = metadata_size(document)
    if size > max_bytes:
        raise ServiceQuotaExceededException(
            f"The resulting image set metadata is {size} bytes, above the quota of {max_bytes} bytes"
        )


def study_level_payload(blob: bytes | None) -> bytes | None:
    """The Patient- and Study-level part of an update payload, for ``includeStudyImageSets``.

    botocore documents ``includeStudyImageSets`` as "apply the metadata updates to all image sets in the
    same Study as the requested image set ID".  Sibling image sets hold other series, so only the
    ``Patient.DICOM`` and ``Study.DICOM`` parts can apply to them.  The backend should, after applying
    the full request to the requested image set:

    1. find the other image sets of the data store whose ``Study.DICOM`` ``(0020,000D)
       StudyInstanceUID`` equals the requested image set's value *before* the update;
    2. for each, call :func:`apply_dicom_updates` with ``updatable=study_level_payload(updatable)``,
       ``removable=study_level_payload(removable)`` and the same ``force`` (skip it when both are None);
    3. store the result as a new version with workflow status ``UPDATING_FOR_STUDY_CONSISTENCY``
       (a status of botocore's enum) ending ``UPDATED``, or ``UPDATE_FAILED`` with the error's message
       when the sibling refuses it (e.g. a removal whose value does not match the sibling's).

    Parameters
    ----------
    blob : bytes or None
        A decoded ``updatableAttributes`` or ``removableAttributes`` blob.

    Returns
    -------
    bytes or None
        Compact JSON with ``SchemaVersion``, ``Patient`` and ``Study.DICOM`` only; None when the payload
        has nothing at those levels.

    Raises
    ------
    ValidationException
        ``blob`` is not a well-formed update payload.
    """
    if blob is None:
        return None
    payload = _parse_payload(blob, "payload", allow_removal_markers=True)
    if not payload.patient and not payload.study:
        return None
    part: dict[str, Any] = {"SchemaVersion": 1.1}
    if payload.patient:
        part["Patient"] = {"DICOM": dict(payload.patient)}
    if payload.study:
        part["Study"] = {"DICOM": dict(payload.study)}
    return json.dumps(part, separators=(",", ":"), ensure_ascii=False).encode()


# --------------------------------------------------------------------------------------------------
# Parsing: bytes -> a typed, structurally valid payload


@dataclass
class _InstancePart:
    attributes: dict[str, Any] = field(default_factory=dict)
    vrs: dict[str, str] = field(default_factory=dict)
    whole: bool = False  # ``{}`` in removableAttributes: remove the SOP instance


@dataclass
class _SeriesPart:
    attributes: dict[str, Any] = field(default_factory=dict)
    instances: dict[str, _InstancePart] = field(default_factory=dict)
    whole: bool = False  # ``{}`` in removableAttributes: remove the series


@dataclass
class _Payload:
    role: str
    patient: dict[str, Any] = field(default_factory=dict)
    study: dict[str, Any] = field(default_factory=dict)
    series: dict[str, _SeriesPart] = field(default_factory=dict)


class _DuplicateKeyError(Exception):
    def __init__(self, key: str) -> None:
        super().__init__(key)
        self.key = key


def _no_duplicates(pairs: list[tuple[str, Any]]) -> dict[str, Any]:
    result: dict[str, Any] = {}
    for key, value in pairs:
        if key in result:
            raise _DuplicateKeyError(key)
        result[key] = value
    return result


def _reject_constant(name: str) -> Any:
    raise ValueError(name)


def _load_json(blob: bytes, role: str) -> Any:
    try:
        text = blob.decode("utf-8")
    except UnicodeDecodeError as error:
        raise ValidationException(f"{role} is not UTF-8 text (byte {error.start})") from None
    try:
        return json.loads(text, object_pairs_hook=_no_duplicates, parse_constant=_reject_constant)
    except _DuplicateKeyError as error:
        raise ValidationException(f"{role} repeats the key {_safe(error.key)}") from None
    except json.JSONDecodeError as error:
        raise ValidationException(
            f"{role} is not valid JSON: {_safe(error.msg)} at line {error.lineno} column {error.colno}"
        ) from None
    except ValueError:
        raise ValidationException(f"{role} contains NaN or Infinity, which JSON does not allow") from None


def _parse_payload(blob: bytes, role: str, *, allow_removal_markers: bool = False) -> _Payload:
    data = _load_json(blob, role)
    if not isinstance(data, dict):
        raise ValidationException(f"{role} must be a JSON object")
    removal = role == REMOVABLE or allow_removal_markers
    _check_keys(data, {"SchemaVersion", "Patient", "Study"}, role, "the top level")
    if "SchemaVersion" not in data:
        raise ValidationException(f"{role} must contain SchemaVersion 1.1")
    version = data["SchemaVersion"]
    if isinstance(version, bool) or version not in (1.1, SCHEMA_VERSION):
        raise ValidationException(f"{role} has an unsupported SchemaVersion, only 1.1 is supported")
    payload = _Payload(role)
    if "Patient" in data:
        patient = _object(data["Patient"], role, "Patient")
        _check_keys(patient, {"DICOM"}, role, "Patient")
        payload.patient = _attributes(patient.get("DICOM", {}), role, "Patient.DICOM")
    if "Study" in data:
        study = _object(data["Study"], role, "Study")
        _check_keys(study, {"DICOM", "Series"}, role, "Study")
        payload.study = _attributes(study.get("DICOM", {}), role, "Study.DICOM")
        for uid, series in _object(study.get("Series", {}), role, "Study.Series").items():
            payload.series[uid] = _parse_series(series, uid, role, removal=removal)
    return payload


def _parse_series(data: Any, uid: str, role: str, *, removal: bool) -> _SeriesPart:
    where = f"Series {_safe(uid)}"
    series = _object(data, role, where)
    if not series and removal:
        return _SeriesPart(whole=True)
    _check_keys(series, {"DICOM", "Instances"}, role, where)
    part = _SeriesPart(attributes=_attributes(series.get("DICOM", {}), role, f"{where} DICOM"))
    for sop_uid, instance in _object(series.get("Instances", {}), role, f"{where} Instances").items():
        part.instances[sop_uid] = _parse_instance(instance, sop_uid, role, removal=removal)
    return part


def _parse_instance(data: Any, uid: str, role: str, *, removal: bool) -> _InstancePart:
    where = f"SOP instance {_safe(uid)}"
    instance = _object(data, role, where)
    if not instance and removal:
        return _InstancePart(whole=True)
    allowed = {"DICOM"} if role == REMOVABLE else {"DICOM", "DICOMVRs"}
    _check_keys(instance, allowed, role, where)
    part = _InstancePart(attributes=_attributes(instance.get("DICOM", {}), role, f"{where} DICOM"))
    for key, vr in _object(instance.get("DICOMVRs", {}), role, f"{where} DICOMVRs").items():
        normalized = _normalize_key(key, role)
        if not isinstance(vr, str) or vr not in _STANDARD_VRS:
            raise ValidationException(
                f"{role}: {where} DICOMVRs gives {_safe(normalized)} a VR that is not a DICOM VR"
            )
        if normalized not in part.attributes:
            raise ValidationException(
                f"{role}: {where} DICOMVRs names {_safe(normalized)}, which its DICOM object does not update"
            )
        part.vrs[normalized] = vr
    return part


def _object(value: Any, role: str, where: str) -> dict[str, Any]:
    if not isinstance(value, dict):
        raise ValidationException(f"{role}: {where} must be a JSON object")
    return value


def _check_keys(data: Mapping[str, Any], allowed: set[str], role: str, where: str) -> None:
    for key in data:
        if key in allowed:
            continue
        if key in GENERATED_ATTRIBUTES:
            raise MetadataConstraintError(
                f"{role}: {key} is generated by HealthImaging and cannot be updated or removed"
            )
        expected = ", ".join(sorted(allowed))
        raise ValidationException(f"{role}: unknown key {_safe(key)} in {where} (expected {expected})")


def _attributes(value: Any, role: str, where: str) -> dict[str, Any]:
    attributes: dict[str, Any] = {}
    for key, item in _object(value, role, where).items():
        normalized = _normalize_key(key, role)
        if normalized in attributes:
            raise ValidationException(f"{role}: {where} gives {_safe(normalized)} twice")
        _check_json_value(item, role, where, normalized)
        attributes[normalized] = item
    return attributes


def _normalize_key(key: str, role: str) -> str:
    """Keywords stay as they are; 8-hex tags become upper case, and public tags must use their keyword."""
    if not _HEX_TAG.fullmatch(key):
        return key
    tag = int(key, 16)
    keyword = keyword_for_tag(tag)
    if not _is_private(tag) and keyword and tag_for_keyword(keyword) == tag:
        raise ValidationException(f"{role}: give {_tag_text(tag)} by its keyword {keyword}, not as {key}")
    return key.upper()


def _check_json_value(value: Any, role: str, where: str, key: str) -> None:
    """Values are null, strings, numbers, or arrays of those or of objects (sequence items)."""
    scalar = value is None or (isinstance(value, str | int | float) and not isinstance(value, bool))
    if scalar:
        return
    if isinstance(value, list) and all(
        item is None or (isinstance(item, str | int | float | dict) and not isinstance(item, bool))
        for item in value
    ):
        return
    raise ValidationException(
        f"{role}: {where} gives {_safe(key)} a value that is not a string, number, null or array"
    )


# --------------------------------------------------------------------------------------------------
# Attributes: what a key means, and the constraints of spec §5.4


@dataclass(frozen=True)
class _Attribute:
    key: str
    tag: int | None  # None: neither a dictionary keyword nor a tag

    @classmethod
    def of(cls, key: str) -> _Attribute:
        if _HEX_TAG.fullmatch(key):
            return cls(key, int(key, 16))
        return cls(key, tag_for_keyword(key))

    @property
    def private(self) -> bool:
        return self.tag is not None and _is_private(self.tag)

    @property
    def standard(self) -> bool:
        return self.tag is not None and not self.private and dictionary_has_tag(self.tag)

    @property
    def level(self) -> Level:
        return level_of_tag(self.tag) if self.standard and self.tag is not None else Level.INSTANCE

    @property
    def vr(self) -> str | None:
        return dictionary_VR(self.tag) if self.standard and self.tag is not None else None

    @property
    def multi_valued_by_dictionary(self) -> bool:
        return self.standard and self.tag is not None and dictionary_VM(self.tag) != "1"

    def __str__(self) -> str:
        if self.tag is None:
            return _safe(self.key)
        if self.private:
            return f"private attribute {_tag_text(self.tag)}"
        return (
            f"{_tag_text(self.tag)} {self.key}" if not _HEX_TAG.fullmatch(self.key) else _tag_text(self.tag)
        )


def _is_private(tag: int) -> bool:
    return bool((tag >> 16) & 1)


def _tag_text(tag: int) -> str:
    return f"({tag >> 16:04X},{tag & 0xFFFF:04X})"


def _safe(text: str, limit: int = 96) -> str:
    """``text`` reduced to the characters of the model's ``message`` pattern, for error messages."""
    cleaned = _MESSAGE_UNSAFE.sub("_", text)
    return cleaned if len(cleaned) <= limit else cleaned[: limit - 3] + "..."


@dataclass(frozen=True)
class _Place:
    """Where in the document an attribute sits: a level, with the series and SOP instance UIDs."""

    level: Level
    series: str = ""
    instance: str = ""

    def __str__(self) -> str:
        if self.level is Level.INSTANCE:
            return f"SOP instance {_safe(self.instance)} of Series {_safe(self.series)}"
        if self.level is Level.SERIES:
            return f"Series {_safe(self.series)}"
        return f"the {self.level.value} level"


def _check_attribute(attribute: _Attribute, value: Any, place: _Place, *, role: str, force: bool) -> None:
    """Constraints shared by updates and removals, the never-liftable ones first."""
    verb = "updated" if role == UPDATABLE else "removed"
    if attribute.key in GENERATED_ATTRIBUTES:
        raise MetadataConstraintError(
            f"{role}: {attribute} is generated by HealthImaging and cannot be {verb}"
        )
    if attribute.level is not place.level:
        raise MetadataConstraintError(
            f"{role}: {attribute} belongs to the {attribute.level.value} level "
            f"and cannot be {verb} at {place} (across modules)"
        )
    if force:
        return
    if attribute.private:
        raise MetadataConstraintError(f"{role}: {attribute} at {place} can only be {verb} with force")
    if not attribute.standard:
        raise MetadataConstraintError(
            f"{role}: {attribute} is not a DICOM dictionary attribute and can only be {verb} with force"
        )
    if attribute.key in FORCE_ONLY_ATTRIBUTES:
        raise MetadataConstraintError(f"{role}: {attribute} can only be {verb} with force")
    if attribute.vr == "SQ":
        raise MetadataConstraintError(
            f"{role}: {attribute} is a sequence (VR SQ) and can only be {verb} with force"
        )
    if attribute.multi_valued_by_dictionary or isinstance(value, list):
        vm = dictionary_VM(attribute.tag) if attribute.tag is not None else "n"
        raise MetadataConstraintError(
            f"{role}: {attribute} is multi-valued (VM {vm}) and can only be {verb} with force"
        )


# --------------------------------------------------------------------------------------------------
# Applying removals and updates to the (private, deep-copied) result document


class _Editor:
    """Navigation shared by removals and updates; ``doc`` is the result document, edited in place."""

    role: str

    def __init__(self, doc: dict[str, Any], force: bool) -> None:
        self.doc = doc
        self.force = force

    def level_dict(self, place: _Place, *, create: bool) -> dict[str, Any]:
        if place.level is Level.PATIENT:
            holder = self.doc.setdefault("Patient", {}) if create else self.doc.get("Patient", {})
        elif place.level is Level.STUDY:
            holder = self.doc.setdefault("Study", {}) if create else self.doc.get("Study", {})
        elif place.level is Level.SERIES:
            holder = self.series_map()[place.series]
        else:
            holder = self.series_map()[place.series]["Instances"][place.instance]
        if create:
            dicom: dict[str, Any] = holder.setdefault("DICOM", {})
            return dicom
        return holder.get("DICOM", {})  # type: ignore[no-any-return]

    def series_map(self) -> dict[str, Any]:
        series: dict[str, Any] = self.doc.get("Study", {}).get("Series", {})
        return series

    def existing_series(self, uid: str) -> dict[str, Any]:
        series = self.series_map().get(uid)
        if series is None:
            raise MetadataConstraintError(f"{self.role}: Series {_safe(uid)} is not in the image set")
        return series  # type: ignore[no-any-return]

    def existing_instance(self, series_uid: str, sop_uid: str) -> dict[str, Any]:
        instance = self.existing_series(series_uid).get("Instances", {}).get(sop_uid)
        if instance is None:
            raise MetadataConstraintError(
                f"{self.role}: SOP instance {_safe(sop_uid)} is not in Series {_safe(series_uid)} "
                "of the image set"
            )
        return instance  # type: ignore[no-any-return]

    def places(self, payload: _Payload) -> Iterator[tuple[_Place, dict[str, Any], _InstancePart | None]]:
        """Every level of ``payload`` that carries attributes, after checking its module exists."""
        yield _Place(Level.PATIENT), payload.patient, None
        yield _Place(Level.STUDY), payload.study, None
        for series_uid, series in payload.series.items():
            self.existing_series(series_uid)
            if series.whole:
                continue
            yield _Place(Level.SERIES, series_uid), series.attributes, None
            for sop_uid, instance in series.instances.items():
                self.existing_instance(series_uid, sop_uid)
                if not instance.whole:
                    yield _Place(Level.INSTANCE, series_uid, sop_uid), instance.attributes, instance


class _Removal(_Editor):
    role = REMOVABLE

    def apply(self, payload: _Payload) -> None:
        for place, attributes, _ in list(self.places(payload)):
            if not attributes:
                continue
            stored = self.level_dict(place, create=False)
            for key, value in attributes.items():
                attribute = _Attribute.of(key)
                _check_attribute(attribute, value, place, role=REMOVABLE, force=self.force)
                if key not in stored or stored[key] != value or type(stored[key]) is not type(value):
                    raise MetadataConstraintError(
                        f"{REMOVABLE}: {attribute} at {place} does not match an existing attribute "
                        "(a removal must give the stored key and value)"
                    )
                del stored[key]
                if place.level is Level.INSTANCE:
                    vrs = self.existing_instance(place.series, place.instance).get("DICOMVRs")
                    if isinstance(vrs, dict):
                        vrs.pop(key, None)
        for series_uid, series in payload.series.items():
            if series.whole:
                del self.series_map()[series_uid]
                continue
            for sop_uid, instance in series.instances.items():
                if instance.whole:
                    del self.existing_series(series_uid)["Instances"][sop_uid]


class _Update(_Editor):
    role = UPDATABLE

    def apply(self, payload: _Payload) -> None:
        new_series_keys: dict[str, str] = {}
        new_instance_keys: dict[str, dict[str, str]] = {}
        for place, attributes, instance in list(self.places(payload)):
            if not attributes:
                continue
            self.check(place, attributes, instance)
            self.level_dict(place, create=True).update(attributes)
            if instance is not None and instance.vrs:
                holder = self.existing_instance(place.series, place.instance)
                holder.setdefault("DICOMVRs", {}).update(instance.vrs)
            for key, value in attributes.items():
                if _HIERARCHY_UIDS.get(key) is Level.SERIES and value != place.series:
                    new_series_keys[place.series] = value
                elif _HIERARCHY_UIDS.get(key) is Level.INSTANCE and value != place.instance:
                    new_instance_keys.setdefault(place.series, {})[place.instance] = value
        self.rekey(new_series_keys, new_instance_keys)

    def check(self, place: _Place, attributes: Mapping[str, Any], instance: _InstancePart | None) -> None:
        stored = self.level_dict(place, create=False)
        known_vrs: Mapping[str, Any] = {}
        if instance is not None:
            known_vrs = self.existing_instance(place.series, place.instance).get("DICOMVRs") or {}
        for key, value in attributes.items():
            attribute = _Attribute.of(key)
            _check_attribute(attribute, value, place, role=UPDATABLE, force=self.force)
            if key in _HIERARCHY_UIDS:
                _check_hierarchy_uid(attribute, value)
            declared = instance.vrs.get(key) if instance is not None else None
            if attribute.private and declared is None and key not in stored and key not in known_vrs:
                raise MetadataConstraintError(
                    f"{UPDATABLE}: {attribute} is new at {place} and needs its VR in DICOMVRs"
                )
            dictionary_vr = attribute.vr
            if (
                declared is not None
                and dictionary_vr is not None
                and not self.force
                and declared not in dictionary_vr.split(" or ")
            ):
                raise MetadataConstraintError(
                    f"{UPDATABLE}: DICOMVRs gives {attribute} the VR {declared}, "
                    f"but its VR is {dictionary_vr}"
                )
            if not self.force and attribute.vr is not None:
                problem = _vr_problem(attribute.vr, value, attribute.key)
                if problem is not None:
                    raise MetadataConstraintError(
                        f"{UPDATABLE}: the value of {attribute} at {place} "
                        f"does not fit VR {attribute.vr}: {problem}"
                    )

    def rekey(
        self, new_series_keys: Mapping[str, str], new_instance_keys: Mapping[str, Mapping[str, str]]
    ) -> None:
        """Move re-identified instances and series to their new keys, keeping order and uniqueness."""
        if not new_series_keys and not new_instance_keys:
            return
        all_series = self.series_map()
        for series_uid, renames in new_instance_keys.items():
            series = all_series[series_uid]
            series["Instances"] = _renamed(
                series["Instances"], renames, "SOP instance", f"Series {series_uid}"
            )
        if new_series_keys:
            self.doc["Study"]["Series"] = _renamed(all_series, new_series_keys, "Series", "the image set")
        seen: set[str] = set()
        for series in self.series_map().values():
            for sop_uid in series.get("Instances", {}):
                if sop_uid in seen:
                    raise MetadataConstraintError(
                        f"{UPDATABLE}: SOP Instance UID {_safe(sop_uid)} would be used twice in the image set"
                    )
                seen.add(sop_uid)


def _renamed(items: Mapping[str, Any], renames: Mapping[str, str], what: str, where: str) -> dict[str, Any]:
    result: dict[str, Any] = {}
    for key, value in items.items():
        new_key = renames.get(key, key)
        if new_key in result or (new_key != key and new_key in items and new_key not in renames):
            raise MetadataConstraintError(
                f"{UPDATABLE}: {what} {_safe(new_key)} is already in {_safe(where)}"
            )
        result[new_key] = value
    return result


def _check_hierarchy_uid(attribute: _Attribute, value: Any) -> None:
    """The UIDs that key the document stay valid UIDs, even when forced."""
    if not isinstance(value, str) or not _valid_uid(value):
        raise MetadataConstraintError(
            f"{UPDATABLE}: {attribute} must be a valid UID of at most {_MAX_UID_LENGTH} characters"
        )


def _valid_uid(value: str) -> bool:
    return len(value) <= _MAX_UID_LENGTH and _UID.fullmatch(value) is not None


# --------------------------------------------------------------------------------------------------
# VR value rules (PS3.5 §6.2 via pydicom, with the service's relaxations)

_NO_CONTROL = re.compile(r"[\x00-\x1a\x1c-\x1f\x7f\\]")  # ESC allowed (character sets), no delimiter
_TEXT_CONTROL = re.compile(r"[\x00-\x08\x0b\x0e-\x1a\x1c-\x1f\x7f]")  # LT/ST/UT: TAB LF FF CR ESC allowed


@dataclass(frozen=True)
class _TextRule:
    max_length: int | None
    pattern: re.Pattern[str] | None = None
    form: str = ""
    forbidden: re.Pattern[str] = _NO_CONTROL
    check: Callable[[str], bool] | None = None


def _valid_date(text: str) -> bool:
    try:
        datetime.date(int(text[:4]), int(text[4:6]), int(text[6:8]))
    except ValueError:
        return False
    return True


def _valid_datetime(text: str) -> bool:
    return len(text) < 8 or _valid_date(text[:8])


def _valid_is(text: str) -> bool:
    return -(2**31) <= int(text) < 2**31


def _valid_ds(text: str) -> bool:
    return math.isfinite(float(text))


_TEXT_RULES: Final[dict[str, _TextRule]] = {
    "AE": _TextRule(16, re.compile(r"[\x20-\x5b\x5d-\x7e]*"), "printable ASCII"),
    "AS": _TextRule(4, re.compile(r"\d{3}[DWMY]"), "nnnD, nnnW, nnnM or nnnY"),
    "CS": _TextRule(16, re.compile(r"[A-Z0-9 _]*"), "upper-case letters, digits, space, underscore"),
    "DA": _TextRule(8, re.compile(r"\d{8}"), "YYYYMMDD", check=_valid_date),
    "DS": _TextRule(
        16, re.compile(r" *[+-]?(\d+|\d+\.\d*|\.\d+)([eE][+-]?\d+)? *"), "a decimal number", check=_valid_ds
    ),
    "DT": _TextRule(
        26,
        re.compile(
            r"\d{4}((0[1-9]|1[0-2])(([0-2]\d|3[01])(([01]\d|2[0-3])"
            r"([0-5]\d((60|[0-5]\d)(\.\d{1,6})?)?)?)?)?)?([+-][01]\d[0-5]\d)? ?"
        ),
        "YYYYMMDDHHMMSS.FFFFFF with an optional offset",
        check=_valid_datetime,
    ),
    "IS": _TextRule(12, re.compile(r" *[+-]?\d+ *"), "a 32-bit integer", check=_valid_is),
    "LO": _TextRule(64),
    "LT": _TextRule(10240, forbidden=_TEXT_CONTROL),
    "SH": _TextRule(16),
    "ST": _TextRule(1024, forbidden=_TEXT_CONTROL),
    "TM": _TextRule(
        14, re.compile(r"([01]\d|2[0-3])([0-5]\d((60|[0-5]\d)(\.\d{1,6})?)?)? ?"), "HHMMSS.FFFFFF"
    ),
    "UC": _TextRule(None),
    "UI": _TextRule(_MAX_UID_LENGTH, _UID, "digits separated by periods"),
    "UR": _TextRule(None, re.compile(r"[A-Za-z_\d:/?#\[\]@!$&'()*+,;=%\-.~]* *"), "a URI"),
    "UT": _TextRule(None, forbidden=_TEXT_CONTROL),
    "AT": _TextRule(8, _HEX_TAG, "an 8-digit hexadecimal tag"),
}

_INTEGER_RANGES: Final[dict[str, tuple[int, int]]] = {
    "US": (0, 0xFFFF),
    "SS": (-0x8000, 0x7FFF),
    "UL": (0, 0xFFFFFFFF),
    "SL": (-0x80000000, 0x7FFFFFFF),
    "UV": (0, 0xFFFFFFFFFFFFFFFF),
    "SV": (-0x8000000000000000, 0x7FFFFFFFFFFFFFFF),
}


def _vr_problem(vr: str, value: Any, keyword: str) -> str | None:
    """Why ``value`` does not fit ``vr`` (never quoting it), or None.  ``US or SS``-style VRs take any."""
    if value is None:
        return None
    problems = [_single_vr_problem(alternative, value, keyword) for alternative in vr.split(" or ")]
    return None if None in problems else problems[0]


def _single_vr_problem(vr: str, value: Any, keyword: str) -> str | None:
    if vr in _BULK_VRS:
        return f"VR {vr} values cannot be given in JSON"
    if vr in _INTEGER_RANGES or vr in ("FL", "FD"):
        return _number_problem(vr, value)
    if not isinstance(value, str):
        return "it must be a JSON string"
    if vr == "PN":
        return _pn_problem(value, keyword)
    return _text_problem(_TEXT_RULES[vr], value, keyword)


def _number_problem(vr: str, value: Any) -> str | None:
    if isinstance(value, bool) or not isinstance(value, int | float):
        return "it must be a JSON number"
    if vr in _INTEGER_RANGES:
        low, high = _INTEGER_RANGES[vr]
        if not isinstance(value, int) or not low <= value <= high:
            return f"it must be a JSON integer from {low} to {high}"
    return None


def _text_problem(rule: _TextRule, value: str, keyword: str) -> str | None:
    if not value:
        return None
    if rule.pattern is not None and (
        rule.pattern.fullmatch(value) is None or (rule.check is not None and not rule.check(value.strip()))
    ):
        return f"it must be {rule.form}"
    if rule.pattern is None and rule.forbidden.search(value):
        return "it contains a backslash or a control character"
    max_length = _SERVICE_MAX_LENGTH.get(keyword, rule.max_length)
    if max_length is not None and len(value) > max_length:
        return f"it is longer than {max_length} characters"
    return None


def _pn_problem(value: str, keyword: str) -> str | None:
    if _NO_CONTROL.search(value):
        return "it contains a backslash or a control character"
    groups = value.split("=")
    if len(groups) > 3:
        return "it has more than 3 component groups"
    if any(group.count("^") > 4 for group in groups):
        return "a component group has more than 5 components"
    limit = _SERVICE_MAX_LENGTH.get(keyword)
    if limit is not None:
        return f"it is longer than {limit} characters" if len(value) > limit else None
    if any(len(group) > 64 for group in groups):
        return "a component group is longer than 64 characters"
    return None

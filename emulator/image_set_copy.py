"""CopyImageSet: select what is copied from a source image set, and build or merge the destination.

Pure: metadata documents (spec §4.2) in, documents out; inputs are never modified and results share
nothing with them.  Image frames are copied by reference: every ``ImageFrames[].ID`` is kept, so the
destination serves the same pixel data (spec §6.1; frames stay billed to the data store).

Decisions where the seeds are silent:

* **``copiableAttributes``** (botocore: "the JSON string used to specify a subset of SOP Instances to
  copy") has the shape of the Developer Guide's CopyImageSet example 3:
  ``{"SchemaVersion": "1.1", "Study": {"Series": {<SeriesInstanceUID>: {"Instances": {<SOPInstanceUID>:
  {}}}}}}``.  ``SchemaVersion`` may be the string ``"1.1"`` (CLI example) or the number 1.1 (Java
  sample).  Each named series needs at least one named instance, and every name must exist in the
  source; otherwise the request is refused synchronously with ValidationException, since the source is
  known when the request arrives.  Patient, Study and Series attributes always come with the instances.
* **Frame quota**: more than 1,000 frames (FR:18705) is a synchronous ValidationException; pass
  ``max_frames`` to :func:`select_copy` to have it checked there, or compare :func:`count_frames`.
* **Merging into an existing image set** (:func:`merge_into`) fails with :class:`CopyFailure` (the copy
  ends ``COPY_FAILED`` with its ``message``) when, in this order:

  1. a copied series is not a series of the destination: "Series of SourceImageSet and
     DestinationImageSet don't match." (FR:4887-4888).  ``force`` does not lift this: it keys the
     hierarchy, it is not a "metadata element" that could stay unchanged;
  2. a copied SOP Instance UID is already in the destination ("CopyImageSet requires SOP Instance UIDs
     be unique within an image set", FR:5645).  ``force`` does not lift this either;
  3. without ``force``, the Patient, Study or Series level ``DICOM`` objects differ.  Two values differ
     when they are not equal JSON; an absent attribute equals ``null``.  With ``force`` the copy goes
     on and "the Patient, Study, and Series metadata remains unchanged in the destinationImageSet"
     (Developer Guide, "Copying an image set"; botocore ``force``: "even if there are inconsistent
     Patient, Study, and/or Series level metadata elements").

  Every message starts ``INVALID_REQUEST:`` like the documented one and matches the model's
  ``message`` pattern ``[\\w -:`]+``.
* The 50 MB metadata quota is left to the caller (``emulator.metadata_update.validate_metadata_size``),
  which the backend applies to the merged document.
"""

from __future__ import annotations

import copy
import json
import re
from collections.abc import Iterator, Mapping
from typing import Any, Final

from emulator.exceptions import ValidationException

MAX_FRAMES_PER_COPY: Final = 1000
"""Default quota of image frames copied per CopyImageSet request (FR:18705; adjustable)."""

SCHEMA_VERSION: Final = "1.1"

SERIES_MISMATCH: Final = "INVALID_REQUEST: Series of SourceImageSet and DestinationImageSet don't match."
"""The failure message the Developer Guide shows for a merge across series (FR:4887-4888)."""

_LEVELS: Final = ("Patient", "Study")
_MAX_NAMED: Final = 10
_MESSAGE_UNSAFE: Final = re.compile(r"[^A-Za-z0-9_ -:`]")


class CopyFailure(Exception):  # noqa: N818 - the copy's outcome, not a programming error
    """A copy that was accepted but cannot complete: the destination ends ``COPY_FAILED`` with ``message``.

    Attributes
    ----------
    message : str
        The text GetImageSet returns in ``message`` (fits the model's pattern, at most 2048 characters).
    """

    def __init__(self, message: str) -> None:
        super().__init__(message)
        self.message = message


def select_copy(
    source: Mapping[str, Any],
    copiable_attributes: bytes | str | None,
    *,
    max_frames: int | None = None,
) -> dict[str, Any]:
    """The part of ``source`` that a CopyImageSet request copies.

    Parameters
    ----------
    source : Mapping
        The source image set's metadata document at ``sourceImageSet.latestVersionId``.
    copiable_attributes : bytes, str or None
        ``sourceImageSet.DICOMCopies.copiableAttributes``; None copies the whole image set.
    max_frames : int or None
        When given, refuse a selection of more image frames than this (the 1,000-frame quota is
        :data:`MAX_FRAMES_PER_COPY`).

    Returns
    -------
    dict
        A document shaped like ``source`` (same ``Patient`` and ``Study`` ``DICOM``) holding only the
        selected series and SOP instances, in source order.

    Raises
    ------
    ValidationException
        ``copiable_attributes`` is malformed or names a series or SOP instance the source does not hold,
        or the selection exceeds ``max_frames``.
    """
    selected: dict[str, Any] = copy.deepcopy(dict(source))
    if copiable_attributes is not None:
        wanted = _parse_copiable(copiable_attributes)
        selected.setdefault("Study", {})["Series"] = _subset(_series_of(source), wanted)
    if max_frames is not None:
        frames = count_frames(selected)
        if frames > max_frames:
            raise ValidationException(
                f"CopyImageSet can copy at most {max_frames} image frames per request, "
                f"this request copies {frames}"
            )
    return selected


def count_frames(document: Mapping[str, Any]) -> int:
    """Number of image frames (``ImageFrames`` entries) over every SOP instance of ``document``."""
    return sum(len(instance.get("ImageFrames") or ()) for _, _, instance in _instances(document))


def new_image_set_from_copy(
    selected: Mapping[str, Any], *, datastore_id: str, image_set_id: str
) -> dict[str, Any]:
    """The metadata of a new image set made by copying ``selected`` (a copy without destination).

    ``SchemaVersion``, ``DatastoreID`` and ``ImageSetID`` are the new image set's; everything else,
    frame IDs included, is the selection's.

    Raises
    ------
    CopyFailure
        ``selected`` holds one SOP Instance UID in two series (they must be unique in an image set).
    """
    duplicate = next(_duplicates(uid for _, uid, _ in _instances(selected)), None)
    if duplicate is not None:
        raise CopyFailure(
            f"INVALID_REQUEST: SOP Instance UIDs must be unique within an image set, "
            f"and {_safe(duplicate)} appears twice in SourceImageSet."
        )
    document: dict[str, Any] = {
        "SchemaVersion": SCHEMA_VERSION,
        "DatastoreID": datastore_id,
        "ImageSetID": image_set_id,
    }
    for key, value in selected.items():
        if key not in document:
            document[key] = copy.deepcopy(value)
    return document


def merge_into(destination: Mapping[str, Any], selected: Mapping[str, Any], *, force: bool) -> dict[str, Any]:
    """The destination's new metadata once ``selected`` is copied into it.

    Parameters
    ----------
    destination : Mapping
        The destination image set's document at ``destinationImageSet.latestVersionId``.
    selected : Mapping
        The result of :func:`select_copy` on the source.
    force : bool
        The request's ``force``: accept inconsistent Patient, Study and Series metadata and keep the
        destination's.

    Returns
    -------
    dict
        ``destination`` with the selected SOP instances added to their series (after the destination's
        own instances), and its own ``DatastoreID``, ``ImageSetID``, Patient, Study and Series ``DICOM``.

    Raises
    ------
    CopyFailure
        Series mismatch, duplicate SOP Instance UIDs, or (without ``force``) inconsistent metadata; see
        the module docstring for the order and the messages.
    """
    source_series = _series_of(selected)
    destination_series = _series_of(destination)
    if not source_series or any(uid not in destination_series for uid in source_series):
        raise CopyFailure(SERIES_MISMATCH)
    existing = {uid for _, uid, _ in _instances(destination)}
    incoming = [uid for _, uid, _ in _instances(selected)]
    clashes = [uid for uid in incoming if uid in existing] + list(_duplicates(incoming))
    if clashes:
        raise CopyFailure(
            f"INVALID_REQUEST: SOP Instance UIDs must be unique within an image set: {len(clashes)} SOP "
            "instances of SourceImageSet are already in DestinationImageSet, "
            f"the first is {_safe(clashes[0])}."
        )
    if not force:
        differences = _differences(destination, selected)
        if differences:
            named = ", ".join(differences[:_MAX_NAMED]) + (", ..." if len(differences) > _MAX_NAMED else "")
            raise CopyFailure(
                "INVALID_REQUEST: Patient, Study or Series level metadata of SourceImageSet and "
                f"DestinationImageSet don't match: {named}. Use force to copy anyway."
            )
    merged: dict[str, Any] = copy.deepcopy(dict(destination))
    for series_uid, series in source_series.items():
        instances = merged["Study"]["Series"][series_uid].setdefault("Instances", {})
        for sop_uid, instance in (series.get("Instances") or {}).items():
            instances[sop_uid] = copy.deepcopy(instance)
    return merged


# --------------------------------------------------------------------------------------------------


def _parse_copiable(raw: bytes | str) -> dict[str, list[str]]:
    """``copiableAttributes`` as {SeriesInstanceUID: [SOPInstanceUID, ...]}."""
    try:
        text = raw.decode("utf-8") if isinstance(raw, bytes) else raw
        data = json.loads(text)
    except (UnicodeDecodeError, json.JSONDecodeError):
        raise ValidationException("copiableAttributes is not valid JSON") from None
    where = "copiableAttributes"
    if not isinstance(data, dict) or set(data) != {"SchemaVersion", "Study"}:
        raise ValidationException(f"{where} must be an object with exactly SchemaVersion and Study")
    version = data["SchemaVersion"]
    if isinstance(version, bool) or version not in (1.1, SCHEMA_VERSION):
        raise ValidationException(f"{where} has an unsupported SchemaVersion, only 1.1 is supported")
    study = data["Study"]
    if not isinstance(study, dict) or set(study) != {"Series"} or not isinstance(study["Series"], dict):
        raise ValidationException(f"{where}: Study must be an object with exactly Series")
    if not study["Series"]:
        raise ValidationException(f"{where} names no series")
    wanted: dict[str, list[str]] = {}
    for series_uid, series in study["Series"].items():
        if (
            not isinstance(series, dict)
            or set(series) != {"Instances"}
            or not isinstance(series["Instances"], dict)
        ):
            raise ValidationException(
                f"{where}: Series {_safe(series_uid)} must be an object with exactly Instances"
            )
        if not series["Instances"]:
            raise ValidationException(f"{where}: Series {_safe(series_uid)} names no SOP instances")
        for sop_uid, instance in series["Instances"].items():
            if instance != {}:
                raise ValidationException(
                    f"{where}: SOP instance {_safe(sop_uid)} must be an empty object "
                    "(only whole instances are copied)"
                )
        wanted[series_uid] = list(series["Instances"])
    return wanted


def _subset(series: Mapping[str, Any], wanted: Mapping[str, list[str]]) -> dict[str, Any]:
    result: dict[str, Any] = {}
    for series_uid, sop_uids in wanted.items():
        if series_uid not in series:
            raise ValidationException(
                f"copiableAttributes names Series {_safe(series_uid)}, "
                "which the source image set does not hold"
            )
        instances = series[series_uid].get("Instances") or {}
        missing = [uid for uid in sop_uids if uid not in instances]
        if missing:
            raise ValidationException(
                f"copiableAttributes names SOP instance {_safe(missing[0])}, which Series "
                f"{_safe(series_uid)} of the source image set does not hold"
            )
        chosen = set(sop_uids)
        part = {key: copy.deepcopy(value) for key, value in series[series_uid].items() if key != "Instances"}
        part["Instances"] = {uid: copy.deepcopy(item) for uid, item in instances.items() if uid in chosen}
        result[series_uid] = part
    return result


def _series_of(document: Mapping[str, Any]) -> Mapping[str, Any]:
    series: Mapping[str, Any] = (document.get("Study") or {}).get("Series") or {}
    return series


def _instances(document: Mapping[str, Any]) -> Iterator[tuple[str, str, Mapping[str, Any]]]:
    for series_uid, series in _series_of(document).items():
        for sop_uid, instance in (series.get("Instances") or {}).items():
            yield series_uid, sop_uid, instance


def _duplicates(uids: Iterator[str] | list[str]) -> Iterator[str]:
    seen: set[str] = set()
    for uid in uids:
        if uid in seen:
            yield uid
        seen.add(uid)


def _differences(destination: Mapping[str, Any], selected: Mapping[str, Any]) -> list[str]:
    """Attributes whose Patient, Study or Series level values differ, as ``Level Keyword`` strings."""
    found: list[str] = []
    for level in _LEVELS:
        found += [
            f"{level} level {_safe(key)}"
            for key in _differing(_dicom(destination.get(level)), _dicom(selected.get(level)))
        ]
    destination_series = _series_of(destination)
    for series_uid, series in _series_of(selected).items():
        keys = _differing(_dicom(destination_series.get(series_uid)), _dicom(series))
        found += [f"Series level {_safe(key)}" for key in keys]
    return found


def _dicom(holder: Any) -> Mapping[str, Any]:
    if not isinstance(holder, Mapping):
        return {}
    dicom: Mapping[str, Any] = holder.get("DICOM") or {}
    return dicom


def _differing(left: Mapping[str, Any], right: Mapping[str, Any]) -> list[str]:
    return [key for key in sorted(set(left) | set(right)) if left.get(key) != right.get(key)]


def _safe(text: str, limit: int = 96) -> str:
    """``text`` reduced to the characters of the model's ``message`` pattern."""
    cleaned = _MESSAGE_UNSAFE.sub("_", text)
    return cleaned if len(cleaned) <= limit else cleaned[: limit - 3] + "..."

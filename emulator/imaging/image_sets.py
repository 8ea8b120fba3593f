"""Group imported instances into image sets and build an image set's metadata document.

Grouping (``../shared/spec/healthimaging-api.md`` section 3.7): an image set holds the instances of
one series only, and an import splits a series into several image sets when its instances disagree
on a normalized (Patient, Study or Series level) attribute, e.g. a different (0010,0010)
PatientName.  A series is also split when a (0008,0018) SOPInstanceUID repeats, because an image set
holds each SOP instance once (CopyImageSet requires unique SOP Instance UIDs): the second copy goes
to a second image set.

An attribute that is absent from one instance and empty (``null``) in another counts as the same
value; the image set's level attributes are the union of its instances', a non-null value winning.

Order is deterministic: image sets appear in the order of their first instance in the input, and
each keeps its instances in input order.
"""

from __future__ import annotations

import json
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from typing import Any, Final

from emulator.imaging.instance import ImportedInstance

SCHEMA_VERSION: Final = "1.1"
"""``SchemaVersion`` of documents written by imports (2024 documentation)."""


def _normalized_key(instance: ImportedInstance) -> str:
    """Return a canonical text of the instance's normalized attributes, nulls dropped."""
    levels = (instance.patient, instance.study, instance.series)
    present = [{key: value for key, value in level.items() if value is not None} for level in levels]
    return json.dumps([instance.study_instance_uid, instance.series_instance_uid, present], sort_keys=True)


@dataclass
class _ImageSet:
    instances: list[ImportedInstance] = field(default_factory=list)
    sop_instance_uids: set[str] = field(default_factory=set)


def group_into_image_sets(instances: Iterable[ImportedInstance]) -> list[list[ImportedInstance]]:
    """Return the image sets an import creates from ``instances``.

    Parameters
    ----------
    instances : Iterable[ImportedInstance]
        The imported instances, in input order.

    Returns
    -------
    list[list[ImportedInstance]]
        One list per image set, each holding instances of one series that agree on every normalized
        attribute and have distinct SOP Instance UIDs.
    """
    by_key: dict[str, list[_ImageSet]] = {}
    image_sets: list[_ImageSet] = []
    for instance in instances:
        candidates = by_key.setdefault(_normalized_key(instance), [])
        image_set = next(
            (each for each in candidates if instance.sop_instance_uid not in each.sop_instance_uids), None
        )
        if image_set is None:
            image_set = _ImageSet()
            candidates.append(image_set)
            image_sets.append(image_set)
        image_set.instances.append(instance)
        image_set.sop_instance_uids.add(instance.sop_instance_uid)
    return [image_set.instances for image_set in image_sets]


def _merged(levels: Iterable[dict[str, Any]]) -> dict[str, Any]:
    merged: dict[str, Any] = {}
    for level in levels:
        for key, value in level.items():
            if merged.get(key) is None:
                merged[key] = value
    return merged


def build_metadata_document(
    datastore_id: str, image_set_id: str, instances: Sequence[ImportedInstance]
) -> dict[str, Any]:
    """Return the image set metadata document (what GetImageSetMetadata returns, before gzip).

    Parameters
    ----------
    datastore_id, image_set_id : str
        The ``DatastoreID`` and ``ImageSetID`` of the document.
    instances : Sequence[ImportedInstance]
        One image set as :func:`group_into_image_sets` returns it.

    Returns
    -------
    dict[str, Any]
        ``{"SchemaVersion", "DatastoreID", "ImageSetID", "Patient": {"DICOM"}, "Study": {"DICOM",
        "Series": {<SeriesInstanceUID>: {"DICOM", "Instances": {<SOPInstanceUID>: {"DICOM",
        "DICOMVRs", "ImageFrames"}}}}}}``.

    Raises
    ------
    ValueError
        When ``instances`` is empty, spans several series, or repeats a SOP Instance UID.
    """
    if not instances:
        raise ValueError("an image set holds at least one instance")
    series_uids = {(item.study_instance_uid, item.series_instance_uid) for item in instances}
    if len(series_uids) != 1:
        raise ValueError("an image set holds the instances of one series only")
    documents: dict[str, Any] = {}
    for item in instances:
        if item.sop_instance_uid in documents:
            raise ValueError("an image set holds each SOP instance once")
        documents[item.sop_instance_uid] = item.instance_document()
    series_uid = instances[0].series_instance_uid
    return {
        "SchemaVersion": SCHEMA_VERSION,
        "DatastoreID": datastore_id,
        "ImageSetID": image_set_id,
        "Patient": {"DICOM": _merged(item.patient for item in instances)},
        "Study": {
            "DICOM": _merged(item.study for item in instances),
            "Series": {
                series_uid: {
                    "DICOM": _merged(item.series for item in instances),
                    "Instances": documents,
                }
            },
        },
    }

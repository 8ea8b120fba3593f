"""Grouping imported instances into image sets, and the image set metadata document."""

from __future__ import annotations

import io
import json
from typing import Any

import numpy as np
import pytest
from pydicom.dataset import Dataset, FileMetaDataset
from pydicom.uid import ExplicitVRLittleEndian

from emulator.imaging import (
    SCHEMA_VERSION,
    ImportedInstance,
    build_metadata_document,
    group_into_image_sets,
    import_instance,
)

pytestmark = pytest.mark.unit

STUDY = "1.2.826.0.1.3680043.8.498.7"
SERIES_A = "1.2.826.0.1.3680043.8.498.7.1"
SERIES_B = "1.2.826.0.1.3680043.8.498.7.2"


def _instance(
    number: int, series: str = SERIES_A, *, pixels: bool = False, **attributes: Any
) -> ImportedInstance:
    """Import a synthetic CT instance; ``attributes`` override (None deletes) its attributes."""
    ds = Dataset()
    ds.SOPClassUID = "1.2.840.10008.5.1.4.1.1.2"
    ds.SOPInstanceUID = f"{series}.{number}"
    ds.StudyInstanceUID = STUDY
    ds.SeriesInstanceUID = series
    ds.PatientName = "SYNTHETIC^ONE"
    ds.PatientID = "SYN-7"
    ds.StudyDescription = "CHEST"
    ds.Modality = "CT"
    ds.InstanceNumber = str(number)
    if pixels:
        ds.Rows, ds.Columns, ds.SamplesPerPixel, ds.PhotometricInterpretation = 8, 8, 1, "MONOCHROME2"
        ds.BitsAllocated, ds.BitsStored, ds.HighBit, ds.PixelRepresentation = 16, 12, 11, 0
        ds.add_new(0x7FE00010, "OW", (np.arange(64, dtype="<u2") * number).tobytes())
    for keyword, value in attributes.items():
        if value is None:
            delattr(ds, keyword)
        else:
            setattr(ds, keyword, value)
    ds.file_meta = FileMetaDataset()
    ds.file_meta.TransferSyntaxUID = ExplicitVRLittleEndian
    ds.file_meta.MediaStorageSOPClassUID = ds.SOPClassUID
    ds.file_meta.MediaStorageSOPInstanceUID = ds.SOPInstanceUID
    buffer = io.BytesIO()
    ds.save_as(buffer, enforce_file_format=True)
    buffer.seek(0)
    return import_instance(buffer, f"input/{series}/{number}.dcm", lambda data: f"frame-{len(data)}-{number}")


def _files(image_sets: list[list[ImportedInstance]]) -> list[list[str]]:
    return [[instance.input_file for instance in image_set] for image_set in image_sets]


def test_one_consistent_series_is_one_image_set() -> None:
    # Given three instances of one series
    instances = [_instance(n) for n in (1, 2, 3)]

    # When grouping them
    image_sets = group_into_image_sets(instances)

    # Then they form one image set, in input order
    assert image_sets == [instances]


def test_each_series_gets_its_own_image_set() -> None:
    # Given instances of two series, interleaved
    instances = [_instance(1), _instance(1, SERIES_B), _instance(2), _instance(2, SERIES_B)]

    # When grouping them
    image_sets = group_into_image_sets(instances)

    # Then each series is an image set, in the order the series first appear
    assert _files(image_sets) == [
        [f"input/{SERIES_A}/1.dcm", f"input/{SERIES_A}/2.dcm"],
        [f"input/{SERIES_B}/1.dcm", f"input/{SERIES_B}/2.dcm"],
    ]


def test_a_patient_name_mismatch_splits_the_series() -> None:
    # Given the guide's example: instances 1 and 2 name another patient than 3 and 4
    instances = [
        _instance(1),
        _instance(2),
        _instance(3, PatientName="SYNTHETIC^TWO"),
        _instance(4, PatientName="SYNTHETIC^TWO"),
    ]

    # When grouping them
    image_sets = group_into_image_sets(instances)

    # Then the job creates two image sets
    assert image_sets == [instances[:2], instances[2:]]


@pytest.mark.parametrize(
    "attributes",
    [{"StudyDescription": "ABDOMEN"}, {"Manufacturer": "ACME"}, {"PatientWeight": "80"}],
    ids=["study-level", "series-level", "patient-study-module"],
)
def test_any_normalized_attribute_mismatch_splits(attributes: dict[str, str]) -> None:
    # Given a series whose second instance differs in one study- or series-level attribute
    instances = [_instance(1), _instance(2, **attributes), _instance(3)]

    # When grouping them
    image_sets = group_into_image_sets(instances)

    # Then the odd instance gets an image set of its own
    assert image_sets == [[instances[0], instances[2]], [instances[1]]]


def test_instance_level_differences_do_not_split() -> None:
    # Given instances that differ only in instance-level and private attributes
    second = _instance(2, ImageComments="other")
    third = _instance(3, AcquisitionNumber="7")

    # When grouping them with a plain one
    image_sets = group_into_image_sets([_instance(1), second, third])

    # Then they stay together
    assert len(image_sets) == 1


def test_an_absent_attribute_and_an_empty_one_agree() -> None:
    # Given one instance with an empty PatientBirthDate and one without it
    instances = [_instance(1, PatientBirthDate=""), _instance(2)]

    # When grouping and building the document
    image_sets = group_into_image_sets(instances)
    document = build_metadata_document("d" * 32, "i" * 32, image_sets[0])

    # Then they share an image set whose patient keeps the empty attribute
    assert image_sets == [instances]
    assert document["Patient"]["DICOM"]["PatientBirthDate"] is None


def test_a_repeated_sop_instance_goes_to_another_image_set() -> None:
    # Given the same SOP instance twice in one job, and a third instance
    instances = [_instance(1), _instance(2), _instance(1), _instance(3)]

    # When grouping them
    image_sets = group_into_image_sets(instances)

    # Then each image set holds a SOP instance once
    assert image_sets == [[instances[0], instances[1], instances[3]], [instances[2]]]
    for image_set in image_sets:
        uids = [instance.sop_instance_uid for instance in image_set]
        assert len(uids) == len(set(uids))


def test_grouping_is_deterministic() -> None:
    # Given a mixed input
    instances = [
        _instance(1, SERIES_B),
        _instance(1),
        _instance(2, PatientName="SYNTHETIC^TWO"),
        _instance(2, SERIES_B),
        _instance(1),
    ]

    # When grouping it twice
    first, second = group_into_image_sets(instances), group_into_image_sets(list(instances))

    # Then the image sets and their order are the same
    assert _files(first) == _files(second)
    assert _files(first) == [
        [f"input/{SERIES_B}/1.dcm", f"input/{SERIES_B}/2.dcm"],
        [f"input/{SERIES_A}/1.dcm"],
        [f"input/{SERIES_A}/2.dcm"],
        [f"input/{SERIES_A}/1.dcm"],
    ]


def test_the_metadata_document_nests_series_in_study_and_instances_in_series() -> None:
    # Given an image set of two instances with frames
    instances = [_instance(1, pixels=True), _instance(2, pixels=True)]

    # When building its metadata document
    document = build_metadata_document("a" * 32, "b" * 32, instances)

    # Then it has the shape the SDK samples walk
    assert document["SchemaVersion"] == SCHEMA_VERSION == "1.1"
    assert (document["DatastoreID"], document["ImageSetID"]) == ("a" * 32, "b" * 32)
    assert document["Patient"] == {"DICOM": {"PatientName": "SYNTHETIC^ONE", "PatientID": "SYN-7"}}
    assert document["Study"]["DICOM"] == {"StudyDescription": "CHEST", "StudyInstanceUID": STUDY}
    series = document["Study"]["Series"][SERIES_A]
    assert series["DICOM"] == {"Modality": "CT", "SeriesInstanceUID": SERIES_A}
    assert list(series["Instances"]) == [f"{SERIES_A}.1", f"{SERIES_A}.2"]
    first = series["Instances"][f"{SERIES_A}.1"]
    assert first == instances[0].instance_document()
    assert first["DICOM"]["InstanceNumber"] == "1"
    assert "PatientName" not in first["DICOM"]
    assert [frame["ID"] for frame in first["ImageFrames"]] == [instances[0].frames[0].frame_id]
    json.dumps(document, allow_nan=False)


def test_frame_ids_reach_the_document() -> None:
    # Given an instance with a frame
    instance = _instance(5, pixels=True)

    # When building the document
    document = build_metadata_document("a" * 32, "b" * 32, [instance])

    # Then its ImageFrames name the stored frame and its checksums, base first
    (entry,) = document["Study"]["Series"][SERIES_A]["Instances"][f"{SERIES_A}.5"]["ImageFrames"]
    assert entry["ID"] == instance.frames[0].frame_id
    assert [level["Width"] for level in entry["PixelDataChecksumFromBaseToFullResolution"]] == [4, 8]
    assert entry["FrameSizeInBytes"] == 8 * 8 * 2


@pytest.mark.parametrize(
    ("instances", "message"),
    [
        (lambda: [], "at least one instance"),
        (lambda: [_instance(1), _instance(1, SERIES_B)], "one series only"),
        (lambda: [_instance(1), _instance(1)], "each SOP instance once"),
    ],
    ids=["empty", "two-series", "repeated-sop"],
)
def test_a_document_needs_one_series_of_distinct_instances(instances: Any, message: str) -> None:
    # Given instances that cannot form one image set
    # When building a document
    # Then it is refused
    with pytest.raises(ValueError, match=message):
        build_metadata_document("a" * 32, "b" * 32, instances())

"""DICOM data sets as image set metadata attributes: keys, value typing, DICOMVRs and levels."""

from __future__ import annotations

import base64
import io
import json
from typing import Any

import pydicom
import pytest
from pydicom.dataset import Dataset, FileMetaDataset
from pydicom.sequence import Sequence
from pydicom.uid import ExplicitVRBigEndian, ExplicitVRLittleEndian, ImplicitVRLittleEndian

from emulator.imaging.dicom_json import (
    attribute_key,
    dataset_attributes,
    element_text,
    partitioned_attributes,
)
from emulator.imaging.levels import Level
from tests.unit.pydicom_files import bundled_files, short_name

pytestmark = pytest.mark.unit


def _read_back(ds: Dataset, transfer_syntax: str = ExplicitVRLittleEndian) -> Dataset:
    """Write ``ds`` as a P10 file in memory and read it again, so every element is raw."""
    ds.file_meta = FileMetaDataset()
    ds.file_meta.TransferSyntaxUID = transfer_syntax
    ds.file_meta.MediaStorageSOPClassUID = "1.2.840.10008.5.1.4.1.1.7"
    ds.file_meta.MediaStorageSOPInstanceUID = "1.2.3.4.5.6"
    buffer = io.BytesIO()
    ds.save_as(buffer, enforce_file_format=True)
    buffer.seek(0)
    return pydicom.dcmread(buffer)


def _attributes(ds: Dataset, transfer_syntax: str = ExplicitVRLittleEndian) -> tuple[dict[str, Any], Any]:
    attributes, vrs = dataset_attributes(_read_back(ds, transfer_syntax))
    json.dumps([attributes, vrs], allow_nan=False)
    return attributes, vrs


def _typed_dataset() -> Dataset:
    ds = Dataset()
    ds.PatientName = "DOE^JANE"
    ds.PatientBirthDate = ""
    ds.ImageType = ["DERIVED", "PRIMARY"]
    ds.InstanceNumber = "0012"
    ds.RescaleSlope = "1.50"
    ds.WindowWidth = ["2.80000000E+03", "400"]
    ds.Rows = 512
    ds.PixelSpacing = ["0.5", "0.5"]
    ds.add_new(0x00700253, "FL", 0.25)  # LineThickness
    ds.add_new(0x00189306, "FD", 1.125)  # SingleCollimationWidth
    ds.add_new(0x00186020, "SL", -7)  # ReferencePixelX0
    ds.add_new(0x00209157, "UL", [1, 2, 3])  # DimensionIndexValues
    ds.add_new(0x00280009, "AT", [0x00540010, 0x00540020])  # FrameIncrementPointer
    ds.add_new(0x00081115, "SQ", Sequence())  # ReferencedSeriesSequence, empty
    return ds


def test_keys_are_keywords_and_values_keep_their_dicom_types() -> None:
    # Given a data set with string, number, tag and sequence attributes
    ds = _typed_dataset()

    # When converting it
    attributes, _ = _attributes(ds)

    # Then strings stay text (DS and IS as written), numbers are numbers, several values an array
    assert attributes["PatientName"] == "DOE^JANE"
    assert attributes["ImageType"] == ["DERIVED", "PRIMARY"]
    assert attributes["InstanceNumber"] == "0012"
    assert attributes["RescaleSlope"] == "1.50"
    assert attributes["WindowWidth"] == ["2.80000000E+03", "400"]
    assert attributes["PixelSpacing"] == ["0.5", "0.5"]
    assert attributes["Rows"] == 512
    assert attributes["LineThickness"] == 0.25
    assert attributes["SingleCollimationWidth"] == 1.125
    assert attributes["ReferencePixelX0"] == -7
    assert attributes["DimensionIndexValues"] == [1, 2, 3]
    assert attributes["FrameIncrementPointer"] == ["00540010", "00540020"]


def test_empty_values_are_null() -> None:
    # Given an empty date and a sequence without items
    ds = _typed_dataset()

    # When converting it
    attributes, _ = _attributes(ds)

    # Then both are null
    assert attributes["PatientBirthDate"] is None
    assert attributes["ReferencedSeriesSequence"] is None


def test_non_finite_floats_are_json_strings() -> None:
    # Given FD values that JSON numbers cannot hold
    ds = Dataset()
    ds.add_new(0x00189306, "FD", [float("nan"), float("inf"), float("-inf"), 2.5])

    # When converting it
    attributes, _ = _attributes(ds)

    # Then they are the DICOM JSON model's strings
    assert attributes["SingleCollimationWidth"] == ["NaN", "Infinity", "-Infinity", 2.5]


def test_person_names_keep_their_component_groups() -> None:
    # Given a UTF-8 person name with alphabetic, ideographic and phonetic groups
    ds = Dataset()
    ds.SpecificCharacterSet = "ISO_IR 192"
    ds.PatientName = "Yamada^Tarou=山田^太郎=やまだ^たろう"

    # When converting it
    attributes, _ = _attributes(ds)

    # Then the name is the text of the element, "=" groups included
    assert attributes["PatientName"] == "Yamada^Tarou=山田^太郎=やまだ^たろう"


def test_iso_2022_text_is_decoded_by_pydicom() -> None:
    # Given a Japanese name encoded with ISO 2022 escape sequences
    ds = Dataset()
    ds.SpecificCharacterSet = ["", "ISO 2022 IR 87"]
    ds.PatientName = "Yamada^Tarou=山田^太郎"
    ds.StudyDescription = "CHEST"

    # When converting it
    attributes, _ = _attributes(ds)

    # Then the text is decoded, not left as escape sequences
    assert attributes["PatientName"] == "Yamada^Tarou=山田^太郎"
    assert attributes["StudyDescription"] == "CHEST"
    assert attributes["SpecificCharacterSet"] == ["", "ISO 2022 IR 87"]


def test_latin1_text_is_decoded() -> None:
    # Given an ISO_IR 100 name with an accented letter
    ds = Dataset()
    ds.SpecificCharacterSet = "ISO_IR 100"
    ds.PatientName = "MÜLLER^RENÉ"

    # When converting it
    attributes, _ = _attributes(ds)

    # Then it reads back as written
    assert attributes["PatientName"] == "MÜLLER^RENÉ"


def test_sequences_are_arrays_of_objects_converted_alike() -> None:
    # Given a sequence with a coded item and an empty item
    ds = Dataset()
    code = Dataset()
    code.CodeValue = "T-D4000"
    code.CodingSchemeDesignator = "SRT"
    code.add_new(0x00090010, "LO", "ACME 1.0")
    code.add_new(0x00091001, "DS", "97")
    ds.add_new(0x00082218, "SQ", Sequence([code, Dataset()]))  # AnatomicRegionSequence

    # When converting it
    attributes, vrs = _attributes(ds)

    # Then each item is an object keyed like the top level, private elements by tag
    assert attributes["AnatomicRegionSequence"] == [
        {"CodeValue": "T-D4000", "CodingSchemeDesignator": "SRT", "00090010": "ACME 1.0", "00091001": "97"},
        {},
    ]
    assert vrs == {"00090010": "LO", "00091001": "DS"}


def test_private_elements_are_keyed_by_tag_with_their_vr() -> None:
    # Given a private block with its creator, a DS element and a binary element
    ds = Dataset()
    ds.add_new(0x00090010, "LO", "ACME 1.0")
    ds.add_new(0x00091001, "DS", "97")
    ds.add_new(0x00091002, "OB", b"\x00\x01\x02")

    # When converting it
    attributes, vrs = _attributes(ds)

    # Then keys are the eight hex digits of the tag and DICOMVRs records every VR
    assert attributes["00090010"] == "ACME 1.0"
    assert attributes["00091001"] == "97"
    assert attributes["00091002"] == base64.b64encode(b"\x00\x01\x02\x00").decode()  # padded to even
    assert vrs == {"00090010": "LO", "00091001": "DS", "00091002": "OB"}


def test_implicit_vr_private_elements_use_the_private_dictionary() -> None:
    # Given an implicit VR file with a known (AGFA) and an unknown private block
    ds = Dataset()
    ds.add_new(0x00190010, "LO", "AGFA")
    ds.add_new(0x00191010, "SH", "P BOOGERT_0")
    ds.add_new(0x00290010, "LO", "NOBODY KNOWS")
    ds.add_new(0x00291001, "LO", "ABCD")

    # When converting it
    attributes, vrs = _attributes(ds, ImplicitVRLittleEndian)

    # Then the known element gets its dictionary VR, the unknown one is UN (base64)
    assert attributes["00191010"] == "P BOOGERT_0"
    assert attributes["00291001"] == base64.b64encode(b"ABCD").decode()
    assert vrs["00191010"] == "SH"
    assert vrs["00291001"] == "UN"


def test_ambiguous_vrs_are_resolved_and_recorded() -> None:
    # Given a signed image whose PixelPaddingValue is "US or SS" in the dictionary
    ds = Dataset()
    ds.PixelRepresentation = 1
    ds.add_new(0x00280120, "SS", -2000)

    # When converting it from implicit VR
    attributes, vrs = _attributes(ds, ImplicitVRLittleEndian)

    # Then the value is read as signed and its VR is recorded
    assert attributes["PixelPaddingValue"] == -2000
    assert vrs == {"PixelPaddingValue": "SS"}


def test_pixel_data_is_null_and_other_bulk_data_base64() -> None:
    # Given pixel data, an overlay and a big-endian OW value
    ds = Dataset()
    ds.add_new(0x60000010, "US", 2)  # OverlayRows
    ds.add_new(0x60003000, "OW", b"\x01\x02\x03\x04")  # OverlayData
    ds.add_new(0x7FE00010, "OW", b"\x00\x01" * 8)

    # When converting it from big endian
    attributes, vrs = _attributes(ds, ExplicitVRBigEndian)

    # Then pixel data is null, the repeating group is keyed by tag, OW is little-endian base64
    assert attributes["PixelData"] is None
    assert attributes["60000010"] == 2
    assert attributes["60003000"] == base64.b64encode(b"\x02\x01\x04\x03").decode()
    assert vrs == {"60000010": "US", "60003000": "OW", "PixelData": "OW"}


def test_file_meta_is_included_and_group_lengths_dropped() -> None:
    # Given a P10 file
    ds = Dataset()
    ds.SOPInstanceUID = "1.2.3.4.5.6"

    # When converting it
    attributes, _ = _attributes(ds)

    # Then the file meta elements are attributes too, without (0002,0000)
    assert attributes["TransferSyntaxUID"] == ExplicitVRLittleEndian
    assert attributes["MediaStorageSOPInstanceUID"] == "1.2.3.4.5.6"
    assert attributes["FileMetaInformationVersion"] == base64.b64encode(b"\x00\x01").decode()
    assert "FileMetaInformationGroupLength" not in attributes
    assert not any(key.endswith("0000") for key in attributes)


def test_attributes_are_partitioned_by_normalization_level() -> None:
    # Given attributes of every level
    ds = Dataset()
    ds.PatientName = "DOE^JANE"
    ds.PatientWeight = "70"
    ds.StudyInstanceUID = "1.2.3"
    ds.Modality = "CT"
    ds.SeriesInstanceUID = "1.2.3.4"
    ds.SOPInstanceUID = "1.2.3.4.5"
    ds.add_new(0x00090010, "LO", "ACME 1.0")

    # When partitioning it
    levels, _ = partitioned_attributes(_read_back(ds))

    # Then each attribute sits at its level; PatientWeight is study level (Patient Study module)
    assert levels[Level.PATIENT] == {"PatientName": "DOE^JANE"}
    assert levels[Level.STUDY] == {"PatientWeight": "70", "StudyInstanceUID": "1.2.3"}
    assert levels[Level.SERIES] == {"Modality": "CT", "SeriesInstanceUID": "1.2.3.4"}
    assert levels[Level.INSTANCE]["SOPInstanceUID"] == "1.2.3.4.5"
    assert levels[Level.INSTANCE]["00090010"] == "ACME 1.0"
    assert "TransferSyntaxUID" in levels[Level.INSTANCE]


@pytest.mark.parametrize(
    ("tag", "key"),
    [
        (0x00100010, "PatientName"),
        (0x00191010, "00191010"),
        (0x00190010, "00190010"),
        (0x60023000, "60023000"),
        (0x00080000, "00080000"),
        (0x0011AB01, "0011AB01"),
        (0x00990010, "00990010"),
    ],
)
def test_attribute_keys(tag: int, key: str) -> None:
    # Given a tag
    # When naming it
    # Then public dictionary tags use their keyword, everything else 8 uppercase hex digits
    assert attribute_key(tag) == key


def test_element_text_reads_values_as_written() -> None:
    # Given an element that pydicom has not converted yet
    ds = Dataset()
    ds.ImageType = ["ORIGINAL", "PRIMARY"]
    ds.InstanceNumber = "+12"
    read = _read_back(ds)

    # When reading its text
    text = element_text(read, 0x00080008)

    # Then the values are backslash-joined without padding, and the element converts as before
    assert text == "ORIGINAL\\PRIMARY"
    assert element_text(read, 0x00200013) == "+12"
    assert element_text(read, 0x00100010) is None
    assert dataset_attributes(read)[0]["InstanceNumber"] == "+12"


@pytest.mark.filterwarnings("ignore")
@pytest.mark.parametrize("path", [path for path in bundled_files() if path.endswith(".dcm")], ids=short_name)
def test_raw_decoding_matches_pydicom_conversion(path: str) -> None:
    # Given a bundled file read twice
    try:
        fast, reference = pydicom.dcmread(path), pydicom.dcmread(path)
    except (pydicom.errors.InvalidDicomError, OSError):
        pytest.skip("not a DICOM P10 file")

    # When converting one from raw bytes and the other through pydicom's element conversion
    attributes, vrs = dataset_attributes(fast)
    expected_attributes, expected_vrs = dataset_attributes(reference, raw=False)

    # Then both give the same metadata, which is plain JSON
    assert attributes == expected_attributes
    assert vrs == expected_vrs
    json.dumps([attributes, vrs], allow_nan=False)

"""CopyImageSet selection, frame quota and merge rules (emulator/image_set_copy.py)."""

from __future__ import annotations

import copy
import hashlib
import json
import re
from typing import Any

import botocore.session
import pytest

from emulator.exceptions import ValidationException
from emulator.image_set_copy import (
    MAX_FRAMES_PER_COPY,
    SERIES_MISMATCH,
    CopyFailure,
    count_frames,
    merge_into,
    new_image_set_from_copy,
    select_copy,
)

pytestmark = pytest.mark.unit

MODEL = botocore.session.get_session().get_service_model("medical-imaging")
MESSAGE_PATTERN = re.compile(
    MODEL.operation_model("GetImageSet").output_shape.members["message"].metadata["pattern"]
)

# The UIDs of the Developer Guide's CopyImageSet example 3 (copy a subset of instances).
GUIDE_SERIES = "1.3.6.1.4.1.5962.99.1.3673257865.2104868982.1369432891697.3666.0"
GUIDE_SOP = "1.3.6.1.4.1.5962.99.1.3673257865.2104868982.1369432891697.3669.0"
# Its --copy-image-set-information, verbatim.
GUIDE_COPY_INFORMATION = r"""{"sourceImageSet": {"latestVersionId": "1","DICOMCopies": {"copiableAttributes": "{\"SchemaVersion\":\"1.1\",\"Study\":{\"Series\":{\"1.3.6.1.4.1.5962.99.1.3673257865.2104868982.1369432891697.3666.0\":{\"Instances\":{\"1.3.6.1.4.1.5962.99.1.3673257865.2104868982.1369432891697.3669.0\":{}}}}}}"}},"destinationImageSet": {"imageSetId": "b9eb50d8ee682eb9fcf4acbf92f62bb7","latestVersionId": "1"}}"""  # noqa: E501
SOURCE_ID = "ea92b0d8838c72a3f25d00d13616f87e"
DESTINATION_ID = "b9eb50d8ee682eb9fcf4acbf92f62bb7"
DATASTORE_ID = "12345678901234567890123456789012"


def instance(sop_uid: str, frames: int = 1) -> dict[str, Any]:
    return {
        "DICOM": {
            "SOPInstanceUID": sop_uid,
            "InstanceNumber": "1",
            "Rows": 2,
            "Columns": 2,
            "PixelData": None,
        },
        "ImageFrames": [
            {"ID": hashlib.sha256(f"{sop_uid}/{index}".encode()).hexdigest()[:32], "MinPixelValue": 0}
            for index in range(frames)
        ],
    }


def image_set(
    image_set_id: str, series: dict[str, dict[str, int]], *, patient_name: str = "DOE^JANE"
) -> dict[str, Any]:
    """A synthetic image set; ``series`` maps SeriesInstanceUID to {SOPInstanceUID: frame count}."""
    return {
        "SchemaVersion": "1.1",
        "DatastoreID": DATASTORE_ID,
        "ImageSetID": image_set_id,
        "Patient": {"DICOM": {"PatientName": patient_name, "PatientID": "SYN-0001", "PatientSex": None}},
        "Study": {
            "DICOM": {"StudyInstanceUID": "2.25.42", "StudyDescription": "CHEST", "StudyDate": "20240102"},
            "Series": {
                series_uid: {
                    "DICOM": {"Modality": "CT", "SeriesInstanceUID": series_uid, "SeriesNumber": "1"},
                    "Instances": {sop: instance(sop, frames) for sop, frames in sops.items()},
                }
                for series_uid, sops in series.items()
            },
        },
    }


def source() -> dict[str, Any]:
    return image_set(SOURCE_ID, {GUIDE_SERIES: {GUIDE_SOP: 1, "2.25.2": 2, "2.25.3": 3}})


def destination(**kwargs: Any) -> dict[str, Any]:
    return image_set(DESTINATION_ID, {GUIDE_SERIES: {"2.25.10": 1}}, **kwargs)


def copiable(series: dict[str, list[str]], schema_version: Any = "1.1") -> bytes:
    body = {
        "SchemaVersion": schema_version,
        "Study": {"Series": {uid: {"Instances": {sop: {} for sop in sops}} for uid, sops in series.items()}},
    }
    return json.dumps(body).encode()


def frame_ids(document: dict[str, Any]) -> dict[str, list[str]]:
    return {
        sop: [frame["ID"] for frame in item["ImageFrames"]]
        for series in document["Study"]["Series"].values()
        for sop, item in series["Instances"].items()
    }


def assert_clean(message: str) -> None:
    assert MESSAGE_PATTERN.fullmatch(message), message
    assert len(message) <= 2048
    assert "DOE" not in message


# --- select_copy ---------------------------------------------------------------------------------


def test_without_copiable_attributes_the_whole_image_set_is_selected() -> None:
    # Given
    doc = source()
    # When
    selected = select_copy(doc, None)
    # Then
    assert selected == doc
    assert selected is not doc
    assert selected["Study"]["Series"] is not doc["Study"]["Series"]


def test_guide_example_3_selects_one_instance() -> None:
    # Given
    doc = source()
    attributes = json.loads(GUIDE_COPY_INFORMATION)["sourceImageSet"]["DICOMCopies"]["copiableAttributes"]
    # When
    selected = select_copy(doc, attributes.encode())
    # Then
    series = selected["Study"]["Series"]
    assert list(series) == [GUIDE_SERIES]
    assert list(series[GUIDE_SERIES]["Instances"]) == [GUIDE_SOP]
    assert series[GUIDE_SERIES]["DICOM"] == doc["Study"]["Series"][GUIDE_SERIES]["DICOM"]
    assert selected["Patient"] == doc["Patient"]
    assert selected["Study"]["DICOM"] == doc["Study"]["DICOM"]


def test_copiable_attributes_may_be_a_string_with_a_numeric_schema_version() -> None:
    # Given: the Java sample writes SchemaVersion as the number 1.1
    doc = source()
    # When
    selected = select_copy(doc, copiable({GUIDE_SERIES: ["2.25.3", GUIDE_SOP]}, 1.1).decode())
    # Then: source order, not request order
    assert list(selected["Study"]["Series"][GUIDE_SERIES]["Instances"]) == [GUIDE_SOP, "2.25.3"]


@pytest.mark.parametrize(
    ("body", "message"),
    [
        (b"{", "is not valid JSON"),
        (b"\xff", "is not valid JSON"),
        (b'{"Study": {"Series": {}}}', "exactly SchemaVersion and Study"),
        (
            b'{"SchemaVersion": "1.0", "Study": {"Series": {"2.25.1": {"Instances": {"2.25.2": {}}}}}}',
            "unsupported",
        ),
        (b'{"SchemaVersion": "1.1", "Study": {"Series": {}}}', "names no series"),
        (b'{"SchemaVersion": "1.1", "Study": {"DICOM": {}, "Series": {}}}', "exactly Series"),
        (b'{"SchemaVersion": "1.1", "Study": {"Series": {"2.25.1": {}}}}', "exactly Instances"),
        (
            b'{"SchemaVersion": "1.1", "Study": {"Series": {"2.25.1": {"Instances": {}}}}}',
            "names no SOP instances",
        ),
        (
            b'{"SchemaVersion": "1.1", "Study": {"Series": {"2.25.1": '
            b'{"Instances": {"2.25.2": {"DICOM": {}}}}}}}',
            "must be an empty object",
        ),
    ],
)
def test_malformed_copiable_attributes_are_refused(body: bytes, message: str) -> None:
    # Given
    doc = source()
    # When
    with pytest.raises(ValidationException) as caught:
        select_copy(doc, body)
    # Then
    assert message in caught.value.message
    assert_clean(caught.value.message)


@pytest.mark.parametrize(
    ("wanted", "message"),
    [
        ({"2.25.404": ["2.25.2"]}, "names Series 2.25.404, which the source image set does not hold"),
        ({GUIDE_SERIES: ["2.25.404"]}, "names SOP instance 2.25.404, which Series"),
        # The JS and Python samples key the series by the literal string "imageSetId".
        ({"imageSetId": [GUIDE_SOP]}, "names Series imageSetId"),
    ],
    ids=["series", "instance", "sdk-sample-key"],
)
def test_copiable_attributes_must_name_what_the_source_holds(
    wanted: dict[str, list[str]], message: str
) -> None:
    # Given
    doc = source()
    # When / Then
    with pytest.raises(ValidationException, match=re.escape(message)):
        select_copy(doc, copiable(wanted))


# --- frames --------------------------------------------------------------------------------------


def test_count_frames_adds_every_instance() -> None:
    # Given
    doc = source()
    # When
    frames = count_frames(doc)
    # Then
    assert frames == 6
    assert count_frames(select_copy(doc, copiable({GUIDE_SERIES: ["2.25.3"]}))) == 3
    assert count_frames({"SchemaVersion": "1.1"}) == 0


def test_exactly_1000_frames_can_be_copied() -> None:
    # Given
    doc = image_set(SOURCE_ID, {GUIDE_SERIES: {"2.25.1": 600, "2.25.2": 400}})
    # When
    selected = select_copy(doc, None, max_frames=MAX_FRAMES_PER_COPY)
    # Then
    assert count_frames(selected) == MAX_FRAMES_PER_COPY == 1000


def test_1001_frames_exceed_the_copy_quota() -> None:
    # Given
    doc = image_set(SOURCE_ID, {GUIDE_SERIES: {"2.25.1": 600, "2.25.2": 401}})
    # When
    with pytest.raises(ValidationException) as caught:
        select_copy(doc, None, max_frames=MAX_FRAMES_PER_COPY)
    # Then
    assert caught.value.message == (
        "CopyImageSet can copy at most 1000 image frames per request, this request copies 1001"
    )
    assert_clean(caught.value.message)


def test_the_frame_quota_counts_only_the_selected_subset() -> None:
    # Given
    doc = image_set(SOURCE_ID, {GUIDE_SERIES: {"2.25.1": 600, "2.25.2": 401}})
    # When
    selected = select_copy(doc, copiable({GUIDE_SERIES: ["2.25.1"]}), max_frames=MAX_FRAMES_PER_COPY)
    # Then
    assert count_frames(selected) == 600


def test_without_max_frames_select_copy_does_not_count() -> None:
    # Given: the backend applies its own (adjustable) quota
    doc = image_set(SOURCE_ID, {GUIDE_SERIES: {"2.25.1": 1001}})
    # When
    selected = select_copy(doc, None)
    # Then
    assert count_frames(selected) == 1001


# --- a copy into a new image set -----------------------------------------------------------------


def test_new_image_set_from_copy_takes_new_ids_and_keeps_frame_ids() -> None:
    # Given
    doc = source()
    selected = select_copy(doc, copiable({GUIDE_SERIES: [GUIDE_SOP, "2.25.3"]}))
    # When
    new = new_image_set_from_copy(selected, datastore_id=DATASTORE_ID, image_set_id="f" * 32)
    # Then
    assert new["SchemaVersion"] == "1.1"
    assert new["DatastoreID"] == DATASTORE_ID
    assert new["ImageSetID"] == "f" * 32
    assert new["Patient"] == doc["Patient"]
    assert frame_ids(new) == {sop: ids for sop, ids in frame_ids(doc).items() if sop in (GUIDE_SOP, "2.25.3")}
    new["Patient"]["DICOM"]["PatientName"] = "changed"
    assert selected["Patient"]["DICOM"]["PatientName"] == "DOE^JANE"


def test_new_image_set_refuses_one_sop_instance_uid_in_two_series() -> None:
    # Given
    doc = image_set(SOURCE_ID, {GUIDE_SERIES: {"2.25.1": 1}, "2.25.99": {"2.25.1": 1}})
    # When
    with pytest.raises(CopyFailure) as caught:
        new_image_set_from_copy(doc, datastore_id=DATASTORE_ID, image_set_id="f" * 32)
    # Then
    assert caught.value.message.startswith("INVALID_REQUEST: SOP Instance UIDs must be unique")
    assert_clean(caught.value.message)


# --- a copy into an existing image set -----------------------------------------------------------


def test_merge_adds_the_instances_and_keeps_the_destination_identity() -> None:
    # Given
    dest = destination()
    selected = select_copy(source(), copiable({GUIDE_SERIES: [GUIDE_SOP, "2.25.2"]}))
    # When
    merged = merge_into(dest, selected, force=False)
    # Then
    assert merged["ImageSetID"] == DESTINATION_ID
    assert merged["DatastoreID"] == DATASTORE_ID
    assert list(merged["Study"]["Series"][GUIDE_SERIES]["Instances"]) == ["2.25.10", GUIDE_SOP, "2.25.2"]
    assert frame_ids(merged) == {**frame_ids(dest), **frame_ids(selected)}


@pytest.mark.parametrize("force", [False, True])
def test_merge_across_series_fails_with_the_documented_message(force: bool) -> None:
    # Given
    dest = image_set(DESTINATION_ID, {"2.25.77": {"2.25.10": 1}})
    # When
    with pytest.raises(CopyFailure) as caught:
        merge_into(dest, source(), force=force)
    # Then
    assert caught.value.message == SERIES_MISMATCH
    assert (
        caught.value.message
        == "INVALID_REQUEST: Series of SourceImageSet and DestinationImageSet don't match."
    )
    assert_clean(caught.value.message)


def test_merge_fails_when_any_copied_series_is_missing_from_the_destination() -> None:
    # Given
    src = image_set(SOURCE_ID, {GUIDE_SERIES: {"2.25.1": 1}, "2.25.99": {"2.25.2": 1}})
    # When / Then
    with pytest.raises(CopyFailure, match=re.escape(SERIES_MISMATCH)):
        merge_into(destination(), src, force=False)


@pytest.mark.parametrize("force", [False, True])
def test_merge_fails_on_duplicate_sop_instance_uids(force: bool) -> None:
    # Given
    dest = image_set(DESTINATION_ID, {GUIDE_SERIES: {GUIDE_SOP: 1, "2.25.3": 1}})
    # When
    with pytest.raises(CopyFailure) as caught:
        merge_into(dest, source(), force=force)
    # Then
    assert caught.value.message == (
        "INVALID_REQUEST: SOP Instance UIDs must be unique within an image set: 2 SOP instances of "
        f"SourceImageSet are already in DestinationImageSet, the first is {GUIDE_SOP}."
    )
    assert_clean(caught.value.message)


@pytest.mark.parametrize(
    ("change", "named"),
    [
        (lambda d: d["Patient"]["DICOM"].update(PatientName="ROE^JOHN"), "Patient level PatientName"),
        (lambda d: d["Study"]["DICOM"].update(StudyDescription="CT CHEST"), "Study level StudyDescription"),
        (lambda d: d["Study"]["DICOM"].update(AccessionNumber="SYN2"), "Study level AccessionNumber"),
        (
            lambda d: d["Study"]["Series"][GUIDE_SERIES]["DICOM"].update(SeriesNumber="2"),
            "Series level SeriesNumber",
        ),
    ],
    ids=["patient", "study", "study-added", "series"],
)
def test_inconsistent_metadata_fails_without_force(change: Any, named: str) -> None:
    # Given
    dest = destination()
    change(dest)
    # When
    with pytest.raises(CopyFailure) as caught:
        merge_into(dest, source(), force=False)
    # Then
    assert caught.value.message.startswith(
        "INVALID_REQUEST: Patient, Study or Series level metadata of SourceImageSet and "
        "DestinationImageSet don't match: "
    )
    assert named in caught.value.message
    assert "ROE" not in caught.value.message
    assert_clean(caught.value.message)


def test_forced_merge_keeps_the_destination_metadata() -> None:
    # Given
    dest = destination(patient_name="ROE^JOHN")
    dest["Study"]["Series"][GUIDE_SERIES]["DICOM"]["SeriesNumber"] = "7"
    # When
    merged = merge_into(dest, source(), force=True)
    # Then
    assert merged["Patient"] == dest["Patient"]
    assert merged["Study"]["DICOM"] == dest["Study"]["DICOM"]
    assert merged["Study"]["Series"][GUIDE_SERIES]["DICOM"]["SeriesNumber"] == "7"
    assert len(merged["Study"]["Series"][GUIDE_SERIES]["Instances"]) == 4


def test_an_absent_attribute_equals_null() -> None:
    # Given
    dest = destination()
    del dest["Patient"]["DICOM"]["PatientSex"]
    # When
    merged = merge_into(dest, source(), force=False)
    # Then
    assert "PatientSex" not in merged["Patient"]["DICOM"]


def test_many_differences_are_listed_briefly() -> None:
    # Given
    dest = destination()
    dest["Study"]["DICOM"].update({f"Synthetic{index:02d}": "X" for index in range(15)})
    # When
    with pytest.raises(CopyFailure) as caught:
        merge_into(dest, source(), force=False)
    # Then
    assert caught.value.message.count("Study level Synthetic") == 10
    assert ", .... Use force to copy anyway." in caught.value.message
    assert_clean(caught.value.message)


def test_inputs_are_not_modified() -> None:
    # Given
    dest, src = destination(), source()
    dest_before, src_before = copy.deepcopy(dest), copy.deepcopy(src)
    # When
    selected = select_copy(src, copiable({GUIDE_SERIES: [GUIDE_SOP]}))
    merged = merge_into(dest, selected, force=False)
    merged["Study"]["Series"][GUIDE_SERIES]["Instances"][GUIDE_SOP]["ImageFrames"][0]["ID"] = "changed"
    # Then
    assert dest == dest_before
    assert src == src_before
    assert (
        selected["Study"]["Series"][GUIDE_SERIES]["Instances"][GUIDE_SOP]["ImageFrames"][0]["ID"] != "changed"
    )

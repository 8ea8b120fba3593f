"""UpdateImageSetMetadata DICOMUpdates rules (emulator/metadata_update.py).

Every payload of seed 003 (EX) and of spec §5.7 is applied here as published, to small synthetic
documents built in code.
"""

from __future__ import annotations

import base64
import copy
import json
import re
from typing import Any

import botocore.session
import pytest

from emulator import metadata_update
from emulator.exceptions import ServiceError, ServiceQuotaExceededException, ValidationException
from emulator.metadata_update import (
    MAX_UPDATE_PAYLOAD_BYTES,
    MetadataConstraintError,
    apply_dicom_updates,
    study_level_payload,
    validate_metadata_size,
)

pytestmark = pytest.mark.unit

MODEL = botocore.session.get_session().get_service_model("medical-imaging")
MESSAGE_PATTERN = re.compile(
    MODEL.operation_model("GetImageSet").output_shape.members["message"].metadata["pattern"]
)

# UIDs of the published examples: EX ex.3, ex.5, ex.6 use one UID for both the series and the instance.
EX_UID = "1.1.1.1.1.1.12345.123456789012.123.12345678901234.1"
EX7_SERIES = "1.3.6.1.4.1.5962.99.1.3633258862.2104868982.1369432891697.3656.0"
EX7_SOP = "1.3.6.1.4.1.5962.99.1.3633258862.2104868982.1369432891697.3659.0"
EX7_NEW_SOP = "1.3.6.1.4.1.5962.99.1.3633258862.2104868982.1369432891697.3659.9"
OTHER_SOP = "2.25.1001"
STUDY_UID = "2.25.42"

# seed 003 metadata-updates.json files, verbatim (EX:20, EX:33, EX:46, EX:70, EX:83, EX:96).
EX1 = r"""{ "DICOMUpdates": { "updatableAttributes": "{\"SchemaVersion\":1.1,\"Patient\":{\"DICOM\":{\"PatientName\":\"MX^MX\"}}}" } }"""  # noqa: E501
EX2 = r"""{ "DICOMUpdates": { "removableAttributes": "{\"SchemaVersion\":1.1,\"Study\":{\"DICOM\":{\"StudyDescription\":\"CHEST\"}}}" } }"""  # noqa: E501
EX3 = r"""{ "DICOMUpdates": { "removableAttributes": "{\"SchemaVersion\": 1.1,\"Study\": {\"Series\": {\"1.1.1.1.1.1.12345.123456789012.123.12345678901234.1\": {\"Instances\": {\"1.1.1.1.1.1.12345.123456789012.123.12345678901234.1\": {}}}}}}" } }"""  # noqa: E501
EX5 = r"""{ "DICOMUpdates": { "updatableAttributes": "{\"SchemaVersion\": 1.1,\"Study\": {\"Series\": {\"1.1.1.1.1.1.12345.123456789012.123.12345678901234.1\": {\"Instances\": {\"1.1.1.1.1.1.12345.123456789012.123.12345678901234.1\": {\"DICOM\": {\"001910F9\": \"97\"},\"DICOMVRs\": {\"001910F9\": \"DS\"}}}}}}}" } }"""  # noqa: E501
EX6 = r"""{ "DICOMUpdates": { "updatableAttributes": "{\"SchemaVersion\": 1.1,\"Study\": {\"Series\": {\"1.1.1.1.1.1.12345.123456789012.123.12345678901234.1\": {\"Instances\": {\"1.1.1.1.1.1.12345.123456789012.123.12345678901234.1\": {\"DICOM\": {\"00091001\": \"GE_GENESIS_DD\"}}}}}}}" } }"""  # noqa: E501
EX7 = r"""{ "DICOMUpdates": { "updatableAttributes": "{\"SchemaVersion\":1.1,\"Study\":{\"Series\":{\"1.3.6.1.4.1.5962.99.1.3633258862.2104868982.1369432891697.3656.0\":{\"Instances\":{\"1.3.6.1.4.1.5962.99.1.3633258862.2104868982.1369432891697.3659.0\":{\"DICOM\":{\"SOPInstanceUID\":\"1.3.6.1.4.1.5962.99.1.3633258862.2104868982.1369432891697.3659.9\"}}}}}}}" } }"""  # noqa: E501

# SDK use cases of seed 003 and FR:5239-5627 (Java text blocks, Python triple-quoted strings, verbatim).
JAVA_INSERT = """ { "SchemaVersion": 1.1, "Study": { "DICOM": { "StudyDescription": "CT CHEST" } } } """
PYTHON_INSERT = """{ "SchemaVersion": 1.1, "Study": { "DICOM": { "StudyDescription": "CT CHEST" } } }"""
PYTHON_REMOVE_INSTANCE = """{ "SchemaVersion": 1.1, "Study": { "Series": { "1.1.1.1.1.1.12345.123456789012.123.12345678901234.1": { "Instances": { "1.1.1.1.1.1.12345.123456789012.123.12345678901234.1": {} } } } } }"""  # noqa: E501
PYTHON_DOCSTRING = r"""{"DICOMUpdates": {"updatableAttributes": "{\"SchemaVersion\":1.1,\"Patient\":{\"DICOM\":{\"PatientName\":\"Garcia^Gloria\"}}}"}}"""  # noqa: E501
# The JS samples pass JSON.stringify of an object literal: compact JSON.
JS_INSERT = '{"SchemaVersion":1.1,"Study":{"DICOM":{"StudyDescription":"CT CHEST"}}}'

# Spec §5.7: FR base64 as printed (OCR-damaged, decodes to "SchumaVersion") and corrected,
# and the garbled ZH and FR removals.
FR_BASE64_AS_PRINTED = (
    "eyJTY2h1bWFWZXJzaW9uIjoxLjEsIlBhdGllbnQiOnsiRElDT00iOnsiUGF0aWVudE5hbWUiOiJNWF5NWCJ9fX0"
)
FR_BASE64_CORRECTED = (
    "eyJTY2hlbWFWZXJzaW9uIjoxLjEsIlBhdGllbnQiOnsiRElDT00iOnsiUGF0aWVudE5hbWUiOiJNWF5NWCJ9fX0"
)
ZH_REMOVE_BASE64 = "e1NjaGVtYVZlcnNpb246MS4xLFN0dWR5OntESUNPTTp7U3R1ZHlEZXNjcmlwdGlvbjpDSEVTVH19fQo="
FR_REMOVE_INSTANCE_BASE64 = (
    "eezEuMS4xLjEuMS4xLjEyMzQ1LjEyMzQ1Njc4OTAxMi4xMjMuMTIzNDU2Nzg5MDEyMzQuMTp7SW5zdGFuY2VzOn"
)
# JA 2023 Python (JA:3846-3861): the removable string as printed ends with a stray quote.
JA_UPDATABLE = '{"SchemaVersion":1.1,"Patient":{"DICOM":{"PatientName":"MX^MX"}}}'
JA_REMOVABLE_AS_PRINTED = '{"SchemaVersion":1.1,"Patient":{"DICOM":{"PatientSex":"M"}}}"'
JA_REMOVABLE = '{"SchemaVersion":1.1,"Patient":{"DICOM":{"PatientSex":"M"}}}'


def blob(update_file: str, member: str) -> bytes:
    """The decoded blob a metadata-updates.json file sends (``--cli-binary-format raw-in-base64-out``)."""
    value: str = json.loads(update_file)["DICOMUpdates"][member]
    return value.encode()


def b64(text: str) -> bytes:
    return base64.b64decode(text + "=" * (-len(text) % 4))


def instance(sop_uid: str, *, frames: int = 1, **extra: Any) -> dict[str, Any]:
    return {
        "DICOM": {
            "SOPClassUID": "1.2.840.10008.5.1.4.1.1.2",
            "SOPInstanceUID": sop_uid,
            "InstanceNumber": "1",
            "Rows": 2,
            "Columns": 2,
            "BitsAllocated": 16,
            "ImageType": ["ORIGINAL", "PRIMARY"],
            "WindowCenter": "40",
            "PixelData": None,
            "00090010": "SYNTH_VENDOR",
            "00091001": "SYNTH_VALUE",
            **extra,
        },
        "DICOMVRs": {"00090010": "LO", "00091001": "LO"},
        "ImageFrames": [
            {
                "ID": f"{index:032x}",
                "PixelDataChecksumFromBaseToFullResolution": [{"Width": 2, "Height": 2, "Checksum": 1}],
                "MinPixelValue": 0,
                "MaxPixelValue": 1,
                "FrameSizeInBytes": 8,
            }
            for index in range(frames)
        ],
    }


def document(series: dict[str, list[str]] | None = None) -> dict[str, Any]:
    """A synthetic image set: DOE^JANE, one CT study, the given series and SOP instances."""
    series = series if series is not None else {EX_UID: [EX_UID, OTHER_SOP]}
    return {
        "SchemaVersion": "1.1",
        "DatastoreID": "12345678901234567890123456789012",
        "ImageSetID": "53d5fdb05ca4d46ac7ca64b06545c66e",
        "Patient": {
            "DICOM": {
                "PatientName": "DOE^JANE",
                "PatientID": "SYN-0001",
                "PatientSex": "F",
                "PatientBirthDate": "19700101",
            }
        },
        "Study": {
            "DICOM": {
                "StudyInstanceUID": STUDY_UID,
                "StudyDate": "20240102",
                "StudyTime": "101500",
                "StudyDescription": "CHEST",
                "StudyID": "1",
                "AccessionNumber": "SYNACC1",
                "ReferringPhysicianName": None,
            },
            "Series": {
                series_uid: {
                    "DICOM": {
                        "Modality": "CT",
                        "SeriesInstanceUID": series_uid,
                        "SeriesNumber": "1",
                        "BodyPartExamined": "CHEST",
                    },
                    "Instances": {sop_uid: instance(sop_uid) for sop_uid in sop_uids},
                }
                for series_uid, sop_uids in series.items()
            },
        },
    }


def payload(**levels: Any) -> bytes:
    return json.dumps({"SchemaVersion": 1.1, **levels}).encode()


def at_instance(dicom: dict[str, Any], *, series: str = EX_UID, sop: str = EX_UID, **more: Any) -> bytes:
    return payload(Study={"Series": {series: {"Instances": {sop: {"DICOM": dicom, **more}}}}})


def at_series(dicom: dict[str, Any], *, series: str = EX_UID) -> bytes:
    return payload(Study={"Series": {series: {"DICOM": dicom}}})


def at_study(dicom: dict[str, Any]) -> bytes:
    return payload(Study={"DICOM": dicom})


def at_patient(dicom: dict[str, Any]) -> bytes:
    return payload(Patient={"DICOM": dicom})


def update(doc: dict[str, Any], body: bytes, *, force: bool = False) -> dict[str, Any]:
    return apply_dicom_updates(doc, updatable=body, removable=None, force=force)


def remove(doc: dict[str, Any], body: bytes, *, force: bool = False) -> dict[str, Any]:
    return apply_dicom_updates(doc, updatable=None, removable=body, force=force)


def assert_clean(error: ServiceError, *values: str) -> None:
    """A message the model accepts as an image set ``message``, quoting none of the values."""
    assert MESSAGE_PATTERN.fullmatch(error.message), error.message
    assert len(error.message) <= 2048
    for value in values:
        assert value not in error.message


# --- seed 003 and spec §5.7, as published ---------------------------------------------------------


def test_ex1_updates_patient_name() -> None:
    # Given
    doc = document()
    # When
    result = update(doc, blob(EX1, "updatableAttributes"))
    # Then
    assert result["Patient"]["DICOM"]["PatientName"] == "MX^MX"
    assert result["Patient"]["DICOM"]["PatientID"] == "SYN-0001"


def test_ex2_removes_study_description_whose_value_matches() -> None:
    # Given
    doc = document()
    # When
    result = remove(doc, blob(EX2, "removableAttributes"))
    # Then
    assert "StudyDescription" not in result["Study"]["DICOM"]
    assert result["Study"]["DICOM"]["StudyDate"] == "20240102"


def test_ex3_removes_the_instance() -> None:
    # Given
    doc = document()
    # When
    result = remove(doc, blob(EX3, "removableAttributes"))
    # Then
    assert list(result["Study"]["Series"][EX_UID]["Instances"]) == [OTHER_SOP]


def test_ex5_adds_a_private_element_with_its_vr_when_forced() -> None:
    # Given
    doc = document()
    # When
    result = update(doc, blob(EX5, "updatableAttributes"), force=True)
    # Then
    target = result["Study"]["Series"][EX_UID]["Instances"][EX_UID]
    assert target["DICOM"]["001910F9"] == "97"
    assert target["DICOMVRs"] == {"00090010": "LO", "00091001": "LO", "001910F9": "DS"}


def test_ex5_without_force_is_refused() -> None:
    # Given
    doc = document()
    # When
    with pytest.raises(MetadataConstraintError) as caught:
        update(doc, blob(EX5, "updatableAttributes"))
    # Then
    assert "private attribute (0019,10F9)" in caught.value.message
    assert "force" in caught.value.message
    assert_clean(caught.value, "97")


def test_ex6_updates_an_existing_private_element_when_forced() -> None:
    # Given
    doc = document()
    # When
    result = update(doc, blob(EX6, "updatableAttributes"), force=True)
    # Then
    target = result["Study"]["Series"][EX_UID]["Instances"][EX_UID]
    assert target["DICOM"]["00091001"] == "GE_GENESIS_DD"
    assert target["DICOMVRs"]["00091001"] == "LO"


def test_ex6_without_force_is_refused() -> None:
    # Given
    doc = document()
    # When / Then
    with pytest.raises(MetadataConstraintError, match=r"private attribute \(0009,1001\)"):
        update(doc, blob(EX6, "updatableAttributes"))


def test_ex7_forced_sop_instance_uid_update_rekeys_the_instance() -> None:
    # Given
    doc = document({EX7_SERIES: [OTHER_SOP, EX7_SOP, "2.25.1002"]})
    # When
    result = update(doc, blob(EX7, "updatableAttributes"), force=True)
    # Then
    instances = result["Study"]["Series"][EX7_SERIES]["Instances"]
    assert list(instances) == [OTHER_SOP, EX7_NEW_SOP, "2.25.1002"]
    assert instances[EX7_NEW_SOP]["DICOM"]["SOPInstanceUID"] == EX7_NEW_SOP
    assert (
        instances[EX7_NEW_SOP]["ImageFrames"]
        == doc["Study"]["Series"][EX7_SERIES]["Instances"][EX7_SOP]["ImageFrames"]
    )


def test_ex7_without_force_is_refused() -> None:
    # Given
    doc = document({EX7_SERIES: [EX7_SOP]})
    # When
    with pytest.raises(MetadataConstraintError) as caught:
        update(doc, blob(EX7, "updatableAttributes"))
    # Then
    assert "(0008,0018) SOPInstanceUID can only be updated with force" in caught.value.message


@pytest.mark.parametrize("text", [JAVA_INSERT, PYTHON_INSERT, JS_INSERT], ids=["java", "python", "js"])
def test_sdk_use_case_1_inserts_study_description(text: str) -> None:
    # Given
    doc = document()
    # When
    result = update(doc, text.encode())
    # Then
    assert result["Study"]["DICOM"]["StudyDescription"] == "CT CHEST"


def test_sdk_use_case_2_removes_what_use_case_1_inserted() -> None:
    # Given: "Attribute key and value must match the existing attribute."
    doc = update(document(), PYTHON_INSERT.encode())
    # When
    result = remove(doc, PYTHON_INSERT.encode())
    # Then
    assert "StudyDescription" not in result["Study"]["DICOM"]


def test_sdk_use_case_3_removes_the_instance() -> None:
    # Given
    doc = document()
    # When
    result = remove(doc, PYTHON_REMOVE_INSTANCE.encode())
    # Then
    assert EX_UID not in result["Study"]["Series"][EX_UID]["Instances"]


def test_python_docstring_example_updates_patient_name() -> None:
    # Given
    doc = document()
    # When
    result = update(doc, blob(PYTHON_DOCSTRING, "updatableAttributes"))
    # Then
    assert result["Patient"]["DICOM"]["PatientName"] == "Garcia^Gloria"


def test_fr_base64_example_corrected_applies_and_as_printed_is_refused() -> None:
    # Given
    doc = document()
    # When
    result = update(doc, b64(FR_BASE64_CORRECTED))
    with pytest.raises(ValidationException, match="unknown key SchumaVersion") as caught:
        update(doc, b64(FR_BASE64_AS_PRINTED))
    # Then
    assert result["Patient"]["DICOM"]["PatientName"] == "MX^MX"
    assert not isinstance(caught.value, MetadataConstraintError)


@pytest.mark.parametrize("garbled", [ZH_REMOVE_BASE64, FR_REMOVE_INSTANCE_BASE64], ids=["zh", "fr"])
def test_garbled_base64_removal_examples_are_not_json(garbled: str) -> None:
    # Given
    doc = document()
    # When
    with pytest.raises(ValidationException) as caught:
        remove(doc, b64(garbled))
    # Then
    assert caught.value.message.startswith("removableAttributes is not")
    assert_clean(caught.value)


def test_ja_example_sends_both_blobs_and_removes_before_updating() -> None:
    # Given
    doc = document()
    doc["Patient"]["DICOM"]["PatientSex"] = "M"
    # When
    result = apply_dicom_updates(
        doc, updatable=JA_UPDATABLE.encode(), removable=JA_REMOVABLE.encode(), force=False
    )
    # Then
    assert result["Patient"]["DICOM"]["PatientName"] == "MX^MX"
    assert "PatientSex" not in result["Patient"]["DICOM"]


def test_ja_removable_as_printed_is_not_json() -> None:
    # Given
    doc = document()
    # When / Then
    with pytest.raises(ValidationException, match="removableAttributes is not valid JSON: Extra data"):
        apply_dicom_updates(
            doc, updatable=JA_UPDATABLE.encode(), removable=JA_REMOVABLE_AS_PRINTED.encode(), force=False
        )


# --- removal -------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    "body",
    [
        at_study({"StudyDescription": "SECRET ABDOMEN"}),
        at_study({"AdditionalPatientHistory": "SECRET"}),
        at_patient({"PatientSex": None}),
        at_instance({"Rows": "2"}),
    ],
    ids=["other-value", "absent-key", "null-vs-value", "string-vs-number"],
)
def test_removal_that_does_not_match_the_stored_attribute_is_refused(body: bytes) -> None:
    # Given
    doc = document()
    # When
    with pytest.raises(MetadataConstraintError, match="does not match an existing attribute") as caught:
        remove(doc, body)
    # Then
    assert_clean(caught.value, "SECRET", "ABDOMEN")


def test_removing_a_series_with_an_empty_object() -> None:
    # Given
    doc = document({EX_UID: [EX_UID], "2.25.7": ["2.25.8"]})
    # When
    result = remove(doc, payload(Study={"Series": {EX_UID: {}}}))
    # Then
    assert list(result["Study"]["Series"]) == ["2.25.7"]


def test_removing_attributes_of_a_series_and_an_instance() -> None:
    # Given
    doc = document()
    # When
    result = remove(
        doc,
        payload(
            Study={
                "Series": {
                    EX_UID: {
                        "DICOM": {"BodyPartExamined": "CHEST"},
                        "Instances": {OTHER_SOP: {"DICOM": {"InstanceNumber": "1"}}},
                    }
                }
            }
        ),
    )
    # Then
    series = result["Study"]["Series"][EX_UID]
    assert "BodyPartExamined" not in series["DICOM"]
    assert "InstanceNumber" not in series["Instances"][OTHER_SOP]["DICOM"]
    assert "InstanceNumber" in series["Instances"][EX_UID]["DICOM"]


def test_removing_a_private_attribute_needs_force_and_drops_its_vr() -> None:
    # Given
    doc = document()
    body = at_instance({"00091001": "SYNTH_VALUE"})
    # When
    with pytest.raises(MetadataConstraintError, match="can only be removed with force"):
        remove(doc, body)
    result = remove(doc, body, force=True)
    # Then
    target = result["Study"]["Series"][EX_UID]["Instances"][EX_UID]
    assert "00091001" not in target["DICOM"]
    assert target["DICOMVRs"] == {"00090010": "LO"}


@pytest.mark.parametrize(
    ("body", "message"),
    [
        (payload(Study={"Series": {"2.25.404": {}}}), "Series 2.25.404 is not in the image set"),
        (
            payload(Study={"Series": {EX_UID: {"Instances": {"2.25.404": {}}}}}),
            f"SOP instance 2.25.404 is not in Series {EX_UID}",
        ),
    ],
    ids=["series", "instance"],
)
def test_removing_an_absent_series_or_instance_is_refused_even_forced(body: bytes, message: str) -> None:
    # Given
    doc = document()
    # When / Then
    with pytest.raises(MetadataConstraintError, match=re.escape(message)):
        remove(doc, body, force=True)


def test_removal_of_a_multi_valued_attribute_needs_force() -> None:
    # Given
    doc = document()
    body = at_instance({"ImageType": ["ORIGINAL", "PRIMARY"]})
    # When
    with pytest.raises(MetadataConstraintError, match=r"multi-valued \(VM 2-n\)"):
        remove(doc, body)
    result = remove(doc, body, force=True)
    # Then
    assert "ImageType" not in result["Study"]["Series"][EX_UID]["Instances"][EX_UID]["DICOM"]


# --- order of the two blobs ----------------------------------------------------------------------


def test_an_attribute_removed_and_updated_in_one_request_ends_updated() -> None:
    # Given
    doc = document()
    # When
    result = apply_dicom_updates(
        doc,
        updatable=at_study({"StudyDescription": "CT CHEST"}),
        removable=at_study({"StudyDescription": "CHEST"}),
        force=False,
    )
    # Then
    assert result["Study"]["DICOM"]["StudyDescription"] == "CT CHEST"


def test_updating_an_instance_removed_by_the_same_request_is_refused() -> None:
    # Given
    doc = document()
    # When / Then
    with pytest.raises(MetadataConstraintError, match=f"SOP instance {re.escape(EX_UID)} is not in"):
        apply_dicom_updates(
            doc,
            updatable=at_instance({"InstanceNumber": "9"}),
            removable=payload(Study={"Series": {EX_UID: {"Instances": {EX_UID: {}}}}}),
            force=False,
        )


def test_removal_matches_the_value_stored_before_the_request() -> None:
    # Given: the removal names the stored value, not the value the same request writes
    doc = document()
    # When / Then
    with pytest.raises(MetadataConstraintError, match="does not match"):
        apply_dicom_updates(
            doc,
            updatable=at_study({"StudyDescription": "CT CHEST"}),
            removable=at_study({"StudyDescription": "CT CHEST"}),
            force=False,
        )


# --- UIDs and force ------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("body", "keyword"),
    [
        (at_study({"StudyInstanceUID": "2.25.43"}), "(0020,000D) StudyInstanceUID"),
        (at_series({"SeriesInstanceUID": "2.25.44"}), "(0020,000E) SeriesInstanceUID"),
        (at_instance({"SOPInstanceUID": "2.25.45"}), "(0008,0018) SOPInstanceUID"),
        (at_study({"StudyID": "77"}), "(0020,0010) StudyID"),
    ],
    ids=["study-uid", "series-uid", "sop-uid", "study-id"],
)
def test_uids_and_study_id_need_force(body: bytes, keyword: str) -> None:
    # Given
    doc = document()
    # When
    with pytest.raises(MetadataConstraintError) as caught:
        update(doc, body)
    result = update(doc, body, force=True)
    # Then
    assert caught.value.message.endswith(f"{keyword} can only be updated with force")
    assert result != doc


def test_forced_series_instance_uid_update_rekeys_the_series() -> None:
    # Given
    doc = document({EX_UID: [EX_UID], "2.25.7": ["2.25.8"]})
    # When
    result = update(doc, at_series({"SeriesInstanceUID": "2.25.99"}), force=True)
    # Then
    assert list(result["Study"]["Series"]) == ["2.25.99", "2.25.7"]
    assert result["Study"]["Series"]["2.25.99"]["DICOM"]["SeriesInstanceUID"] == "2.25.99"
    assert list(result["Study"]["Series"]["2.25.99"]["Instances"]) == [EX_UID]


def test_forced_study_instance_uid_update_changes_only_the_study_level() -> None:
    # Given
    doc = document()
    # When
    result = update(doc, at_study({"StudyInstanceUID": "2.25.43"}), force=True)
    # Then
    assert result["Study"]["DICOM"]["StudyInstanceUID"] == "2.25.43"
    assert list(result["Study"]["Series"]) == [EX_UID]


def test_forced_rekey_and_instance_update_in_one_series() -> None:
    # Given: the series is re-keyed and its instance updated, both addressed by the old UIDs
    doc = document({EX_UID: [EX_UID]})
    body = payload(
        Study={
            "Series": {
                EX_UID: {
                    "DICOM": {"SeriesInstanceUID": "2.25.99"},
                    "Instances": {EX_UID: {"DICOM": {"SOPInstanceUID": "2.25.100"}}},
                }
            }
        }
    )
    # When
    result = update(doc, body, force=True)
    # Then
    assert list(result["Study"]["Series"]["2.25.99"]["Instances"]) == ["2.25.100"]


@pytest.mark.parametrize(
    ("doc_series", "body"),
    [
        ({EX_UID: [EX_UID, OTHER_SOP]}, at_instance({"SOPInstanceUID": OTHER_SOP})),
        ({EX_UID: [EX_UID], "2.25.7": [OTHER_SOP]}, at_instance({"SOPInstanceUID": OTHER_SOP})),
        ({EX_UID: [EX_UID], "2.25.7": ["2.25.8"]}, at_series({"SeriesInstanceUID": "2.25.7"})),
    ],
    ids=["sop-same-series", "sop-other-series", "series"],
)
def test_forced_rekey_onto_an_existing_uid_is_refused(doc_series: dict[str, list[str]], body: bytes) -> None:
    # Given
    doc = document(doc_series)
    # When / Then
    with pytest.raises(MetadataConstraintError, match=r"already in|used twice"):
        update(doc, body, force=True)


def test_forced_rekey_can_swap_two_sop_instance_uids() -> None:
    # Given
    doc = document({EX_UID: [EX_UID, OTHER_SOP]})
    body = payload(
        Study={
            "Series": {
                EX_UID: {
                    "Instances": {
                        EX_UID: {"DICOM": {"SOPInstanceUID": OTHER_SOP}},
                        OTHER_SOP: {"DICOM": {"SOPInstanceUID": EX_UID}},
                    }
                }
            }
        }
    )
    # When
    result = update(doc, body, force=True)
    # Then
    instances = result["Study"]["Series"][EX_UID]["Instances"]
    assert instances[OTHER_SOP]["DICOM"]["SOPInstanceUID"] == OTHER_SOP
    assert (
        instances[OTHER_SOP]["ImageFrames"]
        == doc["Study"]["Series"][EX_UID]["Instances"][EX_UID]["ImageFrames"]
    )


@pytest.mark.parametrize("value", [None, "", "1.2.a", "1..2", "9" * 257, 12])
def test_a_forced_hierarchy_uid_must_still_be_a_valid_uid(value: Any) -> None:
    # Given
    doc = document()
    # When / Then
    with pytest.raises(MetadataConstraintError, match="must be a valid UID"):
        update(doc, at_instance({"SOPInstanceUID": value}), force=True)


# --- constraints of spec §5.4 --------------------------------------------------------------------


@pytest.mark.parametrize(
    "body",
    [
        at_instance({"PixelData": None}),
        at_instance({"Width": 4}),
        at_instance({"MinPixelValue": 0}),
        at_study({"Checksum": 1}),
        payload(Study={"Series": {EX_UID: {"Instances": {EX_UID: {"ImageFrames": []}}}}}),
        json.dumps({"SchemaVersion": 1.1, "DatastoreID": "0" * 32}).encode(),
        json.dumps({"SchemaVersion": 1.1, "ImageSetID": "0" * 32}).encode(),
    ],
    ids=["PixelData", "Width", "MinPixelValue", "Checksum", "ImageFrames", "DatastoreID", "ImageSetID"],
)
@pytest.mark.parametrize("force", [False, True])
def test_generated_attributes_are_never_changeable(body: bytes, force: bool) -> None:
    # Given
    doc = document()
    # When
    with pytest.raises(MetadataConstraintError, match="generated by HealthImaging") as caught:
        update(doc, body, force=force)
    # Then
    assert_clean(caught.value)


def test_pixel_data_cannot_be_removed_even_forced() -> None:
    # Given
    doc = document()
    # When / Then
    with pytest.raises(MetadataConstraintError, match="generated by HealthImaging and cannot be removed"):
        remove(doc, at_instance({"PixelData": None}), force=True)


@pytest.mark.parametrize(
    "body",
    [
        at_patient({"OtherPatientIDsSequence": [{"PatientID": "SYN-0002"}]}),
        at_instance({"ReferencedImageSequence": []}),
    ],
    ids=["patient-level", "instance-level"],
)
def test_sequences_need_force(body: bytes) -> None:
    # Given
    doc = document()
    # When
    with pytest.raises(MetadataConstraintError, match=r"is a sequence \(VR SQ\)") as caught:
        update(doc, body)
    result = update(doc, body, force=True)
    # Then
    assert_clean(caught.value, "SYN-0002")
    assert result != doc


@pytest.mark.parametrize(
    ("body", "vm"),
    [
        (at_instance({"ImageType": ["DERIVED", "SECONDARY"]}), "2-n"),
        (at_patient({"OtherPatientNames": "DOE^J"}), "1-n"),
        (at_instance({"InstanceNumber": ["1", "2"]}), "1"),
    ],
    ids=["list", "dictionary-vm", "list-for-vm-1"],
)
def test_multi_valued_attributes_need_force(body: bytes, vm: str) -> None:
    # Given
    doc = document()
    # When
    with pytest.raises(MetadataConstraintError, match=f"multi-valued \\(VM {vm}\\)"):
        update(doc, body)
    result = update(doc, body, force=True)
    # Then
    assert result != doc


INVALID_VALUES = [
    (at_study({"StudyDate": "2024-01-02"}), "YYYYMMDD"),
    (at_study({"StudyDate": "20230229"}), "YYYYMMDD"),
    (at_study({"StudyDate": "20240101-20240102"}), "YYYYMMDD"),
    (at_study({"StudyTime": "250000"}), "HHMMSS"),
    (at_patient({"PatientSex": "female"}), "upper-case"),
    (at_patient({"PatientSex": "ABCDEFGHIJKLMNOPQ"}), "longer than 16"),
    (at_study({"PatientAge": "45Y"}), "nnnY"),
    (at_series({"SeriesNumber": "one"}), "32-bit integer"),
    (at_series({"SeriesNumber": "2147483648"}), "32-bit integer"),
    (at_study({"PatientWeight": "heavy"}), "decimal"),
    (at_study({"PatientWeight": "1e999"}), "decimal"),
    (at_instance({"Rows": 70000}), "from 0 to 65535"),
    (at_instance({"Rows": "2"}), "JSON number"),
    (at_instance({"Rows": 2.5}), "JSON integer"),
    (at_series({"SmallestPixelValueInSeries": 70000}), "from"),
    (at_patient({"PatientName": "A=B=C=D"}), "3 component groups"),
    (at_patient({"PatientName": "A^B^C^D^E^F"}), "5 components"),
    (at_patient({"PatientName": "DOE\\JANE"}), "backslash"),
    (at_patient({"PatientName": "X" * 257}), "longer than 256"),
    (at_study({"ReferringPhysicianName": "X" * 65}), "longer than 64"),
    (at_study({"StudyDescription": "X" * 65}), "longer than 64"),
    (at_study({"StudyDescription": "LINE\nBREAK"}), "control character"),
    (at_study({"StudyDescription": 12}), "JSON string"),
    (at_study({"AccessionNumber": "X" * 257}), "longer than 256"),
    (at_patient({"PatientID": "X" * 257}), "longer than 256"),
    (at_instance({"SOPClassUID": "1.2.abc"}), "digits separated by periods"),
    (at_instance({"SOPClassUID": "1." + "2" * 255}), "longer than 256"),
    (at_instance({"AcquisitionDateTime": "20230230101010"}), "YYYYMMDDHHMMSS"),
    (at_series({"InstitutionAddress": "X" * 1025}), "longer than 1024"),
    (at_instance({"EncapsulatedDocument": "AAAA"}), "VR OB values cannot be given in JSON"),
]


@pytest.mark.parametrize(("body", "reason"), INVALID_VALUES)
def test_values_that_do_not_fit_the_vr_need_force(body: bytes, reason: str) -> None:
    # Given
    doc = document()
    # When
    with pytest.raises(MetadataConstraintError) as caught:
        update(doc, body)
    result = update(doc, body, force=True)
    # Then
    assert reason in caught.value.message
    assert_clean(caught.value, "2024-01-02", "female", "heavy", "XXXXX", "DOE", "abc")
    assert result != doc


@pytest.mark.parametrize(
    "body",
    [
        at_study({"StudyDate": "20240229"}),
        at_study({"StudyDate": ""}),
        at_study({"StudyTime": "101010.123456"}),
        at_study({"StudyTime": "10"}),
        at_study({"PatientWeight": " 7.5e1 "}),
        at_study({"PatientAge": "045Y"}),
        at_study({"AccessionNumber": "X" * 256}),
        at_patient({"PatientName": "DOE^JANE^^^=ドウ^ジェーン"}),
        at_patient({"PatientName": "X" * 256}),
        at_patient({"PatientID": "X" * 256}),
        at_patient({"PatientSex": None}),
        at_patient({"PatientBirthDate": None}),
        at_series({"SmallestPixelValueInSeries": -5}),
        at_series({"SeriesNumber": "-12"}),
        at_instance({"Rows": 65535}),
        at_instance({"SOPClassUID": "1.02.0003." + "1" * 240}),
        at_instance({"AcquisitionDateTime": "20240229101010.5+0100"}),
        at_instance({"ImageComments": "multi\r\nline\ttext"}),
        at_instance({"RescaleSlope": "6.83760684E-01"}),
        at_instance({"SliceThickness": "5"}),
        at_instance({"ExposureTime": "40"}),
        at_instance({"Exposure": "40"}),
        at_instance({"SpacingBetweenSlices": "2.5"}),
    ],
)
def test_values_that_fit_the_vr_are_accepted_without_force(body: bytes) -> None:
    # Given
    doc = document()
    # When
    result = update(doc, body)
    # Then
    assert result != doc


def test_keywords_outside_the_dictionary_need_force_and_stay_at_instance_level() -> None:
    # Given
    doc = document()
    body = at_instance({"SyntheticNotAKeyword": "X"})
    # When
    with pytest.raises(MetadataConstraintError, match="not a DICOM dictionary attribute"):
        update(doc, body)
    result = update(doc, body, force=True)
    with pytest.raises(MetadataConstraintError, match="across modules"):
        update(doc, at_study({"SyntheticNotAKeyword": "X"}), force=True)
    # Then
    assert result["Study"]["Series"][EX_UID]["Instances"][EX_UID]["DICOM"]["SyntheticNotAKeyword"] == "X"


@pytest.mark.parametrize(
    ("body", "message"),
    [
        (at_study({"PatientName": "DOE^J"}), "(0010,0010) PatientName belongs to the Patient level"),
        (at_patient({"PatientWeight": "70"}), "(0010,1030) PatientWeight belongs to the Study level"),
        (at_instance({"StudyDescription": "X"}), "(0008,1030) StudyDescription belongs to the Study level"),
        (at_series({"Rows": 2}), "(0028,0010) Rows belongs to the Instance level"),
        (at_instance({"Modality": "MR"}), "(0008,0060) Modality belongs to the Series level"),
        (at_patient({"00191010": "X"}), "private attribute (0019,1010) belongs to the Instance level"),
    ],
    ids=[
        "patient-at-study",
        "study-at-patient",
        "study-at-instance",
        "instance-at-series",
        "series-at-instance",
        "private-at-patient",
    ],
)
@pytest.mark.parametrize("force", [False, True])
def test_attributes_across_modules_are_refused_even_forced(body: bytes, message: str, force: bool) -> None:
    # Given
    doc = document()
    # When
    with pytest.raises(MetadataConstraintError) as caught:
        update(doc, body, force=force)
    # Then
    assert message in caught.value.message
    assert "across modules" in caught.value.message
    assert_clean(caught.value, "DOE")


@pytest.mark.parametrize(
    "body",
    [
        at_series({"SeriesDescription": "X"}, series="2.25.404"),
        at_instance({"InstanceNumber": "2"}, sop="2.25.404"),
        payload(Study={"Series": {"2.25.404": {}}}),
    ],
    ids=["series-attribute", "instance-attribute", "empty-series"],
)
@pytest.mark.parametrize("force", [False, True])
def test_updates_under_an_absent_series_or_instance_are_refused(body: bytes, force: bool) -> None:
    # Given
    doc = document()
    # When / Then
    with pytest.raises(MetadataConstraintError, match=r"2\.25\.404 is not in"):
        update(doc, body, force=force)


def test_a_new_private_attribute_needs_its_vr_even_forced() -> None:
    # Given
    doc = document()
    # When / Then
    with pytest.raises(MetadataConstraintError, match=r"\(0019,10F9\) is new .* needs its VR in DICOMVRs"):
        update(doc, at_instance({"001910F9": "97"}), force=True)


def test_private_tags_are_stored_upper_case() -> None:
    # Given
    doc = document()
    # When
    result = update(doc, at_instance({"001910f9": "97"}, DICOMVRs={"001910f9": "DS"}), force=True)
    # Then
    target = result["Study"]["Series"][EX_UID]["Instances"][EX_UID]
    assert target["DICOM"]["001910F9"] == "97"
    assert target["DICOMVRs"]["001910F9"] == "DS"


def test_dicomvrs_must_agree_with_the_dictionary_unless_forced() -> None:
    # Given
    doc = document()
    body = at_instance({"InstanceNumber": "3"}, DICOMVRs={"InstanceNumber": "LO"})
    # When
    with pytest.raises(MetadataConstraintError, match="the VR LO, but its VR is IS"):
        update(doc, body)
    result = update(doc, body, force=True)
    # Then
    assert result["Study"]["Series"][EX_UID]["Instances"][EX_UID]["DICOMVRs"]["InstanceNumber"] == "LO"


# --- malformed payloads --------------------------------------------------------------------------

MALFORMED = [
    (b"{", "is not valid JSON"),
    (b"\xff\xfe", "is not UTF-8"),
    (b"[]", "must be a JSON object"),
    (b'{"Patient": {"DICOM": {"PatientName": "X"}}}', "must contain SchemaVersion"),
    (b'{"SchemaVersion": "1.0", "Patient": {}}', "unsupported SchemaVersion"),
    (b'{"SchemaVersion": true}', "unsupported SchemaVersion"),
    (b'{"SchemaVersion": 1.1, "Series": {}}', "unknown key Series in the top level"),
    (b'{"SchemaVersion": 1.1, "Patient": {"PatientName": "X"}}', "unknown key PatientName in Patient"),
    (b'{"SchemaVersion": 1.1, "Patient": {"DICOM": ["X"]}}', "Patient.DICOM must be a JSON object"),
    (b'{"SchemaVersion": 1.1, "Study": {"Series": []}}', "Study.Series must be a JSON object"),
    (b'{"SchemaVersion": 1.1, "Patient": {"DICOM": {"PatientName": {"a": 1}}}}', "not a string, number"),
    (b'{"SchemaVersion": 1.1, "Patient": {"DICOM": {"PatientName": true}}}', "not a string, number"),
    (b'{"SchemaVersion": 1.1, "Patient": {"DICOM": {"PatientName": NaN}}}', "NaN or Infinity"),
    (b'{"SchemaVersion": 1.1, "SchemaVersion": 1.1}', "repeats the key SchemaVersion"),
    (b'{"SchemaVersion": 1.1, "Patient": {"DICOM": {"00100010": "X"}}}', "by its keyword PatientName"),
    (
        b'{"SchemaVersion": 1.1, "Patient": {"DICOM": {"PatientName": "X", "00100010": "Y"}}}',
        "by its keyword PatientName",
    ),
]


@pytest.mark.parametrize(("body", "message"), MALFORMED)
@pytest.mark.parametrize("force", [False, True])
def test_malformed_payloads_are_refused(body: bytes, message: str, force: bool) -> None:
    # Given
    doc = document()
    # When
    with pytest.raises(ValidationException) as caught:
        update(doc, body, force=force)
    # Then
    assert message in caught.value.message
    assert caught.value.message.startswith("updatableAttributes")
    assert_clean(caught.value)


def test_series_level_object_under_the_wrong_key_is_refused() -> None:
    # Given: the prose shape of FR:2646, with Instances beside DICOM at the study level
    doc = document()
    body = payload(Study={"DICOM": {}, "Instances": {EX_UID: {}}})
    # When / Then
    with pytest.raises(ValidationException, match="unknown key Instances in Study"):
        update(doc, body)


def test_dicomvrs_is_not_allowed_in_removals() -> None:
    # Given
    doc = document()
    # When / Then
    with pytest.raises(ValidationException, match="unknown key DICOMVRs"):
        remove(doc, at_instance({"00091001": "SYNTH_VALUE"}, DICOMVRs={"00091001": "LO"}), force=True)


@pytest.mark.parametrize(
    ("vrs", "message"),
    [({"00191001": "DS"}, "which its DICOM object does not update"), ({"001910F9": "XX"}, "not a DICOM VR")],
)
def test_dicomvrs_entries_are_checked(vrs: dict[str, str], message: str) -> None:
    # Given
    doc = document()
    # When / Then
    with pytest.raises(ValidationException, match=message):
        update(doc, at_instance({"001910F9": "97"}, DICOMVRs=vrs), force=True)


def test_a_request_needs_at_least_one_blob() -> None:
    # Given
    doc = document()
    # When / Then
    with pytest.raises(ValidationException, match="updatableAttributes or removableAttributes"):
        apply_dicom_updates(doc, updatable=None, removable=None, force=False)


# --- the 10 KB payload quota ---------------------------------------------------------------------


def padded(body: bytes, size: int) -> bytes:
    """``body`` padded with JSON whitespace to exactly ``size`` bytes."""
    return body + b" " * (size - len(body))


def test_a_payload_of_exactly_10240_bytes_is_accepted() -> None:
    # Given
    body = padded(at_study({"StudyDescription": "CT CHEST"}), 10 * 1024)
    # When
    result = update(document(), body)
    # Then
    assert MAX_UPDATE_PAYLOAD_BYTES == len(body) == 10_240
    assert result["Study"]["DICOM"]["StudyDescription"] == "CT CHEST"


@pytest.mark.parametrize("member", ["updatable", "removable"])
def test_a_payload_of_10241_bytes_exceeds_the_quota(member: str) -> None:
    # Given
    body = padded(at_study({"StudyDescription": "CHEST"}), 10 * 1024 + 1)
    arguments: dict[str, Any] = {"updatable": None, "removable": None, member: body}
    # When
    with pytest.raises(ServiceQuotaExceededException) as caught:
        apply_dicom_updates(document(), force=True, **arguments)
    # Then
    assert caught.value.message == (
        f"{member}Attributes is 10241 bytes, "
        "above the UpdateImageSetMetadata quota of 10240 bytes per payload"
    )


def test_the_quota_applies_to_each_blob_on_its_own() -> None:
    # Given
    updatable = padded(at_study({"StudyDescription": "CT CHEST"}), 10 * 1024)
    removable = padded(at_study({"StudyDescription": "CHEST"}), 10 * 1024)
    # When
    result = apply_dicom_updates(document(), updatable=updatable, removable=removable, force=False)
    # Then
    assert result["Study"]["DICOM"]["StudyDescription"] == "CT CHEST"


def test_the_payload_quota_is_adjustable() -> None:
    # Given
    body = padded(at_study({"StudyDescription": "CT CHEST"}), 20_000)
    # When
    result = apply_dicom_updates(
        document(), updatable=body, removable=None, force=False, max_payload_bytes=30_000
    )
    # Then
    assert result["Study"]["DICOM"]["StudyDescription"] == "CT CHEST"


# --- purity, size, study-level helper ------------------------------------------------------------


def test_inputs_are_not_modified_and_results_share_nothing() -> None:
    # Given
    doc = document({EX7_SERIES: [EX7_SOP]})
    before = copy.deepcopy(doc)
    # When
    result = update(doc, blob(EX7, "updatableAttributes"), force=True)
    result["Study"]["Series"][EX7_SERIES]["Instances"][EX7_NEW_SOP]["ImageFrames"][0]["ID"] = "changed"
    result["Patient"]["DICOM"]["PatientName"] = "changed"
    # Then
    assert doc == before


def test_validate_metadata_size() -> None:
    # Given
    doc = document()
    size = metadata_update.metadata_size(doc)
    # When
    validate_metadata_size(doc, max_bytes=size)
    with pytest.raises(ServiceQuotaExceededException) as caught:
        validate_metadata_size(doc, max_bytes=size - 1)
    # Then
    assert metadata_update.MAX_METADATA_BYTES == 50 * 1024 * 1024
    assert caught.value.message == (
        f"The resulting image set metadata is {size} bytes, above the quota of {size - 1} bytes"
    )
    assert_clean(caught.value)


def test_study_level_payload_keeps_patient_and_study_parts() -> None:
    # Given
    body = payload(
        Patient={"DICOM": {"PatientName": "MX^MX"}},
        Study={
            "DICOM": {"StudyDescription": "CT CHEST"},
            "Series": {EX_UID: {"DICOM": {"SeriesNumber": "2"}}},
        },
    )
    sibling = document({"2.25.7": ["2.25.8"]})
    # When
    part = study_level_payload(body)
    assert part is not None
    result = update(sibling, part)
    # Then
    assert json.loads(part) == {
        "SchemaVersion": 1.1,
        "Patient": {"DICOM": {"PatientName": "MX^MX"}},
        "Study": {"DICOM": {"StudyDescription": "CT CHEST"}},
    }
    assert result["Patient"]["DICOM"]["PatientName"] == "MX^MX"
    assert result["Study"]["Series"] == sibling["Study"]["Series"]


@pytest.mark.parametrize(
    "body",
    [None, blob(EX3, "removableAttributes"), blob(EX5, "updatableAttributes")],
    ids=["none", "ex3", "ex5"],
)
def test_study_level_payload_is_none_without_patient_or_study_attributes(body: bytes | None) -> None:
    # Given / When
    part = study_level_payload(body)
    # Then
    assert part is None


def test_messages_never_quote_values() -> None:
    # Given: a value that would be PHI
    doc = document()
    secret = "SECRET^PATIENT^NAME^X^Y^Z"
    # When
    with pytest.raises(MetadataConstraintError) as invalid:
        update(doc, at_patient({"PatientName": secret}))
    with pytest.raises(MetadataConstraintError) as mismatch:
        remove(doc, at_patient({"PatientName": secret}))
    with pytest.raises(MetadataConstraintError) as wrong_level:
        update(doc, at_study({"PatientName": secret}))
    # Then
    for caught in (invalid, mismatch, wrong_level):
        assert_clean(caught.value, "SECRET", secret)

"""Image sets through boto3: read, frames, search, versions, metadata updates, copy, delete and tags."""

from __future__ import annotations

import gzip
import json
import re
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import Any

import boto3
import imagecodecs
import numpy as np
import openjpeg
import pytest
from botocore.exceptions import ClientError
from pydicom.dataset import FileDataset
from pydicom.uid import generate_uid

from emulator.config import EmulatorConfig, Quotas
from emulator.server import Emulator
from tests.emulator import helpers

pytestmark = pytest.mark.emulator

# The series and instance UIDs of seed 003's examples are placeholders; the tests use the imported ones.
UPDATE_RESPONSE_KEYS = {
    "latestVersionId",
    "imageSetWorkflowStatus",
    "updatedAt",
    "imageSetId",
    "imageSetState",
    "createdAt",
    "datastoreId",
}


@dataclass
class Imported:
    """One image set made by an import of one synthetic series."""

    datastore_id: str
    image_set_id: str
    datasets: list[FileDataset]

    @property
    def series_uid(self) -> str:
        return str(self.datasets[0].SeriesInstanceUID)

    @property
    def sop_uids(self) -> list[str]:
        return [str(ds.SOPInstanceUID) for ds in self.datasets]


def import_series(ahi: Any, s3: Any, bucket: str, datastore_id: str, datasets: list[FileDataset]) -> Imported:
    """Import ``datasets`` (one consistent series) and return its single image set."""
    results = helpers.import_datasets(ahi, s3, datastore_id=datastore_id, bucket=bucket, datasets=datasets)
    assert len(results.image_set_ids) == 1, results.summary
    return Imported(datastore_id, results.image_set_ids[0], datasets)


@pytest.fixture
def imported(ahi: Any, s3: Any, bucket: str, datastore: str) -> Imported:
    """A two-instance CT series (64 x 64) imported into a fresh data store."""
    return import_series(ahi, s3, bucket, datastore, helpers.SyntheticStudy().series(2))


def update(ahi: Any, target: Imported, latest: str, payload: dict[str, Any], **params: Any) -> dict:
    response: dict = ahi.update_image_set_metadata(
        datastoreId=target.datastore_id,
        imageSetId=target.image_set_id,
        latestVersionId=latest,
        updateImageSetMetadataUpdates=payload,
        **params,
    )
    return response


def instance_payload(target: Imported, sop_uid: str, instance: dict[str, Any]) -> dict[str, Any]:
    return {"Study": {"Series": {target.series_uid: {"Instances": {sop_uid: instance}}}}}


# ==================== reading
def test_get_image_set_after_import(ahi: Any, imported: Imported) -> None:
    # When
    response = ahi.get_image_set(datastoreId=imported.datastore_id, imageSetId=imported.image_set_id)

    # Then
    assert {
        "versionId",
        "imageSetWorkflowStatus",
        "updatedAt",
        "imageSetId",
        "imageSetState",
        "createdAt",
        "datastoreId",
        "imageSetArn",
    } <= set(response)
    assert response["versionId"] == "1"
    assert response["imageSetState"] == "ACTIVE"
    assert response["imageSetWorkflowStatus"] == "CREATED"
    assert response["imageSetId"] == imported.image_set_id
    assert response["datastoreId"] == imported.datastore_id
    assert response["imageSetArn"] == (
        f"arn:aws:medical-imaging:{helpers.REGION}:{helpers.ACCOUNT}:datastore/"
        f"{imported.datastore_id}/imageset/{imported.image_set_id}"
    )
    assert isinstance(response["createdAt"], datetime)
    assert "message" not in response
    assert (
        ahi.get_image_set(datastoreId=imported.datastore_id, imageSetId=imported.image_set_id, versionId="1")[
            "versionId"
        ]
        == "1"
    )


def test_get_unknown_image_set_or_version_is_not_found(ahi: Any, imported: Imported) -> None:
    # When / Then
    with pytest.raises(ClientError) as info:
        ahi.get_image_set(datastoreId=imported.datastore_id, imageSetId="e" * 32)
    assert helpers.error_of(info)[0] == "ResourceNotFoundException"
    with pytest.raises(ClientError) as info:
        ahi.get_image_set(datastoreId=imported.datastore_id, imageSetId=imported.image_set_id, versionId="7")
    assert helpers.error_of(info)[0] == "ResourceNotFoundException"
    with pytest.raises(ClientError) as info:
        ahi.get_image_set(datastoreId=imported.datastore_id, imageSetId=imported.image_set_id, versionId="x")
    code, message = helpers.error_of(info)
    assert code == "ValidationException"
    assert "versionId" in message


def test_metadata_is_gzip_json_in_the_documented_schema(ahi: Any, imported: Imported) -> None:
    # When
    response = ahi.get_image_set_metadata(datastoreId=imported.datastore_id, imageSetId=imported.image_set_id)
    blob = response["imageSetMetadataBlob"].read()

    # Then: gzip-compressed JSON (spec §4.1)
    assert response["contentType"] == "application/json"
    assert response["contentEncoding"] == "gzip"
    assert blob[:2] == b"\x1f\x8b"
    document = json.loads(gzip.decompress(blob))
    first = imported.datasets[0]

    # Then: the hierarchy of spec §4.2
    assert document["SchemaVersion"] == "1.1"
    assert document["DatastoreID"] == imported.datastore_id
    assert document["ImageSetID"] == imported.image_set_id
    patient = document["Patient"]["DICOM"]
    assert patient["PatientName"] == "TEST^PATIENT"
    assert patient["PatientID"] == first.PatientID
    assert patient["PatientSex"] == "O"
    study = document["Study"]["DICOM"]
    assert study["StudyInstanceUID"] == first.StudyInstanceUID
    assert study["StudyDate"] == "20240105"
    assert study["StudyTime"] == "093000"
    assert study["AccessionNumber"] == first.AccessionNumber
    assert study["StudyDescription"] == "CHEST"
    assert list(document["Study"]["Series"]) == [imported.series_uid]
    series = document["Study"]["Series"][imported.series_uid]
    assert series["DICOM"]["SeriesInstanceUID"] == imported.series_uid
    assert series["DICOM"]["Modality"] == "CT"
    assert sorted(series["Instances"]) == sorted(imported.sop_uids)

    # Then: instance level: typed values, private tags by hex, normalized attributes not repeated
    for ds in imported.datasets:
        instance = series["Instances"][ds.SOPInstanceUID]
        dicom = instance["DICOM"]
        assert dicom["SOPInstanceUID"] == ds.SOPInstanceUID
        assert dicom["SOPClassUID"] == ds.SOPClassUID
        assert dicom["Rows"] == 64
        assert dicom["BitsAllocated"] == 16
        assert dicom["ImageType"] == ["ORIGINAL", "PRIMARY", "AXIAL"]
        assert dicom["00091001"] == "ORIGINAL"
        assert "PatientName" not in dicom
        assert "StudyInstanceUID" not in dicom
        assert "Modality" not in dicom
        [frame] = instance["ImageFrames"]
        assert re.fullmatch(helpers.ID_PATTERN, frame["ID"])
        expected = helpers.expected_pixels(ds)
        assert frame["MinPixelValue"] == int(expected.min())
        assert frame["MaxPixelValue"] == int(expected.max())
        levels = frame["PixelDataChecksumFromBaseToFullResolution"]
        assert levels[-1]["Width"] == 64
        assert levels[-1]["Height"] == 64
        assert helpers.full_resolution_checksum(frame) == helpers.crc32(expected)


def test_image_frame_is_lossless_htj2k(ahi: Any, s3: Any, bucket: str, datastore: str) -> None:
    # Given: one non-square frame large enough for several resolution levels
    [ds] = helpers.SyntheticStudy().series(1, rows=200, columns=256)
    target = import_series(ahi, s3, bucket, datastore, [ds])
    [(_, frame)] = helpers.frames(helpers.metadata(ahi, datastore, target.image_set_id))

    # When
    response = ahi.get_image_frame(
        datastoreId=datastore,
        imageSetId=target.image_set_id,
        imageFrameInformation={"imageFrameId": frame["ID"]},
    )
    data = response["imageFrameBlob"].read()

    # Then: an HTJ2K codestream (SOC then SIZ) that decodes to the uploaded pixels, with two decoders
    assert response["contentType"] == "image/jph"
    assert data[:4] == b"\xff\x4f\xff\x51"
    expected = helpers.expected_pixels(ds)
    decoded = imagecodecs.htj2k_decode(data)
    assert decoded.shape == expected.shape
    assert np.array_equal(decoded, expected)
    assert np.array_equal(openjpeg.decode(data), expected)

    # Then: per-level checksums from the base resolution (≤ 64 px) to the full one (spec §3.9)
    levels = frame["PixelDataChecksumFromBaseToFullResolution"]
    assert [(level["Width"], level["Height"]) for level in levels] == [(64, 50), (128, 100), (256, 200)]
    assert levels[-1]["Checksum"] == helpers.crc32(expected)
    for skipped, level in enumerate(reversed(levels)):
        reduced = imagecodecs.htj2k_decode(data, skipres=skipped) if skipped else decoded
        assert reduced.shape == (level["Height"], level["Width"])
        assert level["Checksum"] == helpers.crc32(reduced)


def test_reading_a_prefix_of_a_frame_and_closing_works(ahi: Any, imported: Imported) -> None:
    # Given
    document = helpers.metadata(ahi, imported.datastore_id, imported.image_set_id)
    frame_ids = [frame["ID"] for _, frame in helpers.frames(document)]

    # When: read 16 bytes of one frame, close the stream, then read another frame whole
    partial = ahi.get_image_frame(
        datastoreId=imported.datastore_id,
        imageSetId=imported.image_set_id,
        imageFrameInformation={"imageFrameId": frame_ids[0]},
    )["imageFrameBlob"]
    head = partial.read(16)
    partial.close()
    whole = ahi.get_image_frame(
        datastoreId=imported.datastore_id,
        imageSetId=imported.image_set_id,
        imageFrameInformation={"imageFrameId": frame_ids[1]},
    )["imageFrameBlob"].read()

    # Then
    assert head[:2] == b"\xff\x4f"
    assert np.array_equal(imagecodecs.htj2k_decode(whole), helpers.expected_pixels(imported.datasets[1]))


def test_unknown_frame_is_not_found(ahi: Any, imported: Imported) -> None:
    # When
    with pytest.raises(ClientError) as info:
        ahi.get_image_frame(
            datastoreId=imported.datastore_id,
            imageSetId=imported.image_set_id,
            imageFrameInformation={"imageFrameId": "a" * 32},
        )

    # Then
    assert helpers.error_of(info)[0] == "ResourceNotFoundException"


# ==================== search
@dataclass
class SearchData:
    ahi: Any
    datastore_id: str
    before: datetime
    after: datetime
    first: helpers.SyntheticStudy
    second: helpers.SyntheticStudy
    image_sets: dict[str, str]  # series instance uid -> image set id
    series_of_first: list[str]
    series_of_second: list[str]


@pytest.fixture(scope="module")
def search_data(emulator: Emulator, moto_url: str) -> Iterator[SearchData]:
    """Three series of two studies in one data store (module-wide: the search tests only read)."""
    ahi = helpers.medical_imaging(emulator.endpoint_url)
    s3 = boto3.client("s3", region_name=helpers.REGION, endpoint_url=moto_url)
    bucket = helpers.unique_name("search")
    s3.create_bucket(Bucket=bucket)
    datastore_id = helpers.create_datastore(ahi)
    first = helpers.SyntheticStudy(study_id="S1", study_date="19991122", study_time="140728")
    second = helpers.SyntheticStudy(
        patient_name="TEST^SECOND", study_id="S2", study_date="20230615", study_time="080000"
    )
    datasets = [*first.series(2, series_number=1), *first.series(1, series_number=2), *second.series(1)]
    before = datetime.now(UTC) - timedelta(seconds=1)
    results = helpers.import_datasets(ahi, s3, datastore_id=datastore_id, bucket=bucket, datasets=datasets)
    assert len(results.image_set_ids) == 3, results.summary
    image_sets = {}
    for line in results.success:
        index = int(line["inputFile"].rsplit("/", 1)[1].split(".")[0])
        image_sets[str(datasets[index].SeriesInstanceUID)] = line["importResponse"]["imageSetId"]
    # The second study's image set is updated last, so updatedAt orders it after the other two.
    latest = image_sets[str(datasets[3].SeriesInstanceUID)]
    ahi.update_image_set_metadata(
        datastoreId=datastore_id,
        imageSetId=latest,
        latestVersionId="1",
        updateImageSetMetadataUpdates=helpers.updates(
            updatable={"Study": {"DICOM": {"StudyDescription": "CT"}}}
        ),
    )
    helpers.wait_image_set(ahi, datastore_id, latest)
    after = datetime.now(UTC) + timedelta(seconds=1)
    yield SearchData(
        ahi=ahi,
        datastore_id=datastore_id,
        before=before,
        after=after,
        first=first,
        second=second,
        image_sets=image_sets,
        series_of_first=[str(datasets[0].SeriesInstanceUID), str(datasets[2].SeriesInstanceUID)],
        series_of_second=[str(datasets[3].SeriesInstanceUID)],
    )
    helpers.delete_datastore(ahi, datastore_id)


def search_ids(data: SearchData, criteria: dict[str, Any]) -> list[str]:
    return [s["imageSetId"] for s in helpers.all_image_sets(data.ahi, data.datastore_id, criteria)]


def equal(attribute: str, value: Any) -> dict[str, Any]:
    return {"filters": [{"values": [{attribute: value}], "operator": "EQUAL"}]}


def between(attribute: str, low: Any, high: Any) -> dict[str, Any]:
    return {"filters": [{"values": [{attribute: low}, {attribute: high}], "operator": "BETWEEN"}]}


def test_search_equal_on_every_dicom_attribute(search_data: SearchData) -> None:
    # Given
    data = search_data
    of_first = {data.image_sets[uid] for uid in data.series_of_first}
    of_second = {data.image_sets[uid] for uid in data.series_of_second}

    # When / Then
    assert set(search_ids(data, equal("DICOMPatientId", data.first.patient_id))) == of_first
    assert set(search_ids(data, equal("DICOMPatientId", data.second.patient_id))) == of_second
    assert set(search_ids(data, equal("DICOMStudyInstanceUID", data.first.study_instance_uid))) == of_first
    assert set(search_ids(data, equal("DICOMAccessionNumber", data.second.accession_number))) == of_second
    assert set(search_ids(data, equal("DICOMStudyId", "S1"))) == of_first
    for series_uid, image_set_id in data.image_sets.items():
        assert search_ids(data, equal("DICOMSeriesInstanceUID", series_uid)) == [image_set_id]
    assert search_ids(data, equal("DICOMPatientId", "NOBODY")) == []


def test_search_between_study_date_and_time(search_data: SearchData) -> None:
    # Given: spec §7.4 example 2 (1990-01-01 00:00 to 2023-01-01 00:00)
    data = search_data
    criteria = between(
        "DICOMStudyDateAndTime",
        {"DICOMStudyDate": "19900101", "DICOMStudyTime": "000000"},
        {"DICOMStudyDate": "20230101", "DICOMStudyTime": "000000"},
    )

    # When / Then
    assert set(search_ids(data, criteria)) == {data.image_sets[uid] for uid in data.series_of_first}
    same_day = between(
        "DICOMStudyDateAndTime",
        {"DICOMStudyDate": "20230615"},  # no time: 00:00
        {"DICOMStudyDate": "20230615", "DICOMStudyTime": "080000"},
    )
    assert search_ids(data, same_day) == [data.image_sets[data.series_of_second[0]]]
    too_early = between(
        "DICOMStudyDateAndTime",
        {"DICOMStudyDate": "20230615"},
        {"DICOMStudyDate": "20230615", "DICOMStudyTime": "075959"},
    )
    assert search_ids(data, too_early) == []


@pytest.mark.parametrize("attribute", ["createdAt", "updatedAt"])
def test_search_between_timestamps(search_data: SearchData, attribute: str) -> None:
    # Given
    data = search_data

    # When / Then
    assert set(search_ids(data, between(attribute, data.before, data.after))) == set(data.image_sets.values())
    past = data.before - timedelta(days=365)
    assert search_ids(data, between(attribute, past, past + timedelta(days=1))) == []


def test_search_between_a_returned_timestamp_and_itself(search_data: SearchData) -> None:
    # Given: the timestamps as the service returns them (millisecond precision, spec §1.5 examples)
    data = search_data
    image_set_id = data.image_sets[data.series_of_first[0]]
    image_set = data.ahi.get_image_set(datastoreId=data.datastore_id, imageSetId=image_set_id)

    # When / Then: they are the stored values, so a range from one to itself finds the image set
    for attribute in ("createdAt", "updatedAt"):
        moment = image_set[attribute]
        assert moment.microsecond % 1000 == 0
        found = helpers.all_image_sets(data.ahi, data.datastore_id, between(attribute, moment, moment))
        assert image_set_id in [s["imageSetId"] for s in found], attribute
        assert {s[attribute] for s in found} == {moment}


def test_search_sorts_and_pages(search_data: SearchData) -> None:
    # Given
    data = search_data

    # When
    ascending = helpers.all_image_sets(
        data.ahi, data.datastore_id, {"sort": {"sortField": "updatedAt", "sortOrder": "ASC"}}
    )
    descending = helpers.all_image_sets(
        data.ahi, data.datastore_id, {"sort": {"sortField": "updatedAt", "sortOrder": "DESC"}}
    )
    by_study_date = helpers.all_image_sets(
        data.ahi, data.datastore_id, {"sort": {"sortField": "DICOMStudyDateAndTime", "sortOrder": "ASC"}}
    )
    default = helpers.all_image_sets(data.ahi, data.datastore_id)
    without_criteria = data.ahi.search_image_sets(datastoreId=data.datastore_id)["imageSetsMetadataSummaries"]
    pages: list[str] = []
    params: dict[str, Any] = {"datastoreId": data.datastore_id, "maxResults": 1}
    while True:
        page = data.ahi.search_image_sets(**params)
        assert len(page["imageSetsMetadataSummaries"]) <= 1
        pages.extend(s["imageSetId"] for s in page["imageSetsMetadataSummaries"])
        if not page.get("nextToken"):
            break
        params["nextToken"] = page["nextToken"]

    # Then
    assert [s["updatedAt"] for s in ascending] == sorted(s["updatedAt"] for s in ascending)
    assert [s["updatedAt"] for s in descending] == sorted((s["updatedAt"] for s in ascending), reverse=True)
    assert [s["imageSetId"] for s in default] == [s["imageSetId"] for s in descending]  # spec §7.1
    assert [s["imageSetId"] for s in without_criteria] == [s["imageSetId"] for s in default]
    updated_last = data.image_sets[data.series_of_second[0]]
    assert (ascending[-1]["imageSetId"], descending[0]["imageSetId"]) == (updated_last, updated_last)
    assert by_study_date[-1]["imageSetId"] == data.image_sets[data.series_of_second[0]]
    assert pages == [s["imageSetId"] for s in default]
    with pytest.raises(ClientError) as info:
        data.ahi.search_image_sets(datastoreId=data.datastore_id, nextToken="garbage")
    assert helpers.error_of(info)[0] == "ValidationException"


def test_search_summaries_carry_dicom_tags(search_data: SearchData) -> None:
    # Given
    data = search_data
    series_uid = data.series_of_first[0]

    # When
    [summary] = helpers.all_image_sets(
        data.ahi, data.datastore_id, equal("DICOMSeriesInstanceUID", series_uid)
    )

    # Then: spec §7.3, with the series members of the 2024-04 release
    assert summary["imageSetId"] == data.image_sets[series_uid]
    assert summary["version"] == 1
    assert isinstance(summary["createdAt"], datetime)
    assert isinstance(summary["updatedAt"], datetime)
    tags = summary["DICOMTags"]
    assert tags["DICOMPatientId"] == data.first.patient_id
    assert tags["DICOMPatientName"] == "TEST^PATIENT"
    assert tags["DICOMPatientBirthDate"] == "19700101"
    assert tags["DICOMPatientSex"] == "O"
    assert tags["DICOMStudyInstanceUID"] == data.first.study_instance_uid
    assert tags["DICOMStudyId"] == "S1"
    assert tags["DICOMStudyDescription"] == "CHEST"
    assert tags["DICOMAccessionNumber"] == data.first.accession_number
    assert tags["DICOMStudyDate"] == "19991122"
    assert tags["DICOMStudyTime"] == "140728"
    assert tags["DICOMSeriesInstanceUID"] == series_uid
    assert tags["DICOMSeriesModality"] == "CT"
    assert tags["DICOMSeriesBodyPart"] == "CHEST"
    assert tags["DICOMSeriesNumber"] == 1
    assert tags["DICOMNumberOfStudyRelatedSeries"] == 1
    assert tags["DICOMNumberOfStudyRelatedInstances"] == 2


def test_search_validates_the_criteria(search_data: SearchData) -> None:
    # Given
    data = search_data
    bad = [
        {"filters": [{"values": [{"DICOMPatientId": "A"}, {"DICOMPatientId": "B"}], "operator": "EQUAL"}]},
        {"filters": [{"values": [{"DICOMPatientId": "A"}], "operator": "BETWEEN"}]},
        between("DICOMPatientId", "A", "B"),
        between("createdAt", data.after, data.before),
    ]

    # When / Then
    for criteria in bad:
        with pytest.raises(ClientError) as info:
            data.ahi.search_image_sets(datastoreId=data.datastore_id, searchCriteria=criteria)
        assert helpers.error_of(info)[0] == "ValidationException", criteria


# ==================== versions and updates
def test_update_inserts_an_attribute_in_a_new_version(ahi: Any, imported: Imported) -> None:
    # Given: seed 003 example 1
    payload = {
        "DICOMUpdates": {
            "updatableAttributes": '{"SchemaVersion":1.1,"Patient":{"DICOM":{"PatientName":"MX^MX"}}}'
        }
    }

    # When
    response = update(ahi, imported, "1", payload)

    # Then
    assert set(response) - {"ResponseMetadata"} == UPDATE_RESPONSE_KEYS
    assert response["latestVersionId"] == "2"
    assert response["imageSetState"] == "LOCKED"
    assert response["imageSetWorkflowStatus"] == "UPDATING"
    assert response["imageSetId"] == imported.image_set_id
    done = helpers.wait_image_set(ahi, imported.datastore_id, imported.image_set_id)
    assert (done["imageSetState"], done["imageSetWorkflowStatus"], done["versionId"]) == (
        "ACTIVE",
        "UPDATED",
        "2",
    )
    assert (
        helpers.metadata(ahi, imported.datastore_id, imported.image_set_id)["Patient"]["DICOM"]["PatientName"]
        == "MX^MX"
    )
    old = helpers.metadata(ahi, imported.datastore_id, imported.image_set_id, version_id="1")
    assert old["Patient"]["DICOM"]["PatientName"] == "TEST^PATIENT"


def test_update_removes_an_attribute_whose_value_matches(ahi: Any, imported: Imported) -> None:
    # Given: seed 003 example 2
    payload = {
        "DICOMUpdates": {
            "removableAttributes": '{"SchemaVersion":1.1,"Study":{"DICOM":{"StudyDescription":"CHEST"}}}'
        }
    }

    # When
    update(ahi, imported, "1", payload)

    # Then
    assert helpers.wait_image_set(ahi, imported.datastore_id, imported.image_set_id)[
        "imageSetWorkflowStatus"
    ] == ("UPDATED")
    study = helpers.metadata(ahi, imported.datastore_id, imported.image_set_id)["Study"]["DICOM"]
    assert study.get("StudyDescription") is None


def test_update_removes_an_instance(ahi: Any, imported: Imported) -> None:
    # Given: seed 003 example 3
    removed, kept = imported.sop_uids
    payload = helpers.updates(removable=instance_payload(imported, removed, {}))

    # When
    update(ahi, imported, "1", payload)

    # Then
    helpers.wait_image_set(ahi, imported.datastore_id, imported.image_set_id)
    document = helpers.metadata(ahi, imported.datastore_id, imported.image_set_id)
    assert list(document["Study"]["Series"][imported.series_uid]["Instances"]) == [kept]


def test_revert_restores_an_old_version_as_a_new_one(ahi: Any, imported: Imported) -> None:
    # Given: versions 2 and 3 change the patient name (seed 003 example 4 starts from version 3)
    original = helpers.metadata(ahi, imported.datastore_id, imported.image_set_id)
    for latest, name in [("1", "TEST^TWO"), ("2", "TEST^THREE")]:
        update(
            ahi, imported, latest, helpers.updates(updatable={"Patient": {"DICOM": {"PatientName": name}}})
        )
        helpers.wait_image_set(ahi, imported.datastore_id, imported.image_set_id)

    # When
    response = update(ahi, imported, "3", {"revertToVersionId": "1"})

    # Then
    assert response["latestVersionId"] == "4"
    assert (response["imageSetState"], response["imageSetWorkflowStatus"]) == ("LOCKED", "UPDATING")
    assert helpers.wait_image_set(ahi, imported.datastore_id, imported.image_set_id)["versionId"] == "4"
    assert helpers.metadata(ahi, imported.datastore_id, imported.image_set_id) == original
    versions = ahi.list_image_set_versions(
        datastoreId=imported.datastore_id, imageSetId=imported.image_set_id
    )
    assert [v["versionId"] for v in versions["imageSetPropertiesList"]] == ["4", "3", "2", "1"]


def test_private_attributes_need_force(ahi: Any, imported: Imported) -> None:
    # Given: seed 003 examples 5 (add a private element) and 6 (update one)
    sop_uid = imported.sop_uids[0]
    add = helpers.updates(
        updatable=instance_payload(
            imported, sop_uid, {"DICOM": {"001910F9": "97"}, "DICOMVRs": {"001910F9": "DS"}}
        )
    )
    change = helpers.updates(
        updatable=instance_payload(imported, sop_uid, {"DICOM": {"00091001": "GE_GENESIS_DD"}})
    )

    # When: without force
    with pytest.raises(ClientError) as info:
        update(ahi, imported, "1", add)

    # Then
    code, message = helpers.error_of(info)
    assert code == "ValidationException"
    assert "001910F9" in message.upper() or "private" in message.lower()
    assert (
        ahi.get_image_set(datastoreId=imported.datastore_id, imageSetId=imported.image_set_id)["versionId"]
        == "1"
    )

    # When: with force
    assert update(ahi, imported, "1", add, force=True)["latestVersionId"] == "2"
    helpers.wait_image_set(ahi, imported.datastore_id, imported.image_set_id)
    assert update(ahi, imported, "2", change, force=True)["latestVersionId"] == "3"
    done = helpers.wait_image_set(ahi, imported.datastore_id, imported.image_set_id)

    # Then
    assert done["imageSetWorkflowStatus"] == "UPDATED"
    assert done.get("overrides") == {"forced": True}
    dicom = helpers.metadata(ahi, imported.datastore_id, imported.image_set_id)["Study"]["Series"][
        imported.series_uid
    ]["Instances"][sop_uid]["DICOM"]
    assert dicom["001910F9"] == "97"
    assert dicom["00091001"] == "GE_GENESIS_DD"


def test_sop_instance_uid_changes_only_with_force(ahi: Any, imported: Imported) -> None:
    # Given: seed 003 example 7
    old_uid = imported.sop_uids[0]
    new_uid = generate_uid()
    payload = helpers.updates(
        updatable=instance_payload(imported, old_uid, {"DICOM": {"SOPInstanceUID": new_uid}})
    )

    # When / Then: refused without force
    with pytest.raises(ClientError) as info:
        update(ahi, imported, "1", payload)
    code, message = helpers.error_of(info)
    assert code == "ValidationException"
    assert "SOPInstanceUID" in message

    # When / Then: applied with force; the instance is re-keyed by its new UID
    update(ahi, imported, "1", payload, force=True)
    assert helpers.wait_image_set(ahi, imported.datastore_id, imported.image_set_id)[
        "imageSetWorkflowStatus"
    ] == ("UPDATED")
    instances = helpers.metadata(ahi, imported.datastore_id, imported.image_set_id)["Study"]["Series"][
        imported.series_uid
    ]["Instances"]
    assert sorted(instances) == sorted([new_uid, imported.sop_uids[1]])
    assert instances[new_uid]["DICOM"]["SOPInstanceUID"] == new_uid


def test_update_and_removal_in_one_request(ahi: Any, imported: Imported) -> None:
    # Given: both blobs at once (JA Python and Java samples), as base64 on the wire (spec §5.7)
    payload = helpers.updates(
        updatable={"Study": {"DICOM": {"StudyDescription": "CT CHEST"}}},
        removable={"Patient": {"DICOM": {"PatientSex": "O"}}},
    )

    # When
    update(ahi, imported, "1", payload)

    # Then
    helpers.wait_image_set(ahi, imported.datastore_id, imported.image_set_id)
    document = helpers.metadata(ahi, imported.datastore_id, imported.image_set_id)
    assert document["Study"]["DICOM"]["StudyDescription"] == "CT CHEST"
    assert document["Patient"]["DICOM"].get("PatientSex") is None


def test_stale_latest_version_is_a_conflict(ahi: Any, imported: Imported) -> None:
    # When
    with pytest.raises(ClientError) as info:
        update(ahi, imported, "2", helpers.updates(updatable={"Patient": {"DICOM": {"PatientName": "X^Y"}}}))

    # Then
    code, message = helpers.error_of(info)
    assert code == "ConflictException"
    assert "latestVersionId" in message


def test_payload_over_10_kb_is_refused(ahi: Any, imported: Imported) -> None:
    # Given: an update blob of 11 KB (quota: 10 KB, platform §7.2)
    payload = helpers.updates(updatable={"Study": {"DICOM": {"StudyComments": "x" * (11 * 1024)}}})

    # When
    with pytest.raises(ClientError) as info:
        update(ahi, imported, "1", payload)

    # Then
    code, message = helpers.error_of(info)
    assert code == "ServiceQuotaExceededException"
    assert "10240" in message or "10 KB" in message
    assert (
        ahi.get_image_set(datastoreId=imported.datastore_id, imageSetId=imported.image_set_id)["versionId"]
        == "1"
    )


def test_list_versions_newest_first_with_capital_i_status(ahi: Any, imported: Imported) -> None:
    # Given
    update(ahi, imported, "1", helpers.updates(updatable={"Patient": {"DICOM": {"PatientName": "TEST^V2"}}}))
    helpers.wait_image_set(ahi, imported.datastore_id, imported.image_set_id)

    # When
    listed = ahi.list_image_set_versions(datastoreId=imported.datastore_id, imageSetId=imported.image_set_id)
    first_page = ahi.list_image_set_versions(
        datastoreId=imported.datastore_id, imageSetId=imported.image_set_id, maxResults=1
    )
    second_page = ahi.list_image_set_versions(
        datastoreId=imported.datastore_id,
        imageSetId=imported.image_set_id,
        maxResults=1,
        nextToken=first_page["nextToken"],
    )

    # Then: spec §8.1
    versions = listed["imageSetPropertiesList"]
    assert [v["versionId"] for v in versions] == ["2", "1"]
    assert [v["ImageSetWorkflowStatus"] for v in versions] == ["UPDATED", "CREATED"]
    assert all("imageSetWorkflowStatus" not in v for v in versions)
    assert all(v["imageSetState"] == "ACTIVE" and v["imageSetId"] == imported.image_set_id for v in versions)
    assert versions[0]["createdAt"] == versions[1]["createdAt"]
    assert [v["versionId"] for v in first_page["imageSetPropertiesList"]] == ["2"]
    assert [v["versionId"] for v in second_page["imageSetPropertiesList"]] == ["1"]
    assert "nextToken" not in second_page


# ==================== locks (slow transitions)
@pytest.fixture(scope="module")
def slow(moto_url: str, tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[Any, Any, str]]:
    """An emulator whose asynchronous operations take 0.5 s, so LOCKED states can be observed."""
    config = EmulatorConfig(
        data_dir=tmp_path_factory.mktemp("slow"), s3_endpoint_url=moto_url, transition_delay=0.5
    )
    with Emulator(config) as running:
        s3 = boto3.client("s3", region_name=helpers.REGION, endpoint_url=moto_url)
        bucket = helpers.unique_name("slow")
        s3.create_bucket(Bucket=bucket)
        yield helpers.medical_imaging(running.endpoint_url), s3, bucket
        running.wait_idle()


def test_writes_are_refused_while_locked(slow: tuple[Any, Any, str]) -> None:
    # Given: an image set being updated
    ahi, s3, bucket = slow
    datastore_id = helpers.create_datastore(ahi)
    target = import_series(ahi, s3, bucket, datastore_id, helpers.SyntheticStudy().series(1))
    update(ahi, target, "1", helpers.updates(updatable={"Patient": {"DICOM": {"PatientName": "TEST^LOCK"}}}))

    # When
    during = ahi.get_image_set(datastoreId=datastore_id, imageSetId=target.image_set_id)
    refused = {
        "update": helpers.client_error_code(
            lambda: update(
                ahi, target, "2", helpers.updates(updatable={"Patient": {"DICOM": {"PatientSex": "F"}}})
            )
        ),
        "copy": helpers.client_error_code(
            lambda: ahi.copy_image_set(
                datastoreId=datastore_id,
                sourceImageSetId=target.image_set_id,
                copyImageSetInformation={"sourceImageSet": {"latestVersionId": "2"}},
            )
        ),
        "delete": helpers.client_error_code(
            lambda: ahi.delete_image_set(datastoreId=datastore_id, imageSetId=target.image_set_id)
        ),
    }
    readable = helpers.metadata(ahi, datastore_id, target.image_set_id)

    # Then
    assert (during["imageSetState"], during["imageSetWorkflowStatus"]) == ("LOCKED", "UPDATING")
    assert refused == {
        "update": "ConflictException",
        "copy": "ConflictException",
        "delete": "ConflictException",
    }
    assert readable["ImageSetID"] == target.image_set_id
    after = helpers.wait_image_set(ahi, datastore_id, target.image_set_id)
    assert (after["imageSetState"], after["imageSetWorkflowStatus"], after["versionId"]) == (
        "ACTIVE",
        "UPDATED",
        "2",
    )

    # When: deleting
    deleting = ahi.delete_image_set(datastoreId=datastore_id, imageSetId=target.image_set_id)
    during_delete = ahi.get_image_set(datastoreId=datastore_id, imageSetId=target.image_set_id)
    again = helpers.client_error_code(
        lambda: ahi.delete_image_set(datastoreId=datastore_id, imageSetId=target.image_set_id)
    )

    # Then
    assert set(deleting) - {"ResponseMetadata"} == {
        "datastoreId",
        "imageSetId",
        "imageSetState",
        "imageSetWorkflowStatus",
    }
    assert (deleting["imageSetState"], deleting["imageSetWorkflowStatus"]) == ("LOCKED", "DELETING")
    assert (during_delete["imageSetState"], during_delete["imageSetWorkflowStatus"]) == ("LOCKED", "DELETING")
    assert again == "ConflictException"
    gone = helpers.wait_image_set(ahi, datastore_id, target.image_set_id)
    assert (gone["imageSetState"], gone["imageSetWorkflowStatus"]) == ("DELETED", "DELETED")
    helpers.delete_datastore(ahi, datastore_id)


# ==================== copy
def test_copy_into_a_new_image_set(ahi: Any, imported: Imported) -> None:
    # When: spec §6.3 example 1
    response = ahi.copy_image_set(
        datastoreId=imported.datastore_id,
        sourceImageSetId=imported.image_set_id,
        copyImageSetInformation={"sourceImageSet": {"latestVersionId": "1"}},
    )

    # Then
    source, destination = response["sourceImageSetProperties"], response["destinationImageSetProperties"]
    assert response["datastoreId"] == imported.datastore_id
    keys = {
        "imageSetId",
        "latestVersionId",
        "imageSetState",
        "imageSetWorkflowStatus",
        "createdAt",
        "updatedAt",
    }
    assert keys <= set(source)
    assert keys <= set(destination)
    assert source["imageSetId"] == imported.image_set_id
    assert (source["imageSetState"], source["imageSetWorkflowStatus"], source["latestVersionId"]) == (
        "LOCKED",
        "COPYING_WITH_READ_ONLY_ACCESS",
        "1",
    )
    assert (
        destination["imageSetState"],
        destination["imageSetWorkflowStatus"],
        destination["latestVersionId"],
    ) == (
        "LOCKED",
        "COPYING",
        "1",
    )
    new_id = destination["imageSetId"]
    assert re.fullmatch(helpers.ID_PATTERN, new_id)
    assert new_id != imported.image_set_id
    assert destination["imageSetArn"].endswith(f"/imageset/{new_id}")
    copied = helpers.wait_image_set(ahi, imported.datastore_id, new_id)
    assert (copied["imageSetState"], copied["imageSetWorkflowStatus"], copied["versionId"]) == (
        "ACTIVE",
        "COPIED",
        "1",
    )
    original = helpers.wait_image_set(ahi, imported.datastore_id, imported.image_set_id)
    assert (original["imageSetState"], original["imageSetWorkflowStatus"], original["versionId"]) == (
        "ACTIVE",
        "CREATED",
        "1",
    )
    document = helpers.metadata(ahi, imported.datastore_id, new_id)
    assert document["ImageSetID"] == new_id
    assert sorted(sop for _, sop, _ in helpers.instances(document)) == sorted(imported.sop_uids)
    [(sop_uid, frame), *_] = sorted(helpers.frames(document))
    data = ahi.get_image_frame(
        datastoreId=imported.datastore_id,
        imageSetId=new_id,
        imageFrameInformation={"imageFrameId": frame["ID"]},
    )["imageFrameBlob"].read()
    dataset = next(ds for ds in imported.datasets if ds.SOPInstanceUID == sop_uid)
    assert np.array_equal(imagecodecs.htj2k_decode(data), helpers.expected_pixels(dataset))


def test_copy_into_an_image_set_of_the_same_series_merges(
    ahi: Any, s3: Any, bucket: str, datastore: str
) -> None:
    # Given: two image sets of one series, from two import jobs (one instance each)
    first, second = helpers.SyntheticStudy().series(2)
    destination = import_series(ahi, s3, bucket, datastore, [first])
    source = import_series(ahi, s3, bucket, datastore, [second])

    # When: spec §6.3 example 2
    response = ahi.copy_image_set(
        datastoreId=datastore,
        sourceImageSetId=source.image_set_id,
        copyImageSetInformation={
            "sourceImageSet": {"latestVersionId": "1"},
            "destinationImageSet": {"imageSetId": destination.image_set_id, "latestVersionId": "1"},
        },
    )

    # Then
    assert response["destinationImageSetProperties"]["latestVersionId"] == "2"
    assert response["destinationImageSetProperties"]["imageSetWorkflowStatus"] == "COPYING"
    merged = helpers.wait_image_set(ahi, datastore, destination.image_set_id)
    assert (merged["imageSetState"], merged["imageSetWorkflowStatus"], merged["versionId"]) == (
        "ACTIVE",
        "COPIED",
        "2",
    )
    document = helpers.metadata(ahi, datastore, destination.image_set_id)
    assert sorted(sop for _, sop, _ in helpers.instances(document)) == sorted(
        [first.SOPInstanceUID, second.SOPInstanceUID]
    )
    assert helpers.wait_image_set(ahi, datastore, source.image_set_id)["versionId"] == "1"


def test_copy_across_series_fails_with_a_message(ahi: Any, s3: Any, bucket: str, datastore: str) -> None:
    # Given: two image sets of different series
    study = helpers.SyntheticStudy()
    destination = import_series(ahi, s3, bucket, datastore, study.series(1, series_number=1))
    source = import_series(ahi, s3, bucket, datastore, study.series(1, series_number=2))

    # When
    ahi.copy_image_set(
        datastoreId=datastore,
        sourceImageSetId=source.image_set_id,
        copyImageSetInformation={
            "sourceImageSet": {"latestVersionId": "1"},
            "destinationImageSet": {"imageSetId": destination.image_set_id, "latestVersionId": "1"},
        },
    )

    # Then: COPY_FAILED, with the reason in message (spec §6.1, FR:4887)
    failed = helpers.wait_image_set(ahi, datastore, destination.image_set_id)
    assert (failed["imageSetState"], failed["imageSetWorkflowStatus"], failed["versionId"]) == (
        "ACTIVE",
        "COPY_FAILED",
        "2",
    )
    assert (
        failed["message"] == "INVALID_REQUEST: Series of SourceImageSet and DestinationImageSet don't match."
    )
    versions = ahi.list_image_set_versions(datastoreId=datastore, imageSetId=destination.image_set_id)[
        "imageSetPropertiesList"
    ]
    assert versions[0]["ImageSetWorkflowStatus"] == "COPY_FAILED"
    assert versions[0]["message"] == failed["message"]
    document = helpers.metadata(ahi, datastore, destination.image_set_id)
    assert list(document["Study"]["Series"]) == [destination.series_uid]


def test_copy_with_a_stale_source_version_is_a_conflict(ahi: Any, imported: Imported) -> None:
    # When
    with pytest.raises(ClientError) as info:
        ahi.copy_image_set(
            datastoreId=imported.datastore_id,
            sourceImageSetId=imported.image_set_id,
            copyImageSetInformation={"sourceImageSet": {"latestVersionId": "3"}},
        )

    # Then
    assert helpers.error_of(info)[0] == "ConflictException"


def test_copy_frame_limit(start_emulator: Callable[..., Emulator], s3: Any, bucket: str) -> None:
    # Given: an emulator copying at most one frame per request, and an image set of two frames
    limited = start_emulator(quotas=Quotas(frames_per_copy=1))
    ahi = helpers.medical_imaging(limited.endpoint_url)
    datastore_id = helpers.create_datastore(ahi)
    target = import_series(ahi, s3, bucket, datastore_id, helpers.SyntheticStudy().series(2))

    # When
    with pytest.raises(ClientError) as info:
        ahi.copy_image_set(
            datastoreId=datastore_id,
            sourceImageSetId=target.image_set_id,
            copyImageSetInformation={"sourceImageSet": {"latestVersionId": "1"}},
        )

    # Then
    code, message = helpers.error_of(info)
    assert code == "ValidationException"
    assert "1" in message
    assert helpers.all_image_sets(ahi, datastore_id)[0]["imageSetId"] == target.image_set_id
    assert len(helpers.all_image_sets(ahi, datastore_id)) == 1


# ==================== delete
def test_delete_image_set(ahi: Any, imported: Imported) -> None:
    # When
    response = ahi.delete_image_set(datastoreId=imported.datastore_id, imageSetId=imported.image_set_id)

    # Then
    assert response["datastoreId"] == imported.datastore_id
    assert response["imageSetId"] == imported.image_set_id
    assert (response["imageSetState"], response["imageSetWorkflowStatus"]) == ("LOCKED", "DELETING")
    gone = helpers.wait_image_set(ahi, imported.datastore_id, imported.image_set_id)
    assert (gone["imageSetState"], gone["imageSetWorkflowStatus"]) == ("DELETED", "DELETED")
    assert gone["deletedAt"] >= gone["createdAt"]
    with pytest.raises(ClientError) as info:
        ahi.delete_image_set(datastoreId=imported.datastore_id, imageSetId=imported.image_set_id)
    assert helpers.error_of(info)[0] == "ConflictException"
    with pytest.raises(ClientError) as info:
        ahi.get_image_set_metadata(datastoreId=imported.datastore_id, imageSetId=imported.image_set_id)
    assert helpers.error_of(info)[0] == "ResourceNotFoundException"
    assert imported.image_set_id not in [
        s["imageSetId"] for s in helpers.all_image_sets(ahi, imported.datastore_id)
    ]


# ==================== tags
def image_set_arn(imported: Imported) -> str:
    return (
        f"arn:aws:medical-imaging:{helpers.REGION}:{helpers.ACCOUNT}:datastore/"
        f"{imported.datastore_id}/imageset/{imported.image_set_id}"
    )


def test_tag_list_untag_an_image_set(ahi: Any, imported: Imported) -> None:
    # Given
    arn = image_set_arn(imported)

    # When
    tagged = ahi.tag_resource(resourceArn=arn, tags={"Deployment": "Development", "Stage": "raw"})
    listed = ahi.list_tags_for_resource(resourceArn=arn)
    untagged = ahi.untag_resource(resourceArn=arn, tagKeys=["Deployment"])

    # Then: 204 and no body for tag and untag (spec §1.8), 200 with the map for list
    for response in (tagged, untagged):
        assert set(response) == {"ResponseMetadata"}
        assert helpers.http_status(response) == 204
        assert response["ResponseMetadata"]["HTTPHeaders"].get("content-length", "0") == "0"
    assert helpers.http_status(listed) == 200
    assert listed["tags"] == {"Deployment": "Development", "Stage": "raw"}
    assert ahi.list_tags_for_resource(resourceArn=arn)["tags"] == {"Stage": "raw"}


def test_an_image_set_holds_at_most_50_tags(ahi: Any, imported: Imported) -> None:
    # Given
    arn = image_set_arn(imported)
    ahi.tag_resource(resourceArn=arn, tags={f"key{n}": str(n) for n in range(50)})

    # When
    with pytest.raises(ClientError) as info:
        ahi.tag_resource(resourceArn=arn, tags={"key50": "50"})

    # Then
    code, message = helpers.error_of(info)
    assert code == "ValidationException"
    assert "50" in message
    ahi.tag_resource(resourceArn=arn, tags={"key0": "replaced"})  # replacing a key adds none
    tags = ahi.list_tags_for_resource(resourceArn=arn)["tags"]
    assert len(tags) == 50
    assert tags["key0"] == "replaced"


def test_tag_keys_with_the_aws_prefix_are_refused(ahi: Any, imported: Imported) -> None:
    # When
    with pytest.raises(ClientError) as info:
        ahi.tag_resource(resourceArn=image_set_arn(imported), tags={"aws:reserved": "x"})

    # Then
    code, message = helpers.error_of(info)
    assert code == "ValidationException"
    assert "aws:" in message
    assert ahi.list_tags_for_resource(resourceArn=image_set_arn(imported))["tags"] == {}


def test_tags_of_an_unknown_image_set_are_not_found(ahi: Any, imported: Imported) -> None:
    # Given
    arn = image_set_arn(imported).replace(imported.image_set_id, "c" * 32)

    # When
    with pytest.raises(ClientError) as info:
        ahi.list_tags_for_resource(resourceArn=arn)

    # Then
    assert helpers.error_of(info)[0] == "ResourceNotFoundException"


# ==================== events of image set changes
STATE_OF_EVENT = {  # spec §1.7 / platform §1.2: detail-type -> (imageSetState, imageSetWorkflowStatus)
    "Image Set Updating": ("LOCKED", "UPDATING"),
    "Image Set Updated": ("ACTIVE", "UPDATED"),
    "Image Set Copying": ("LOCKED", "COPYING"),
    "Image Set Copying With Read Only Access": ("LOCKED", "COPYING_WITH_READ_ONLY_ACCESS"),
    "Image Set Copied": ("ACTIVE", "COPIED"),
    "Image Set Copy Failed": ("ACTIVE", "COPY_FAILED"),
    "Image Set Deleting": ("LOCKED", "DELETING"),
    "Image Set Deleted": ("DELETED", "DELETED"),
}


def test_update_copy_and_delete_emit_image_set_events(
    event_sink: helpers.EventSink, ahi: Any, s3: Any, bucket: str, datastore: str, emulator: Emulator
) -> None:
    # Given: image sets A and B of two series
    study = helpers.SyntheticStudy()
    first = import_series(ahi, s3, bucket, datastore, study.series(1, series_number=1))
    second = import_series(ahi, s3, bucket, datastore, study.series(1, series_number=2))
    a, b = first.image_set_id, second.image_set_id

    # When: update A, copy A into a new image set C, copy A into B (fails: other series), delete C
    update(ahi, first, "1", helpers.updates(updatable={"Patient": {"DICOM": {"PatientName": "TEST^EVENT"}}}))
    helpers.wait_image_set(ahi, datastore, a)
    c = ahi.copy_image_set(
        datastoreId=datastore,
        sourceImageSetId=a,
        copyImageSetInformation={"sourceImageSet": {"latestVersionId": "2"}},
    )["destinationImageSetProperties"]["imageSetId"]
    helpers.wait_image_set(ahi, datastore, c)
    helpers.wait_image_set(ahi, datastore, a)
    ahi.copy_image_set(
        datastoreId=datastore,
        sourceImageSetId=a,
        copyImageSetInformation={
            "sourceImageSet": {"latestVersionId": "2"},
            "destinationImageSet": {"imageSetId": b, "latestVersionId": "1"},
        },
    )
    helpers.wait_image_set(ahi, datastore, b)
    helpers.wait_image_set(ahi, datastore, a)
    ahi.delete_image_set(datastoreId=datastore, imageSetId=c)
    helpers.wait_image_set(ahi, datastore, c)
    emulator.wait_idle()

    # Then
    wanted = {
        (a, "Image Set Updating"),
        (a, "Image Set Updated"),
        (a, "Image Set Copying With Read Only Access"),
        (c, "Image Set Copying"),
        (c, "Image Set Copied"),
        (b, "Image Set Copying"),
        (b, "Image Set Copy Failed"),
        (c, "Image Set Deleting"),
        (c, "Image Set Deleted"),
    }

    def seen(events: list[dict[str, Any]]) -> set[tuple[str, str]]:
        return {
            (e["detail"].get("imagesetId"), e["detail-type"])
            for e in events
            if e["detail"].get("datastoreId") == datastore
        }

    events = event_sink.collect(lambda all_events: wanted <= seen(all_events), what="the image set events")
    for event in events:
        if event["detail"].get("datastoreId") != datastore or event["detail-type"] not in STATE_OF_EVENT:
            continue
        detail = event["detail"]
        state = (detail["imageSetState"], detail["imageSetWorkflowStatus"])
        assert state == STATE_OF_EVENT[event["detail-type"]], event
        assert event["resources"] == [
            f"arn:aws:medical-imaging:{helpers.REGION}:{helpers.ACCOUNT}:datastore/{datastore}"
            f"/imageset/{detail['imagesetId']}"
        ]

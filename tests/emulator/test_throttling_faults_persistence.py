"""Throttling at the documented rates, injected faults, and state that survives a restart."""

from __future__ import annotations

import json
import time
import urllib.request
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
from botocore.exceptions import ClientError

from emulator.config import EmulatorConfig
from emulator.server import Emulator
from tests.emulator import helpers

pytestmark = pytest.mark.emulator

# With time running 5x faster, a 0.25 TPS bucket (burst 1) refills one token every 0.8 s.
TIME_SCALE = 5.0
REFILL_SECONDS = 4 / TIME_SCALE
STANDARD_RETRIES = {"mode": "standard", "total_max_attempts": 10}


def start_job(ahi: Any, datastore_id: str, bucket: str) -> dict[str, Any]:
    response: dict[str, Any] = ahi.start_dicom_import_job(
        datastoreId=datastore_id,
        dataAccessRoleArn=helpers.ROLE_ARN,
        inputS3Uri=helpers.s3_uri(bucket, "empty/"),
        outputS3Uri=helpers.s3_uri(bucket, "out/"),
    )
    return response


def burst(call: Callable[[], Any], count: int) -> list[str | None]:
    """Error codes (None for success) of ``count`` calls made back to back."""
    return [helpers.client_error_code(call) for _ in range(count)]


def test_start_import_job_is_throttled_then_recovers(
    start_emulator: Callable[..., Emulator], bucket: str
) -> None:
    # Given: throttling at the documented rates (StartDICOMImportJob: 0.25 TPS, burst 1)
    throttled = start_emulator(throttling=True, time_scale=TIME_SCALE)
    ahi = helpers.medical_imaging(throttled.endpoint_url)
    datastore_id = helpers.create_datastore(ahi)

    # When
    codes = burst(lambda: start_job(ahi, datastore_id, bucket), 4)

    # Then: the burst token, then ThrottlingException
    assert codes[0] is None
    assert set(codes[1:]) == {"ThrottlingException"}
    with pytest.raises(ClientError) as info:
        start_job(ahi, datastore_id, bucket)
    code, message = helpers.error_of(info)
    assert (code, message) == ("ThrottlingException", "Rate exceeded")
    assert info.value.response["ResponseMetadata"]["HTTPStatusCode"] == 429

    # When / Then: after a refill period it is accepted again
    time.sleep(REFILL_SECONDS * 1.5)
    assert start_job(ahi, datastore_id, bucket)["jobStatus"] == "SUBMITTED"

    # When / Then: botocore's standard retry mode rides the throttle out
    patient = helpers.medical_imaging(throttled.endpoint_url, retries=STANDARD_RETRIES)
    jobs = [start_job(patient, datastore_id, bucket)["jobId"] for _ in range(3)]
    assert len(set(jobs)) == 3
    assert ahi.get_datastore(datastoreId=datastore_id)["datastoreProperties"]["datastoreStatus"] == "ACTIVE"


def test_update_image_set_metadata_is_throttled_then_recovers(
    start_emulator: Callable[..., Emulator], s3: Any, bucket: str
) -> None:
    # Given: an image set on a throttling emulator
    throttled = start_emulator(throttling=True, time_scale=TIME_SCALE)
    ahi = helpers.medical_imaging(throttled.endpoint_url)
    datastore_id = helpers.create_datastore(ahi)
    [image_set_id] = helpers.import_datasets(
        ahi, s3, datastore_id=datastore_id, bucket=bucket, datasets=helpers.SyntheticStudy().series(1)
    ).image_set_ids

    def rename(client: Any, latest: str, name: str) -> dict[str, Any]:
        response: dict[str, Any] = client.update_image_set_metadata(
            datastoreId=datastore_id,
            imageSetId=image_set_id,
            latestVersionId=latest,
            updateImageSetMetadataUpdates=helpers.updates(
                updatable={"Patient": {"DICOM": {"PatientName": name}}}
            ),
        )
        return response

    # When: UpdateImageSetMetadata is 0.25 TPS, burst 1; throttling comes before the LOCKED check
    codes = burst(lambda: rename(ahi, "1", "TEST^BURST"), 3)

    # Then
    assert codes[0] is None
    assert set(codes[1:]) == {"ThrottlingException"}
    assert helpers.wait_image_set(ahi, datastore_id, image_set_id)["versionId"] == "2"

    # When / Then: recovers after a refill period
    time.sleep(REFILL_SECONDS * 1.5)
    assert rename(ahi, "2", "TEST^AGAIN")["latestVersionId"] == "3"
    helpers.wait_image_set(ahi, datastore_id, image_set_id)

    # When / Then: with standard retries, back-to-back updates all go through
    patient = helpers.medical_imaging(throttled.endpoint_url, retries=STANDARD_RETRIES)
    for latest in ("3", "4"):
        assert rename(patient, latest, f"TEST^V{latest}")["latestVersionId"] == str(int(latest) + 1)
        helpers.wait_image_set(ahi, datastore_id, image_set_id)
    versions = ahi.list_image_set_versions(datastoreId=datastore_id, imageSetId=image_set_id)
    assert [v["versionId"] for v in versions["imageSetPropertiesList"]] == ["5", "4", "3", "2", "1"]


def test_throttling_is_off_by_default(ahi: Any) -> None:
    # When: ten ListDatastores calls at once (5 TPS, burst 10 when throttling is on)
    codes = burst(lambda: ahi.list_datastores(maxResults=1), 12)

    # Then
    assert codes == [None] * 12


def test_injected_fault(start_emulator: Callable[..., Emulator]) -> None:
    # Given: GetDatastore always fails with InternalServerException
    faulty = start_emulator(fault_rates={"GetDatastore": {"InternalServerException": 1.0}})
    ahi = helpers.medical_imaging(faulty.endpoint_url)
    datastore_id = ahi.create_datastore(datastoreName=helpers.unique_name("faults"))["datastoreId"]

    # When
    with pytest.raises(ClientError) as info:
        ahi.get_datastore(datastoreId=datastore_id)

    # Then: the injected error, and no other operation affected
    code, message = helpers.error_of(info)
    assert code == "InternalServerException"
    assert "GetDatastore" in message
    assert info.value.response["ResponseMetadata"]["HTTPStatusCode"] == 500
    listed = helpers.wait_until(
        lambda: ahi.list_datastores()["datastoreSummaries"],
        lambda summaries: any(s["datastoreStatus"] == "ACTIVE" for s in summaries),
        what="the data store to be ACTIVE",
    )
    assert [s["datastoreId"] for s in listed] == [datastore_id]


def test_state_survives_a_restart_and_reset_empties_it(
    moto_url: str, tmp_path: Path, s3: Any, bucket: str
) -> None:
    # Given: a data store with an updated, tagged image set, on an emulator with a data directory
    config = EmulatorConfig(data_dir=tmp_path / "state", s3_endpoint_url=moto_url, transition_delay=0.01)
    [ds] = helpers.SyntheticStudy().series(1)
    with Emulator(config) as first:
        ahi = helpers.medical_imaging(first.endpoint_url)
        datastore_id = helpers.create_datastore(ahi, name="persisted", tags={"Project": "persistence"})
        [image_set_id] = helpers.import_datasets(
            ahi, s3, datastore_id=datastore_id, bucket=bucket, datasets=[ds]
        ).image_set_ids
        ahi.update_image_set_metadata(
            datastoreId=datastore_id,
            imageSetId=image_set_id,
            latestVersionId="1",
            updateImageSetMetadataUpdates=helpers.updates(
                updatable={"Patient": {"DICOM": {"PatientName": "TEST^KEPT"}}}
            ),
        )
        helpers.wait_image_set(ahi, datastore_id, image_set_id)
        image_set_arn = ahi.get_image_set(datastoreId=datastore_id, imageSetId=image_set_id)["imageSetArn"]
        ahi.tag_resource(resourceArn=image_set_arn, tags={"Stage": "updated"})
        before = {
            "datastore": ahi.get_datastore(datastoreId=datastore_id)["datastoreProperties"],
            "image_set": ahi.get_image_set(datastoreId=datastore_id, imageSetId=image_set_id),
            "v1": helpers.metadata(ahi, datastore_id, image_set_id, version_id="1"),
            "v2": helpers.metadata(ahi, datastore_id, image_set_id),
        }
        [(_, frame)] = helpers.frames(before["v2"])
        frame_bytes = ahi.get_image_frame(
            datastoreId=datastore_id,
            imageSetId=image_set_id,
            imageFrameInformation={"imageFrameId": frame["ID"]},
        )["imageFrameBlob"].read()
        first.wait_idle()

    # When: a new emulator on the same directory
    with Emulator(config) as second:
        ahi = helpers.medical_imaging(second.endpoint_url)
        after_datastore = ahi.get_datastore(datastoreId=datastore_id)["datastoreProperties"]
        after_image_set = ahi.get_image_set(datastoreId=datastore_id, imageSetId=image_set_id)
        after_v1 = helpers.metadata(ahi, datastore_id, image_set_id, version_id="1")
        after_v2 = helpers.metadata(ahi, datastore_id, image_set_id)
        after_frame = ahi.get_image_frame(
            datastoreId=datastore_id,
            imageSetId=image_set_id,
            imageFrameInformation={"imageFrameId": frame["ID"]},
        )["imageFrameBlob"].read()
        datastore_tags = ahi.list_tags_for_resource(resourceArn=after_datastore["datastoreArn"])["tags"]
        image_set_tags = ahi.list_tags_for_resource(resourceArn=image_set_arn)["tags"]
        found = [s["imageSetId"] for s in helpers.all_image_sets(ahi, datastore_id)]

        # Then: everything is still there
        assert after_datastore == before["datastore"]
        for key in ("versionId", "imageSetState", "imageSetWorkflowStatus", "createdAt", "imageSetArn"):
            assert after_image_set[key] == before["image_set"][key]
        assert after_v1 == before["v1"]
        assert after_v2 == before["v2"]
        assert after_v2["Patient"]["DICOM"]["PatientName"] == "TEST^KEPT"
        assert after_frame == frame_bytes
        assert datastore_tags == {"Project": "persistence"}
        assert image_set_tags == {"Stage": "updated"}
        assert found == [image_set_id]

        # When: the tooling reset
        request = urllib.request.Request(f"{second.endpoint_url}/_emulator/reset", method="POST")
        with urllib.request.urlopen(request, timeout=10) as response:
            reset = json.loads(response.read())

        # Then: nothing is left
        assert reset == {"status": "reset"}
        assert ahi.list_datastores()["datastoreSummaries"] == []
        with pytest.raises(ClientError) as info:
            ahi.get_datastore(datastoreId=datastore_id)
        assert helpers.error_of(info)[0] == "ResourceNotFoundException"


def test_reset_also_refills_the_throttle_buckets(start_emulator: Callable[..., Emulator]) -> None:
    # Given: CreateDatastore (0.085 TPS, burst 1) just used its burst on a throttling emulator
    throttled = start_emulator(throttling=True, time_scale=TIME_SCALE)
    ahi = helpers.medical_imaging(throttled.endpoint_url)
    ahi.create_datastore(datastoreName=helpers.unique_name("before-reset"))
    assert helpers.client_error_code(lambda: ahi.create_datastore(datastoreName="x")) == "ThrottlingException"

    # When
    request = urllib.request.Request(f"{throttled.endpoint_url}/_emulator/reset", method="POST")
    urllib.request.urlopen(request, timeout=10).close()

    # Then: a fresh start, buckets full again
    assert (
        ahi.create_datastore(datastoreName=helpers.unique_name("after-reset"))["datastoreStatus"]
        == "CREATING"
    )

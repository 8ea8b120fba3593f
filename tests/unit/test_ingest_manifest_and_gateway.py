"""Batch manifests (ahi_pipeline.batch_manifest) and StartDICOMImportJob's retries (imaging_gateway).

The gateway is driven through botocore's Stubber on a real ``medical-imaging`` client: requests are
validated against the service model, and no network is used.
"""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import boto3
import pytest
from botocore.config import Config
from botocore.stub import Stubber

from ahi_pipeline.batch_manifest import (
    ManifestError,
    MemberStatus,
    batch_from_manifest,
    manifest_document,
)
from ahi_pipeline.batching import Limits, plan_batches
from ahi_pipeline.imaging_gateway import ImagingGateway, ImportJobRequest, ImportStartError
from ahi_pipeline.uploads import Upload

pytestmark = pytest.mark.unit

LIMITS = Limits("landing", "incoming/", 10, 10_000)
REQUEST = ImportJobRequest(
    datastore_id="0123456789abcdef0123456789abcdef",
    job_name="ingest-abc",
    client_token="abc",
    data_access_role_arn="arn:aws:iam::123456789012:role/ImportRole",
    input_s3_uri="s3://landing/staging/abc/",
    output_s3_uri="s3://output/import-results/",
)
PARAMS = {
    "datastoreId": REQUEST.datastore_id,
    "jobName": REQUEST.job_name,
    "clientToken": REQUEST.client_token,
    "dataAccessRoleArn": REQUEST.data_access_role_arn,
    "inputS3Uri": REQUEST.input_s3_uri,
    "outputS3Uri": REQUEST.output_s3_uri,
}
STARTED = {"datastoreId": REQUEST.datastore_id, "jobId": "f" * 32, "jobStatus": "SUBMITTED", "submittedAt": 0}


# -------------------------------------------------------------------------------- manifests
def test_manifest_round_trip_maps_staged_keys_to_originals() -> None:
    # Given a batch with awkward keys
    uploads = [
        Upload("landing", "incoming/a b/ü.dcm", 10, etag="e1", version_id="v1"),
        Upload("landing", "incoming/../x.dcm", 20, etag="e2"),
    ]
    batch = plan_batches(uploads, LIMITS)[0]
    folder = f"staging/{batch.batch_id}/"

    # When its manifest is written (after staging, one member gone) and read back
    document = manifest_document(
        batch,
        staging_folder=folder,
        input_s3_uri=f"s3://landing/{folder}",
        unavailable={uploads[1].object_id: "NoSuchKey"},
        staged=True,
    )
    again = batch_from_manifest(document, staging_folder=folder)

    # Then it describes the same batch, and maps each staged key to its original upload and status
    assert again == batch
    by_key = {m["key"]: m for m in document["members"]}
    assert by_key["incoming/a b/ü.dcm"]["stagedKey"].startswith(folder)
    assert by_key["incoming/a b/ü.dcm"]["status"] == MemberStatus.STAGED
    assert by_key["incoming/../x.dcm"]["status"] == MemberStatus.UNAVAILABLE
    assert by_key["incoming/../x.dcm"]["reason"] == "NoSuchKey"
    assert (document["files"], document["bytes"]) == (2, 30)


def test_a_tampered_manifest_is_refused() -> None:
    # Given a manifest whose member list was altered
    batch = plan_batches([Upload("landing", "incoming/a.dcm", 10, etag="e")], LIMITS)[0]
    folder = f"staging/{batch.batch_id}/"
    document = manifest_document(batch, staging_folder=folder, input_s3_uri="s3://landing/x/")
    document["members"][0]["key"] = "incoming/b.dcm"

    # When read back
    # Then it is refused: its members no longer hash to the batch id
    with pytest.raises(ManifestError, match="do not hash"):
        batch_from_manifest(document, staging_folder=folder)
    with pytest.raises(ManifestError, match="schemaVersion"):
        batch_from_manifest({**document, "schemaVersion": 99}, staging_folder=folder)


# -------------------------------------------------------------------------------- StartDICOMImportJob
class Recorder:
    """Stands in for time.sleep: records delays instead of waiting."""

    def __init__(self) -> None:
        self.delays: list[float] = []

    def __call__(self, seconds: float) -> None:
        self.delays.append(seconds)


@pytest.fixture
def stubbed() -> Iterator[tuple[Any, Stubber]]:
    client = boto3.client(
        "medical-imaging",
        region_name="us-east-1",
        aws_access_key_id="x",
        aws_secret_access_key="x",
        config=Config(retries={"mode": "standard", "total_max_attempts": 1}),
    )
    with Stubber(client) as stubber:
        yield client, stubber
        stubber.assert_no_pending_responses()


def test_service_quota_and_conflict_are_retried_with_backoff(stubbed: tuple[Any, Stubber]) -> None:
    # Given the service refuses twice (100 concurrent jobs, then a conflict) and then accepts
    client, stubber = stubbed
    stubber.add_client_error("start_dicom_import_job", "ServiceQuotaExceededException", http_status_code=402)
    stubber.add_client_error("start_dicom_import_job", "ConflictException", http_status_code=409)
    stubber.add_response("start_dicom_import_job", STARTED, PARAMS)
    sleep = Recorder()

    # When the job is started
    job = ImagingGateway(client, sleep=sleep, base_delay=2.0).start_import_job(REQUEST)

    # Then it was retried with growing delays and started once, with the batch's client token
    assert job.job_id == "f" * 32
    assert job.throttled == 1
    assert len(sleep.delays) == 2
    assert 1.0 <= sleep.delays[0] <= 2.0
    assert 2.0 <= sleep.delays[1] <= 4.0


def test_throttling_outlasting_botocore_is_retried_then_reported(stubbed: tuple[Any, Stubber]) -> None:
    # Given a service that keeps throttling
    client, stubber = stubbed
    for _ in range(3):
        stubber.add_client_error("start_dicom_import_job", "ThrottlingException", http_status_code=429)
    sleep = Recorder()

    # When the job is started with 3 attempts
    with pytest.raises(ImportStartError) as info:
        ImagingGateway(client, sleep=sleep, attempts=3).start_import_job(REQUEST)

    # Then it gives up, retryable, counting every throttle
    assert info.value.retryable
    assert info.value.code == "ThrottlingException"
    assert info.value.throttled == 3
    assert len(sleep.delays) == 2


@pytest.mark.parametrize(
    "code", ["ValidationException", "AccessDeniedException", "ResourceNotFoundException"]
)
def test_configuration_errors_are_not_retried(stubbed: tuple[Any, Stubber], code: str) -> None:
    # Given an error no retry can fix
    client, stubber = stubbed
    stubber.add_client_error("start_dicom_import_job", code, http_status_code=400)
    sleep = Recorder()

    # When the job is started
    with pytest.raises(ImportStartError) as info:
        ImagingGateway(client, sleep=sleep).start_import_job(REQUEST)

    # Then it fails at once, not retryable
    assert not info.value.retryable
    assert info.value.code == code
    assert sleep.delays == []


def test_no_retry_past_the_deadline(stubbed: tuple[Any, Stubber]) -> None:
    # Given a quota error and a deadline 1 s away
    client, stubber = stubbed
    stubber.add_client_error("start_dicom_import_job", "ServiceQuotaExceededException", http_status_code=402)
    sleep = Recorder()

    # When the job is started
    with pytest.raises(ImportStartError) as info:
        ImagingGateway(client, sleep=sleep, clock=lambda: 100.0).start_import_job(REQUEST, deadline=101.0)

    # Then it does not sleep past the deadline
    assert info.value.retryable
    assert sleep.delays == []

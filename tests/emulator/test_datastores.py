"""Data stores through boto3: create (idempotency, KMS key, tags), states, list, delete, quota, validation."""

from __future__ import annotations

import contextlib
import re
from collections.abc import Callable
from datetime import datetime
from typing import Any

import boto3
import pytest
from botocore.config import Config
from botocore.exceptions import ClientError

from emulator.config import Quotas
from emulator.server import Emulator
from tests.emulator import helpers

pytestmark = pytest.mark.emulator

KMS_KEY_ARN = "arn:aws:kms:us-east-1:123456789012:key/1234abcd-12ab-34cd-56ef-1234567890ab"


@pytest.fixture
def cleanup(ahi: Any) -> Any:
    """Data store ids to delete after the test (they count against the active quota)."""
    created: list[str] = []
    yield created
    for datastore_id in created:
        with contextlib.suppress(ClientError):
            helpers.delete_datastore(ahi, datastore_id)


def test_create_returns_creating_then_becomes_active(ahi: Any, cleanup: list[str]) -> None:
    # Given
    name = helpers.unique_name("create")

    # When
    created = ahi.create_datastore(datastoreName=name)
    cleanup.append(created["datastoreId"])

    # Then
    assert set(created) - {"ResponseMetadata"} == {"datastoreId", "datastoreStatus"}
    assert re.fullmatch(helpers.ID_PATTERN, created["datastoreId"])
    assert created["datastoreStatus"] == "CREATING"
    properties = helpers.wait_datastore(ahi, created["datastoreId"])
    assert properties["datastoreName"] == name
    assert properties["datastoreArn"] == (
        f"arn:aws:medical-imaging:{helpers.REGION}:{helpers.ACCOUNT}:datastore/{created['datastoreId']}"
    )
    assert isinstance(properties["createdAt"], datetime)
    assert isinstance(properties["updatedAt"], datetime)
    assert properties["updatedAt"] >= properties["createdAt"]


def test_same_client_token_returns_the_same_datastore(ahi: Any, cleanup: list[str]) -> None:
    # Given
    name = helpers.unique_name("idem")
    token = helpers.unique_name("token")
    first = ahi.create_datastore(datastoreName=name, clientToken=token)
    cleanup.append(first["datastoreId"])

    # When
    second = ahi.create_datastore(datastoreName=name, clientToken=token)

    # Then
    assert second["datastoreId"] == first["datastoreId"]
    names = [s["datastoreName"] for s in ahi.list_datastores()["datastoreSummaries"]]
    assert names.count(name) == 1


def test_same_client_token_with_other_parameters_is_a_conflict(ahi: Any, cleanup: list[str]) -> None:
    # Given
    token = helpers.unique_name("token")
    cleanup.append(
        ahi.create_datastore(datastoreName=helpers.unique_name(), clientToken=token)["datastoreId"]
    )

    # When
    with pytest.raises(ClientError) as info:
        ahi.create_datastore(datastoreName=helpers.unique_name("other"), clientToken=token)

    # Then
    code, message = helpers.error_of(info)
    assert code == "ConflictException"
    assert "clientToken" in message
    assert info.value.response["ResponseMetadata"]["HTTPStatusCode"] == 409


def test_kms_key_and_tags_given_at_creation_are_kept(ahi: Any, cleanup: list[str]) -> None:
    # Given
    tags = {"Deployment": "Development", "Team": "imaging"}

    # When
    datastore_id = helpers.create_datastore(ahi, kmsKeyArn=KMS_KEY_ARN, tags=tags)
    cleanup.append(datastore_id)

    # Then
    properties = ahi.get_datastore(datastoreId=datastore_id)["datastoreProperties"]
    assert properties["kmsKeyArn"] == KMS_KEY_ARN
    assert properties["losslessStorageFormat"] == "HTJ2K"
    assert ahi.list_tags_for_resource(resourceArn=properties["datastoreArn"])["tags"] == tags


def test_get_datastore_has_the_documented_shape(ahi: Any, cleanup: list[str]) -> None:
    # Given
    datastore_id = helpers.create_datastore(ahi)
    cleanup.append(datastore_id)

    # When
    properties = ahi.get_datastore(datastoreId=datastore_id)["datastoreProperties"]

    # Then: the six fields of spec §2.2 (plus the model's optional losslessStorageFormat)
    assert {
        "datastoreId",
        "datastoreName",
        "datastoreStatus",
        "datastoreArn",
        "createdAt",
        "updatedAt",
    } <= set(properties)
    assert properties["datastoreStatus"] == "ACTIVE"
    assert "kmsKeyArn" not in properties  # none was given


def test_list_filters_by_status_and_pages_with_max_results(ahi: Any, cleanup: list[str]) -> None:
    # Given: three active data stores and a deleted one
    active = [helpers.create_datastore(ahi) for _ in range(3)]
    cleanup.extend(active)
    deleted = helpers.create_datastore(ahi)
    helpers.delete_datastore(ahi, deleted)

    # When: ACTIVE ones, one per page
    seen: list[str] = []
    pages = 0
    params: dict[str, Any] = {"datastoreStatus": "ACTIVE", "maxResults": 1}
    while True:
        page = ahi.list_datastores(**params)
        pages += 1
        assert len(page["datastoreSummaries"]) <= 1
        seen.extend(s["datastoreId"] for s in page["datastoreSummaries"])
        assert all(s["datastoreStatus"] == "ACTIVE" for s in page["datastoreSummaries"])
        if not page.get("nextToken"):
            break
        params["nextToken"] = page["nextToken"]

    # Then
    assert set(active) <= set(seen)
    assert len(seen) == len(set(seen)) == pages
    assert deleted not in seen
    assert deleted in helpers.deleted_datastore_ids(ahi)
    unfiltered = [s["datastoreId"] for s in ahi.list_datastores()["datastoreSummaries"]]
    assert set(active) <= set(unfiltered)
    summary = next(s for s in ahi.list_datastores()["datastoreSummaries"] if s["datastoreId"] == active[0])
    assert set(summary) == {
        "datastoreId",
        "datastoreName",
        "datastoreStatus",
        "datastoreArn",
        "createdAt",
        "updatedAt",
    }


def test_list_refuses_a_forged_next_token(ahi: Any) -> None:
    # Given
    forged = "bm90LWEtdG9rZW4="

    # When
    with pytest.raises(ClientError) as info:
        ahi.list_datastores(nextToken=forged)

    # Then
    code, message = helpers.error_of(info)
    assert code == "ValidationException"
    assert "nextToken" in message


def test_delete_is_refused_while_image_sets_remain(
    ahi: Any, s3: Any, bucket: str, datastore: str, emulator: Emulator
) -> None:
    # Given: a data store holding one image set
    study = helpers.SyntheticStudy()
    helpers.import_datasets(ahi, s3, datastore_id=datastore, bucket=bucket, datasets=study.series(1))

    # When
    with pytest.raises(ClientError) as info:
        ahi.delete_datastore(datastoreId=datastore)

    # Then
    code, message = helpers.error_of(info)
    assert code == "ConflictException"
    assert datastore in message
    assert ahi.get_datastore(datastoreId=datastore)["datastoreProperties"]["datastoreStatus"] == "ACTIVE"


def test_delete_goes_deleting_then_deleted_then_not_found(ahi: Any) -> None:
    # Given
    datastore_id = helpers.create_datastore(ahi)

    # When
    deleting = ahi.delete_datastore(datastoreId=datastore_id)

    # Then
    assert deleting["datastoreId"] == datastore_id
    assert deleting["datastoreStatus"] == "DELETING"
    helpers.wait_until(
        lambda: helpers.client_error_code(lambda: ahi.get_datastore(datastoreId=datastore_id)),
        lambda code: code == "ResourceNotFoundException",
        what="the deleted data store to disappear",
    )
    assert datastore_id in helpers.deleted_datastore_ids(ahi)
    with pytest.raises(ClientError) as info:
        ahi.delete_datastore(datastoreId=datastore_id)
    assert helpers.error_of(info)[0] == "ResourceNotFoundException"


def test_get_unknown_datastore_is_not_found(ahi: Any) -> None:
    # Given
    unknown = "0" * 32

    # When
    with pytest.raises(ClientError) as info:
        ahi.get_datastore(datastoreId=unknown)

    # Then
    assert helpers.error_of(info)[0] == "ResourceNotFoundException"
    assert info.value.response["ResponseMetadata"]["HTTPStatusCode"] == 404


def test_active_datastore_quota(start_emulator: Callable[..., Emulator]) -> None:
    # Given: an emulator allowing two active data stores, both used
    limited = start_emulator(quotas=Quotas(active_datastores=2))
    ahi = helpers.medical_imaging(limited.endpoint_url)
    first = helpers.create_datastore(ahi)
    helpers.create_datastore(ahi)

    # When
    with pytest.raises(ClientError) as info:
        ahi.create_datastore(datastoreName="one-too-many")

    # Then
    code, message = helpers.error_of(info)
    assert code == "ServiceQuotaExceededException"
    assert "2" in message
    assert info.value.response["ResponseMetadata"]["HTTPStatusCode"] == 402
    helpers.delete_datastore(ahi, first)
    assert helpers.create_datastore(ahi)  # deleted data stores free the quota


@pytest.mark.parametrize("name", ["bad name", "name!", "ä-umlaut", "a" * 257])
def test_bad_datastore_name_is_a_validation_error(ahi: Any, name: str) -> None:
    # When
    with pytest.raises(ClientError) as info:
        ahi.create_datastore(datastoreName=name)

    # Then
    code, message = helpers.error_of(info)
    assert code == "ValidationException"
    assert "datastoreName" in message
    assert info.value.response["ResponseMetadata"]["HTTPStatusCode"] == 400


@pytest.mark.parametrize("datastore_id", ["not-an-id", "ABCDEF0123456789ABCDEF0123456789", "0" * 31])
def test_bad_datastore_id_is_a_validation_error(ahi: Any, datastore_id: str) -> None:
    # When
    with pytest.raises(ClientError) as info:
        ahi.get_datastore(datastoreId=datastore_id)

    # Then
    code, message = helpers.error_of(info)
    assert code == "ValidationException"
    assert "datastoreId" in message


def test_bad_kms_key_arn_is_a_validation_error(ahi: Any) -> None:
    # When
    with pytest.raises(ClientError) as info:
        ahi.create_datastore(datastoreName=helpers.unique_name(), kmsKeyArn="arn:aws:kms:nowhere")

    # Then
    code, message = helpers.error_of(info)
    assert code == "ValidationException"
    assert "kmsKeyArn" in message


def test_max_results_above_the_model_maximum_is_a_validation_error(ahi: Any) -> None:
    # When
    with pytest.raises(ClientError) as info:
        ahi.list_datastores(maxResults=51)

    # Then
    code, message = helpers.error_of(info)
    assert code == "ValidationException"
    assert "maxResults" in message


def test_datastores_belong_to_the_region_of_the_request(emulator: Emulator) -> None:
    # Given: a client signing for another Region
    west = boto3.client(
        "medical-imaging",
        region_name="us-west-2",
        endpoint_url=emulator.endpoint_url,
        config=Config(inject_host_prefix=False, retries={"total_max_attempts": 1}),
    )
    east = helpers.medical_imaging(emulator.endpoint_url)

    # When
    datastore_id = helpers.create_datastore(west)

    # Then
    arn = west.get_datastore(datastoreId=datastore_id)["datastoreProperties"]["datastoreArn"]
    assert arn == f"arn:aws:medical-imaging:us-west-2:{helpers.ACCOUNT}:datastore/{datastore_id}"
    assert datastore_id not in [s["datastoreId"] for s in east.list_datastores()["datastoreSummaries"]]
    with pytest.raises(ClientError) as info:
        east.get_datastore(datastoreId=datastore_id)
    assert helpers.error_of(info)[0] == "ResourceNotFoundException"
    helpers.delete_datastore(west, datastore_id)

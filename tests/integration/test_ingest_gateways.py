"""StartImport's gateways against moto: S3 copies (multipart, pinned versions, vanished uploads) and the
batch table (claims, states, the planning lease)."""

from __future__ import annotations

import dataclasses
import secrets
from typing import Any

import boto3
import pytest

from ahi_pipeline.batch_store import BatchState, BatchStore, LeaseUnavailableError
from ahi_pipeline.s3_gateway import CopyFailedError, DocumentMissingError, ObjectCopy, S3Gateway
from tests.integration.conftest import create_tables

pytestmark = pytest.mark.integration

MiB = 1024**2


def copy_of(bucket: str, key: str, response: dict[str, Any], size: int, destination: str) -> ObjectCopy:
    return ObjectCopy(
        object_id=secrets.token_hex(16),
        source_bucket=bucket,
        source_key=key,
        version_id=response.get("VersionId"),
        etag=response["ETag"].strip('"'),
        size=size,
        bucket=bucket,
        key=destination,
    )


def test_a_large_object_is_copied_in_parts(s3: Any, bucket: str) -> None:
    # Given an object above the (lowered) multipart threshold
    body = secrets.token_bytes(11 * MiB + 123)
    response = s3.put_object(Bucket=bucket, Key="incoming/big.dcm", Body=body)
    gateway = S3Gateway(s3, multipart_threshold=5 * MiB, part_size=5 * MiB)

    # When it is copied
    gone = gateway.copy_objects(
        [copy_of(bucket, "incoming/big.dcm", response, len(body), "staging/b/big.dcm")]
    )

    # Then the copy is complete and made of parts (a multipart ETag ends with the part count)
    assert gone == {}
    copied = s3.get_object(Bucket=bucket, Key="staging/b/big.dcm")
    assert copied["Body"].read() == body
    assert copied["ETag"].strip('"').endswith("-3")


def test_the_uploaded_version_is_copied_even_after_the_key_is_overwritten(s3: Any, bucket: str) -> None:
    # Given a versioned bucket where the key was overwritten after the upload event
    s3.put_bucket_versioning(Bucket=bucket, VersioningConfiguration={"Status": "Enabled"})
    first = s3.put_object(Bucket=bucket, Key="incoming/a.dcm", Body=b"first")
    s3.put_object(Bucket=bucket, Key="incoming/a.dcm", Body=b"second, newer")

    # When the first upload is copied
    S3Gateway(s3).copy_objects([copy_of(bucket, "incoming/a.dcm", first, 5, "staging/b/a.dcm")])

    # Then the copy holds the first upload's content
    assert s3.get_object(Bucket=bucket, Key="staging/b/a.dcm")["Body"].read() == b"first"


def test_a_vanished_upload_is_reported_and_the_others_copied(s3: Any, bucket: str) -> None:
    # Given two uploads, one deleted before StartImport got to it
    kept = s3.put_object(Bucket=bucket, Key="incoming/kept.dcm", Body=b"kept")
    lost = s3.put_object(Bucket=bucket, Key="incoming/lost.dcm", Body=b"lost")
    s3.delete_object(Bucket=bucket, Key="incoming/lost.dcm")
    copies = [
        copy_of(bucket, "incoming/kept.dcm", kept, 4, "staging/b/kept.dcm"),
        copy_of(bucket, "incoming/lost.dcm", lost, 4, "staging/b/lost.dcm"),
    ]

    # When both are copied
    gone = S3Gateway(s3).copy_objects(copies)

    # Then the vanished one is reported with the service's reason, and the other copied
    assert gone == {copies[1].object_id: "the upload could not be copied: NoSuchKey"}
    assert s3.get_object(Bucket=bucket, Key="staging/b/kept.dcm")["Body"].read() == b"kept"


def test_a_missing_destination_bucket_fails_the_copies_rather_than_dropping_uploads(
    s3: Any, bucket: str
) -> None:
    # Given a destination bucket that does not exist (a configuration error)
    response = s3.put_object(Bucket=bucket, Key="incoming/a.dcm", Body=b"a")
    copy = copy_of(bucket, "incoming/a.dcm", response, 1, "staging/b/a.dcm")
    broken = dataclasses.replace(copy, bucket=f"{bucket}-nope")

    # When copied
    # Then it raises (the batch is retried), instead of reporting the upload as gone
    with pytest.raises(CopyFailedError) as info:
        S3Gateway(s3).copy_objects([broken])
    assert info.value.failures == {broken.object_id: "NoSuchBucket"}


def test_json_documents_round_trip_and_a_missing_one_is_named(s3: Any, bucket: str) -> None:
    gateway = S3Gateway(s3)
    gateway.put_json(bucket, "batches/x.json", {"key": "incoming/ü.dcm", "n": 1})
    assert gateway.get_json(bucket, "batches/x.json") == {"key": "incoming/ü.dcm", "n": 1}
    with pytest.raises(DocumentMissingError):
        gateway.get_json(bucket, "batches/none.json")


# ------------------------------------------------------------------------------------ the batch table
@pytest.fixture
def batch_store(moto_url: str) -> BatchStore:
    ddb = boto3.client("dynamodb", region_name="us-east-1", endpoint_url=moto_url)
    name = f"batches-{secrets.token_hex(4)}"
    create_tables(ddb, name, f"idempotency-{secrets.token_hex(4)}")
    return BatchStore(ddb, name)


def test_claims_make_an_upload_belong_to_one_batch(batch_store: BatchStore) -> None:
    # Given uploads claimed by a batch
    batch_store.claim("batch-1", [f"object-{n}" for n in range(60)])

    # When owners are looked up, with unclaimed ones among them (more than one BatchGetItem page)
    owners = batch_store.owners([f"object-{n}" for n in range(150)])

    # Then exactly the claimed ones have an owner
    assert owners == {f"object-{n}": "batch-1" for n in range(60)}


def test_batch_states_never_go_back_from_submitted(batch_store: BatchStore) -> None:
    # Given a batch taken to SUBMITTED
    batch_store.create(
        batch_id="b1",
        files=2,
        size=10,
        manifest_uri="s3://o/batches/b1.json",
        input_s3_uri="s3://l/s/b1/",
        datastore_id="d",
    )
    batch_store.mark_staged("b1", staged_files=2, staged_bytes=10, unavailable=0)
    batch_store.mark_submitted("b1", job_id="job-1")

    # When a late failure is recorded, and the batch is created again
    batch_store.mark_failed("b1", "late")
    batch_store.create(
        batch_id="b1",
        files=2,
        size=10,
        manifest_uri="s3://o/batches/b1.json",
        input_s3_uri="s3://l/s/b1/",
        datastore_id="d",
    )

    # Then it is still SUBMITTED, staged, with its job
    record = batch_store.records(["b1", "unknown"])["b1"]
    assert (record.state, record.job_id, record.staged, record.finished) == (
        BatchState.SUBMITTED,
        "job-1",
        True,
        True,
    )
    assert batch_store.records(["unknown"]) == {}


def test_the_planning_lease_is_exclusive_and_expires(batch_store: BatchStore) -> None:
    # Given one invocation holding the lease, when another asks for it with little patience
    # Then it is refused
    with (
        batch_store.lease("first", hold_for=0.5),
        pytest.raises(LeaseUnavailableError),
        batch_store.lease("second", hold_for=5, wait_for=0.2),
    ):
        pass
    # and once released it is free again
    with batch_store.lease("second", hold_for=5):
        pass

    # Given a holder that died without releasing (lease left behind, 0.3 s long)
    lease = batch_store.lease("dead", hold_for=0.3)
    lease.__enter__()
    # When another waits for it
    # Then it gets it once it expired
    with batch_store.lease("third", hold_for=5, wait_for=5):
        pass

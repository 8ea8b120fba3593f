"""StartImport end to end: the handler on SQS events, against moto (S3, DynamoDB) and the emulator.

Every test uploads real objects, builds the SQS event UploadQueue would deliver, calls
``functions.start_import.app.lambda_handler`` and checks what the service did: jobs started (never
twice), files imported or reported, and the batch records.
"""

from __future__ import annotations

import json
import uuid
from collections.abc import Callable
from typing import Any

import pytest
from pydicom.data import get_testdata_file

from ahi_pipeline.runtime import reset_environment
from ahi_pipeline.settings import SettingsError
from emulator.config import Quotas
from emulator.server import Emulator
from tests.emulator import helpers
from tests.integration.conftest import (
    FakeContext,
    IngestStack,
    Uploaded,
    failed_ids,
    log_lines,
    sqs_record,
)

pytestmark = pytest.mark.integration


def dicom_files(count: int, *, folder: str = "incoming/study 1/series 1/") -> dict[str, bytes]:
    """``count`` synthetic CT instances of one series (made-up patient, no PHI), 64×64 pixels."""
    study = helpers.SyntheticStudy()
    return {f"{folder}IM{n:04d}.dcm": helpers.p10(ds) for n, ds in enumerate(study.series(count), start=1)}


def bundled(name: str) -> bytes:
    """One of pydicom's bundled test files."""
    path = get_testdata_file(name)
    assert path is not None
    with open(path, "rb") as handle:
        return handle.read()


def original_keys(stack: IngestStack, result: helpers.ImportResult, kind: str) -> set[str]:
    """Original upload keys of a job's SUCCESS (``kind="success"``) or FAILURE lines, via the manifest."""
    batch_id = stack.batch_by_job(result.summary["jobId"])["batchId"]["S"]
    original = {m["stagedKey"]: m["key"] for m in stack.manifest(batch_id)["members"]}
    lines = result.success if kind == "success" else result.failure
    return {original[line["inputFile"]] for line in lines}


def metric_totals(text: str) -> dict[str, float]:
    """Sum of each EMF metric printed by Powertools Metrics."""
    totals: dict[str, float] = {}
    for line in log_lines(text):
        if "_aws" not in line:
            continue
        for definition in line["_aws"]["CloudWatchMetrics"][0]["Metrics"]:
            name = definition["Name"]
            value = line[name]
            totals[name] = totals.get(name, 0) + (sum(value) if isinstance(value, list) else value)
    return totals


# ------------------------------------------------------------------------------------ the happy path
def test_real_dicom_is_imported_and_the_batch_recorded(
    ingest_stack: IngestStack, capfd: pytest.CaptureFixture[str]
) -> None:
    # Given pydicom's bundled CT and MR files and a synthetic series uploaded under incoming/,
    # plus a zero-byte object and a folder marker
    files = {
        "incoming/bundled/CT_small.dcm": bundled("CT_small.dcm"),
        "incoming/bundled/MR_small.dcm": bundled("MR_small.dcm"),
        **dicom_files(4),
    }
    uploads = ingest_stack.put_many(files)
    noise = [ingest_stack.put("incoming/empty.dcm", b""), ingest_stack.put("incoming/study 1/", b"")]
    event = ingest_stack.event(uploads + noise)

    # When StartImport handles the event
    response = ingest_stack.invoke(event)

    # Then no message failed, one job was started and every DICOM file was imported
    assert response == {"batchItemFailures": []}
    [result] = ingest_stack.finished_jobs()
    assert result.summary["numberOfScannedFiles"] == 6
    assert result.summary["numberOfImportedFiles"] == 6
    assert original_keys(ingest_stack, result, "success") == set(files)
    # and the batch is recorded with its job, reachable through the byJobId index
    item = ingest_stack.batch_by_job(result.summary["jobId"])
    assert item["state"]["S"] == "SUBMITTED"
    assert (item["files"]["N"], item["stagedFiles"]["N"], item["unavailableFiles"]["N"]) == ("6", "6", "0")
    assert item["bytes"]["N"] == str(sum(len(b) for b in files.values()))
    batch_id = item["batchId"]["S"]
    assert item["inputS3Uri"]["S"] == f"s3://{ingest_stack.landing}/staging/{batch_id}/"
    assert result.job["inputS3Uri"] == item["inputS3Uri"]["S"]
    assert result.job["outputS3Uri"].startswith(f"s3://{ingest_stack.output}/import-results/")
    assert len(ingest_stack.staged_keys(batch_id)) == 6
    # and the skips and the job are counted
    totals = metric_totals(capfd.readouterr().out)
    assert totals["FilesAccepted"] == 6
    assert totals["FilesSkipped"] == 2
    assert totals["ImportJobsStarted"] == 1


def test_the_sample_event_of_events_runs(ingest_stack: IngestStack) -> None:
    # Given events/start_import.json pointed at this stack's bucket, with its first object uploaded
    with open("events/start_import.json") as handle:
        event = json.load(handle)
    for record in event["Records"]:
        body = json.loads(record["body"])
        body["detail"]["bucket"]["name"] = ingest_stack.landing
        record["body"] = json.dumps(body)
    first = json.loads(event["Records"][0]["body"])["detail"]["object"]
    uploaded = ingest_stack.put(first["key"], bundled("CT_small.dcm"))
    event["Records"][0] = sqs_record(event["Records"][0]["messageId"], uploaded)

    # When handled
    response = ingest_stack.invoke(event)

    # Then the DICOM file is imported; the zero-byte object and the folder marker are skipped
    assert response == {"batchItemFailures": []}
    [result] = ingest_stack.finished_jobs()
    assert result.summary["numberOfImportedFiles"] == 1


# ------------------------------------------------------------------------------------ replay
def test_the_same_event_twice_starts_one_job(
    ingest_stack: IngestStack, capfd: pytest.CaptureFixture[str]
) -> None:
    # Given uploads and their event
    uploads = ingest_stack.put_many(dicom_files(3))
    event = ingest_stack.event(uploads)

    # When the event is delivered twice
    first = ingest_stack.invoke(event)
    second = ingest_stack.invoke(event)

    # Then both succeed and exactly one job exists, recorded once
    assert first == second == {"batchItemFailures": []}
    assert len(ingest_stack.jobs()) == 1
    [item] = ingest_stack.batch_items()
    assert item["attempts"]["N"] == "1"
    # and the second delivery said why it did nothing
    out = capfd.readouterr().out
    logs = log_lines(out)
    assert sum(1 for line in logs if line.get("message") == "upload already in a started batch") == 3
    [result] = ingest_stack.finished_jobs()
    assert result.summary["numberOfImportedFiles"] == 3


def test_a_redelivery_grouped_with_other_uploads_does_not_import_twice(ingest_stack: IngestStack) -> None:
    # Given uploads A, B and C
    a, b, c = ingest_stack.put_many(dicom_files(3))

    # When [A, B] is handled, then B is redelivered together with C
    assert failed_ids(ingest_stack.invoke(ingest_stack.event([a, b]))) == []
    assert failed_ids(ingest_stack.invoke(ingest_stack.event([b, c]))) == []

    # Then B stays in its first batch: two jobs, A+B and C, and each file imported once
    results = ingest_stack.finished_jobs()
    assert sorted(r.summary["numberOfImportedFiles"] for r in results) == [1, 2]
    imported = [key for r in results for key in original_keys(ingest_stack, r, "success")]
    assert sorted(imported) == sorted([a.key, b.key, c.key])


def test_an_interrupted_batch_resumes_whole_when_any_of_its_messages_returns(
    ingest_stack: IngestStack, monkeypatch: pytest.MonkeyPatch
) -> None:
    # Given a misconfigured data store, so that [A, B] is staged but its job cannot start
    a, b, c = ingest_stack.put_many(dicom_files(3))
    monkeypatch.setenv("DATASTORE_ID", "f" * 32)
    reset_environment()
    event = ingest_stack.event([a, b])
    first = ingest_stack.invoke(event)
    assert failed_ids(first) == [r["messageId"] for r in event["Records"]]
    [item] = ingest_stack.batch_items()
    assert item["state"]["S"] == "FAILED"
    assert "ResourceNotFoundException" in item["error"]["S"]
    assert ingest_stack.jobs() == []

    # When the configuration is fixed and only B comes back, grouped with C
    monkeypatch.setenv("DATASTORE_ID", ingest_stack.datastore_id)
    reset_environment()
    second = ingest_stack.invoke(ingest_stack.event([b, c]))
    # and then A comes back alone
    third = ingest_stack.invoke(ingest_stack.event([a]))

    # Then B resumed its batch (A included), C got its own, A was acknowledged: two jobs, three files
    assert failed_ids(second) == failed_ids(third) == []
    results = ingest_stack.finished_jobs()
    assert sorted(r.summary["numberOfImportedFiles"] for r in results) == [1, 2]
    batch_of_a = next(r for r in results if r.summary["numberOfImportedFiles"] == 2)
    assert original_keys(ingest_stack, batch_of_a, "success") == {a.key, b.key}
    assert {i["state"]["S"] for i in ingest_stack.batch_items()} == {"SUBMITTED"}


# ------------------------------------------------------------------------------------ bad input
def test_bad_input_is_imported_or_reported(
    ingest_stack: IngestStack, capfd: pytest.CaptureFixture[str]
) -> None:
    # Given DICOM under awkward keys, a non-DICOM file, and objects that must be skipped
    dicom = dicom_files(5, folder="incoming/")
    awkward = [
        "incoming/with spaces/IM 0001.dcm",
        "incoming/ünïcødé/画像.dcm",
        "incoming/../escape.dcm",
        "incoming/a/../../b/IM.dcm",
        "incoming/./dot/./IM.dcm",
    ]
    files = dict(zip(awkward, dicom.values(), strict=True))
    files["incoming/notes/readme.txt"] = b"This is not a DICOM file.\n" * 10
    uploads = ingest_stack.put_many(files)
    skipped = [
        ingest_stack.put("incoming/empty.dcm", b""),
        ingest_stack.put("incoming/folder/", b""),
        ingest_stack.put("elsewhere/IM.dcm", next(iter(dicom.values()))),
    ]
    other_bucket = Uploaded("another-bucket", "incoming/x.dcm", 10, "abc", None)
    poison = {"messageId": "poison-1", "body": "this is not an S3 event"}
    deleted = sqs_record("deleted-1", uploads[0], detail_type="Object Deleted")
    event = ingest_stack.event([*uploads, *skipped, other_bucket])
    event["Records"] += [poison, deleted]

    # When handled
    response = ingest_stack.invoke(event)

    # Then only the poison message fails (it will reach the dead-letter queue)
    assert failed_ids(response) == ["poison-1"]
    # and every DICOM file is imported, the text file reported by the job as a failure
    [result] = ingest_stack.finished_jobs()
    assert original_keys(ingest_stack, result, "success") == set(awkward)
    assert original_keys(ingest_stack, result, "failure") == {"incoming/notes/readme.txt"}
    # and no staged key escapes the batch folder or keeps a "." or ".." segment
    batch_id = ingest_stack.batch_by_job(result.summary["jobId"])["batchId"]["S"]
    staged = ingest_stack.staged_keys(batch_id)
    assert len(staged) == 6
    for key in staged:
        assert key.startswith(f"staging/{batch_id}/")
        assert not {".", "..", ""} & set(key.split("/"))
    # and each skip is logged with its reason, and no log line names a key
    out = capfd.readouterr().out
    reasons = [line["reason"] for line in log_lines(out) if line.get("message") == "upload skipped"]
    assert sorted(reasons) == sorted(
        [
            "a zero-byte object",
            "a folder marker (key ends with '/')",
            "not under the incoming prefix",
            "not in the landing bucket",
            "an S3 'Object Deleted' event, not 'Object Created'",
        ]
    )
    assert any(line.get("message", "").startswith("poison message") for line in log_lines(out))
    for key in [*files, "incoming/empty.dcm", "elsewhere/IM.dcm"]:
        assert key not in out


@pytest.mark.slow
def test_six_thousand_uploads_make_two_jobs(
    make_stack: Callable[..., IngestStack], start_emulator: Callable[..., Emulator]
) -> None:
    """6,000 uploads in one invocation → a batch of 5,000 and one of 1,000, every file reported by a job.

    The files are small and not DICOM.  So that the test measures batching and not the emulator
    reading 6,000 objects, the emulator's per-file size quota is set to 1 byte: its jobs report every
    file as too large without reading it (the path a non-DICOM or oversized file takes anyway).  The
    landing bucket is unversioned here, so uploads are identified and copied by ETag.
    """
    # Given 6,000 small files uploaded under incoming/ (placed in moto's store directly, for speed)
    from moto.backends import get_backend  # noqa: PLC0415 - the test's shortcut, not the code's

    stack = make_stack(start_emulator(quotas=Quotas(bytes_per_file=1)), versioned=False)
    store = get_backend("s3")["123456789012"]["global"]
    uploads = []
    for n in range(6000):
        key = f"incoming/bulk/{n // 500:02d}/{n:05d}.dcm"
        stored = store.put_object(stack.landing, key, f"not DICOM {n}".encode())
        uploads.append(Uploaded(stack.landing, key, stored.size, stored.etag.strip('"'), None))

    # When their 6,000 messages arrive in one invocation
    response = stack.invoke(stack.event(uploads))

    # Then two jobs are started, of 5,000 and 1,000 files, each recorded with its member list in S3
    assert response == {"batchItemFailures": []}
    items = stack.batch_items()
    assert sorted(int(item["files"]["N"]) for item in items) == [1000, 5000]
    for item in items:
        batch_id = item["batchId"]["S"]
        manifest = stack.manifest(batch_id)
        assert len(manifest["members"]) == int(item["files"]["N"])
        assert {m["status"] for m in manifest["members"]} == {"staged"}
    # and each job saw its whole batch and reported every file, so no upload went unaccounted for
    results = stack.finished_jobs()
    assert sorted(r.summary["numberOfScannedFiles"] for r in results) == [1000, 5000]
    reported = {key for r in results for key in original_keys(stack, r, "failure")}
    assert reported == {u.key for u in uploads}


# ------------------------------------------------------------------------------------ throttling
def test_a_throttled_service_imports_every_file_and_starts_no_job_twice(
    make_stack: Callable[..., IngestStack],
    start_emulator: Callable[..., Emulator],
    capfd: pytest.CaptureFixture[str],
) -> None:
    # Given an emulator enforcing the documented rates (time 4× faster: one StartDICOMImportJob a
    # second, burst 1) and one concurrent import job at a time
    emulator = start_emulator(throttling=True, time_scale=4.0, quotas=Quotas(concurrent_import_jobs=1))
    stack = make_stack(emulator)
    groups = [stack.put_many(dicom_files(2, folder=f"incoming/study-{n}/")) for n in range(3)]
    events = [stack.event(group) for group in groups]

    # When the uploads arrive back to back, each event delivered twice
    responses = [
        stack.invoke(event) for event in (events[0], events[1], events[0], events[2], events[1], events[2])
    ]

    # Then nothing failed, one job per batch was started, and every file was imported
    assert all(failed_ids(r) == [] for r in responses)
    results = stack.finished_jobs()
    assert len(results) == 3
    assert sum(r.summary["numberOfImportedFiles"] for r in results) == 6
    # and the throttling was met and counted
    assert metric_totals(capfd.readouterr().out).get("ImportStartThrottles", 0) >= 1


# ------------------------------------------------------------------------------------ configuration
@pytest.mark.filterwarnings("ignore:No application metrics to publish")
def test_a_missing_setting_fails_the_invocation_with_its_name(monkeypatch: pytest.MonkeyPatch) -> None:
    # Given an environment without DATASTORE_ID
    monkeypatch.delenv("DATASTORE_ID", raising=False)
    reset_environment()
    from functions.start_import.app import lambda_handler  # noqa: PLC0415

    record: dict[str, Any] = {"messageId": str(uuid.uuid4()), "body": "{}"}

    # When invoked
    # Then it fails with the variable named (every message returns to the queue)
    with pytest.raises(SettingsError, match="DATASTORE_ID is not set"):
        lambda_handler({"Records": [record]}, FakeContext())
    reset_environment()

"""Import jobs through boto3: results in S3, per-file failures, idempotency, limits, listing and events."""

from __future__ import annotations

import re
from collections.abc import Callable
from datetime import datetime
from typing import Any

import pytest
from botocore.exceptions import ClientError

from emulator.config import Quotas
from emulator.server import Emulator
from tests.emulator import helpers

pytestmark = pytest.mark.emulator

UNSUPPORTED_TRANSFER_SYNTAX = (
    "1.2.840.10008.1.2.4.100"  # MPEG2 Main Profile @ Main Level (spec §4.7: not listed)
)


def mixed_input() -> tuple[dict[str, bytes], dict[str, list[str]], dict[str, str]]:
    """Files of one import: two valid series (one instance in a nested folder) and four bad files.

    Returns the files, the valid keys by series, and the expected failure reason (a word of the message)
    by bad key.
    """
    study = helpers.SyntheticStudy()
    series_a = study.series(3, series_number=1)
    series_b = study.series(2, series_number=2)
    other = helpers.SyntheticStudy()
    files = {
        "a/1.dcm": helpers.p10(series_a[0]),
        "a/2.dcm": helpers.p10(series_a[1]),
        "nested/deeper/a-3.dcm": helpers.p10(series_a[2]),
        "b/1.dcm": helpers.p10(series_b[0]),
        "b/2.dcm": helpers.p10(series_b[1]),
        "notes.txt": b"not a DICOM file\n",
        "bad/no-transfer-syntax.dcm": helpers.p10_without_transfer_syntax(other.series(1)[0]),
        "bad/mpeg2.dcm": helpers.p10_with_transfer_syntax(other.series(1)[0], UNSUPPORTED_TRANSFER_SYNTAX),
        # (0008,1030) StudyDescription is limited to 64 characters at import (spec §4.8)
        "bad/long-description.dcm": helpers.p10(other.series(1, StudyDescription="D" * 65)[0]),
    }
    valid = {"A": ["a/1.dcm", "a/2.dcm", "nested/deeper/a-3.dcm"], "B": ["b/1.dcm", "b/2.dcm"]}
    reasons = {
        "notes.txt": "",
        "bad/no-transfer-syntax.dcm": "TransferSyntaxUID",
        "bad/mpeg2.dcm": UNSUPPORTED_TRANSFER_SYNTAX,
        "bad/long-description.dcm": "StudyDescription",
    }
    return files, valid, reasons


def start(ahi: Any, datastore_id: str, bucket: str, prefix: str, **params: Any) -> dict[str, Any]:
    response: dict[str, Any] = ahi.start_dicom_import_job(
        datastoreId=datastore_id,
        dataAccessRoleArn=helpers.ROLE_ARN,
        inputS3Uri=helpers.s3_uri(bucket, prefix),
        outputS3Uri=helpers.s3_uri(bucket, "out/"),
        **params,
    )
    return response


def test_import_reports_every_file_in_the_manifest_and_ndjson(
    ahi: Any, s3: Any, bucket: str, datastore: str
) -> None:
    # Given
    files, valid, reasons = mixed_input()
    helpers.upload(s3, bucket, {f"input/{key}": body for key, body in files.items()})

    # When
    started = start(ahi, datastore, bucket, "input/", jobName="mixed-import")
    job = helpers.wait_job(ahi, datastore, started["jobId"])
    results = helpers.read_results(s3, job)

    # Then: the job
    assert set(started) - {"ResponseMetadata"} == {"datastoreId", "jobId", "jobStatus", "submittedAt"}
    assert started["jobStatus"] == "SUBMITTED"
    assert re.fullmatch(helpers.ID_PATTERN, started["jobId"])
    job_folder = f"s3://{bucket}/out/{datastore}-DicomImport-{started['jobId']}/"
    assert job == {
        "jobId": started["jobId"],
        "jobName": "mixed-import",
        "jobStatus": "COMPLETED",
        "datastoreId": datastore,
        "dataAccessRoleArn": helpers.ROLE_ARN,
        "endedAt": job["endedAt"],
        "submittedAt": started["submittedAt"],
        "inputS3Uri": f"s3://{bucket}/input/",
        "outputS3Uri": job_folder,
    }
    assert isinstance(job["endedAt"], datetime)
    assert job["endedAt"] >= job["submittedAt"]

    # Then: the manifest
    summary = results.summary
    assert summary["jobId"] == started["jobId"]
    assert summary["datastoreId"] == datastore
    assert summary["inputS3Uri"] == f"s3://{bucket}/input/"
    assert summary["outputS3Uri"] == job_folder
    assert summary["successOutputS3Uri"] == f"{job_folder}SUCCESS/"
    assert summary["failureOutputS3Uri"] == f"{job_folder}FAILURE/"
    assert summary["numberOfScannedFiles"] == len(files)
    assert summary["numberOfImportedFiles"] == 5
    assert summary["numberOfFilesWithCustomerError"] == len(reasons)
    assert summary["numberOfFilesWithServerError"] == 0
    assert summary["numberOfScannedFiles"] == (
        summary["numberOfImportedFiles"]
        + summary["numberOfFilesWithCustomerError"]
        + summary["numberOfFilesWithServerError"]
    )
    assert summary["numberOfGeneratedImageSets"] == len(summary["imageSetsSummary"]) >= 2
    assert sum(s["numberOfMatchedSOPInstances"] for s in summary["imageSetsSummary"]) == 5

    # Then: SUCCESS lines name every valid file (by its key) and an image set of the manifest
    assert all(set(line) == {"inputFile", "importResponse"} for line in results.success)
    assert sorted(line["inputFile"] for line in results.success) == sorted(
        f"input/{key}" for keys in valid.values() for key in keys
    )
    assert {line["importResponse"]["imageSetId"] for line in results.success} == set(results.image_set_ids)
    # Then: the newer fields: every import creates version 1, and the first image set of each series
    # in the data store is primary, in the lines and in the summary alike
    assert all(line["importResponse"]["imageSetVersion"] == "1" for line in results.success)
    primary = {s["imageSetId"]: s["isPrimary"] for s in summary["imageSetsSummary"]}
    assert all(
        line["importResponse"]["isPrimary"] is primary[line["importResponse"]["imageSetId"]]
        for line in results.success
    )
    assert all(s["imageSetVersion"] == "1" for s in summary["imageSetsSummary"])
    assert any(primary.values())

    # Then: FAILURE lines name every bad file with a ValidationException and its reason
    assert all(set(line) == {"inputFile", "exception"} for line in results.failure)
    assert sorted(line["inputFile"] for line in results.failure) == sorted(f"input/{key}" for key in reasons)
    for key, reason in reasons.items():
        exception = results.failure_of(f"input/{key}")
        assert set(exception) == {"exceptionType", "message"}
        assert exception["exceptionType"] == "ValidationException"
        assert exception["message"]
        assert reason in exception["message"], (key, exception)

    # Then: each image set holds one series; the two series never share an image set
    image_sets_of = {
        series: {results.image_set_of(f"input/{key}") for key in keys} for series, keys in valid.items()
    }
    assert not image_sets_of["A"] & image_sets_of["B"]
    for image_set_id in results.image_set_ids:
        document = helpers.metadata(ahi, datastore, image_set_id)
        assert len(document["Study"]["Series"]) == 1


def test_same_client_token_returns_the_same_job(ahi: Any, s3: Any, bucket: str, datastore: str) -> None:
    # Given
    helpers.upload(s3, bucket, {"in/1.dcm": helpers.p10(helpers.SyntheticStudy().series(1)[0])})
    token = helpers.unique_name("job")
    first = start(ahi, datastore, bucket, "in/", clientToken=token)

    # When
    again = start(ahi, datastore, bucket, "in/", clientToken=token)

    # Then
    assert again["jobId"] == first["jobId"]
    helpers.wait_job(ahi, datastore, first["jobId"])
    jobs = ahi.list_dicom_import_jobs(datastoreId=datastore)["jobSummaries"]
    assert [j["jobId"] for j in jobs] == [first["jobId"]]
    with pytest.raises(ClientError) as info:
        start(ahi, datastore, bucket, "elsewhere/", clientToken=token)
    assert helpers.error_of(info)[0] == "ConflictException"


def test_files_per_job_limit_fails_the_job(
    start_emulator: Callable[..., Emulator], s3: Any, bucket: str
) -> None:
    # Given: an emulator accepting three files per job, and four files
    limited = start_emulator(quotas=Quotas(files_per_import_job=3))
    ahi = helpers.medical_imaging(limited.endpoint_url)
    datastore_id = helpers.create_datastore(ahi)
    helpers.upload(
        s3,
        bucket,
        {f"in/{n}.dcm": helpers.p10(ds) for n, ds in enumerate(helpers.SyntheticStudy().series(4))},
    )

    # When
    job = helpers.wait_job(ahi, datastore_id, start(ahi, datastore_id, bucket, "in/")["jobId"])

    # Then
    assert job["jobStatus"] == "FAILED"
    assert "4" in job["message"]
    assert "3" in job["message"]
    assert helpers.all_image_sets(ahi, datastore_id) == []


def test_list_jobs_filters_by_status_and_pages(ahi: Any, s3: Any, bucket: str, datastore: str) -> None:
    # Given: two completed jobs and one failed (its input bucket does not exist)
    helpers.upload(s3, bucket, {"in/1.dcm": helpers.p10(helpers.SyntheticStudy().series(1)[0])})
    completed = [start(ahi, datastore, bucket, "in/", jobName=f"ok-{n}")["jobId"] for n in range(2)]
    failed = ahi.start_dicom_import_job(
        datastoreId=datastore,
        jobName="no-bucket",
        dataAccessRoleArn=helpers.ROLE_ARN,
        inputS3Uri="s3://no-such-bucket-for-this-test/in/",
        outputS3Uri=helpers.s3_uri(bucket, "out/"),
    )["jobId"]
    for job_id in [*completed, failed]:
        helpers.wait_job(ahi, datastore, job_id)

    # When
    seen: list[dict[str, Any]] = []
    params: dict[str, Any] = {"datastoreId": datastore, "maxResults": 1}
    while True:
        page = ahi.list_dicom_import_jobs(**params)
        assert len(page["jobSummaries"]) <= 1
        seen.extend(page["jobSummaries"])
        if not page.get("nextToken"):
            break
        params["nextToken"] = page["nextToken"]
    only_completed = ahi.list_dicom_import_jobs(datastoreId=datastore, jobStatus="COMPLETED")["jobSummaries"]
    only_failed = ahi.list_dicom_import_jobs(datastoreId=datastore, jobStatus="FAILED")["jobSummaries"]

    # Then
    assert sorted(j["jobId"] for j in seen) == sorted([*completed, failed])
    assert sorted(j["jobId"] for j in only_completed) == sorted(completed)
    assert [j["jobId"] for j in only_failed] == [failed]
    assert only_failed[0]["message"]
    for summary in seen:
        assert {
            "jobId",
            "jobName",
            "jobStatus",
            "datastoreId",
            "dataAccessRoleArn",
            "endedAt",
            "submittedAt",
        } <= set(summary)
        assert "inputS3Uri" not in summary
        assert "outputS3Uri" not in summary
    submitted = [j["submittedAt"] for j in seen]
    assert submitted == sorted(submitted, reverse=True)
    with pytest.raises(ClientError) as info:
        ahi.list_dicom_import_jobs(datastoreId=datastore, nextToken="garbage")
    assert helpers.error_of(info)[0] == "ValidationException"


def test_series_with_two_patient_names_is_split(ahi: Any, s3: Any, bucket: str, datastore: str) -> None:
    # Given: one series whose instances 1-2 and 3-4 disagree on (0010,0010) PatientName (spec §3.7)
    study = helpers.SyntheticStudy()
    series = study.series(4)
    for ds in series[2:]:
        ds.PatientName = "TEST^OTHER"

    # When
    results = helpers.import_datasets(ahi, s3, datastore_id=datastore, bucket=bucket, datasets=series)

    # Then: instance n went into image set of_instance[n] (files are 000.dcm, 001.dcm, ...)
    of_instance = [results.image_set_of(key) for key in sorted(s["inputFile"] for s in results.success)]
    # (the service may split a consistent series too, spec §3.7: only the mismatch is certain)
    assert not set(of_instance[:2]) & set(of_instance[2:])
    for image_set_id in set(of_instance):
        document = helpers.metadata(ahi, datastore, image_set_id)
        assert list(document["Study"]["Series"]) == [series[0].SeriesInstanceUID]
        expected = "TEST^PATIENT" if image_set_id in of_instance[:2] else "TEST^OTHER"
        assert document["Patient"]["DICOM"]["PatientName"] == expected


def test_start_validates_the_uris_and_the_datastore(ahi: Any, bucket: str, datastore: str) -> None:
    # When: an input URI that is not a prefix
    with pytest.raises(ClientError) as info:
        start(ahi, datastore, bucket, "no-trailing-slash")

    # Then
    code, message = helpers.error_of(info)
    assert code == "ValidationException"
    assert "inputS3Uri" in message
    with pytest.raises(ClientError) as info:
        start(ahi, "f" * 32, bucket, "in/")
    assert helpers.error_of(info)[0] == "ResourceNotFoundException"
    with pytest.raises(ClientError) as info:
        ahi.get_dicom_import_job(datastoreId=datastore, jobId="f" * 32)
    assert helpers.error_of(info)[0] == "ResourceNotFoundException"


def test_import_emits_job_and_image_set_events(
    event_sink: helpers.EventSink, ahi: Any, s3: Any, bucket: str, emulator: Emulator
) -> None:
    # Given: a rule on EventBridge (moto) routing source aws.medical-imaging to a queue, then a data store
    datastore_id = helpers.create_datastore(ahi)
    datastore_arn = ahi.get_datastore(datastoreId=datastore_id)["datastoreProperties"]["datastoreArn"]
    helpers.upload(
        s3,
        bucket,
        {f"in/{n}.dcm": helpers.p10(ds) for n, ds in enumerate(helpers.SyntheticStudy().series(2))},
    )

    # When: a job that completes, a job that fails (no such input bucket), then the data store is deleted
    job_id = start(ahi, datastore_id, bucket, "in/", jobName="evented")["jobId"]
    results = helpers.read_results(s3, helpers.wait_job(ahi, datastore_id, job_id))
    failed_id = ahi.start_dicom_import_job(
        datastoreId=datastore_id,
        dataAccessRoleArn=helpers.ROLE_ARN,
        inputS3Uri="s3://no-such-bucket-for-events/in/",
        outputS3Uri=helpers.s3_uri(bucket, "out/"),
    )["jobId"]
    assert helpers.wait_job(ahi, datastore_id, failed_id)["jobStatus"] == "FAILED"
    image_set_arns = {
        i: ahi.get_image_set(datastoreId=datastore_id, imageSetId=i)["imageSetArn"]
        for i in results.image_set_ids
    }
    helpers.delete_datastore(ahi, datastore_id)
    emulator.wait_idle()

    # Then
    def mine(events: list[dict[str, Any]]) -> list[dict[str, Any]]:
        return [e for e in events if e["detail"].get("datastoreId") == datastore_id]

    wanted = {
        "Data Store Creating",
        "Data Store Created",
        "Import Job Submitted",
        "Import Job In Progress",
        "Import Job Completed",
        "Import Job Failed",
        "Data Store Deleting",
        "Data Store Deleted",
    }
    events = mine(
        event_sink.collect(
            lambda all_events: (
                wanted <= {e["detail-type"] for e in mine(all_events)}
                and sum(e["detail-type"] == "Image Set Created" for e in mine(all_events))
                >= len(results.image_set_ids)
            ),
            what="the data store, import job and image set events",
        )
    )
    assert all(e["source"] == "aws.medical-imaging" for e in events)
    # (moto's SQS target leaves out the envelope's "account"; the ARNs below carry it)
    assert all(e["region"] == helpers.REGION and e["version"] == "0" for e in events)

    statuses = {
        "Data Store Creating": "CREATING",
        "Data Store Created": "ACTIVE",
        "Data Store Deleting": "DELETING",
        "Data Store Deleted": "DELETED",
    }
    for event in (e for e in events if e["detail-type"].startswith("Data Store")):
        assert event["resources"] == [datastore_arn]
        assert set(event["detail"]) == {"imagingVersion", "datastoreId", "datastoreName", "datastoreStatus"}
        assert event["detail"]["datastoreStatus"] == statuses[event["detail-type"]]

    job_events = {
        (e["detail"]["jobId"], e["detail-type"]): e
        for e in events
        if e["detail-type"].startswith("Import Job")
    }
    for job, detail_type, status, name, input_uri in [
        (job_id, "Import Job Submitted", "SUBMITTED", "evented", f"s3://{bucket}/in/"),
        (job_id, "Import Job In Progress", "IN_PROGRESS", "evented", f"s3://{bucket}/in/"),
        (job_id, "Import Job Completed", "COMPLETED", "evented", f"s3://{bucket}/in/"),
        (failed_id, "Import Job Failed", "FAILED", None, "s3://no-such-bucket-for-events/in/"),
    ]:
        event = job_events[(job, detail_type)]
        assert event["resources"] == [datastore_arn]
        assert event["detail"] == {
            "imagingVersion": "1.0",
            "datastoreId": datastore_id,
            "jobId": job,
            "jobName": name,
            "jobStatus": status,
            "inputS3Uri": input_uri,
            "outputS3Uri": f"s3://{bucket}/out/",  # the caller's prefix (platform spec §1.5)
        }

    created = [e for e in events if e["detail-type"] == "Image Set Created"]
    assert sorted(e["detail"]["imagesetId"] for e in created) == sorted(results.image_set_ids)
    for event in created:
        image_set_id = event["detail"]["imagesetId"]
        assert event["detail"] == {
            "imagingVersion": "1.0",
            "datastoreId": datastore_id,
            "imagesetId": image_set_id,
            "imageSetState": "ACTIVE",
            "imageSetWorkflowStatus": "CREATED",
        }
        assert event["resources"] == [image_set_arns[image_set_id]]
        assert image_set_arns[image_set_id] == f"{datastore_arn}/imageset/{image_set_id}"

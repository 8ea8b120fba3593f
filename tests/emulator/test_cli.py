"""The spec's AWS CLI examples, run with the project's ``aws`` against the emulator.

Each command runs as a subprocess with ``AWS_ENDPOINT_URL_MEDICAL_IMAGING`` pointing at the emulator and
``--output json``; its output is compared with the documented example output (spec sections 2 and 5-9)
by keys and value types.  Timestamps are compared as timestamps: the documented outputs print them as
ISO strings or epoch seconds depending on the CLI version that captured them (spec §0, §11 #32).

AWS CLI v1 has no ``--cli-binary-format`` option: v1 always base64-encodes raw blob text itself, which is
what ``--cli-binary-format raw-in-base64-out`` asks of v2.  The seed 003 examples therefore get the
option only when the installed CLI is v2.
"""

from __future__ import annotations

import gzip
import json
import os
import re
import subprocess
from collections.abc import Iterator
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import boto3
import imagecodecs
import numpy as np
import pytest
from pydicom.uid import generate_uid

from emulator.server import Emulator
from tests.emulator import helpers

pytestmark = pytest.mark.emulator

AWS = Path(__file__).resolve().parents[2] / ".venv" / "bin" / "aws"
_ISO = re.compile(r"\d{4}-\d{2}-\d{2}T\d{2}:\d{2}")

# -------------------- documented outputs
# Copied from the spec (PDF wrapping undone); identifiers are placeholders, only keys and types matter.
CREATE_DATASTORE = {"datastoreId": "12345678901234567890123456789012", "datastoreStatus": "CREATING"}
DATASTORE = {
    "datastoreId": "12345678901234567890123456789012",
    "datastoreName": "TestDatastore123",
    "datastoreStatus": "ACTIVE",
    "datastoreArn": "arn:aws:medical-imaging:us-east-1:123456789012:datastore/"
    "12345678901234567890123456789012",
    "createdAt": "2022-11-15T23:33:09.643000+00:00",
    "updatedAt": "2022-11-15T23:33:09.643000+00:00",
}
GET_DATASTORE = {"datastoreProperties": DATASTORE}
LIST_DATASTORES = {"datastoreSummaries": [DATASTORE]}
DELETE_DATASTORE = {"datastoreId": "12345678901234567890123456789012", "datastoreStatus": "DELETING"}
START_IMPORT = {
    "datastoreId": "12345678901234567890123456789012",
    "jobId": "09876543210987654321098765432109",
    "jobStatus": "SUBMITTED",
    "submittedAt": "2022-08-12T11:28:11.152000+00:00",
}
JOB_SUMMARY = {
    "jobId": "09876543210987654321098765432109",
    "jobName": "my-job",
    "jobStatus": "COMPLETED",
    "datastoreId": "12345678901234567890123456789012",
    "dataAccessRoleArn": "arn:aws:iam::123456789012:role/ImportJobDataAccessRole",
    "endedAt": "2022-08-12T11:29:42.285000+00:00",
    "submittedAt": "2022-08-12T11:28:11.152000+00:00",
}
GET_IMPORT_JOB = {
    "jobProperties": {
        **JOB_SUMMARY,
        "inputS3Uri": "s3://medical-imaging-dicom-input/dicom_input/",
        "outputS3Uri": "s3://medical-imaging-output/job_output/12345678901234567890123456789012-"
        "DicomImport-09876543210987654321098765432109/",
    }
}
LIST_IMPORT_JOBS = {"jobSummaries": [JOB_SUMMARY]}
SEARCH_SUMMARY = {
    "imageSetId": "09876543210987654321098765432109",
    "createdAt": "2022-12-06T21:40:59.429000+00:00",
    "version": 1,
    "DICOMTags": {
        "DICOMStudyId": "2011201407",
        "DICOMStudyDate": "19991122",
        "DICOMPatientSex": "F",
        "DICOMStudyInstanceUID": "1.2.840.99999999.84710745.943275268089",
        "DICOMPatientBirthDate": "19201120",
        "DICOMStudyDescription": "UNKNOWN",
        "DICOMPatientId": "SUBJECT08701",
        "DICOMPatientName": "Melissa844 Huel628",
        "DICOMNumberOfStudyRelatedInstances": 1,
        "DICOMStudyTime": "140728",
        "DICOMNumberOfStudyRelatedSeries": 1,
    },
    "updatedAt": "2022-12-06T21:40:59.429000+00:00",
}
SEARCH = {"imageSetsMetadataSummaries": [SEARCH_SUMMARY]}
GET_IMAGE_SET = {
    "versionId": "1",
    "imageSetWorkflowStatus": "COPIED",
    "updatedAt": 1680027253.471,
    "imageSetId": "18f88ac7870584f58d56256646b4d92b",
    "imageSetState": "ACTIVE",
    "createdAt": 1679592510.753,
    "datastoreId": "12345678901234567890123456789012",
}
METADATA = {"contentType": "application/json", "contentEncoding": "gzip"}
VERSION = {
    "ImageSetWorkflowStatus": "UPDATED",
    "versionId": "4",
    "updatedAt": 1680029436.304,
    "imageSetId": "ea92b0d8838c72a3f25d00d13616f87e",
    "imageSetState": "ACTIVE",
    "createdAt": 1680027126.436,
}
VERSION_1 = {  # the documented version 1 has no updatedAt (spec §8.1)
    "imageSetId": "ea92b0d8838c72a3f25d00d13616f87e",
    "imageSetState": "ACTIVE",
    "versionId": "1",
    "ImageSetWorkflowStatus": "COPIED",
    "createdAt": 1680027126.436,
}
UPDATE = {
    "latestVersionId": "2",
    "imageSetWorkflowStatus": "UPDATING",
    "updatedAt": 1680042257.908,
    "imageSetId": "ea92b0d8838c72a3f25d00d13616f87e",
    "imageSetState": "LOCKED",
    "createdAt": 1680027126.436,
    "datastoreId": "12345678901234567890123456789012",
}
COPY_PROPERTIES = {
    "latestVersionId": "2",
    "imageSetWorkflowStatus": "COPYING",
    "updatedAt": 1680042357.432,
    "imageSetId": "b9a06fef182a5f992842f77f8e0868e5",
    "imageSetState": "LOCKED",
    "createdAt": 1680042357.432,
}
COPY = {
    "destinationImageSetProperties": COPY_PROPERTIES,
    "sourceImageSetProperties": COPY_PROPERTIES,
    "datastoreId": "12345678901234567890123456789012",
}
DELETE_IMAGE_SET = {
    "imageSetWorkflowStatus": "DELETING",
    "imageSetId": "ea92b0d8838c72a3f25d00d13616f87e",
    "imageSetState": "LOCKED",
    "datastoreId": "12345678901234567890123456789012",
}
TAGS = {"tags": {"Deployment": "Development"}}

# Members the botocore model adds to the documented outputs (spec §12 lists them as "not in the seeds").
MODEL_EXTRAS = {
    "losslessStorageFormat",
    "kmsKeyArn",
    "imageSetArn",
    "isPrimary",
    "lastAccessedAt",
    "storageTier",
    "overrides",
    "message",
    "deletedAt",
    "DICOMSeriesInstanceUID",
    "DICOMSeriesModality",
    "DICOMSeriesBodyPart",
    "DICOMSeriesNumber",
    "DICOMAccessionNumber",
    "sort",
}

# -------------------- seed 003 payloads
# Verbatim from seed 003 (spec §5.7); the placeholder UIDs are replaced by the imported ones.
PLACEHOLDER_UID = "1.1.1.1.1.1.12345.123456789012.123.12345678901234.1"
EX7_SERIES = "1.3.6.1.4.1.5962.99.1.3633258862.2104868982.1369432891697.3656.0"
EX7_INSTANCE = "1.3.6.1.4.1.5962.99.1.3633258862.2104868982.1369432891697.3659.0"
EX7_NEW_UID = "1.3.6.1.4.1.5962.99.1.3633258862.2104868982.1369432891697.3659.9"
SEED_003 = {
    1: r"""{ "DICOMUpdates": { "updatableAttributes": "{\"SchemaVersion\":1.1,\"Patient\":{\"DICOM\":{\"PatientName\":\"MX^MX\"}}}" } }""",  # noqa: E501 - verbatim
    2: r"""{ "DICOMUpdates": { "removableAttributes": "{\"SchemaVersion\":1.1,\"Study\":{\"DICOM\":{\"StudyDescription\":\"CHEST\"}}}" } }""",  # noqa: E501 - verbatim
    3: r"""{ "DICOMUpdates": { "removableAttributes": "{\"SchemaVersion\": 1.1,\"Study\": {\"Series\": {\"1.1.1.1.1.1.12345.123456789012.123.12345678901234.1\": {\"Instances\": {\"1.1.1.1.1.1.12345.123456789012.123.12345678901234.1\": {}}}}}}" } }""",  # noqa: E501 - verbatim
    5: r"""{ "DICOMUpdates": { "updatableAttributes": "{\"SchemaVersion\": 1.1,\"Study\": {\"Series\": {\"1.1.1.1.1.1.12345.123456789012.123.12345678901234.1\": {\"Instances\": {\"1.1.1.1.1.1.12345.123456789012.123.12345678901234.1\": {\"DICOM\": {\"001910F9\": \"97\"},\"DICOMVRs\": {\"001910F9\": \"DS\"}}}}}}}" } }""",  # noqa: E501 - verbatim
    6: r"""{ "DICOMUpdates": { "updatableAttributes": "{\"SchemaVersion\": 1.1,\"Study\": {\"Series\": {\"1.1.1.1.1.1.12345.123456789012.123.12345678901234.1\": {\"Instances\": {\"1.1.1.1.1.1.12345.123456789012.123.12345678901234.1\": {\"DICOM\": {\"00091001\": \"GE_GENESIS_DD\"}}}}}}}" } }""",  # noqa: E501 - verbatim
    7: r"""{ "DICOMUpdates": { "updatableAttributes": "{\"SchemaVersion\":1.1,\"Study\":{\"Series\":{\"1.3.6.1.4.1.5962.99.1.3633258862.2104868982.1369432891697.3656.0\":{\"Instances\":{\"1.3.6.1.4.1.5962.99.1.3633258862.2104868982.1369432891697.3659.0\":{\"DICOM\":{\"SOPInstanceUID\":\"1.3.6.1.4.1.5962.99.1.3633258862.2104868982.1369432891697.3659.9\"}}}}}}}" } }""",  # noqa: E501 - verbatim
}
# Spec §5.7, FR user guide: the payload given as base64 text (the OCR-corrected value of the spec).
FR_BASE64_PAYLOAD = {
    "DICOMUpdates": {
        "updatableAttributes": "eyJTY2hlbWFWZXJzaW9uIjoxLjEsIlBhdGllbnQiOnsiRElDT00iOnsiUGF0aWVudE5hbWUiOiJNWF5NWCJ9fX0"  # noqa: E501 - verbatim
    }
}

# Spec §7.4 normalized test vectors.
SEARCH_VECTORS = [
    {"filters": [{"values": [{"DICOMPatientId": "SUBJECT08701"}], "operator": "EQUAL"}]},
    {
        "filters": [
            {
                "values": [
                    {"DICOMStudyDateAndTime": {"DICOMStudyDate": "19900101", "DICOMStudyTime": "000000"}},
                    {"DICOMStudyDateAndTime": {"DICOMStudyDate": "20230101", "DICOMStudyTime": "000000"}},
                ],
                "operator": "BETWEEN",
            }
        ]
    },
    {
        "filters": [
            {
                "values": [
                    {"createdAt": "1985-04-12T23:20:50.52Z"},
                    {"createdAt": "2022-04-12T23:20:50.52Z"},
                ],
                "operator": "BETWEEN",
            }
        ]
    },
    {
        "filters": [
            {
                "values": [
                    {"updatedAt": "2024-03-11T15:00:05.074000-07:00"},
                    {"updatedAt": "2024-03-11T16:00:05.074000-07:00"},
                ],
                "operator": "BETWEEN",
            },
            {
                "values": [{"DICOMSeriesInstanceUID": "1.2.840.99999999.84710745.943275268089"}],
                "operator": "EQUAL",
            },
        ],
        "sort": {"sortField": "updatedAt", "sortOrder": "ASC"},
    },
]


# -------------------- running the CLI
class CliError(AssertionError):
    pass


@dataclass
class Cli:
    """``aws medical-imaging …`` against one emulator, in a working directory for file:// and outfiles."""

    env: dict[str, str]
    cwd: Path
    major_version: int

    def __call__(self, *args: str) -> Any:
        """Run a command; return its JSON output (None when it prints nothing)."""
        completed = self.run(*args)
        if completed.returncode != 0:
            raise CliError(f"aws {' '.join(args)} failed ({completed.returncode}): {completed.stderr}")
        return json.loads(completed.stdout) if completed.stdout.strip() else None

    def run(self, *args: str) -> subprocess.CompletedProcess[str]:
        return subprocess.run(
            [str(AWS), "medical-imaging", *args, "--output", "json"],
            env=self.env,
            cwd=self.cwd,
            capture_output=True,
            text=True,
            timeout=60,
            check=False,
        )

    def binary_format(self) -> list[str]:
        """``--cli-binary-format raw-in-base64-out`` where the CLI knows it (v2); v1 behaves so by default."""
        return ["--cli-binary-format", "raw-in-base64-out"] if self.major_version >= 2 else []

    def write(self, name: str, content: str) -> str:
        (self.cwd / name).write_text(content)
        return f"file://{name}"


@pytest.fixture(scope="module")
def cli(emulator: Emulator, tmp_path_factory: pytest.TempPathFactory) -> Cli:
    home = tmp_path_factory.mktemp("cli")
    env = {
        "PATH": os.environ.get("PATH", ""),
        "HOME": str(home),
        "AWS_ENDPOINT_URL_MEDICAL_IMAGING": emulator.endpoint_url,
        "AWS_DISABLE_HOST_PREFIX_INJECTION": "true",
        "AWS_ACCESS_KEY_ID": "testing",
        "AWS_SECRET_ACCESS_KEY": "testing",
        "AWS_DEFAULT_REGION": helpers.REGION,
        "AWS_CONFIG_FILE": str(home / "config"),
        "AWS_SHARED_CREDENTIALS_FILE": str(home / "credentials"),
        "AWS_EC2_METADATA_DISABLED": "true",
        "AWS_PAGER": "",
    }
    version = subprocess.run([str(AWS), "--version"], env=env, capture_output=True, text=True, check=True)
    major = int(re.search(r"aws-cli/(\d+)", version.stdout + version.stderr).group(1))  # type: ignore[union-attr]
    return Cli(env=env, cwd=home, major_version=major)


def assert_shape(actual: Any, documented: Any, path: str = "$") -> None:
    """``actual`` has the documented keys (plus only model members the seeds lack) and value types."""
    if _is_timestamp(documented):
        assert _is_timestamp(actual), f"{path}: {actual!r} is not a timestamp"
    elif isinstance(documented, dict):
        assert isinstance(actual, dict), f"{path}: expected an object, got {actual!r}"
        missing = set(documented) - set(actual)
        assert not missing, f"{path}: missing {sorted(missing)}"
        unexpected = set(actual) - set(documented) - MODEL_EXTRAS
        assert not unexpected, f"{path}: unexpected {sorted(unexpected)}"
        for key, value in documented.items():
            assert_shape(actual[key], value, f"{path}.{key}")
    elif isinstance(documented, list):
        assert isinstance(actual, list), f"{path}: expected a list, got {actual!r}"
        for index, item in enumerate(actual):
            assert_shape(item, documented[0], f"{path}[{index}]")
    else:
        assert type(actual) is type(documented), f"{path}: {actual!r} is not a {type(documented).__name__}"


def _is_timestamp(value: Any) -> bool:
    if isinstance(value, str):
        return bool(_ISO.match(value))
    return isinstance(value, float | int) and not isinstance(value, bool) and value > 1e9


# -------------------- imported data
@dataclass
class Data:
    datastore_id: str
    bucket: str
    job_id: str
    updated: str  # image set for the update examples: series 1, two instances
    sop_uids: list[str]
    series_uid: str
    merge_source: str  # series 2, instance 1 (its own import job)
    merge_destination: str  # series 2, instance 2 (another import job)


@pytest.fixture(scope="module")
def data(cli: Cli, emulator: Emulator, moto_url: str) -> Iterator[Data]:
    """A data store with imported image sets (set up with boto3; the tests use the CLI)."""
    ahi = helpers.medical_imaging(emulator.endpoint_url)
    s3 = boto3.client("s3", region_name=helpers.REGION, endpoint_url=moto_url)
    bucket = helpers.unique_name("cli")
    s3.create_bucket(Bucket=bucket)
    datastore_id = helpers.create_datastore(ahi)
    study = helpers.SyntheticStudy(
        patient_id="SUBJECT08701", study_id="2011201407", study_date="19991122", study_time="140728"
    )
    updated_series = study.series(2, series_number=1)
    first = helpers.import_datasets(
        ahi, s3, datastore_id=datastore_id, bucket=bucket, datasets=updated_series
    )
    merged_series = study.series(2, series_number=2)
    merge_source = helpers.import_datasets(
        ahi, s3, datastore_id=datastore_id, bucket=bucket, datasets=merged_series[:1]
    )
    merge_destination = helpers.import_datasets(
        ahi, s3, datastore_id=datastore_id, bucket=bucket, datasets=merged_series[1:]
    )
    yield Data(
        datastore_id=datastore_id,
        bucket=bucket,
        job_id=first.summary["jobId"],
        updated=first.image_set_ids[0],
        sop_uids=[str(ds.SOPInstanceUID) for ds in updated_series],
        series_uid=str(updated_series[0].SeriesInstanceUID),
        merge_source=merge_source.image_set_ids[0],
        merge_destination=merge_destination.image_set_ids[0],
    )
    emulator.wait_idle()
    helpers.delete_datastore(ahi, datastore_id)


def wait_active(emulator: Emulator, datastore_id: str, image_set_id: str) -> dict[str, Any]:
    return helpers.wait_image_set(helpers.medical_imaging(emulator.endpoint_url), datastore_id, image_set_id)


# -------------------- data stores
def test_datastore_commands(cli: Cli, emulator: Emulator) -> None:
    # When: spec §2.1
    created = cli("create-datastore", "--datastore-name", helpers.unique_name("my-datastore"))

    # Then
    assert_shape(created, CREATE_DATASTORE)
    assert created["datastoreStatus"] == "CREATING"
    datastore_id = created["datastoreId"]
    helpers.wait_datastore(helpers.medical_imaging(emulator.endpoint_url), datastore_id)

    # When / Then: §2.2, §2.3
    got = cli("get-datastore", "--datastore-id", datastore_id)
    assert_shape(got, GET_DATASTORE)
    assert got["datastoreProperties"]["datastoreStatus"] == "ACTIVE"
    listed = cli("list-datastores")
    assert_shape(listed, LIST_DATASTORES)
    assert datastore_id in [s["datastoreId"] for s in listed["datastoreSummaries"]]

    # When / Then: §9 tags on the data store ARN
    arn = got["datastoreProperties"]["datastoreArn"]
    assert cli("tag-resource", "--resource-arn", arn, "--tags", '{"Deployment":"Development"}') is None
    tags = cli("list-tags-for-resource", "--resource-arn", arn)
    assert_shape(tags, TAGS)
    assert tags == TAGS
    assert cli("untag-resource", "--resource-arn", arn, "--tag-keys", '["Deployment"]') is None
    assert cli("list-tags-for-resource", "--resource-arn", arn) == {"tags": {}}

    # When / Then: §2.4
    deleted = cli("delete-datastore", "--datastore-id", datastore_id)
    assert_shape(deleted, DELETE_DATASTORE)
    assert deleted["datastoreStatus"] == "DELETING"


def test_cli_errors_name_the_exception(cli: Cli) -> None:
    # When
    completed = cli.run("get-datastore", "--datastore-id", "0" * 32)

    # Then
    assert completed.returncode == 255
    assert "(ResourceNotFoundException)" in completed.stderr
    assert "GetDatastore" in completed.stderr


# -------------------- import jobs
def test_import_job_commands(cli: Cli, data: Data, emulator: Emulator, s3: Any) -> None:
    # Given
    helpers.upload(s3, data.bucket, {"dicom_input/1.dcm": helpers.p10(helpers.SyntheticStudy().series(1)[0])})

    # When: spec §2.5
    started = cli(
        "start-dicom-import-job",
        "--job-name",
        "my-job",
        "--datastore-id",
        data.datastore_id,
        "--input-s3-uri",
        f"s3://{data.bucket}/dicom_input/",
        "--output-s3-uri",
        f"s3://{data.bucket}/job_output/",
        "--data-access-role-arn",
        helpers.ROLE_ARN,
    )

    # Then
    assert_shape(started, START_IMPORT)
    assert started["jobStatus"] == "SUBMITTED"
    helpers.wait_job(helpers.medical_imaging(emulator.endpoint_url), data.datastore_id, started["jobId"])

    # When / Then: §2.6
    job = cli("get-dicom-import-job", "--datastore-id", data.datastore_id, "--job-id", started["jobId"])
    assert_shape(job, GET_IMPORT_JOB)
    assert job["jobProperties"]["jobStatus"] == "COMPLETED"
    assert job["jobProperties"]["outputS3Uri"] == (
        f"s3://{data.bucket}/job_output/{data.datastore_id}-DicomImport-{started['jobId']}/"
    )

    # When / Then: §2.7
    jobs = cli("list-dicom-import-jobs", "--datastore-id", data.datastore_id)
    assert_shape(jobs, LIST_IMPORT_JOBS)
    assert started["jobId"] in [j["jobId"] for j in jobs["jobSummaries"]]
    assert data.job_id in [j["jobId"] for j in jobs["jobSummaries"]]


# -------------------- search and reads
def test_search_examples(cli: Cli, data: Data) -> None:
    # When: the four criteria of spec §7.4, as search-criteria.json
    outputs = []
    for vector in SEARCH_VECTORS:
        criteria = cli.write("search-criteria.json", json.dumps(vector))
        outputs.append(
            cli("search-image-sets", "--datastore-id", data.datastore_id, "--search-criteria", criteria)
        )

    # Then: every image set matches examples 1 and 2; none is in the 2022/2024 windows of 3 and 4
    for output in outputs:
        assert_shape(output, SEARCH)
    all_ids = {data.updated, data.merge_source, data.merge_destination}
    assert all_ids <= {s["imageSetId"] for s in outputs[0]["imageSetsMetadataSummaries"]}
    assert all_ids <= {s["imageSetId"] for s in outputs[1]["imageSetsMetadataSummaries"]}
    assert outputs[2]["imageSetsMetadataSummaries"] == []
    assert outputs[3]["imageSetsMetadataSummaries"] == []
    summary = next(s for s in outputs[0]["imageSetsMetadataSummaries"] if s["imageSetId"] == data.updated)
    assert summary["DICOMTags"]["DICOMPatientId"] == "SUBJECT08701"
    assert summary["DICOMTags"]["DICOMStudyDate"] == "19991122"
    assert summary["DICOMTags"]["DICOMStudyTime"] == "140728"

    # When / Then: example 4 with a window around now and a real series UID
    now = datetime.now(UTC)
    window = {
        "filters": [
            {
                "values": [
                    {"updatedAt": (now - timedelta(hours=1)).isoformat()},
                    {"updatedAt": (now + timedelta(hours=1)).isoformat()},
                ],
                "operator": "BETWEEN",
            },
            {"values": [{"DICOMSeriesInstanceUID": data.series_uid}], "operator": "EQUAL"},
        ],
        "sort": {"sortField": "updatedAt", "sortOrder": "ASC"},
    }
    criteria = cli.write("search-criteria.json", json.dumps(window))
    found = cli("search-image-sets", "--datastore-id", data.datastore_id, "--search-criteria", criteria)
    assert [s["imageSetId"] for s in found["imageSetsMetadataSummaries"]] == [data.updated]


def test_read_commands(cli: Cli, data: Data) -> None:
    # When: spec §2.9
    image_set = cli(
        "get-image-set",
        "--datastore-id",
        data.datastore_id,
        "--image-set-id",
        data.updated,
        "--version-id",
        "1",
    )

    # Then
    assert_shape(image_set, GET_IMAGE_SET)
    assert image_set["versionId"] == "1"

    # When / Then: §8.4, the gzip JSON goes to the outfile
    output = cli(
        "get-image-set-metadata",
        "--datastore-id",
        data.datastore_id,
        "--image-set-id",
        data.updated,
        "--version-id",
        "1",
        "studymetadata.json.gz",
    )
    assert output == METADATA
    document = json.loads(gzip.decompress((cli.cwd / "studymetadata.json.gz").read_bytes()))
    assert document["ImageSetID"] == data.updated
    frame_id = next(frame["ID"] for _, frame in helpers.frames(document))

    # When / Then: §8.3, the HTJ2K frame goes to the outfile
    output = cli(
        "get-image-frame",
        "--datastore-id",
        data.datastore_id,
        "--image-set-id",
        data.updated,
        "--image-frame-information",
        f"imageFrameId={frame_id}",
        "imageframe.jph",
    )
    assert output == {"contentType": "image/jph"}  # the CLI prints the non-streamed members
    frame = (cli.cwd / "imageframe.jph").read_bytes()
    assert frame[:2] == b"\xff\x4f"
    decoded = imagecodecs.htj2k_decode(frame)
    assert decoded.shape == (64, 64)
    assert isinstance(decoded, np.ndarray)


# -------------------- updates (seed 003)
def test_update_examples_of_seed_003(cli: Cli, data: Data, emulator: Emulator) -> None:
    # Given: the imported UIDs in place of the examples' placeholders
    removed, kept = data.sop_uids
    new_uid = generate_uid()

    def adapted(number: int, instance: str) -> str:
        text = SEED_003[number].replace(PLACEHOLDER_UID, "{instance}", 2)
        text = text.replace("{instance}", data.series_uid, 1).replace("{instance}", instance, 1)
        return (
            text.replace(EX7_SERIES, data.series_uid)
            .replace(EX7_INSTANCE, kept)
            .replace(EX7_NEW_UID, new_uid)
        )

    steps = [  # (example, payload, --force)
        (1, adapted(1, kept), False),
        (2, adapted(2, kept), False),
        (3, adapted(3, removed), False),
        (5, adapted(5, kept), True),
        (6, adapted(6, kept), True),
        (7, adapted(7, kept), True),
    ]
    latest = 1

    def run(payload_args: list[str], force: bool) -> dict[str, Any]:
        nonlocal latest
        output: dict[str, Any] = cli(
            "update-image-set-metadata",
            "--datastore-id",
            data.datastore_id,
            "--image-set-id",
            data.updated,
            "--latest-version-id",
            str(latest),
            *cli.binary_format(),
            *(["--force"] if force else []),
            "--update-image-set-metadata-updates",
            *payload_args,
        )
        assert_shape(output, UPDATE)
        assert output["latestVersionId"] == str(latest + 1)
        assert (output["imageSetState"], output["imageSetWorkflowStatus"]) == ("LOCKED", "UPDATING")
        done = wait_active(emulator, data.datastore_id, data.updated)
        assert done["imageSetWorkflowStatus"] == "UPDATED", done
        latest += 1
        return output

    def current() -> dict[str, Any]:
        cli(
            "get-image-set-metadata",
            "--datastore-id",
            data.datastore_id,
            "--image-set-id",
            data.updated,
            "metadata.json.gz",
        )
        document: dict[str, Any] = json.loads(gzip.decompress((cli.cwd / "metadata.json.gz").read_bytes()))
        return document

    # When / Then: examples 1-3 (file://metadata-updates.json)
    for _, payload, force in steps[:3]:
        run([cli.write("metadata-updates.json", payload)], force)
    document = current()
    assert document["Patient"]["DICOM"]["PatientName"] == "MX^MX"
    assert document["Study"]["DICOM"].get("StudyDescription") is None
    assert list(document["Study"]["Series"][data.series_uid]["Instances"]) == [kept]

    # When / Then: example 4, revert to version 1 (inline JSON)
    run(['{"revertToVersionId": "1"}'], False)
    document = current()
    assert document["Patient"]["DICOM"]["PatientName"] == "TEST^PATIENT"
    assert sorted(document["Study"]["Series"][data.series_uid]["Instances"]) == sorted(data.sop_uids)

    # When / Then: examples 5-7 (--force)
    for _, payload, force in steps[3:]:
        run([cli.write("metadata-updates.json", payload)], force)
    instances = current()["Study"]["Series"][data.series_uid]["Instances"]
    assert instances[new_uid]["DICOM"]["SOPInstanceUID"] == new_uid
    assert instances[new_uid]["DICOM"]["001910F9"] == "97"
    assert instances[new_uid]["DICOM"]["00091001"] == "GE_GENESIS_DD"

    # When / Then: the FR user-guide form, whose file holds the payload as base64 text
    base64_file = cli.write("metadata-updates.json", json.dumps(FR_BASE64_PAYLOAD))
    if cli.major_version >= 2:
        run([base64_file], False)
        assert current()["Patient"]["DICOM"]["PatientName"] == "MX^MX"
    else:
        # v1 base64-encodes the text again, so the service receives base64 instead of JSON
        completed = cli.run(
            "update-image-set-metadata",
            "--datastore-id",
            data.datastore_id,
            "--image-set-id",
            data.updated,
            "--latest-version-id",
            str(latest),
            "--update-image-set-metadata-updates",
            base64_file,
        )
        assert completed.returncode == 255
        assert "(ValidationException)" in completed.stderr

    # When / Then: spec §8.1
    versions = cli(
        "list-image-set-versions", "--datastore-id", data.datastore_id, "--image-set-id", data.updated
    )
    listed = versions["imageSetPropertiesList"]
    assert [v["versionId"] for v in listed] == [str(n) for n in range(latest, 0, -1)]
    for version in listed[:-1]:
        assert_shape(version, VERSION)
    assert_shape(listed[-1], VERSION_1)


# -------------------- copy, tags, delete
def test_copy_tag_and_delete_commands(cli: Cli, data: Data, emulator: Emulator) -> None:
    # When: spec §6.3 example 1, copy into a new image set
    copied = cli(
        "copy-image-set",
        "--datastore-id",
        data.datastore_id,
        "--source-image-set-id",
        data.merge_source,
        "--copy-image-set-information",
        '{"sourceImageSet": {"latestVersionId": "1" } }',
    )

    # Then
    assert_shape(copied, COPY)
    new_id = copied["destinationImageSetProperties"]["imageSetId"]
    assert copied["destinationImageSetProperties"]["latestVersionId"] == "1"
    assert copied["sourceImageSetProperties"]["imageSetWorkflowStatus"] == "COPYING_WITH_READ_ONLY_ACCESS"
    assert wait_active(emulator, data.datastore_id, new_id)["imageSetWorkflowStatus"] == "COPIED"
    wait_active(emulator, data.datastore_id, data.merge_source)

    # When: example 2, copy into an existing image set of the same series
    merged = cli(
        "copy-image-set",
        "--datastore-id",
        data.datastore_id,
        "--source-image-set-id",
        data.merge_source,
        "--copy-image-set-information",
        '{"sourceImageSet": {"latestVersionId": "1" },\n  "destinationImageSet": { "imageSetId": "'
        + data.merge_destination
        + '",\n  "latestVersionId": "1"} }',
    )

    # Then
    assert_shape(merged, COPY)
    assert merged["destinationImageSetProperties"]["latestVersionId"] == "2"
    done = wait_active(emulator, data.datastore_id, data.merge_destination)
    assert (done["imageSetWorkflowStatus"], done["versionId"]) == ("COPIED", "2")

    # When / Then: spec §9 on the image set ARN
    arn = (
        f"arn:aws:medical-imaging:{helpers.REGION}:{helpers.ACCOUNT}:datastore/"
        f"{data.datastore_id}/imageset/{new_id}"
    )
    assert cli("tag-resource", "--resource-arn", arn, "--tags", '{"Deployment":"Development"}') is None
    assert cli("list-tags-for-resource", "--resource-arn", arn) == TAGS
    assert cli("untag-resource", "--resource-arn", arn, "--tag-keys", '["Deployment"]') is None
    assert cli("list-tags-for-resource", "--resource-arn", arn) == {"tags": {}}

    # When / Then: spec §8.2
    deleted = cli("delete-image-set", "--datastore-id", data.datastore_id, "--image-set-id", new_id)
    assert_shape(deleted, DELETE_IMAGE_SET)
    assert (deleted["imageSetState"], deleted["imageSetWorkflowStatus"]) == ("LOCKED", "DELETING")
    gone = wait_active(emulator, data.datastore_id, new_id)
    assert (gone["imageSetState"], gone["imageSetWorkflowStatus"]) == ("DELETED", "DELETED")
    again = cli.run("delete-image-set", "--datastore-id", data.datastore_id, "--image-set-id", new_id)
    assert "(ConflictException)" in again.stderr

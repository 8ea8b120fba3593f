"""Helpers of the emulator conformance suite: clients, polling with deadlines, synthetic DICOM, S3 I/O.

Everything here talks to the emulator the way a customer does (boto3 against its endpoint); nothing
reaches into the emulator's internals.  The DICOM is synthetic and built in memory: made-up names such
as ``TEST^PATIENT``, UIDs from pydicom's ``generate_uid``, deterministic pseudo-random pixels.
"""

from __future__ import annotations

import gzip
import io
import json
import secrets
import time
import zlib
from collections.abc import Callable, Iterator, Mapping
from contextlib import contextmanager
from dataclasses import dataclass, field
from typing import Any, TypeVar
from urllib.parse import urlparse

import boto3
import numpy as np
import pytest
from botocore.config import Config
from botocore.exceptions import ClientError
from pydicom import config as pydicom_config
from pydicom import dcmwrite
from pydicom.dataset import Dataset, FileDataset, FileMetaDataset
from pydicom.encaps import encapsulate
from pydicom.uid import CTImageStorage, ExplicitVRLittleEndian, generate_uid

REGION = "us-east-1"
ACCOUNT = "123456789012"
ROLE_ARN = f"arn:aws:iam::{ACCOUNT}:role/ImportJobDataAccessRole"
ID_PATTERN = r"[0-9a-f]{32}"

T = TypeVar("T")


# -------------------- clients
def medical_imaging(endpoint_url: str, *, retries: Mapping[str, Any] | None = None) -> Any:
    """An unmodified boto3 ``medical-imaging`` client for ``endpoint_url`` (retries off by default)."""
    config = Config(
        inject_host_prefix=False,
        retries=dict(retries or {"mode": "standard", "total_max_attempts": 1}),
    )
    return boto3.client("medical-imaging", region_name=REGION, endpoint_url=endpoint_url, config=config)


def error_of(info: pytest.ExceptionInfo[ClientError]) -> tuple[str, str]:
    """``(code, message)`` of a ``ClientError`` caught by ``pytest.raises``."""
    error = info.value.response["Error"]
    return error["Code"], error.get("Message", "")


# -------------------- waiting
def wait_until(
    probe: Callable[[], T],
    done: Callable[[T], bool],
    *,
    what: str,
    timeout: float = 30.0,
    interval: float = 0.02,
) -> T:
    """Call ``probe`` until ``done(result)``; fail the test with the last result after ``timeout`` s."""
    deadline = time.monotonic() + timeout
    while True:
        result = probe()
        if done(result):
            return result
        if time.monotonic() > deadline:
            pytest.fail(f"timed out after {timeout:.0f} s waiting for {what}; last answer: {result!r}")
        time.sleep(interval)


def wait_datastore(ahi: Any, datastore_id: str, status: str = "ACTIVE") -> dict[str, Any]:
    """The data store's properties once it reaches ``status``."""
    properties: dict[str, Any] = wait_until(
        lambda: ahi.get_datastore(datastoreId=datastore_id)["datastoreProperties"],
        lambda p: p["datastoreStatus"] == status,
        what=f"data store {datastore_id} to be {status}",
    )
    return properties


def wait_job(ahi: Any, datastore_id: str, job_id: str, timeout: float = 60.0) -> dict[str, Any]:
    """The job's properties once it is COMPLETED or FAILED."""
    properties: dict[str, Any] = wait_until(
        lambda: ahi.get_dicom_import_job(datastoreId=datastore_id, jobId=job_id)["jobProperties"],
        lambda p: p["jobStatus"] in ("COMPLETED", "FAILED"),
        what=f"import job {job_id} to end",
        timeout=timeout,
    )
    return properties


def wait_image_set(ahi: Any, datastore_id: str, image_set_id: str) -> dict[str, Any]:
    """GetImageSet once the image set is no longer LOCKED."""
    response: dict[str, Any] = wait_until(
        lambda: ahi.get_image_set(datastoreId=datastore_id, imageSetId=image_set_id),
        lambda r: r["imageSetState"] != "LOCKED",
        what=f"image set {image_set_id} to leave LOCKED",
    )
    return response


# -------------------- data stores
def unique_name(prefix: str = "test") -> str:
    return f"{prefix}-{secrets.token_hex(4)}"


def create_datastore(ahi: Any, name: str | None = None, **params: Any) -> str:
    """Create a data store and wait until it is ACTIVE; return its id."""
    datastore_id: str = ahi.create_datastore(datastoreName=name or unique_name(), **params)["datastoreId"]
    wait_datastore(ahi, datastore_id)
    return datastore_id


def all_image_sets(ahi: Any, datastore_id: str, criteria: Mapping[str, Any] | None = None) -> list[dict]:
    """Every SearchImageSets summary of a data store, following ``nextToken``."""
    summaries: list[dict] = []
    params: dict[str, Any] = {"datastoreId": datastore_id, "searchCriteria": dict(criteria or {})}
    while True:
        page = ahi.search_image_sets(**params)
        summaries.extend(page["imageSetsMetadataSummaries"])
        if not page.get("nextToken"):
            return summaries
        params["nextToken"] = page["nextToken"]


def delete_datastore(ahi: Any, datastore_id: str) -> None:
    """Delete every image set of a data store, then the data store, waiting for each step."""
    for summary in all_image_sets(ahi, datastore_id):
        image_set_id = summary["imageSetId"]
        wait_image_set(ahi, datastore_id, image_set_id)
        ahi.delete_image_set(datastoreId=datastore_id, imageSetId=image_set_id)
    wait_until(
        lambda: all_image_sets(ahi, datastore_id),
        lambda left: not left,
        what=f"the image sets of {datastore_id} to be deleted",
    )
    ahi.delete_datastore(datastoreId=datastore_id)
    wait_until(
        lambda: deleted_datastore_ids(ahi),
        lambda deleted: datastore_id in deleted,
        what=f"data store {datastore_id} to be DELETED",
    )


def deleted_datastore_ids(ahi: Any) -> set[str]:
    """Every DELETED data store (every page: a long session deletes more than one page of them)."""
    pages = ahi.get_paginator("list_datastores").paginate(datastoreStatus="DELETED")
    return {summary["datastoreId"] for page in pages for summary in page["datastoreSummaries"]}


# -------------------- synthetic DICOM
PRIVATE_CREATOR = "SYNTHETIC_TEST_01"


def pixels(rows: int = 64, columns: int = 64, *, seed: int = 0, bits: int = 12) -> np.ndarray:
    """Deterministic pseudo-random unsigned pixels of ``bits`` bits (a gradient plus noise)."""
    rng = np.random.default_rng(seed)
    gradient = np.add.outer(np.arange(rows), np.arange(columns)) * 7
    noise = rng.integers(0, 512, size=(rows, columns))
    return ((gradient + noise) % (1 << bits)).astype(np.uint16)


@dataclass
class SyntheticStudy:
    """One made-up CT study; ``series`` adds instances to it.  No real patient data."""

    patient_name: str = "TEST^PATIENT"
    patient_id: str = field(default_factory=lambda: f"TEST-{secrets.token_hex(3).upper()}")
    patient_birth_date: str = "19700101"
    patient_sex: str = "O"
    accession_number: str = field(default_factory=lambda: f"ACC{secrets.token_hex(3).upper()}")
    study_id: str = "STUDY1"
    study_date: str = "20240105"
    study_time: str = "093000"
    study_description: str = "CHEST"
    study_instance_uid: str = field(default_factory=generate_uid)
    frame_of_reference_uid: str = field(default_factory=generate_uid)
    _seed: int = 0

    def instance(
        self,
        *,
        series_instance_uid: str,
        instance_number: int,
        series_number: int = 1,
        rows: int = 64,
        columns: int = 64,
        **overrides: Any,
    ) -> FileDataset:
        """One CT instance of this study (Explicit VR Little Endian), with a private element."""
        self._seed += 1
        sop_instance_uid = generate_uid()
        meta = FileMetaDataset()
        meta.MediaStorageSOPClassUID = CTImageStorage
        meta.MediaStorageSOPInstanceUID = sop_instance_uid
        meta.TransferSyntaxUID = ExplicitVRLittleEndian
        ds = FileDataset(None, Dataset(), file_meta=meta, preamble=b"\0" * 128)
        ds.SOPClassUID = CTImageStorage
        ds.SOPInstanceUID = sop_instance_uid
        ds.ImageType = ["ORIGINAL", "PRIMARY", "AXIAL"]
        ds.PatientName = self.patient_name
        ds.PatientID = self.patient_id
        ds.PatientBirthDate = self.patient_birth_date
        ds.PatientSex = self.patient_sex
        ds.StudyInstanceUID = self.study_instance_uid
        ds.StudyID = self.study_id
        ds.StudyDate = self.study_date
        ds.StudyTime = self.study_time
        ds.StudyDescription = self.study_description
        ds.AccessionNumber = self.accession_number
        ds.Modality = "CT"
        ds.BodyPartExamined = "CHEST"
        ds.Manufacturer = "SYNTHETIC"
        ds.SeriesInstanceUID = series_instance_uid
        ds.SeriesNumber = series_number
        ds.SeriesDescription = f"SYNTHETIC SERIES {series_number}"
        ds.FrameOfReferenceUID = self.frame_of_reference_uid
        ds.InstanceNumber = instance_number
        ds.ImagePositionPatient = [0, 0, float(instance_number)]
        ds.ImageOrientationPatient = [1, 0, 0, 0, 1, 0]
        ds.PixelSpacing = [0.5, 0.5]
        ds.SliceThickness = 1.0
        ds.RescaleIntercept = -1024
        ds.RescaleSlope = 1
        ds.WindowCenter = 40
        ds.WindowWidth = 400
        ds.SamplesPerPixel = 1
        ds.PhotometricInterpretation = "MONOCHROME2"
        ds.Rows = rows
        ds.Columns = columns
        ds.BitsAllocated = 16
        ds.BitsStored = 12
        ds.HighBit = 11
        ds.PixelRepresentation = 0
        ds.private_block(0x0009, PRIVATE_CREATOR, create=True).add_new(0x01, "LO", "ORIGINAL")
        with lenient_values():
            for keyword, value in overrides.items():
                if keyword in ds:
                    delattr(ds, keyword)  # a new element takes the lenient validation mode
                setattr(ds, keyword, value)
        ds.PixelData = pixels(rows, columns, seed=self._seed).tobytes()
        return ds

    def series(self, count: int, *, series_number: int = 1, **kwargs: Any) -> list[FileDataset]:
        """``count`` instances of one new series of this study."""
        uid = generate_uid()
        return [
            self.instance(series_instance_uid=uid, instance_number=n, series_number=series_number, **kwargs)
            for n in range(1, count + 1)
        ]


def p10(ds: FileDataset) -> bytes:
    """A DICOM P10 file (preamble, file meta, dataset) as bytes."""
    buffer = io.BytesIO()
    with lenient_values():
        dcmwrite(buffer, ds, enforce_file_format=True)
    return buffer.getvalue()


@contextmanager
def lenient_values() -> Iterator[None]:
    """Let pydicom set and write values that break their VR (tests build such files on purpose)."""
    settings = pydicom_config.settings
    saved = settings.reading_validation_mode, settings.writing_validation_mode
    settings.reading_validation_mode = settings.writing_validation_mode = pydicom_config.IGNORE
    try:
        yield
    finally:
        settings.reading_validation_mode, settings.writing_validation_mode = saved


def p10_without_transfer_syntax(ds: FileDataset) -> bytes:
    """A P10 file whose file meta lacks (0002,0010) TransferSyntaxUID."""
    del ds.file_meta.TransferSyntaxUID
    buffer = io.BytesIO()
    dcmwrite(buffer, ds, implicit_vr=False, little_endian=True)
    return buffer.getvalue()


def p10_with_transfer_syntax(ds: FileDataset, transfer_syntax_uid: str) -> bytes:
    """A P10 file in an encapsulated transfer syntax, with a dummy fragment as its pixel data."""
    ds.file_meta.TransferSyntaxUID = transfer_syntax_uid
    ds.PixelData = encapsulate([b"\x00\x00\x01\xb3" + bytes(64)])
    ds["PixelData"].VR = "OB"
    return p10(ds)


def expected_pixels(ds: Dataset) -> np.ndarray:
    """The pixel array a dataset built by :class:`SyntheticStudy` carries."""
    return np.frombuffer(ds.PixelData, dtype="<u2").reshape(ds.Rows, ds.Columns)


def full_resolution_checksum(frame: Mapping[str, Any]) -> int:
    """``max_by(PixelDataChecksumFromBaseToFullResolution, &Width).Checksum`` (the tutorial's rule)."""
    levels = frame["PixelDataChecksumFromBaseToFullResolution"]
    return int(max(levels, key=lambda level: level["Width"])["Checksum"])


def crc32(array: np.ndarray) -> int:
    return zlib.crc32(np.ascontiguousarray(array).tobytes())


# -------------------- S3
def s3_uri(bucket: str, prefix: str) -> str:
    return f"s3://{bucket}/{prefix}"


def split_uri(uri: str) -> tuple[str, str]:
    parsed = urlparse(uri)
    return parsed.netloc, parsed.path.lstrip("/")


def upload(s3: Any, bucket: str, files: Mapping[str, bytes]) -> None:
    for key, body in files.items():
        s3.put_object(Bucket=bucket, Key=key, Body=body)


def read_json(s3: Any, uri: str) -> Any:
    bucket, key = split_uri(uri)
    return json.loads(s3.get_object(Bucket=bucket, Key=key)["Body"].read())


def read_ndjson(s3: Any, uri: str) -> list[dict[str, Any]]:
    bucket, key = split_uri(uri)
    text = s3.get_object(Bucket=bucket, Key=key)["Body"].read().decode()
    return [json.loads(line) for line in text.splitlines() if line.strip()]


@dataclass
class ImportResult:
    """What an import job left behind: its properties and its three result files."""

    job: dict[str, Any]
    manifest: dict[str, Any]
    success: list[dict[str, Any]]
    failure: list[dict[str, Any]]

    @property
    def summary(self) -> dict[str, Any]:
        summary: dict[str, Any] = self.manifest["jobSummary"]
        return summary

    @property
    def image_set_ids(self) -> list[str]:
        return [entry["imageSetId"] for entry in self.summary["imageSetsSummary"]]

    def image_set_of(self, key: str) -> str:
        """The image set the input file ``key`` went into."""
        return next(s["importResponse"]["imageSetId"] for s in self.success if s["inputFile"] == key)

    def failure_of(self, key: str) -> dict[str, Any]:
        exception: dict[str, Any] = next(f["exception"] for f in self.failure if f["inputFile"] == key)
        return exception


def read_results(s3: Any, job: Mapping[str, Any]) -> ImportResult:
    """The manifest, SUCCESS and FAILURE files of a finished job (from its returned ``outputS3Uri``)."""
    folder = job["outputS3Uri"]
    return ImportResult(
        job=dict(job),
        manifest=read_json(s3, f"{folder}job-output-manifest.json"),
        success=read_ndjson(s3, f"{folder}SUCCESS/success.ndjson"),
        failure=read_ndjson(s3, f"{folder}FAILURE/failure.ndjson"),
    )


def run_import(
    ahi: Any,
    s3: Any,
    *,
    datastore_id: str,
    bucket: str,
    files: Mapping[str, bytes],
    input_prefix: str | None = None,
    **params: Any,
) -> ImportResult:
    """Upload ``files`` (keys under ``input_prefix``), import the prefix, wait, read the results."""
    prefix = input_prefix or f"in-{secrets.token_hex(4)}/"
    params.setdefault("jobName", f"job-{prefix.strip('/')}")
    upload(s3, bucket, {prefix + key: body for key, body in files.items()})
    job_id = ahi.start_dicom_import_job(
        datastoreId=datastore_id,
        dataAccessRoleArn=ROLE_ARN,
        inputS3Uri=s3_uri(bucket, prefix),
        outputS3Uri=s3_uri(bucket, "out/"),
        **params,
    )["jobId"]
    job = wait_job(ahi, datastore_id, job_id)
    assert job["jobStatus"] == "COMPLETED", job
    return read_results(s3, job)


def import_datasets(
    ahi: Any, s3: Any, *, datastore_id: str, bucket: str, datasets: list[FileDataset]
) -> ImportResult:
    """Import synthetic datasets, one file each (``<n>.dcm``)."""
    return run_import(
        ahi,
        s3,
        datastore_id=datastore_id,
        bucket=bucket,
        files={f"{n:03d}.dcm": p10(ds) for n, ds in enumerate(datasets)},
    )


# -------------------- metadata
def metadata(ahi: Any, datastore_id: str, image_set_id: str, version_id: str | None = None) -> dict:
    """The image set's metadata document (gunzipped JSON)."""
    params = {"datastoreId": datastore_id, "imageSetId": image_set_id}
    if version_id is not None:
        params["versionId"] = version_id
    response = ahi.get_image_set_metadata(**params)
    document: dict = json.loads(gzip.decompress(response["imageSetMetadataBlob"].read()))
    return document


def instances(document: Mapping[str, Any]) -> Iterator[tuple[str, str, dict[str, Any]]]:
    """``(series uid, SOP instance uid, instance)`` for every instance of a document."""
    for series_uid, series in document["Study"]["Series"].items():
        for sop_uid, instance in series["Instances"].items():
            yield series_uid, sop_uid, instance


def frames(document: Mapping[str, Any]) -> Iterator[tuple[str, dict[str, Any]]]:
    """``(SOP instance uid, ImageFrames entry)`` for every frame of a document."""
    for _, sop_uid, instance in instances(document):
        for frame in instance.get("ImageFrames") or []:
            yield sop_uid, frame


def updates(updatable: Mapping[str, Any] | None = None, removable: Mapping[str, Any] | None = None) -> dict:
    """``updateImageSetMetadataUpdates`` with the given payloads (``SchemaVersion`` 1.1 added)."""
    dicom: dict[str, bytes] = {}
    if updatable is not None:
        dicom["updatableAttributes"] = json.dumps({"SchemaVersion": 1.1, **updatable}).encode()
    if removable is not None:
        dicom["removableAttributes"] = json.dumps({"SchemaVersion": 1.1, **removable}).encode()
    return {"DICOMUpdates": dicom}


# -------------------- events
class EventSink:
    """An SQS queue behind an EventBridge rule matching ``source: aws.medical-imaging`` (on moto)."""

    def __init__(self, moto_url: str) -> None:
        self.name = unique_name("ahi-events")
        self.events = boto3.client("events", region_name=REGION, endpoint_url=moto_url)
        self.sqs = boto3.client("sqs", region_name=REGION, endpoint_url=moto_url)
        self.queue_url = self.sqs.create_queue(QueueName=self.name)["QueueUrl"]
        queue_arn = self.sqs.get_queue_attributes(QueueUrl=self.queue_url, AttributeNames=["QueueArn"])[
            "Attributes"
        ]["QueueArn"]
        self.events.put_rule(
            Name=self.name, EventPattern=json.dumps({"source": ["aws.medical-imaging"]}), State="ENABLED"
        )
        self.events.put_targets(Rule=self.name, Targets=[{"Id": "queue", "Arn": queue_arn}])
        self.received: list[dict[str, Any]] = []

    def collect(
        self, wanted: Callable[[list[dict[str, Any]]], bool], *, what: str, timeout: float = 20.0
    ) -> list[dict[str, Any]]:
        """Receive events until ``wanted(every event so far)``; return them all."""

        def receive() -> list[dict[str, Any]]:
            messages = self.sqs.receive_message(
                QueueUrl=self.queue_url, MaxNumberOfMessages=10, WaitTimeSeconds=0
            ).get("Messages", [])
            for message in messages:
                self.received.append(json.loads(message["Body"]))
                self.sqs.delete_message(QueueUrl=self.queue_url, ReceiptHandle=message["ReceiptHandle"])
            return self.received

        return wait_until(receive, wanted, what=what, timeout=timeout, interval=0.1)

    def close(self) -> None:
        self.events.remove_targets(Rule=self.name, Ids=["queue"])
        self.events.delete_rule(Name=self.name)
        self.sqs.delete_queue(QueueUrl=self.queue_url)


def http_status(response: Mapping[str, Any]) -> int:
    return int(response["ResponseMetadata"]["HTTPStatusCode"])


def client_error_code(call: Callable[[], Any]) -> str | None:
    """The error code ``call`` fails with, or None when it succeeds."""
    try:
        call()
    except ClientError as error:
        return str(error.response["Error"]["Code"])
    return None

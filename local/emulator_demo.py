"""``make demo-emulator``: the emulator on its own, end to end, offline, on DICOM bundled with pydicom.

Starts S3 (moto) and the HealthImaging emulator on loopback, uploads sample DICOM (plus one file that is
not DICOM, to show failure reporting), creates a data store, imports, searches, reads metadata, fetches
and decodes frames, checks them against the source pixels and the service's CRC32 checksums, and prints
what happened.  ``make demo`` (:mod:`local.demo`) runs the whole pipeline instead.

Only non-identifying facts are printed (ids, modality, counts, sizes): never names, IDs or dates.
"""

from __future__ import annotations

import argparse
import gzip
import json
import logging
import os
import tempfile
import time
import zlib
from collections.abc import Callable
from pathlib import Path
from typing import Any

import boto3
import imagecodecs
import numpy as np
import pydicom
from botocore.config import Config
from moto.server import ThreadedMotoServer

from emulator.config import EmulatorConfig
from emulator.server import Emulator
from local.samples import sample_paths

#: What the service stores frames as unless an instance's StoredTransferSyntaxUID says otherwise.
HTJ2K_LOSSLESS_RPCL = "1.2.840.10008.1.2.4.202"
#: File suffixes of the frames the service keeps as uploaded, by GetImageFrame's content type.
SUFFIXES = {"image/jpeg": ".jpg", "image/j2c": ".j2c", "image/jphc": ".jhc"}

__all__ = ["main", "run", "sample_paths"]

ROLE_ARN = "arn:aws:iam::123456789012:role/ImportJobDataAccessRole"
REGION = "us-east-1"


def step(title: str) -> Callable[[str], None]:
    print(f"\n== {title}")
    return lambda line: print(f"   {line}")


def wait_for(check: Callable[[], bool], what: str, timeout: float = 300.0) -> None:
    deadline = time.monotonic() + timeout
    while not check():
        if time.monotonic() > deadline:
            raise TimeoutError(f"timed out waiting for {what}")
        time.sleep(0.1)


def run(output_dir: Path) -> int:
    logging.getLogger("werkzeug").setLevel(logging.ERROR)  # moto's per-request access log
    os.environ.setdefault("AWS_ACCESS_KEY_ID", "testing")
    os.environ.setdefault("AWS_SECRET_ACCESS_KEY", "testing")
    moto = ThreadedMotoServer(ip_address="127.0.0.1", port=0, verbose=False)
    moto.start()
    host, port = moto.get_host_and_port()
    moto_url = f"http://{host}:{port}"
    data_dir = Path(tempfile.mkdtemp(prefix="ahi-demo-"))
    config = EmulatorConfig(
        data_dir=data_dir, s3_endpoint_url=moto_url, events=True, events_endpoint_url=moto_url
    )
    try:
        with Emulator(config) as emulator:
            return scenario(emulator, moto_url, output_dir)
    finally:
        moto.stop()


def scenario(emulator: Emulator, moto_url: str, output_dir: Path) -> int:  # noqa: PLR0915 - a linear script
    endpoint = emulator.endpoint_url
    say = step("Local stack")
    ahi: Any = boto3.client(
        "medical-imaging", region_name=REGION, endpoint_url=endpoint, config=Config(inject_host_prefix=False)
    )
    s3: Any = boto3.client("s3", region_name=REGION, endpoint_url=moto_url)
    say(f"S3 (moto) on {moto_url}, HealthImaging emulator on {endpoint}")
    sqs: Any = boto3.client("sqs", region_name=REGION, endpoint_url=moto_url)
    events: Any = boto3.client("events", region_name=REGION, endpoint_url=moto_url)
    queue_url = sqs.create_queue(QueueName="service-events")["QueueUrl"]
    queue_arn = sqs.get_queue_attributes(QueueUrl=queue_url, AttributeNames=["QueueArn"])["Attributes"][
        "QueueArn"
    ]
    events.put_rule(Name="healthimaging-events", EventPattern=json.dumps({"source": ["aws.medical-imaging"]}))
    events.put_targets(Rule="healthimaging-events", Targets=[{"Id": "queue", "Arn": queue_arn}])
    say("EventBridge rule: source aws.medical-imaging → SQS queue service-events")

    say = step("Upload sample DICOM to s3://demo-input/study/ (nested folders)")
    s3.create_bucket(Bucket="demo-input")
    s3.create_bucket(Bucket="demo-output")
    samples = sample_paths()
    for index, (name, path) in enumerate(samples):
        key = f"study/series-{index % 2}/{name}"
        s3.upload_file(str(path), "demo-input", key)
        say(f"{key}  ({path.stat().st_size:,} bytes)")
    s3.put_object(Bucket="demo-input", Key="study/notes/readme.txt", Body=b"not a DICOM file")
    say("study/notes/readme.txt  (not DICOM: must be reported, not lost)")

    say = step("Create a data store")
    datastore_id = ahi.create_datastore(datastoreName="demo", tags={"project": "demo"})["datastoreId"]
    wait_for(
        lambda: (
            ahi.get_datastore(datastoreId=datastore_id)["datastoreProperties"]["datastoreStatus"] == "ACTIVE"
        ),
        "the data store",
    )
    say(f"{datastore_id}: ACTIVE")

    say = step("Import (StartDICOMImportJob on the prefix)")
    started = time.monotonic()
    job = ahi.start_dicom_import_job(
        jobName="demo-import",
        datastoreId=datastore_id,
        dataAccessRoleArn=ROLE_ARN,
        inputS3Uri="s3://demo-input/study/",
        outputS3Uri="s3://demo-output/import-results/",
        clientToken="demo-batch-1",
    )
    say(f"job {job['jobId']}: {job['jobStatus']}")

    def job_done() -> bool:
        status = ahi.get_dicom_import_job(datastoreId=datastore_id, jobId=job["jobId"])["jobProperties"][
            "jobStatus"
        ]
        return bool(status in ("COMPLETED", "FAILED"))

    wait_for(job_done, "the import job")
    properties = ahi.get_dicom_import_job(datastoreId=datastore_id, jobId=job["jobId"])["jobProperties"]
    say(
        f"job {properties['jobStatus']} in {time.monotonic() - started:.1f} s; "
        f"results in {properties['outputS3Uri']}"
    )
    bucket, _, folder = properties["outputS3Uri"].removeprefix("s3://").partition("/")
    manifest = json.loads(
        s3.get_object(Bucket=bucket, Key=f"{folder}job-output-manifest.json")["Body"].read()
    )
    summary = manifest["jobSummary"]
    say(
        f"scanned {summary['numberOfScannedFiles']}, imported {summary['numberOfImportedFiles']}, "
        f"customer errors {summary['numberOfFilesWithCustomerError']}, "
        f"server errors {summary['numberOfFilesWithServerError']}, "
        f"image sets {summary['numberOfGeneratedImageSets']}"
    )
    failures = s3.get_object(Bucket=bucket, Key=f"{folder}FAILURE/failure.ndjson")["Body"].read().decode()
    for line in failures.splitlines():
        record = json.loads(line)
        say(
            f"FAILED {record['inputFile']}: "
            f"{record['exception']['exceptionType']}: {record['exception']['message']}"
        )

    say = step("Search the data store (SearchImageSets, newest first)")
    found = ahi.search_image_sets(datastoreId=datastore_id, searchCriteria={"sort": _sort()})[
        "imageSetsMetadataSummaries"
    ]
    for item in found:
        tags = item.get("DICOMTags", {})
        say(
            f"{item['imageSetId']}  v{item['version']}  {tags.get('DICOMSeriesModality') or '?':<3} "
            f"instances: {tags.get('DICOMNumberOfStudyRelatedInstances')}"
        )

    say = step("Read metadata and fetch every frame; decode and verify")
    sources = {name: path for name, path in sample_paths()}
    checked = frames_total = kept = 0
    output_dir.mkdir(parents=True, exist_ok=True)
    for item in found:
        image_set_id = item["imageSetId"]
        blob = ahi.get_image_set_metadata(datastoreId=datastore_id, imageSetId=image_set_id)
        document = json.loads(gzip.decompress(blob["imageSetMetadataBlob"].read()))
        series = next(iter(document["Study"]["Series"].values()))
        for sop_uid, instance in series["Instances"].items():
            frames = instance.get("ImageFrames") or []
            source = _source_pixels(sources, sop_uid)
            stored = instance.get("StoredTransferSyntaxUID") or HTJ2K_LOSSLESS_RPCL
            for index, frame in enumerate(frames):
                body = ahi.get_image_frame(
                    datastoreId=datastore_id,
                    imageSetId=image_set_id,
                    imageFrameInformation={"imageFrameId": frame["ID"]},
                )
                encoded = body["imageFrameBlob"].read()
                if stored != HTJ2K_LOSSLESS_RPCL:
                    # Kept as uploaded (lossy JPEG, JPEG 2000, HTJ2K): no transcoding, no checksums.
                    kept += 1
                    if index == 0:
                        say(
                            f"{image_set_id} frame {frame['ID'][:8]}…: {body['contentType']}, "
                            f"{len(encoded):,} bytes, kept as uploaded ({stored})"
                        )
                        suffix = SUFFIXES.get(str(body["contentType"]), ".bin")
                        (output_dir / f"{image_set_id}-{frame['ID']}{suffix}").write_bytes(encoded)
                    continue
                pixels = imagecodecs.htj2k_decode(encoded)
                full = max(
                    frame["PixelDataChecksumFromBaseToFullResolution"], key=lambda level: level["Width"]
                )
                crc_ok = zlib.crc32(np.ascontiguousarray(pixels).tobytes()) == full["Checksum"]
                same = source is not None and np.array_equal(_frame(source, index, len(frames)), pixels)
                frames_total += 1
                checked += int(crc_ok and same)
                if index == 0:
                    levels = " → ".join(
                        f"{lvl['Width']}×{lvl['Height']}"
                        for lvl in frame["PixelDataChecksumFromBaseToFullResolution"]
                    )
                    say(
                        f"{image_set_id} frame {frame['ID'][:8]}…: {body['contentType']}, "
                        f"{len(encoded):,} bytes (raw {frame['FrameSizeInBytes']:,}), levels {levels}; "
                        f"CRC32 {'ok' if crc_ok else 'MISMATCH'}, "
                        f"pixels {'identical to source' if same else 'DIFFER'}"
                    )
                    small = imagecodecs.htj2k_decode(encoded, skipres=len(levels.split(" → ")) - 1)
                    (output_dir / f"{image_set_id}-{frame['ID']}.jph").write_bytes(encoded)
                    say(f"  lowest resolution level decodes to {small.shape[1]}×{small.shape[0]}")

    say = step("Service events received on EventBridge")
    emulator.wait_idle()
    received: dict[str, int] = {}
    while messages := sqs.receive_message(QueueUrl=queue_url, MaxNumberOfMessages=10).get("Messages", []):
        for message in messages:
            detail_type = json.loads(message["Body"])["detail-type"]
            received[detail_type] = received.get(detail_type, 0) + 1
            sqs.delete_message(QueueUrl=queue_url, ReceiptHandle=message["ReceiptHandle"])
    for detail_type, count in received.items():
        say(f"{count:3d} × {detail_type}")

    say = step("Summary")
    say(
        f"{summary['numberOfImportedFiles']} of {summary['numberOfScannedFiles']} files imported into "
        f"{len(found)} image sets; {len(failures.splitlines())} file(s) reported with a reason"
    )
    say(
        f"{checked} of {frames_total} HTJ2K frames decoded bit-identical to the source and matched their "
        f"CRC32; {kept} frame(s) kept as uploaded"
    )
    say(f"HTJ2K frames written to {output_dir}/")
    return 0 if checked == frames_total and summary["numberOfImportedFiles"] == len(samples) else 1


def _sort() -> dict[str, str]:
    return {"sortField": "updatedAt", "sortOrder": "DESC"}


def _source_pixels(sources: dict[str, Path], sop_uid: str) -> np.ndarray | None:
    for path in sources.values():
        dataset = pydicom.dcmread(path)
        if str(dataset.SOPInstanceUID) == sop_uid:
            return np.asarray(dataset.pixel_array)
    return None


def _frame(pixels: np.ndarray, index: int, count: int) -> np.ndarray:
    return pixels[index] if count > 1 else pixels


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0] if __doc__ else None)
    parser.add_argument("--output", type=Path, default=Path("demo-output"))
    args = parser.parse_args()
    return run(args.output)


if __name__ == "__main__":
    raise SystemExit(main())

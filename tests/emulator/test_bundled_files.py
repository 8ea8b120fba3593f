"""Import every DICOM file bundled with pydicom and pydicom-data through boto3, and check every frame.

One import job takes all the files.  For each imported instance, every frame fetched with GetImageFrame
is decoded with imagecodecs (OpenJPH) and with pylibjpeg-openjpeg, and both must equal pydicom's
``pixel_array`` for that frame exactly; its CRC32 must match the metadata checksum at every resolution
level (decoded with ``skipres``).  The JPEG Baseline and JPEG 2000 files are the exception: the service
keeps their frames as they are (``StoredTransferSyntaxUID`` is the file's syntax), so GetImageFrame must
return the file's own encapsulated frames, without checksums.  Files that must fail are in
FAILURE/failure.ndjson with the reason.
"""

from __future__ import annotations

import gzip
import json
import time
import warnings
import zlib
from pathlib import Path
from typing import Any

import imagecodecs
import numpy as np
import openjpeg
import pydicom
import pytest
from pydicom.data import get_testdata_files
from pydicom.encaps import generate_frames

from tests.conftest import ROLE_ARN

pytestmark = [pytest.mark.emulator, pytest.mark.slow]

HTJ2K_LOSSLESS_RPCL = "1.2.840.10008.1.2.4.202"
KEPT_AS_IS = {
    "1.2.840.10008.1.2.4.50": "image/jpeg",
    "1.2.840.10008.1.2.4.91": "image/j2c",
    "1.2.840.10008.1.2.4.203": "image/jphc",
}
"""Syntaxes stored in their original encoding (Developer Guide, "Supported transfer syntaxes")."""

# Files that cannot be imported, with the words their FAILURE reason must contain.
_NOT_P10 = ("ValidationException", "not a DICOM Part 10 file")
_NO_STUDY = ("ValidationException", "StudyInstanceUID does not exist")
_BINARY_SEG = ("ValidationException", "Binary segmentation pixel data")
_UNDECODABLE = ("ValidationException", "could not be decoded")
EXPECTED_FAILURES: dict[str, tuple[str, str]] = {
    # Not P10 at all, or P10 without the 128-byte preamble and "DICM" prefix
    "OT-PAL-8-face.dcm": _NOT_P10,
    "ExplVR_BigEndNoMeta.dcm": _NOT_P10,
    "ExplVR_LitEndNoMeta.dcm": _NOT_P10,
    "no_meta.dcm": _NOT_P10,
    "rtstruct.dcm": _NOT_P10,
    "crayons.icc": _NOT_P10,
    "rtplan.dump": _NOT_P10,
    "rtstruct.dump": _NOT_P10,
    # File meta without (0002,0010) TransferSyntaxUID: the service's own example message
    "meta_missing_tsyntax.dcm": ("ValidationException", "DICOM attribute TransferSyntaxUID does not exist"),
    # Test fragments that are not whole instances (no study)
    "JPEGLSNearLossless_08.dcm": _NO_STUDY,
    "JPEGLSNearLossless_16.dcm": _NO_STUDY,
    "SC_rgb_jls_lossy_line.dcm": _NO_STUDY,
    "SC_rgb_jls_lossy_sample.dcm": _NO_STUDY,
    "UN_sequence.dcm": _NO_STUDY,
    "empty_charset_LEI.dcm": _NO_STUDY,
    "nested_priv_SQ.dcm": _NO_STUDY,
    "no_meta_group_length.dcm": _NO_STUDY,
    "priv_SQ.dcm": _NO_STUDY,
    # Broken element constraints
    "bad_sequence.dcm": ("ValidationException", "StudyInstanceUID (0020,000D) is not a valid UID"),
    "badVR.dcm": ("ValidationException", "NumberOfFrames (0028,0008) does not hold a valid integer"),
    # Binary segmentations are not supported by the service (platform spec §6.1)
    "liver.dcm": _BINARY_SEG,
    "liver_expb.dcm": _BINARY_SEG,
    "liver_1frame.dcm": _BINARY_SEG,
    "liver_expb_1frame.dcm": _BINARY_SEG,
    # Pixel data that pydicom and its pylibjpeg plugins cannot decode (truncated or malformed streams)
    "JPEG-lossy.dcm": _UNDECODABLE,
    "JPEG2000-embedded-sequence-delimiter.dcm": _UNDECODABLE,
    "MR_truncated.dcm": _UNDECODABLE,
    "emri_small_jpeg_2k_lossless_too_short.dcm": ("ValidationException", "could not be parsed"),
}


def bundled_files() -> list[Path]:
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        paths = {Path(p).resolve() for p in get_testdata_files("*")}
    return sorted(
        p for p in paths if p.is_file() and p.suffix.lower() not in {".py", ".json", ".txt", ".gz", ".bz2"}
    )


def _key(path: Path) -> str:
    return f"bundled/{path.parent.name}/{path.name}"


@pytest.fixture(scope="module")
def imported(emulator: Any, moto_url: str) -> dict[str, Any]:
    """Upload every bundled file, import them in one job, and return what the job produced."""
    import boto3  # noqa: PLC0415

    from tests.conftest import REGION, client_config  # noqa: PLC0415

    s3 = boto3.client("s3", region_name=REGION, endpoint_url=moto_url)
    ahi = boto3.client(
        "medical-imaging", region_name=REGION, endpoint_url=emulator.endpoint_url, config=client_config()
    )
    s3.create_bucket(Bucket="bundled-files")
    paths = bundled_files()
    for path in paths:
        s3.upload_file(str(path), "bundled-files", _key(path))
    datastore_id = ahi.create_datastore(datastoreName="bundled")["datastoreId"]
    deadline = time.monotonic() + 30
    while ahi.get_datastore(datastoreId=datastore_id)["datastoreProperties"]["datastoreStatus"] != "ACTIVE":
        assert time.monotonic() < deadline
        time.sleep(0.05)
    job_id = ahi.start_dicom_import_job(
        datastoreId=datastore_id,
        dataAccessRoleArn=ROLE_ARN,
        inputS3Uri="s3://bundled-files/bundled/",
        outputS3Uri="s3://bundled-files/results/",
    )["jobId"]
    deadline = time.monotonic() + 600
    while True:
        job = ahi.get_dicom_import_job(datastoreId=datastore_id, jobId=job_id)["jobProperties"]
        if job["jobStatus"] in ("COMPLETED", "FAILED"):
            break
        assert time.monotonic() < deadline, "import of the bundled files timed out"
        time.sleep(0.2)
    assert job["jobStatus"] == "COMPLETED", job.get("message")
    folder = job["outputS3Uri"].removeprefix("s3://bundled-files/")

    def lines(key: str) -> list[dict[str, Any]]:
        body = s3.get_object(Bucket="bundled-files", Key=folder + key)["Body"].read().decode()
        return [json.loads(line) for line in body.splitlines() if line]

    manifest = json.loads(
        s3.get_object(Bucket="bundled-files", Key=folder + "job-output-manifest.json")["Body"].read()
    )
    return {
        "ahi": ahi,
        "datastore_id": datastore_id,
        "paths": {_key(p): p for p in paths},
        "manifest": manifest["jobSummary"],
        "success": lines("SUCCESS/success.ndjson"),
        "failure": lines("FAILURE/failure.ndjson"),
    }


def test_every_file_is_accounted_for(imported: dict[str, Any]) -> None:
    # Given the job over every bundled file
    summary = imported["manifest"]
    # Then every file is either imported or reported, and the manifest adds up
    reported = {line["inputFile"] for line in imported["success"]} | {
        line["inputFile"] for line in imported["failure"]
    }
    assert reported == set(imported["paths"])
    assert summary["numberOfScannedFiles"] == len(imported["paths"])
    assert summary["numberOfScannedFiles"] == (
        summary["numberOfImportedFiles"]
        + summary["numberOfFilesWithCustomerError"]
        + summary["numberOfFilesWithServerError"]
    )
    assert summary["numberOfFilesWithServerError"] == 0, imported["failure"]
    assert sum(s["numberOfMatchedSOPInstances"] for s in summary["imageSetsSummary"]) == len(
        imported["success"]
    )


def test_failures_are_the_expected_files_with_their_reasons(imported: dict[str, Any]) -> None:
    # Given the FAILURE lines
    failures = {Path(line["inputFile"]).name: line["exception"] for line in imported["failure"]}
    # Then exactly the files that cannot be imported failed, each with a precise reason
    assert set(failures) == set(EXPECTED_FAILURES), failures
    for name, (exception_type, words) in EXPECTED_FAILURES.items():
        assert failures[name]["exceptionType"] == exception_type
        assert words.lower() in failures[name]["message"].lower(), (name, failures[name]["message"])


def _instances(document: dict[str, Any]) -> dict[str, dict[str, Any]]:
    found: dict[str, dict[str, Any]] = {}
    for series in document["Study"]["Series"].values():
        found.update(series["Instances"])
    return found


def _source_frames(path: Path) -> list[np.ndarray]:
    dataset = pydicom.dcmread(path)
    pixels = np.asarray(dataset.pixel_array)
    frames = int(getattr(dataset, "NumberOfFrames", 1) or 1)
    return [pixels[i] for i in range(frames)] if frames > 1 else [pixels]


def _reduced(encoded: bytes, skip: int) -> np.ndarray:
    """The frame decoded ``skip`` resolution levels down, clipped to the sample range as OpenJPEG does.

    OpenJPH (``htj2k_decode``) wraps the few reduced-resolution samples that overshoot the range instead
    of clipping them; the service's checksums follow the clipping decoders.  OpenJPEG (imagecodecs'
    ``jpeg2k_decode``) cannot decode 32-bit samples; for those only full resolution is checked here (the
    unit tests check their lower levels against a reference wavelet transform).
    """
    return np.asarray(imagecodecs.jpeg2k_decode(encoded, skipres=skip))


def _check_kept_as_is(ahi: Any, datastore_id: str, image_set_id: str, path: Path, instance: dict) -> None:
    """Every frame of a file the service keeps as is: the file's own bytes, its syntax's content type."""
    dataset = pydicom.dcmread(path)
    sources = _source_frames(path)
    originals = list(generate_frames(dataset.PixelData, number_of_frames=len(sources)))
    content_type = KEPT_AS_IS[str(dataset.file_meta.TransferSyntaxUID)]
    assert instance["StoredTransferSyntaxUID"] == str(dataset.file_meta.TransferSyntaxUID), path.name
    assert len(instance["ImageFrames"]) == len(originals), path.name
    for frame, original, source in zip(instance["ImageFrames"], originals, sources, strict=True):
        response = ahi.get_image_frame(
            datastoreId=datastore_id,
            imageSetId=image_set_id,
            imageFrameInformation={"imageFrameId": frame["ID"]},
        )
        assert response["contentType"] == content_type, path.name
        assert response["imageFrameBlob"].read() == original, path.name
        assert "PixelDataChecksumFromBaseToFullResolution" not in frame
        assert (frame["MinPixelValue"], frame["MaxPixelValue"]) == (int(source.min()), int(source.max()))


def test_every_frame_is_lossless_and_matches_its_checksums(imported: dict[str, Any]) -> None:
    ahi, datastore_id = imported["ahi"], imported["datastore_id"]
    documents: dict[str, dict[str, Any]] = {}
    checked = kept = 0
    for line in imported["success"]:
        # Given an imported file and its image set's metadata
        image_set_id = line["importResponse"]["imageSetId"]
        if image_set_id not in documents:
            blob = ahi.get_image_set_metadata(datastoreId=datastore_id, imageSetId=image_set_id)
            documents[image_set_id] = json.loads(gzip.decompress(blob["imageSetMetadataBlob"].read()))
        path = imported["paths"][line["inputFile"]]
        sop_uid = str(pydicom.dcmread(path, stop_before_pixels=True).SOPInstanceUID)
        instance = _instances(documents[image_set_id])[sop_uid]
        frames = instance.get("ImageFrames") or []
        if "PixelData" not in pydicom.dcmread(path, stop_before_pixels=False, specific_tags=["PixelData"]):
            assert frames == []
            continue
        if pydicom.dcmread(path, stop_before_pixels=True).file_meta.TransferSyntaxUID in KEPT_AS_IS:
            _check_kept_as_is(ahi, datastore_id, image_set_id, path, instance)
            kept += 1
            continue
        assert instance["StoredTransferSyntaxUID"] == HTJ2K_LOSSLESS_RPCL, path.name
        sources = _source_frames(path)
        assert len(frames) == len(sources), path.name
        for frame, source in zip(frames, sources, strict=True):
            # When the frame is fetched and decoded by two independent decoders
            encoded = ahi.get_image_frame(
                datastoreId=datastore_id,
                imageSetId=image_set_id,
                imageFrameInformation={"imageFrameId": frame["ID"]},
            )["imageFrameBlob"].read()
            by_openjph = imagecodecs.htj2k_decode(encoded)
            # Then both give pydicom's pixel_array exactly (OpenJPEG 2.5 refuses 32-bit components)
            assert np.array_equal(by_openjph, source), path.name
            if source.dtype.itemsize == 4:
                with pytest.raises(RuntimeError):
                    openjpeg.decode(encoded)
            else:
                assert np.array_equal(openjpeg.decode(encoded), source), path.name
            # And every resolution level's CRC32 matches the metadata, from base to full resolution
            levels = frame["PixelDataChecksumFromBaseToFullResolution"]
            assert zlib.crc32(np.ascontiguousarray(by_openjph).tobytes()) == levels[-1]["Checksum"], path.name
            if source.dtype.itemsize == 4:
                levels = []
            for skip, level in enumerate(reversed(levels)):
                reduced = np.ascontiguousarray(_reduced(encoded, skip))
                assert (reduced.shape[1], reduced.shape[0]) == (level["Width"], level["Height"]), path.name
                assert zlib.crc32(reduced.tobytes()) == level["Checksum"], (path.name, skip)
            assert frame["FrameSizeInBytes"] == by_openjph.nbytes
            assert frame["MinPixelValue"] == int(source.min())
            assert frame["MaxPixelValue"] == int(source.max())
            checked += 1
    assert checked > 100
    assert kept >= 20

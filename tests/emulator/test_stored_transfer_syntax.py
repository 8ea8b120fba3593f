"""Frames the service keeps in their original encoding, through boto3 (Developer Guide, "Supported
transfer syntaxes"): JPEG Baseline (1.2.840.10008.1.2.4.50), JPEG 2000 (.4.91) and HTJ2K (.4.203) files keep
their encoded frames, recorded as the instance's ``StoredTransferSyntaxUID`` and served by GetImageFrame
with their own content type; every other file is transcoded to HTJ2K lossless RPCL (.4.202).
"""

from __future__ import annotations

import io
from collections.abc import Callable
from pathlib import Path
from typing import Any

import imagecodecs
import numpy as np
import openjpeg
import pydicom
import pytest
from pydicom.data import get_testdata_file
from pydicom.encaps import encapsulate, generate_frames

from emulator.server import Emulator
from tests.emulator import helpers

pytestmark = pytest.mark.emulator

HTJ2K_LOSSLESS_RPCL = "1.2.840.10008.1.2.4.202"
JPEG_BASELINE = "1.2.840.10008.1.2.4.50"
JPEG_2000 = "1.2.840.10008.1.2.4.91"
HTJ2K = "1.2.840.10008.1.2.4.203"
CHECKSUMS = "PixelDataChecksumFromBaseToFullResolution"


def bundled(name: str) -> bytes:
    path = get_testdata_file(name)
    assert isinstance(path, str), name
    return Path(path).read_bytes()


def encoded_frames(data: bytes) -> list[bytes]:
    """The file's own encoded frames (its encapsulated Pixel Data, frame by frame)."""
    ds = pydicom.dcmread(io.BytesIO(data))
    count = int(getattr(ds, "NumberOfFrames", 1) or 1)
    return list(generate_frames(ds.PixelData, number_of_frames=count))


def pydicom_frames(data: bytes) -> list[np.ndarray]:
    """The frames as pydicom decodes them."""
    ds = pydicom.dcmread(io.BytesIO(data))
    pixels = np.asarray(ds.pixel_array)
    return list(pixels) if int(getattr(ds, "NumberOfFrames", 1) or 1) > 1 else [pixels]


def import_file(ahi: Any, s3: Any, bucket: str, datastore_id: str, data: bytes) -> tuple[str, dict[str, Any]]:
    """Import one P10 file; return its image set ID and its instance's metadata."""
    results = helpers.run_import(ahi, s3, datastore_id=datastore_id, bucket=bucket, files={"file.dcm": data})
    assert results.failure == []
    [image_set_id] = results.image_set_ids
    [(_, _, instance)] = helpers.instances(helpers.metadata(ahi, datastore_id, image_set_id))
    return image_set_id, instance


def get_frame(ahi: Any, datastore_id: str, image_set_id: str, frame_id: str) -> tuple[str, bytes]:
    response = ahi.get_image_frame(
        datastoreId=datastore_id, imageSetId=image_set_id, imageFrameInformation={"imageFrameId": frame_id}
    )
    return response["contentType"], response["imageFrameBlob"].read()


def htj2k_lossy_file() -> tuple[bytes, bytes]:
    """A synthetic CT instance in HTJ2K (1.2.840.10008.1.2.4.203), lossy; and its one codestream."""
    [ds] = helpers.SyntheticStudy().series(1, rows=96, columns=80)
    codestream = bytes(
        imagecodecs.htj2k_encode(helpers.expected_pixels(ds), level=2.0, reversible=False, bitspersample=12)
    )
    ds.file_meta.TransferSyntaxUID = HTJ2K
    ds.PixelData = encapsulate([codestream])
    ds["PixelData"].VR = "OB"
    ds.LossyImageCompression = "01"
    return helpers.p10(ds), codestream


def test_a_jpeg_baseline_frame_is_stored_and_served_as_is(
    ahi: Any, s3: Any, bucket: str, datastore: str
) -> None:
    # Given a JPEG Baseline file (YBR_FULL, one frame)
    data = bundled("SC_rgb_jpeg_dcmtk.dcm")
    [expected] = pydicom_frames(data)

    # When it is imported and its frame fetched
    image_set_id, instance = import_file(ahi, s3, bucket, datastore, data)
    [frame] = instance["ImageFrames"]
    content_type, body = get_frame(ahi, datastore, image_set_id, frame["ID"])

    # Then the metadata records the original syntax, and the frame is the file's own JPEG
    assert instance["StoredTransferSyntaxUID"] == JPEG_BASELINE
    assert instance["DICOM"]["TransferSyntaxUID"] == JPEG_BASELINE
    assert content_type == "image/jpeg"
    assert body[:2] == b"\xff\xd8"
    assert [body] == encoded_frames(data)
    assert np.array_equal(imagecodecs.jpeg8_decode(body), expected)

    # Then no resolution checksums (nothing was transcoded), but the samples' range and decoded size
    assert CHECKSUMS not in frame
    assert (frame["MinPixelValue"], frame["MaxPixelValue"]) == (int(expected.min()), int(expected.max()))
    assert frame["FrameSizeInBytes"] == expected.nbytes


def test_every_frame_of_a_multi_frame_jpeg_is_its_own_fragment(
    ahi: Any, s3: Any, bucket: str, datastore: str
) -> None:
    # Given a 30-frame JPEG Baseline file (YBR_FULL_422)
    data = bundled("examples_ybr_color.dcm")
    originals = encoded_frames(data)
    assert len(originals) == 30

    # When it is imported
    image_set_id, instance = import_file(ahi, s3, bucket, datastore, data)

    # Then each frame, in order, is the file's frame byte for byte, served as image/jpeg
    assert instance["StoredTransferSyntaxUID"] == JPEG_BASELINE
    assert len(instance["ImageFrames"]) == len(originals)
    for frame, original in zip(instance["ImageFrames"], originals, strict=True):
        assert get_frame(ahi, datastore, image_set_id, frame["ID"]) == ("image/jpeg", original)
        assert CHECKSUMS not in frame


def test_a_jpeg_2000_frame_is_stored_as_is(ahi: Any, s3: Any, bucket: str, datastore: str) -> None:
    # Given a JPEG 2000 file (1.2.840.10008.1.2.4.91, 16-bit MR)
    data = bundled("MR2_J2KI.dcm")
    [expected] = pydicom_frames(data)

    # When it is imported and its frame fetched
    image_set_id, instance = import_file(ahi, s3, bucket, datastore, data)
    [frame] = instance["ImageFrames"]
    content_type, body = get_frame(ahi, datastore, image_set_id, frame["ID"])

    # Then it is the file's own JPEG 2000 codestream, served as image/j2c
    assert instance["StoredTransferSyntaxUID"] == JPEG_2000
    assert content_type == "image/j2c"
    assert body[:4] == b"\xff\x4f\xff\x51"
    assert [body] == encoded_frames(data)
    assert np.array_equal(imagecodecs.jpeg2k_decode(body), expected)
    assert CHECKSUMS not in frame


def test_an_htj2k_lossy_frame_is_stored_as_is(ahi: Any, s3: Any, bucket: str, datastore: str) -> None:
    # Given a lossy HTJ2K file (1.2.840.10008.1.2.4.203)
    data, codestream = htj2k_lossy_file()
    [expected] = pydicom_frames(data)

    # When it is imported and its frame fetched
    image_set_id, instance = import_file(ahi, s3, bucket, datastore, data)
    [frame] = instance["ImageFrames"]
    content_type, body = get_frame(ahi, datastore, image_set_id, frame["ID"])

    # Then it is the file's fragment (the codestream, padded to an even length), served as image/jphc
    assert instance["StoredTransferSyntaxUID"] == HTJ2K
    assert content_type == "image/jphc"
    assert [body] == encoded_frames(data)
    assert body == codestream + b"\0" * (len(codestream) % 2)
    assert np.array_equal(openjpeg.decode(body), expected)
    assert CHECKSUMS not in frame
    assert (frame["MinPixelValue"], frame["MaxPixelValue"]) == (int(expected.min()), int(expected.max()))


@pytest.mark.parametrize(
    "name",
    ["CT_small.dcm", "JPGExtended.dcm", "MR_small_jp2klossless.dcm"],
    ids=["explicit-vr-little-endian", "jpeg-12-bit-4.51", "jpeg-2000-lossless-4.90"],
)
def test_other_syntaxes_are_transcoded_to_htj2k_lossless(
    name: str, ahi: Any, s3: Any, bucket: str, datastore: str
) -> None:
    # Given a file in a syntax the service transcodes (not starred on the page)
    data = bundled(name)
    [expected] = pydicom_frames(data)

    # When it is imported and its frame fetched
    image_set_id, instance = import_file(ahi, s3, bucket, datastore, data)
    [frame] = instance["ImageFrames"]
    content_type, body = get_frame(ahi, datastore, image_set_id, frame["ID"])

    # Then the frame is lossless HTJ2K RPCL, with its resolution checksums
    assert instance["StoredTransferSyntaxUID"] == HTJ2K_LOSSLESS_RPCL
    assert content_type == "image/jph"
    assert body[:4] == b"\xff\x4f\xff\x51"
    decoded = imagecodecs.htj2k_decode(body)
    assert np.array_equal(decoded, expected)
    assert helpers.full_resolution_checksum(frame) == helpers.crc32(decoded)


def test_the_seed_behaviour_transcodes_every_frame(
    start_emulator: Callable[..., Emulator], s3: Any, bucket: str
) -> None:
    # Given an emulator that transcodes every frame, as the seed spec describes
    emulator = start_emulator(retain_original_encoding=False)
    ahi = helpers.medical_imaging(emulator.endpoint_url)
    datastore_id = helpers.create_datastore(ahi)
    data = bundled("SC_rgb_jpeg_dcmtk.dcm")
    [expected] = pydicom_frames(data)

    # When a JPEG Baseline file is imported
    image_set_id, instance = import_file(ahi, s3, bucket, datastore_id, data)
    [frame] = instance["ImageFrames"]
    content_type, body = get_frame(ahi, datastore_id, image_set_id, frame["ID"])

    # Then its frame is lossless HTJ2K of pydicom's decoded pixels, with checksums
    assert instance["StoredTransferSyntaxUID"] == HTJ2K_LOSSLESS_RPCL
    assert content_type == "image/jph"
    assert np.array_equal(imagecodecs.htj2k_decode(body), expected)
    assert helpers.full_resolution_checksum(frame) == helpers.crc32(expected)


def test_copies_and_updates_keep_the_stored_syntax(ahi: Any, s3: Any, bucket: str, datastore: str) -> None:
    # Given an imported JPEG Baseline instance
    data = bundled("SC_rgb_jpeg_dcmtk.dcm")
    image_set_id, instance = import_file(ahi, s3, bucket, datastore, data)
    [frame] = instance["ImageFrames"]

    # When its metadata is updated, and the image set copied into a new one
    ahi.update_image_set_metadata(
        datastoreId=datastore,
        imageSetId=image_set_id,
        latestVersionId="1",
        updateImageSetMetadataUpdates=helpers.updates(
            {"Patient": {"DICOM": {"PatientName": "TEST^UPDATED"}}}
        ),
    )
    assert helpers.wait_image_set(ahi, datastore, image_set_id)["imageSetWorkflowStatus"] == "UPDATED"
    copy = ahi.copy_image_set(
        datastoreId=datastore,
        sourceImageSetId=image_set_id,
        copyImageSetInformation={"sourceImageSet": {"latestVersionId": "2"}},
    )
    copy_id = copy["destinationImageSetProperties"]["imageSetId"]
    assert helpers.wait_image_set(ahi, datastore, copy_id)["imageSetWorkflowStatus"] == "COPIED"
    helpers.wait_image_set(ahi, datastore, image_set_id)

    # Then both image sets still record the original syntax and serve the same JPEG
    for target in (image_set_id, copy_id):
        [(_, _, kept)] = helpers.instances(helpers.metadata(ahi, datastore, target))
        assert kept["StoredTransferSyntaxUID"] == JPEG_BASELINE
        assert get_frame(ahi, datastore, target, frame["ID"]) == ("image/jpeg", encoded_frames(data)[0])

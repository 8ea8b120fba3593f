"""Importing one P10 file: what is accepted, what fails, and how failures are reported."""

from __future__ import annotations

import base64
import io
import zlib
from collections.abc import Callable
from pathlib import Path
from typing import Any, BinaryIO

import imagecodecs
import numpy as np
import pydicom
import pytest
from pydicom.dataset import Dataset, FileMetaDataset
from pydicom.encaps import encapsulate
from pydicom.uid import (
    DeflatedExplicitVRLittleEndian,
    ExplicitVRBigEndian,
    ExplicitVRLittleEndian,
    HTJ2KLossless,
    ImplicitVRLittleEndian,
    JPEG2000Lossless,
    RLELossless,
)

from emulator.imaging import ImportedInstance, ImportFileError, htj2k, import_instance
from emulator.imaging import instance as instance_module

pytestmark = pytest.mark.unit

PATIENT_NAME = "SYNTHETIC^PATIENT"
SOP_CLASS_CT = "1.2.840.10008.5.1.4.1.1.2"


class FrameStore:
    """An in-memory ``store_frame``: frame IDs are ``frame-<n>``."""

    def __init__(self) -> None:
        self.frames: dict[str, bytes] = {}

    def __call__(self, codestream: bytes) -> str:
        frame_id = f"frame-{len(self.frames) + 1}"
        self.frames[frame_id] = codestream
        return frame_id


def _dataset(**overrides: Any) -> Dataset:
    """A minimal CT instance without pixel data; ``overrides`` set or (None) delete attributes."""
    ds = Dataset()
    ds.SOPClassUID = SOP_CLASS_CT
    ds.SOPInstanceUID = "1.2.826.0.1.3680043.8.498.1.1"
    ds.StudyInstanceUID = "1.2.826.0.1.3680043.8.498.1"
    ds.SeriesInstanceUID = "1.2.826.0.1.3680043.8.498.1.2"
    ds.PatientName = PATIENT_NAME
    ds.PatientID = "SYN-0001"
    ds.Modality = "CT"
    for keyword, value in overrides.items():
        if value is None:
            delattr(ds, keyword)
        else:
            setattr(ds, keyword, value)
    return ds


def _with_pixels(ds: Dataset, pixels: np.ndarray[Any, Any], bits_stored: int | None = None) -> Dataset:
    """Add native pixel data: ``(rows, columns)``, ``(frames, rows, columns)`` or RGB ``(..., 3)``."""
    frames = pixels if pixels.ndim == 3 and pixels.shape[-1] != 3 else pixels[np.newaxis]
    ds.Rows, ds.Columns = int(frames.shape[1]), int(frames.shape[2])
    if len(frames) > 1:
        ds.NumberOfFrames = len(frames)
    ds.SamplesPerPixel = 3 if frames.ndim == 4 else 1
    ds.PhotometricInterpretation = "RGB" if frames.ndim == 4 else "MONOCHROME2"
    if frames.ndim == 4:
        ds.PlanarConfiguration = 0
    ds.BitsAllocated = frames.dtype.itemsize * 8
    ds.BitsStored = bits_stored or ds.BitsAllocated
    ds.HighBit = ds.BitsStored - 1
    ds.PixelRepresentation = int(frames.dtype.kind == "i")
    data = frames.astype(frames.dtype.newbyteorder("<")).tobytes()
    ds.add_new(0x7FE00010, "OW" if ds.BitsAllocated > 8 else "OB", data)  # PixelData
    return ds


def _p10(ds: Dataset, transfer_syntax: str = ExplicitVRLittleEndian) -> io.BytesIO:
    if transfer_syntax == ExplicitVRBigEndian and ds.get("BitsAllocated", 8) > 8:
        words = np.frombuffer(ds.PixelData, dtype=f"<u{ds.BitsAllocated // 8}")
        ds.PixelData = words.astype(words.dtype.newbyteorder(">")).tobytes()  # pydicom writes OW as given
    ds.file_meta = FileMetaDataset()
    ds.file_meta.TransferSyntaxUID = transfer_syntax
    ds.file_meta.MediaStorageSOPClassUID = ds.SOPClassUID
    ds.file_meta.MediaStorageSOPInstanceUID = ds.get("SOPInstanceUID", "1.2.3")
    buffer = io.BytesIO()
    ds.save_as(buffer, enforce_file_format=True)
    buffer.seek(0)
    return buffer


def _ct_pixels(rows: int = 64, columns: int = 80, frames: int = 1) -> np.ndarray[Any, Any]:
    y, x = np.mgrid[0:rows, 0:columns]
    stack = [np.rint(1000 * np.sin(x / 9 + n) * np.cos(y / 7)).astype(np.int16) - 24 for n in range(frames)]
    return stack[0] if frames == 1 else np.stack(stack)


def _import(source: BinaryIO, store: Callable[[bytes], str] | None = None) -> ImportedInstance:
    return import_instance(source, "input/file.dcm", store or FrameStore())


def _failure(source: BinaryIO, store: Callable[[bytes], str] | None = None) -> ImportFileError:
    with pytest.raises(ImportFileError) as raised:
        _import(source, store)
    assert PATIENT_NAME not in raised.value.message
    return raised.value


# --- what imports -------------------------------------------------------------------------------------


def test_a_ct_image_imports_with_one_verified_frame() -> None:
    # Given a CT image
    pixels = _ct_pixels()
    store = FrameStore()

    # When importing it
    instance = _import(_p10(_with_pixels(_dataset(), pixels)), store)

    # Then its metadata is split by level and its one frame is stored as lossless HTJ2K
    assert instance.input_file == "input/file.dcm"
    assert instance.sop_instance_uid == "1.2.826.0.1.3680043.8.498.1.1"
    assert instance.patient == {"PatientName": PATIENT_NAME, "PatientID": "SYN-0001"}
    assert instance.study == {"StudyInstanceUID": "1.2.826.0.1.3680043.8.498.1"}
    assert instance.series == {"Modality": "CT", "SeriesInstanceUID": "1.2.826.0.1.3680043.8.498.1.2"}
    assert instance.instance["PixelData"] is None
    assert instance.instance["TransferSyntaxUID"] == ExplicitVRLittleEndian
    (frame,) = instance.frames
    assert frame.frame_id == "frame-1"
    assert np.array_equal(imagecodecs.htj2k_decode(store.frames["frame-1"]), pixels)
    assert [(level.width, level.height) for level in frame.checksums] == [(40, 32), (80, 64)]
    assert frame.checksums[-1].checksum == zlib.crc32(pixels.astype("<i2").tobytes())
    assert (frame.min_pixel_value, frame.max_pixel_value) == (int(pixels.min()), int(pixels.max()))
    assert frame.frame_size_in_bytes == pixels.size * 2


def test_the_instance_document_has_dicom_vrs_and_image_frames() -> None:
    # Given an imported image
    instance = _import(_p10(_with_pixels(_dataset(), _ct_pixels())))

    # When rendering its entry of the metadata document
    document = instance.instance_document()

    # Then it holds its instance-level attributes, the VR map and one entry per frame
    assert set(document) == {"DICOM", "DICOMVRs", "ImageFrames", "StoredTransferSyntaxUID"}
    assert document["StoredTransferSyntaxUID"] == "1.2.840.10008.1.2.4.202"  # transcoded to HTJ2K
    assert "PatientName" not in document["DICOM"]
    assert document["DICOMVRs"] == {"PixelData": "OW"}
    assert document["ImageFrames"] == [instance.frames[0].as_metadata()]


def test_an_instance_without_pixel_data_imports_without_frames() -> None:
    # Given a structured report (no pixel data)
    ds = _dataset(SOPClassUID="1.2.840.10008.5.1.4.1.1.88.11", Modality="SR")
    ds.ValueType = "CONTAINER"
    store = FrameStore()

    # When importing it
    instance = _import(_p10(ds), store)

    # Then nothing is stored and its document has no ImageFrames
    assert instance.frames == ()
    assert store.frames == {}
    assert "ImageFrames" not in instance.instance_document()


def test_multi_frame_images_store_every_frame_in_order() -> None:
    # Given a 5-frame image (streamed frame by frame from the file)
    pixels = _ct_pixels(frames=5)
    store = FrameStore()

    # When importing it
    instance = _import(_p10(_with_pixels(_dataset(), pixels)), store)

    # Then each frame is stored once, in order, and decodes to its own pixels
    assert [frame.frame_id for frame in instance.frames] == [f"frame-{n}" for n in range(1, 6)]
    for frame, expected in zip(instance.frames, pixels, strict=True):
        assert np.array_equal(imagecodecs.htj2k_decode(store.frames[frame.frame_id]), expected)
        assert frame.max_pixel_value == int(expected.max())


@pytest.mark.parametrize("frames", [1, 4])
def test_large_values_left_in_the_file_do_not_disturb_the_frames(
    frames: int, monkeypatch: pytest.MonkeyPatch
) -> None:
    # Given values larger than the deferral size: a private blob, and the pixel data
    monkeypatch.setattr(instance_module, "DEFER_SIZE", 1024)
    pixels = _ct_pixels(frames=frames)
    ds = _with_pixels(_dataset(), pixels)
    ds.add_new(0x00090010, "LO", "ACME 1.0")
    ds.add_new(0x00091001, "OB", bytes(range(256)) * 8)
    store = FrameStore()

    # When importing it (the metadata reads the blob back from the file)
    instance = _import(_p10(ds), store)

    # Then the blob is in the metadata and every frame is its own
    assert instance.instance["00091001"] == base64.b64encode(bytes(range(256)) * 8).decode()
    expected = pixels if frames > 1 else pixels[np.newaxis]
    for frame, samples in zip(instance.frames, expected, strict=True):
        assert np.array_equal(imagecodecs.htj2k_decode(store.frames[frame.frame_id]), samples)


def _htj2k_file() -> io.BytesIO:
    pixels = _ct_pixels()
    ds = _with_pixels(_dataset(), pixels)
    codestream = imagecodecs.htj2k_encode(pixels, reversible=True, bitspersample=16)
    ds.PixelData = encapsulate([bytes(codestream)])
    return _p10(ds, HTJ2KLossless)


def _encoded_with(
    transfer_syntax: str, encode: Callable[[np.ndarray[Any, Any]], bytes]
) -> Callable[[], io.BytesIO]:
    """The test image encoded by imagecodecs into ``transfer_syntax`` (unsigned, as JPEG lossless needs)."""

    def build() -> io.BytesIO:
        pixels = _unsigned_ct_pixels()
        ds = _with_pixels(_dataset(), pixels, bits_stored=12)
        ds.PixelData = encapsulate([bytes(encode(pixels))])
        ds["PixelData"].VR = "OB"
        return _p10(ds, transfer_syntax)

    return build


def _unsigned_ct_pixels() -> np.ndarray[Any, Any]:
    return (_ct_pixels().astype(np.int32) + 2048).astype(np.uint16)


def _compressed(transfer_syntax: str) -> Callable[[], io.BytesIO]:
    def build() -> io.BytesIO:
        ds = _with_pixels(_dataset(), _ct_pixels())
        ds.file_meta = FileMetaDataset()
        ds.file_meta.TransferSyntaxUID = ExplicitVRLittleEndian
        ds.compress(transfer_syntax)
        return _p10(ds, transfer_syntax)

    return build


@pytest.mark.parametrize(
    "build",
    [
        lambda: _p10(_with_pixels(_dataset(), _ct_pixels()), ImplicitVRLittleEndian),
        lambda: _p10(_with_pixels(_dataset(), _ct_pixels()), ExplicitVRBigEndian),
        lambda: _p10(_with_pixels(_dataset(), _ct_pixels()), DeflatedExplicitVRLittleEndian),
        _compressed(RLELossless),
        _compressed(JPEG2000Lossless),
        _htj2k_file,
    ],
    ids=["implicit", "big-endian", "deflated", "rle", "jpeg2000", "htj2k"],
)
def test_supported_transfer_syntaxes_are_transcoded_losslessly(build: Callable[[], io.BytesIO]) -> None:
    # Given the same image in a supported transfer syntax
    store = FrameStore()

    # When importing it
    instance = _import(build(), store)

    # Then the stored frame holds the original pixels
    assert np.array_equal(imagecodecs.htj2k_decode(store.frames[instance.frames[0].frame_id]), _ct_pixels())


@pytest.mark.parametrize(
    "build",
    [
        _encoded_with(
            "1.2.840.10008.1.2.4.57", lambda p: imagecodecs.jpeg8_encode(p, lossless=True, predictor=2)
        ),
        _encoded_with(
            "1.2.840.10008.1.2.4.70", lambda p: imagecodecs.jpeg8_encode(p, lossless=True, predictor=1)
        ),
        _encoded_with("1.2.840.10008.1.2.4.80", imagecodecs.jpegls_encode),
        _encoded_with(
            "1.2.840.10008.1.2.4.202",
            lambda p: imagecodecs.htj2k_encode(p, reversible=True, bitspersample=12, prog_order="RPCL"),
        ),
        _encoded_with("1.2.840.10008.1.2.4.203", lambda p: imagecodecs.htj2k_encode(p, reversible=True)),
    ],
    ids=["jpeg-lossless-14", "jpeg-lossless-sv1", "jpeg-ls", "htj2k-rpcl", "htj2k"],
)
def test_lossless_compressed_sources_are_transcoded_bit_exactly(build: Callable[[], io.BytesIO]) -> None:
    # Given a 12-bit image in a compressed transfer syntax of platform spec §6.3 encoded by imagecodecs
    store = FrameStore()

    # When importing it
    instance = _import(build(), store)

    # Then the stored HTJ2K frame holds exactly the source samples
    decoded = imagecodecs.htj2k_decode(store.frames[instance.frames[0].frame_id])
    assert np.array_equal(decoded, _unsigned_ct_pixels())


def test_sources_may_be_paths_or_unseekable_streams(tmp_path: Path) -> None:
    # Given the same file on disk and behind a stream that cannot seek
    data = _p10(_with_pixels(_dataset(), _ct_pixels())).getvalue()
    path = tmp_path / "image.dcm"
    path.write_bytes(data)

    class Unseekable(io.RawIOBase):
        def __init__(self) -> None:
            self._inner = io.BytesIO(data)

        def readable(self) -> bool:
            return True

        def seekable(self) -> bool:
            return False

        def readinto(self, buffer: Any) -> int:
            chunk = self._inner.read(len(buffer))
            buffer[: len(chunk)] = chunk
            return len(chunk)

    # When importing both
    by_path = import_instance(path, "image.dcm", FrameStore())
    by_stream = import_instance(io.BufferedReader(Unseekable()), "image.dcm", FrameStore())

    # Then they give the same instance
    assert by_path.instance == by_stream.instance
    assert by_path.frames[0].checksums == by_stream.frames[0].checksums


# --- customer errors ----------------------------------------------------------------------------------


def test_a_file_that_is_not_dicom_fails() -> None:
    # Given bytes without the DICM prefix
    # When importing them
    error = _failure(io.BytesIO(b"not a dicom file" * 20))

    # Then the file is a customer error
    assert error.customer_error
    assert error.exception_type == "ValidationException"
    assert "not a DICOM Part 10 file" in error.message


def test_a_file_without_transfer_syntax_fails_with_the_service_message() -> None:
    # Given a P10 file whose file meta lacks (0002,0010)
    ds = _dataset()
    ds.file_meta = FileMetaDataset()
    ds.file_meta.MediaStorageSOPClassUID = SOP_CLASS_CT
    ds.preamble = b"\0" * 128
    buffer = io.BytesIO()
    ds.save_as(buffer, implicit_vr=False, little_endian=True)
    buffer.seek(0)

    # When importing it
    error = _failure(buffer)

    # Then the message is the one of the service's failure.ndjson sample
    assert error.as_failure() == {
        "exceptionType": "ValidationException",
        "message": "DICOM attribute TransferSyntaxUID does not exist",
    }


def test_an_unsupported_transfer_syntax_fails() -> None:
    # Given an MPEG-2 instance
    # When importing it
    error = _failure(_p10(_dataset(), "1.2.840.10008.1.2.4.100"))

    # Then the transfer syntax is named
    assert error.customer_error
    assert "1.2.840.10008.1.2.4.100 is not a supported transfer syntax" in error.message


@pytest.mark.parametrize("keyword", ["StudyInstanceUID", "SeriesInstanceUID", "SOPInstanceUID"])
def test_a_missing_identifier_fails(keyword: str) -> None:
    # Given an instance without one of its UIDs
    # When importing it
    error = _failure(_p10(_dataset(**{keyword: None})))

    # Then the attribute is named as the service names missing attributes
    assert error.message == f"DICOM attribute {keyword} does not exist"


@pytest.mark.filterwarnings("ignore::UserWarning")
def test_uids_may_have_leading_zeros_and_256_characters() -> None:
    # Given a series UID with leading zeros, 256 characters long (2024-06-28 relaxation)
    uid = "0.0" + ".1" * 126 + "1"
    assert len(uid) == 256

    # When importing it
    instance = _import(_p10(_dataset(SeriesInstanceUID=uid)))

    # Then it is accepted
    assert instance.series_instance_uid == uid


@pytest.mark.parametrize(
    ("uid", "reason"),
    [
        ("1." + "2" * 255, "is 257 characters long; the maximum is 256"),
        ("1.2.abc", "is not a valid UID"),
    ],
)
@pytest.mark.filterwarnings("ignore::UserWarning")
def test_invalid_uids_fail(uid: str, reason: str) -> None:
    # Given an invalid study UID
    # When importing it
    error = _failure(_p10(_dataset(StudyInstanceUID=uid)))

    # Then the UID is refused without being echoed
    assert error.message.startswith("DICOM attribute StudyInstanceUID (0020,000D)")
    assert reason in error.message
    assert uid not in error.message


@pytest.mark.filterwarnings("ignore::UserWarning")
@pytest.mark.parametrize(
    ("keyword", "tag", "limit", "character"),
    [
        ("PatientName", "(0010,0010)", 256, "A"),
        ("PatientID", "(0010,0020)", 256, "7"),
        ("PatientBirthDate", "(0010,0030)", 18, "1"),
        ("PatientSex", "(0010,0040)", 16, "O"),
        ("StudyID", "(0020,0010)", 16, "S"),
        ("StudyDescription", "(0008,1030)", 64, "D"),
        ("AccessionNumber", "(0008,0050)", 256, "9"),
        ("StudyDate", "(0008,0020)", 18, "2"),
        ("StudyTime", "(0008,0030)", 28, "1"),
    ],
)
def test_element_length_limits(keyword: str, tag: str, limit: int, character: str) -> None:
    # Given a value at the limit and one character over it
    at_limit = _p10(_dataset(**{keyword: character * limit}))
    over_limit = _p10(_dataset(**{keyword: character * (limit + 1)}))

    # When importing both
    _import(at_limit)
    error = _failure(over_limit)

    # Then only the longer one fails, naming the attribute, its length and the limit, not the value
    assert error.customer_error
    assert error.message == (
        f"DICOM attribute {keyword} {tag} is {limit + 1} characters long; the maximum is {limit}"
    )


@pytest.mark.parametrize(
    ("value", "message"),
    [
        ("10001", "DICOM attribute NumberOfStudyRelatedSeries (0020,1206) must be between 0 and 10000"),
        ("-1", "DICOM attribute NumberOfStudyRelatedSeries (0020,1206) must be between 0 and 10000"),
    ],
)
def test_study_counts_are_limited(value: str, message: str) -> None:
    # Given a study with too many series
    # When importing it
    error = _failure(_p10(_dataset(NumberOfStudyRelatedSeries=value)))

    # Then the count is refused
    assert error.message == message


def test_a_study_count_at_the_limit_is_accepted() -> None:
    # Given 10000 related instances
    # When importing
    instance = _import(_p10(_dataset(NumberOfStudyRelatedInstances="10000")))

    # Then it imports
    assert instance.instance["NumberOfStudyRelatedInstances"] == "10000"


@pytest.mark.parametrize("keyword", ["Rows", "BitsAllocated", "PhotometricInterpretation"])
def test_pixel_data_without_its_pixel_module_fails(keyword: str) -> None:
    # Given pixel data without one of its image pixel module attributes
    ds = _with_pixels(_dataset(), _ct_pixels())
    delattr(ds, keyword)

    # When importing it
    error = _failure(_p10(ds))

    # Then the missing attribute is named
    assert error.message == f"DICOM attribute {keyword} does not exist"


def test_binary_segmentations_are_not_supported() -> None:
    # Given 1-bit pixel data
    ds = _with_pixels(_dataset(), np.zeros((8, 8), np.uint8))
    ds.BitsAllocated, ds.BitsStored, ds.HighBit = 1, 1, 0
    ds.PixelData = bytes(8)

    # When importing it
    error = _failure(_p10(ds))

    # Then it is refused
    assert error.message == "Binary segmentation pixel data ((0028,0100) BitsAllocated 1) is not supported"


@pytest.mark.filterwarnings("ignore::UserWarning")
def test_pixel_data_that_cannot_be_decoded_fails() -> None:
    # Given pixel data shorter than its rows and columns need
    ds = _with_pixels(_dataset(), _ct_pixels())
    ds.PixelData = ds.PixelData[:100]

    # When importing it
    error = _failure(_p10(ds))

    # Then decoding the first frame is reported as a customer error
    assert error.customer_error
    assert error.message.startswith(
        "Pixel data of frame 1 could not be decoded with transfer syntax 1.2.840.10008.1.2.1"
    )


# --- server errors ------------------------------------------------------------------------------------


def test_a_pixel_verification_mismatch_is_a_server_error(monkeypatch: pytest.MonkeyPatch) -> None:
    # Given an HTJ2K round trip that changes one sample
    original_decode = htj2k.decode

    def corrupting_decode(codestream: bytes, skip_resolutions: int = 0) -> Any:
        decoded = original_decode(codestream, skip_resolutions).copy()
        decoded[0, 0] += 1
        return decoded

    monkeypatch.setattr(htj2k, "decode", corrupting_decode)
    store = FrameStore()

    # When importing an image
    error = _failure(_p10(_with_pixels(_dataset(), _ct_pixels())), store)

    # Then the frame is not stored and the failure is the service's
    assert not error.customer_error
    assert error.exception_type == "InternalServerException"
    assert error.message.startswith("Pixel data verification failed for frame 1")
    assert store.frames == {}


def test_a_storage_failure_is_a_server_error() -> None:
    # Given a frame store that fails
    def failing_store(codestream: bytes) -> str:
        raise OSError("disk full")

    # When importing an image
    error = _failure(_p10(_with_pixels(_dataset(), _ct_pixels())), failing_store)

    # Then the failure is the service's, with its cause chained
    assert error.exception_type == "InternalServerException"
    assert error.message == "Frame 1 could not be stored"
    assert isinstance(error.__cause__, OSError)


def test_import_file_error_types() -> None:
    # Given both kinds of file errors
    customer = ImportFileError("ValidationException", "bad file")
    server = ImportFileError.internal("oops")

    # When classifying them
    # Then only the validation error is the customer's, and unknown types are refused
    assert customer.customer_error
    assert not server.customer_error
    assert server.as_failure() == {"exceptionType": "InternalServerException", "message": "oops"}
    with pytest.raises(ValueError, match="Throttling"):
        ImportFileError("ThrottlingException", "no")


def test_read_back_helper_writes_the_requested_transfer_syntax() -> None:
    # Given a file written by the helper
    # When reading it with pydicom
    ds = pydicom.dcmread(_p10(_dataset(), ExplicitVRBigEndian))

    # Then it has the requested transfer syntax
    assert ds.file_meta.TransferSyntaxUID == ExplicitVRBigEndian

"""Import every file pydicom bundles (its test files and the pydicom-data package) and check the frames.

Transcoding every frame (``retain_original_encoding=False``), for each file that imports, every stored
HTJ2K frame must decode, with OpenJPH (imagecodecs) and with OpenJPEG (pylibjpeg-openjpeg), to exactly
the samples pydicom's ``pixel_array`` gives for that frame, and every resolution level must decode to
samples whose CRC-32 is the level's metadata checksum.  The files that must not import are listed below
with the exception type and the reason.  With the service's behaviour (the default), the JPEG Baseline,
JPEG 2000 and HTJ2K files keep their encapsulated frames byte for byte instead.
"""

from __future__ import annotations

import zlib
from typing import Any

import imagecodecs
import numpy as np
import openjpeg
import pydicom
import pytest
from pydicom.encaps import generate_frames

from emulator.imaging import (
    HTJ2K_LOSSLESS_RPCL,
    RETAINED_TRANSFER_SYNTAXES,
    ImportedInstance,
    ImportFileError,
    htj2k,
    import_instance,
)
from tests.unit import openjpeg_reduced
from tests.unit.pydicom_files import bundled_files, short_name, testdata_files

pytestmark = [pytest.mark.unit, pytest.mark.slow, pytest.mark.filterwarnings("ignore::UserWarning")]

NOT_P10 = "The input file is not a DICOM Part 10 file: the 'DICM' prefix is missing"
NO_STUDY_UID = "DICOM attribute StudyInstanceUID does not exist"
SEGMENTATION = "Binary segmentation pixel data ((0028,0100) BitsAllocated 1) is not supported"

EXPECTED_FAILURES: dict[str, tuple[str, str]] = {
    # not DICOM Part 10: no preamble and file meta, or not DICOM at all
    "data/OT-PAL-8-face.dcm": ("ValidationException", NOT_P10),
    "test_files/ExplVR_BigEndNoMeta.dcm": ("ValidationException", NOT_P10),
    "test_files/ExplVR_LitEndNoMeta.dcm": ("ValidationException", NOT_P10),
    "test_files/no_meta.dcm": ("ValidationException", NOT_P10),
    "test_files/rtstruct.dcm": ("ValidationException", NOT_P10),
    "test_files/README.txt": ("ValidationException", NOT_P10),
    "test_files/crayons.icc": ("ValidationException", NOT_P10),
    "test_files/rtplan.dump": ("ValidationException", NOT_P10),
    "test_files/rtstruct.dump": ("ValidationException", NOT_P10),
    "test_files/test1.json": ("ValidationException", NOT_P10),
    "test_files/test_PN.json": ("ValidationException", NOT_P10),
    "test_files/zipMR.gz": ("ValidationException", NOT_P10),
    # (0002,0010) missing from the file meta
    "test_files/meta_missing_tsyntax.dcm": (
        "ValidationException",
        "DICOM attribute TransferSyntaxUID does not exist",
    ),
    # fragments of data sets without the identifiers of an instance
    "data/emri_small_jpeg_2k_lossless_too_short.dcm": ("ValidationException", NO_STUDY_UID),  # truncated
    "test_files/JPEGLSNearLossless_08.dcm": ("ValidationException", NO_STUDY_UID),
    "test_files/JPEGLSNearLossless_16.dcm": ("ValidationException", NO_STUDY_UID),
    "test_files/SC_rgb_jls_lossy_line.dcm": ("ValidationException", NO_STUDY_UID),
    "test_files/SC_rgb_jls_lossy_sample.dcm": ("ValidationException", NO_STUDY_UID),
    "test_files/UN_sequence.dcm": ("ValidationException", NO_STUDY_UID),
    "test_files/empty_charset_LEI.dcm": ("ValidationException", NO_STUDY_UID),
    "test_files/nested_priv_SQ.dcm": ("ValidationException", NO_STUDY_UID),
    "test_files/no_meta_group_length.dcm": ("ValidationException", NO_STUDY_UID),
    "test_files/priv_SQ.dcm": ("ValidationException", NO_STUDY_UID),
    # UIDs that are SHA-256 hex digests
    "data/bad_sequence.dcm": (
        "ValidationException",
        "DICOM attribute StudyInstanceUID (0020,000D) is not a valid UID: only digits and '.' are allowed",
    ),
    # binary segmentations
    "data/liver.dcm": ("ValidationException", SEGMENTATION),
    "data/liver_expb.dcm": ("ValidationException", SEGMENTATION),
    "test_files/liver_1frame.dcm": ("ValidationException", SEGMENTATION),
    "test_files/liver_expb_1frame.dcm": ("ValidationException", SEGMENTATION),
    # (0028,0008) NumberOfFrames "1A"
    "test_files/badVR.dcm": (
        "ValidationException",
        "DICOM attribute NumberOfFrames (0028,0008) does not hold a valid integer",
    ),
    # pixel data pydicom cannot decode
    "test_files/MR_truncated.dcm": (
        "ValidationException",
        "Pixel data of frame 1 could not be decoded with transfer syntax 1.2.840.10008.1.2.1 "
        "(Explicit VR Little Endian): ValueError",
    ),
    "test_files/JPEG-lossy.dcm": (  # 12-bit lossy JPEG that libjpeg rejects
        "ValidationException",
        "Pixel data of frame 1 could not be decoded with transfer syntax 1.2.840.10008.1.2.4.51 "
        "(JPEG Baseline (Processes 2 & 4)): RuntimeError",
    ),
    "test_files/JPEG2000-embedded-sequence-delimiter.dcm": (
        "ValidationException",
        "Pixel data of frame 1 could not be decoded with transfer syntax 1.2.840.10008.1.2.4.91 "
        "(JPEG 2000 Image Compression): RuntimeError",
    ),
}

OPENJPEG_MAX_PRECISION = 31
"""OpenJPEG 2.5 refuses 32-bit components, which these files have ((0028,0101) BitsStored 32)."""

THIRTY_TWO_BIT_FILES = {
    "data/SC_rgb_32bit.dcm",
    "data/SC_rgb_32bit_2frame.dcm",
    "data/SC_rgb_expb_32bit.dcm",
    "data/SC_rgb_expb_32bit_2frame.dcm",
    "test_files/SC_rgb_rle_32bit.dcm",
    "test_files/SC_rgb_rle_32bit_2frame.dcm",
    "test_files/rtdose.dcm",
    "test_files/rtdose_1frame.dcm",
    "test_files/rtdose_expb.dcm",
    "test_files/rtdose_expb_1frame.dcm",
    "test_files/rtdose_rle.dcm",
    "test_files/rtdose_rle_1frame.dcm",
}


class FrameStore:
    def __init__(self) -> None:
        self.frames: dict[str, bytes] = {}

    def __call__(self, codestream: bytes) -> str:
        frame_id = f"{len(self.frames):032x}"
        self.frames[frame_id] = codestream
        return frame_id


def _reference_frames(ds: pydicom.Dataset) -> list[np.ndarray[Any, Any]]:
    """Each frame as pydicom's ``pixel_array`` gives it (pydicom 3 defaults)."""
    pixels = ds.pixel_array
    return list(pixels) if int(ds.get("NumberOfFrames") or 1) > 1 else [pixels]


def _same_samples(decoded: np.ndarray[Any, Any], reference: np.ndarray[Any, Any]) -> bool:
    return decoded.shape == reference.shape and np.array_equal(
        decoded.astype(np.int64), reference.astype(np.int64)
    )


def _check_levels(
    codestream: bytes, entry: dict[str, Any], reference: np.ndarray[Any, Any], bits_stored: int
) -> None:
    """Every level decodes to samples whose CRC-32 is the level's checksum.

    OpenJPEG (pylibjpeg-openjpeg discarding resolutions, and ``imagecodecs.jpeg2k_decode`` with
    ``skipres``) must return exactly the checksummed samples; ``imagecodecs.htj2k_decode`` (OpenJPH)
    must agree except where a reduced level overshoots the sample range, which OpenJPEG clips and
    imagecodecs' OpenJPH binding wraps around (it happens in most bundled images: a zero background
    next to bright structures overshoots below 0 one level down).  OpenJPEG cannot decode 32-bit samples,
    so for those the levels are recomputed from pydicom's samples and compared with OpenJPH alone.
    """
    info = htj2k.parse_codestream(codestream)
    checksums = [level["Checksum"] for level in entry["PixelDataChecksumFromBaseToFullResolution"]]
    expected_levels = htj2k.resolution_levels(htj2k.prepare_frame(reference, bits_stored))
    assert [zlib.crc32(level.tobytes()) for level in expected_levels] == checksums
    low, high = htj2k.prepare_frame(reference, bits_stored).sample_range
    for reduce in range(info.decomposition_levels + 1):
        expected = expected_levels[info.decomposition_levels - reduce]
        if info.precision <= OPENJPEG_MAX_PRECISION:
            by_openjpeg = openjpeg_reduced.decode(codestream, reduce)
            assert by_openjpeg.dtype == expected.dtype
            assert np.array_equal(by_openjpeg, expected)
            # imagecodecs' own OpenJPEG build gives the same samples (its OpenJPH binding wraps)
            assert np.array_equal(imagecodecs.jpeg2k_decode(codestream, skipres=reduce or None), expected)
        by_openjph = imagecodecs.htj2k_decode(codestream, skipres=reduce or None)
        assert by_openjph.shape == expected.shape
        differ = by_openjph != expected
        assert np.all((expected[differ] == low) | (expected[differ] == high))


def _import(path: str, store: FrameStore) -> ImportedInstance:
    return import_instance(path, short_name(path), store, retain_original_encoding=False)


@pytest.mark.parametrize("path", bundled_files(), ids=short_name)
def test_bundled_file(path: str) -> None:
    name = short_name(path)
    store = FrameStore()

    if name in EXPECTED_FAILURES:
        # Given a file that must not import
        exception_type, message = EXPECTED_FAILURES[name]

        # When importing it
        with pytest.raises(ImportFileError) as raised:
            _import(path, store)

        # Then it fails for the listed reason, leaving no frames behind
        assert (raised.value.exception_type, raised.value.message) == (exception_type, message)
        assert store.frames == {}
        return

    # Given a file that imports
    # When importing it
    instance = _import(path, store)
    document = instance.instance_document()

    # Then every frame decodes with both decoders to pydicom's samples, at every level
    ds = pydicom.dcmread(path)
    if "PixelData" not in ds:
        assert "ImageFrames" not in document
        return
    assert document["StoredTransferSyntaxUID"] == HTJ2K_LOSSLESS_RPCL
    references = _reference_frames(ds)
    assert len(document["ImageFrames"]) == len(references)
    for entry, reference in zip(document["ImageFrames"], references, strict=True):
        codestream = store.frames[entry["ID"]]
        by_openjph = imagecodecs.htj2k_decode(codestream)
        assert _same_samples(by_openjph, reference)
        assert by_openjph.dtype.kind == reference.dtype.kind
        assert (htj2k.parse_codestream(codestream).precision > OPENJPEG_MAX_PRECISION) == (
            name in THIRTY_TWO_BIT_FILES
        )
        if name in THIRTY_TWO_BIT_FILES:
            with pytest.raises(RuntimeError):
                openjpeg.decode(codestream, 0)
        else:
            assert _same_samples(openjpeg.decode(codestream, 0), reference)
        assert (
            zlib.crc32(by_openjph.tobytes())
            == entry["PixelDataChecksumFromBaseToFullResolution"][-1]["Checksum"]
        )
        assert (entry["MinPixelValue"], entry["MaxPixelValue"]) == (
            int(reference.min()),
            int(reference.max()),
        )
        assert entry["FrameSizeInBytes"] == by_openjph.nbytes
        _check_levels(codestream, entry, reference, int(ds.BitsStored))


def _retained_files() -> list[str]:
    """The importable files in a syntax the service keeps in its original encoding."""
    return [
        path
        for path in bundled_files()
        if short_name(path) not in EXPECTED_FAILURES
        and str(pydicom.dcmread(path, stop_before_pixels=True).file_meta.TransferSyntaxUID)
        in RETAINED_TRANSFER_SYNTAXES
    ]


@pytest.mark.parametrize("path", _retained_files(), ids=short_name)
def test_bundled_file_kept_in_its_original_encoding(path: str) -> None:
    # Given a JPEG Baseline, JPEG 2000 or HTJ2K file that imports
    store = FrameStore()
    ds = pydicom.dcmread(path)
    transfer_syntax = str(ds.file_meta.TransferSyntaxUID)
    references = _reference_frames(ds)
    originals = list(generate_frames(ds.PixelData, number_of_frames=len(references)))

    # When importing it as the service does
    document = import_instance(path, short_name(path), store).instance_document()

    # Then its frames are the file's encoded frames, in order, without resolution checksums
    assert document["StoredTransferSyntaxUID"] == transfer_syntax
    assert [store.frames[entry["ID"]] for entry in document["ImageFrames"]] == originals
    for entry, reference in zip(document["ImageFrames"], references, strict=True):
        assert "PixelDataChecksumFromBaseToFullResolution" not in entry
        assert (entry["MinPixelValue"], entry["MaxPixelValue"]) == (
            int(reference.min()),
            int(reference.max()),
        )
        assert entry["FrameSizeInBytes"] == reference.nbytes


def test_every_listed_file_exists() -> None:
    # Given the bundled files
    names = {short_name(path) for path in bundled_files()}

    # When comparing them with the files this module lists
    # Then none is listed by mistake
    assert set(EXPECTED_FAILURES) <= names
    assert names >= THIRTY_TWO_BIT_FILES
    assert len(names) - len(EXPECTED_FAILURES) >= 110


def test_the_files_are_those_of_get_testdata_files() -> None:
    # Given the files listed without pydicom's download step
    # When asking pydicom for its test data files
    # Then both lists are the same
    assert testdata_files() == bundled_files()

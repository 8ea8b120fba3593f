"""Thumbnails of frames served by the emulator, for every file pydicom bundles that imports.

One import job takes every file of ``get_testdata_files("*")`` (pydicom's own test files and the
pydicom-data package's) and a 2048² synthetic CT slice.  For each imported file, the stage's own path
makes the thumbnail: :func:`~ahi_pipeline.frame_choice.representative` chooses the frame (the middle
frame of a multi-frame instance), GetImageFrame streams it, :func:`~ahi_pipeline.thumbnails.decode_frame`
decodes the level a 256-px thumbnail needs in the syntax the metadata says it is stored in, and
:func:`~ahi_pipeline.render.render` renders it.  The result is compared with a reference computed
independently: pydicom's ``pixel_array`` of that frame, brought to the same resolution level, through
pydicom's ``apply_modality_lut`` and ``apply_voi_lut`` (``apply_color_lut`` for PALETTE COLOR), and
the same resize.  Every file that gets no thumbnail is listed below with its reason.
"""

from __future__ import annotations

import io
import warnings
from pathlib import Path
from typing import Any

import numpy as np
import pydicom
import pytest
from pydicom.encaps import generate_frames
from pydicom.pixels import apply_color_lut, apply_modality_lut, apply_voi_lut, pixel_array
from pydicom.uid import ExplicitVRBigEndian

from ahi_pipeline.frame_choice import FrameRef, representative
from ahi_pipeline.htj2k_prefix import CodestreamError
from ahi_pipeline.render import FrameDescription, area_resize, render, robust_window, voi_lut
from ahi_pipeline.thumbnails import (
    HTJ2K_LOSSLESS_RPCL,
    ChecksumMismatch,
    decode_frame,
    decode_level,
    read_prefix,
    stored_transfer_syntax,
    verify_level,
)
from bench.synthetic import ct_series
from emulator.imaging.htj2k import prepare_frame, resolution_levels
from tests.emulator import helpers
from tests.unit import openjpeg_reduced
from tests.unit.pydicom_files import bundled_files, short_name
from tests.unit.test_import_bundled_files import EXPECTED_FAILURES as NOT_IMPORTED

pytestmark = [pytest.mark.emulator, pytest.mark.filterwarnings("ignore::UserWarning")]

LONGEST_SIDE = 256
SYNTHETIC = "synthetic/big.dcm"
"""A 2048² CT slice: its 256-px thumbnail is read from a small prefix of the frame."""

BUNDLED = {short_name(path): path for path in bundled_files()}
"""Every file pydicom bundles, by ``<folder>/<file>``; those in ``NOT_IMPORTED`` are refused by the import
(``tests/unit/test_import_bundled_files.py`` gives each one's reason)."""

NO_PIXEL_DATA = frozenset(
    {
        "test_files/reportsi.dcm",
        "test_files/reportsi_with_empty_number_tags.dcm",
        "test_files/rtplan.dcm",
        "test_files/rtplan_truncated.dcm",
        "test_files/test-SR.dcm",
        "test_files/waveform_ecg.dcm",
    }
)
"""Imported instances without (7FE0,0010) PixelData: no frame, so no thumbnail."""


RENDERED = [*sorted(set(BUNDLED) - set(NOT_IMPORTED) - NO_PIXEL_DATA), SYNTHETIC]
CASES = RENDERED

LOSSY_JPEG = frozenset({"1.2.840.10008.1.2.4.50", "1.2.840.10008.1.2.4.51"})
"""Syntaxes the service keeps as uploaded whose decoding the JPEG standard does not define exactly.

A lossy JPEG decoder only has to be within an accuracy of the ideal IDCT (ISO/IEC 10918-2), and chroma
upsampling is its own choice: pydicom's default plugin for these syntaxes (pylibjpeg-libjpeg, libjpeg 9)
and libjpeg-turbo, which the stage uses (``imagecodecs.jpeg8_decode``), differ by up to 5 on the bundled
frames (``data/color3d_jpeg_baseline.dcm``).  The reference decodes them with pydicom's Pillow plugin,
whose JPEG decoder is libjpeg-turbo too, so that the comparison measures the rest of the chain.
"""

JPEG_PLUGIN = "pillow"

RETAINED_JPEG_2000 = frozenset(
    {"1.2.840.10008.1.2.4.90", "1.2.840.10008.1.2.4.91", "1.2.840.10008.1.2.4.201", "1.2.840.10008.1.2.4.203"}
)
"""JPEG 2000 syntaxes whose codestreams the service may keep: their reduced levels are the file's own."""


@pytest.fixture(scope="module")
def imported(emulator: Any, moto_url: str) -> dict[str, Any]:
    """Every bundled file and the synthetic slice, imported in one job; each file's own instance."""
    import boto3  # noqa: PLC0415

    from tests.conftest import REGION, client_config  # noqa: PLC0415

    s3 = boto3.client("s3", region_name=REGION, endpoint_url=moto_url)
    ahi = boto3.client(
        "medical-imaging", region_name=REGION, endpoint_url=emulator.endpoint_url, config=client_config()
    )
    s3.create_bucket(Bucket="thumbnails-in")
    synthetic = ct_series(1, size=2048)[0]
    files = {name: Path(path).read_bytes() for name, path in BUNDLED.items()} | {SYNTHETIC: synthetic}
    datastore_id = helpers.create_datastore(ahi)
    result = helpers.run_import(
        ahi, s3, datastore_id=datastore_id, bucket="thumbnails-in", files=files, input_prefix="in/"
    )
    documents: dict[str, dict[str, Any]] = {}
    sets, metadata = {}, {}
    for line in result.success:
        name = line["inputFile"].removeprefix("in/")
        image_set_id = sets[name] = line["importResponse"]["imageSetId"]
        if image_set_id not in documents:
            documents[image_set_id] = helpers.metadata(ahi, datastore_id, image_set_id)
        # Files may share a study, hence an image set: keep only this file's instance
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", UserWarning)  # pydicom on the bundled files' oddities
            ds = pydicom.dcmread(io.BytesIO(files[name]), stop_before_pixels=True)
        series = documents[image_set_id]["Study"]["Series"][ds.SeriesInstanceUID]
        instance = series["Instances"][ds.SOPInstanceUID]
        metadata[name] = {
            "Study": {"Series": {ds.SeriesInstanceUID: {"Instances": {ds.SOPInstanceUID: instance}}}}
        }
    return {
        "ahi": ahi,
        "datastore": datastore_id,
        "sets": sets,
        "metadata": metadata,
        "failed": {line["inputFile"].removeprefix("in/") for line in result.failure},
        "synthetic": synthetic,
    }


def dataset_of(imported: dict[str, Any], name: str) -> pydicom.Dataset:
    source = io.BytesIO(imported["synthetic"]) if name == SYNTHETIC else BUNDLED[name]
    return pydicom.dcmread(source)


def number_of_frames(dataset: pydicom.Dataset) -> int:
    return int(dataset.get("NumberOfFrames") or 1)


def frame_stream(imported: dict[str, Any], name: str) -> tuple[FrameRef, str, Any]:
    """The representative frame, its stored transfer syntax, and its GetImageFrame stream."""
    metadata = imported["metadata"][name]
    chosen = representative(metadata)
    assert chosen is not None
    instance = metadata["Study"]["Series"][chosen.series_uid]["Instances"][chosen.sop_uid]
    body = imported["ahi"].get_image_frame(
        datastoreId=imported["datastore"],
        imageSetId=imported["sets"][name],
        imageFrameInformation={"imageFrameId": chosen.frame_id},
    )["imageFrameBlob"]
    return chosen, stored_transfer_syntax(instance), body


def pydicom_frame(dataset: pydicom.Dataset, index: int, plugin: str = "") -> np.ndarray:
    """pydicom's ``pixel_array`` of one frame (of a multi-frame data set: ``pixel_array[index]``),
    decoded by pydicom's ``plugin`` (by default, the first that can)."""
    multi_frame = number_of_frames(dataset) > 1
    return pixel_array(dataset, index=index if multi_frame else None, decoding_plugin=plugin)


def own_frame(dataset: pydicom.Dataset, index: int) -> bytes:
    """The file's own encoded frame (its encapsulated Pixel Data)."""
    return list(generate_frames(dataset.PixelData, number_of_frames=number_of_frames(dataset)))[index]


def pydicom_level(dataset: pydicom.Dataset, index: int, stored: str, reduce: int) -> np.ndarray:
    """The frame at the resolution level the stage decoded, computed without the stage's decoders.

    Full resolution: pydicom's ``pixel_array`` (a kept lossy JPEG frame by its Pillow plugin, see
    :data:`LOSSY_JPEG`).  A frame the service transcoded: the standard's own 5/3 low-pass of pydicom's
    samples (what a JPEG 2000 decoder returns for that level).  A JPEG 2000 codestream the service kept:
    that codestream (the file's own) decoded at that level by the OpenJPEG inside pydicom's plugin
    pylibjpeg-openjpeg, which decodes it to ``pixel_array`` at full resolution.
    """
    pixels = pydicom_frame(dataset, index, JPEG_PLUGIN if stored in LOSSY_JPEG else "")
    if reduce == 0:
        return pixels
    if stored == HTJ2K_LOSSLESS_RPCL:
        return resolution_levels(prepare_frame(pixels, int(dataset.BitsStored)))[-1 - reduce]
    assert stored in RETAINED_JPEG_2000, f"a {stored} frame decoded {reduce} levels down"
    codestream = own_frame(dataset, index)
    assert np.array_equal(openjpeg_reduced.decode(codestream, 0).astype(np.int64), pixels.astype(np.int64))
    return openjpeg_reduced.decode(codestream, reduce)


def palette_rgb(level: np.ndarray, dataset: pydicom.Dataset) -> np.ndarray:
    """``apply_color_lut`` in 0..1.

    pydicom 3.0 reads (0028,1201-1203) Palette Color LUT Data in the machine's byte order whatever the
    file's; for an Explicit VR Big Endian file it is given the little-endian words the metadata holds.
    (Segmented LUT Data, (0028,1221-1223), it reads in the file's byte order.)
    """
    if dataset.file_meta.TransferSyntaxUID == ExplicitVRBigEndian:
        for colour in ("Red", "Green", "Blue"):
            keyword = f"{colour}PaletteColorLookupTableData"
            if keyword in dataset:
                words = np.frombuffer(dataset[keyword].value, ">u2")
                setattr(dataset, keyword, words.astype("<u2").tobytes())
    bits = int(dataset.RedPaletteColorLookupTableDescriptor[2])
    return apply_color_lut(level, dataset).astype(np.float64) / ((1 << bits) - 1)


def expected_thumbnail(dataset: pydicom.Dataset, level: np.ndarray) -> np.ndarray:
    """pydicom's LUTs, normalized to 0..1, then the same resize, in grey levels (float)."""
    photometric = dataset.PhotometricInterpretation
    if photometric == "PALETTE COLOR":
        unit = palette_rgb(level, dataset)
    elif dataset.SamplesPerPixel == 3:  # pydicom converts YBR to RGB by default, as the import does
        unit = level.astype(np.float64) / ((1 << int(dataset.BitsStored)) - 1)
    else:
        modality = apply_modality_lut(level, dataset).astype(np.float64)
        if "WindowCenter" in dataset and "WindowWidth" in dataset:
            windowed = apply_voi_lut(modality, dataset).astype(np.float64)
            low = float(apply_voi_lut(np.array([np.iinfo(np.int32).min // 2]), dataset)[0])
            high = float(apply_voi_lut(np.array([np.iinfo(np.int32).max // 2]), dataset)[0])
            unit = (windowed - low) / (high - low)
        else:
            unit = voi_lut(modality, *robust_window(modality), function="LINEAR_EXACT")
        if photometric == "MONOCHROME1":
            unit = 1.0 - unit
    return np.rint(np.clip(area_resize(unit, LONGEST_SIDE), 0, 1) * 255)


def difference(a: np.ndarray, b: np.ndarray) -> int:
    assert a.shape == b.shape
    return int(np.abs(a.astype(np.int64) - b.astype(np.int64)).max())


def test_the_files_that_do_not_import_are_those_the_import_tests_list(imported: dict[str, Any]) -> None:
    # Given the import job over every bundled file
    # Then exactly the files listed as refused failed, so every other one is checked below
    assert imported["failed"] == set(NOT_IMPORTED)
    assert set(imported["sets"]) == set(BUNDLED) - set(NOT_IMPORTED) | {SYNTHETIC}
    assert len(RENDERED) + len(NO_PIXEL_DATA) == len(imported["sets"])


@pytest.mark.parametrize("name", CASES)
def test_a_thumbnail_is_within_one_grey_level_of_pydicoms_rendering(
    imported: dict[str, Any], name: str
) -> None:
    # Given the file's representative frame (a multi-frame instance's middle one), as the service serves it
    dataset = dataset_of(imported, name)
    chosen, stored, body = frame_stream(imported, name)
    assert chosen.frame_index == number_of_frames(dataset) // 2

    # When the stage decodes the level a 256-px thumbnail needs and renders it
    decoded = decode_frame(
        body, chosen.frame, chosen.dicom, transfer_syntax=stored, longest_side=LONGEST_SIDE
    )
    image = render(decoded.pixels, FrameDescription.from_metadata(chosen.dicom), LONGEST_SIDE).image

    # Then it is within one grey level of pydicom's rendering of the same level
    expected = expected_thumbnail(dataset, pydicom_level(dataset, chosen.frame_index, stored, decoded.reduce))
    if dataset.PhotometricInterpretation == "PALETTE COLOR":
        assert decoded.reduce == 0  # indices are labels: looked up at full resolution, then resized
    if stored in LOSSY_JPEG:
        assert decoded.reduce == 0  # a JPEG frame the service kept is read and decoded whole
    assert difference(image, expected) <= 1, name


@pytest.mark.parametrize("name", sorted(NO_PIXEL_DATA))
def test_an_instance_without_pixel_data_has_no_representative_frame(
    imported: dict[str, Any], name: str
) -> None:
    # Given an imported instance without pixel data
    assert "PixelData" not in dataset_of(imported, name)
    # Then it has no frame to show
    assert representative(imported["metadata"][name]) is None


def test_a_256_px_thumbnail_of_a_2048_frame_reads_a_small_prefix(imported: dict[str, Any]) -> None:
    chosen, _, body = frame_stream(imported, SYNTHETIC)
    prefix = read_prefix(body, LONGEST_SIDE)
    total = chosen.frame["FrameSizeInBytes"]
    assert prefix.reduce == 3
    assert not prefix.complete
    assert prefix.bytes_read < 0.15 * total


def test_a_checksum_mismatch_is_an_error(imported: dict[str, Any]) -> None:
    chosen, _, body = frame_stream(imported, "test_files/CT_small.dcm")
    pixels = decode_level(read_prefix(body, LONGEST_SIDE))
    wrong = {
        "PixelDataChecksumFromBaseToFullResolution": [
            {**level, "Checksum": (level["Checksum"] + 1) & 0xFFFFFFFF}
            for level in chosen.frame["PixelDataChecksumFromBaseToFullResolution"]
        ]
    }
    with pytest.raises(ChecksumMismatch):
        verify_level(pixels, wrong)


def test_a_truncated_frame_is_an_error(imported: dict[str, Any]) -> None:
    _, _, body = frame_stream(imported, SYNTHETIC)
    cut = io.BytesIO(body.read(2000))
    with pytest.raises(CodestreamError):
        read_prefix(cut, LONGEST_SIDE)

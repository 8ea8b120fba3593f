"""Thumbnails of frames served by the emulator: the prefix read, the checksum, the rendering.

Each frame is fetched with GetImageFrame and read only as far as the chosen resolution level needs;
the level is decoded, checked against the metadata's checksum, rendered and compared with a reference
computed independently from pydicom's ``pixel_array`` with ``apply_modality_lut`` and ``apply_voi_lut``.
"""

from __future__ import annotations

import gzip
import io
import json
from typing import Any

import imagecodecs
import numpy as np
import pydicom
import pytest
from pydicom.data import get_testdata_file
from pydicom.pixels import apply_modality_lut, apply_voi_lut

from ahi_pipeline.frame_choice import representative
from ahi_pipeline.htj2k_prefix import CodestreamError
from ahi_pipeline.render import area_resize, robust_window, voi_lut
from ahi_pipeline.thumbnails import ChecksumMismatch, decode_level, read_prefix, thumbnail, verify_level
from bench.synthetic import ct_series
from emulator.imaging.htj2k import prepare_frame, resolution_levels
from tests.emulator import helpers

pytestmark = pytest.mark.emulator

BUNDLED = ("CT_small.dcm", "MR_small.dcm", "SC_rgb.dcm", "MR2_J2KI.dcm", "US1_J2KR.dcm")


def reference(dataset: pydicom.Dataset, reduce: int, longest: int = 256) -> np.ndarray:
    """pydicom's own LUTs, normalized to 0..1, then the same resize, on pydicom's ``pixel_array``
    brought to the thumbnail's resolution level by the standard's own 5/3 low-pass (what a JPEG 2000
    decoder returns for that level; computed here from the original pixels, not by any decoder)."""
    pixels = dataset.pixel_array
    if reduce:
        pixels = resolution_levels(prepare_frame(pixels, int(dataset.BitsStored)))[-1 - reduce]
    if dataset.SamplesPerPixel == 3:  # pydicom converts YBR to RGB by default, as the import does
        return np.rint(np.clip(area_resize(pixels.astype(np.float64), longest) / 255.0, 0, 1) * 255)
    modality = apply_modality_lut(pixels, dataset).astype(np.float64)
    if "WindowCenter" in dataset and "WindowWidth" in dataset:
        windowed = apply_voi_lut(modality, dataset).astype(np.float64)
        low = float(apply_voi_lut(np.array([np.iinfo(np.int32).min // 2]), dataset)[0])
        high = float(apply_voi_lut(np.array([np.iinfo(np.int32).max // 2]), dataset)[0])
        unit = (windowed - low) / (high - low)
    else:
        unit = voi_lut(modality, *robust_window(modality), function="LINEAR_EXACT")
    if dataset.PhotometricInterpretation == "MONOCHROME1":
        unit = 1.0 - unit
    return np.rint(np.clip(area_resize(unit, longest), 0, 1) * 255)


@pytest.fixture(scope="module")
def imported(emulator: Any, moto_url: str) -> dict[str, Any]:
    """The bundled files and a 2048² synthetic CT slice, imported; metadata and files by image set."""
    import boto3  # noqa: PLC0415

    from tests.conftest import REGION, client_config  # noqa: PLC0415

    s3 = boto3.client("s3", region_name=REGION, endpoint_url=moto_url)
    ahi = boto3.client(
        "medical-imaging", region_name=REGION, endpoint_url=emulator.endpoint_url, config=client_config()
    )
    s3.create_bucket(Bucket="thumbnails-in")
    files = {}
    for name in BUNDLED:
        path = get_testdata_file(name)
        assert path is not None
        files[name] = open(path, "rb").read()  # noqa: SIM115 - small test files
    files["big.dcm"] = ct_series(1, size=2048)[0]
    datastore_id = helpers.create_datastore(ahi)
    result = helpers.run_import(ahi, s3, datastore_id=datastore_id, bucket="thumbnails-in", files=files)
    by_file = {
        line["inputFile"].rsplit("/", 1)[-1]: line["importResponse"]["imageSetId"] for line in result.success
    }
    documents = {}
    for name, image_set_id in by_file.items():
        blob = ahi.get_image_set_metadata(datastoreId=datastore_id, imageSetId=image_set_id)
        documents[name] = json.loads(gzip.decompress(blob["imageSetMetadataBlob"].read()))
    return {"ahi": ahi, "datastore": datastore_id, "sets": by_file, "documents": documents, "files": files}


def frame_stream(imported: dict[str, Any], name: str) -> tuple[Any, Any]:
    chosen = representative(imported["documents"][name])
    assert chosen is not None
    body = imported["ahi"].get_image_frame(
        datastoreId=imported["datastore"],
        imageSetId=imported["sets"][name],
        imageFrameInformation={"imageFrameId": chosen.frame_id},
    )["imageFrameBlob"]
    return chosen, body


@pytest.mark.parametrize("name", [*BUNDLED, "big.dcm"])
def test_a_thumbnail_is_within_one_grey_level_of_pydicoms_rendering(
    imported: dict[str, Any], name: str
) -> None:
    if name not in imported["sets"]:
        pytest.skip(f"{name} is not imported by the emulator")
    # Given the representative frame of the image set, read only as far as a 256-px level needs
    chosen, body = frame_stream(imported, name)
    prefix = read_prefix(body, 256)

    # When that level is decoded, checked and rendered
    pixels = decode_level(prefix)
    verify_level(pixels, chosen.frame)
    made = thumbnail(pixels, chosen.dicom)

    # Then the PNG is within one grey level of pydicom's rendering of the same level
    image = imagecodecs.png_decode(made.png).astype(np.int64)
    dataset = pydicom.dcmread(io.BytesIO(imported["files"][name]))
    expected = reference(dataset, prefix.reduce).astype(np.int64)
    assert image.shape == expected.shape
    assert np.abs(image - expected).max() <= 1, name


def test_a_256_px_thumbnail_of_a_2048_frame_reads_a_small_prefix(imported: dict[str, Any]) -> None:
    chosen, body = frame_stream(imported, "big.dcm")
    prefix = read_prefix(body, 256)
    total = chosen.frame["FrameSizeInBytes"]
    assert prefix.reduce == 3
    assert not prefix.complete
    assert prefix.bytes_read < 0.15 * total


def test_a_checksum_mismatch_is_an_error(imported: dict[str, Any]) -> None:
    chosen, body = frame_stream(imported, "CT_small.dcm")
    pixels = decode_level(read_prefix(body, 256))
    wrong = {
        "PixelDataChecksumFromBaseToFullResolution": [
            {**level, "Checksum": (level["Checksum"] + 1) & 0xFFFFFFFF}
            for level in chosen.frame["PixelDataChecksumFromBaseToFullResolution"]
        ]
    }
    with pytest.raises(ChecksumMismatch):
        verify_level(pixels, wrong)


def test_a_truncated_frame_is_an_error(imported: dict[str, Any]) -> None:
    _, body = frame_stream(imported, "big.dcm")
    cut = io.BytesIO(body.read(2000))
    with pytest.raises(CodestreamError):
        read_prefix(cut, 256)

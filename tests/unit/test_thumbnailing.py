"""The thumbnail stage's pure parts: settings, the contact sheet, the renderable check, decoding frames
stored in syntaxes other than HTJ2K (read whole, their own codec), and the sidecar's description."""

from __future__ import annotations

import io
import json
from typing import Any

import imagecodecs
import numpy as np
import pytest

from ahi_pipeline.frame_choice import FrameRef
from ahi_pipeline.pipeline_events import THUMBNAIL_RENDERED, thumbnail_rendered
from ahi_pipeline.render import RenderError
from ahi_pipeline.settings import SettingsError, ThumbnailSettings
from ahi_pipeline.thumbnailing import RenderedImage, check_renderable, compose_sheet
from ahi_pipeline.thumbnails import (
    HTJ2K_LOSSLESS_RPCL,
    ChecksumMismatch,
    DecodedFrame,
    UnsupportedFrame,
    decode_frame,
    stored_transfer_syntax,
)

pytestmark = pytest.mark.unit

DATASTORE = "0" * 32
ENV = {"DATASTORE_ID": DATASTORE, "OUTPUT_BUCKET": "output-bucket", "EVENT_BUS_NAME": "pipeline"}


class Body(io.BytesIO):
    """A GetImageFrame stream that remembers being closed and how much was read."""

    def __init__(self, data: bytes) -> None:
        super().__init__(data)
        self.was_closed = False

    def close(self) -> None:
        self.was_closed = True
        super().close()


# ---------------------------------------------------------------------- settings
def test_settings_defaults_and_paths() -> None:
    settings = ThumbnailSettings.from_env(ENV)
    assert (settings.size, settings.tile_size, settings.prefix) == (256, 128, "thumbnails/")
    assert settings.folder(DATASTORE, "a" * 32) == f"thumbnails/{DATASTORE}/{'a' * 32}/"
    assert ThumbnailSettings.from_env({**ENV, "THUMBNAIL_SIZE": "40"}).tile_size == 32


def test_settings_list_every_problem() -> None:
    with pytest.raises(SettingsError) as raised:
        ThumbnailSettings.from_env(
            {
                "DATASTORE_ID": "x",
                "OUTPUT_BUCKET": "Bad_Bucket",
                "THUMBNAIL_SIZE": "4096",
                "THUMBNAILS_PREFIX": "/p",
            }
        )
    text = str(raised.value)
    for expected in (
        "DATASTORE_ID",
        "OUTPUT_BUCKET",
        "EVENT_BUS_NAME",
        "THUMBNAIL_SIZE",
        "THUMBNAILS_PREFIX",
    ):
        assert expected in text
    with pytest.raises(SettingsError, match="THUMBNAIL_SIZE must be an integer"):
        ThumbnailSettings.from_env({**ENV, "THUMBNAIL_SIZE": "big"})


# ---------------------------------------------------------------------- contact sheet
def test_a_contact_sheet_centres_each_tile_in_its_cell_row_by_row() -> None:
    tiles = [np.full((4, 2), value, np.uint8) for value in (10, 20, 30, 40, 50)]
    sheet = compose_sheet(tiles, tile=4, columns=4, gap=1)
    assert sheet.shape == (2 * 4 + 1, 4 * 4 + 3)
    # tile 0: cell (0, 0), columns 1..2 (centred); tile 4: cell (1, 0), rows 5..8
    assert (sheet[0:4, 1:3] == 10).all()
    assert (sheet[0:4, 0] == 0).all()
    assert (sheet[0:4, 3] == 0).all()
    assert (sheet[0:4, 6:8] == 20).all()
    assert (sheet[5:9, 1:3] == 50).all()
    assert int(sheet.sum()) == sum(8 * v for v in (10, 20, 30, 40, 50))


def test_a_contact_sheet_with_a_colour_tile_is_rgb_and_grey_tiles_stay_grey() -> None:
    grey = np.full((2, 2), 7, np.uint8)
    colour = np.zeros((2, 2, 3), np.uint8)
    colour[..., 0] = 200
    sheet = compose_sheet([grey, colour], tile=2, gap=0)
    assert sheet.shape == (2, 4, 3)
    assert (sheet[:, :2] == 7).all()
    assert (sheet[:, 2:, 0] == 200).all()
    assert (sheet[:, 2:, 1:] == 0).all()


def test_a_contact_sheet_needs_a_tile() -> None:
    with pytest.raises(ValueError, match="at least one tile"):
        compose_sheet([], tile=8)


# ---------------------------------------------------------------------- renderable
@pytest.mark.parametrize(
    "photometric", ["MONOCHROME1", "MONOCHROME2", "RGB", "YBR_FULL", "YBR_FULL_422", "PALETTE COLOR"]
)
def test_supported_photometric_interpretations(photometric: str) -> None:
    assert check_renderable({"PhotometricInterpretation": photometric}).photometric == photometric


@pytest.mark.parametrize("photometric", ["YBR_PARTIAL_420", "HSV", "CMYK", "ARGB"])
def test_other_photometric_interpretations_are_refused_by_name(photometric: str) -> None:
    with pytest.raises(RenderError, match=photometric):
        check_renderable({"PhotometricInterpretation": photometric})


# ---------------------------------------------------------------------- frames stored as uploaded
def test_no_stored_transfer_syntax_means_htj2k_lossless_rpcl() -> None:
    assert stored_transfer_syntax({}) == HTJ2K_LOSSLESS_RPCL
    assert stored_transfer_syntax({"StoredTransferSyntaxUID": None}) == HTJ2K_LOSSLESS_RPCL
    jpeg = "1.2.840.10008.1.2.4.50"
    assert stored_transfer_syntax({"StoredTransferSyntaxUID": jpeg}) == jpeg


def gradient(rows: int = 48, columns: int = 64) -> np.ndarray:
    y, x = np.mgrid[0:rows, 0:columns]
    return ((x * 3 + y * 2) % 256).astype(np.uint8)


def test_a_jpeg_baseline_frame_is_read_whole_and_decoded_by_its_own_codec() -> None:
    pixels = gradient()
    data = bytes(imagecodecs.jpeg8_encode(pixels, level=95))
    body = Body(data)
    decoded = decode_frame(body, {}, {}, transfer_syntax="1.2.840.10008.1.2.4.50")
    assert body.was_closed
    assert (decoded.bytes_read, decoded.complete, decoded.reduce) == (len(data), True, 0)
    assert decoded.full_size == decoded.size == (64, 48)
    assert decoded.checksum is None  # no checksum in the metadata: not verified, and said so
    assert np.abs(decoded.pixels.astype(int) - pixels).max() <= 8  # lossy


def test_a_jpeg_ls_frame_decodes_exactly() -> None:
    pixels = (gradient().astype(np.uint16) * 16) + 5
    data = bytes(imagecodecs.jpegls_encode(pixels))
    decoded = decode_frame(Body(data), {}, {}, transfer_syntax="1.2.840.10008.1.2.4.80")
    assert np.array_equal(decoded.pixels, pixels)


def test_a_frame_whose_codec_rejects_it_is_unsupported_with_its_syntax_named() -> None:
    with pytest.raises(UnsupportedFrame, match=r"1\.2\.840\.10008\.1\.2\.4\.50 frame does not decode"):
        decode_frame(Body(b"\xff\xd8 not a jpeg"), {}, {}, transfer_syntax="1.2.840.10008.1.2.4.50")


def test_an_unknown_transfer_syntax_is_unsupported_and_the_stream_closed() -> None:
    body = Body(b"\x00" * 10)
    with pytest.raises(UnsupportedFrame, match=r"1\.2\.3\.4 are not supported"):
        decode_frame(body, {}, {}, transfer_syntax="1.2.3.4")
    assert body.was_closed


def test_a_checksum_given_for_a_level_is_checked_whatever_the_syntax() -> None:
    pixels = (gradient().astype(np.uint16) * 16) + 5
    data = bytes(imagecodecs.jpegls_encode(pixels))
    frame = {"PixelDataChecksumFromBaseToFullResolution": [{"Width": 64, "Height": 48, "Checksum": 1}]}
    with pytest.raises(ChecksumMismatch, match="64×48"):
        decode_frame(Body(data), frame, {}, transfer_syntax="1.2.840.10008.1.2.4.80")


@pytest.mark.parametrize(
    ("syntax", "dtype"),
    [("1.2.840.10008.1.2.1", "<u2"), ("1.2.840.10008.1.2.2", ">u2")],
)
def test_uncompressed_frames_by_byte_order(syntax: str, dtype: str) -> None:
    pixels = np.arange(12, dtype=np.uint16).reshape(3, 4) * 1000
    dicom = {"Rows": 3, "Columns": 4, "BitsAllocated": 16, "SamplesPerPixel": 1}
    decoded = decode_frame(Body(pixels.astype(dtype).tobytes()), {}, dicom, transfer_syntax=syntax)
    assert np.array_equal(decoded.pixels, pixels)


def test_uncompressed_planar_rgb_and_packed_bits() -> None:
    planes = np.arange(2 * 3 * 3, dtype=np.uint8).reshape(3, 2, 3)  # samples, rows, columns
    dicom = {"Rows": 2, "Columns": 3, "BitsAllocated": 8, "SamplesPerPixel": 3, "PlanarConfiguration": 1}
    decoded = decode_frame(Body(planes.tobytes()), {}, dicom, transfer_syntax="1.2.840.10008.1.2.1")
    assert np.array_equal(decoded.pixels, planes.transpose(1, 2, 0))
    # BitsAllocated 1 (a binary segmentation): LSB first, shown as 0/255
    bits = {"Rows": 2, "Columns": 4, "BitsAllocated": 1}
    decoded = decode_frame(Body(bytes([0b1010_0101])), {}, bits, transfer_syntax="1.2.840.10008.1.2.1")
    assert decoded.pixels.tolist() == [[255, 0, 255, 0], [0, 255, 0, 255]]


def test_an_uncompressed_frame_too_short_is_unsupported() -> None:
    dicom = {"Rows": 4, "Columns": 4, "BitsAllocated": 16}
    with pytest.raises(UnsupportedFrame, match="has 10 bytes, 32 expected"):
        decode_frame(Body(b"\x00" * 10), {}, dicom, transfer_syntax="1.2.840.10008.1.2.1")


# ---------------------------------------------------------------------- what the sidecar and event say
def test_the_sidecar_describes_a_frame_with_ids_and_numbers_only() -> None:
    ref = FrameRef("1.2.3", "1.2.3.4", "f" * 32, 0, {"PatientName": "DOE^JANE"}, {})
    decoded = DecodedFrame(
        np.zeros((256, 200), np.uint16), HTJ2K_LOSSLESS_RPCL, 2, (800, 1024), 5000, False, 42
    )
    described = RenderedImage(
        np.zeros((256, 200), np.uint8), ref, decoded, 100_000, (40.0, 400.0), "metadata"
    ).describe()
    assert described == {
        "imageFrameId": "f" * 32,
        "frameIndex": 0,
        "transferSyntax": HTJ2K_LOSSLESS_RPCL,
        "level": {"reduce": 2, "width": 200, "height": 256},
        "fullSize": {"width": 800, "height": 1024},
        "bytesRead": 5000,
        "frameBytes": 100_000,
        "wholeFrameRead": False,
        "checksum": {"crc32": 42, "verified": True},
        "window": {"center": 40.0, "width": 400.0, "source": "metadata"},
    }
    assert "DOE" not in json.dumps(described)
    assert "1.2.3" not in json.dumps(described)


def test_the_thumbnail_rendered_event() -> None:
    entry: dict[str, Any] = thumbnail_rendered(
        bus="pipeline",
        datastore_id=DATASTORE,
        image_set_id="a" * 32,
        bucket="output-bucket",
        thumbnail_key="thumbnails/x/thumbnail.png",
        sidecar_key="thumbnails/x/thumbnail.json",
        contact_sheet_keys=["thumbnails/x/contact-sheet-01.png"],
        width=256,
        height=200,
        image_set_arn="arn:aws:medical-imaging:us-east-1:123456789012:datastore/x/imageset/y",
    )
    assert entry["DetailType"] == THUMBNAIL_RENDERED == "Thumbnail Rendered"
    assert entry["Source"] == "healthimaging-automation"
    detail = json.loads(entry["Detail"])
    assert detail["contactSheetKeys"] == ["thumbnails/x/contact-sheet-01.png"]
    assert (detail["width"], detail["height"], detail["schemaVersion"]) == (256, 200, 1)
    assert entry["Resources"] == ["arn:aws:medical-imaging:us-east-1:123456789012:datastore/x/imageset/y"]


def rgb_jpeg_as_dicom_writes_it(rgb: np.ndarray) -> bytes:
    """A JPEG of RGB samples, not colour transformed, with no Adobe marker and component ids 1, 2, 3:
    what many DICOM writers produce, and what libjpeg would take for YCbCr."""
    data = bytearray(imagecodecs.jpeg8_encode(rgb, level=98, colorspace="RGB", outcolorspace="RGB"))
    assert data[2:4] == b"\xff\xee"  # APP14 "Adobe", transform 0
    del data[2 : 4 + int.from_bytes(data[4:6], "big")]
    sof, sos = data.index(b"\xff\xc0"), data.index(b"\xff\xda")
    for component in range(3):
        data[sof + 10 + 3 * component] = component + 1  # SOF: Nf at +9, then (Ci, sampling, Tq)
        data[sos + 5 + 2 * component] = component + 1  # SOS: Ns at +4, then (Cs, Td/Ta)
    return bytes(data)


def test_a_jpeg_frame_whose_photometric_interpretation_is_rgb_is_not_colour_transformed() -> None:
    y, x = np.mgrid[0:32, 0:48]
    rgb = np.stack([(x * 5) % 256, (y * 7) % 256, ((x + y) * 3) % 256], -1).astype(np.uint8)
    data = rgb_jpeg_as_dicom_writes_it(rgb)
    jpeg = "1.2.840.10008.1.2.4.50"
    as_rgb = decode_frame(Body(data), {}, {"PhotometricInterpretation": "RGB"}, transfer_syntax=jpeg)
    assert np.abs(as_rgb.pixels.astype(int) - rgb).max() <= 2
    # … where libjpeg's own guess (YCbCr) would shift the colours
    guessed = decode_frame(
        Body(data), {}, {"PhotometricInterpretation": "YBR_FULL_422"}, transfer_syntax=jpeg
    )
    assert np.abs(guessed.pixels.astype(int) - rgb).max() > 50

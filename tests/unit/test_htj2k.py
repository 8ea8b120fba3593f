"""HTJ2K transcoding: codestream layout, losslessness, per-level checksums and their decoders."""

from __future__ import annotations

import struct
import zlib
from typing import Any

import imagecodecs
import numpy as np
import openjpeg
import pytest

from emulator.imaging import htj2k
from emulator.imaging.htj2k import FrameInfo, HTJ2KError, LevelChecksum, VerificationError
from tests.unit import openjpeg_reduced

pytestmark = pytest.mark.unit

RNG_SEED = 20240628


def _natural(shape: tuple[int, ...], low: int, high: int, seed: int = RNG_SEED) -> np.ndarray[Any, Any]:
    """A smooth image with noise that stays well inside [low, high] (no wavelet overshoot)."""
    rng = np.random.default_rng(seed)
    rows, columns = shape[:2]
    y, x = np.mgrid[0:rows, 0:columns]
    base = np.sin(x / 17.0) * np.cos(y / 23.0)
    if len(shape) == 3:
        base = np.stack([np.roll(base, 5 * c, axis=1) for c in range(shape[2])], axis=-1)
    middle, spread = (low + high) / 2, (high - low) / 4
    return np.rint(middle + spread * base + rng.normal(0, spread / 20, shape)).astype(np.int64)


def _extreme(shape: tuple[int, ...], low: int, high: int, seed: int = RNG_SEED) -> np.ndarray[Any, Any]:
    """Random samples at the two ends of the range: reduced levels overshoot it."""
    rng = np.random.default_rng(seed)
    return np.where(rng.random(shape) < 0.5, low, high).astype(np.int64)


FRAMES = {
    "ct-int16": (np.int16, 16, _natural((512, 512), -1024, 3071)),
    "mr-uint16-12bit": (np.uint16, 12, _natural((256, 230), 0, 4095)),
    "cr-uint16-15bit-odd": (np.uint16, 15, _natural((301, 187), 0, 32767)),
    "signed-12bit": (np.int16, 12, _natural((97, 130), -2048, 2047)),
    "us-uint8": (np.uint8, 8, _natural((120, 160), 0, 255)),
    "rgb-uint8": (np.uint8, 8, _natural((100, 133, 3), 0, 255)),
    "rgb-uint16": (np.uint16, 16, _natural((65, 64, 3), 0, 65535)),
    "dose-uint32-24bit": (np.uint32, 24, _natural((40, 50), 0, (1 << 24) - 1)),
    "tiny": (np.uint8, 8, _natural((3, 3), 0, 255)),
    "thin": (np.uint16, 16, _natural((300, 2), 0, 65535)),
    "extreme-uint8": (np.uint8, 8, _extreme((64, 90), 0, 255)),
    "extreme-int16-12bit": (np.int16, 12, _extreme((77, 65), -2048, 2047)),
    "extreme-rgb": (np.uint8, 8, _extreme((50, 41, 3), 0, 255)),
    "extreme-uint16": (np.uint16, 16, _extreme((70, 70), 0, 65535)),
}


@pytest.fixture(params=sorted(FRAMES), name="frame")
def _frame(request: pytest.FixtureRequest) -> htj2k.PreparedFrame:
    dtype, bits_stored, samples = FRAMES[request.param]
    return htj2k.prepare_frame(samples.astype(dtype), bits_stored)


@pytest.mark.parametrize(
    ("rows", "columns", "levels"),
    [
        (512, 512, 3),
        (512, 375, 3),
        (3062, 3730, 6),
        (64, 64, 1),  # imagecodecs cannot write 0 levels, so at least one
        (65, 10, 1),
        (129, 64, 2),
        (2000, 30, 4),  # capped at floor(log2(30)) by OpenJPH
        (1, 500, 0),
        (3, 3, 1),
    ],
)
def test_decomposition_levels_bring_the_base_to_64_pixels(rows: int, columns: int, levels: int) -> None:
    # Given a frame size
    # When choosing the decomposition levels
    chosen = htj2k.decomposition_levels(rows, columns)

    # Then the base resolution is at most 64 pixels on its longest side, where OpenJPH allows it
    assert chosen == levels


def test_level_sizes_halve_rounding_up_like_the_service_example() -> None:
    # Given the 512x375 frame of the metadata example (256x188 one level down)
    # When listing its resolution levels
    sizes = htj2k.level_sizes(375, 512, htj2k.decomposition_levels(375, 512))

    # Then each level is ceil(full / 2**k), base first
    assert sizes == ((64, 47), (128, 94), (256, 188), (512, 375))


def test_codestream_has_the_htj2k_rpcl_layout(frame: htj2k.PreparedFrame) -> None:
    # Given a prepared frame
    # When encoding it
    codestream = htj2k.encode(frame)

    # Then it is a lossless HTJ2K codestream in RPCL order, one tile-part per resolution, with TLM
    info = htj2k.parse_codestream(codestream)
    assert info.htj2k
    assert info.reversible
    assert info.progression_order == "RPCL"
    assert (info.width, info.height, info.components) == (frame.columns, frame.rows, frame.samples)
    assert (info.precision, info.signed) == (frame.precision, frame.signed)
    assert info.color_transform == (frame.samples == 3)
    assert info.decomposition_levels == frame.decomposition_levels
    assert [part.index for part in info.tile_parts] == list(range(frame.decomposition_levels + 1))
    assert {part.count for part in info.tile_parts} == {frame.decomposition_levels + 1}
    assert info.tlm == tuple(part.length for part in info.tile_parts)


@pytest.mark.parametrize(
    ("dtype", "bits_stored", "signed", "precision"),
    [(np.uint16, 12, False, 12), (np.int16, 12, True, 12), (np.int16, 16, True, 16), (np.uint8, 8, False, 8)],
)
def test_precision_and_signedness_follow_bits_stored(
    dtype: type[np.integer[Any]], bits_stored: int, signed: bool, precision: int
) -> None:
    # Given samples that fit (0028,0101) BitsStored
    samples = np.arange(-8, 8 * 31 - 8, dtype=np.int64).reshape(8, 31)
    samples = samples - samples.min() if not signed else samples

    # When preparing and encoding them
    frame = htj2k.prepare_frame(samples.astype(dtype), bits_stored)
    info = htj2k.parse_codestream(htj2k.encode(frame))

    # Then the codestream declares BitsStored bits and the PixelRepresentation's signedness
    assert (frame.precision, frame.signed) == (precision, signed)
    assert (info.precision, info.signed) == (precision, signed)


def test_precision_grows_when_the_samples_do_not_fit_bits_stored() -> None:
    # Given a decoder that returned 13-bit values for BitsStored 12
    samples = np.array([[0, 8191], [17, 4096]], dtype=np.uint16)

    # When preparing the frame
    frame = htj2k.prepare_frame(samples, 12)

    # Then the precision is raised to keep the frame lossless
    assert frame.precision == 13


def test_samples_are_stored_in_the_smallest_little_endian_container() -> None:
    # Given big-endian 16-bit samples that hold only 8 bits
    samples = np.arange(64, dtype=">u2").reshape(8, 8)

    # When preparing them with BitsStored 8
    frame = htj2k.prepare_frame(samples, 8)

    # Then one little-endian byte per sample is encoded and checksummed
    assert frame.pixels.dtype == np.dtype("u1")
    assert frame.pixels.flags.c_contiguous
    assert np.array_equal(frame.pixels, samples)


def test_float_samples_are_rejected() -> None:
    # Given floating point samples
    # When preparing them
    # Then they cannot be transcoded
    with pytest.raises(HTJ2KError, match="float64"):
        htj2k.prepare_frame(np.zeros((4, 4)), 16)


def test_frames_round_trip_losslessly_through_both_decoders(frame: htj2k.PreparedFrame) -> None:
    # Given an encoded and verified frame
    codestream = htj2k.encode_and_verify(frame)

    # When decoding it with OpenJPH (imagecodecs) and OpenJPEG (pylibjpeg-openjpeg)
    by_openjph = imagecodecs.htj2k_decode(codestream)
    by_openjpeg = openjpeg.decode(codestream, 0)

    # Then both return the original samples, and the verification checksum is the original's
    assert np.array_equal(by_openjph, frame.pixels)
    assert by_openjph.dtype == frame.pixels.dtype
    assert np.array_equal(by_openjpeg, frame.pixels)


def test_level_checksums_are_what_openjpeg_decodes_at_every_reduced_resolution(
    frame: htj2k.PreparedFrame,
) -> None:
    # Given an encoded frame and its checksums, base first
    codestream = htj2k.encode(frame)
    checksums = htj2k.level_checksums(frame)
    levels = frame.decomposition_levels
    assert len(checksums) == levels + 1

    for reduce in range(levels + 1):
        # When OpenJPEG discards `reduce` resolution levels (pylibjpeg-openjpeg, and imagecodecs' build)
        by_pylibjpeg = openjpeg_reduced.decode(codestream, reduce)
        by_imagecodecs = imagecodecs.jpeg2k_decode(codestream, skipres=reduce or None)

        # Then its samples are that level's, with that level's size and checksum
        expected = checksums[levels - reduce]
        assert by_pylibjpeg.shape[:2] == (expected.height, expected.width)
        assert zlib.crc32(by_pylibjpeg.tobytes()) == expected.checksum
        assert np.array_equal(by_imagecodecs, by_pylibjpeg)


def test_openjph_agrees_at_reduced_resolutions_except_where_it_does_not_clip(
    frame: htj2k.PreparedFrame,
) -> None:
    # Given an encoded frame and its reduced levels
    codestream = htj2k.encode(frame)
    expected_levels = htj2k.resolution_levels(frame)
    low, high = frame.sample_range

    for reduce in range(frame.decomposition_levels + 1):
        # When OpenJPH discards `reduce` resolution levels
        by_openjph = imagecodecs.htj2k_decode(codestream, skipres=reduce or None)

        # Then it returns the same samples, except where the level overshoots the sample range:
        # OpenJPEG clips those, OpenJPH wraps them around
        expected = expected_levels[frame.decomposition_levels - reduce]
        differ = by_openjph != expected
        assert by_openjph.shape == expected.shape
        assert np.all((expected[differ] == low) | (expected[differ] == high))


def test_openjph_overshoot_is_real_for_extreme_frames() -> None:
    # Given a frame of black and white pixels whose reduced levels overshoot 0..255
    frame = htj2k.prepare_frame(_extreme((64, 90), 0, 255).astype(np.uint8), 8)
    codestream = htj2k.encode(frame)

    # When decoding one level down with both decoders
    by_openjph = imagecodecs.htj2k_decode(codestream, skipres=1)
    by_openjpeg = openjpeg_reduced.decode(codestream, 1)

    # Then they disagree, and the checksum follows OpenJPEG's clipped samples
    assert not np.array_equal(by_openjph, by_openjpeg)
    assert htj2k.level_checksums(frame)[-2].checksum == zlib.crc32(by_openjpeg.tobytes())


def test_a_codestream_prefix_decodes_to_the_lower_resolutions(frame: htj2k.PreparedFrame) -> None:
    # Given an encoded frame, its tile-parts (one per resolution) and its reduced levels
    codestream = htj2k.encode(frame)
    info = htj2k.parse_codestream(codestream)
    expected_levels = htj2k.resolution_levels(frame)

    for resolution, part in enumerate(info.tile_parts):
        # When a client reads the codestream only up to the end of that resolution's tile-part
        prefix = codestream[: part.offset + part.length] + b"\xff\xd9"
        reduce = frame.decomposition_levels - resolution

        # Then OpenJPEG decodes that resolution from the prefix alone
        assert np.array_equal(openjpeg_reduced.decode(prefix, reduce), expected_levels[resolution])


def test_checksums_cover_interleaved_little_endian_samples() -> None:
    # Given a 2x2 signed 16-bit RGB frame
    samples = np.array([[[1, -2, 3], [4, 5, -6]], [[-7, 8, 9], [10, -11, 12]]], dtype=np.int16)
    frame = htj2k.prepare_frame(samples, 16)

    # When checksumming its full resolution
    full = htj2k.level_checksums(frame)[-1]

    # Then the CRC-32 runs over R, G, B of each pixel in turn, two little-endian signed bytes each
    packed = struct.pack("<12h", *samples.ravel().tolist())
    assert full == LevelChecksum(width=2, height=2, checksum=zlib.crc32(packed))


def test_verification_rejects_a_frame_that_decodes_differently(monkeypatch: pytest.MonkeyPatch) -> None:
    # Given an encoder whose output decodes to different samples
    frame = htj2k.prepare_frame(_natural((32, 32), 0, 255).astype(np.uint8), 8)
    original_decode = htj2k.decode
    monkeypatch.setattr(htj2k, "decode", lambda codestream: original_decode(codestream) ^ 1)

    # When encoding and verifying it
    # Then verification fails, reporting both full-resolution checksums
    original = htj2k.level_checksums(frame)[-1].checksum
    with pytest.raises(VerificationError, match=rf"differs from the original's \({original}\)"):
        htj2k.encode_and_verify(frame)


def test_openjph_cannot_write_frames_one_pixel_thin_at_the_lowest_value() -> None:
    # Given a frame one pixel wide that reaches 0 (OpenJPH 0.32 writes it without decomposition)
    frame = htj2k.prepare_frame(np.arange(56, dtype=np.uint8).reshape(56, 1) * 4, 8)
    assert frame.decomposition_levels == 0

    # When encoding and verifying it
    # Then verification catches the corrupt codestream
    with pytest.raises(VerificationError):
        htj2k.encode_and_verify(frame)


def test_parse_codestream_rejects_other_data() -> None:
    # Given bytes that are not a codestream
    # When parsing them
    # Then the structure is refused
    with pytest.raises(HTJ2KError):
        htj2k.parse_codestream(b"\x00\x01\x02\x03")


def test_frame_info_is_an_image_frames_entry() -> None:
    # Given the information of one stored frame
    info = FrameInfo(
        frame_id="0d1c97c51b773198a3df44383a5fd306",
        checksums=(LevelChecksum(256, 188, 2598394845), LevelChecksum(512, 375, 1227709180)),
        min_pixel_value=451,
        max_pixel_value=1466,
        frame_size_in_bytes=384000,
    )

    # When rendering it for the metadata document
    entry = info.as_metadata()

    # Then it has the documented keys, checksums from base to full resolution
    assert entry == {
        "ID": "0d1c97c51b773198a3df44383a5fd306",
        "PixelDataChecksumFromBaseToFullResolution": [
            {"Width": 256, "Height": 188, "Checksum": 2598394845},
            {"Width": 512, "Height": 375, "Checksum": 1227709180},
        ],
        "MinPixelValue": 451,
        "MaxPixelValue": 1466,
        "FrameSizeInBytes": 384000,
    }


def test_the_reference_decoder_is_the_openjpeg_of_pylibjpeg() -> None:
    # Given the ctypes bridge into pylibjpeg-openjpeg
    # When asking its version
    # Then it is OpenJPEG 2.5, which decodes HTJ2K
    assert openjpeg_reduced.version().startswith("2.5")

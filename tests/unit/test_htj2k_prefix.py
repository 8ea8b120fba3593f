"""Reading a low resolution level of an HTJ2K frame from a prefix of the codestream the emulator stores."""

from __future__ import annotations

import dataclasses
import functools
import struct
from typing import Any

import imagecodecs
import numpy as np
import pytest

from ahi_pipeline.htj2k_prefix import (
    EOC,
    Codestream,
    CodestreamError,
    choose_reduce,
    parse_header,
    prefix_length,
    truncated_codestream,
)
from emulator.imaging import htj2k

pytestmark = pytest.mark.unit

RNG_SEED = 20240628
TLM, COD, SOT = 0xFF55, 0xFF52, 0xFF90


def _phantom(shape: tuple[int, ...], low: int, high: int) -> np.ndarray[Any, Any]:
    """A CT-like frame: textured tissue in an ellipse, a bright rim, air around it (sharp edges)."""
    rng = np.random.default_rng(RNG_SEED)
    rows, columns = shape[:2]
    y, x = np.mgrid[0:rows, 0:columns]
    radius = np.hypot((x - columns / 2) / (0.45 * columns), (y - rows / 2) / (0.4 * rows))
    span = high - low
    tissue = low + span * (0.3 + 0.05 * np.sin(x / 13.0) * np.cos(y / 19.0))
    frame = np.where(radius < 1, tissue, low)
    frame = np.where((radius > 0.9) & (radius < 1), low + 0.8 * span, frame)
    if len(shape) == 3:
        frame = np.stack([np.roll(frame, 7 * c, axis=1) for c in range(shape[2])], axis=-1)
    noisy = frame + rng.normal(0, span / 200, shape) * (frame > low)
    return np.rint(np.clip(noisy, low, high)).astype(np.int64)


# name: (shape, dtype, BitsStored, low, high)
FRAMES: dict[str, tuple[tuple[int, ...], type[np.integer[Any]], int, int, int]] = {
    "ct-512-uint16-12bit": ((512, 512), np.uint16, 12, 0, 4095),
    "ct-2048-uint16-12bit": ((2048, 2048), np.uint16, 12, 0, 4095),
    "odd-333x517-uint16": ((333, 517), np.uint16, 12, 0, 4095),
    "ct-int16-signed": ((384, 512), np.int16, 16, -1024, 3071),
    "rgb-uint8": ((240, 320, 3), np.uint8, 8, 0, 255),
    "small-64x64": ((64, 64), np.uint16, 12, 0, 4095),
    "small-40x30": ((40, 30), np.uint8, 8, 0, 255),
}


@functools.cache
def _stored(name: str) -> tuple[htj2k.PreparedFrame, bytes]:
    """The frame and the codestream the emulator stores for it (what ``instance._transcode`` keeps)."""
    shape, dtype, bits_stored, low, high = FRAMES[name]
    frame = htj2k.prepare_frame(_phantom(shape, low, high).astype(dtype), bits_stored)
    return frame, htj2k.encode_and_verify(frame)


def _openjph(codestream: bytes, reduce: int) -> np.ndarray[Any, Any]:
    return imagecodecs.htj2k_decode(codestream, skipres=reduce or None)


def _openjpeg(codestream: bytes, reduce: int) -> np.ndarray[Any, Any]:
    return imagecodecs.jpeg2k_decode(codestream, skipres=reduce or None)


def _segments(codestream: bytes) -> list[tuple[int, int, int]]:
    """The main header's marker segments: (marker, offset of the marker, offset after the segment)."""
    position, found = 2, []
    while (marker := struct.unpack_from(">H", codestream, position)[0]) != SOT:
        end = position + 2 + struct.unpack_from(">H", codestream, position + 2)[0]
        found.append((marker, position, end))
        position = end
    return found


def _without(codestream: bytes, marker: int) -> bytes:
    """The codestream with every main-header segment of ``marker`` cut out (nothing else fixed)."""
    for code, start, end in reversed(_segments(codestream)):
        if code == marker:
            codestream = codestream[:start] + codestream[end:]
    return codestream


def _with_tlm(codestream: bytes, *segments: bytes) -> bytes:
    """The codestream with its TLM segments replaced by ``segments`` (where the first one was)."""
    start = next(start for code, start, _ in _segments(codestream) if code == TLM)
    stripped = _without(codestream, TLM)
    return stripped[:start] + b"".join(segments) + stripped[start:]


def _tlm(lengths: list[int], tiles: list[int], tile_size: int, length_size: int, index: int = 0) -> bytes:
    """A TLM marker segment with Stlm's ST = ``tile_size`` and SP = ``length_size`` bytes."""
    stlm = (tile_size << 4) | (0x40 if length_size == 4 else 0)
    tile_format = {0: "", 1: "B", 2: "H"}[tile_size]
    entry = ">" + tile_format + ("I" if length_size == 4 else "H")
    body = b"".join(
        struct.pack(entry, *([tile] if tile_size else []), length)
        for tile, length in zip(tiles, lengths, strict=True)
    )
    return struct.pack(">HHBB", TLM, 4 + len(body), index, stlm) + body


# --- the emulator's frames ---------------------------------------------------------------------------


@pytest.mark.parametrize("name", sorted(FRAMES))
def test_header_describes_the_stored_frame(name: str) -> None:
    # Given a frame as the emulator stores it
    frame, codestream = _stored(name)

    # When parsing its main header
    header = parse_header(codestream)

    # Then it declares the frame, RPCL, and one TLM-listed tile-part per resolution
    assert (header.width, header.height) == (frame.columns, frame.rows)
    assert [(c.precision, c.signed) for c in header.components] == [(frame.precision, frame.signed)] * (
        frame.samples
    )
    assert header.htj2k
    assert header.reversible
    assert header.progression_order == "RPCL"
    assert (
        header.levels == frame.decomposition_levels == htj2k.decomposition_levels(frame.rows, frame.columns)
    )
    assert header.resolutions == header.levels + 1
    assert header.tile_parts is not None
    assert len(header.tile_parts) == header.resolutions
    assert header.main_header_length + sum(header.tile_parts) + len(EOC) == len(codestream)
    assert codestream[header.main_header_length : header.main_header_length + 2] == b"\xff\x90"


@pytest.mark.parametrize("name", sorted(FRAMES))
def test_prefix_lengths_grow_with_the_resolution(name: str) -> None:
    # Given a stored frame
    _, codestream = _stored(name)
    header = parse_header(codestream)

    # When asking how many bytes each resolution needs, base first
    found = [prefix_length(codestream, reduce) for reduce in range(header.levels, -1, -1)]

    # Then each is the header plus one more tile-part, the full resolution all but EOC
    lengths = [length for length in found if length is not None]
    assert len(lengths) == len(found)
    assert lengths == sorted(set(lengths))  # strictly increasing
    assert lengths[-1] <= len(codestream)
    assert header.tile_parts is not None
    assert lengths[0] == header.main_header_length + header.tile_parts[0]
    assert lengths[-1] == len(codestream) - len(EOC)


@pytest.mark.parametrize("name", sorted(FRAMES))
def test_a_prefix_decodes_to_exactly_that_level_of_the_full_frame(name: str) -> None:
    # Given a stored frame and its resolution levels (what its per-level checksums cover), base first
    frame, codestream = _stored(name)
    header = parse_header(codestream)
    levels = htj2k.resolution_levels(frame)

    for reduce in range(header.levels + 1):
        # When decoding only the prefix that resolution needs
        prefix = truncated_codestream(codestream, reduce)
        assert prefix is not None
        by_openjph = _openjph(prefix, reduce)
        by_openjpeg = _openjpeg(prefix, reduce)

        # Then both decoders return what they return for the whole frame at that level
        # (OpenJPH wraps overshooting samples where OpenJPEG clips, so each is compared with itself)
        assert np.array_equal(by_openjph, _openjph(codestream, reduce))
        assert np.array_equal(by_openjpeg, _openjpeg(codestream, reduce))
        assert np.array_equal(by_openjpeg, levels[header.levels - reduce])
        width, height = header.size_at(reduce)
        assert by_openjph.shape[:2] == by_openjpeg.shape[:2] == (height, width)
        assert by_openjph.dtype == by_openjpeg.dtype == frame.pixels.dtype


def test_a_256_pixel_thumbnail_of_a_2048_frame_needs_a_small_fraction_of_it() -> None:
    # Given a stored 2048x2048 12-bit frame
    _, codestream = _stored("ct-2048-uint16-12bit")
    header = parse_header(codestream)

    # When choosing the level of a 256-pixel thumbnail and its prefix
    reduce = choose_reduce(header, 256)
    length = prefix_length(header, reduce)

    # Then three levels are skipped and at most 15% of the frame is read
    assert reduce == 3
    assert header.size_at(reduce) == (256, 256)
    assert length is not None
    assert length <= 0.15 * len(codestream)


def test_openjpeg_needs_eoc_after_a_prefix_and_openjph_does_not() -> None:
    # Given the prefix of a stored frame's base resolution, without an EOC marker
    _, codestream = _stored("ct-512-uint16-12bit")
    header = parse_header(codestream)
    length = prefix_length(codestream, header.levels)
    assert length is not None
    bare = codestream[:length]

    # When decoding it with both decoders
    # Then OpenJPH decodes it, OpenJPEG refuses it, which is why truncated_codestream appends EOC
    assert np.array_equal(_openjph(bare, header.levels), _openjph(codestream, header.levels))
    with pytest.raises(imagecodecs.Jpeg2kError):
        _openjpeg(bare, header.levels)
    assert truncated_codestream(codestream, header.levels) == bare + EOC


def test_the_main_header_alone_gives_the_prefix_length() -> None:
    # Given only the first bytes of a stored frame, up to its first SOT marker
    _, codestream = _stored("odd-333x517-uint16")
    header = parse_header(codestream)
    first_bytes = codestream[: header.main_header_length + 2]

    # When asking for the prefix from those bytes, or from the parsed header
    # Then the answer is the one the whole codestream gives
    for reduce in range(header.levels + 1):
        expected = prefix_length(codestream, reduce)
        assert prefix_length(first_bytes, reduce) == prefix_length(header, reduce) == expected


def test_a_prefix_read_exactly_is_enough() -> None:
    # Given exactly the bytes one level needs, and one byte less
    _, codestream = _stored("rgb-uint8")
    length = prefix_length(codestream, 1)
    assert length is not None

    # When truncating them
    # Then the exact read suffices and the short one is refused
    assert truncated_codestream(codestream[:length], 1) == codestream[:length] + EOC
    with pytest.raises(CodestreamError, match="truncated codestream"):
        truncated_codestream(codestream[: length - 1], 1)


# --- other layouts -----------------------------------------------------------------------------------


def test_a_codestream_without_tlm_has_no_prefix() -> None:
    # Given a stored frame with its TLM marker segment cut out, and a frame OpenJPH wrote without TLM
    frame, codestream = _stored("ct-512-uint16-12bit")
    stripped = _without(codestream, TLM)
    plain = imagecodecs.htj2k_encode(
        frame.pixels, reversible=True, bitspersample=frame.precision, resolutions=3, prog_order="RPCL"
    )

    for data in (stripped, bytes(plain)):
        # When asking for a prefix
        header = parse_header(data)

        # Then there is none: the caller reads the whole frame
        assert header.tile_parts is None
        assert prefix_length(data, 1) is None
        assert truncated_codestream(data, 1) is None


@pytest.mark.parametrize(("tile_size", "length_size"), [(0, 2), (0, 4), (1, 2), (1, 4), (2, 2), (2, 4)])
def test_every_tlm_variant_gives_the_same_prefix(tile_size: int, length_size: int) -> None:
    # Given a stored frame whose TLM is rewritten with other tile index and length sizes (Stlm ST, SP),
    # split over two marker segments
    _, codestream = _stored("small-64x64")
    header = parse_header(codestream)
    assert header.tile_parts is not None
    lengths = list(header.tile_parts)
    tiles = [0] * len(lengths)
    rewritten = _with_tlm(
        codestream,
        _tlm(lengths[:1], tiles[:1], tile_size, length_size, index=0),
        _tlm(lengths[1:], tiles[1:], tile_size, length_size, index=1),
    )

    # When parsing it and cutting a prefix
    parsed = parse_header(rewritten)
    prefix = truncated_codestream(rewritten, 1)

    # Then the tile-parts are the same, and so is what the prefix decodes to
    assert parsed.tile_parts == header.tile_parts
    assert parsed.tile_part_tiles == (None if tile_size == 0 else tuple(tiles))
    shift = parsed.main_header_length - header.main_header_length
    assert prefix_length(rewritten, 1) == (prefix_length(codestream, 1) or 0) + shift
    assert prefix is not None
    assert np.array_equal(_openjph(prefix, 1), _openjph(codestream, 1))


def test_tiled_frames_need_the_tile_parts_of_every_tile() -> None:
    # Given a frame OpenJPH wrote in 8 tiles, one tile-part per resolution each, tile after tile
    pixels = _phantom((300, 500), 0, 4095).astype(np.uint16)
    codestream = bytes(
        imagecodecs.htj2k_encode(
            pixels,
            reversible=True,
            bitspersample=12,
            resolutions=3,
            tlm=True,
            tilepart=imagecodecs.HTJ2K.TILEPART.RESOLUTIONS,
            prog_order="RPCL",
            tile=(128, 256),
        )
    )
    header = parse_header(codestream)
    assert header.tiles == 8
    assert header.tile_part_tiles == tuple(tile for tile in range(8) for _ in range(4))

    for reduce in range(header.levels + 1):
        # When cutting the prefix of a level
        prefix = truncated_codestream(codestream, reduce)

        # Then it reaches the last tile's tile-part of that level, and decodes like the whole frame
        assert prefix is not None
        assert header.tile_parts is not None
        skipped = header.tile_parts[len(header.tile_parts) - reduce :]  # the last tile's higher levels
        assert len(prefix) == len(codestream) - sum(skipped)
        assert np.array_equal(_openjph(prefix, reduce), _openjph(codestream, reduce))
        assert np.array_equal(_openjpeg(prefix, reduce), _openjpeg(codestream, reduce))


def test_tile_parts_split_by_component_are_not_mistaken_for_resolutions() -> None:
    # Given an RGB frame with 3 resolutions written as 3 tile-parts split by component (CPRL)
    pixels = _phantom((100, 120, 3), 0, 255).astype(np.uint8)
    codestream = bytes(
        imagecodecs.htj2k_encode(
            pixels,
            reversible=True,
            rgb=True,
            resolutions=2,
            tlm=True,
            tilepart=imagecodecs.HTJ2K.TILEPART.COMPONENTS,
            prog_order="CPRL",
        )
    )
    header = parse_header(codestream)
    assert header.tile_parts is not None
    assert len(header.tile_parts) == header.resolutions == 3

    # When asking for the base resolution's prefix
    # Then there is none: the progression is not resolution first
    assert prefix_length(codestream, 2) is None


def test_a_frame_in_a_single_tile_part_needs_all_of_it() -> None:
    # Given a frame OpenJPH wrote with TLM but without splitting its tile
    pixels = _phantom((200, 100), 0, 255).astype(np.uint8)
    codestream = bytes(imagecodecs.htj2k_encode(pixels, reversible=True, resolutions=2, tlm=True))

    # When asking for the base resolution's prefix
    # Then it is the whole codestream (but EOC)
    assert prefix_length(codestream, 2) == len(codestream) - len(EOC)


def test_a_tlm_that_disagrees_with_the_tile_parts_is_refused() -> None:
    # Given a stored frame whose TLM lists its first two tile-parts' lengths the wrong way round
    _, codestream = _stored("ct-512-uint16-12bit")
    header = parse_header(codestream)
    assert header.tile_parts is not None
    lengths = list(header.tile_parts)
    lengths[0], lengths[1] = lengths[1], lengths[0]
    lying = _with_tlm(codestream, _tlm(lengths, [0] * len(lengths), 2, 4))

    # When cutting a prefix
    # Then the tile-part headers give the lie away
    with pytest.raises(CodestreamError, match="disagrees"):
        truncated_codestream(lying, header.levels)


# --- malformed input ---------------------------------------------------------------------------------

SECRET = b"DOE^JANE 1970-01-01 "


def _malformed_cases() -> dict[str, bytes]:
    _, codestream = _stored("small-40x30")
    header = parse_header(codestream)
    siz_end = _segments(codestream)[0][2]
    return {
        "empty": b"",
        "garbage": SECRET * 8,
        "soc-then-garbage": b"\xff\x4f" + SECRET * 8,
        "soc-only": b"\xff\x4f",
        "cut-in-siz": codestream[:20],
        "cut-before-sot": codestream[: header.main_header_length],
        "cut-in-a-segment": codestream[: siz_end + 3],
        "no-cod": _without(codestream, COD),
        "secret-siz": codestream[:2] + b"\xff\x51\x00\x16" + SECRET + codestream[siz_end:],
        "bad-tlm-tile-size": _with_tlm(codestream, struct.pack(">HHBBHH", TLM, 8, 0, 0x30, 0, 100)),
        "ragged-tlm": _with_tlm(codestream, struct.pack(">HHBB3s", TLM, 7, 0, 0x60, SECRET[:3])),
    }


@pytest.mark.parametrize("case", sorted(_malformed_cases()))
def test_malformed_headers_are_refused_without_quoting_them(case: str) -> None:
    # Given bytes that hold no complete, well-formed main header
    data = _malformed_cases()[case]

    # When parsing them (or asking for a prefix)
    # Then they are refused with a message that does not repeat their bytes
    for attempt in (parse_header, lambda d: prefix_length(d, 0), lambda d: truncated_codestream(d, 0)):
        with pytest.raises(CodestreamError) as caught:
            attempt(data)
        assert isinstance(caught.value, ValueError)
        message = str(caught.value)
        assert "DOE" not in message
        assert SECRET.hex()[:8] not in message.lower()
        assert "\\x" not in message
        if data:
            assert data[:8].hex() not in message.lower()


# --- sizes and levels --------------------------------------------------------------------------------


def _header_of(rows: int, columns: int) -> Codestream:
    pixels = np.zeros((rows, columns), dtype=np.uint8)
    pixels[::3, ::5] = 200
    frame = htj2k.prepare_frame(pixels, 8)
    return parse_header(htj2k.encode(frame))


@pytest.mark.parametrize(
    ("rows", "columns", "longest_side", "reduce"),
    [
        (2048, 2048, 256, 3),
        (512, 512, 256, 1),
        (100, 200, 256, 0),  # smaller than the thumbnail: full resolution
        (512, 375, 256, 1),
        (512, 375, 257, 0),
        (512, 512, 1, 3),  # clamped to the levels
        (512, 512, 64, 3),
        (2048, 2048, 100, 4),
    ],
)
def test_choose_reduce_keeps_at_least_the_longest_side(
    rows: int, columns: int, longest_side: int, reduce: int
) -> None:
    # Given a frame's header
    header = _header_of(rows, columns)

    # When choosing the level for a thumbnail
    chosen = choose_reduce(header, longest_side)

    # Then it is the smallest level whose longest side still reaches the thumbnail's
    assert chosen == reduce
    assert 0 <= chosen <= header.levels
    assert max(header.size_at(chosen)) >= longest_side or chosen == 0


def test_sizes_halve_rounding_up_on_the_reference_grid() -> None:
    # Given the 512x375 frame of the metadata example, and the same image moved to odd grid offsets
    header = _header_of(375, 512)
    moved = dataclasses.replace(header, x_offset=3, y_offset=5, x_size=3 + 512, y_size=5 + 375)

    # When asking each level's size
    # Then it is ceil(full / 2**k), and ceil(x1 / 2**k) - ceil(x0 / 2**k) off the origin
    assert [header.size_at(k) for k in range(4)] == [(512, 375), (256, 188), (128, 94), (64, 47)]
    assert [moved.size_at(k) for k in range(4)] == [(512, 375), (256, 187), (128, 93), (64, 47)]


def test_levels_out_of_range_are_refused() -> None:
    # Given a header with 3 decomposition levels
    header = _header_of(512, 512)
    assert (header.levels, header.resolutions) == (3, 4)

    # When asking for a level it does not have, or a thumbnail of no size
    # Then the arguments are refused
    with pytest.raises(ValueError, match="between 0 and 3"):
        header.size_at(4)
    with pytest.raises(ValueError, match="between 0 and 3"):
        prefix_length(header, -1)
    with pytest.raises(ValueError, match="positive"):
        choose_reduce(header, 0)

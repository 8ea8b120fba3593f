"""A frame's thumbnail from as few of its bytes as the chosen resolution level needs.

:func:`read_prefix` reads the start of a GetImageFrame stream, parses the HTJ2K main header
(:mod:`ahi_pipeline.htj2k_prefix`), chooses the smallest resolution level at least as large as the
thumbnail, and reads only the tile-parts that level needs before closing the stream (the whole frame
when the codestream has no usable TLM markers).  :func:`decode_level` decodes that level with OpenJPEG
(``imagecodecs.jpeg2k_decode(skipres=…)``), which clips reduced-resolution samples to the component's
range as the service's checksums assume (OpenJPH wraps them).  :func:`verify_level` checks the decoded
level's CRC32 against ``PixelDataChecksumFromBaseToFullResolution``; a mismatch raises.
:func:`thumbnail` renders it (:mod:`ahi_pipeline.render`) and encodes a PNG.

numpy and imagecodecs come from the imaging layer; they are imported only when a frame is decoded.
"""

from __future__ import annotations

import zlib
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any, Final, Protocol

from ahi_pipeline.htj2k_prefix import (
    Codestream,
    CodestreamError,
    choose_reduce,
    parse_header,
    prefix_length,
    truncated_codestream,
)
from ahi_pipeline.render import DEFAULT_SIZE, FrameDescription, render

__all__ = [
    "ChecksumMismatch",
    "FramePrefix",
    "Thumbnail",
    "decode_level",
    "read_prefix",
    "thumbnail",
    "verify_level",
]

#: Bytes read first: the main header of the service's frames is 121-157 bytes.
HEADER_READ: Final = 4096
CHUNK: Final = 64 * 1024


class Readable(Protocol):
    def read(self, size: int = -1) -> bytes: ...
    def close(self) -> None: ...


class ChecksumMismatch(ValueError):  # noqa: N818 - the service's own word for it
    """The decoded level does not have the checksum the metadata gives it: no thumbnail is written."""


@dataclass(frozen=True, slots=True)
class FramePrefix:
    """The bytes read of a frame, ready to decode at ``reduce`` (``complete``: the whole frame was read)."""

    codestream: bytes
    header: Codestream
    reduce: int
    bytes_read: int
    complete: bool


def _read(body: Readable, size: int) -> bytes:
    chunks: list[bytes] = []
    remaining = size
    while remaining > 0:
        chunk = body.read(min(remaining, CHUNK))
        if not chunk:
            break
        chunks.append(chunk)
        remaining -= len(chunk)
    return b"".join(chunks)


def read_prefix(body: Readable, longest_side: int = DEFAULT_SIZE) -> FramePrefix:
    """Read what a thumbnail of ``longest_side`` pixels needs from a frame's stream, then close it.

    Raises
    ------
    CodestreamError
        When the stream is not an HTJ2K codestream, or ends before its header does.
    """
    try:
        start = _read(body, HEADER_READ)
        header = parse_header(start)
        reduce = choose_reduce(header, longest_side)
        needed = prefix_length(header, reduce)
        if needed is None:
            data = start + body.read()
            return FramePrefix(data, header, reduce, len(data), True)
        data = start + _read(body, needed - len(start)) if needed > len(start) else start
        if len(data) < needed:
            raise CodestreamError(f"the frame ended after {len(data)} bytes; its level needs {needed}")
        codestream = truncated_codestream(data, reduce)
        if codestream is None:  # pragma: no cover - prefix_length said it could
            raise CodestreamError("the frame's tile-parts do not match its TLM marker")
        return FramePrefix(codestream, header, reduce, len(data), False)
    finally:
        body.close()


def decode_level(prefix: FramePrefix) -> Any:
    """The frame at the prefix's level (OpenJPEG: reduced samples clipped to the component's range)."""
    import imagecodecs  # noqa: PLC0415 - from the imaging layer, only when decoding

    return imagecodecs.jpeg2k_decode(prefix.codestream, skipres=prefix.reduce or None)


def verify_level(pixels: Any, frame: Mapping[str, Any]) -> int:
    """The CRC32 of the decoded level, checked against the metadata's checksum of that level.

    Samples are hashed as the service does: interleaved, little-endian, ``ceil(precision / 8)`` bytes.

    Raises
    ------
    ChecksumMismatch
        When the metadata has no checksum for a level of that size, or a different one.
    """
    import numpy as np  # noqa: PLC0415 - from the imaging layer

    height, width = pixels.shape[:2]
    levels = frame.get("PixelDataChecksumFromBaseToFullResolution") or []
    expected = next(
        (
            int(level["Checksum"])
            for level in levels
            if (level.get("Width"), level.get("Height")) == (width, height)
        ),
        None,
    )
    data = np.ascontiguousarray(pixels)
    if data.dtype.byteorder == ">":
        data = data.byteswap().view(data.dtype.newbyteorder("<"))
    actual = zlib.crc32(data) & 0xFFFFFFFF
    if expected is None:
        raise ChecksumMismatch(f"the metadata has no checksum for a {width}×{height} level")
    if actual != expected:
        raise ChecksumMismatch(
            f"the {width}×{height} level's CRC32 is {actual}, the metadata says {expected}"
        )
    return actual


@dataclass(frozen=True)
class Thumbnail:
    png: bytes
    width: int
    height: int
    window: tuple[float, float] | None
    window_source: str


def thumbnail(pixels: Any, dicom: Mapping[str, Any], longest_side: int = DEFAULT_SIZE) -> Thumbnail:
    """Render a decoded level as an 8-bit PNG of at most ``longest_side`` pixels."""
    import imagecodecs  # noqa: PLC0415 - from the imaging layer

    rendered = render(pixels, FrameDescription.from_metadata(dicom), longest_side)
    image = rendered.image
    return Thumbnail(
        png=bytes(imagecodecs.png_encode(image)),
        width=int(image.shape[1]),
        height=int(image.shape[0]),
        window=rendered.window,
        window_source=rendered.window_source,
    )

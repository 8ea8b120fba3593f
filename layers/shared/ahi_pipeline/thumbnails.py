"""A frame's thumbnail from as few of its bytes as the chosen resolution level needs.

:func:`read_prefix` reads the start of a GetImageFrame stream, parses the HTJ2K main header
(:mod:`ahi_pipeline.htj2k_prefix`), chooses the smallest resolution level at least as large as the
thumbnail, and reads only the tile-parts that level needs before closing the stream (the whole frame
when the codestream has no usable TLM markers).  :func:`decode_level` decodes that level with OpenJPEG
(``imagecodecs.jpeg2k_decode(skipres=…)``), which clips reduced-resolution samples to the component's
range as the service's checksums assume (OpenJPH wraps them).  :func:`verify_level` checks the decoded
level's CRC32 against ``PixelDataChecksumFromBaseToFullResolution``; a mismatch raises.
:func:`thumbnail` renders it (:mod:`ahi_pipeline.render`) and encodes a PNG.

:func:`decode_frame` does all of that for one frame in whatever syntax the service stored it: the
instance's ``StoredTransferSyntaxUID`` (absent or null: HTJ2K lossless RPCL).  HTJ2K and JPEG 2000
frames are read as far as the level needs and decoded at that level; frames the service keeps as they
were uploaded (JPEG baseline and extended, JPEG lossless, JPEG-LS, uncompressed) are read whole and
decoded with their own codec, then resized.  A level the metadata has a checksum for is always checked.

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
    "HTJ2K_LOSSLESS_RPCL",
    "ChecksumMismatch",
    "DecodedFrame",
    "FramePrefix",
    "Thumbnail",
    "UnsupportedFrame",
    "decode_frame",
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


#: What the service stores a frame as unless the instance's ``StoredTransferSyntaxUID`` says otherwise.
HTJ2K_LOSSLESS_RPCL: Final = "1.2.840.10008.1.2.4.202"
#: Codestreams read as far as the level needs and decoded with resolutions discarded.
_JPEG2000: Final = frozenset(
    {
        "1.2.840.10008.1.2.4.90",
        "1.2.840.10008.1.2.4.91",
        "1.2.840.10008.1.2.4.201",
        HTJ2K_LOSSLESS_RPCL,
        "1.2.840.10008.1.2.4.203",
    }
)
#: Frames read whole and decoded by their own codec (imagecodecs' function name).
_WHOLE_FRAME_CODECS: Final = {
    "1.2.840.10008.1.2.4.50": "jpeg8_decode",
    "1.2.840.10008.1.2.4.51": "jpeg8_decode",
    "1.2.840.10008.1.2.4.57": "ljpeg_decode",
    "1.2.840.10008.1.2.4.70": "ljpeg_decode",
    "1.2.840.10008.1.2.4.80": "jpegls_decode",
    "1.2.840.10008.1.2.4.81": "jpegls_decode",
}
_NATIVE: Final = frozenset(
    {"1.2.840.10008.1.2", "1.2.840.10008.1.2.1", "1.2.840.10008.1.2.1.99", "1.2.840.10008.1.2.2"}
)


class UnsupportedFrame(ValueError):  # noqa: N818 - reads as what it is
    """A frame in a transfer syntax (or layout) the thumbnails cannot decode."""


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


def read_prefix(
    body: Readable, longest_side: int = DEFAULT_SIZE, *, full_resolution: bool = False
) -> FramePrefix:
    """Read what a thumbnail of ``longest_side`` pixels needs from a frame's stream, then close it.

    Raises
    ------
    CodestreamError
        When the stream is not an HTJ2K codestream, or ends before its header does.
    """
    try:
        start = _read(body, HEADER_READ)
        header = parse_header(start)
        reduced = _openjpeg_decodes(header) and not full_resolution
        reduce = choose_reduce(header, longest_side) if reduced else 0
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

    if not _openjpeg_decodes(prefix.header):
        # OpenJPEG refuses components of more than 31 bits; OpenJPH decodes them, exactly at full
        # resolution (read_prefix asked for it: OpenJPH wraps reduced samples that overshoot)
        return imagecodecs.htj2k_decode(prefix.codestream)
    return imagecodecs.jpeg2k_decode(prefix.codestream, skipres=prefix.reduce or None)


#: The largest component precision OpenJPEG 2.5 decodes.
OPENJPEG_MAX_PRECISION: Final = 31


def _openjpeg_decodes(header: Codestream) -> bool:
    """False for an HTJ2K codestream with a component OpenJPEG cannot decode (BitsStored 32)."""
    return not header.htj2k or max(c.precision for c in header.components) <= OPENJPEG_MAX_PRECISION


def verify_level(pixels: Any, frame: Mapping[str, Any], *, required: bool = True) -> int | None:
    """The CRC32 of the decoded level, checked against the metadata's checksum of that level.

    Samples are hashed as the service does: interleaved, little-endian, ``ceil(precision / 8)`` bytes.
    ``None`` when the metadata has no checksum for a level of that size and ``required`` is false.

    Raises
    ------
    ChecksumMismatch
        When the metadata has a different checksum for the level, or none and ``required`` is true.
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
    if expected is None and not required:
        return None
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


# ---------------------------------------------------------------------- any stored syntax
@dataclass(frozen=True)
class DecodedFrame:
    """A frame decoded at the level a thumbnail needs, and what it cost (for the sidecar)."""

    pixels: Any
    transfer_syntax: str
    #: Resolutions discarded (JPEG 2000 family), 0 for frames decoded whole.
    reduce: int
    full_size: tuple[int, int]
    bytes_read: int
    complete: bool
    #: The verified CRC32 of the decoded level; None when the metadata has none for it.
    checksum: int | None

    @property
    def size(self) -> tuple[int, int]:
        return int(self.pixels.shape[1]), int(self.pixels.shape[0])


def stored_transfer_syntax(instance: Mapping[str, Any]) -> str:
    """An instance's ``StoredTransferSyntaxUID`` (absent or null: HTJ2K lossless RPCL)."""
    value = instance.get("StoredTransferSyntaxUID")
    return str(value).strip() if value else HTJ2K_LOSSLESS_RPCL


def _read_all(body: Readable) -> bytes:
    try:
        return body.read()
    finally:
        body.close()


def decode_frame(
    body: Readable,
    frame: Mapping[str, Any],
    dicom: Mapping[str, Any],
    *,
    transfer_syntax: str = HTJ2K_LOSSLESS_RPCL,
    longest_side: int = DEFAULT_SIZE,
    full_resolution: bool = False,
) -> DecodedFrame:
    """Read and decode a GetImageFrame stream at the smallest level of at least ``longest_side`` pixels
    (the full resolution with ``full_resolution``, and for PALETTE COLOR: a reduced level averages the
    indices, which are labels, not intensities; the colours are looked up first, then resized).

    ``frame`` is the frame's entry of the metadata (its checksums), ``dicom`` the instance's attributes
    (size and layout of frames read whole).  The stream is closed.

    Raises
    ------
    CodestreamError
        A JPEG 2000 frame that is truncated or malformed.
    ChecksumMismatch
        The decoded level does not match the metadata's checksum (always required for HTJ2K lossless).
    UnsupportedFrame
        A transfer syntax the thumbnails cannot decode, or a frame its codec rejects.
    """
    if transfer_syntax in _JPEG2000:
        palette = str(dicom.get("PhotometricInterpretation") or "").strip() == "PALETTE COLOR"
        prefix = read_prefix(body, longest_side, full_resolution=full_resolution or palette)
        try:
            pixels = decode_level(prefix)
        except RuntimeError as error:  # imagecodecs.Jpeg2kError
            raise CodestreamError(f"the frame does not decode: {error}") from None
        checksum = verify_level(pixels, frame, required=transfer_syntax == HTJ2K_LOSSLESS_RPCL)
        return DecodedFrame(
            pixels,
            transfer_syntax,
            prefix.reduce,
            (prefix.header.width, prefix.header.height),
            prefix.bytes_read,
            prefix.complete,
            checksum,
        )
    if transfer_syntax in _WHOLE_FRAME_CODECS:
        import imagecodecs  # noqa: PLC0415 - from the imaging layer

        data = _read_all(body)
        try:
            codec = _WHOLE_FRAME_CODECS[transfer_syntax]
            # (0028,0004) RGB: the JPEG components are not colour transformed (PS3.5 8.2.1), whatever
            # libjpeg-turbo would guess from the markers (none, in many DICOM files: it guesses YCbCr)
            rgb = (
                codec == "jpeg8_decode" and str(dicom.get("PhotometricInterpretation") or "").strip() == "RGB"
            )
            options = {"colorspace": "RGB", "outcolorspace": "RGB"} if rgb else {}
            pixels = getattr(imagecodecs, codec)(data, **options)
        except (RuntimeError, ValueError) as error:  # each codec has its own RuntimeError subclass
            raise UnsupportedFrame(f"the {transfer_syntax} frame does not decode: {error}") from None
    elif transfer_syntax in _NATIVE:
        data = _read_all(body)
        pixels = _native(data, dicom, big_endian=transfer_syntax == "1.2.840.10008.1.2.2")
    else:
        body.close()
        raise UnsupportedFrame(f"frames stored as {transfer_syntax} are not supported")
    checksum = verify_level(pixels, frame, required=False)
    full = (int(pixels.shape[1]), int(pixels.shape[0]))
    return DecodedFrame(pixels, transfer_syntax, 0, full, len(data), True, checksum)


def _native(data: bytes, dicom: Mapping[str, Any], *, big_endian: bool) -> Any:
    """An uncompressed frame as an array: BitsAllocated 1 (packed, LSB first), 8, 16 or 32."""
    import numpy as np  # noqa: PLC0415 - from the imaging layer

    try:
        rows, columns = int(dicom["Rows"]), int(dicom["Columns"])
        samples = int(dicom.get("SamplesPerPixel") or 1)
        bits = int(dicom.get("BitsAllocated") or 8)
    except (KeyError, TypeError, ValueError):
        raise UnsupportedFrame("an uncompressed frame without Rows, Columns or BitsAllocated") from None
    count = rows * columns * samples
    if bits == 1:
        unpacked = np.unpackbits(np.frombuffer(data, np.uint8), bitorder="little")
        if unpacked.size < count:
            raise UnsupportedFrame(f"the uncompressed frame has {len(data)} bytes, {count} bits expected")
        return unpacked[:count].reshape(rows, columns) * np.uint8(255)
    dtypes = {8: np.uint8, 16: np.uint16, 32: np.uint32}
    if bits not in dtypes:
        raise UnsupportedFrame(f"uncompressed frames of {bits} bits allocated are not supported")
    dtype = np.dtype(dtypes[bits]).newbyteorder(">" if big_endian else "<")
    if len(data) < count * dtype.itemsize:
        raise UnsupportedFrame(
            f"the uncompressed frame has {len(data)} bytes, {count * dtype.itemsize} expected"
        )
    values = np.frombuffer(data, dtype, count).astype(dtype.newbyteorder("="))
    planar = samples > 1 and int(dicom.get("PlanarConfiguration") or 0) == 1
    if samples == 1:
        return values.reshape(rows, columns)
    if planar:
        return values.reshape(samples, rows, columns).transpose(1, 2, 0)
    return values.reshape(rows, columns, samples)

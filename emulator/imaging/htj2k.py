"""Lossless HTJ2K transcoding of one frame, its per-resolution checksums and its verification.

Every frame is stored as a High-Throughput JPEG 2000 (ISO/IEC 15444-15) codestream laid out as DICOM's
"HTJ2K with RPCL options" asks (``../shared/spec/healthimaging-platform.md`` sections 6.3, 6.6, 9.5):

* reversible 5/3 wavelet, lossless; RGB frames use the reversible colour transform;
* RPCL progression, a TLM marker, and one tile-part per resolution, so the prefix of the codestream up
  to the end of tile-part ``r`` decodes to resolution ``r`` (thumbnails, progressive loading);
* enough decomposition levels that the lowest resolution's longest side is at most 64 pixels, and at
  least one (OpenJPH allows at most ``floor(log2(shorter side))`` levels, which can leave a longer
  base for thin frames and none for frames one pixel thin);
* component precision (0028,0101) BitsStored and the signedness of (0028,0103) PixelRepresentation,
  raised only when the decoded samples do not fit (decoders can return more than BitsStored bits).

Image Frame Resolution Checksums (IFRC, platform spec 6.6) are CRC-32 values over each resolution
level's samples: interleaved, each sample a little-endian integer of ``ceil(precision / 8)`` bytes
(4 for 17-32 bits), signed when the component is signed.  Level ``k`` (``k`` decompositions below
full resolution) is ``ceil(width / 2**k)`` by ``ceil(height / 2**k)`` and holds what a JPEG 2000
decoder returns when asked to discard ``k`` resolutions: the LL band of ``k`` levels of the reversible
5/3 lifting (vertical, then horizontal) of the colour-transformed samples, inverse colour-transformed
and clipped to the component's range.  These are computed here from the original samples, so they
are checksums of the original pixels, as the service describes; tests check them against OpenJPEG
(pylibjpeg-openjpeg, and ``imagecodecs.jpeg2k_decode(skipres=k)``) at every level.  Reduced levels
often overshoot the range (a zero background next to bright tissue goes below 0): OpenJPEG clips
those samples, while ``imagecodecs.htj2k_decode(skipres=k)`` (OpenJPH) casts them without clipping,
so they wrap around and its CRC differs; use an OpenJPEG decode to check a reduced level.

After encoding, the codestream is decoded at full resolution and compared with the original samples
(pixel verification, spec 3.9; equal samples mean equal IFRCs).  OpenJPH 0.32 fails this for frames
one pixel thin that reach the lowest sample value (it writes them wrongly without decomposition
levels); verification turns that into a server error rather than a corrupt frame.
"""

from __future__ import annotations

import struct
import zlib
from dataclasses import dataclass
from typing import Any, Final

import imagecodecs
import numpy as np

MAX_BASE_SIDE: Final = 64
"""Longest side of the lowest resolution level."""

MAX_PRECISION: Final = 32
"""Largest sample precision HTJ2K (OpenJPH) encodes here."""

_PROGRESSION_ORDERS: Final = ("LRCP", "RLCP", "RPCL", "PCRL", "CPRL")

Pixels = np.ndarray[Any, Any]
"""A frame or plane of samples (any integer dtype)."""


class HTJ2KError(Exception):
    """Encoding or verification of a frame failed (a service-side failure)."""


class VerificationError(HTJ2KError):
    """The decoded HTJ2K frame is not the original frame."""


@dataclass(frozen=True)
class LevelChecksum:
    """The IFRC of one resolution level of a frame.

    Attributes
    ----------
    width, height : int
        The level's size in pixels.
    checksum : int
        CRC-32 (unsigned) of the level's samples.
    """

    width: int
    height: int
    checksum: int

    def as_metadata(self) -> dict[str, int]:
        """Return the ``PixelDataChecksumFromBaseToFullResolution`` entry."""
        return {"Width": self.width, "Height": self.height, "Checksum": self.checksum}


@dataclass(frozen=True)
class FrameInfo:
    """The metadata of one stored image frame (an ``ImageFrames`` entry).

    Attributes
    ----------
    frame_id : str
        The image frame ID that storing the frame (an HTJ2K codestream, or the original encoding of a
        syntax the service keeps) returned.
    checksums : tuple[LevelChecksum, ...]
        IFRCs from the base (smallest) to the full resolution; empty for a frame stored in its original
        encoding, whose entry then has no ``PixelDataChecksumFromBaseToFullResolution``.
    min_pixel_value, max_pixel_value : int | float
        The smallest and largest sample of the frame.
    frame_size_in_bytes : int
        Size of the decoded full-resolution frame (``rows * columns * samples * bytes per sample``).
    """

    frame_id: str
    checksums: tuple[LevelChecksum, ...]
    min_pixel_value: int | float
    max_pixel_value: int | float
    frame_size_in_bytes: int

    def as_metadata(self) -> dict[str, Any]:
        """Return the ``ImageFrames`` entry of the metadata document."""
        entry: dict[str, Any] = {"ID": self.frame_id}
        if self.checksums:
            levels = [level.as_metadata() for level in self.checksums]
            entry["PixelDataChecksumFromBaseToFullResolution"] = levels
        entry["MinPixelValue"] = self.min_pixel_value
        entry["MaxPixelValue"] = self.max_pixel_value
        entry["FrameSizeInBytes"] = self.frame_size_in_bytes
        return entry


@dataclass(frozen=True)
class PreparedFrame:
    """A frame's samples in the form that is encoded and checksummed.

    Attributes
    ----------
    pixels : numpy.ndarray
        ``(rows, columns)`` or ``(rows, columns, samples)``, C-contiguous, little-endian, with
        ``ceil(precision / 8)`` bytes per sample (4 for 17-32 bits), signed when ``signed``.
    precision : int
        Bits per sample in the codestream.
    signed : bool
        Whether the samples are signed.
    decomposition_levels : int
        Wavelet decomposition levels of the codestream.
    minimum, maximum : int
        The smallest and largest sample.
    """

    pixels: Pixels
    precision: int
    signed: bool
    decomposition_levels: int
    minimum: int
    maximum: int

    @property
    def rows(self) -> int:
        return int(self.pixels.shape[0])

    @property
    def columns(self) -> int:
        return int(self.pixels.shape[1])

    @property
    def samples(self) -> int:
        return 1 if self.pixels.ndim == 2 else int(self.pixels.shape[2])

    @property
    def sample_range(self) -> tuple[int, int]:
        """The smallest and largest value a sample of this precision and signedness can hold."""
        return _sample_range(self.precision, self.signed)


@dataclass(frozen=True)
class TilePart:
    """One tile-part of a codestream: its byte range and ``TPsot``/``TNsot`` indices."""

    offset: int
    length: int
    index: int
    count: int


@dataclass(frozen=True)
class CodestreamInfo:
    """What the main header and tile-part headers of a JPEG 2000 codestream declare."""

    width: int
    height: int
    components: int
    precision: int
    signed: bool
    htj2k: bool
    progression_order: str
    decomposition_levels: int
    reversible: bool
    color_transform: bool
    code_block_size: tuple[int, int]
    tlm: tuple[int, ...] | None
    tile_parts: tuple[TilePart, ...]


def _sample_range(precision: int, signed: bool) -> tuple[int, int]:
    if signed:
        return -(1 << (precision - 1)), (1 << (precision - 1)) - 1
    return 0, (1 << precision) - 1


def _ceil_shift(value: int, shift: int) -> int:
    return (value + (1 << shift) - 1) >> shift


def decomposition_levels(rows: int, columns: int) -> int:
    """Return the decomposition levels for a ``rows`` by ``columns`` frame.

    The fewest levels that bring the longest side of the base resolution to at most
    :data:`MAX_BASE_SIDE`, but at least one (imagecodecs cannot ask OpenJPH for a codestream without
    decomposition), capped at ``floor(log2(min(rows, columns)))`` as OpenJPH requires; so a frame one
    pixel thin has none.
    """
    levels = 1
    while max(_ceil_shift(rows, levels), _ceil_shift(columns, levels)) > MAX_BASE_SIDE:
        levels += 1
    return min(levels, min(rows, columns).bit_length() - 1)


def level_sizes(rows: int, columns: int, levels: int) -> tuple[tuple[int, int], ...]:
    """Return ``(width, height)`` of each resolution level, base first."""
    return tuple((_ceil_shift(columns, k), _ceil_shift(rows, k)) for k in range(levels, -1, -1))


def prepare_frame(pixels: Pixels, bits_stored: int) -> PreparedFrame:
    """Return ``pixels`` (one frame as pydicom decodes it) ready to encode and checksum.

    Parameters
    ----------
    pixels : numpy.ndarray
        ``(rows, columns)`` or ``(rows, columns, samples)`` integer samples, any byte order.
    bits_stored : int
        (0028,0101) BitsStored, the precision unless the samples need more bits.

    Raises
    ------
    HTJ2KError
        When the samples are not integers or need more than 32 bits.
    """
    array = np.asarray(pixels)
    if array.dtype.kind not in "iu" or array.ndim not in (2, 3):
        raise HTJ2KError(f"{array.dtype} samples of shape {array.shape} cannot be encoded")
    signed = array.dtype.kind == "i"
    minimum, maximum = int(array.min()), int(array.max())
    precision = max(1, min(bits_stored, MAX_PRECISION))
    while precision < MAX_PRECISION and not _fits(minimum, maximum, precision, signed):
        precision += 1
    if not _fits(minimum, maximum, precision, signed):
        raise HTJ2KError(f"samples need more than {MAX_PRECISION} bits")
    itemsize = 1 if precision <= 8 else 2 if precision <= 16 else 4
    dtype = np.dtype(f"<{'i' if signed else 'u'}{itemsize}")
    prepared = np.ascontiguousarray(array, dtype=dtype)
    return PreparedFrame(
        pixels=prepared,
        precision=precision,
        signed=signed,
        decomposition_levels=decomposition_levels(int(array.shape[0]), int(array.shape[1])),
        minimum=minimum,
        maximum=maximum,
    )


def _fits(minimum: int, maximum: int, precision: int, signed: bool) -> bool:
    low, high = _sample_range(precision, signed)
    return low <= minimum and maximum <= high


def encode(frame: PreparedFrame) -> bytes:
    """Return the lossless HTJ2K codestream of ``frame``.

    Raises
    ------
    HTJ2KError
        When OpenJPH rejects the frame.
    """
    try:
        codestream = imagecodecs.htj2k_encode(
            frame.pixels,
            reversible=True,
            rgb=frame.samples == 3,
            planar=False,
            bitspersample=frame.precision,
            resolutions=max(1, frame.decomposition_levels),  # 0 would mean "the default, 5"
            tlm=True,
            tilepart=imagecodecs.HTJ2K.TILEPART.RESOLUTIONS,
            prog_order="RPCL",
        )
    except (imagecodecs.Htj2kError, ValueError) as exc:
        raise HTJ2KError(f"HTJ2K encoding failed: {exc}") from exc
    return bytes(codestream)


def decode(codestream: bytes, skip_resolutions: int = 0) -> Pixels:
    """Return the samples of ``codestream`` (OpenJPH), optionally ``skip_resolutions`` levels down."""
    return imagecodecs.htj2k_decode(codestream, skipres=skip_resolutions or None)


def checksum(pixels: Pixels) -> int:
    """Return the IFRC (CRC-32) of prepared samples."""
    return zlib.crc32(np.ascontiguousarray(pixels)) & 0xFFFFFFFF


def encode_and_verify(frame: PreparedFrame) -> bytes:
    """Encode ``frame``, decode it again at full resolution, and return the verified codestream.

    Verification (pixel data verification, spec 3.9) requires the decoded samples to equal the
    original ones.  That implies equal full-resolution IFRCs, is stricter (no CRC collision can
    hide a difference), and is cheaper than checksumming the decoded frame; the IFRCs are computed
    only to report a mismatch.

    Raises
    ------
    VerificationError
        When the decoded frame differs from the original.
    HTJ2KError
        When encoding or decoding fails, or the codestream does not have the expected layout.
    """
    codestream = encode(frame)
    info = parse_codestream(codestream, tile_parts=False)
    if info.decomposition_levels != frame.decomposition_levels:
        raise HTJ2KError(
            f"the codestream has {info.decomposition_levels} decomposition levels, "
            f"{frame.decomposition_levels} were requested"
        )
    try:
        decoded = decode(codestream)
    except (imagecodecs.Htj2kError, ValueError) as exc:
        raise HTJ2KError(f"decoding the HTJ2K codestream failed: {exc}") from exc
    if decoded.shape != frame.pixels.shape or decoded.dtype.itemsize != frame.pixels.dtype.itemsize:
        raise VerificationError(
            f"the decoded frame is {decoded.dtype} {decoded.shape}, "
            f"the original {frame.pixels.dtype} {frame.pixels.shape}"
        )
    if not np.array_equal(decoded, frame.pixels):
        raise VerificationError(
            f"the full-resolution checksum of the decoded HTJ2K frame ({checksum(decoded)}) differs "
            f"from the original's ({checksum(frame.pixels)})"
        )
    return codestream


# --- resolution levels -------------------------------------------------------------------------------


def _work_dtype(bound: int) -> np.dtype[Any]:
    """Return the narrowest signed dtype for a lifting step on samples of magnitude <= ``bound``.

    The largest intermediate of a step is ``|d[i-1] + d[i] + 2| <= 4 * bound + 2``.
    """
    largest = 4 * bound + 2
    for dtype in (np.int16, np.int32, np.int64):
        if largest <= np.iinfo(dtype).max:
            return np.dtype(dtype)
    raise HTJ2KError("samples are too large for the reversible wavelet")  # pragma: no cover


def _lowpass(x: Pixels, axis: int, bound: int) -> Pixels:
    """Return the low band of one reversible 5/3 lifting step along ``axis`` (ITU-T T.800 Annex F).

    Even-indexed samples are low-pass, odd ones high-pass (image origin 0), with whole-sample
    symmetric extension at both ends; a single sample passes through unchanged.  Slicing keeps the
    memory layout, so the inner loops stay (nearly) contiguous along either axis; the arithmetic is
    done in the narrowest dtype that cannot overflow for samples of magnitude <= ``bound``.
    """
    n = x.shape[axis]
    if n == 1:
        return x
    work = _work_dtype(bound)
    lead = (slice(None),) * axis

    def along(array: Pixels, start: int | None, stop: int | None, step: int | None = None) -> Pixels:
        return array[(*lead, slice(start, stop, step))]

    def shaped(length: int) -> Pixels:
        shape = list(x.shape)
        shape[axis] = length
        return np.empty(shape, dtype=work)

    even, odd = along(x, 0, None, 2), along(x, 1, None, 2)
    half = n // 2  # high-pass samples
    detail = shaped(half)
    # d[i] = x[2i+1] - floor((x[2i] + x[2i+2]) / 2), with x[n] = x[n-2] for even n
    if n % 2:
        np.add(along(even, 0, half), along(even, 1, None), out=detail, dtype=work)
    else:
        np.add(along(even, 0, half - 1), along(even, 1, None), out=along(detail, 0, half - 1), dtype=work)
        last = along(even, half - 1, half)
        np.add(last, last, out=along(detail, half - 1, half), dtype=work)
    detail >>= 1
    np.subtract(odd, detail, out=detail, dtype=work)
    # s[i] = x[2i] + floor((d[i-1] + d[i] + 2) / 4), with d[-1] = d[0] and d[half] = d[half-1] for odd n
    low = shaped(n - half)
    first = along(detail, 0, 1)
    np.add(first, first, out=along(low, 0, 1))
    np.add(along(detail, 0, half - 1), along(detail, 1, half), out=along(low, 1, half))
    if n % 2:
        last = along(detail, half - 1, half)
        np.add(last, last, out=along(low, half, half + 1))
    low += 2
    low >>= 2
    np.add(low, even, out=low, dtype=work)
    return low


def _planes(frame: PreparedFrame) -> tuple[list[Pixels], int]:
    """Return the frame's components (colour-transformed for RGB) and a bound on their magnitude."""
    pixels = frame.pixels
    bound = max(abs(frame.minimum), abs(frame.maximum))
    if frame.samples == 1:
        return [pixels], bound
    planes = [pixels[..., c] for c in range(frame.samples)]
    if frame.samples != 3:
        return planes, bound
    wide = _work_dtype(bound)
    red, green, blue = (plane.astype(wide) for plane in planes)
    luma = red + 2 * green + blue
    luma >>= 2
    return [luma, blue - green, red - green], 2 * bound


def _compose(frame: PreparedFrame, planes: list[Pixels]) -> Pixels:
    """Return the samples of one reduced level from its (colour-transformed) component planes."""
    if frame.samples == 3:
        wide = np.dtype(np.int64 if frame.precision > 24 else np.int32)
        luma, cb, cr = (np.asarray(plane, dtype=wide) for plane in planes)
        green: Pixels = luma - ((cb + cr) >> 2)
        planes = [cr + green, green, cb + green]
    low, high = frame.sample_range
    clipped = [np.clip(plane, low, high) for plane in planes]
    stacked = clipped[0] if frame.samples == 1 else np.stack(clipped, axis=-1)
    return stacked.astype(frame.pixels.dtype)


def resolution_levels(frame: PreparedFrame) -> list[Pixels]:
    """Return the samples of every resolution level of ``frame``, base first, full resolution last.

    Each reduced level is what a JPEG 2000 decoder returns when it discards that many resolutions of
    the frame's codestream (see the module docstring).
    """
    levels: list[Pixels] = [frame.pixels]
    if frame.decomposition_levels == 0:
        return levels
    planes, bound = _planes(frame)
    for _ in range(frame.decomposition_levels):
        # a step at most doubles the magnitude: |s| <= |x| + (4 * bound + 2) / 4
        planes = [_lowpass(plane, 0, bound) for plane in planes]
        bound = 2 * bound + 1
        planes = [_lowpass(plane, 1, bound) for plane in planes]
        bound = 2 * bound + 1
        levels.append(_compose(frame, planes))
    levels.reverse()
    return levels


def level_checksums(frame: PreparedFrame) -> tuple[LevelChecksum, ...]:
    """Return the IFRC of every resolution level of ``frame``, base first."""
    return tuple(
        LevelChecksum(width=int(level.shape[1]), height=int(level.shape[0]), checksum=checksum(level))
        for level in resolution_levels(frame)
    )


# --- codestream structure ----------------------------------------------------------------------------

_SOC, _SOT, _EOC = 0xFF4F, 0xFF90, 0xFFD9
_SIZ, _CAP, _COD, _TLM = 0xFF51, 0xFF50, 0xFF52, 0xFF55


def _tlm_lengths(segment: bytes) -> tuple[int, ...]:
    stlm = segment[1]
    tile_index_size = (stlm >> 4) & 0x3
    length_size = 4 if stlm & 0x40 else 2
    entry = tile_index_size + length_size
    body = segment[2:]
    fmt = ">I" if length_size == 4 else ">H"
    return tuple(
        struct.unpack_from(fmt, body, offset + tile_index_size)[0] for offset in range(0, len(body), entry)
    )


def parse_codestream(codestream: bytes, *, tile_parts: bool = True) -> CodestreamInfo:
    """Return the structure a JPEG 2000 codestream declares in its marker segments.

    Parameters
    ----------
    codestream : bytes
        A raw codestream (``FF4F FF51 ...``), no JP2 boxes.
    tile_parts : bool
        Also walk the tile-part headers (``SOT``) to the end of the codestream.

    Raises
    ------
    HTJ2KError
        When the bytes are not a well-formed codestream.
    """
    try:
        return _parse_codestream(codestream, tile_parts)
    except (struct.error, IndexError, KeyError) as exc:
        raise HTJ2KError(f"malformed codestream: {exc}") from exc


def _parse_codestream(codestream: bytes, walk_tile_parts: bool) -> CodestreamInfo:
    if struct.unpack_from(">H", codestream, 0)[0] != _SOC:
        raise HTJ2KError("the codestream does not start with SOC")
    position = 2
    segments: dict[int, bytes] = {}
    while True:
        marker, length = struct.unpack_from(">HH", codestream, position)
        if marker == _SOT:
            break
        segments.setdefault(marker, codestream[position + 4 : position + 2 + length])
        position += 2 + length
    siz, cod = segments[_SIZ], segments[_COD]
    width, height = struct.unpack_from(">II", siz, 2)
    x_offset, y_offset = struct.unpack_from(">II", siz, 10)
    components = struct.unpack_from(">H", siz, 34)[0]
    ssiz = siz[36]
    parts: list[TilePart] = []
    if walk_tile_parts:
        while struct.unpack_from(">H", codestream, position)[0] == _SOT:
            _isot, psot, tpsot, tnsot = struct.unpack_from(">HIBB", codestream, position + 4)
            length = psot or len(codestream) - 2 - position
            parts.append(TilePart(offset=position, length=length, index=tpsot, count=tnsot))
            position += length
        if struct.unpack_from(">H", codestream, position)[0] != _EOC:
            raise HTJ2KError("the codestream does not end with EOC")
    return CodestreamInfo(
        width=width - x_offset,
        height=height - y_offset,
        components=components,
        precision=(ssiz & 0x7F) + 1,
        signed=bool(ssiz & 0x80),
        htj2k=_CAP in segments,
        progression_order=_PROGRESSION_ORDERS[cod[1]],
        decomposition_levels=cod[5],
        reversible=cod[9] == 1,
        color_transform=cod[4] == 1,
        code_block_size=(1 << (cod[6] + 2), 1 << (cod[7] + 2)),
        tlm=_tlm_lengths(segments[_TLM]) if _TLM in segments else None,
        tile_parts=tuple(parts),
    )

"""Reading a low resolution level of an HTJ2K frame from a prefix of its codestream.

HealthImaging stores every frame as a lossless HTJ2K codestream (``../shared/spec/healthimaging-platform.md``
sections 6.6, 6.7 and 9.5) in RPCL progression, with a TLM (tile-part lengths) marker in the main header
and one tile-part per resolution level.  Resolution ``k`` (0 is the base, ``levels`` the full frame)
depends only on the packets of resolutions ``0..k``, and those sit in the first ``k + 1`` tile-parts.
A thumbnail therefore needs only the main header and those tile-parts: the TLM marker gives their
lengths, so the main header alone says how many bytes to read.  This is what the service's "TLM proxy"
sample does for thumbnails and progressive loading.

Typical use::

    header = parse_header(first_bytes)          # the main header, up to the first SOT marker
    reduce = choose_reduce(header, 256)         # skip the levels a 256-pixel thumbnail does not need
    length = prefix_length(header, reduce)      # None: no usable TLM, read the whole frame
    ...read ``length`` bytes of the frame...
    codestream = truncated_codestream(prefix, reduce)   # the prefix plus EOC, ready to decode

Decoding the truncated codestream with ``reduce`` resolutions discarded returns exactly what decoding
the whole frame with ``reduce`` discarded returns, with either decoder: OpenJPH
(``imagecodecs.htj2k_decode(..., skipres=reduce)``) accepts the prefix as is; OpenJPEG
(``imagecodecs.jpeg2k_decode(..., skipres=reduce)``, pylibjpeg-openjpeg) fails unless an EOC marker
ends it, so :func:`truncated_codestream` appends one.  OpenJPH does not clip reduced levels whose
samples overshoot the sample range (it wraps them at the width of the output dtype), OpenJPEG clips:
to match the service's per-level checksums, decode reduced levels with OpenJPEG.

Which tile-part holds which resolution is not written in the codestream.  :func:`prefix_length` relies
on how OpenJPH (and the service's encoder) split tile-parts "by resolution", and uses the TLM marker
only when the header is consistent with that layout: a resolution-major progression (RPCL, RLCP, or
LRCP with a single quality layer), the same decomposition levels in every component, no POC marker,
and per tile either one tile-part per resolution (tile-part ``k`` carries resolution ``k``) or a single
tile-part (which carries them all).  Otherwise it returns ``None`` and the caller reads the whole
frame.

Pure (``struct`` only): no NumPy, no codec.
"""

from __future__ import annotations

import struct
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Final

__all__ = [
    "EOC",
    "Codestream",
    "CodestreamError",
    "Component",
    "choose_reduce",
    "parse_header",
    "prefix_length",
    "truncated_codestream",
]

EOC: Final = b"\xff\xd9"
"""The end-of-codestream marker that ends a truncated codestream."""

_SOC: Final = 0xFF4F
_CAP: Final = 0xFF50
_SIZ: Final = 0xFF51
_COD: Final = 0xFF52
_COC: Final = 0xFF53
_TLM: Final = 0xFF55
_POC: Final = 0xFF5F
_SOT: Final = 0xFF90
_SOD: Final = 0xFF93
_EOC: Final = 0xFFD9

_MARKER_NAMES: Final = {
    _SOC: "SOC",
    _CAP: "CAP",
    _SIZ: "SIZ",
    _COD: "COD",
    _COC: "COC",
    _TLM: "TLM",
    0xFF57: "PLM",
    0xFF58: "PLT",
    0xFF59: "CPF",
    0xFF5C: "QCD",
    0xFF5D: "QCC",
    0xFF5E: "RGN",
    _POC: "POC",
    0xFF60: "PPM",
    0xFF61: "PPT",
    0xFF63: "CRG",
    0xFF64: "COM",
    _SOT: "SOT",
    _SOD: "SOD",
    _EOC: "EOC",
}

_PROGRESSION_ORDERS: Final = ("LRCP", "RLCP", "RPCL", "PCRL", "CPRL")
_RESOLUTION_MAJOR: Final = frozenset({"RLCP", "RPCL"})
"""Progressions whose packets are sorted by resolution first (LRCP too, with a single layer)."""

_MAX_LEVELS: Final = 32
_MAX_PRECISION: Final = 38
_MAX_COMPONENTS: Final = 16384
_SOT_SEGMENT: Final = 12  # SOT marker, Lsot, Isot, Psot, TPsot, TNsot
_MIN_TILE_PART: Final = _SOT_SEGMENT + 2  # ... and SOD

_U16: Final = struct.Struct(">H")
_SIZ_FIXED: Final = struct.Struct(">H8IH")  # Rsiz, Xsiz..YTOsiz, Csiz (after Lsiz)
_COD_FIXED: Final = struct.Struct(">BBHBBBBBB")  # Scod, SGcod (3 fields), SPcod (5 fields)
_SOT_BODY: Final = struct.Struct(">HHIBB")  # Lsot, Isot, Psot, TPsot, TNsot


class CodestreamError(ValueError):
    """The bytes are not a (complete enough) JPEG 2000 codestream; the message never quotes them."""


@dataclass(frozen=True)
class Component:
    """One image component as SIZ declares it.

    Attributes
    ----------
    precision : int
        Bits per sample (1-38).
    signed : bool
        Whether the samples are signed.
    dx, dy : int
        Horizontal and vertical subsampling (1 for every component of a DICOM frame).
    """

    precision: int
    signed: bool
    dx: int
    dy: int


@dataclass(frozen=True)
class Codestream:
    """What the main header of a JPEG 2000 codestream declares.

    Attributes
    ----------
    x_size, y_size : int
        ``Xsiz``/``Ysiz``: the right and bottom edges of the image area on the reference grid.
    x_offset, y_offset : int
        ``XOsiz``/``YOsiz``: its left and top edges (0 for DICOM frames).
    tile_width, tile_height, tile_x_offset, tile_y_offset : int
        ``XTsiz``, ``YTsiz``, ``XTOsiz``, ``YTOsiz``: the tiling.
    components : tuple[Component, ...]
        The image components, in order.
    htj2k : bool
        Whether a CAP marker (HTJ2K, ISO/IEC 15444-15) is present.
    progression_order : str
        ``"LRCP"``, ``"RLCP"``, ``"RPCL"``, ``"PCRL"`` or ``"CPRL"`` (COD).
    layers : int
        Quality layers (COD).
    multiple_component_transform : bool
        Whether the (reversible or irreversible) colour transform is used (COD).
    decomposition_levels : int
        Wavelet decomposition levels (COD).
    component_levels : tuple[int, ...]
        Decomposition levels of each component, after the main header's COC markers.
    code_block_size : tuple[int, int]
        Code-block width and height (COD).
    code_block_style : int
        The code-block style flags (COD; 0x40 marks HT code-blocks).
    reversible : bool
        Whether the wavelet is the reversible 5/3 one (lossless).
    precincts : tuple[tuple[int, int], ...] | None
        Precinct width and height exponents per resolution, base first, or None for the default.
    tile_parts : tuple[int, ...] | None
        The tile-part lengths the TLM markers list, in codestream order (``SOT`` to the end of the
        tile-part's data; 0 when the encoder did not know it), or None without TLM.
    tile_part_tiles : tuple[int, ...] | None
        The tile index of each of those tile-parts, or None when TLM does not give them.
    markers : tuple[int, ...]
        The marker codes of the main header's segments, in order (``0xFF51`` for SIZ, ...).
    main_header_length : int
        Bytes from SOC to the first SOT marker: where the first tile-part starts.
    """

    x_size: int
    y_size: int
    x_offset: int
    y_offset: int
    tile_width: int
    tile_height: int
    tile_x_offset: int
    tile_y_offset: int
    components: tuple[Component, ...]
    htj2k: bool
    progression_order: str
    layers: int
    multiple_component_transform: bool
    decomposition_levels: int
    component_levels: tuple[int, ...]
    code_block_size: tuple[int, int]
    code_block_style: int
    reversible: bool
    precincts: tuple[tuple[int, int], ...] | None
    tile_parts: tuple[int, ...] | None
    tile_part_tiles: tuple[int, ...] | None
    markers: tuple[int, ...]
    main_header_length: int

    @property
    def width(self) -> int:
        """Width of the full-resolution image."""
        return self.x_size - self.x_offset

    @property
    def height(self) -> int:
        """Height of the full-resolution image."""
        return self.y_size - self.y_offset

    @property
    def levels(self) -> int:
        """Decomposition levels: a decoder can discard up to this many resolutions."""
        return self.decomposition_levels

    @property
    def resolutions(self) -> int:
        """Resolution levels, ``levels + 1`` (the base and one per decomposition)."""
        return self.decomposition_levels + 1

    @property
    def tiles(self) -> int:
        """Number of tiles."""
        across = _ceil_div(self.x_size - self.tile_x_offset, self.tile_width)
        down = _ceil_div(self.y_size - self.tile_y_offset, self.tile_height)
        return across * down

    def size_at(self, reduce: int) -> tuple[int, int]:
        """Return ``(width, height)`` of the image with the ``reduce`` highest resolutions discarded.

        Parameters
        ----------
        reduce : int
            Resolutions to discard, 0 (full resolution) to :attr:`levels` (the base).

        Returns
        -------
        tuple[int, int]
            ``ceil(x1 / 2**reduce) - ceil(x0 / 2**reduce)`` and the same for y (ITU-T T.800 B.5).

        Raises
        ------
        ValueError
            When ``reduce`` is out of range.
        """
        _check_reduce(self, reduce)
        return (
            _ceil_shift(self.x_size, reduce) - _ceil_shift(self.x_offset, reduce),
            _ceil_shift(self.y_size, reduce) - _ceil_shift(self.y_offset, reduce),
        )


def _ceil_div(value: int, divisor: int) -> int:
    return -(-value // divisor)


def _ceil_shift(value: int, shift: int) -> int:
    return (value + (1 << shift) - 1) >> shift


def _check_reduce(header: Codestream, reduce: int) -> None:
    if not 0 <= reduce <= header.levels:
        raise ValueError(f"reduce must be between 0 and {header.levels}, not {reduce}")


def _name(marker: int) -> str:
    return _MARKER_NAMES.get(marker, "marker segment")


# --- main header -------------------------------------------------------------------------------------


def parse_header(data: bytes) -> Codestream:
    """Return what the main header of a JPEG 2000 codestream declares.

    Parameters
    ----------
    data : bytes
        The codestream (``FF4F FF51 ...``, no JP2 boxes), or at least its first bytes up to and
        including the first SOT marker.

    Returns
    -------
    Codestream
        The SIZ, COD, COC and TLM information and where the first tile-part starts.

    Raises
    ------
    CodestreamError
        When the bytes end before the first SOT marker, or do not form a main header (no SOC, no SIZ
        right after it, no COD, or an inconsistent marker segment).
    """
    size = len(data)
    if size < 2:
        raise CodestreamError(f"truncated codestream: {size} bytes, not even an SOC marker")
    if _U16.unpack_from(data, 0)[0] != _SOC:
        raise CodestreamError("not a JPEG 2000 codestream: it does not start with an SOC marker")
    position = 2
    segments: list[tuple[int, int, int]] = []  # marker, offset of the body (after the length), end
    while True:
        if position + 2 > size:
            raise CodestreamError(f"truncated main header: no SOT marker within the {size} bytes given")
        marker = _U16.unpack_from(data, position)[0]
        if marker == _SOT:
            break
        if not 0xFF50 <= marker <= 0xFF6F:
            where = "a misplaced " + _MARKER_NAMES[marker] if marker in _MARKER_NAMES else "no marker"
            raise CodestreamError(f"malformed main header: {where} at byte {position}")
        if position + 4 > size:
            raise CodestreamError(
                f"truncated main header: the {_name(marker)} marker at byte {position} has no length"
            )
        length = _U16.unpack_from(data, position + 2)[0]
        end = position + 2 + length
        if length < 2:
            raise CodestreamError(f"malformed main header: {_name(marker)} at byte {position} is too short")
        if end > size:
            raise CodestreamError(
                f"truncated main header: the {_name(marker)} segment at byte {position} needs {end} bytes,"
                f" {size} given"
            )
        if not segments and marker != _SIZ:
            raise CodestreamError("malformed main header: SIZ does not follow SOC")
        segments.append((marker, position + 4, end))
        position = end
    return _header(bytes(data[:position]), segments, position)


def _only(segments: Sequence[tuple[int, int, int]], marker: int) -> tuple[int, int]:
    found = [(start, end) for code, start, end in segments if code == marker]
    if len(found) != 1:
        state = "no" if not found else "more than one"
        raise CodestreamError(f"malformed main header: {state} {_MARKER_NAMES[marker]} marker")
    return found[0]


def _header(data: bytes, segments: Sequence[tuple[int, int, int]], sot_offset: int) -> Codestream:
    if not segments:
        raise CodestreamError("malformed main header: SIZ does not follow SOC")
    siz = _parse_siz(data, *_only(segments, _SIZ))
    cod = _parse_cod(data, *_only(segments, _COD))
    component_levels = [cod.levels] * len(siz.components)
    for code, start, end in segments:
        if code == _COC:
            component, coc_levels = _parse_coc(data, start, end, len(siz.components))
            component_levels[component] = coc_levels
    tlm = _parse_tlm(data, [(start, end) for code, start, end in segments if code == _TLM])
    return Codestream(
        x_size=siz.x_size,
        y_size=siz.y_size,
        x_offset=siz.x_offset,
        y_offset=siz.y_offset,
        tile_width=siz.tile_width,
        tile_height=siz.tile_height,
        tile_x_offset=siz.tile_x_offset,
        tile_y_offset=siz.tile_y_offset,
        components=siz.components,
        htj2k=any(code == _CAP for code, _, _ in segments),
        progression_order=_PROGRESSION_ORDERS[cod.progression],
        layers=cod.layers,
        multiple_component_transform=bool(cod.mct),
        decomposition_levels=cod.levels,
        component_levels=tuple(component_levels),
        code_block_size=(1 << (cod.xcb + 2), 1 << (cod.ycb + 2)),
        code_block_style=cod.style,
        reversible=cod.transform == 1,
        precincts=cod.precincts,
        tile_parts=tlm[0] if tlm is not None else None,
        tile_part_tiles=tlm[1] if tlm is not None else None,
        markers=tuple(code for code, _, _ in segments),
        main_header_length=sot_offset,
    )


@dataclass(frozen=True)
class _Siz:
    x_size: int
    y_size: int
    x_offset: int
    y_offset: int
    tile_width: int
    tile_height: int
    tile_x_offset: int
    tile_y_offset: int
    components: tuple[Component, ...]


def _parse_siz(data: bytes, start: int, end: int) -> _Siz:
    if end - start < _SIZ_FIXED.size:
        raise CodestreamError("malformed SIZ marker segment: too short")
    _rsiz, x1, y1, x0, y0, tw, th, tx0, ty0, count = _SIZ_FIXED.unpack_from(data, start)
    if not 1 <= count <= _MAX_COMPONENTS or end - start != _SIZ_FIXED.size + 3 * count:
        raise CodestreamError("malformed SIZ marker segment: its length does not match its components")
    if not (x0 < x1 and y0 < y1 and tw > 0 and th > 0):
        raise CodestreamError("malformed SIZ marker segment: empty image area or tiles")
    if not (tx0 <= x0 and ty0 <= y0 and tx0 + tw > x0 and ty0 + th > y0):
        raise CodestreamError("malformed SIZ marker segment: the first tile misses the image area")
    components = []
    for index in range(count):
        offset = start + _SIZ_FIXED.size + 3 * index
        ssiz, dx, dy = data[offset], data[offset + 1], data[offset + 2]
        precision = (ssiz & 0x7F) + 1
        if precision > _MAX_PRECISION or dx == 0 or dy == 0:
            raise CodestreamError(f"malformed SIZ marker segment: component {index} is invalid")
        components.append(Component(precision=precision, signed=bool(ssiz & 0x80), dx=dx, dy=dy))
    return _Siz(x1, y1, x0, y0, tw, th, tx0, ty0, tuple(components))


@dataclass(frozen=True)
class _Cod:
    progression: int
    layers: int
    mct: int
    levels: int
    xcb: int
    ycb: int
    style: int
    transform: int
    precincts: tuple[tuple[int, int], ...] | None


def _parse_cod(data: bytes, start: int, end: int) -> _Cod:
    if end - start < _COD_FIXED.size:
        raise CodestreamError("malformed COD marker segment: too short")
    scod, progression, layers, mct, levels, xcb, ycb, style, transform = _COD_FIXED.unpack_from(data, start)
    precincts = None
    expected = _COD_FIXED.size
    if scod & 0x01:
        expected += levels + 1
        if end - start == expected:
            packed = data[start + _COD_FIXED.size : end]
            precincts = tuple((value & 0x0F, value >> 4) for value in packed)
    if end - start != expected:
        raise CodestreamError("malformed COD marker segment: its length does not match its levels")
    if progression >= len(_PROGRESSION_ORDERS) or levels > _MAX_LEVELS or layers == 0:
        raise CodestreamError("malformed COD marker segment: invalid progression, levels or layers")
    if xcb > 8 or ycb > 8 or xcb + ycb > 8 or transform > 1:
        raise CodestreamError("malformed COD marker segment: invalid code-blocks or wavelet")
    return _Cod(progression, layers, mct, levels, xcb, ycb, style, transform, precincts)


def _parse_coc(data: bytes, start: int, end: int, components: int) -> tuple[int, int]:
    index_size = 1 if components < 257 else 2
    if end - start < index_size + 2:
        raise CodestreamError("malformed COC marker segment: too short")
    component = data[start] if index_size == 1 else _U16.unpack_from(data, start)[0]
    levels = data[start + index_size + 1]
    if component >= components or levels > _MAX_LEVELS:
        raise CodestreamError("malformed COC marker segment: invalid component or levels")
    return component, levels


def _parse_tlm(
    data: bytes, segments: Sequence[tuple[int, int]]
) -> tuple[tuple[int, ...], tuple[int, ...] | None] | None:
    """Return the tile-part lengths and tile indices of the TLM segments (in ``Ztlm`` order)."""
    if not segments:
        return None
    by_index: dict[int, tuple[list[int], list[int] | None]] = {}
    for start, end in segments:
        if end - start < 2:
            raise CodestreamError("malformed TLM marker segment: too short")
        ztlm, stlm = data[start], data[start + 1]
        tile_index_size = (stlm >> 4) & 0x03
        length_size = 4 if stlm & 0x40 else 2
        if tile_index_size == 3:
            raise CodestreamError("malformed TLM marker segment: invalid tile index size")
        entry = tile_index_size + length_size
        body = end - start - 2
        if body % entry:
            raise CodestreamError("malformed TLM marker segment: its length is not a whole number of entries")
        if ztlm in by_index:
            raise CodestreamError("malformed main header: two TLM marker segments have the same index")
        lengths: list[int] = []
        tiles: list[int] | None = [] if tile_index_size else None
        for offset in range(start + 2, end, entry):
            if tiles is not None:
                tiles.append(data[offset] if tile_index_size == 1 else _U16.unpack_from(data, offset)[0])
            field = data[offset + tile_index_size : offset + entry]
            length = int.from_bytes(field, "big")
            if 0 < length < _MIN_TILE_PART:
                raise CodestreamError("malformed TLM marker segment: a tile-part is shorter than its header")
            lengths.append(length)
        by_index[ztlm] = (lengths, tiles)
    all_lengths: list[int] = []
    all_tiles: list[int] | None = []
    for ztlm in sorted(by_index):
        lengths, tiles = by_index[ztlm]
        all_lengths.extend(lengths)
        all_tiles = all_tiles + tiles if all_tiles is not None and tiles is not None else None
    return tuple(all_lengths), tuple(all_tiles) if all_tiles is not None else None


# --- prefixes ----------------------------------------------------------------------------------------


@dataclass(frozen=True)
class _TilePart:
    tile: int
    index: int  # within its tile: TPsot
    offset: int | None  # None once an earlier tile-part's length is unknown
    length: int  # 0: unknown


def _layout(header: Codestream) -> tuple[_TilePart, ...] | None:
    """Return the tile-parts the TLM markers describe, or None when they do not cover every tile."""
    lengths = header.tile_parts
    if not lengths:
        return None
    tiles_count = header.tiles
    if header.tile_part_tiles is not None:
        tiles: Sequence[int] = header.tile_part_tiles
    elif tiles_count == 1:
        tiles = [0] * len(lengths)  # no tile indices (Stlm ST=0): with one tile, they are all its own
    elif len(lengths) == tiles_count:
        tiles = range(tiles_count)  # ST=0 as the standard means it: one tile-part per tile, in order
    else:
        return None
    if set(tiles) != set(range(tiles_count)):
        return None
    parts: list[_TilePart] = []
    seen: dict[int, int] = {}
    offset: int | None = header.main_header_length
    for tile, length in zip(tiles, lengths, strict=True):
        index = seen.get(tile, 0)
        seen[tile] = index + 1
        parts.append(_TilePart(tile=tile, index=index, offset=offset, length=length))
        offset = offset + length if offset is not None and length else None
    return tuple(parts)


def _by_resolution(header: Codestream) -> bool:
    """Whether tile-parts split by resolution would hold one resolution each, in order."""
    order = header.progression_order
    return order in _RESOLUTION_MAJOR or (order == "LRCP" and header.layers == 1)


def prefix_length(data_or_header: bytes | Codestream, reduce: int) -> int | None:
    """Return how many leading bytes of the codestream decode with ``reduce`` resolutions discarded.

    That is the main header and, in every tile, the tile-parts of resolutions ``0..levels - reduce``:
    with one tile-part per resolution (the service's layout), tile-part ``k`` carries resolution ``k``.

    Parameters
    ----------
    data_or_header : bytes or Codestream
        The codestream, or its first bytes up to the first SOT marker, or its parsed header.
    reduce : int
        Resolutions to discard, 0 (full resolution) to ``levels`` (the base).

    Returns
    -------
    int | None
        The prefix length (not counting the EOC marker a decoder may need after it), or None when the
        codestream has no usable TLM: no TLM, lengths that do not cover every tile, or a layout other
        than one tile-part per resolution (or per tile) in a resolution-major progression.  Read the
        whole frame then.

    Raises
    ------
    CodestreamError
        When ``data_or_header`` holds no well-formed main header.
    ValueError
        When ``reduce`` is out of range.
    """
    header = data_or_header if isinstance(data_or_header, Codestream) else parse_header(data_or_header)
    _check_reduce(header, reduce)
    needed = _needed(header, reduce)
    if needed is None:
        return None
    ends = [part.offset + part.length for part in needed if part.offset is not None and part.length]
    return max(ends) if len(ends) == len(needed) else None


def _needed(header: Codestream, reduce: int) -> list[_TilePart] | None:
    parts = _layout(header)
    if parts is None or _POC in header.markers or set(header.component_levels) != {header.levels}:
        return None
    per_tile: dict[int, int] = {}
    for part in parts:
        per_tile[part.tile] = per_tile.get(part.tile, 0) + 1
    last_resolution = header.levels - reduce
    needed = []
    for part in parts:
        count = per_tile[part.tile]
        if count == 1:
            needed.append(part)  # the whole tile in one tile-part
        elif count == header.resolutions and _by_resolution(header):
            if part.index <= last_resolution:
                needed.append(part)
        else:
            return None
    return needed


def truncated_codestream(data: bytes, reduce: int) -> bytes | None:
    """Return the prefix of ``data`` that decodes with ``reduce`` resolutions discarded, ending in EOC.

    Parameters
    ----------
    data : bytes
        The codestream, or at least its first :func:`prefix_length` bytes.
    reduce : int
        Resolutions to discard, 0 (full resolution) to ``levels`` (the base).

    Returns
    -------
    bytes | None
        The first :func:`prefix_length` bytes followed by an EOC marker (OpenJPEG refuses a codestream
        without it; OpenJPH does not need it), or None when the codestream has no usable TLM (decode
        the whole frame).  Decoded with ``reduce`` resolutions discarded, it gives the same samples as
        the whole codestream does.

    Raises
    ------
    CodestreamError
        When the main header is malformed, ``data`` is shorter than the prefix, or the tile-part
        headers in the prefix disagree with the TLM marker.
    ValueError
        When ``reduce`` is out of range.
    """
    header = parse_header(data)
    _check_reduce(header, reduce)
    length = prefix_length(header, reduce)
    if length is None:
        return None
    if len(data) < length:
        raise CodestreamError(
            f"truncated codestream: discarding {reduce} resolutions needs {length} bytes, {len(data)} given"
        )
    parts = _layout(header)
    assert parts is not None  # prefix_length found it usable
    for part in parts:
        if part.offset is not None and part.offset < length:
            _check_tile_part(data, part)
    return bytes(data[:length]) + EOC


def _check_tile_part(data: bytes, part: _TilePart) -> None:
    """Check that the tile-part header at ``part.offset`` is the one the TLM marker describes."""
    assert part.offset is not None
    offset = part.offset
    if offset + _SOT_SEGMENT > len(data) or _U16.unpack_from(data, offset)[0] != _SOT:
        raise CodestreamError(f"the TLM marker disagrees with the codestream: no SOT marker at byte {offset}")
    lsot, isot, psot, tpsot, _tnsot = _SOT_BODY.unpack_from(data, offset + 2)
    if (lsot, isot, psot, tpsot) != (_SOT_SEGMENT - 2, part.tile, part.length, part.index):
        raise CodestreamError(
            f"the TLM marker disagrees with the codestream: the tile-part header at byte {offset} describes"
            " another tile-part"
        )


def choose_reduce(header: Codestream, longest_side: int) -> int:
    """Return the most resolutions to discard that still leave ``longest_side`` pixels.

    Parameters
    ----------
    header : Codestream
        The codestream's main header.
    longest_side : int
        The smallest acceptable longest side (a thumbnail's size), in pixels.

    Returns
    -------
    int
        The largest ``reduce`` in ``[0, levels]`` whose longest side is at least ``longest_side``, or 0
        when even the full resolution is smaller.

    Raises
    ------
    ValueError
        When ``longest_side`` is not positive.
    """
    if longest_side < 1:
        raise ValueError(f"longest_side must be positive, not {longest_side}")
    reduce = 0
    while reduce < header.levels and max(header.size_at(reduce + 1)) >= longest_side:
        reduce += 1
    return reduce

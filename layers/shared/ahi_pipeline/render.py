"""Rendering a decoded frame as an 8-bit thumbnail (pure, NumPy): small steps, in pydicom's order.

``stored values → modality LUT → VOI LUT → (MONOCHROME1: invert) → 8 bits``, or for colour
``YBR → RGB`` / ``PALETTE COLOR → RGB``, then an area-average resize to a longest side of N pixels.

* :func:`stored_values`: the decoded samples as the stored integers: masked to ``(0028,0101)
  BitsStored`` and sign-extended when ``(0028,0103) PixelRepresentation`` is 1.
* :func:`modality_lut`: ``(0028,1053) RescaleSlope`` × value + ``(0028,1052) RescaleIntercept``.
* :func:`voi_lut`: ``(0028,1050) WindowCenter`` / ``(0028,1051) WindowWidth`` with ``(0028,1056)
  VOILUTFunction`` LINEAR (the default), LINEAR_EXACT or SIGMOID (PS3.3 C.11.2.1.2), to [0, 1];
  :func:`robust_window` when the metadata gives no usable window (the 0.5th to 99.5th percentile).
* :func:`ybr_full_to_rgb` (PS3.3 C.7.6.3.1.2; YBR_FULL_422 is YBR_FULL once the decoder has
  upsampled the chroma) and :func:`palette_to_rgb` (the Red/Green/Blue Palette Color LUTs, plain or
  segmented: :func:`expand_segmented_lut`).
* :func:`area_resize`: each output pixel is the exact area-weighted mean of the input pixels it covers.
* :func:`to_uint8`: [0, 1] → 0..255, rounded.

:func:`render` chains them from a :class:`FrameDescription` (what the metadata says of the frame).
"""

from __future__ import annotations

import base64
import binascii
import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any, Final

import numpy as np
import numpy.typing as npt

__all__ = [
    "COLOUR",
    "DEFAULT_SIZE",
    "MONOCHROME",
    "FrameDescription",
    "RenderError",
    "SegmentedLUT",
    "area_resize",
    "expand_segmented_lut",
    "modality_lut",
    "palette_to_rgb",
    "render",
    "robust_window",
    "stored_values",
    "to_uint8",
    "voi_lut",
    "ybr_full_to_rgb",
]

DEFAULT_SIZE: Final = 256
MONOCHROME: Final = frozenset({"MONOCHROME1", "MONOCHROME2"})
COLOUR: Final = frozenset({"RGB", "YBR_FULL", "YBR_FULL_422", "YBR_RCT", "YBR_ICT", "PALETTE COLOR"})
Array = npt.NDArray[Any]


class RenderError(ValueError):
    """The frame cannot be rendered (an unsupported photometric interpretation, a malformed LUT, …)."""


def _first(value: Any) -> Any:
    return value[0] if isinstance(value, list) and value else value


def _number(value: Any) -> float | None:
    value = _first(value)
    if value is None or value == "":
        return None
    try:
        number = float(value)
    except (TypeError, ValueError):
        return None
    return number if math.isfinite(number) else None


@dataclass(frozen=True)
class FrameDescription:
    """What the image set metadata says about an instance's frames (its ``DICOM`` attributes)."""

    photometric: str
    samples_per_pixel: int = 1
    bits_allocated: int = 16
    bits_stored: int = 16
    pixel_representation: int = 0
    rescale_slope: float = 1.0
    rescale_intercept: float = 0.0
    window_center: float | None = None
    window_width: float | None = None
    voi_function: str = "LINEAR"
    palette: tuple[Any, ...] | None = None
    #: Colour frames served as HTJ2K are RGB whatever the metadata's PhotometricInterpretation says
    #: (the import decodes YBR to RGB before encoding); False for samples still in YBR_FULL(_422).
    decoded_as_rgb: bool = True

    @classmethod
    def from_metadata(cls, dicom: Mapping[str, Any]) -> FrameDescription:
        """From an instance's ``DICOM`` map (first values of multi-valued windows, as viewers do)."""
        palette = None
        if str(dicom.get("PhotometricInterpretation") or "").strip() == "PALETTE COLOR":
            colours = ("Red", "Green", "Blue")
            descriptors = tuple(dicom.get(f"{c}PaletteColorLookupTableDescriptor") for c in colours)
            tables = tuple(
                dicom.get(f"{c}PaletteColorLookupTableData")
                or SegmentedLUT.of(dicom.get(f"Segmented{c}PaletteColorLookupTableData"))
                for c in colours
            )
            palette = descriptors + tables
        bits_allocated = int(_number(dicom.get("BitsAllocated")) or 16)
        return cls(
            photometric=str(dicom.get("PhotometricInterpretation") or "MONOCHROME2").strip(),
            samples_per_pixel=int(_number(dicom.get("SamplesPerPixel")) or 1),
            bits_allocated=bits_allocated,
            bits_stored=int(_number(dicom.get("BitsStored")) or bits_allocated),
            pixel_representation=int(_number(dicom.get("PixelRepresentation")) or 0),
            rescale_slope=_number(dicom.get("RescaleSlope")) or 1.0,
            rescale_intercept=_number(dicom.get("RescaleIntercept")) or 0.0,
            window_center=_number(dicom.get("WindowCenter")),
            window_width=_number(dicom.get("WindowWidth")),
            voi_function=str(_first(dicom.get("VOILUTFunction")) or "LINEAR").strip().upper(),
            palette=palette,
        )


# ---------------------------------------------------------------------- monochrome
def stored_values(pixels: Array, bits_stored: int, pixel_representation: int) -> Array:
    """The samples as stored integers (int64): the ``bits_stored`` low bits, sign-extended if signed."""
    values = np.asarray(pixels).astype(np.int64, copy=False)
    mask = (1 << bits_stored) - 1
    values = values & mask
    if pixel_representation == 1:
        sign = 1 << (bits_stored - 1)
        values = np.where(values & sign, values - (1 << bits_stored), values)
    return values


def modality_lut(values: Array, slope: float = 1.0, intercept: float = 0.0) -> Array:
    """Rescale stored values to modality values (float64)."""
    return values.astype(np.float64) * slope + intercept


def voi_lut(values: Array, center: float, width: float, function: str = "LINEAR") -> Array:
    """Window modality values to [0, 1] (PS3.3 C.11.2.1.2; output range normalized to 0..1).

    Raises
    ------
    RenderError
        For a width the function does not allow (LINEAR needs ≥ 1, the others > 0) or another function.
    """
    x = values.astype(np.float64, copy=False)
    if function == "LINEAR":
        if width < 1:
            raise RenderError("a LINEAR window needs a width of at least 1")
        if width == 1:
            return (x > center - 0.5).astype(np.float64)
        return np.clip((x - (center - 0.5)) / (width - 1) + 0.5, 0.0, 1.0)
    if function == "LINEAR_EXACT":
        if width <= 0:
            raise RenderError("a LINEAR_EXACT window needs a positive width")
        return np.clip((x - center) / width + 0.5, 0.0, 1.0)
    if function == "SIGMOID":
        if width <= 0:
            raise RenderError("a SIGMOID window needs a positive width")
        return 1.0 / (1.0 + np.exp(-4.0 * (x - center) / width))
    raise RenderError(f"VOI LUT function {function!r} is not supported")


def robust_window(values: Array, low: float = 0.5, high: float = 99.5) -> tuple[float, float]:
    """A window (center, width) from the ``low``-th to the ``high``-th percentile (width ≥ 1)."""
    lo, hi = np.percentile(values, [low, high])
    width = max(float(hi - lo), 1.0)
    return float(lo) + width / 2, width


def to_uint8(unit: Array) -> Array:
    """[0, 1] → 0..255 (rounded half to even, as NumPy rounds)."""
    return np.rint(np.clip(unit, 0.0, 1.0) * 255.0).astype(np.uint8)


# ---------------------------------------------------------------------- colour
def ybr_full_to_rgb(ybr: Array, bits: int = 8) -> Array:
    """YBR_FULL (also YBR_FULL_422 once upsampled) to RGB, PS3.3 C.7.6.3.1.2, in the samples' range."""
    top = (1 << bits) - 1
    half = 1 << (bits - 1)
    y, cb, cr = (ybr[..., index].astype(np.float64) for index in range(3))
    r = y + 1.402 * (cr - half)
    g = y - 0.344136 * (cb - half) - 0.714136 * (cr - half)
    b = y + 1.772 * (cb - half)
    return np.clip(np.rint(np.stack([r, g, b], axis=-1)), 0, top)


@dataclass(frozen=True)
class SegmentedLUT:
    """``(0028,1221-1223)`` Segmented Palette Color LUT Data as the metadata holds it (base64 of the OW
    value's little-endian words), used when the plain LUT Data is absent (PS3.3 C.7.9.2)."""

    data: str

    @classmethod
    def of(cls, value: Any) -> SegmentedLUT | None:
        return cls(value) if isinstance(value, str) and value else None


# Segment types of PS3.3 C.7.9.2: discrete, linear, indirect.
_DISCRETE: Final = 0
_LINEAR: Final = 1
_INDIRECT: Final = 2
#: A palette maps at most 2^16 indices (a descriptor's 0 entries means 65,536); a longer expansion is
#: refused as it grows, so that crafted segments (long linear runs, indirect repeats) cannot exhaust memory.
MAX_LUT_ENTRIES: Final = 65536


def expand_segmented_lut(words: Sequence[int]) -> Array:
    """The LUT a segmented palette describes (PS3.3 C.7.9.2), from its 16-bit words.

    * discrete (opcode 0, length n): the n words that follow are entries;
    * linear (opcode 1, length n, y1): n entries from the previous entry y0 to y1, ``y0 + (y1 - y0) i / n``
      for i = 1..n, rounded;
    * indirect (opcode 2, count, offset low word, offset high word): the ``count`` segments found at that
      byte offset of the data again, themselves discrete or linear.

    A trailing odd word (the OW value's padding) is ignored.

    Raises
    ------
    RenderError
        For an unknown opcode, a linear segment with no entry before it, a segment running past the data,
        an indirect segment that points outside the data or at another indirect segment, or more than
        :data:`MAX_LUT_ENTRIES` entries.
    """
    entries: list[int] = []

    def segment(position: int, indirect_allowed: bool) -> int:
        """Expand the segment at word ``position``; the position after it."""
        if position + 1 >= len(words):
            raise RenderError("a segmented palette lookup table ends inside a segment")
        opcode, length = int(words[position]), int(words[position + 1])
        if opcode in (_DISCRETE, _LINEAR) and len(entries) + length > MAX_LUT_ENTRIES:
            raise RenderError(
                f"a segmented palette lookup table expands to more than {MAX_LUT_ENTRIES} entries"
            )
        if opcode == _DISCRETE:
            end = position + 2 + length
            if end > len(words):
                raise RenderError("a segmented palette lookup table ends inside a segment")
            entries.extend(int(w) for w in words[position + 2 : end])
            return end
        if opcode == _LINEAR:
            if position + 2 >= len(words):
                raise RenderError("a segmented palette lookup table ends inside a segment")
            if not entries:
                raise RenderError("a segmented palette lookup table starts with a linear segment")
            start, stop = entries[-1], int(words[position + 2])
            steps = np.arange(1, length + 1, dtype=np.float64)
            entries.extend(np.rint(start + (stop - start) * steps / max(length, 1)).astype(np.int64).tolist())
            return position + 3
        if opcode == _INDIRECT and indirect_allowed:
            if position + 3 >= len(words):
                raise RenderError("a segmented palette lookup table ends inside a segment")
            offset = int(words[position + 2]) | int(words[position + 3]) << 16
            if offset % 2 or offset // 2 >= position:
                raise RenderError("an indirect palette segment points outside the segments before it")
            at = offset // 2
            for _ in range(length):
                at = segment(at, indirect_allowed=False)
            return position + 4
        raise RenderError(f"a segmented palette lookup table has an unsupported segment type {opcode}")

    position = 0
    while position + 1 < len(words):
        position = segment(position, indirect_allowed=True)
    return np.asarray(entries, dtype=np.int64)


def palette_to_rgb(indices: Array, descriptors: Sequence[Any], tables: Sequence[Any]) -> Array:
    """PALETTE COLOR indices to RGB through the three LUTs (values in the LUTs' own range).

    ``descriptors`` are the Red/Green/Blue ``PaletteColorLookupTableDescriptor`` (entries, first mapped
    value, bits per entry); ``tables`` the matching LUT data: lists of integers, base64 of the OW value,
    or a :class:`SegmentedLUT` (16 bits per entry).

    Raises
    ------
    RenderError
        When a LUT is missing or does not match its descriptor.
    """
    channels = []
    for descriptor, table in zip(descriptors, tables, strict=True):
        if not isinstance(descriptor, list) or len(descriptor) != 3:
            raise RenderError("PALETTE COLOR without a usable lookup table in the metadata")
        entries = int(descriptor[0]) or 65536
        first = int(descriptor[1])
        if isinstance(table, SegmentedLUT):
            lut: Array | None = _segmented_values(table, int(descriptor[2]))
        else:
            lut = _lut_values(table, entries)
        if lut is None:
            raise RenderError("PALETTE COLOR without a usable lookup table in the metadata")
        if len(lut) < entries:
            raise RenderError("a palette lookup table is shorter than its descriptor says")
        position = np.clip(indices.astype(np.int64) - first, 0, entries - 1)
        channels.append(lut[position])
    return np.stack(channels, axis=-1)


def _segmented_values(table: SegmentedLUT, bits: int) -> Array:
    """The expanded LUT of segmented data (16-bit entries only: 8-bit segmented palettes are refused)."""
    if bits != 16:
        raise RenderError(f"a segmented palette lookup table of {bits}-bit entries is not supported")
    try:
        data = base64.b64decode(table.data, validate=True)
    except (binascii.Error, ValueError) as error:
        raise RenderError("PALETTE COLOR without a usable lookup table in the metadata") from error
    return expand_segmented_lut(np.frombuffer(data[: len(data) // 2 * 2], "<u2").tolist())


def _lut_values(table: Any, entries: int) -> Array | None:
    """LUT Data as the metadata holds it: base64 text of the OW value's little-endian bytes (one or
    two bytes per entry, as its length says), or a list of integers; None when unusable."""
    if isinstance(table, list) and table:
        return np.asarray(table, dtype=np.int64)
    if not isinstance(table, str) or not table:
        return None
    try:
        data = base64.b64decode(table, validate=True)
    except (binascii.Error, ValueError):
        return None
    width = 1 if len(data) < 2 * entries else 2
    return np.frombuffer(data[: len(data) // width * width], "<u1" if width == 1 else "<u2").astype(np.int64)


# ---------------------------------------------------------------------- resize
def _weights(source: int, target: int) -> Array:
    """A (target, source) matrix of exact area weights: each row sums to 1."""
    scale = source / target
    matrix = np.zeros((target, source), dtype=np.float64)
    for index in range(target):
        start, stop = index * scale, (index + 1) * scale
        first, last = math.floor(start), min(math.ceil(stop), source)
        for column in range(first, last):
            overlap = min(stop, column + 1) - max(start, column)
            if overlap > 0:
                matrix[index, column] = overlap
        matrix[index] /= matrix[index].sum()
    return matrix


def area_resize(image: Array, longest: int = DEFAULT_SIZE) -> Array:
    """Area-average resize so the longest side is ``longest`` (never enlarged); float64 out."""
    height, width = image.shape[:2]
    scale = min(1.0, longest / max(height, width))
    target_h, target_w = max(1, round(height * scale)), max(1, round(width * scale))
    data = image.astype(np.float64, copy=False)
    if (target_h, target_w) == (height, width):
        return data
    rows, columns = _weights(height, target_h), _weights(width, target_w)
    if data.ndim == 2:
        return np.asarray(rows @ data @ columns.T)
    return np.stack([rows @ data[..., c] @ columns.T for c in range(data.shape[2])], axis=-1)


# ---------------------------------------------------------------------- the chain
@dataclass(frozen=True)
class Rendered:
    """The thumbnail and how it was made (for the sidecar)."""

    image: Array
    window: tuple[float, float] | None
    window_source: str


def render(pixels: Array, frame: FrameDescription, longest: int = DEFAULT_SIZE) -> Rendered:
    """A decoded frame (full or reduced resolution) as an 8-bit thumbnail.

    Raises
    ------
    RenderError
        For a photometric interpretation other than MONOCHROME1/2, RGB, YBR_FULL(_422), PALETTE COLOR.
    """
    photometric = frame.photometric
    if photometric in MONOCHROME:
        values = stored_values(pixels, frame.bits_stored, frame.pixel_representation)
        modality = modality_lut(values, frame.rescale_slope, frame.rescale_intercept)
        if frame.window_center is not None and frame.window_width is not None and frame.window_width > 0:
            window, source = (frame.window_center, frame.window_width), "metadata"
            unit = voi_lut(modality, *window, function=frame.voi_function)
        else:
            window, source = robust_window(modality), "percentiles"
            unit = voi_lut(modality, *window, function="LINEAR_EXACT")
        if photometric == "MONOCHROME1":
            unit = 1.0 - unit
        # Windowed, then resized: the window's clipping is not linear, so the order matters.
        return Rendered(to_uint8(area_resize(unit, longest)), window, source)
    if photometric not in COLOUR:
        raise RenderError(f"photometric interpretation {photometric!r} is not supported")
    top = float((1 << frame.bits_stored) - 1)
    if photometric == "PALETTE COLOR":
        if frame.palette is None:
            raise RenderError("PALETTE COLOR without lookup tables in the metadata")
        descriptors, tables = frame.palette[:3], frame.palette[3:]
        rgb = palette_to_rgb(stored_values(pixels, frame.bits_stored, 0), descriptors, tables)
        bits = int(descriptors[0][2]) if isinstance(descriptors[0], list) else 16
        top = float((1 << bits) - 1)
    elif photometric.startswith("YBR_FULL") and pixels.ndim == 3 and not frame.decoded_as_rgb:
        rgb = ybr_full_to_rgb(pixels, min(frame.bits_stored, 16))
    else:
        rgb = pixels
    if rgb.ndim != 3 or rgb.shape[2] != 3:
        raise RenderError(f"a {photometric} frame must have three samples per pixel")
    return Rendered(to_uint8(area_resize(rgb, longest) / top), None, "none")

"""A pydicom data set as the attributes of HealthImaging image set metadata.

The metadata document keys each attribute by its DICOM keyword (``"PatientName"``) and types the value
by its VR (``../shared/spec/healthimaging-api.md`` sections 4.3-4.6):

* empty values are ``null``;
* string VRs (AE AS CS DA DS DT IS LO LT PN SH ST TM UC UI UR UT) are JSON strings holding the text as
  written, without padding: DS and IS included (``"RescaleSlope": "1"``, never re-formatted), PN as
  ``"FAMILY^GIVEN"`` with any ``=`` component groups;
* binary numeric VRs (US SS UL SL UV SV FL FD) are JSON numbers; a non-finite FL or FD value is the
  string ``"NaN"``, ``"Infinity"`` or ``"-Infinity"`` (as in the DICOM JSON model);
* AT values are 8-hex-digit tag strings (``"00100010"``);
* a value with more than one item is a JSON array (``"ImageType": ["DERIVED", "PRIMARY"]``);
* SQ is an array of objects converted by the same rules (``null`` when it has no items);
* bulk binary VRs (OB OD OF OL OV OW UN) are base64 text (RFC 4648, no line breaks) of the value's
  little-endian bytes, the form the AWS samples that rebuild P10 files from metadata decode;
* pixel data bulk elements, (7FE0,0010) PixelData (also inside an icon image sequence), (7FE0,0008)
  FloatPixelData, (7FE0,0009) DoubleFloatPixelData and the (7FE0,0001)/(7FE0,0002) extended offset
  table, are always ``null``: frames are served by GetImageFrame only.

Keys: an attribute whose pydicom keyword maps back to its own tag is keyed by the keyword; every other
attribute (private data elements and private creators, tags missing from the dictionary, and the
repeating-group elements such as (6000,3000) OverlayData, whose keyword is shared by 16 groups) is
keyed by its 8 uppercase hex digits (``"00191010"``).  Group length elements (gggg,0000) are dropped:
they describe an encoding the service does not keep.

``DICOMVRs`` maps an attribute key to its VR wherever the VR cannot be inferred from the key: every
hex-keyed attribute, every attribute whose dictionary VR is ambiguous (``"US or SS"``, ``"OB or OW"``,
``"US or OW"``), and every attribute whose VR in the file differs from the dictionary's.  Elements
nested in sequences are recorded in the same flat map; the first VR seen for a key wins.

Values are decoded from the raw bytes pydicom read (fast, and the text stays exactly as written);
pydicom's own conversion is used for sequences, VRs that need context (ambiguous or UN), deferred
values and character sets other than the default repertoire, ISO_IR 100 and ISO_IR 192.
"""

from __future__ import annotations

import base64
import functools
import math
import struct
from collections.abc import Iterable, Iterator
from typing import Any, Final, cast

import numpy as np
from pydicom.datadict import dictionary_VR, keyword_for_tag, private_dictionary_VR, tag_for_keyword
from pydicom.dataelem import DataElement, RawDataElement
from pydicom.dataset import Dataset
from pydicom.multival import MultiValue
from pydicom.sequence import Sequence
from pydicom.tag import BaseTag

from emulator.imaging.levels import Level, level_of_tag

STRING_VRS: Final[frozenset[str]] = frozenset(
    {"AE", "AS", "CS", "DA", "DS", "DT", "IS", "LO", "LT", "PN", "SH", "ST", "TM", "UC", "UI", "UR", "UT"}
)
"""VRs whose values are kept as their text."""

INTEGER_VRS: Final[frozenset[str]] = frozenset({"US", "SS", "UL", "SL", "UV", "SV"})
"""Binary integer VRs, JSON integers."""

FLOAT_VRS: Final[frozenset[str]] = frozenset({"FL", "FD"})
"""Binary floating point VRs, JSON numbers."""

BULK_VRS: Final[frozenset[str]] = frozenset({"OB", "OD", "OF", "OL", "OV", "OW", "UN"})
"""Binary bulk VRs, base64 text."""

PIXEL_DATA_TAGS: Final[frozenset[int]] = frozenset(
    {
        0x7FE00001,  # ExtendedOffsetTable
        0x7FE00002,  # ExtendedOffsetTableLengths
        0x7FE00008,  # FloatPixelData
        0x7FE00009,  # DoubleFloatPixelData
        0x7FE00010,  # PixelData
    }
)
"""Pixel data bulk elements, always ``null`` in the metadata."""

SPECIFIC_CHARACTER_SET: Final = 0x00080005

_UNRESOLVED_AMBIGUOUS_VR: Final[dict[str, str]] = {
    "US or SS": "US",
    "OB or OW": "OW",
    "US or OW": "OW",
    "US or SS or OW": "OW",
}
"""The VR recorded when pydicom could not resolve an ambiguous dictionary VR."""

_NUMBER_FORMATS: Final[dict[str, str]] = {
    "US": "H",
    "SS": "h",
    "UL": "I",
    "SL": "i",
    "UV": "Q",
    "SV": "q",
    "FL": "f",
    "FD": "d",
}
_WORD_SIZES: Final[dict[str, int]] = {"OW": 2, "OF": 4, "OL": 4, "OD": 8, "OV": 8}
_DEFAULT_CODEC: Final = "latin_1"
_CODECS: Final[dict[str, str]] = {"": _DEFAULT_CODEC, "ISO_IR 6": _DEFAULT_CODEC, "ISO_IR 100": "latin_1"}
_CODECS_UTF8: Final = "ISO_IR 192"
_CHARSET_VRS: Final[frozenset[str]] = frozenset({"SH", "LO", "UC", "PN", "LT", "ST", "UT"})


class _Slow:
    """Marks a raw value left to pydicom."""


_SLOW: Final = _Slow()
_LAZY: Final = "lazy"
"""A codec placeholder: look the character set up only if the element needs it."""


@functools.cache
def attribute_key(tag: int) -> str:
    """Return the metadata key of ``tag``: its keyword, or 8 uppercase hex digits.

    Examples
    --------
    >>> attribute_key(0x00100010)
    'PatientName'
    >>> attribute_key(0x00191010)
    '00191010'
    """
    keyword = keyword_for_tag(tag) if tag >> 16 & 1 == 0 else ""
    if keyword and tag_for_keyword(keyword) == tag:
        return str(keyword)
    return f"{tag:08X}"


@functools.cache
def _dictionary_vr(tag: int) -> str | None:
    """Return the data dictionary VR of the public ``tag``, or None when it has none."""
    if tag >> 16 & 1:
        return None
    try:
        return str(dictionary_VR(tag))
    except KeyError:
        return None


@functools.cache
def _private_vr(tag: int, creator: str) -> str:
    try:
        return str(private_dictionary_VR(tag, creator))
    except KeyError:
        return "UN"


@functools.cache
def _key_and_implied(tag: int, vr: str) -> tuple[str, bool]:
    """Return the key of ``tag`` and whether a reader can infer ``vr`` from the key alone."""
    key = attribute_key(tag)
    return key, not key[0].isdigit() and _dictionary_vr(tag) == vr


def _little_endian(ds: Dataset) -> bool:
    """Whether ``ds`` was read little endian (the byte order of values pydicom left as bytes)."""
    encoding = getattr(ds, "original_encoding", (None, None))
    return encoding[1] is not False


def _tag_of(item: tuple[BaseTag, Any]) -> int:
    return int(item[0])


def _resolved_vr(vr: str) -> str:
    return _UNRESOLVED_AMBIGUOUS_VR.get(vr, vr)


def _format_float(value: Any) -> float | str:
    number = float(value)
    if math.isfinite(number):
        return number
    if math.isnan(number):
        return "NaN"
    return "Infinity" if number > 0 else "-Infinity"


def _single_or_list(items: list[Any]) -> Any:
    if len(items) == 1:
        return items[0]
    return items


def _strings(text: str, vr: str) -> Any:
    """Return the JSON value of the decoded text of a string VR (padding removed, split on ``\\``)."""
    if vr in ("LT", "ST", "UT", "UR"):
        items = [text.rstrip("\0 ")]
    elif vr in ("SH", "LO", "UC"):
        items = [item.rstrip("\0 ") for item in text.split("\\")]
    elif vr in ("AE", "DS", "IS"):
        items = [item.strip("\0 ") for item in text.split("\\")]
    else:  # AS CS DA DT PN TM UI
        items = text.rstrip("\0 ").split("\\")
    if len(items) == 1:
        return items[0] or None
    return items


def _bulk(data: bytes, vr: str, little_endian: bool) -> str | None:
    """Return base64 text of a bulk value's little-endian bytes (None when empty)."""
    if not data:
        return None
    size = _WORD_SIZES.get(vr)
    if size and not little_endian and len(data) % size == 0:
        data = np.frombuffer(data, dtype=f">u{size}").astype(f"<u{size}").tobytes()
    return base64.b64encode(data).decode("ascii")


def _numbers(data: bytes, vr: str, little_endian: bool) -> Any:
    code = _NUMBER_FORMATS[vr]
    count, remainder = divmod(len(data), struct.calcsize(code))
    if remainder:
        return _SLOW
    values = struct.unpack(f"{'<' if little_endian else '>'}{count}{code}", data)
    if vr in FLOAT_VRS:
        return _single_or_list([_format_float(value) for value in values])
    return _single_or_list(list(values))


def _tags(data: bytes, little_endian: bool) -> Any:
    count, remainder = divmod(len(data), 4)
    if remainder:
        return _SLOW
    halves = struct.unpack(f"{'<' if little_endian else '>'}{count * 2}H", data)
    return _single_or_list([f"{halves[i]:04X}{halves[i + 1]:04X}" for i in range(0, len(halves), 2)])


def _raw_text(data: bytes, vr: str, codec: str | None) -> Any:
    if vr not in _CHARSET_VRS:
        return _strings(data.decode(_DEFAULT_CODEC), vr)
    if codec is None:
        return _SLOW
    if vr == "PN":
        data = data.rstrip(b"\0 ")
    try:
        return _strings(data.decode(codec), vr)
    except UnicodeDecodeError:
        return _SLOW


def _raw_value(raw: RawDataElement, vr: str, codec: str | None) -> Any:
    """Return the JSON value of ``raw`` decoded from its bytes, or ``_SLOW`` to ask pydicom."""
    data = raw.value
    if data is None:
        return _SLOW  # deferred
    if not data:
        return None
    little_endian = raw.is_little_endian
    if vr in STRING_VRS:
        value = _raw_text(data, vr, codec)
    elif vr in _NUMBER_FORMATS:
        value = _numbers(data, vr, little_endian)
    elif vr in BULK_VRS:
        value = _bulk(data, vr, little_endian)
    elif vr == "AT":
        value = _tags(data, little_endian)
    else:
        value = _SLOW
    return value


def _item(ds: Dataset, tag: int) -> DataElement | RawDataElement | None:
    """Return the element of ``tag`` as stored: raw (not yet converted) or converted, never loaded."""
    return cast(DataElement | RawDataElement | None, ds.get_item(tag, keep_deferred=True))


def _codec(ds: Dataset, inherited: str | None) -> str | None:
    """Return the Python codec of the data set's text VRs, or None when pydicom must decode them."""
    if SPECIFIC_CHARACTER_SET not in ds:
        return inherited
    item = _item(ds, SPECIFIC_CHARACTER_SET)
    if isinstance(item, RawDataElement):
        text = (item.value or b"").decode(_DEFAULT_CODEC)
        terms = [term.strip("\0 ") for term in text.split("\\")]
    elif item is None or item.is_empty:
        terms = [""]
    else:
        value = item.value
        terms = [str(term).strip() for term in (value if isinstance(value, MultiValue) else [value])]
    terms = [term for term in terms if term] or [""]
    if len(terms) != 1:
        return None
    if terms[0] == _CODECS_UTF8:
        return "utf_8"
    return _CODECS.get(terms[0])


class _Converter:
    """Converts data sets, collecting the DICOMVRs of every element it meets."""

    def __init__(self, *, raw: bool = True) -> None:
        self.vrs: dict[str, str] = {}
        self._raw = raw

    def attributes(self, ds: Dataset, codec: str | None = _DEFAULT_CODEC) -> dict[str, Any]:
        """Return the attributes of ``ds`` (nested sequences included) keyed by keyword or tag."""
        return {key: value for _tag, key, value in self.elements(ds, codec)}

    def elements(self, ds: Dataset, inherited: str | None = _DEFAULT_CODEC) -> Iterator[tuple[int, str, Any]]:
        """Yield ``(tag, key, value)`` for the elements of ``ds`` in tag order, group lengths left out."""
        codec = _codec(ds, inherited)
        items = cast(Iterable[tuple[BaseTag, DataElement | RawDataElement]], ds.items())
        for base_tag, item in sorted(items, key=_tag_of):
            tag = int(base_tag)
            if tag & 0xFFFF:
                key, value = self.convert(ds, tag, item, codec)
                yield tag, key, value

    def convert(
        self, ds: Dataset, tag: int, item: DataElement | RawDataElement, codec: str | None
    ) -> tuple[str, Any]:
        """Return the key and JSON value of the element ``item`` of ``ds``."""
        if tag in PIXEL_DATA_TAGS:
            return self._key(tag, _resolved_vr(str(item.VR or "OW"))), None
        if codec is _LAZY:
            needs_codec = item.VR is None or str(item.VR) in _CHARSET_VRS or item.VR == "SQ"
            codec = _codec(ds, _DEFAULT_CODEC) if needs_codec else _DEFAULT_CODEC
        if self._raw and isinstance(item, RawDataElement):
            raw_vr = self._raw_vr(ds, tag, item)
            if raw_vr is not None:
                value = _raw_value(item, raw_vr, codec)
                if value is not _SLOW:
                    return self._key(tag, raw_vr), value
        elem = ds[tag]
        vr = _resolved_vr(str(elem.VR))
        return self._key(tag, vr), self.value(elem, vr, codec, _little_endian(ds))

    @staticmethod
    def _raw_vr(ds: Dataset, tag: int, raw: RawDataElement) -> str | None:
        """Return the VR of ``raw`` when it needs no context, None to let pydicom decide."""
        if raw.VR is not None:
            vr = str(raw.VR)
            return None if vr == "UN" else vr
        if not tag >> 16 & 1:
            vr_or_none = _dictionary_vr(tag)
            return None if vr_or_none is None or " or " in vr_or_none else vr_or_none
        element = tag & 0xFFFF
        if 0x10 <= element <= 0xFF:
            return "LO"  # private creator
        if element < 0x100:
            return "UN"
        creator_tag = (tag & 0xFFFF0000) | (element >> 8)
        creator = _item(ds, creator_tag) if creator_tag in ds else None
        if creator is None:
            return "UN"
        if isinstance(creator, RawDataElement):
            name = (creator.value or b"").decode(_DEFAULT_CODEC).strip("\0 ")
        else:
            name = str(creator.value or "")
        vr = _private_vr(tag, name) if name else "UN"
        return None if " or " in vr else vr

    def _key(self, tag: int, vr: str) -> str:
        key, implied = _key_and_implied(tag, vr)
        if not implied and key not in self.vrs:
            self.vrs[key] = vr
        return key

    def value(self, elem: DataElement, vr: str, codec: str | None, little_endian: bool = True) -> Any:
        """Return the JSON value of the converted ``elem`` whose (resolved) VR is ``vr``."""
        if vr == "SQ":
            items: Sequence = elem.value
            return [self.attributes(item, codec) for item in items] if items else None
        if elem.is_empty:
            return None
        value = elem.value
        if isinstance(value, bytes | bytearray):
            return _bytes_value(bytes(value), vr, little_endian)
        if vr in STRING_VRS:
            convert: Any = str
        elif vr in INTEGER_VRS:
            convert = int
        elif vr in FLOAT_VRS:
            convert = _format_float
        elif vr == "AT":
            convert = _format_tag
        else:  # pragma: no cover - pydicom knows no other VR
            convert = str
        if isinstance(value, MultiValue | list | tuple):
            return _single_or_list([convert(item) for item in value])
        return convert(value)


def _bytes_value(data: bytes, vr: str, little_endian: bool) -> Any:
    """Return the JSON value of bytes pydicom left undecoded (UN, or a value it could not parse)."""
    if vr in STRING_VRS:
        return _strings(data.decode(_DEFAULT_CODEC), vr)
    if vr in _NUMBER_FORMATS:
        numbers = _numbers(data, vr, little_endian)
        if numbers is not _SLOW:
            return numbers
    return _bulk(data, vr, little_endian)


def _format_tag(value: Any) -> str:
    return f"{int(value):08X}"


def dataset_attributes(ds: Dataset, *, raw: bool = True) -> tuple[dict[str, Any], dict[str, str]]:
    """Return all attributes of ``ds`` (file meta first) and their DICOMVRs, without partitioning.

    Parameters
    ----------
    ds : pydicom.dataset.Dataset
        The data set; its ``file_meta`` group 0002 elements are included.
    raw : bool
        Decode values from their raw bytes where possible (the default); False converts every
        element through pydicom, the reference the raw decoding is tested against.

    Returns
    -------
    tuple[dict[str, Any], dict[str, str]]
        The attributes keyed by keyword or tag, and the ``DICOMVRs`` map.
    """
    converter = _Converter(raw=raw)
    attributes: dict[str, Any] = {}
    file_meta = getattr(ds, "file_meta", None)
    if file_meta is not None:
        attributes.update(converter.attributes(file_meta))
    attributes.update(converter.attributes(ds))
    return attributes, converter.vrs


def partitioned_attributes(ds: Dataset) -> tuple[dict[Level, dict[str, Any]], dict[str, str]]:
    """Return the attributes of ``ds`` split by metadata level, and the instance's DICOMVRs.

    Top-level attributes go to the level ``level_of_tag`` names: (0010,0010) PatientName to
    ``Patient``, (0020,000D) StudyInstanceUID to ``Study``, (0020,000E) SeriesInstanceUID to
    ``Series``, everything else (file meta, private elements, (7FE0,0010) PixelData) to
    ``Instance``.  Elements inside sequences stay with their top-level sequence.

    Parameters
    ----------
    ds : pydicom.dataset.Dataset
        The data set, with its ``file_meta``.

    Returns
    -------
    tuple[dict[Level, dict[str, Any]], dict[str, str]]
        One attribute dict per level (all four present, possibly empty) and the ``DICOMVRs`` map.
    """
    converter = _Converter()
    levels: dict[Level, dict[str, Any]] = {level: {} for level in Level}
    instance = levels[Level.INSTANCE]
    file_meta = getattr(ds, "file_meta", None)
    if file_meta is not None:
        instance.update(converter.attributes(file_meta))
    for tag, key, value in converter.elements(ds):
        levels[level_of_tag(tag)][key] = value
    return levels, converter.vrs


def element_value(ds: Dataset, tag: int) -> Any:
    """Return the metadata value of one top-level element of ``ds`` (None when absent).

    The element is decoded from its raw bytes when it has not been converted yet, so looking at it
    does not change how :func:`partitioned_attributes` converts it later.
    """
    item = _item(ds, tag)
    if item is None:
        return None
    return _Converter().convert(ds, tag, item, _LAZY)[1]


def element_text(ds: Dataset, tag: int) -> str | None:
    """Return the value of a string VR ``tag`` as written (all values ``\\``-joined), None if empty."""
    value = element_value(ds, tag)
    if value is None:
        return None
    text = "\\".join(str(each) for each in value) if isinstance(value, list) else str(value)
    return text or None


def tag_string(tag: int | BaseTag) -> str:
    """Return ``tag`` as ``(gggg,eeee)``."""
    tag = int(tag)
    return f"({tag >> 16:04X},{tag & 0xFFFF:04X})"

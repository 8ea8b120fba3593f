"""The checks an import applies to each DICOM P10 file before transcoding it.

Rules (``../shared/spec/healthimaging-platform.md`` sections 6.1, 6.3 and 6.4):

* the file meta must carry (0002,0010) TransferSyntaxUID, and it must be one of the sixteen supported
  transfer syntaxes;
* (0020,000D) StudyInstanceUID, (0020,000E) SeriesInstanceUID and (0008,0018) SOPInstanceUID must be
  present; since the 2024-06-28 relaxation UIDs may have leading zeros and up to 256 characters, but
  they must still consist of digits and dots;
* the element length limits of the 2024 constraint table hold (PatientName, PatientID and
  AccessionNumber up to 256 characters; the study counts up to 10000);
* pixel data needs the image pixel module, and binary (1-bit) segmentation pixel data is unsupported.

Every failure is an :class:`~emulator.imaging.errors.ImportFileError` of type ``ValidationException``
whose message names the attribute and the limit, never the value.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from typing import Final

from pydicom.dataset import Dataset

from emulator.imaging.dicom_json import element_text, element_value, tag_string
from emulator.imaging.errors import ImportFileError

SUPPORTED_TRANSFER_SYNTAXES: Final[dict[str, str]] = {
    "1.2.840.10008.1.2": "Implicit VR Little Endian",
    "1.2.840.10008.1.2.1": "Explicit VR Little Endian",
    "1.2.840.10008.1.2.1.99": "Deflated Explicit VR Little Endian",
    "1.2.840.10008.1.2.2": "Explicit VR Big Endian",
    "1.2.840.10008.1.2.4.50": "JPEG Baseline (Process 1)",
    "1.2.840.10008.1.2.4.51": "JPEG Baseline (Processes 2 & 4)",
    "1.2.840.10008.1.2.4.57": "JPEG Lossless, Non-Hierarchical (Process 14)",
    "1.2.840.10008.1.2.4.70": "JPEG Lossless, Non-Hierarchical, First-Order Prediction (Process 14 [SV1])",
    "1.2.840.10008.1.2.4.80": "JPEG-LS Lossless Image Compression",
    "1.2.840.10008.1.2.4.81": "JPEG-LS Lossy (Near-Lossless) Image Compression",
    "1.2.840.10008.1.2.4.90": "JPEG 2000 Image Compression (Lossless Only)",
    "1.2.840.10008.1.2.4.91": "JPEG 2000 Image Compression",
    "1.2.840.10008.1.2.4.201": "High-Throughput JPEG 2000 Image Compression (Lossless Only)",
    "1.2.840.10008.1.2.4.202": (
        "High-Throughput JPEG 2000 with RPCL Options Image Compression (Lossless Only)"
    ),
    "1.2.840.10008.1.2.4.203": "High-Throughput JPEG 2000 Image Compression",
    "1.2.840.10008.1.2.5": "RLE Lossless",
}
"""Transfer syntaxes accepted on import (platform spec 6.3), UID to name."""

REQUIRED_UIDS: Final[tuple[tuple[int, str], ...]] = (
    (0x0020000D, "StudyInstanceUID"),
    (0x0020000E, "SeriesInstanceUID"),
    (0x00080018, "SOPInstanceUID"),
)
"""The identifiers every instance must carry, in the order they are checked."""

MAX_UID_LENGTH: Final = 256
"""Maximum UID length since the 2024-06-28 "non-standard DICOM data" release."""

RELAXED_UIDS: Final[tuple[tuple[int, str], ...]] = (
    *REQUIRED_UIDS,
    (0x300A0700, "TreatmentSessionUID"),
    (0x0018100B, "ManufacturerDeviceClassUID"),
    (0x00181002, "DeviceUID"),
    (0x00080017, "AcquisitionUID"),
)
"""UIDs checked against :data:`MAX_UID_LENGTH` (the relaxation names these and the required three)."""

_UID_CHARACTERS: Final = re.compile(r"[0-9.]+")


@dataclass(frozen=True)
class LengthLimit:
    """A maximum-length constraint of the import constraint table.

    Attributes
    ----------
    tag : int
        The attribute's tag.
    keyword : str
        Its DICOM keyword.
    max_length : int
        The maximum number of characters of the value as written (all values, backslash-joined).
    """

    tag: int
    keyword: str
    max_length: int


@dataclass(frozen=True)
class RangeLimit:
    """A value-range constraint of the import constraint table (integer string attributes)."""

    tag: int
    keyword: str
    minimum: int
    maximum: int


LENGTH_LIMITS: Final[tuple[LengthLimit, ...]] = (
    LengthLimit(0x00100010, "PatientName", 256),
    LengthLimit(0x00100020, "PatientID", 256),
    LengthLimit(0x00100030, "PatientBirthDate", 18),
    LengthLimit(0x00100040, "PatientSex", 16),
    LengthLimit(0x00200010, "StudyID", 16),
    LengthLimit(0x00081030, "StudyDescription", 64),
    LengthLimit(0x00080050, "AccessionNumber", 256),
    LengthLimit(0x00080020, "StudyDate", 18),
    LengthLimit(0x00080030, "StudyTime", 28),
)
"""Length limits of platform spec 6.4 (2024 values); StudyInstanceUID is covered by the UID rules."""

RANGE_LIMITS: Final[tuple[RangeLimit, ...]] = (
    RangeLimit(0x00201206, "NumberOfStudyRelatedSeries", 0, 10000),
    RangeLimit(0x00201208, "NumberOfStudyRelatedInstances", 0, 10000),
)
"""Value ranges of platform spec 6.4."""

PIXEL_MODULE: Final[tuple[tuple[int, str], ...]] = (
    (0x00280002, "SamplesPerPixel"),
    (0x00280004, "PhotometricInterpretation"),
    (0x00280010, "Rows"),
    (0x00280011, "Columns"),
    (0x00280100, "BitsAllocated"),
    (0x00280101, "BitsStored"),
    (0x00280103, "PixelRepresentation"),
)
"""Image pixel module attributes that must exist when (7FE0,0010) PixelData does."""

PIXEL_DATA: Final = 0x7FE00010

SUPPORTED_BITS_ALLOCATED: Final = (8, 16, 32)
"""(0028,0100) BitsAllocated values whose frames can be transcoded (HTJ2K holds up to 32-bit samples)."""


def missing(keyword: str) -> ImportFileError:
    """Return the error for a missing attribute, worded as the service words it."""
    return ImportFileError.validation(f"DICOM attribute {keyword} does not exist")


def check_transfer_syntax(ds: Dataset) -> str:
    """Return the (0002,0010) TransferSyntaxUID of ``ds`` once it is known to be supported.

    Raises
    ------
    ImportFileError
        ``ValidationException`` when the file meta lacks the UID or the syntax is not supported.
    """
    file_meta = getattr(ds, "file_meta", None)
    uid = element_text(file_meta, 0x00020010) if file_meta is not None else None
    if not uid:
        raise missing("TransferSyntaxUID")
    if uid not in SUPPORTED_TRANSFER_SYNTAXES:
        raise ImportFileError.validation(
            f"DICOM attribute TransferSyntaxUID {tag_string(0x00020010)} value {uid} is not a supported "
            "transfer syntax"
        )
    return uid


def check_identifiers(ds: Dataset) -> tuple[str, str, str]:
    """Return the Study, Series and SOP Instance UIDs of ``ds`` once they are valid.

    Raises
    ------
    ImportFileError
        ``ValidationException`` when one is missing, empty, longer than 256 characters or holds
        characters other than digits and dots.
    """
    for tag, keyword in RELAXED_UIDS:
        uid = element_text(ds, tag)
        if uid is None:
            continue
        if len(uid) > MAX_UID_LENGTH:
            raise ImportFileError.validation(
                f"DICOM attribute {keyword} {tag_string(tag)} is {len(uid)} characters long; "
                f"the maximum is {MAX_UID_LENGTH}"
            )
        if not _UID_CHARACTERS.fullmatch(uid):
            raise ImportFileError.validation(
                f"DICOM attribute {keyword} {tag_string(tag)} is not a valid UID: only digits and '.' "
                "are allowed"
            )
    uids = []
    for tag, keyword in REQUIRED_UIDS:
        uid = element_text(ds, tag)
        if uid is None:
            raise missing(keyword)
        uids.append(uid)
    return uids[0], uids[1], uids[2]


def check_element_constraints(ds: Dataset) -> None:
    """Check the length and range limits of the import constraint table.

    Raises
    ------
    ImportFileError
        ``ValidationException`` naming the first attribute that breaks its limit.
    """
    for limit in LENGTH_LIMITS:
        text = element_text(ds, limit.tag)
        if text is not None and len(text) > limit.max_length:
            raise ImportFileError.validation(
                f"DICOM attribute {limit.keyword} {tag_string(limit.tag)} is {len(text)} characters long; "
                f"the maximum is {limit.max_length}"
            )
    for rng in RANGE_LIMITS:
        text = element_text(ds, rng.tag)
        if text is None:
            continue
        try:
            number = int(text.strip())
        except ValueError:
            raise ImportFileError.validation(
                f"DICOM attribute {rng.keyword} {tag_string(rng.tag)} is not an integer string"
            ) from None
        if not rng.minimum <= number <= rng.maximum:
            raise ImportFileError.validation(
                f"DICOM attribute {rng.keyword} {tag_string(rng.tag)} must be between {rng.minimum} "
                f"and {rng.maximum}"
            )


@dataclass(frozen=True)
class PixelDescription:
    """What the image pixel module says about the frames of an instance.

    Attributes
    ----------
    rows, columns : int
        (0028,0010) Rows and (0028,0011) Columns.
    samples_per_pixel : int
        (0028,0002) SamplesPerPixel.
    bits_allocated, bits_stored : int
        (0028,0100) BitsAllocated and (0028,0101) BitsStored.
    signed : bool
        (0028,0103) PixelRepresentation is 1.
    number_of_frames : int
        (0028,0008) NumberOfFrames, 1 when absent.
    """

    rows: int
    columns: int
    samples_per_pixel: int
    bits_allocated: int
    bits_stored: int
    signed: bool
    number_of_frames: int


def _integer(ds: Dataset, tag: int, keyword: str) -> int:
    """Return the single integer value of ``tag`` (US, or an IS string)."""
    value = element_value(ds, tag)
    if value is None:
        raise missing(keyword)
    try:
        if isinstance(value, list):
            raise TypeError("several values")
        return int(value)
    except (TypeError, ValueError):
        raise ImportFileError.validation(
            f"DICOM attribute {keyword} {tag_string(tag)} does not hold a valid integer"
        ) from None


def describe_pixels(ds: Dataset) -> PixelDescription | None:
    """Return the pixel description of ``ds``, or None when it has no (7FE0,0010) PixelData.

    Raises
    ------
    ImportFileError
        ``ValidationException`` when an image pixel module attribute is missing or invalid, or the
        pixel data is 1-bit (binary segmentation, unsupported by the service).
    """
    if PIXEL_DATA not in ds:
        return None
    for tag, keyword in PIXEL_MODULE:
        if element_value(ds, tag) is None:
            raise missing(keyword)
    bits_allocated = _integer(ds, 0x00280100, "BitsAllocated")
    if bits_allocated == 1:
        raise ImportFileError.validation(
            "Binary segmentation pixel data ((0028,0100) BitsAllocated 1) is not supported"
        )
    frames = 1
    if element_value(ds, 0x00280008) is not None:
        frames = _integer(ds, 0x00280008, "NumberOfFrames")
    description = PixelDescription(
        rows=_integer(ds, 0x00280010, "Rows"),
        columns=_integer(ds, 0x00280011, "Columns"),
        samples_per_pixel=_integer(ds, 0x00280002, "SamplesPerPixel"),
        bits_allocated=bits_allocated,
        bits_stored=_integer(ds, 0x00280101, "BitsStored"),
        signed=_integer(ds, 0x00280103, "PixelRepresentation") == 1,
        number_of_frames=frames,
    )
    for value, keyword, tag in (
        (description.rows, "Rows", 0x00280010),
        (description.columns, "Columns", 0x00280011),
        (description.samples_per_pixel, "SamplesPerPixel", 0x00280002),
        (description.number_of_frames, "NumberOfFrames", 0x00280008),
    ):
        if value < 1:
            raise ImportFileError.validation(f"DICOM attribute {keyword} {tag_string(tag)} must be positive")
    if description.bits_allocated not in SUPPORTED_BITS_ALLOCATED:
        raise ImportFileError.validation(
            f"Pixel data with (0028,0100) BitsAllocated {description.bits_allocated} is not supported"
        )
    if not 1 <= description.bits_stored <= description.bits_allocated:
        raise ImportFileError.validation(
            f"DICOM attribute BitsStored (0028,0101) value {description.bits_stored} does not fit "
            f"(0028,0100) BitsAllocated {description.bits_allocated}"
        )
    return description

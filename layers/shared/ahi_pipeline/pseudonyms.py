"""Keyed pseudonyms, shifted dates and dummy values for de-identifying image set metadata (pure).

The de-identification stage follows the DICOM PS3.15 Basic Application Level Confidentiality Profile
(Annex E). The profile's table says *what* to do with each attribute; this module gives the values the
actions need, computed from the original value and one secret key:

* ``U`` (replace a UID): :meth:`Pseudonymizer.uid`, for ``(0020,000D) StudyInstanceUID``,
  ``(0020,000E) SeriesInstanceUID``, ``(0008,0018) SOPInstanceUID`` and every reference to them;
* ``(0010,0020) PatientID`` and ``(0010,0010) PatientName``: :meth:`Pseudonymizer.patient_id` and
  :meth:`Pseudonymizer.patient_name` (the profile allows a dummy; a consistent pseudonym keeps the
  image sets of one patient together);
* the Retain Longitudinal Temporal Information with Modified Dates option: a per-patient offset
  (:meth:`Pseudonymizer.date_offset_days`) applied to DA, DT and TM values (:meth:`~Pseudonymizer.shift_date`,
  :meth:`~Pseudonymizer.shift_datetime`, :meth:`~Pseudonymizer.shift_time`);
* ``D`` (replace with a dummy): :meth:`Pseudonymizer.dummy`, a value valid for the VR.

Keyed, not merely hashed
    Every pseudonym is an HMAC-SHA256 of the original under a secret key. An unkeyed hash (SHA-256 of the
    patient ID, MD5 of a UID) can be recomputed by anyone who can guess the inputs: patient IDs and names
    are short and enumerable, and UIDs carry guessable roots and counters, so a dictionary attack re-links
    the pseudonym to the person. Without the key, the pseudonyms reveal nothing and cannot be linked to
    the originals. One sub-key is derived per kind of value, ``HMAC-SHA256(key, b"ahi-deid/v1/" +
    purpose)``, so a patient ID's pseudonym and the pseudonym of the same text as a name (or as a date
    offset seed) are unrelated: one kind of pseudonym does not help to link another.

Deterministic across image sets and runs
    The same key and original always give the same pseudonym, in any Lambda invocation, on any day. The
    instances of one study, imported as several image sets or in several jobs, therefore keep one study
    UID, one patient ID and one date offset after de-identification, and references between them (for
    example ``(0008,1155) ReferencedSOPInstanceUID``) still resolve. Rotating the key starts a new, unlinked
    pseudonym space.

UIDs under the ``2.25`` root
    PS3.5 B.2 lets a UID be ``2.25.`` followed by the decimal form of a 128-bit UUID, with no registered
    organisational root. The replacement UID is ``2.25.`` and the integer of the first 16 bytes of the
    HMAC: at most 39 digits, so at most 44 characters (UI allows 64), digits and dots only, and no
    leading zeros (a decimal integer has none). 128 bits is what the root is defined for, and it keeps
    accidental collisions out of reach (one is expected only after about 2**64 UIDs). The bits are the
    HMAC's as they come: no UUID version or variant field is stamped into them, which would only lower the
    entropy.

Date shift
    :meth:`Pseudonymizer.date_offset_days` gives each patient (keyed by the original patient ID) a whole
    number of days in [-3650, -1]: up to ten years into the past, the same for all of a patient's dates
    so that intervals between studies are kept. It is never 0, since a zero shift would leave the real
    dates in a record that claims to be de-identified, and it is always backwards, so no shifted date
    lands in the future. Whole days leave times of day unchanged.

Errors never quote the value that failed: values may identify people.
"""

from __future__ import annotations

import base64
import datetime
import hashlib
import hmac
import re
from typing import Final

__all__ = [
    "DATE_SHIFT_MAX_DAYS",
    "MIN_KEY_BYTES",
    "MIN_PLAIN_SECRET_CHARS",
    "UID_ROOT",
    "Pseudonymizer",
]

MIN_KEY_BYTES: Final = 16
MIN_PLAIN_SECRET_CHARS: Final = 32
DATE_SHIFT_MAX_DAYS: Final = 3650
UID_ROOT: Final = "2.25."

_SUBKEY_PREFIX: Final = b"ahi-deid/v1/"
_PATIENT_ID_CHARS: Final = 16
_PATIENT_NAME_CHARS: Final = 12
_UID_BYTES: Final = 16
_DAYS_PER_YEAR: Final = 365.25
_DAYS_PER_MONTH: Final = 30.44

_DA = re.compile(r"(?P<year>\d{4})(?P<month>\d{2})(?P<day>\d{2})", re.ASCII)
_DA_LEGACY = re.compile(r"(?P<year>\d{4})\.(?P<month>\d{2})\.(?P<day>\d{2})", re.ASCII)
_DT = re.compile(
    r"(?P<year>\d{4})"
    r"(?:(?P<month>\d{2})"
    r"(?:(?P<day>\d{2})"
    r"(?P<time>(?P<hour>\d{2})(?:(?P<minute>\d{2})(?:(?P<second>\d{2})(?:\.\d{1,6})?)?)?)?"
    r")?)?"
    r"(?P<offset>[+-](?P<offset_hours>\d{2})(?P<offset_minutes>\d{2}))?",
    re.ASCII,  # DICOM digits only: \d would also match other scripts' digits
)
_DT_FORM: Final = "YYYY[MM[DD[HH[MM[SS[.F{1-6}]]]]]][&ZZXX]"

# PS3.15 "D" (replace with a non-zero-length dummy value), one value per VR, each valid for its VR:
# AE, CS and SH at most 16 characters, LO and each PN component group at most 64, AS exactly 4.
# ``None`` marks the VRs that cannot be given a dummy in metadata JSON (sequences and bulk data):
# the caller removes those attributes instead.
_DUMMIES: Final[dict[str, str | int | float | None]] = {
    "AE": "ANONYMOUS",
    "AS": "000D",
    "CS": "ANONYMOUS",
    "DA": "19000101",
    "DS": "0",
    "DT": "19000101000000",
    "IS": "0",
    "LO": "ANONYMOUS",
    "LT": "ANONYMOUS",
    "PN": "ANONYMOUS",
    "SH": "ANONYMOUS",
    "ST": "ANONYMOUS",
    "TM": "000000",
    "UC": "ANONYMOUS",
    "UR": "http://anonymous.invalid",
    "UT": "ANONYMOUS",
    "US": 0,
    "SS": 0,
    "UL": 0,
    "SL": 0,
    "UV": 0,
    "SV": 0,
    "FL": 0.0,
    "FD": 0.0,
    "SQ": None,
    "OB": None,
    "OD": None,
    "OF": None,
    "OL": None,
    "OV": None,
    "OW": None,
    "UN": None,
}


class Pseudonymizer:
    """Keyed, deterministic replacements for identifying values.

    Parameters
    ----------
    key : bytes
        The secret, at least :data:`MIN_KEY_BYTES` (16) bytes. Only the sub-keys derived from it are
        kept; the object's ``repr`` shows neither.

    Raises
    ------
    ValueError
        If the key is shorter than 16 bytes.
    """

    __slots__ = ("_date_key", "_name_key", "_patient_key", "_uid_key")

    def __init__(self, key: bytes) -> None:
        if len(key) < MIN_KEY_BYTES:
            raise ValueError(
                f"the pseudonymization key must be at least {MIN_KEY_BYTES} bytes long, got {len(key)}"
            )
        key = bytes(key)
        self._patient_key = _subkey(key, b"patient-id")
        self._name_key = _subkey(key, b"patient-name")
        self._uid_key = _subkey(key, b"uid")
        self._date_key = _subkey(key, b"date-offset")

    def __repr__(self) -> str:
        return f"{type(self).__name__}(key=<hidden>)"

    @classmethod
    def from_text(cls, secret: str) -> Pseudonymizer:
        """A pseudonymizer from the secret as SSM Parameter Store or Secrets Manager hold it.

        Surrounding whitespace (a trailing newline) is ignored. A secret that is valid standard base64
        (with padding) decoding to at least 16 bytes is used decoded; otherwise a plain secret of at
        least :data:`MIN_PLAIN_SECRET_CHARS` (32) characters is used as its UTF-8 bytes. A plain secret
        that happens to be valid base64 is therefore read as base64, which is deterministic and keeps
        at least 24 bytes of it.

        Raises
        ------
        ValueError
            If the secret is neither (the message never quotes it).
        """
        text = secret.strip()
        try:
            decoded = base64.b64decode(text, validate=True)
        except ValueError:  # binascii.Error
            decoded = b""
        if len(decoded) >= MIN_KEY_BYTES:
            return cls(decoded)
        if len(text) >= MIN_PLAIN_SECRET_CHARS:
            return cls(text.encode("utf-8"))
        raise ValueError(
            f"the pseudonymization secret must be standard base64 of at least {MIN_KEY_BYTES} bytes "
            f"or a plain string of at least {MIN_PLAIN_SECRET_CHARS} characters"
        )

    # ------------------------------------------------------------------ identifiers
    def patient_id(self, original: str) -> str:
        """The pseudonym of a ``(0010,0020) PatientID``: ``"ANON"`` and 16 base32 characters (LO).

        The original is compared without surrounding spaces (DICOM padding), so ``"123 "`` and
        ``"123"`` are one patient. Whether an empty ID stays empty is the caller's decision.
        """
        digest = _hmac(self._patient_key, original.strip(" "))
        return "ANON" + _base32(digest, _PATIENT_ID_CHARS)

    def patient_name(self, original: str) -> str:
        """The pseudonym of a ``(0010,0010) PatientName``: ``"ANON^"`` and 12 base32 characters (PN).

        Names are compared as PN values: without surrounding spaces, in upper case, without trailing
        empty components or component groups, so ``"Doe^John"`` and ``"DOE^JOHN^^"`` are one name.
        Whether an empty name stays empty is the caller's decision.
        """
        digest = _hmac(self._name_key, _normalized_name(original))
        return "ANON^" + _base32(digest, _PATIENT_NAME_CHARS)

    def uid(self, original: str) -> str:
        """The replacement of a UID: ``"2.25."`` and the integer of 128 bits of its HMAC (UI).

        Trailing NUL and space padding of the original is ignored. The same original always gives the
        same replacement, so a UID and every reference to it are replaced alike. The original is not
        checked for UI syntax: a malformed UID found in the wild is replaced consistently all the same.
        """
        digest = _hmac(self._uid_key, original.rstrip("\x00 "))
        return UID_ROOT + str(int.from_bytes(digest[:_UID_BYTES], "big"))

    # ------------------------------------------------------------------ dates
    def date_offset_days(self, patient_key: str) -> int:
        """The whole-day shift for one patient's dates, in [-3650, -1]: never 0, never forwards.

        ``patient_key`` is usually the original ``(0010,0020) PatientID``; surrounding spaces are
        ignored. 64 bits of its HMAC are reduced modulo 3650 (the bias is below 2**-50).
        """
        digest = _hmac(self._date_key, patient_key.strip(" "))
        return -(int.from_bytes(digest[:8], "big") % DATE_SHIFT_MAX_DAYS + 1)

    @staticmethod
    def shift_date(value: str, days: int) -> str:
        """A DA value ``YYYYMMDD`` (or the legacy ``YYYY.MM.DD``) moved by ``days``, as ``YYYYMMDD``.

        Trailing space padding is ignored. Leap days move like any other day (2024-02-29 less 365 days
        is 2023-03-01).

        Raises
        ------
        ValueError
            If the value is not a DA date, or the shifted date falls outside the years 0001–9999. The
            message never quotes the value.
        """
        text = value.rstrip(" ")
        found = _DA.fullmatch(text) or _DA_LEGACY.fullmatch(text)
        if found is None:
            raise ValueError("DA value is not a date of the form YYYYMMDD (or YYYY.MM.DD)")
        date = _date(found["year"], found["month"], found["day"], "DA")
        return _format_date(_add_days(date, days, "DA"))

    @staticmethod
    def shift_datetime(value: str, days: int) -> str:
        """A DT value moved by ``days``, keeping exactly the precision given and the UTC offset suffix.

        ``YYYYMMDD`` and finer: the date moves by ``days``; hours, minutes, seconds, fraction and
        ``&ZZXX`` are kept as written (a whole-day shift does not change a time of day).
        ``YYYYMM``: moves by ``round(days / 30.44)`` whole months. ``YYYY``: moves by
        ``round(days / 365.25)`` whole years. At these coarse precisions a shift shorter than half a
        month (or year) leaves the value as it was: the value says no more than that month (or year).
        Trailing space padding is ignored.

        Raises
        ------
        ValueError
            If the value is not ``YYYY[MM[DD[HH[MM[SS[.F{1-6}]]]]]][&ZZXX]`` with valid fields, or the
            result falls outside the years 0001–9999. The message never quotes the value.
        """
        text = value.rstrip(" ")
        found = _DT.fullmatch(text)
        if found is None:
            raise ValueError(f"DT value is not of the form {_DT_FORM}")
        _check_time(found)
        _check_offset(found)
        year = int(found["year"])
        offset = found["offset"] or ""
        if found["month"] is None:
            year += round(days / _DAYS_PER_YEAR)
            _check_year(year)
            return f"{year:04d}{offset}"
        month = int(found["month"])
        if not 1 <= month <= 12:
            raise ValueError(f"DT value has a month outside 01–12 (form {_DT_FORM})")
        if found["day"] is None:
            months = year * 12 + month - 1 + round(days / _DAYS_PER_MONTH)
            year, month = divmod(months, 12)
            _check_year(year)
            return f"{year:04d}{month + 1:02d}{offset}"
        date = _date(found["year"], found["month"], found["day"], "DT")
        return _format_date(_add_days(date, days, "DT")) + (found["time"] or "") + offset

    @staticmethod
    def shift_time(value: str, days: int) -> str:
        """A TM value, unchanged: a shift by whole days does not change a time of day.

        ``days`` is taken so that DA, DT and TM values are shifted through one signature.
        """
        return value

    # ------------------------------------------------------------------ dummies
    @staticmethod
    def dummy(vr: str) -> str | int | float | None:
        """A dummy value valid for ``vr``, for the PS3.15 ``D`` action, as metadata JSON holds it.

        Strings for the string VRs, ``0`` or ``0.0`` for the binary numeric ones, ``None`` for SQ and the
        bulk-data VRs (OB, OD, OF, OL, OV, OW, UN), which cannot be given a dummy through metadata JSON:
        the caller removes such attributes.

        Raises
        ------
        ValueError
            For UI (UIDs are replaced with :meth:`uid`, never dummied) and for a VR with no dummy.
        """
        if vr == "UI":
            raise ValueError("UI values are replaced with Pseudonymizer.uid(), never with a dummy")
        if vr not in _DUMMIES:
            raise ValueError(f"no dummy value is defined for VR {vr!r}")
        return _DUMMIES[vr]


# ---------------------------------------------------------------------- helpers
def _subkey(key: bytes, purpose: bytes) -> bytes:
    return hmac.new(key, _SUBKEY_PREFIX + purpose, hashlib.sha256).digest()


def _hmac(subkey: bytes, text: str) -> bytes:
    return hmac.new(subkey, text.encode("utf-8"), hashlib.sha256).digest()


def _base32(digest: bytes, length: int) -> str:
    """``length`` characters of the base32 alphabet (A–Z, 2–7) taken from ``digest``."""
    return base64.b32encode(digest).decode("ascii")[:length]


def _normalized_name(original: str) -> str:
    """A PN value as compared: component groups (``=``) of components (``^``), stripped and upper-cased,
    with trailing empty components and groups removed."""
    groups = []
    for group in original.strip(" ").split("="):
        components = [component.strip(" ").upper() for component in group.split("^")]
        while components and not components[-1]:
            components.pop()
        groups.append("^".join(components))
    while groups and not groups[-1]:
        groups.pop()
    return "=".join(groups)


def _date(year: str, month: str, day: str, vr: str) -> datetime.date:
    try:
        return datetime.date(int(year), int(month), int(day))
    except ValueError:
        raise ValueError(f"{vr} value is not a valid calendar date") from None


def _add_days(date: datetime.date, days: int, vr: str) -> datetime.date:
    try:
        return date + datetime.timedelta(days=days)
    except OverflowError:
        raise ValueError(f"shifted {vr} value falls outside the years 0001–9999") from None


def _check_year(year: int) -> None:
    if not 1 <= year <= 9999:
        raise ValueError("shifted DT value falls outside the years 0001–9999")


def _format_date(date: datetime.date) -> str:
    return f"{date.year:04d}{date.month:02d}{date.day:02d}"


def _check_time(found: re.Match[str]) -> None:
    for group, highest in (("hour", 23), ("minute", 59), ("second", 60)):  # 60: a leap second
        field = found[group]
        if field is not None and int(field) > highest:
            raise ValueError(f"DT value has an invalid {group} (form {_DT_FORM})")


def _check_offset(found: re.Match[str]) -> None:
    if found["offset"] is None:
        return
    if int(found["offset_hours"]) > 14 or int(found["offset_minutes"]) > 59:
        raise ValueError(f"DT value has an invalid UTC offset (form {_DT_FORM}, &ZZXX within ±1400)")

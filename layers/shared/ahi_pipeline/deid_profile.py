"""The de-identification policy, as data: PS3.15 Table E.1-1 with the Basic Profile and its options.

``data/ps3.15-table-e1-1.json`` is the standard's Table E.1-1 (Application Level Confidentiality Profile
Attributes), edition :data:`EDITION`, one object per row: the tag (``"(0010,0010)"``, or a pattern such as
``"(50XX,XXXX)"``), the Basic Profile action and, where an option changes it, the option's action.  This
module turns a row and a set of :class:`Option` into one :class:`Action` on the image set's metadata.

Actions (PS3.15 E.1.1): ``X`` remove, ``Z`` replace with a zero-length value, ``D`` replace with a dummy
value, ``K`` keep, ``C`` clean, ``U`` replace the UID consistently.  What metadata-only de-identification
does with them:

* **Combined actions** (``X/Z``, ``X/D``, ``X/Z/D``, ``Z/D``, ``X/Z/U*``) let the standard pick by the
  IOD's attribute type (Type 3 removed, Type 2 emptied, Type 1 dummied).  Image set metadata carries no
  IOD, so the choice keeps every IOD conformant: ``X/Z`` → Z, ``X/D`` and ``X/Z/D`` and ``Z/D`` → D,
  ``X/Z/U*`` → U.  The identifying content is gone either way.
* **Options** change a row's action only where the table gives the option a column.  When several
  enabled options apply to one row, keeping (``K``) wins over cleaning (``C``), which wins over the
  Basic Profile's action.
* **Clean** means, by the kind of value: dates and date-times are shifted by the patient's offset
  (Retain Longitudinal Temporal Information with Modified Dates); short text (descriptors such as
  SeriesDescription, device and patient characteristics: LO, SH, CS, …) is kept only when it holds
  none of the image set's identifying values and is replaced with a dummy otherwise; narrative text
  (LT, ST, UT: comments, histories) is replaced, since cleaning prose needs a reader, not a lookup;
  a private attribute is kept only when it is listed as safe.
* **Private attributes** (odd groups) are removed, unless Retain Safe Private keeps the ones in the
  safe list (:data:`SAFE_PRIVATE` and those of the ``SafePrivateAttributes`` parameter, parsed by
  :func:`parse_safe_private`: ``CREATOR:gggg:ee`` entries).  PS3.15 Table E.3.10-1 is not bundled, so
  the default list is empty and every private attribute is removed: the safe choice until a site
  lists what its vendors' elements are known to hold.
* **Attributes not in the table** are kept (the Basic Profile lists every attribute it changes).

Options are the codes of PS3.16 CID 7050 (De-identification Method), so the ``DeidentificationMethod``
text names them exactly: :meth:`Profile.method`.
"""

from __future__ import annotations

import enum
import functools
import json
import re
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from importlib import resources
from typing import Any, Final

__all__ = [
    "BASIC_PROFILE_CODE",
    "EDITION",
    "Action",
    "Option",
    "Profile",
    "ProfileError",
    "Rule",
    "load_profile",
    "parse_options",
    "parse_safe_private",
    "table_rows",
]

EDITION: Final = "2025b"
TABLE_RESOURCE: Final = "ps3.15-table-e1-1.json"
BASIC_PROFILE_CODE: Final = ("113100", "Basic Application Confidentiality Profile")


class ProfileError(ValueError):
    """An option set that is not valid (unknown names, or options that exclude each other)."""


class Action(enum.StrEnum):
    REMOVE = "X"
    ZERO = "Z"
    DUMMY = "D"
    KEEP = "K"
    CLEAN = "C"
    UID = "U"


class Option(enum.StrEnum):
    """The options of PS3.15 E.3 the pipeline applies, named as the template parameter takes them."""

    CLEAN_DESCRIPTORS = "CleanDescriptors"
    RETAIN_LONGITUDINAL_FULL_DATES = "RetainLongitudinalFullDates"
    RETAIN_LONGITUDINAL_MODIFIED_DATES = "RetainLongitudinalModifiedDates"
    RETAIN_PATIENT_CHARACTERISTICS = "RetainPatientCharacteristics"
    RETAIN_DEVICE_IDENTITY = "RetainDeviceIdentity"
    RETAIN_UIDS = "RetainUIDs"
    RETAIN_SAFE_PRIVATE = "RetainSafePrivate"
    RETAIN_INSTITUTION_IDENTITY = "RetainInstitutionIdentity"

    @property
    def column(self) -> str:
        """The option's column in the table."""
        return _COLUMNS[self]

    @property
    def code(self) -> tuple[str, str]:
        """(code value, code meaning) in PS3.16 CID 7050."""
        return _CODES[self]


_COLUMNS: Final = {
    Option.CLEAN_DESCRIPTORS: "cleanDescOpt",
    Option.RETAIN_LONGITUDINAL_FULL_DATES: "rtnLongFullDatesOpt",
    Option.RETAIN_LONGITUDINAL_MODIFIED_DATES: "rtnLongModifDatesOpt",
    Option.RETAIN_PATIENT_CHARACTERISTICS: "rtnPatCharsOpt",
    Option.RETAIN_DEVICE_IDENTITY: "rtnDevIdOpt",
    Option.RETAIN_UIDS: "rtnUIDsOpt",
    Option.RETAIN_SAFE_PRIVATE: "rtnSafePrivOpt",
    Option.RETAIN_INSTITUTION_IDENTITY: "rtnInstIdOpt",
}
_CODES: Final = {
    Option.CLEAN_DESCRIPTORS: ("113105", "Clean Descriptors"),
    Option.RETAIN_LONGITUDINAL_FULL_DATES: ("113106", "Retain Longitudinal Temporal Information Full Dates"),
    Option.RETAIN_LONGITUDINAL_MODIFIED_DATES: (
        "113107",
        "Retain Longitudinal Temporal Information Modified Dates",
    ),
    Option.RETAIN_PATIENT_CHARACTERISTICS: ("113108", "Retain Patient Characteristics"),
    Option.RETAIN_DEVICE_IDENTITY: ("113109", "Retain Device Identity"),
    Option.RETAIN_UIDS: ("113110", "Retain UIDs"),
    Option.RETAIN_SAFE_PRIVATE: ("113111", "Retain Safe Private"),
    Option.RETAIN_INSTITUTION_IDENTITY: ("113112", "Retain Institution Identity"),
}
#: Resolution of the Basic Profile's combined actions when the IOD's attribute type is unknown.
_COMBINED: Final = {
    "X/Z": Action.ZERO,
    "X/D": Action.DUMMY,
    "X/Z/D": Action.DUMMY,
    "Z/D": Action.DUMMY,
    "X/Z/U*": Action.UID,
}
#: Private attributes known to hold no identifying information: (private creator, group, element byte).
#: Empty by default (see the module docstring); a deployment adds its own with ``safe_private=``.
SAFE_PRIVATE: Final[frozenset[tuple[str, int, int]]] = frozenset()

_TAG = re.compile(r"\(([0-9A-FX]{4}),([0-9A-FX]{4})\)")


@dataclass(frozen=True, slots=True)
class Rule:
    """One row of the table: a tag or a tag pattern, the Basic Profile action, the options' actions."""

    tag: str
    name: str
    basic: str
    options: Mapping[str, str] = field(default_factory=dict)


def _mask_of(tag: str) -> tuple[int, int] | None:
    """``(mask, value)`` such that ``tag_int & mask == value`` for a tag pattern; None for a non-tag row."""
    match = _TAG.fullmatch(tag.upper())
    if not match:
        return None
    digits = match.group(1) + match.group(2)
    mask = int("".join("0" if d == "X" else "F" for d in digits), 16)
    value = int("".join("0" if d == "X" else d for d in digits), 16)
    return mask, value


def table_rows() -> list[dict[str, Any]]:
    """The rows of the bundled table, as the JSON file holds them."""
    text = resources.files("ahi_pipeline").joinpath("data", TABLE_RESOURCE).read_text(encoding="utf-8")
    rows: list[dict[str, Any]] = json.loads(text)
    return rows


@functools.cache
def _rules() -> tuple[dict[int, Rule], tuple[tuple[int, int, Rule], ...], Rule | None]:
    """Exact tags, tag patterns (mask, value, rule), and the private-attributes row."""
    exact: dict[int, Rule] = {}
    patterns: list[tuple[int, int, Rule]] = []
    private: Rule | None = None
    for row in table_rows():
        rule = Rule(
            tag=row["tag"],
            name=row["name"],
            basic=row["basicProfile"],
            options={column: row[column] for column in _COLUMNS.values() if column in row},
        )
        masked = _mask_of(row["tag"])
        if masked is None:
            if "ODD" in row["tag"].upper():
                private = rule
            continue
        mask, value = masked
        if mask == 0xFFFFFFFF:
            exact[value] = rule
        else:
            patterns.append((mask, value, rule))
    return exact, tuple(patterns), private


def parse_options(text: str | Iterable[str]) -> frozenset[Option]:
    """Options from the template parameter (comma- or space-separated names; ``None``/empty: none).

    Raises
    ------
    ProfileError
        For an unknown name, or both Retain Longitudinal options at once.
    """
    names = re.split(r"[\s,]+", text) if isinstance(text, str) else list(text)
    options: set[Option] = set()
    unknown = []
    for name in (n.strip() for n in names):
        if not name or name.lower() == "none":
            continue
        try:
            options.add(Option(name))
        except ValueError:
            unknown.append(name)
    if unknown:
        known = ", ".join(o.value for o in Option)
        raise ProfileError(f"unknown de-identification option(s) {unknown}; known: {known}")
    if {Option.RETAIN_LONGITUDINAL_FULL_DATES, Option.RETAIN_LONGITUDINAL_MODIFIED_DATES} <= options:
        raise ProfileError(
            "RetainLongitudinalFullDates and RetainLongitudinalModifiedDates exclude each other"
        )
    return frozenset(options)


@dataclass(frozen=True)
class Profile:
    """The Basic Profile with ``options``: the action for each attribute of image set metadata."""

    options: frozenset[Option]
    safe_private: frozenset[tuple[str, int, int]] = SAFE_PRIVATE
    edition: str = EDITION

    def rule(self, tag: int) -> Rule | None:
        """The table's row for a public ``tag`` (exact, else the first pattern that matches)."""
        exact, patterns, _ = _rules()
        found = exact.get(tag)
        if found is not None:
            return found
        for mask, value, rule in patterns:
            if tag & mask == value:
                return rule
        return None

    def action(self, tag: int) -> Action:
        """The action for a public attribute (KEEP when the table does not list it)."""
        rule = self.rule(tag)
        return Action.KEEP if rule is None else self.resolve(rule)

    def private_action(self, tag: int, creator: str | None) -> Action:
        """The action for a private attribute: removed, unless Retain Safe Private keeps a listed one."""
        if Option.RETAIN_SAFE_PRIVATE not in self.options or creator is None:
            return Action.REMOVE
        group, element = tag >> 16, tag & 0xFFFF
        if element < 0x1000:  # a private creator element: kept with the elements it reserves
            reserved = any(c == creator.strip() and g == group for c, g, _ in self.safe_private)
            return Action.KEEP if reserved else Action.REMOVE
        key = (creator.strip(), group, element & 0xFF)
        return Action.KEEP if key in self.safe_private else Action.REMOVE

    def resolve(self, rule: Rule) -> Action:
        """A row's action under this profile's options (see the module docstring for the precedence)."""
        chosen = {rule.options[o.column] for o in self.options if o.column in rule.options}
        if "K" in chosen:
            return Action.KEEP
        if "C" in chosen:
            return Action.CLEAN
        return _COMBINED.get(rule.basic) or Action(rule.basic)

    @property
    def modified_dates(self) -> bool:
        return Option.RETAIN_LONGITUDINAL_MODIFIED_DATES in self.options

    @property
    def full_dates(self) -> bool:
        return Option.RETAIN_LONGITUDINAL_FULL_DATES in self.options

    @property
    def method(self) -> list[str]:
        """``(0012,0063) DeidentificationMethod`` (LO, 1-n): the profile with the table's edition, then
        each option as "<CID 7050 code> <meaning>", every value within LO's 64 characters."""
        values = [f"{BASIC_PROFILE_CODE[0]} {BASIC_PROFILE_CODE[1]} (PS3.15 {self.edition})"]
        values += [f"{o.code[0]} {o.code[1]}" for o in sorted(self.options, key=lambda o: o.code[0])]
        return values


_SAFE_ENTRY = re.compile(r"(?P<creator>[^:;]{1,64}):(?P<group>[0-9A-Fa-f]{4}):(?P<element>[0-9A-Fa-f]{2})")


def parse_safe_private(text: str) -> frozenset[tuple[str, int, int]]:
    """Safe private attributes from the template parameter: ``CREATOR:gggg:ee`` entries separated by
    ``;`` (the private creator, the odd group, the element byte: ``GEMS_ACQU_01:0019:1E``).

    Raises
    ------
    ProfileError
        For a malformed entry or an even (public) group.
    """
    entries: set[tuple[str, int, int]] = set()
    for raw in (part.strip() for part in text.split(";")):
        if not raw:
            continue
        match = _SAFE_ENTRY.fullmatch(raw)
        if not match or not int(match["group"], 16) & 1:
            raise ProfileError(
                f"safe private attribute {raw!r} is not CREATOR:gggg:ee with an odd group gggg"
            )
        entries.add((match["creator"].strip(), int(match["group"], 16), int(match["element"], 16)))
    return frozenset(entries)


def load_profile(
    options: str | Iterable[str] = "", *, safe_private: Iterable[tuple[str, int, int]] = ()
) -> Profile:
    """The profile for an option set (see :func:`parse_options`), with any extra safe private attributes."""
    return Profile(options=parse_options(options), safe_private=SAFE_PRIVATE | frozenset(safe_private))

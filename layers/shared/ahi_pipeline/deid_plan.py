"""The de-identification planner (pure): image set metadata + profile → UpdateImageSetMetadata payloads.

:func:`plan` walks the image set's latest metadata document level by level (``Patient.DICOM``,
``Study.DICOM``, each series' and each instance's ``DICOM``, and the items of every sequence), decides
each attribute's fate with :class:`~ahi_pipeline.deid_profile.Profile`, and returns the changes still
needed, as :class:`Change` objects; :meth:`Plan.payloads` packs them into ``DICOMUpdates`` payloads of at
most 10 KB per blob.

Replacement values are computed from the **original** document (the version the stage started from),
never from the latest one, so planning is idempotent and convergent: an attribute that already holds its
target value needs nothing, an attribute that still holds its original value gets its target, and an
attribute someone else wrote meanwhile is handled as well (removed, when its action would transform a
value that might already be transformed).  So the stage can apply a plan's payloads, re-read, re-plan, and
stop when the plan is empty, whatever happened between (a retry, a concurrent update, a
ConflictException).  Series and SOP instance keys that a forced UID update renamed are mapped back to
their original keys through the pseudonymizer (the new UID is a keyed hash of the old one).

The service's constraints (api spec §5.4) decide ``force``: private attributes, the four UID/ID
attributes, sequences (SQ), multi-valued attributes (by the dictionary's VM, or a JSON array) and
attributes outside the DICOM dictionary can only be updated or removed with ``force``; the planner asks
for it exactly then, so payloads that do not need it are sent without it.  A removal names the stored
value, as the service requires (a value too large to quote within 10 KB is emptied first, then
removed).  Renames of SOP instances, then of series, come after every other change, so a payload never
addresses a key that an earlier payload of the same plan moved; the marker (PatientIdentityRemoved YES,
DeidentificationMethod) rides in the last payload.

Besides the changes, a plan carries the **blockers** (``(0028,0301) BurnedInAnnotation`` YES: identity in
the pixels, which metadata updates cannot reach).  :func:`identifying_values` gives the original's
identifying values (every non-empty text value the profile changes), which verification
(:func:`remaining_identifiers`) and the tag guard look for.
"""

from __future__ import annotations

import enum
import functools
import json
import re
from collections.abc import Iterator, Mapping
from dataclasses import dataclass, field
from typing import Any, Final, Protocol

from ahi_pipeline.deid_profile import Action, Profile

__all__ = [
    "PAYLOAD_LIMIT",
    "Change",
    "Identifiers",
    "Payload",
    "Plan",
    "Pseudonyms",
    "identifying_values",
    "plan",
    "remaining_identifiers",
]

#: Bytes per ``updatableAttributes`` / ``removableAttributes`` blob (the service's 10 KB quota).
PAYLOAD_LIMIT: Final = 10 * 1024
SCHEMA_VERSION: Final = 1.1

_HEX = re.compile(r"[0-9A-Fa-f]{8}")
_NUMBER = re.compile(r"[-+]?(\d+\.?\d*|\.\d+)(e[-+]?\d+)?")
_FORCE_ONLY: Final = frozenset({"StudyInstanceUID", "SeriesInstanceUID", "SOPInstanceUID", "StudyID"})
_GENERATED: Final = frozenset(
    {"SchemaVersion", "DatastoreID", "ImageSetID", "PixelData", "Checksum", "Width", "Height"}
    | {"MinPixelValue", "MaxPixelValue", "FrameSizeInBytes"}
)
_TEXT_VRS: Final = frozenset({"AE", "AS", "CS", "LO", "PN", "SH", "UC", "UR"})
_NARRATIVE_VRS: Final = frozenset({"LT", "ST", "UT"})
_BINARY_VRS: Final = frozenset({"OB", "OD", "OF", "OL", "OV", "OW", "UN"})
_DATE_VRS: Final = frozenset({"DA", "DT"})
_NUMBER_VRS: Final = frozenset({"US", "SS", "UL", "SL", "UV", "SV", "FL", "FD"})
#: A removal quotes the stored value; a value whose JSON is longer than this is emptied first.
_LARGEST_REMOVAL: Final = PAYLOAD_LIMIT - 1024
#: Set by the marker change once every other change is made.
_MARKERS: Final = frozenset({"PatientIdentityRemoved", "DeidentificationMethod"})
#: Identifying values shorter than this are matched whole, never inside other text ("F", "12").
_MIN_SUBSTRING: Final = 4
#: Values shorter than this are not searched for at all in verification ("M" is in too many places);
#: the plan itself checks that each of those attributes was changed.
_MIN_IDENTIFIER: Final = 3


class Pseudonyms(Protocol):
    """What the planner needs from :class:`ahi_pipeline.pseudonyms.Pseudonymizer`."""

    def patient_id(self, original: str) -> str: ...
    def patient_name(self, original: str) -> str: ...
    def uid(self, original: str) -> str: ...
    def date_offset_days(self, patient_key: str) -> int: ...
    def shift_date(self, value: str, days: int) -> str: ...
    def shift_datetime(self, value: str, days: int) -> str: ...
    def dummy(self, vr: str) -> str | int | float | None: ...


class Phase(enum.IntEnum):
    """Payload order: attributes, then SOP instance renames, then series renames, then the marker."""

    ATTRIBUTES = 0
    RENAME_INSTANCES = 1
    RENAME_SERIES = 2
    MARKER = 3


#: Where an attribute sits: () patient, ("study",), ("series", uid), ("instance", series uid, sop uid).
Location = tuple[str, ...]
_ABSENT: Final = object()


@dataclass(frozen=True, slots=True)
class Change:
    """One attribute to update (``value`` is the new value) or remove (``value`` is the stored one)."""

    location: Location
    key: str
    remove: bool
    value: Any
    force: bool
    action: str
    phase: Phase = Phase.ATTRIBUTES

    def fragment(self) -> str:
        """The change's ``"key": value`` JSON text (what it adds to a blob, path aside)."""
        return json.dumps({self.key: self.value}, separators=(",", ":"), ensure_ascii=False)[1:-1]


@dataclass(frozen=True, slots=True)
class Payload:
    """One UpdateImageSetMetadata call: decoded blobs (compact JSON) and whether it needs ``force``."""

    updatable: bytes | None
    removable: bytes | None
    force: bool
    changes: int

    def as_updates(self) -> dict[str, Any]:
        """``updateImageSetMetadataUpdates`` for boto3."""
        updates: dict[str, bytes] = {}
        if self.updatable is not None:
            updates["updatableAttributes"] = self.updatable
        if self.removable is not None:
            updates["removableAttributes"] = self.removable
        return {"DICOMUpdates": updates}


@dataclass
class Plan:
    """The changes still needed, what prevents de-identification, and the original's identifying values."""

    changes: list[Change] = field(default_factory=list)
    blockers: list[str] = field(default_factory=list)
    #: Needed changes the service cannot make.  None for the metadata HealthImaging holds: ``force``
    #: lifts every constraint that touches an identifying attribute; kept for the report's shape.
    unchangeable: list[str] = field(default_factory=list)
    actions: dict[str, int] = field(default_factory=dict)

    @property
    def done(self) -> bool:
        return not self.changes

    def produced(self) -> frozenset[str]:
        """The text values the changes write (pseudonyms, dummies, shifted dates), casefolded."""
        values: set[str] = set()

        def add(value: Any) -> None:
            if isinstance(value, str):
                values.add(value.strip().casefold())
            elif isinstance(value, list):
                for item in value:
                    add(item)
            elif isinstance(value, Mapping):
                for item in value.values():
                    add(item)

        for change in self.changes:
            if not change.remove:
                add(change.value)
        return frozenset(values)

    def payloads(self, limit: int = PAYLOAD_LIMIT) -> list[Payload]:
        """The changes packed into payloads, in phase order, ``force`` only on the payloads that need it,
        each blob ≤ ``limit`` bytes; the marker rides in the last payload (it becomes true with it)."""
        groups: dict[tuple[Phase, bool], list[Change]] = {}
        marker = [change for change in self.changes if change.phase is Phase.MARKER]
        for change in self.changes:
            if change.phase is not Phase.MARKER:
                groups.setdefault((change.phase, change.force), []).append(change)
        ordered = [changes for _, changes in sorted(groups.items(), key=lambda item: item[0])]
        if marker:
            if ordered:
                ordered[-1] = ordered[-1] + marker
            else:
                ordered.append(marker)
        payloads: list[Payload] = []
        for changes in ordered:
            payloads.extend(_pack(changes, limit))
        return payloads


# ---------------------------------------------------------------------- the dictionary
@functools.cache
def _dictionary() -> Any:
    from pydicom import datadict  # noqa: PLC0415 - pydicom is imported only when planning

    return datadict


@functools.cache
def _tag_of(key: str) -> int | None:
    if _HEX.fullmatch(key):
        return int(key, 16)
    tag: int | None = _dictionary().tag_for_keyword(key)
    return tag


@functools.cache
def _standard_vr_vm(tag: int) -> tuple[str | None, str | None]:
    datadict = _dictionary()
    if (tag >> 16) & 1 or not datadict.dictionary_has_tag(tag):
        return None, None
    return str(datadict.dictionary_VR(tag)), str(datadict.dictionary_VM(tag))


# ---------------------------------------------------------------------- planning
@dataclass
class _Context:
    profile: Profile
    pseudonyms: Pseudonyms
    vrs: Mapping[str, str]
    offset: int
    identifiers: tuple[str, ...]
    plan: Plan
    actions: dict[int, Action] = field(default_factory=dict)


def plan(
    latest: Mapping[str, Any],
    original: Mapping[str, Any],
    profile: Profile,
    pseudonyms: Pseudonyms,
    *,
    identifiers: Identifiers | None = None,
) -> Plan:
    """The changes that make ``latest`` de-identified under ``profile`` (empty when it already is).

    ``original`` is the document the de-identification started from (it may be ``latest`` itself);
    replacement values are derived from it; ``identifiers`` is ``identifying_values(original, profile)``
    when the caller has it already.  Pure: neither document is modified.
    """
    result = Plan()
    patient_original = _dicom(original.get("Patient"))
    patient_key = str(patient_original.get("PatientID") or patient_original.get("PatientName") or "")
    context = _Context(
        profile=profile,
        pseudonyms=pseudonyms,
        vrs=_all_vrs(latest) | _all_vrs(original),
        offset=pseudonyms.date_offset_days(patient_key) if profile.modified_dates else 0,
        identifiers=tuple(
            sorted((identifiers or identifying_values(original, profile)).changed, key=len, reverse=True)
        ),
        plan=result,
    )
    renamed = _renames(original, profile, pseudonyms)
    for location, now, then in _levels(latest, original, renamed):
        for key, value in now.items():
            _attribute(context, location, key, value, original=then.get(key, _ABSENT), siblings=now)
    burned = _burned_in(latest)
    if burned:
        result.blockers.append(
            f"(0028,0301) BurnedInAnnotation is YES in {burned} instance(s): identity in the pixel data, "
            "which metadata updates cannot remove"
        )
    _marker(context, _dicom(latest.get("Patient")))
    return result


def _dicom(holder: Any) -> dict[str, Any]:
    if isinstance(holder, Mapping):
        dicom = holder.get("DICOM")
        if isinstance(dicom, Mapping):
            return dict(dicom)
    return {}


def _all_vrs(document: Mapping[str, Any]) -> dict[str, str]:
    vrs: dict[str, str] = {}
    for series in (document.get("Study") or {}).get("Series", {}).values():
        for instance in (series.get("Instances") or {}).values():
            vrs.update(instance.get("DICOMVRs") or {})
    return vrs


def _renames(original: Mapping[str, Any], profile: Profile, pseudonyms: Pseudonyms) -> dict[str, str]:
    """New key → original key, for the series and SOP instance keys a UID replacement renames."""
    if profile.action(0x0020000E) is not Action.UID:  # Retain UIDs: nothing is renamed
        return {}
    renamed: dict[str, str] = {}
    for series_uid, series in (original.get("Study") or {}).get("Series", {}).items():
        renamed[pseudonyms.uid(series_uid)] = series_uid
        for sop_uid in series.get("Instances") or {}:
            renamed[pseudonyms.uid(sop_uid)] = sop_uid
    return renamed


def _levels(
    latest: Mapping[str, Any], original: Mapping[str, Any], renamed: Mapping[str, str]
) -> Iterator[tuple[Location, dict[str, Any], dict[str, Any]]]:
    """``(location, latest DICOM, original DICOM)`` for every level of ``latest``."""
    yield (), _dicom(latest.get("Patient")), _dicom(original.get("Patient"))
    study_now, study_then = latest.get("Study") or {}, original.get("Study") or {}
    yield ("study",), _dicom(study_now), _dicom(study_then)
    series_then_all = study_then.get("Series") or {}
    for series_uid, series in (study_now.get("Series") or {}).items():
        series_then = series_then_all.get(renamed.get(series_uid, series_uid)) or {}
        yield ("series", series_uid), _dicom(series), _dicom(series_then)
        instances_then = series_then.get("Instances") or {}
        for sop_uid, instance in (series.get("Instances") or {}).items():
            then = instances_then.get(renamed.get(sop_uid, sop_uid)) or {}
            yield ("instance", series_uid, sop_uid), _dicom(instance), _dicom(then)


def _burned_in(document: Mapping[str, Any]) -> int:
    count = 0
    for series in (document.get("Study") or {}).get("Series", {}).values():
        for instance in (series.get("Instances") or {}).values():
            if str(_dicom(instance).get("BurnedInAnnotation") or "").strip().upper() == "YES":
                count += 1
    return count


def _attribute(
    context: _Context, location: Location, key: str, value: Any, *, original: Any, siblings: Mapping[str, Any]
) -> None:
    if key in _MARKERS or key in _GENERATED:
        return
    tag = _tag_of(key)
    if tag is None:  # a keyword the dictionary does not know: it cannot be judged, so it goes
        _record(context, location, key, value, target=_ABSENT, action="X")
        return
    action = _action(context, tag, key, siblings)
    vr = context.vrs.get(key) or _standard_vr_vm(tag)[0] or "UN"
    if action is Action.KEEP and vr != "SQ":
        return  # kept as it is now, whoever wrote it
    if original is _ABSENT and _transforms(key, action, vr, context):
        # Written after de-identification started: whether it was already transformed cannot be
        # told, and transforming it again would never converge, so it is removed.
        _record(context, location, key, value, target=_ABSENT, action="X")
        return
    # Replacements derive from the original value.
    source = value if original is _ABSENT else original
    _record(
        context, location, key, value, target=_target(context, key, vr, action, source), action=action.value
    )


def _transforms(key: str, action: Action, vr: str, context: _Context) -> bool:
    """Whether the action maps a value to another that depends on it (applying it twice differs)."""
    if action is Action.UID or key in ("PatientName", "PatientID") or vr == "SQ":
        return True
    return action is Action.CLEAN and vr in _DATE_VRS and context.profile.modified_dates


def _action(context: _Context, tag: int, key: str, siblings: Mapping[str, Any]) -> Action:
    if not (tag >> 16) & 1:
        cached = context.actions.get(tag)
        if cached is None:
            # PatientName and PatientID: a keyed pseudonym (see _target), whatever the options.
            cached = Action.DUMMY if key in ("PatientName", "PatientID") else context.profile.action(tag)
            context.actions[tag] = cached
        return cached
    group, element = tag >> 16, tag & 0xFFFF
    creator_key = f"{group:04X}00{element >> 8:02X}" if element >= 0x1000 else key
    creator = siblings.get(creator_key)
    return context.profile.private_action(tag, creator if isinstance(creator, str) else None)


def _target(context: _Context, key: str, vr: str, action: Action, source: Any) -> Any:  # noqa: PLR0911
    """The value the attribute must end with (``_ABSENT``: removed)."""
    pseudonyms = context.pseudonyms
    if action is Action.REMOVE:
        return _ABSENT
    if vr == "SQ":
        return _sequence(context, action, source)
    if source is None:
        return None  # already empty: nothing identifying to replace
    if action is Action.ZERO:
        return None
    if action is Action.UID:
        return _each(source, pseudonyms.uid)
    if key == "PatientID":
        return _each(source, pseudonyms.patient_id)
    if key == "PatientName":
        return _each(source, pseudonyms.patient_name)
    if action is Action.DUMMY:
        if vr == "UI":
            return _each(source, pseudonyms.uid)
        dummy = pseudonyms.dummy(vr)
        return _ABSENT if dummy is None else dummy
    if action is Action.CLEAN:
        return _clean(context, vr, source)
    return source  # KEEP


def _each(value: Any, function: Any) -> Any:
    if isinstance(value, list):
        return [function(str(item)) if item is not None else None for item in value]
    return function(str(value))


def _clean(context: _Context, vr: str, source: Any) -> Any:
    pseudonyms = context.pseudonyms
    if vr in _DATE_VRS:
        if not context.profile.modified_dates:
            return source
        shift = pseudonyms.shift_date if vr == "DA" else pseudonyms.shift_datetime
        try:
            return _each(source, lambda text: shift(text, context.offset) if text.strip() else text)
        except ValueError:
            dummy = pseudonyms.dummy(vr)  # a malformed date cannot be shifted: it is replaced
            return dummy
    # Narrative text (comments, histories) names other people and places as often as the patient:
    # cleaning it needs a reader, not a lookup, so it is replaced; short text is kept when it holds
    # none of the image set's identifying values.  Times of day are kept (a whole-day shift).
    if vr in _NARRATIVE_VRS or (vr in _TEXT_VRS and _identifying(context, source)):
        dummy = pseudonyms.dummy(vr)
        return _ABSENT if dummy is None else dummy
    return source


def _identifying(context: _Context, value: Any) -> bool:
    texts = value if isinstance(value, list) else [value]
    return any(_contains(str(text).casefold(), i) for text in texts for i in context.identifiers)


def _contains(text: str, identifier: str) -> bool:
    """Whether ``text`` is ``identifier`` or contains it (a number only between non-digits: the
    removed serial number "00000" is not in the kept thickness "6.000000")."""
    if identifier == text.strip():
        return True
    if len(identifier) < _MIN_SUBSTRING or identifier not in text:
        return False
    if not identifier.isdigit():
        return True
    return re.search(rf"(?<!\d){re.escape(identifier)}(?!\d)", text) is not None


def _sequence(context: _Context, action: Action, source: Any) -> Any:
    """A sequence's target: removed, emptied, or its items with the profile applied inside them."""
    if action in (Action.ZERO, Action.DUMMY):
        return None
    if not isinstance(source, list):
        return source
    items = []
    for item in source:
        if not isinstance(item, Mapping):
            items.append(item)
            continue
        cleaned: dict[str, Any] = {}
        for key, value in item.items():
            tag = _tag_of(key)
            if tag is None:
                continue
            # Inside a sequence each attribute follows its own row: referenced instance UIDs are
            # replaced, class UIDs (not in the table) are kept.
            nested = _action(context, tag, key, item)
            if nested is Action.KEEP and not isinstance(value, list):
                cleaned[key] = value
                continue
            vr = context.vrs.get(key) or _standard_vr_vm(tag)[0] or "UN"
            target = _target(context, key, vr, nested, value)
            if target is not _ABSENT:
                cleaned[key] = target
        items.append(cleaned)
    return items


def _record(context: _Context, location: Location, key: str, value: Any, *, target: Any, action: str) -> None:
    if target is not _ABSENT and target == value and type(target) is type(value):
        return
    result = context.plan
    result.actions[action] = result.actions.get(action, 0) + 1
    tag = _tag_of(key)
    if target is _ABSENT and len(json.dumps(value, ensure_ascii=False)) > _LARGEST_REMOVAL:
        # A removal quotes the stored value, and a value this large cannot fit in one blob: empty it
        # first (a forced update to null), and the next plan removes the empty attribute.
        change = Change(location, key, False, None, True, action)
    elif target is _ABSENT:
        change = Change(location, key, True, value, _needs_force(key, tag, value, removal=True), action)
    else:
        phase = Phase.ATTRIBUTES
        if key == "SOPInstanceUID" and location[:1] == ("instance",):
            phase = Phase.RENAME_INSTANCES
        elif key == "SeriesInstanceUID" and location[:1] == ("series",):
            phase = Phase.RENAME_SERIES
        force = _needs_force(key, tag, target) or _needs_force(key, tag, value)
        change = Change(location, key, False, target, force, action, phase)
    result.changes.append(change)


def _needs_force(key: str, tag: int | None, value: Any, *, removal: bool = False) -> bool:
    """The service's constraints (api spec §5.4): what only a forced update or removal may change.

    Binary VRs need ``force`` to be written (their values cannot be checked as JSON), not to be removed.
    """
    if tag is None or (tag >> 16) & 1 or key in _FORCE_ONLY or isinstance(value, list):
        return True
    vr, vm = _standard_vr_vm(tag)
    return vr is None or vr == "SQ" or (vr in _BINARY_VRS and not removal) or vm != "1"


def _marker(context: _Context, patient: Mapping[str, Any]) -> None:
    """Once nothing else is left: PatientIdentityRemoved YES and the method (profile, options, edition)."""
    wanted = {"PatientIdentityRemoved": "YES", "DeidentificationMethod": context.profile.method}
    missing = {key: value for key, value in wanted.items() if patient.get(key) != value}
    # One call for both (the method is multi-valued, so the call needs force anyway).
    force = any(_needs_force(key, _tag_of(key), value) for key, value in missing.items())
    for key, value in missing.items():
        context.plan.changes.append(Change((), key, False, value, force, "marker", Phase.MARKER))


# ---------------------------------------------------------------------- payloads
_BLOB_BASE: Final = len('{"SchemaVersion":1.1}')


class _Sizer:
    """The exact size of a blob as changes are added (the JSON text of each new path element once)."""

    def __init__(self) -> None:
        self.size = _BLOB_BASE
        self.seen: set[Location] = set()

    def cost(self, change: Change) -> int:
        cost = len(change.fragment().encode()) + 1  # "key":value and a separator
        for prefix in _prefixes(change.location):
            if prefix not in self.seen:
                cost += _element_cost(prefix)
        return cost

    def add(self, change: Change, cost: int) -> None:
        self.size += cost
        self.seen.update(_prefixes(change.location))


def _prefixes(location: Location) -> list[Location]:
    """The path elements a change at ``location`` needs, outermost first (as pseudo-locations)."""
    if not location:
        return [("patient",)]
    if location[0] == "study":
        return [("study",), ("study", "dicom")]
    series = location[1]
    found: list[Location] = [("study",), ("series",), ("series", series)]
    if location[0] == "series":
        return [*found, ("series", series, "dicom")]
    return [*found, ("series", series, "instances"), ("instance", series, location[2])]


_FIXED_ELEMENTS: Final[dict[Location, int]] = {
    ("patient",): len(',"Patient":{"DICOM":{}}'),
    ("study",): len(',"Study":{}'),
    ("series",): len(',"Series":{}'),
}


def _element_cost(prefix: Location) -> int:
    """Bytes of one path element of a blob, separators included."""
    fixed = _FIXED_ELEMENTS.get(prefix)
    if fixed is not None:
        return fixed
    if prefix[-1] == "dicom":
        return len(',"DICOM":{}')
    if prefix[-1] == "instances":
        return len(',"Instances":{}')
    if prefix[0] == "instance":
        return len(f',"{prefix[2]}":{{"DICOM":{{}}}}')
    return len(f',"{prefix[1]}":{{}}')


def _pack(changes: list[Change], limit: int) -> Iterator[Payload]:
    """Greedy packing by exact incremental size, each blob checked again when it is serialized."""
    batch: list[Change] = []
    sizers = {True: _Sizer(), False: _Sizer()}
    for change in changes:
        sizer = sizers[change.remove]
        cost = sizer.cost(change)
        if batch and sizer.size + cost > limit:
            yield from _exact(batch, limit)
            batch, sizers = [], {True: _Sizer(), False: _Sizer()}
            sizer = sizers[change.remove]
            cost = sizer.cost(change)
        batch.append(change)
        sizer.add(change, cost)
    if batch:
        yield from _exact(batch, limit)


def _exact(changes: list[Change], limit: int) -> Iterator[Payload]:
    updatable = _blob([c for c in changes if not c.remove])
    removable = _blob([c for c in changes if c.remove])
    too_big = any(blob is not None and len(blob) > limit for blob in (updatable, removable))
    if too_big and len(changes) > 1:
        half = len(changes) // 2
        yield from _exact(changes[:half], limit)
        yield from _exact(changes[half:], limit)
        return
    yield Payload(updatable, removable, any(change.force for change in changes), len(changes))


def _blob(changes: list[Change]) -> bytes | None:
    if not changes:
        return None
    document: dict[str, Any] = {"SchemaVersion": SCHEMA_VERSION}
    for change in changes:
        _dicom_at(document, change.location)[change.key] = change.value
    return json.dumps(document, separators=(",", ":"), ensure_ascii=False).encode()


def _dicom_at(document: dict[str, Any], location: Location) -> dict[str, Any]:
    if not location:
        holder = document.setdefault("Patient", {})
    else:
        study = document.setdefault("Study", {})
        if location[0] == "study":
            holder = study
        else:
            series = study.setdefault("Series", {}).setdefault(location[1], {})
            holder = (
                series
                if location[0] == "series"
                else series.setdefault("Instances", {}).setdefault(location[2], {})
            )
    dicom: dict[str, Any] = holder.setdefault("DICOM", {})
    return dicom


# ---------------------------------------------------------------------- identifying values
@dataclass(frozen=True)
class Identifiers:
    """The original's identifying text values (``changed``) and the values the profile keeps (``kept``)."""

    changed: frozenset[str]
    kept: frozenset[str]


def identifying_values(document: Mapping[str, Any], profile: Profile) -> Identifiers:
    """The original's text values that the profile changes (casefolded; names also by component).

    Not identifying: what the profile keeps anywhere in the document (a value kept in one attribute is
    by the profile's own judgement not identifying in another), what it only cleans, numbers (numeric
    VRs, and DS/IS or private values that parse as numbers), codes (CS) and private creators.
    """
    changed: set[str] = set()
    kept: set[str] = set()
    vrs = _all_vrs(document)
    for _, dicom, _ in _levels(document, document, {}):
        _collect(dicom, profile, vrs, (changed, kept))
    return Identifiers(frozenset(v for v in changed - kept if v.strip()), frozenset(kept))


def _collect(
    dicom: Mapping[str, Any], profile: Profile, vrs: Mapping[str, str], into: tuple[set[str], set[str]]
) -> None:
    changed, kept = into
    for key, value in dicom.items():
        if key in _MARKERS or key in _GENERATED:
            continue
        tag = _tag_of(key)
        if tag is None:
            continue
        private = bool((tag >> 16) & 1)
        action = _original_action(key, tag, profile, dicom)
        if private and tag & 0xFFFF < 0x1000:
            if action is Action.KEEP and isinstance(value, str):
                kept.add(value.strip().casefold())
            continue  # a private creator names a vendor's dictionary, not a person
        vr = vrs.get(key) or _standard_vr_vm(tag)[0]
        if isinstance(value, list) and value and isinstance(value[0], Mapping):
            for item in value:
                _collect(item, profile, vrs, into)
            continue
        if vr in _BINARY_VRS or vr in _NUMBER_VRS:
            continue
        # Codes (CS) are vocabulary, not identity: never searched for, but kept ones are allowed.
        bucket = kept if action in (Action.KEEP, Action.CLEAN) or vr == "CS" else changed
        for text in value if isinstance(value, list) else [value]:
            if not isinstance(text, str) or not text.strip():
                continue
            folded = text.strip().casefold()
            if (vr in ("DS", "IS") or private) and _NUMBER.fullmatch(folded):
                kept.add(folded)  # numbers identify nobody; kept ones may contain removed digits
                continue
            bucket.add(folded)
            if vr == "PN":
                bucket.update(part for part in re.split(r"[\^=]", folded) if len(part) >= 2)


def _original_action(key: str, tag: int, profile: Profile, siblings: Mapping[str, Any]) -> Action:
    if (tag >> 16) & 1:
        group, element = tag >> 16, tag & 0xFFFF
        creator = siblings.get(f"{group:04X}00{element >> 8:02X}" if element >= 0x1000 else key)
        return profile.private_action(tag, creator if isinstance(creator, str) else None)
    if key in ("PatientName", "PatientID"):
        return Action.DUMMY
    return profile.action(tag)


def remaining_identifiers(
    document: Mapping[str, Any], identifiers: Identifiers, produced: frozenset[str] = frozenset()
) -> list[str]:
    """Where identifying values still appear in ``document`` (any string, at any depth): paths, not values.

    A string equal to a value the profile kept, or to one the plan wrote (``produced``), is not searched
    (``TOSHIBA`` removed from InstitutionName does not make the kept Manufacturer ``TOSHIBA_MEC`` a
    leak, nor does an original name "ANON" make the pseudonym "ANON^7QX…" one).
    """
    ordered = sorted((i for i in identifiers.changed if len(i) >= _MIN_IDENTIFIER), key=len, reverse=True)
    hits: list[str] = []

    def visit(node: Any, path: str) -> None:
        if isinstance(node, Mapping):
            for key, value in node.items():
                visit(value, f"{path}/{key}")
        elif isinstance(node, list):
            for index, value in enumerate(node):
                visit(value, f"{path}[{index}]")
        elif isinstance(node, str):
            folded = node.casefold()
            if folded.strip() in identifiers.kept or folded.strip() in produced:
                return
            for identifier in ordered:
                if _contains(folded, identifier):
                    hits.append(path)
                    return

    visit(document, "")
    return hits

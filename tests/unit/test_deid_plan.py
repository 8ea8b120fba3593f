"""The de-identification planner (ahi_pipeline.deid_plan) against the emulator's UpdateImageSetMetadata rules.

Documents are real image set metadata: DICOM files (pydicom's bundled ones, or synthetic data sets built
with tests.emulator.helpers) imported with the emulator's ``import_instance`` and assembled with
``build_metadata_document``, then de-identified the way the stage does it: plan, send the first payload
(``apply_dicom_updates``, the emulator's pure UpdateImageSetMetadata, which enforces the 10 KB quota,
the force rules, the levels and that a removal names the stored value), re-plan, until the plan is empty.
"""

from __future__ import annotations

import dataclasses
import datetime
import functools
import io
import json
import os
import re
import warnings
from collections.abc import Callable, Iterable, Iterator, Mapping
from typing import Any

import pytest
from pydicom.datadict import dictionary_has_tag, dictionary_VM, dictionary_VR, tag_for_keyword
from pydicom.dataset import Dataset, FileDataset
from pydicom.uid import CTImageStorage

from ahi_pipeline.deid_plan import (
    PAYLOAD_LIMIT,
    Change,
    Payload,
    Phase,
    Plan,
    identifying_values,
    plan,
    remaining_identifiers,
)
from ahi_pipeline.deid_profile import Action, Option, Profile, load_profile, table_rows
from ahi_pipeline.pseudonyms import Pseudonymizer
from emulator.exceptions import ServiceQuotaExceededException, ValidationException
from emulator.imaging import ImportedInstance, ImportFileError, import_instance
from emulator.imaging.image_sets import build_metadata_document
from emulator.metadata_update import MetadataConstraintError, apply_dicom_updates
from tests.emulator.helpers import PRIVATE_CREATOR, SyntheticStudy, lenient_values, p10
from tests.unit.pydicom_files import bundled_files, short_name

pytestmark = pytest.mark.unit

KEY = b"deid-plan-unit-test-key-0123456789"
PSEUDONYMS = Pseudonymizer(KEY)
DATASTORE_ID = "d" * 32
IMAGE_SET_ID = "e" * 32
MAX_STEPS = 60
ABSENT = object()

ALL_BUT_FULL_DATES = ",".join(o.value for o in Option if o is not Option.RETAIN_LONGITUDINAL_FULL_DATES)
CONVERGENCE_OPTIONS = {"none": "", "all-but-full-dates": ALL_BUT_FULL_DATES}
SYNTHETIC_OPTIONS = {
    "none": "",
    "retain-uids": "RetainUIDs",
    "modified-dates": "RetainLongitudinalModifiedDates",
    "full-dates": "RetainLongitudinalFullDates",
    "all-but-full-dates": ALL_BUT_FULL_DATES,
}

# UIDs of the synthetic study (a made-up root; no real data anywhere).
ROOT = "1.2.826.0.1.3680043.10.543"
STUDY_UID = f"{ROOT}.1"
SERIES_UID = f"{ROOT}.2"
SOP_UID = f"{ROOT}.3"
SIBLING_UID = f"{ROOT}.4"
FRAME_OF_REFERENCE_UID = f"{ROOT}.5"
PATIENT_ID = "QZ9001Q"
PATIENT_NAME = "FAM9002Q^GIV9002Q"

Location = tuple[str, ...]
_HEX_KEY = re.compile(r"[0-9A-Fa-f]{8}")


# ---------------------------------------------------------------------- building documents
def _store(codestream: bytes) -> str:
    return "f" * 32


def _imported(source: str | io.BytesIO, name: str) -> ImportedInstance:
    return import_instance(source, name, _store)


def _document(instances: Iterable[ImportedInstance]) -> dict[str, Any]:
    return build_metadata_document(DATASTORE_ID, IMAGE_SET_ID, list(instances))


def _document_of(*datasets: FileDataset) -> dict[str, Any]:
    return _document(_imported(io.BytesIO(p10(ds)), f"{n}.dcm") for n, ds in enumerate(datasets))


def _study(**fields: Any) -> SyntheticStudy:
    values: dict[str, Any] = {
        "patient_name": PATIENT_NAME,
        "patient_id": PATIENT_ID,
        "patient_birth_date": "19500203",
        "accession_number": "QZ9003Q",
        "study_id": "QZ9004Q",
        "study_date": "20010505",
        "study_time": "081500",
        "study_description": "QZ9005Q",
        "study_instance_uid": STUDY_UID,
        "frame_of_reference_uid": FRAME_OF_REFERENCE_UID,
    }
    return SyntheticStudy(**(values | fields))


def _instance(
    study: SyntheticStudy, sop_uid: str = SOP_UID, number: int = 1, **overrides: Any
) -> FileDataset:
    ds = study.instance(series_instance_uid=SERIES_UID, instance_number=number, **overrides)
    ds.SOPInstanceUID = ds.file_meta.MediaStorageSOPInstanceUID = sop_uid
    return ds


def _only_series(document: Mapping[str, Any]) -> tuple[str, dict[str, Any]]:
    ((uid, series),) = document["Study"]["Series"].items()
    return uid, series


def _instances(document: Mapping[str, Any]) -> Iterator[tuple[str, str, dict[str, Any]]]:
    for series_uid, series in document["Study"]["Series"].items():
        for sop_uid, instance in series["Instances"].items():
            yield series_uid, sop_uid, instance


# ---------------------------------------------------------------------- payloads as data
def _frozen(value: Any) -> str:
    return json.dumps(value, sort_keys=True)


def _entries(blob: bytes | None) -> Iterator[tuple[Location, str, Any]]:
    """``(location, key, value)`` of every attribute in a decoded DICOMUpdates blob."""
    if blob is None:
        return
    document = json.loads(blob)
    assert document.pop("SchemaVersion") == 1.1
    assert set(document) <= {"Patient", "Study"}
    for key, value in document.get("Patient", {}).get("DICOM", {}).items():
        yield (), key, value
    study = document.get("Study", {})
    for key, value in study.get("DICOM", {}).items():
        yield ("study",), key, value
    for series_uid, series in study.get("Series", {}).items():
        for key, value in series.get("DICOM", {}).items():
            yield ("series", series_uid), key, value
        for sop_uid, instance in series.get("Instances", {}).items():
            for key, value in instance.get("DICOM", {}).items():
                yield ("instance", series_uid, sop_uid), key, value


def _payload_changes(payload: Payload) -> set[tuple[Location, str, bool, str]]:
    updated = {(loc, key, False, _frozen(value)) for loc, key, value in _entries(payload.updatable)}
    removed = {(loc, key, True, _frozen(value)) for loc, key, value in _entries(payload.removable)}
    return updated | removed


def _change_key(change: Change) -> tuple[Location, str, bool, str]:
    return change.location, change.key, change.remove, _frozen(change.value)


def _phase_of(payload: Payload, current: Plan) -> Phase:
    phases = {change.phase for change in current.changes}
    by_key = {_change_key(change): change.phase for change in current.changes}
    found = {by_key[entry] for entry in _payload_changes(payload)}
    # The marker rides in the last payload, with that payload's own changes.
    if len(found) > 1:
        found.discard(Phase.MARKER)
    assert len(found) == 1, f"a payload mixes phases {found} (plan phases {phases})"
    return found.pop()


def _blob_sizes(payload: Payload) -> list[int]:
    return [len(blob) for blob in (payload.updatable, payload.removable) if blob is not None]


# ---------------------------------------------------------------------- the stage's loop
@dataclasses.dataclass
class Run:
    final: dict[str, Any]
    applied: list[tuple[Payload, Phase]]
    produced: frozenset[str]
    plans: int


def converge(
    latest: Mapping[str, Any],
    original: Mapping[str, Any],
    profile: Profile,
    *,
    pseudonyms: Pseudonymizer = PSEUDONYMS,
    label: str = "",
) -> Run:
    """Plan, apply the first payload, re-plan, until the plan is empty; every payload must be accepted."""
    document = dict(latest)
    applied: list[tuple[Payload, Phase]] = []
    produced: frozenset[str] = frozenset()
    for step in range(MAX_STEPS):
        current = plan(document, original, profile, pseudonyms)
        produced |= current.produced()
        if current.done:
            return Run(document, applied, produced, step + 1)
        payload = current.payloads()[0]
        sizes = _blob_sizes(payload)
        assert sizes, f"{label}: step {step}: an empty payload"
        assert max(sizes) <= PAYLOAD_LIMIT, f"{label}: step {step}: a blob of {max(sizes)} bytes"
        phase = _phase_of(payload, current)
        try:
            document = apply_dicom_updates(
                document, updatable=payload.updatable, removable=payload.removable, force=payload.force
            )
        except (ValidationException, ServiceQuotaExceededException) as error:  # with the file and step
            pytest.fail(f"{label}: step {step}: the emulator refused a {phase.name} payload: {error!r}")
        applied.append((payload, phase))
    pytest.fail(f"{label}: no convergence after {MAX_STEPS} payloads")


def _check_converged(run: Run, original: Mapping[str, Any], profile: Profile, label: str) -> None:
    patient = run.final["Patient"]["DICOM"]
    assert patient.get("PatientIdentityRemoved") == "YES", label
    assert patient.get("DeidentificationMethod") == profile.method, label
    again = plan(run.final, original, profile, PSEUDONYMS)
    assert again.changes == [], label
    assert again.payloads() == [], label
    phases = [phase for _, phase in run.applied]
    assert phases == sorted(phases), f"{label}: payload phases out of order: {phases}"
    # The marker rides in the last payload of a plan, once; after it, at most the removal of values
    # emptied first because they were too large to quote (null holds nothing)
    marked = [b'"DeidentificationMethod"' in (payload.updatable or b"") for payload, _ in run.applied]
    assert marked.count(True) == 1, label
    for payload, _ in run.applied[marked.index(True) + 1 :]:
        assert payload.updatable is None, label
        assert all(value is None for _, _, value in _entries(payload.removable)), label


# ---------------------------------------------------------------------- pydicom's bundled files
MAX_BUNDLED = 40

# Files whose plan holds a removal larger than 10 KB: emptied first, then removed (see
# test_a_value_larger_than_a_payload_is_still_removed); they are always among the convergence subjects.
OVERSIZED = {
    "test_files/examples_ybr_color.dcm",  # (0019,1050) private UT of 28 KB
    "data/color3d_jpeg_baseline.dcm",  # the same private UT
    "test_files/examples_overlay.dcm",  # (6000,3000) OverlayData of 24 KB
    "data/MR-SIEMENS-DICOM-WithOverlays.dcm",  # (6000,3000) OverlayData of 39 KB
}
# Files where a removed number is a run of digits inside a kept one (see
# test_numbers_holding_a_short_identifier_are_not_reported_as_identifiers): always checked.
VERIFICATION_FALSE_POSITIVES = {
    "data/MR2_J2KI.dcm",  # DeviceSerialNumber "00000" found inside SliceThickness "6.000000"
    "data/MR2_J2KR.dcm",
    "data/MR2_UNCI.dcm",
    "data/MR2_UNCR.dcm",
}


@functools.cache
def bundled_documents() -> tuple[tuple[str, dict[str, Any]], ...]:
    """Up to 40 metadata documents of pydicom's bundled files, one per SOP instance, smallest files first.

    ``bundled_files()`` is ``get_testdata_files("*")`` without its offline download attempts (see
    tests/unit/pydicom_files.py); the files ``import_instance`` rejects are left out, and of the files
    that only differ by transfer syntax (same SOP Instance UID, same metadata) the smallest is taken.
    """
    documents: list[tuple[str, dict[str, Any]]] = []
    seen: set[str] = set()
    special = OVERSIZED | VERIFICATION_FALSE_POSITIVES
    paths = sorted(
        bundled_files(), key=lambda path: (short_name(path) not in special, os.path.getsize(path), path)
    )
    for path in paths:
        name = short_name(path)
        try:
            with warnings.catch_warnings():
                warnings.simplefilter("ignore")
                instance = _imported(path, name)
        except ImportFileError:
            continue
        if instance.sop_instance_uid in seen:
            continue
        seen.add(instance.sop_instance_uid)
        documents.append((name, _document([instance])))
        if len(documents) == MAX_BUNDLED:
            break
    return tuple(documents)


@pytest.mark.parametrize("options", CONVERGENCE_OPTIONS.values(), ids=CONVERGENCE_OPTIONS.keys())
def test_bundled_files_converge_under_the_emulators_rules(options: str) -> None:
    # Given the metadata of pydicom's bundled files and a profile
    documents = bundled_documents()
    assert len(documents) == MAX_BUNDLED
    profile = load_profile(options)

    for name, original in documents:
        # When de-identifying each, one payload at a time
        run = converge(original, original, profile, label=name)

        # Then every payload was accepted (converge checks it), within the quota, in phase order, and the
        # result is marked, needs nothing more and holds none of the original's identifying values
        assert len(run.applied) <= 20, name
        _check_converged(run, original, profile, name)
        identifiers = identifying_values(original, profile)
        assert remaining_identifiers(run.final, identifiers, run.produced) == [], name


def test_the_known_problem_files_are_among_the_bundled_ones() -> None:
    # Given the files this module sets apart
    names = {short_name(path) for path in bundled_files()}

    # When / Then: none is listed by mistake
    assert names >= OVERSIZED | VERIFICATION_FALSE_POSITIVES


# ---------------------------------------------------------------------- a synthetic document with everything
class Values:
    """Distinct values, one per call, valid for their VR; none is a substring of another."""

    def __init__(self) -> None:
        self.count = 0
        self.texts: list[str] = []

    def of(self, vr: str) -> Any:
        self.count += 1
        n = self.count
        day = (datetime.date(2001, 1, 1) + datetime.timedelta(days=n)).strftime("%Y%m%d")
        value: Any
        if vr in ("LO", "SH", "LT", "ST", "UT", "UC", "AE", "CS"):
            value = f"QZ{n:04d}Q"
        elif vr == "PN":
            value = f"FAM{n:04d}Q^GIV{n:04d}Q"
        elif vr == "UR":
            value = f"http://qz{n:04d}q.invalid"
        elif vr == "DA":
            value = day
        elif vr == "DT":
            value = day + "101112"
        elif vr == "TM":
            value = f"{n // 3600 % 24:02d}{n // 60 % 60:02d}{n % 60:02d}"
        elif vr == "UI":
            value = f"{ROOT}.100.{n}"
        elif vr == "AS":
            value = f"{n % 1000:03d}Y"
        elif vr == "DS":
            value = f"{n}.5"
        elif vr == "IS":
            value = str(n)
        elif vr == "US":
            return n
        else:
            raise KeyError(vr)
        self.texts.append(value)
        return value


# Set by SyntheticStudy (with the distinct values of _study) or by _instance.
_SET_BY_BUILDER = frozenset(
    tag_for_keyword(keyword) or 0
    for keyword in (
        "PatientName",
        "PatientID",
        "PatientBirthDate",
        "PatientSex",
        "StudyInstanceUID",
        "SeriesInstanceUID",
        "SOPInstanceUID",
        "StudyID",
        "StudyDate",
        "StudyTime",
        "StudyDescription",
        "AccessionNumber",
        "FrameOfReferenceUID",
        "SeriesDescription",
    )
)
_HAND_MADE_SEQUENCES = frozenset({0x00081140, 0x00101002})  # ReferencedImageSequence, OtherPatientIDsSequence
NESTED_CREATOR = "QZ NESTED CREATOR"
SYNTHETIC_CREATOR = "QZ PRIVATE CREATOR"


def _generic_item(values: Values) -> Dataset:
    item = Dataset()
    item.ReferencedSOPInstanceUID = values.of("UI")
    item.PersonName = values.of("PN")
    return item


def synthetic_datasets() -> tuple[FileDataset, FileDataset, Values]:
    """Two instances of one series; the first holds a distinct value in every attribute of Table E.1-1.

    Every row with a concrete tag is given a value at the level the service keeps it at (command and
    file meta groups and bulk data aside): a list of two values where the VM allows several, one item
    with a nested UID and a nested person name in each sequence, 8-hex keys for the tags pydicom's
    dictionary does not know yet.  Besides: (0008,1140) ReferencedImageSequence pointing at the second
    instance, (0010,1002) OtherPatientIDsSequence, a kept (0008,2218) AnatomicRegionSequence with a
    nested PatientName, PersonName, UID and private element, an overlay comment (6000,4000), and a
    private block with its creator.
    """
    values = Values()
    study = _study()
    first = _instance(study)
    sibling = _instance(study, SIBLING_UID, 2, ImageComments="QZ9006Q")
    with lenient_values():
        for row in table_rows():
            text = row["tag"]
            digits = text[1:5] + text[6:10]
            if len(text) != 11 or "X" in digits:
                continue
            tag = int(digits, 16)
            if tag >> 16 in (0x0000, 0x0002) or tag in _SET_BY_BUILDER or tag in _HAND_MADE_SEQUENCES:
                continue
            known = dictionary_has_tag(tag)
            vr = dictionary_VR(tag) if known else "LO"
            vm = dictionary_VM(tag) if known else "1"
            if vr == "SQ":
                first.add_new(tag, vr, [_generic_item(values)])
                continue
            if vr in ("OB", "OW", "UN"):
                continue  # bulk data: not text the planner could leak
            several = vm != "1" and vr != "UI"  # the importer reads a multi-valued UID as one invalid UID
            first.add_new(tag, vr, [values.of(vr), values.of(vr)] if several else values.of(vr))
        reference = Dataset()
        reference.ReferencedSOPInstanceUID = SIBLING_UID
        first.ReferencedImageSequence = [reference]
        other = Dataset()
        other.PatientID = values.of("LO")
        other.IssuerOfPatientID = values.of("LO")
        other.TypeOfPatientID = "TEXT"
        first.OtherPatientIDsSequence = [other]
        region = Dataset()
        region.CodeValue = "T-D3000"
        region.CodingSchemeDesignator = "SRT"
        region.CodeMeaning = "Chest"
        region.PatientName = values.of("PN")
        region.PersonName = values.of("PN")
        region.ReferencedSOPInstanceUID = values.of("UI")
        region.private_block(0x0011, NESTED_CREATOR, create=True).add_new(0x01, "LO", values.of("LO"))
        first.AnatomicRegionSequence = [region]
        first.add_new(0x60004000, "LT", values.of("LT"))
        first.private_block(0x0011, SYNTHETIC_CREATOR, create=True).add_new(0x01, "LO", values.of("LO"))
    return first, sibling, values


@functools.cache
def synthetic_document() -> dict[str, Any]:
    first, sibling, _ = synthetic_datasets()
    return _document_of(first, sibling)


@functools.cache
def synthetic_texts() -> tuple[str, ...]:
    _, _, values = synthetic_datasets()
    fixed = (PATIENT_ID, PATIENT_NAME, "19500203", "QZ9003Q", "QZ9004Q", "20010505", "081500", "QZ9005Q")
    return tuple(values.texts) + fixed


def _tag(key: str) -> int:
    if _HEX_KEY.fullmatch(key):
        return int(key, 16)
    tag = tag_for_keyword(key)
    assert tag is not None, key
    return int(tag)


def _each(value: Any, function: Callable[[str], str]) -> Any:
    if isinstance(value, list):
        return [None if item is None else function(item) for item in value]
    return function(value)


@dataclasses.dataclass(frozen=True)
class Expectation:
    """What the Basic Profile and its options leave of an attribute (PS3.15 E.1.1, the planner's docs)."""

    profile: Profile
    vrs: Mapping[str, str]

    @property
    def offset(self) -> int:
        return PSEUDONYMS.date_offset_days(PATIENT_ID)

    def of(self, key: str, value: Any) -> Any:
        """The final value of an attribute whose original value is ``value`` (ABSENT: removed)."""
        tag = _tag(key)
        if tag >> 16 & 1:
            return ABSENT  # private: no safe list here
        vr = self.vrs.get(key) or (dictionary_VR(tag) if dictionary_has_tag(tag) else "UN")
        if key in ("PatientName", "PatientID"):
            pseudonym = PSEUDONYMS.patient_name if key == "PatientName" else PSEUDONYMS.patient_id
            return None if value is None else _each(value, pseudonym)
        action = self.profile.action(tag)
        if vr == "SQ":
            return self.sequence(action, value)
        if action is Action.REMOVE:
            return ABSENT
        if value is None or action is Action.ZERO:
            return None
        if action is Action.UID or (action is Action.DUMMY and vr == "UI"):
            return _each(value, PSEUDONYMS.uid)
        if action is Action.DUMMY:
            dummy = PSEUDONYMS.dummy(vr)
            return ABSENT if dummy is None else dummy
        if action is Action.CLEAN and vr in ("LT", "ST", "UT"):
            return PSEUDONYMS.dummy(vr)  # narrative text is replaced: cleaning prose needs a reader
        if action is Action.CLEAN and self.profile.modified_dates and vr == "DA":
            return _each(value, lambda text: PSEUDONYMS.shift_date(text, self.offset))
        if action is Action.CLEAN and self.profile.modified_dates and vr == "DT":
            return _each(value, lambda text: PSEUDONYMS.shift_datetime(text, self.offset))
        # KEEP; CLEAN of a time, of a date with Full Dates, of short text holding no identifying value
        return value

    def sequence(self, action: Action, items: Any) -> Any:
        if action is Action.REMOVE:
            return ABSENT
        if action in (Action.ZERO, Action.DUMMY) or items is None:
            return None
        cleaned = []
        for item in items:
            kept = {key: self.of(key, value) for key, value in item.items()}
            cleaned.append({key: value for key, value in kept.items() if value is not ABSENT})
        return cleaned

    def level(self, original: Mapping[str, Any], final: Mapping[str, Any]) -> list[str]:
        """The attributes of one level whose final value is not the expected one."""
        wrong = []
        for key, value in original.items():
            if key in ("PixelData", "PatientIdentityRemoved", "DeidentificationMethod"):
                continue
            expected = self.of(key, value)
            if final.get(key, ABSENT) != expected:
                wrong.append(key)
        return wrong


def _levels(document: Mapping[str, Any], series_uid: str, sop_uid: str) -> list[dict[str, Any]]:
    series = document["Study"]["Series"][series_uid]
    return [
        document["Patient"]["DICOM"],
        document["Study"]["DICOM"],
        series["DICOM"],
        series["Instances"][sop_uid]["DICOM"],
    ]


def _private_keys(node: Any) -> list[str]:
    found: list[str] = []
    if isinstance(node, Mapping):
        for key, value in node.items():
            if _HEX_KEY.fullmatch(key) and int(key[:4], 16) & 1:
                found.append(key)
            found += _private_keys(value)
    elif isinstance(node, list):
        for item in node:
            found += _private_keys(item)
    return found


@pytest.mark.parametrize("options", SYNTHETIC_OPTIONS.values(), ids=SYNTHETIC_OPTIONS.keys())
def test_a_synthetic_document_with_every_profile_attribute_converges(options: str) -> None:
    # Given an image set whose first instance has a distinct value in every attribute of the table
    original = synthetic_document()
    profile = load_profile(options)
    instance = original["Study"]["Series"][SERIES_UID]["Instances"][SOP_UID]
    instance_vrs = instance["DICOMVRs"]
    assert isinstance(instance["DICOM"]["OtherPatientIDs"], list)
    assert isinstance(original["Patient"]["DICOM"]["OtherPatientIDsSequence"], list)
    assert {"00110010", "00111001", "0040A034", "60004000"} <= set(instance["DICOM"])
    assert {"StudyDate", "StudyTime", "AcquisitionDateTime"} <= set(original["Study"]["DICOM"]) | set(
        instance["DICOM"]
    )

    # When de-identifying it
    run = converge(original, original, profile, label=options)

    # Then it converges, every payload within the quota and accepted
    _check_converged(run, original, profile, options)
    assert remaining_identifiers(run.final, identifying_values(original, profile), run.produced) == []

    # UIDs: replaced by their keyed pseudonym, series and instances re-keyed, unless Retain UIDs
    retain_uids = Option.RETAIN_UIDS in profile.options
    new = (lambda uid: uid) if retain_uids else PSEUDONYMS.uid
    series_uid, series = _only_series(run.final)
    assert series_uid == new(SERIES_UID)
    assert set(series["Instances"]) == {new(SOP_UID), new(SIBLING_UID)}
    assert run.final["Study"]["DICOM"]["StudyInstanceUID"] == new(STUDY_UID)
    assert series["DICOM"]["SeriesInstanceUID"] == new(SERIES_UID)
    first = series["Instances"][new(SOP_UID)]["DICOM"]
    assert first["SOPInstanceUID"] == new(SOP_UID)
    assert first["MediaStorageSOPInstanceUID"] == new(SOP_UID)
    assert series["DICOM"]["FrameOfReferenceUID"] == new(FRAME_OF_REFERENCE_UID)
    # the reference to the sibling still resolves
    assert first["ReferencedImageSequence"] == [{"ReferencedSOPInstanceUID": new(SIBLING_UID)}]

    # every attribute at every level is what the profile says, sequences cleaned inside
    expectation = Expectation(profile, instance_vrs)
    before = _levels(original, SERIES_UID, SOP_UID)
    after = _levels(run.final, new(SERIES_UID), new(SOP_UID))
    for then, now in zip(before, after, strict=True):
        assert expectation.level(then, now) == []

    # the patient: keyed pseudonyms, whatever the options
    patient = run.final["Patient"]["DICOM"]
    assert patient["PatientName"] == PSEUDONYMS.patient_name(PATIENT_NAME)
    assert patient["PatientID"] == PSEUDONYMS.patient_id(PATIENT_ID)
    assert "OtherPatientIDsSequence" not in patient

    # a kept sequence is cleaned inside: nested name pseudonymized or dummied, UID replaced, private gone
    (region,) = first["AnatomicRegionSequence"]
    (region_then,) = original["Study"]["Series"][SERIES_UID]["Instances"][SOP_UID]["DICOM"][
        "AnatomicRegionSequence"
    ]
    assert region == {
        "CodeValue": "T-D3000",
        "CodingSchemeDesignator": "SRT",
        "CodeMeaning": "Chest",
        "PatientName": PSEUDONYMS.patient_name(region_then["PatientName"]),
        "PersonName": "ANONYMOUS",
        "ReferencedSOPInstanceUID": new(region_then["ReferencedSOPInstanceUID"]),
    }

    # no private attribute is left, at any depth
    assert _private_keys(original) != []
    assert _private_keys(run.final) == []


def test_no_original_value_is_left_anywhere_under_the_basic_profile() -> None:
    # Given the synthetic image set and every distinct value it was built with
    original = synthetic_document()
    texts = synthetic_texts()
    text_before = json.dumps(original)
    assert all(json.dumps(text) in text_before for text in texts)

    # When de-identifying it with the Basic Profile alone
    run = converge(original, original, load_profile(), label="basic")

    # Then none of them appears in the final document: tokens not even inside other text, dates, times,
    # numbers and UIDs not as a value
    final = json.dumps(run.final)
    left = [
        text
        for text in texts
        if json.dumps(text) in final or (text[:2].isalpha() and text.casefold() in final.casefold())
    ]
    assert left == []


def test_dates_are_shifted_by_the_patients_offset_with_modified_dates() -> None:
    # Given the synthetic image set
    original = synthetic_document()
    offset = PSEUDONYMS.date_offset_days(PATIENT_ID)
    assert -3650 <= offset <= -1
    then = original["Study"]["Series"][SERIES_UID]["Instances"][SOP_UID]["DICOM"]

    # When de-identifying it with Modified Dates, and with Full Dates
    modified = converge(original, original, load_profile("RetainLongitudinalModifiedDates")).final
    full = converge(original, original, load_profile("RetainLongitudinalFullDates")).final

    # Then dates move by the offset (times stay), or stay as they were
    moved = modified["Study"]["Series"][PSEUDONYMS.uid(SERIES_UID)]["Instances"][PSEUDONYMS.uid(SOP_UID)][
        "DICOM"
    ]
    kept = full["Study"]["Series"][PSEUDONYMS.uid(SERIES_UID)]["Instances"][PSEUDONYMS.uid(SOP_UID)]["DICOM"]
    assert modified["Study"]["DICOM"]["StudyDate"] == PSEUDONYMS.shift_date("20010505", offset)
    assert modified["Study"]["DICOM"]["StudyTime"] == "081500"
    assert modified["Patient"]["DICOM"]["PatientBirthDate"] is None  # Z: no option keeps a birth date
    assert moved["AcquisitionDateTime"] == PSEUDONYMS.shift_datetime(then["AcquisitionDateTime"], offset)
    assert moved["ContentDate"] == PSEUDONYMS.shift_date(then["ContentDate"], offset)
    assert moved["ContentDate"] != then["ContentDate"]
    assert full["Study"]["DICOM"]["StudyDate"] == "20010505"
    assert full["Patient"]["DICOM"]["PatientBirthDate"] is None
    assert kept["AcquisitionDateTime"] == then["AcquisitionDateTime"]
    assert kept["ContentDate"] == then["ContentDate"]


# ---------------------------------------------------------------------- force
def test_force_is_asked_for_exactly_where_the_service_requires_it() -> None:
    # Given the synthetic image set and the first plan of its de-identification
    original = synthetic_document()
    current = plan(original, original, load_profile(), PSEUDONYMS)

    # When sending each change on its own without force
    wrong = []
    for change in current.changes:
        (single,) = Plan(changes=[change]).payloads(limit=10**7)
        try:
            apply_dicom_updates(
                original,
                updatable=single.updatable,
                removable=single.removable,
                force=False,
                max_payload_bytes=10**7,
            )
            needed = False
        except MetadataConstraintError:
            needed = True
        if change.force is not needed and change.phase is not Phase.MARKER:
            wrong.append((change.location[:1], change.key, change.remove, change.force))

    # Then the plan asked for force exactly for the changes the emulator refuses without it (the two
    # marker attributes share one forced call: DeidentificationMethod is multi-valued)
    assert wrong == []
    marker = [change for change in current.changes if change.phase is Phase.MARKER]
    assert [change.force for change in marker] == [True, True]


@pytest.mark.parametrize(
    ("location", "key", "force"),
    [
        ((), "PatientName", False),
        ((), "PatientID", False),
        (("study",), "StudyDescription", False),
        (("study",), "StudyDate", False),
        (("series",), "InstitutionName", False),
        (("series",), "FrameOfReferenceUID", False),
        (("instance",), "ContentDate", False),
        (("instance",), "MediaStorageSOPInstanceUID", False),
        (("study",), "StudyInstanceUID", True),
        (("study",), "StudyID", True),
        (("series",), "SeriesInstanceUID", True),
        (("instance",), "SOPInstanceUID", True),
        (("instance",), "OtherPatientIDs", True),  # a JSON array, VM 1-n
        ((), "OtherPatientIDsSequence", True),
        (("instance",), "ReferencedImageSequence", True),
        (("instance",), "00110010", True),  # private creator
        (("instance",), "00111001", True),  # private data element
        (("instance",), "0040A034", True),  # a tag of the 2025b table pydicom's dictionary lacks
    ],
)
def test_force_of_single_changes(location: Location, key: str, force: bool) -> None:
    # Given the first plan of the synthetic image set
    original = synthetic_document()
    current = plan(original, original, load_profile(), PSEUDONYMS)

    # When looking at the change of one attribute
    (change,) = [
        c
        for c in current.changes
        if c.key == key and c.location[:1] == location and SIBLING_UID not in c.location
    ]

    # Then it asks for force only when the attribute needs it
    assert change.force is force


def test_payloads_without_forced_changes_are_sent_without_force() -> None:
    # Given the first plan of the synthetic image set
    original = synthetic_document()
    current = plan(original, original, load_profile(), PSEUDONYMS)
    forced = {_change_key(change): change.force for change in current.changes}

    # When packing it
    payloads = current.payloads()

    # Then each payload's force is that of its changes, and some payloads need none
    for payload in payloads:
        assert {forced[entry] for entry in _payload_changes(payload)} == {payload.force}
    assert {payload.force for payload in payloads} == {False, True}


# ---------------------------------------------------------------------- payload size and order
def _many_instances(count: int) -> tuple[dict[str, Any], list[str]]:
    """One synthetic instance cloned ``count`` times with distinct SOP Instance UIDs and values."""
    template = _imported(io.BytesIO(p10(_instance(_study()))), "template.dcm")
    clones = []
    uids = []
    for n in range(count):
        uid = f"{ROOT}.7.{n}"
        uids.append(uid)
        dicom = template.instance | {
            "SOPInstanceUID": uid,
            "MediaStorageSOPInstanceUID": uid,
            "InstanceNumber": str(n + 1),
            "ImageComments": f"COMMENT QZ{n:05d}Q",
            "ContentDate": "20010505",
            "AcquisitionDateTime": f"20010505{n % 24:02d}3000",
            "InstanceCreatorUID": f"{ROOT}.8.{n}",
        }
        clones.append(dataclasses.replace(template, sop_instance_uid=uid, instance=dicom))
    return _document(clones), uids


@functools.cache
def three_hundred_instances() -> tuple[dict[str, Any], tuple[str, ...]]:
    document, uids = _many_instances(300)
    return document, tuple(uids)


def test_a_large_image_set_is_split_into_payloads_within_the_quota() -> None:
    # Given 300 instances with identifying instance-level attributes
    document, _ = three_hundred_instances()
    current = plan(document, document, load_profile(), PSEUDONYMS)

    # When packing the plan
    payloads = current.payloads()

    # Then there are several payloads, each blob within 10 KB, their phases in order, and together they
    # hold exactly the plan's changes, each once
    assert len(payloads) > 3
    for payload in payloads:
        assert max(_blob_sizes(payload)) <= PAYLOAD_LIMIT
    phases = [_phase_of(payload, current) for payload in payloads]
    assert phases == sorted(phases)
    assert set(phases) == {Phase.ATTRIBUTES, Phase.RENAME_INSTANCES, Phase.RENAME_SERIES}
    union: list[tuple[Location, str, bool, str]] = []
    for payload in payloads:
        union += _payload_changes(payload)
    assert sorted(union) == sorted(_change_key(change) for change in current.changes)
    assert sum(payload.changes for payload in payloads) == len(current.changes)


def test_a_large_image_set_converges_phase_by_phase() -> None:
    # Given 300 instances
    document, uids = three_hundred_instances()
    profile = load_profile()

    # When de-identifying them one payload at a time
    run = converge(document, document, profile, label="300 instances")

    # Then attributes come first, then instance renames, then the series rename, then the marker
    _check_converged(run, document, profile, "300 instances")
    phases = [phase for _, phase in run.applied]
    assert phases.index(Phase.RENAME_INSTANCES) > phases.index(Phase.ATTRIBUTES)
    assert phases.count(Phase.RENAME_SERIES) == 1
    _, series = _only_series(run.final)
    assert set(series["Instances"]) == {PSEUDONYMS.uid(uid) for uid in uids}
    assert remaining_identifiers(run.final, identifying_values(document, profile), run.produced) == []


def test_a_tiny_limit_gives_one_change_per_blob_at_most() -> None:
    # Given 300 instances and a limit that only a single change fits in
    document, _ = three_hundred_instances()
    current = plan(document, document, load_profile(), PSEUDONYMS)
    limit = 300
    singles = [Plan(changes=[change]).payloads(limit=10**7)[0] for change in current.changes]
    assert all(max(_blob_sizes(single)) <= limit for single in singles)

    # When packing with that limit
    payloads = current.payloads(limit=limit)

    # Then every blob is within it, and nothing is lost
    assert all(max(_blob_sizes(payload)) <= limit for payload in payloads)
    union = sorted(entry for payload in payloads for entry in _payload_changes(payload))
    assert union == sorted(_change_key(change) for change in current.changes)
    assert len(payloads) > len(current.payloads())
    phases = [_phase_of(payload, current) for payload in payloads]
    assert phases == sorted(phases)


def test_payloads_of_a_tiny_limit_are_accepted_one_after_the_other() -> None:
    # Given 10 instances and the payloads of one plan packed for a 300-byte quota
    document, _ = _many_instances(10)
    profile = load_profile()
    payloads = plan(document, document, profile, PSEUDONYMS).payloads(limit=300)
    assert len(payloads) > 10

    # When sending them all, in order, to a service with that quota
    latest = document
    for payload in payloads:
        latest = apply_dicom_updates(
            latest,
            updatable=payload.updatable,
            removable=payload.removable,
            force=payload.force,
            max_payload_bytes=300,
        )

    # Then each is accepted, the marker with the last one, and nothing is left to do
    left = plan(latest, document, profile, PSEUDONYMS)
    assert left.done


# ---------------------------------------------------------------------- interference
def test_a_concurrent_update_is_handled_and_uids_are_not_hashed_twice() -> None:
    # Given 300 instances, de-identified up to half of the SOP instance renames
    original, uids = three_hundred_instances()
    profile = load_profile()
    current = plan(original, original, profile, PSEUDONYMS)
    payloads = current.payloads()
    renames = [p for p in payloads if _phase_of(p, current) is Phase.RENAME_INSTANCES]
    assert renames
    cut = payloads.index(renames[len(renames) // 2])
    latest: dict[str, Any] = dict(original)
    for payload in payloads[:cut]:
        latest = apply_dicom_updates(
            latest, updatable=payload.updatable, removable=payload.removable, force=payload.force
        )
    renamed = {sop for _, sop, _ in _instances(latest)} - set(uids)
    assert 0 < len(renamed) < len(uids)

    # When someone else writes an identifying StudyDescription meanwhile, and the stage re-plans
    outside = {"SchemaVersion": 1.1, "Study": {"DICOM": {"StudyDescription": "QZEXTERNALQ DOE^JOHN"}}}
    latest = apply_dicom_updates(latest, updatable=json.dumps(outside).encode(), removable=None, force=False)
    again = plan(latest, original, profile, PSEUDONYMS)

    # Then the new value is planned away too, and the run converges with no identifier left and every
    # UID hashed once from its original
    assert any(change.key == "StudyDescription" for change in again.changes)
    run = converge(latest, original, profile, label="interfered")
    _check_converged(run, original, profile, "interfered")
    assert "QZEXTERNALQ" not in json.dumps(run.final)
    assert remaining_identifiers(run.final, identifying_values(original, profile), run.produced) == []
    series_uid, series = _only_series(run.final)
    assert series_uid == PSEUDONYMS.uid(_only_series(original)[0])
    assert run.final["Study"]["DICOM"]["StudyInstanceUID"] == PSEUDONYMS.uid(STUDY_UID)
    for uid in uids:
        instance = series["Instances"][PSEUDONYMS.uid(uid)]["DICOM"]
        assert instance["SOPInstanceUID"] == PSEUDONYMS.uid(uid)
        assert instance["MediaStorageSOPInstanceUID"] == PSEUDONYMS.uid(uid)


def test_re_planning_after_every_payload_is_idempotent() -> None:
    # Given the synthetic image set, part-way through its de-identification
    original = synthetic_document()
    profile = load_profile(ALL_BUT_FULL_DATES)
    first = plan(original, original, profile, PSEUDONYMS)
    payload = first.payloads()[0]
    latest = apply_dicom_updates(
        original, updatable=payload.updatable, removable=payload.removable, force=payload.force
    )

    # When planning twice from the same state
    before = json.dumps([latest, original])
    once = plan(latest, original, profile, PSEUDONYMS)
    twice = plan(latest, original, profile, PSEUDONYMS)

    # Then neither document changed, the plans are the same, and hold only what the first payload did not do
    assert json.dumps([latest, original]) == before
    assert once.changes == twice.changes
    done = _payload_changes(payload)
    assert not done & {_change_key(change) for change in once.changes}
    assert len(once.changes) == len(first.changes) - payload.changes


# ---------------------------------------------------------------------- blockers
@pytest.mark.parametrize(("burned_in", "blocked"), [("YES", True), ("NO", False), (None, False)])
def test_burned_in_annotation_blocks_de_identification(burned_in: str | None, blocked: bool) -> None:
    # Given an image set with one instance that says whether its pixels carry identity
    study = _study()
    overrides = {} if burned_in is None else {"BurnedInAnnotation": burned_in}
    document = _document_of(_instance(study, **overrides), _instance(study, SIBLING_UID, 2))

    # When planning
    current = plan(document, document, load_profile(), PSEUDONYMS)

    # Then YES is a blocker that names the attribute
    assert bool(current.blockers) is blocked
    if blocked:
        assert "(0028,0301)" in current.blockers[0]
        assert "1 instance" in current.blockers[0]


# ---------------------------------------------------------------------- determinism
def test_the_same_inputs_and_key_give_the_same_payloads() -> None:
    # Given the synthetic image set
    original = synthetic_document()
    profile = load_profile("RetainLongitudinalModifiedDates,CleanDescriptors")

    # When planning twice, with two pseudonymizers of the same key
    first = plan(original, original, profile, Pseudonymizer(KEY)).payloads()
    second = plan(original, original, profile, Pseudonymizer(bytes(KEY))).payloads()

    # Then the payloads are byte for byte the same
    assert [(p.updatable, p.removable, p.force) for p in first] == [
        (p.updatable, p.removable, p.force) for p in second
    ]


def test_another_key_gives_other_pseudonyms() -> None:
    # Given the synthetic image set and two keys
    original = synthetic_document()
    profile = load_profile("RetainLongitudinalModifiedDates")
    other = Pseudonymizer(b"another-deid-plan-unit-test-key-42")

    # When planning with each
    mine = {(c.location[:1], c.key): c.value for c in plan(original, original, profile, PSEUDONYMS).changes}
    theirs = {(c.location[:1], c.key): c.value for c in plan(original, original, profile, other).changes}

    # Then names, IDs, UIDs and shifted dates differ
    for key in [((), "PatientName"), ((), "PatientID"), (("study",), "StudyInstanceUID")]:
        assert mine[key] != theirs[key], key
    assert mine[((), "PatientName")] == PSEUDONYMS.patient_name(PATIENT_NAME)
    assert theirs[((), "PatientName")] == other.patient_name(PATIENT_NAME)
    assert PSEUDONYMS.date_offset_days(PATIENT_ID) != other.date_offset_days(PATIENT_ID)
    assert mine[(("study",), "StudyDate")] != theirs[(("study",), "StudyDate")]


# ---------------------------------------------------------------------- speed sanity
def test_a_2000_instance_image_set_is_planned() -> None:
    # Given 2,000 instances
    document, uids = _many_instances(2000)

    # When planning and packing
    current = plan(document, document, load_profile(ALL_BUT_FULL_DATES), PSEUDONYMS)
    payloads = current.payloads()

    # Then it completes, with a change per instance at least, within the quota
    assert len(current.changes) >= len(uids)
    assert all(max(_blob_sizes(payload)) <= PAYLOAD_LIMIT for payload in payloads)


# ---------------------------------------------------------------------- known bugs
def test_a_value_larger_than_a_payload_is_still_removed() -> None:
    # Given an instance with a 20 KB private text (bundled files have such values: examples_overlay.dcm's
    # (6000,3000) OverlayData, examples_ybr_color.dcm's (0019,1050) UT)
    ds = _instance(_study())
    ds.private_block(0x0011, SYNTHETIC_CREATOR, create=True).add_new(0x02, "UT", "QZ LONG TEXT " * 1600)
    document = _document_of(ds)

    # When planning
    payloads = plan(document, document, load_profile(), PSEUDONYMS).payloads()

    # Then every blob is within the quota (e.g. the value emptied first, then removed), and it converges
    assert all(max(_blob_sizes(payload)) <= PAYLOAD_LIMIT for payload in payloads)
    converge(document, document, load_profile(), label="20 KB private")


@pytest.mark.parametrize(
    ("options", "key", "value", "expected"),
    [
        ("", "IrradiationEventUID", f"{ROOT}.9.1", PSEUDONYMS.uid(f"{ROOT}.9.1")),
        (
            "RetainLongitudinalModifiedDates",
            "AcquisitionDateTime",
            "20200101120000",
            PSEUDONYMS.shift_datetime("20200101120000", PSEUDONYMS.date_offset_days(PATIENT_ID)),
        ),
    ],
    ids=["uid", "date-time"],
)
def test_an_attribute_added_concurrently_is_removed_and_converges(
    options: str, key: str, value: str, expected: str
) -> None:
    # Given an image set to which someone adds an attribute the original did not have, one whose
    # action transforms the value (whether it was transformed already cannot be told)
    original = _document_of(_instance(_study()))
    update = {"Study": {"Series": {SERIES_UID: {"Instances": {SOP_UID: {"DICOM": {key: value}}}}}}}
    latest = apply_dicom_updates(
        original, updatable=json.dumps({"SchemaVersion": 1.1, **update}).encode(), removable=None, force=True
    )

    # When de-identifying it from the original
    run = converge(latest, original, load_profile(options), label=key)

    # Then it converges, the added attribute removed rather than transformed again and again
    (_, _, instance), *_ = _instances(run.final)
    assert value not in json.dumps(run.final)
    assert key not in instance["DICOM"]
    assert expected not in json.dumps(run.final)


def test_class_uids_in_referenced_image_sequences_are_kept() -> None:
    # Given a reference to the CT Image Storage instance next to it
    study = _study()
    reference = Dataset()
    reference.ReferencedSOPClassUID = CTImageStorage
    reference.ReferencedSOPInstanceUID = SIBLING_UID
    document = _document_of(
        _instance(study, ReferencedImageSequence=[reference]), _instance(study, SIBLING_UID, 2)
    )

    # When de-identifying it
    final = converge(document, document, load_profile(), label="reference").final

    # Then the instance UID is replaced consistently and the class UID is kept
    _, series = _only_series(final)
    sequence = series["Instances"][PSEUDONYMS.uid(SOP_UID)]["DICOM"]["ReferencedImageSequence"]
    assert sequence == [
        {"ReferencedSOPClassUID": CTImageStorage, "ReferencedSOPInstanceUID": PSEUDONYMS.uid(SIBLING_UID)}
    ]


def test_kept_safe_private_attributes_are_not_reported_as_identifiers() -> None:
    # Given Retain Safe Private with the synthetic creator's elements listed as safe, and a patient whose
    # name component TEST is also inside the creator's name
    ds = _instance(_study(patient_name="TEST^PATIENT"))
    ds.private_block(0x0009, PRIVATE_CREATOR).add_new(0x02, "LO", "SAFEVALUE")
    document = _document_of(ds)
    safe = [(PRIVATE_CREATOR, 0x0009, 0x01), (PRIVATE_CREATOR, 0x0009, 0x02)]
    profile = load_profile("RetainSafePrivate", safe_private=safe)

    # When de-identifying it
    run = converge(document, document, profile, label="safe private")

    # Then the safe attributes and their creator are kept, and verification finds no leak
    (_, _, instance), *_ = _instances(run.final)
    assert {key: value for key, value in instance["DICOM"].items() if key.startswith("0009")} == {
        "00090010": PRIVATE_CREATOR,
        "00091001": "ORIGINAL",
        "00091002": "SAFEVALUE",
    }
    assert remaining_identifiers(run.final, identifying_values(document, profile), run.produced) == []


def test_numbers_holding_a_short_identifier_are_not_reported_as_identifiers() -> None:
    # Given a device serial number that is also a run of digits inside a kept decimal (as in MR2_J2KI.dcm)
    document = _document_of(_instance(_study(), DeviceSerialNumber="00000", SliceThickness="6.000000"))
    profile = load_profile()

    # When de-identifying it
    run = converge(document, document, profile, label="serial number")

    # Then the serial number is gone, and the kept slice thickness is not a leak
    assert remaining_identifiers(run.final, identifying_values(document, profile), run.produced) == []


def test_a_shifted_date_equal_to_another_original_date_is_not_a_leak() -> None:
    # Given the synthetic image set and a key whose date offset (-255 days) moves ReferencedDateTime
    # 20020402101112 onto 20010721101112, the original value of another DT attribute
    pseudonyms = Pseudonymizer(b"collision-key-000082............")
    assert pseudonyms.date_offset_days(PATIENT_ID) == -255
    original = synthetic_document()
    profile = load_profile("RetainLongitudinalModifiedDates")
    identifiers = identifying_values(original, profile)

    # When de-identifying it with Modified Dates
    run = converge(original, original, profile, pseudonyms=pseudonyms, label="collision")

    # Then the shifted value is found by a search that ignores what the plan wrote, and is not a leak
    # for the verification, which knows it (the stage's own check, and what a test of the stage must do)
    assert "20010721101112" in run.produced
    assert remaining_identifiers(run.final, identifiers) != []
    assert remaining_identifiers(run.final, identifiers, run.produced) == []


def test_removing_bulk_data_asks_for_no_force() -> None:
    # Given CT_small.dcm, which ends with (FFFC,FFFC) DataSetTrailingPadding
    from pydicom.data import get_testdata_file  # noqa: PLC0415

    document = _document([_imported(get_testdata_file("CT_small.dcm"), "CT_small.dcm")])
    current = plan(document, document, load_profile(), PSEUDONYMS)
    (change,) = [c for c in current.changes if c.key == "DataSetTrailingPadding"]
    (single,) = Plan(changes=[change]).payloads()

    # When removing it without force, the emulator accepts it
    apply_dicom_updates(document, updatable=single.updatable, removable=single.removable, force=False)

    # Then the plan does not ask for force either
    assert change.force is False

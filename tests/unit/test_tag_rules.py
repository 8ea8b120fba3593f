"""An image set's tags (ahi_pipeline.tag_rules): rules as data, values AWS accepts, never identifying.

Documents are real image set metadata: pydicom's bundled files imported with the emulator's
``import_instance`` and assembled with ``build_metadata_document``, no server involved.  The PHI guard is
run the way the tagging stage runs it: against ``identifying_values(document, load_profile(options))``.
The key constraints come from botocore's model of HealthImaging (``TagKey``, ``TagValue``).
"""

from __future__ import annotations

import copy
import functools
import os
import re
import unicodedata
import warnings
from collections.abc import Mapping
from typing import Any

import botocore.session
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from pydicom.data import get_testdata_file

from ahi_pipeline.deid_plan import identifying_values, plan
from ahi_pipeline.deid_profile import load_profile
from ahi_pipeline.pseudonyms import Pseudonymizer
from ahi_pipeline.tag_rules import (
    DEFAULT_RULES,
    MAX_TAGS,
    PIPELINE_PREFIX,
    Merge,
    TagRule,
    TagRuleError,
    compute_tags,
    computed_keys,
    guard,
    merge,
    normalize_key,
    normalize_value,
    parse_rules,
)
from emulator.imaging import ImportFileError, import_instance
from emulator.imaging.image_sets import build_metadata_document
from emulator.metadata_update import apply_dicom_updates
from tests.unit.pydicom_files import bundled_files, short_name

try:
    import regex
except ImportError:  # pragma: no cover - the character categories below say the same
    regex = None

pytestmark = pytest.mark.unit

DATASTORE_ID = "d" * 32
IMAGE_SET_ID = "e" * 32
JOB_ID = "0123456789abcdef0123456789abcdef"
BATCH_ID = "batch-0001"
VERSION = "0.6.0"
OPTIONS = ["CleanDescriptors", "RetainUIDs"]
# The detail of an "Image Set Ready" event, as far as the tags are concerned.
READY_DETAIL: dict[str, Any] = {
    "datastoreId": DATASTORE_ID,
    "imageSetId": IMAGE_SET_ID,
    "importJobId": JOB_ID,
    "batchId": BATCH_ID,
    "deidentification": {"status": "deidentified", "edition": "2025b", "options": OPTIONS},
}
# A deployment's rules that would copy identifying attributes into tags.
HOSTILE_RULES = (
    "x:name=PatientName;x:id=PatientID;x:birth=PatientBirthDate;x:inst=InstitutionName;"
    "x:acc=AccessionNumber;x:ref=ReferringPhysicianName"
)
MAX_BUNDLED = 40
KEY_CHARACTERS = re.compile(r"[a-zA-Z0-9+\-=._:/]*")
AWS_VALUE_PUNCTUATION = "_.:/=+-@"


# ---------------------------------------------------------------------- helpers
@functools.cache
def _tag_shape(name: str) -> dict[str, Any]:
    """``min``, ``max`` and ``pattern`` of a HealthImaging tag shape in botocore's model."""
    model = botocore.session.get_session().get_service_model("medical-imaging")
    return dict(model.shape_for(name).metadata)


def _is_tag_key(key: str) -> bool:
    shape = _tag_shape("TagKey")
    return shape["min"] <= len(key) <= shape["max"] and re.fullmatch(shape["pattern"], key) is not None


def _is_tag_value(value: str) -> bool:
    """AWS's tag value class ``^[\\p{L}\\p{Z}\\p{N}_.:/=+\\-@]*$`` and botocore's ``TagValue`` length."""
    if len(value) > _tag_shape("TagValue")["max"]:
        return False
    if regex is not None:
        return regex.fullmatch(r"[\p{L}\p{Z}\p{N}_.:/=+\-@]*", value) is not None
    return all(c in AWS_VALUE_PUNCTUATION or unicodedata.category(c)[0] in "LNZ" for c in value)


def _document_of(*paths: str) -> dict[str, Any]:
    instances = [import_instance(path, os.path.basename(path), lambda data: "f" * 32) for path in paths]
    return build_metadata_document(DATASTORE_ID, IMAGE_SET_ID, instances)


@functools.cache
def _testdata_document(name: str) -> dict[str, Any]:
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        return _document_of(get_testdata_file(name))


def _testdata(name: str) -> dict[str, Any]:
    """A fresh copy of the metadata document of one of pydicom's test files."""
    return copy.deepcopy(_testdata_document(name))


@functools.cache
def _bundled_documents() -> tuple[tuple[str, dict[str, Any]], ...]:
    """40 documents of pydicom's bundled files that import, smallest first, one per SOP instance.

    Of the files that only differ by transfer syntax (same SOP Instance UID) the smallest is taken; the
    40 are found among the ~90 smallest files (< 250 KB), which import in about a second.
    """
    documents: list[tuple[str, dict[str, Any]]] = []
    seen: set[str] = set()
    for path in sorted(bundled_files(), key=lambda path: (os.path.getsize(path), path)):
        try:
            with warnings.catch_warnings():
                warnings.simplefilter("ignore")
                instance = import_instance(path, short_name(path), lambda data: "f" * 32)
        except ImportFileError:
            continue
        if instance.sop_instance_uid in seen:
            continue
        seen.add(instance.sop_instance_uid)
        documents.append((short_name(path), build_metadata_document(DATASTORE_ID, IMAGE_SET_ID, [instance])))
        if len(documents) == MAX_BUNDLED:
            break
    return tuple(documents)


def _only_series(document: Mapping[str, Any]) -> dict[str, Any]:
    (series,) = document["Study"]["Series"].values()
    return series


def _deidentified(original: dict[str, Any], options: list[str]) -> dict[str, Any]:
    """``original`` de-identified the way the stage does it: plan, apply the first payload, re-plan."""
    profile = load_profile(options)
    pseudonyms = Pseudonymizer(b"tag-rules-unit-test-key-0123456789")
    document = original
    for _ in range(60):
        current = plan(document, original, profile, pseudonyms)
        if current.done:
            return document
        payload = current.payloads()[0]
        document = apply_dicom_updates(
            document, updatable=payload.updatable, removable=payload.removable, force=payload.force
        )
    pytest.fail("no convergence")


def _phi(document: Mapping[str, Any]) -> set[str]:
    """The patient's real identity in a document: name components, IDs, accession, institution."""
    patient = document.get("Patient", {}).get("DICOM", {})
    study = document.get("Study", {}).get("DICOM", {})
    values: list[Any] = [patient.get("PatientID"), study.get("AccessionNumber")]
    name = patient.get("PatientName")
    if isinstance(name, str):
        values += re.split(r"[\^=]", name)
    values += [
        series.get("DICOM", {}).get("InstitutionName") for series in document["Study"]["Series"].values()
    ]
    folded = {normalize_value(v).casefold() for v in values if isinstance(v, str)}
    return {v for v in folded if len(v) >= 3}


# ---------------------------------------------------------------------- the rules
def test_the_default_rules_are_pipeline_tags_healthimaging_accepts() -> None:
    # Given the default rules
    keys = [rule.key for rule in DEFAULT_RULES]

    # When / Then: each key is a pipeline key botocore's TagKey accepts, each source a known one, no
    # key twice, and the defaults fit well within the limit of 50
    assert all(key.startswith(PIPELINE_PREFIX) for key in keys)
    assert all(_is_tag_key(key) for key in keys), keys
    assert len(set(keys)) == len(keys)
    assert len(keys) < MAX_TAGS
    for rule in DEFAULT_RULES:
        assert TagRule(rule.key, rule.source) == rule
    assert {rule.source for rule in DEFAULT_RULES} == {
        "attribute:Modality",
        "attribute:BodyPartExamined",
        "sop-class",
        "instances",
        "frames",
        "deidentification:status",
        "deidentification:profile",
        "import-job",
        "batch",
        "pipeline-version",
    }


def test_a_rule_accepts_a_key_of_128_characters() -> None:
    # Given a key at botocore's maximum
    key = "k" * _tag_shape("TagKey")["max"]

    # When / Then
    assert TagRule(key, "attribute:StationName").key == key


@pytest.mark.parametrize(
    ("key", "source"),
    [
        ("aws:modality", "attribute:Modality"),
        ("", "attribute:Modality"),
        ("site protocol", "attribute:ProtocolName"),
        ("k" * 129, "attribute:ProtocolName"),
        ("site:name!", "attribute:ProtocolName"),
        ("site:x", "modality"),
        ("site:x", "pipeline:version"),
        ("site:x", "attribute:"),
        ("site:x", "attribute:Protocol Name"),
        ("site:x", "attribute:1Modality"),
        ("site:x", "attribute:(0008,0060)"),
    ],
    ids=[
        "aws-prefix",
        "empty-key",
        "space-in-key",
        "key-of-129",
        "bang-in-key",
        "unknown-source",
        "key-as-source",
        "empty-keyword",
        "keyword-with-space",
        "keyword-with-leading-digit",
        "tag-not-keyword",
    ],
)
def test_a_rule_refuses_a_key_or_source_it_cannot_apply(key: str, source: str) -> None:
    # Given a key HealthImaging refuses or a source the rules do not know
    # When / Then
    with pytest.raises(TagRuleError):
        TagRule(key, source)


def test_the_deployments_rules_are_parsed_with_spaces_and_a_trailing_separator() -> None:
    # Given the TagRules parameter as someone may type it
    text = "site:protocol=ProtocolName; site:station=StationName ;"

    # When parsed
    rules = parse_rules(text)

    # Then
    assert rules == (
        TagRule("site:protocol", "attribute:ProtocolName"),
        TagRule("site:station", "attribute:StationName"),
    )


@pytest.mark.parametrize("text", ["", " ", ";", " ; ;"])
def test_no_rules_parse_to_none(text: str) -> None:
    # Given an empty TagRules parameter; When parsed; Then there are no rules
    assert parse_rules(text) == ()


def test_a_key_may_hold_an_equals_sign() -> None:
    # Given a key with "=" (allowed in tag keys): the keyword is after the last "="
    # When / Then
    assert parse_rules("site:a=b=Modality") == (TagRule("site:a=b", "attribute:Modality"),)


@pytest.mark.parametrize(
    "text",
    [
        "=Modality",
        "key=",
        "key=Not A Keyword",
        "aws:x=Modality",
        "Modality",
        "site:ok=Modality;broken",
        "site key=Modality",
    ],
)
def test_a_malformed_rule_is_refused(text: str) -> None:
    # Given a TagRules parameter with a pair that is not key=Keyword
    # When / Then
    with pytest.raises(TagRuleError):
        parse_rules(text)


def test_a_keyword_outside_the_dicom_dictionary_is_refused() -> None:
    # Given a well-formed pair whose keyword is a typo of ProtocolName
    # When / Then
    with pytest.raises(TagRuleError):
        parse_rules("site:protocol=ProtocolNme")


# ---------------------------------------------------------------------- compute_tags
def test_the_default_tags_of_a_ct_image() -> None:
    # Given CT_small.dcm's metadata and its "Image Set Ready" event
    document = _testdata("CT_small.dcm")

    # When the default tags are computed
    tags = compute_tags(document, READY_DETAIL, DEFAULT_RULES, version=VERSION)

    # Then they are exactly these, in rule order (CT_small has no BodyPartExamined)
    assert list(tags.items()) == [
        ("pipeline:modality", "CT"),
        ("pipeline:sop-class", "CTImageStorage"),
        ("pipeline:instances", "1"),
        ("pipeline:frames", "1"),
        ("pipeline:deidentification", "deidentified"),
        ("pipeline:deidentification-profile", "PS3.15-2025b:CleanDescriptors+RetainUIDs"),
        ("pipeline:import-job", JOB_ID),
        ("pipeline:batch", BATCH_ID),
        ("pipeline:version", VERSION),
    ]
    assert all(_is_tag_key(key) and _is_tag_value(value) for key, value in tags.items())


def test_the_default_tags_of_an_mr_image() -> None:
    # Given MR_small.dcm's metadata and its "Image Set Ready" event
    document = _testdata("MR_small.dcm")

    # When the default tags are computed
    tags = compute_tags(document, READY_DETAIL, DEFAULT_RULES, version=VERSION)

    # Then
    assert tags == {
        "pipeline:modality": "MR",
        "pipeline:sop-class": "MRImageStorage",
        "pipeline:instances": "1",
        "pipeline:frames": "1",
        "pipeline:deidentification": "deidentified",
        "pipeline:deidentification-profile": "PS3.15-2025b:CleanDescriptors+RetainUIDs",
        "pipeline:import-job": JOB_ID,
        "pipeline:batch": BATCH_ID,
        "pipeline:version": VERSION,
    }


def test_the_body_part_is_tagged_when_present() -> None:
    # Given an NM secondary capture whose series says (0018,0015) BodyPartExamined "WHOLE BODY"
    document = _testdata("JPEG2000.dcm")
    assert _only_series(document)["DICOM"]["BodyPartExamined"] == "WHOLE BODY"

    # When the default tags are computed
    tags = compute_tags(document, READY_DETAIL, DEFAULT_RULES, version=VERSION)

    # Then
    assert tags["pipeline:modality"] == "NM"
    assert tags["pipeline:body-part"] == "WHOLE BODY"
    assert tags["pipeline:sop-class"] == "SecondaryCaptureImageStorage"


def test_instances_and_frames_are_counted_over_the_image_set() -> None:
    # Given an image set of two instances of one series: one frame, and two frames
    document = _testdata("CT_small.dcm")
    series = _only_series(document)
    (sop_uid, instance) = next(iter(series["Instances"].items()))
    twin = copy.deepcopy(instance)
    twin["ImageFrames"] = twin["ImageFrames"] * 2
    series["Instances"][f"{sop_uid}.2"] = twin

    # When the default tags are computed
    tags = compute_tags(document, READY_DETAIL, DEFAULT_RULES, version=VERSION)

    # Then
    assert (tags["pipeline:instances"], tags["pipeline:frames"]) == ("2", "3")


def test_empty_and_absent_values_are_left_out() -> None:
    # Given an event without de-identification, import job or batch, and an empty modality
    document = _testdata("CT_small.dcm")
    _only_series(document)["DICOM"]["Modality"] = ""
    detail = {"datastoreId": DATASTORE_ID, "imageSetId": IMAGE_SET_ID}

    # When the default tags are computed
    tags = compute_tags(document, detail, DEFAULT_RULES, version=VERSION)

    # Then only what has a value is there
    assert tags == {
        "pipeline:sop-class": "CTImageStorage",
        "pipeline:instances": "1",
        "pipeline:frames": "1",
        "pipeline:version": VERSION,
    }


def test_a_skipped_deidentification_and_one_without_options() -> None:
    # Given events announcing a skipped de-identification, and one under the basic profile
    document = _testdata("CT_small.dcm")
    skipped = {"deidentification": {"status": "skipped"}}
    basic = {"deidentification": {"status": "deidentified", "edition": "2025b", "options": []}}

    # When the default tags are computed
    tags_skipped = compute_tags(document, skipped, DEFAULT_RULES, version=VERSION)
    tags_basic = compute_tags(document, basic, DEFAULT_RULES, version=VERSION)

    # Then a skipped one names no profile; the basic profile is named as such
    assert tags_skipped["pipeline:deidentification"] == "skipped"
    assert "pipeline:deidentification-profile" not in tags_skipped
    assert tags_basic["pipeline:deidentification-profile"] == "PS3.15-2025b:basic"


def test_a_deployments_rules_map_attributes_of_every_level() -> None:
    # Given CT_small.dcm's metadata and rules for patient, series and instance attributes, a
    # multi-valued one, a null one, an absent one and a sequence
    document = _testdata("CT_small.dcm")
    rules = parse_rules(
        "site:sex=PatientSex;site:station=StationName;site:kernel=ConvolutionKernel;"
        "site:scan=ScanOptions;site:type=ImageType;site:contrast=ContrastBolusAgent;"
        "site:accession=AccessionNumber;site:protocol=ProtocolName;site:others=OtherPatientIDsSequence"
    )

    # When the tags are computed
    tags = compute_tags(document, READY_DETAIL, rules, version=VERSION)

    # Then each present value is tagged, the multi-valued one joined by "\" and normalized to "_"
    assert tags == {
        "site:sex": "O",
        "site:station": "CT01_OC0",
        "site:kernel": "STANDARD",
        "site:scan": "HELICAL MODE",
        "site:type": "ORIGINAL_PRIMARY_AXIAL",
        "site:contrast": "ISOVUE300/100",
    }


def test_a_value_is_normalized_into_a_tag_value() -> None:
    # Given MR_small.dcm, whose (0018,1020) SoftwareVersions is "V3.51*P25" ("*" is no tag character)
    document = _testdata("MR_small.dcm")

    # When tagged by a deployment's rule
    tags = compute_tags(
        document, READY_DETAIL, parse_rules("site:software=SoftwareVersions"), version=VERSION
    )

    # Then
    assert tags == {"site:software": "V3.51_P25"}


def test_a_deployments_rule_may_replace_a_default_value() -> None:
    # Given a deployment's rule with a default key
    document = _testdata("CT_small.dcm")
    rules = (*DEFAULT_RULES, *parse_rules("pipeline:modality=StationName"))

    # When the tags are computed
    tags = compute_tags(document, READY_DETAIL, rules, version=VERSION)

    # Then the later rule wins (rule order), and the key keeps its place
    assert tags["pipeline:modality"] == "CT01_OC0"
    assert next(iter(tags)) == "pipeline:modality"


# ---------------------------------------------------------------------- normalization
@pytest.mark.parametrize(
    ("value", "expected"),
    [
        ("CT", "CT"),
        ("WHOLE BODY", "WHOLE BODY"),
        ("a_b.c:d/e=f+g-h@i", "a_b.c:d/e=f+g-h@i"),
        ("Müller Straße 東京 ١٢٣ Ωμέγα", "Müller Straße 東京 ١٢٣ Ωμέγα"),
        ("DOE^JOHN", "DOE_JOHN"),
        ("ORIGINAL\\PRIMARY", "ORIGINAL_PRIMARY"),
        ("100% (v2) #1, 'x'; *", "100_ _v2_ _1_ _x__ _"),
        ("  CT    HEAD  ", "CT HEAD"),
        ("CT\u00a0\u3000HEAD", "CT HEAD"),
        ("e\u0301", "e_"),
        ("", ""),
        ("   ", ""),
        ("x" * 300, "x" * 256),
    ],
    ids=[
        "plain",
        "space",
        "punctuation",
        "non-ascii-letters-and-digits",
        "caret",
        "backslash",
        "others",
        "spaces-collapsed",
        "unicode-spaces",
        "combining-mark",
        "empty",
        "blank",
        "long",
    ],
)
def test_normalize_value(value: str, expected: str) -> None:
    # Given a value; When normalized; Then
    assert normalize_value(value) == expected
    assert _is_tag_value(normalize_value(value))


def test_a_truncated_value_does_not_end_with_a_space() -> None:
    # Given a value whose 256th character is a space
    value = "x" * 255 + " tail"

    # When normalized
    normalized = normalize_value(value)

    # Then it is stripped after truncation too
    assert normalized == "x" * 255
    assert normalize_value(normalized) == normalized


@settings(max_examples=200, deadline=None)
@given(value=st.text(max_size=400) | st.text(alphabet=" \t\n\u00a0\u2028x^\\é", max_size=300))
def test_every_normalized_value_is_an_aws_tag_value(value: str) -> None:
    # Given any text (any script, control characters, whitespace, long)
    # When normalized
    normalized = normalize_value(value)

    # Then it is in AWS's tag value characters, at most 256 long, with no leading or double space
    assert _is_tag_value(normalized), normalized
    assert len(normalized) <= 256
    assert not normalized.startswith(" ")
    assert "  " not in normalized


@pytest.mark.parametrize(
    ("key", "expected"),
    [
        ("site:protocol", "site:protocol"),
        ("a+b-c=d.e_f:g/h", "a+b-c=d.e_f:g/h"),
        ("my key!", "my_key_"),
        ("Müller", "M_ller"),
        ("k" * 200, "k" * 128),
    ],
)
def test_normalize_key(key: str, expected: str) -> None:
    # Given a key; When normalized; Then
    assert normalize_key(key) == expected
    assert _is_tag_key(normalize_key(key))


@settings(max_examples=200, deadline=None)
@given(key=st.text(max_size=300))
def test_every_normalized_key_is_in_key_characters(key: str) -> None:
    # Given any text; When normalized as a key
    normalized = normalize_key(key)

    # Then it is in HealthImaging's key characters, at most 128 long, one character for each
    assert KEY_CHARACTERS.fullmatch(normalized)
    assert len(normalized) == min(len(key), 128)


# ---------------------------------------------------------------------- the PHI guard
def test_the_guard_drops_a_tag_that_equals_or_contains_an_identifier() -> None:
    # Given tags, and identifiers as identifying_values gives them (casefolded, names by component)
    tags = {
        "pipeline:modality": "MR",
        "x:sex": "M",
        "x:name": "DOE_JOHN",
        "x:description": "Knee of John",
        "x:code": "li",
        "x:ok": "CHEST",
        "x:spline": "SPLINE",
        "x:quote": "O_BRIEN",
    }
    identifiers = ["doe^john", "doe", "john", "m", "li", "o'brien", "", "  "]

    # When guarded
    kept, dropped = guard(tags, identifiers)

    # Then equal values (any case) and values containing an identifier of 3+ characters are dropped, in
    # tag order; a 1-2 character identifier inside a longer value ("M" in "MR", "li" in "SPLINE") is not
    assert dropped == ["x:sex", "x:name", "x:description", "x:code", "x:quote"]
    assert kept == {"pipeline:modality": "MR", "x:ok": "CHEST", "x:spline": "SPLINE"}


@settings(max_examples=200, deadline=None)
@given(text=st.text(alphabet=st.characters(codec="latin-1"), max_size=300))
def test_the_guard_drops_an_attributes_own_value(text: str) -> None:
    # Given an attribute value (Latin-1: any letter, digit, space, punctuation or control character),
    # its tag as compute_tags makes it, and the identifier as identifying_values gives it (casefolded)
    tag = normalize_value(text)
    identifier = text.strip().casefold()

    # When guarded
    kept, dropped = guard({"x:attribute": tag}, [identifier])

    # Then a non-empty tag is dropped
    assert (kept, dropped) == (({}, ["x:attribute"]) if tag else ({"x:attribute": ""}, []))


def test_the_guard_drops_an_identity_written_with_a_dotted_capital_i() -> None:
    # Given a Turkish patient and institution, and rules copying them into tags
    document = _testdata("CT_small.dcm")
    document["Patient"]["DICOM"]["PatientName"] = "İLHAN^İPEK"
    _only_series(document)["DICOM"]["InstitutionName"] = "İSTANBUL HASTANESİ"
    tags = compute_tags(document, READY_DETAIL, parse_rules(HOSTILE_RULES), version=VERSION)
    assert tags == {"x:name": "İLHAN_İPEK", "x:id": "1CT1", "x:inst": "İSTANBUL HASTANESİ"}

    # When guarded as the stage does for a skipped de-identification
    kept, dropped = guard(tags, identifying_values(document, load_profile("")).changed)

    # Then the name and the institution are dropped as the ID is
    assert dropped == ["x:name", "x:id", "x:inst"]
    assert kept == {}


def test_the_guard_keeps_everything_without_identifiers() -> None:
    # Given tags and no identifiers; When guarded; Then nothing is dropped
    tags = {"pipeline:modality": "CT", "pipeline:instances": "1"}
    assert guard(tags, []) == (tags, [])


def test_the_guard_on_a_real_document_drops_the_identity() -> None:
    # Given CT_small.dcm, not de-identified, and rules copying identifying attributes into tags
    document = _testdata("CT_small.dcm")
    rules = (
        *DEFAULT_RULES,
        *parse_rules(HOSTILE_RULES + ";x:station=StationName;x:kernel=ConvolutionKernel"),
    )
    tags = compute_tags(document, READY_DETAIL, rules, version=VERSION)

    # When guarded as the stage does for a skipped de-identification
    kept, dropped = guard(tags, identifying_values(document, load_profile("")).changed)

    # Then the name, ID, institution and station name (all changed by the profile) are dropped; the
    # convolution kernel (kept by the profile) and the defaults stay
    assert dropped == ["x:name", "x:id", "x:inst", "x:station"]
    assert kept == {
        **compute_tags(document, READY_DETAIL, DEFAULT_RULES, version=VERSION),
        "x:kernel": "STANDARD",
    }


@pytest.mark.parametrize("options", ["", "CleanDescriptors,RetainUIDs"], ids=["basic", "clean-retain-uids"])
def test_no_bundled_files_identity_survives_the_guard(options: str) -> None:
    # Given pydicom's bundled files that import (smallest first), rules copying identifying attributes
    # into tags, and the profile the stage would use
    documents = _bundled_documents()
    assert len(documents) == MAX_BUNDLED
    rules = (*DEFAULT_RULES, *parse_rules(HOSTILE_RULES))
    hostile = {rule.key for rule in parse_rules(HOSTILE_RULES)}
    profile = load_profile(options)
    checked = 0

    for name, document in documents:
        # When the tags are computed and guarded
        tags = compute_tags(document, READY_DETAIL, rules, version=VERSION)
        kept, dropped = guard(tags, identifying_values(document, profile).changed)

        # Then no kept tag holds the patient's name, ID, accession number or institution, and every
        # identifying tag of three characters or more was dropped
        phi = _phi(document)
        for key, value in kept.items():
            leaked = [v for v in phi if v in value.casefold()]
            assert not leaked, f"{name}: tag {key}={value!r} holds {leaked}"
        for key in hostile & set(tags):
            if len(tags[key]) >= 3:
                assert key in dropped, f"{name}: {key}={tags[key]!r} kept"
                checked += 1
        assert all(_is_tag_key(k) and _is_tag_value(v) for k, v in kept.items()), name

    assert checked >= 40  # the check had identities to look for


def test_a_pseudonym_never_becomes_a_tag() -> None:
    # Given CT_small.dcm de-identified as the stage does it (pseudonyms, dummies), and rules copying
    # the de-identified attributes into tags
    original = _testdata("CT_small.dcm")
    document = _deidentified(original, OPTIONS)
    patient = document["Patient"]["DICOM"]
    pseudonyms = [patient["PatientName"], patient["PatientID"]]
    assert all(p.startswith("ANON") for p in pseudonyms), pseudonyms
    rules = (*DEFAULT_RULES, *parse_rules(HOSTILE_RULES))
    tags = compute_tags(document, READY_DETAIL, rules, version=VERSION)
    assert {"x:name", "x:id"} <= set(tags)

    # When guarded against the de-identified document's identifying values, under the event's options
    kept, dropped = guard(tags, identifying_values(document, load_profile(OPTIONS)).changed)

    # Then the pseudonyms were dropped, and neither they nor the original identity are in any tag
    assert {"x:name", "x:id"} <= set(dropped)
    assert kept == compute_tags(document, READY_DETAIL, DEFAULT_RULES, version=VERSION)
    text = " ".join(kept.values()).casefold()
    for value in [*pseudonyms, *_phi(original)]:
        assert normalize_value(value).casefold() not in text


def test_a_hand_made_pseudonym_is_dropped() -> None:
    # Given a de-identified-looking document: a pseudonymous patient name and ID
    document = _testdata("MR_small.dcm")
    document["Patient"]["DICOM"].update({"PatientName": "ANON^ABCDEF123456", "PatientID": "ANONQWERTY7890"})
    tags = compute_tags(document, READY_DETAIL, parse_rules(HOSTILE_RULES), version=VERSION)

    # When guarded
    kept, dropped = guard(tags, identifying_values(document, load_profile(OPTIONS)).changed)

    # Then
    assert dropped == ["x:name", "x:id", "x:inst"]
    assert "abcdef123456" not in str(kept).casefold()


# ---------------------------------------------------------------------- merge
def test_new_tags_are_set() -> None:
    # Given an image set with a user's tag, and computed tags
    existing = {"owner": "radiology"}
    computed = {"pipeline:modality": "CT", "pipeline:instances": "1"}

    # When merged
    result = merge(existing, computed)

    # Then the computed tags are set, nothing is left out
    assert result == Merge(to_set=computed, over_limit=[])


def test_a_replay_sets_nothing() -> None:
    # Given an image set already tagged with exactly the computed tags (and a user's tag)
    computed = compute_tags(_testdata("CT_small.dcm"), READY_DETAIL, DEFAULT_RULES, version=VERSION)
    existing = {**computed, "owner": "radiology"}

    # When merged again
    result = merge(existing, computed)

    # Then nothing is sent
    assert result == Merge(to_set={}, over_limit=[])


def test_a_changed_pipeline_tag_is_updated_and_user_tags_are_untouched() -> None:
    # Given an image set tagged by an earlier version, with a user's tag
    existing = {"pipeline:version": "0.5.0", "pipeline:modality": "CT", "owner": "radiology"}
    computed = {"pipeline:version": VERSION, "pipeline:modality": "CT"}

    # When merged
    result = merge(existing, computed)

    # Then only the changed tag is sent; a user's tag is never in what is sent (merge cannot remove)
    assert result == Merge(to_set={"pipeline:version": VERSION}, over_limit=[])


def test_a_deployments_rule_with_a_users_key_overwrites_its_value() -> None:
    # Given a user's tag "owner" and a deployment's rule that computes the same key: the deployment chose
    # that key, so its rule owns it (merge cannot tell who set a tag; only rule keys are ever written)
    existing = {"owner": "radiology", "project": "trial-7"}
    computed = {"owner": "CT01_OC0"}

    # When merged
    result = merge(existing, computed)

    # Then only the rule's own key is written; the other user tag is not
    assert result == Merge(to_set={"owner": "CT01_OC0"}, over_limit=[])


def test_new_tags_beyond_the_limit_are_left_out_last_rules_first() -> None:
    # Given 45 existing tags and 10 new computed ones, in rule order
    existing = {f"user:{n}": "x" for n in range(45)}
    computed = {f"pipeline:t{n}": str(n) for n in range(10)}

    # When merged
    result = merge(existing, computed)

    # Then the first 5 are set, the last 5 reported over the limit, in rule order
    assert result.to_set == {f"pipeline:t{n}": str(n) for n in range(5)}
    assert result.over_limit == [f"pipeline:t{n}" for n in range(5, 10)]
    assert len(existing) + len(result.to_set) == MAX_TAGS


def test_at_the_limit_only_existing_tags_are_updated() -> None:
    # Given 50 existing tags, two of them the pipeline's (one changed), and 3 new computed ones
    existing = {f"user:{n}": "x" for n in range(48)} | {
        "pipeline:modality": "CT",
        "pipeline:version": "0.5.0",
    }
    computed = {"pipeline:modality": "CT", "pipeline:version": VERSION} | {
        f"pipeline:new{n}": str(n) for n in range(3)
    }

    # When merged
    result = merge(existing, computed)

    # Then no new key is set, the changed existing one still is
    assert result == Merge(
        to_set={"pipeline:version": VERSION}, over_limit=["pipeline:new0", "pipeline:new1", "pipeline:new2"]
    )


def test_counts_and_ids_the_pipeline_computes_are_not_mistaken_for_identifiers() -> None:
    # Given a StudyID of "1" among the identifiers, and a one-instance image set
    tags = {"pipeline:instances": "1", "pipeline:frames": "1", "x:study": "1"}
    rules = (*DEFAULT_RULES, TagRule("x:study", "attribute:StudyID"))

    # When guarded with the keys the pipeline computes
    kept, dropped = guard(tags, ["1"], computed=computed_keys(rules))

    # Then the counts stay, and the copied StudyID goes
    assert kept == {"pipeline:instances": "1", "pipeline:frames": "1"}
    assert dropped == ["x:study"]
    assert "pipeline:modality" not in computed_keys(rules)
    assert "pipeline:sop-class" not in computed_keys(rules)

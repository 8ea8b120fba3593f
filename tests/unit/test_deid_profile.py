"""The de-identification policy (ahi_pipeline.deid_profile): PS3.15 Table E.1-1 as data, options → actions.

The expected action of every row is computed here from the row's raw columns, independently of the
module: an enabled option's ``K`` wins over an enabled option's ``C``, which wins over the Basic Profile,
whose combined codes resolve to the action that keeps every IOD conformant.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest

from ahi_pipeline.deid_profile import (
    BASIC_PROFILE_CODE,
    EDITION,
    Action,
    Option,
    Profile,
    ProfileError,
    Rule,
    load_profile,
    parse_options,
    parse_safe_private,
    table_rows,
)

pytestmark = pytest.mark.unit

REPO = Path(__file__).resolve().parents[2]
BUNDLED_TABLE = REPO / "layers" / "shared" / "ahi_pipeline" / "data" / "ps3.15-table-e1-1.json"
SHARED_TABLE = REPO.parent / "shared" / "dicom" / "ps3.15-table-e1-1.json"

# The table's option columns, as ../shared/dicom/README.md names them (not taken from the module).
COLUMN_OF = {
    "CleanDescriptors": "cleanDescOpt",
    "RetainLongitudinalFullDates": "rtnLongFullDatesOpt",
    "RetainLongitudinalModifiedDates": "rtnLongModifDatesOpt",
    "RetainPatientCharacteristics": "rtnPatCharsOpt",
    "RetainDeviceIdentity": "rtnDevIdOpt",
    "RetainUIDs": "rtnUIDsOpt",
    "RetainSafePrivate": "rtnSafePrivOpt",
    "RetainInstitutionIdentity": "rtnInstIdOpt",
}
# PS3.16 CID 7050 codes of the options.
CID_7050 = {
    "CleanDescriptors": "113105",
    "RetainLongitudinalFullDates": "113106",
    "RetainLongitudinalModifiedDates": "113107",
    "RetainPatientCharacteristics": "113108",
    "RetainDeviceIdentity": "113109",
    "RetainUIDs": "113110",
    "RetainSafePrivate": "113111",
    "RetainInstitutionIdentity": "113112",
}
BASIC_COMBINED = {"X/Z": "Z", "X/D": "D", "X/Z/D": "D", "Z/D": "D", "X/Z/U*": "U"}

OPTION_SETS: dict[str, frozenset[str]] = {
    "none": frozenset(),
    **{name: frozenset({name}) for name in COLUMN_OF},
    "dates-descriptors-uids": frozenset(
        {"RetainLongitudinalModifiedDates", "CleanDescriptors", "RetainUIDs"}
    ),
    "full-dates-characteristics-device-institution": frozenset(
        {
            "RetainLongitudinalFullDates",
            "RetainPatientCharacteristics",
            "RetainDeviceIdentity",
            "RetainInstitutionIdentity",
        }
    ),
    "all-but-full-dates": frozenset(COLUMN_OF) - {"RetainLongitudinalFullDates"},
}

CREATOR = "ACME 1.0"


def _expected(row: dict[str, Any], options: frozenset[str]) -> str:
    """The row's action code under ``options``, from its raw columns."""
    chosen = {row[COLUMN_OF[name]] for name in options if COLUMN_OF[name] in row}
    if "K" in chosen:
        return "K"
    if "C" in chosen:
        return "C"
    basic = row["basicProfile"]
    return BASIC_COMBINED.get(basic, basic)


def _rule_of(row: dict[str, Any]) -> Rule:
    options = {column: row[column] for column in COLUMN_OF.values() if column in row}
    return Rule(tag=row["tag"], name=row["name"], basic=row["basicProfile"], options=options)


def _concrete_tag(row: dict[str, Any]) -> int | None:
    """The row's tag as an integer, or None for a pattern (``50XX``) or the private-attributes row."""
    text = row["tag"]
    digits = text[1:5] + text[6:10]
    if len(text) != 11 or "X" in digits.upper():
        return None
    try:
        return int(digits, 16)
    except ValueError:
        return None


# ---------------------------------------------------------------------- the bundled table
def test_the_bundled_table_is_the_shared_one() -> None:
    # Given the table in ../shared/dicom
    if not SHARED_TABLE.is_file():
        pytest.skip("../shared/dicom is not present")
    shared = json.loads(SHARED_TABLE.read_text(encoding="utf-8"))

    # When reading the table the package bundles
    bundled = json.loads(BUNDLED_TABLE.read_text(encoding="utf-8"))

    # Then both hold the same 647 rows, and the package reads exactly them
    assert bundled == shared
    assert len(bundled) == 647
    assert table_rows() == bundled


def test_the_edition_is_2025b() -> None:
    # Given / When / Then
    assert EDITION == "2025b"
    assert load_profile().edition == "2025b"


def test_every_row_has_a_known_basic_action() -> None:
    # Given the table's rows
    rows = table_rows()

    # When reading their Basic Profile column
    codes = {row["basicProfile"] for row in rows}

    # Then each is a single action or one of the combinations the module resolves
    assert codes <= {"X", "Z", "D", "K", "C", "U"} | set(BASIC_COMBINED)


# ---------------------------------------------------------------------- every row, every option set
@pytest.mark.parametrize("names", OPTION_SETS.values(), ids=OPTION_SETS.keys())
def test_every_row_resolves_as_the_table_says(names: frozenset[str]) -> None:
    # Given a profile with the option set
    profile = load_profile(sorted(names))
    assert {option.value for option in profile.options} == names

    wrong_resolve: list[tuple[str, str, str]] = []
    wrong_action: list[tuple[str, str, str]] = []
    concrete = 0
    for row in table_rows():
        expected = _expected(row, names)

        # When resolving the row, and asking for the action of its tag
        resolved = profile.resolve(_rule_of(row))
        if resolved.value != expected:
            wrong_resolve.append((row["tag"], expected, resolved.value))
        tag = _concrete_tag(row)
        if tag is None:
            continue
        concrete += 1
        found = profile.rule(tag)
        assert found is not None, row["tag"]
        assert (found.tag, found.basic) == (row["tag"], row["basicProfile"])
        action = profile.action(tag)
        if action.value != expected:
            wrong_action.append((row["tag"], expected, action.value))

    # Then both agree with the table for every row
    assert wrong_resolve == []
    assert wrong_action == []
    assert concrete == 647 - 4  # three patterns and the private-attributes row


def test_options_change_only_rows_with_their_column() -> None:
    # Given the rows without any option column
    plain = [row for row in table_rows() if not set(COLUMN_OF.values()) & set(row)]
    everything = load_profile(sorted(OPTION_SETS["all-but-full-dates"]))

    # When resolving them with and without options
    # Then the options change nothing
    for row in plain:
        assert everything.resolve(_rule_of(row)) is load_profile().resolve(_rule_of(row)), row["tag"]


# ---------------------------------------------------------------------- patterns and unlisted tags
@pytest.mark.parametrize(
    ("tag", "name", "action"),
    [
        (0x60003000, "Overlay Data", Action.REMOVE),
        (0x601E3000, "Overlay Data", Action.REMOVE),
        (0x60024000, "Overlay Comments", Action.REMOVE),
        (0x50001234, "Curve Data", Action.REMOVE),
        (0x50FE0000, "Curve Data", Action.REMOVE),
    ],
    ids=["6000,3000", "601E,3000", "6002,4000", "5000,1234", "50FE,0000"],
)
def test_repeating_group_patterns_match_with_x_as_wildcards(tag: int, name: str, action: Action) -> None:
    # Given the Basic Profile
    profile = load_profile()

    # When looking up an even-group tag that a (50XX,XXXX) or (60XX,eeee) row covers
    rule = profile.rule(tag)

    # Then the pattern's row gives its action
    assert rule is not None
    assert rule.name == name
    assert profile.action(tag) is action


@pytest.mark.parametrize(
    "tag",
    [0x60003001, 0x61003000, 0x60005000, 0x51001234],
    ids=["6000,3001", "6100,3000", "6000,5000", "5100,1234"],
)
def test_tags_next_to_a_pattern_are_not_matched(tag: int) -> None:
    # Given / When / Then
    assert load_profile().rule(tag) is None
    assert load_profile().action(tag) is Action.KEEP


def test_the_overlay_pattern_resolves_clean_graphics_column_only_for_its_option() -> None:
    # Given the (60XX,3000) row, whose only option column is Clean Graphics (not an option here)
    profile = load_profile(sorted(OPTION_SETS["all-but-full-dates"]))

    # When / Then: no supported option changes it
    assert profile.action(0x60003000) is Action.REMOVE


@pytest.mark.parametrize(
    ("tag", "keyword"),
    [
        (0x00280010, "Rows"),
        (0x00080060, "Modality"),
        (0x00080016, "SOPClassUID"),
        (0x00200013, "InstanceNumber"),
        (0x00280030, "PixelSpacing"),
    ],
)
def test_attributes_the_table_does_not_list_are_kept(tag: int, keyword: str) -> None:
    # Given every option set
    for names in OPTION_SETS.values():
        profile = load_profile(sorted(names))

        # When / Then
        assert profile.rule(tag) is None, keyword
        assert profile.action(tag) is Action.KEEP, keyword


@pytest.mark.parametrize(
    ("tag", "action"),
    [
        (0x00100010, Action.ZERO),  # PatientName Z
        (0x00100020, Action.DUMMY),  # PatientID Z/D
        (0x0020000D, Action.UID),  # StudyInstanceUID U
        (0x00080050, Action.ZERO),  # AccessionNumber Z
        (0x00081030, Action.REMOVE),  # StudyDescription X
        (0x00080080, Action.DUMMY),  # InstitutionName X/Z/D
        (0x00081140, Action.UID),  # ReferencedImageSequence X/Z/U*
        (0x00080020, Action.ZERO),  # StudyDate Z
    ],
)
def test_well_known_rows_of_the_basic_profile(tag: int, action: Action) -> None:
    # Given / When / Then
    assert load_profile().action(tag) is action


# ---------------------------------------------------------------------- private attributes
def test_private_attributes_are_removed_without_retain_safe_private() -> None:
    # Given a safe list, but not the option
    profile = load_profile("", safe_private=[(CREATOR, 0x0009, 0x01)])

    # When / Then: listed or not, creator or data element, every private attribute goes
    assert profile.private_action(0x00091001, CREATOR) is Action.REMOVE
    assert profile.private_action(0x00090010, CREATOR) is Action.REMOVE
    assert profile.private_action(0x00191001, "OTHER") is Action.REMOVE


def test_retain_safe_private_keeps_only_listed_elements_and_their_creator() -> None:
    # Given Retain Safe Private with one listed element, (ACME 1.0, 0009, xx01)
    profile = load_profile("RetainSafePrivate", safe_private=[(CREATOR, 0x0009, 0x01)])

    # When / Then: the listed element byte is kept in whichever block the creator reserves
    assert profile.private_action(0x00091001, CREATOR) is Action.KEEP
    assert profile.private_action(0x00091101, CREATOR) is Action.KEEP
    assert profile.private_action(0x00091001, CREATOR + " ") is Action.KEEP  # padding
    # other elements, other creators, other groups are removed
    assert profile.private_action(0x00091002, CREATOR) is Action.REMOVE
    assert profile.private_action(0x00091001, "OTHER") is Action.REMOVE
    assert profile.private_action(0x00111001, CREATOR) is Action.REMOVE
    # the creator element of a group with a listed entry is kept, others are removed
    assert profile.private_action(0x00090010, CREATOR) is Action.KEEP
    assert profile.private_action(0x00090011, CREATOR) is Action.KEEP
    assert profile.private_action(0x00090010, "OTHER") is Action.REMOVE
    assert profile.private_action(0x00110010, CREATOR) is Action.REMOVE


def test_retain_safe_private_removes_elements_without_a_creator() -> None:
    # Given Retain Safe Private with a listed element
    profile = load_profile("RetainSafePrivate", safe_private=[(CREATOR, 0x0009, 0x01)])

    # When the element's block has no private creator
    # Then it cannot be known safe
    assert profile.private_action(0x00091001, None) is Action.REMOVE


def test_the_default_safe_list_is_empty() -> None:
    # Given Retain Safe Private with no site list
    profile = load_profile("RetainSafePrivate")

    # When / Then
    assert profile.safe_private == frozenset()
    assert profile.private_action(0x00091001, CREATOR) is Action.REMOVE
    assert profile.private_action(0x00090010, CREATOR) is Action.REMOVE


# ---------------------------------------------------------------------- parse_options
@pytest.mark.parametrize(
    "text",
    [
        "CleanDescriptors,RetainUIDs",
        "CleanDescriptors RetainUIDs",
        " CleanDescriptors ,  RetainUIDs ",
        "CleanDescriptors,\nRetainUIDs,",
        ["CleanDescriptors", "RetainUIDs"],
        ("RetainUIDs", "CleanDescriptors", "RetainUIDs"),
    ],
    ids=["comma", "space", "padded", "newline-trailing-comma", "list", "tuple-repeated"],
)
def test_parse_options_accepts_comma_or_space_separated_names(text: Any) -> None:
    # Given / When
    options = parse_options(text)

    # Then
    assert options == frozenset({Option.CLEAN_DESCRIPTORS, Option.RETAIN_UIDS})


@pytest.mark.parametrize("text", ["", "none", "None", "NONE", "  ", [], ["none"]])
def test_parse_options_none_or_empty_means_no_options(text: Any) -> None:
    # Given / When / Then
    assert parse_options(text) == frozenset()
    assert load_profile(text).options == frozenset()


def test_parse_options_reads_every_option_by_its_name() -> None:
    # Given every option name
    # When / Then
    for name in COLUMN_OF:
        assert parse_options(name) == frozenset({Option(name)})
    assert {option.value for option in Option} == set(COLUMN_OF)


def test_parse_options_names_unknown_options() -> None:
    # Given a text with two unknown names among known ones
    text = "CleanDescriptors, RetainEverything, cleandescriptors"

    # When / Then: the error names both, and lists the known options
    with pytest.raises(ProfileError) as raised:
        parse_options(text)
    message = str(raised.value)
    assert "RetainEverything" in message
    assert "cleandescriptors" in message
    assert "RetainUIDs" in message


def test_parse_options_refuses_full_and_modified_dates_together() -> None:
    # Given / When / Then
    with pytest.raises(ProfileError, match="exclude each other"):
        parse_options("RetainLongitudinalFullDates,RetainLongitudinalModifiedDates")
    with pytest.raises(ProfileError):
        load_profile(["RetainLongitudinalModifiedDates", "RetainLongitudinalFullDates"])


def test_profile_error_is_a_value_error() -> None:
    # Given / When / Then
    assert issubclass(ProfileError, ValueError)


# ---------------------------------------------------------------------- method
def test_method_of_the_basic_profile_names_113100_and_the_edition() -> None:
    # Given / When
    method = load_profile().method

    # Then
    assert method == [f"113100 {BASIC_PROFILE_CODE[1]} (PS3.15 2025b)"]
    assert BASIC_PROFILE_CODE == ("113100", "Basic Application Confidentiality Profile")


@pytest.mark.parametrize("names", OPTION_SETS.values(), ids=OPTION_SETS.keys())
def test_method_lists_one_cid_7050_value_per_option(names: frozenset[str]) -> None:
    # Given a profile with the option set
    profile = load_profile(sorted(names))

    # When
    method = profile.method

    # Then: the profile first, then one value per option, by its code, each a valid LO value
    assert method[0].startswith("113100 ")
    assert "2025b" in method[0]
    codes = [value.split(" ", 1)[0] for value in method[1:]]
    assert sorted(codes) == sorted(CID_7050[name] for name in names)
    assert len(set(codes)) == len(codes)
    for value in method:
        assert 0 < len(value) <= 64, value
        assert "\\" not in value


def test_method_is_deterministic_whatever_the_option_order() -> None:
    # Given the same options in two orders
    first = load_profile("RetainUIDs,CleanDescriptors,RetainDeviceIdentity")
    second = load_profile(["RetainDeviceIdentity", "CleanDescriptors", "RetainUIDs"])

    # When / Then
    assert first.method == second.method
    assert first == second


def test_profile_knows_its_date_options() -> None:
    # Given / When / Then
    assert load_profile("RetainLongitudinalModifiedDates").modified_dates
    assert not load_profile("RetainLongitudinalModifiedDates").full_dates
    assert load_profile("RetainLongitudinalFullDates").full_dates
    assert not load_profile().modified_dates
    assert isinstance(load_profile(), Profile)


def test_safe_private_attributes_are_read_from_the_parameter() -> None:
    # Given the parameter's text with two entries, spaces and an empty one
    text = "GEMS_ACQU_01:0019:1E ; SIEMENS CT VA0  COAD:0019:92;"

    # When it is parsed and used with Retain Safe Private
    safe = parse_safe_private(text)
    profile = load_profile("RetainSafePrivate", safe_private=safe)

    # Then each entry keeps its element and its creator, and nothing else
    assert safe == {("GEMS_ACQU_01", 0x0019, 0x1E), ("SIEMENS CT VA0  COAD", 0x0019, 0x92)}
    assert profile.private_action(0x0019101E, "GEMS_ACQU_01") is Action.KEEP
    assert profile.private_action(0x00190010, "GEMS_ACQU_01") is Action.KEEP
    assert profile.private_action(0x0019101F, "GEMS_ACQU_01") is Action.REMOVE
    assert load_profile("", safe_private=safe).private_action(0x0019101E, "GEMS_ACQU_01") is Action.REMOVE


@pytest.mark.parametrize("text", ["GEMS:0018:1E", "GEMS:0019", "no colons", "GEMS:0019:1E0"])
def test_a_malformed_safe_private_entry_is_refused(text: str) -> None:
    with pytest.raises(ProfileError):
        parse_safe_private(text)

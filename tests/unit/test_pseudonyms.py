"""Keyed pseudonyms (ahi_pipeline.pseudonyms): determinism, key separation, VR validity, date shifts, dummies.

Validity is checked with pydicom's own validators (``validate_value`` in ``RAISE`` mode) and, where
pydicom checks only the length (LO, SH, PN), with the remaining PS3.5 rules: no backslash, no control
characters, at most 3 PN component groups of at most 5 components.
"""

from __future__ import annotations

import base64
import datetime
import hashlib
import hmac
import re
import string
from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from pydicom import config
from pydicom.valuerep import validate_value

from ahi_pipeline.pseudonyms import (
    DATE_SHIFT_MAX_DAYS,
    MIN_KEY_BYTES,
    MIN_PLAIN_SECRET_CHARS,
    UID_ROOT,
    Pseudonymizer,
)

pytestmark = pytest.mark.unit

KEY = bytes(range(32))
OTHER_KEY = bytes(range(1, 33))
PSEUDONYMS = Pseudonymizer(KEY)
OTHER = Pseudonymizer(OTHER_KEY)
PATIENT = "DOE^JANE"  # a sentinel that must never reach an error message
STUDY_UID = "1.2.840.113619.2.55.3.604688119.969.1268071029.320"

SOME_EXAMPLES = settings(max_examples=150, deadline=None)
FEW_EXAMPLES = settings(max_examples=60, deadline=None)

UI_PATTERN = re.compile(r"(0|[1-9][0-9]*)(\.(0|[1-9][0-9]*))*")
CONTROL = re.compile(r"[\x00-\x1f\x7f]")


def assert_valid(vr: str, value: Any) -> None:
    """``value`` is valid for ``vr``: pydicom's validator in RAISE mode, and the rules it leaves out."""
    validate_value(vr, value, config.RAISE)
    if vr in ("LO", "SH", "PN", "CS", "AE", "LT", "ST", "UT", "UC"):
        assert isinstance(value, str)
        assert not CONTROL.search(value)
    if vr in ("LO", "SH", "PN", "CS", "AE", "UC"):
        assert "\\" not in value
    if vr == "LO":
        assert len(value) <= 64
    if vr == "PN":
        groups = value.split("=")
        assert len(groups) <= 3
        for group in groups:
            assert len(group) <= 64
            assert len(group.split("^")) <= 5
    if vr == "UI":
        assert len(value) <= 64
        assert UI_PATTERN.fullmatch(value)
    if vr == "AS":
        assert len(value) == 4


def hmac_of(key: bytes, purpose: bytes, text: str) -> bytes:
    subkey = hmac.new(key, b"ahi-deid/v1/" + purpose, hashlib.sha256).digest()
    return hmac.new(subkey, text.encode(), hashlib.sha256).digest()


uids = st.lists(st.integers(min_value=0, max_value=10**20), min_size=2, max_size=12).map(
    lambda parts: ".".join(map(str, parts))
)
patient_keys = st.text(alphabet=string.ascii_letters + string.digits + "-_^ ", max_size=40)
dates = st.dates(min_value=datetime.date(1900, 1, 1), max_value=datetime.date(2100, 12, 31))
offsets = st.integers(min_value=-DATE_SHIFT_MAX_DAYS, max_value=-1)


# ==================================================================================== the key
def test_a_key_shorter_than_16_bytes_is_refused_with_a_clear_message() -> None:
    # Given a 15-byte key
    # When a pseudonymizer is made from it
    # Then it is refused, saying how long the key must be
    with pytest.raises(ValueError, match="at least 16 bytes"):
        Pseudonymizer(b"x" * (MIN_KEY_BYTES - 1))


def test_a_16_byte_key_is_enough_and_the_repr_hides_it() -> None:
    # Given a 16-byte key
    key = b"sixteen-byte-key"

    # When a pseudonymizer is made from it
    pseudonyms = Pseudonymizer(key)

    # Then it works and its repr shows neither the key nor anything derived from it
    assert pseudonyms.patient_id("123").startswith("ANON")
    assert repr(pseudonyms) == "Pseudonymizer(key=<hidden>)"
    assert "sixteen" not in repr(pseudonyms)


def test_the_pseudonyms_are_the_documented_hmacs_of_per_purpose_subkeys() -> None:
    # Given the documented derivation: HMAC-SHA256(key, b"ahi-deid/v1/" + purpose), then HMAC of the text
    # When the pseudonyms of a patient id, a name, a UID and a date offset are made
    # Then each is exactly the documented function of its sub-key's HMAC
    id_digest = hmac_of(KEY, b"patient-id", "123456")
    assert PSEUDONYMS.patient_id(" 123456 ") == "ANON" + base64.b32encode(id_digest).decode()[:16]
    name_digest = hmac_of(KEY, b"patient-name", "DOE^JOHN")
    assert PSEUDONYMS.patient_name("Doe^John") == "ANON^" + base64.b32encode(name_digest).decode()[:12]
    uid_digest = hmac_of(KEY, b"uid", STUDY_UID)
    assert PSEUDONYMS.uid(STUDY_UID) == f"2.25.{int.from_bytes(uid_digest[:16], 'big')}"
    date_digest = hmac_of(KEY, b"date-offset", "123456")
    assert PSEUDONYMS.date_offset_days("123456") == -(int.from_bytes(date_digest[:8], "big") % 3650 + 1)


# ==================================================================================== determinism
def test_the_same_key_and_input_give_the_same_output_in_a_fresh_instance() -> None:
    # Given two pseudonymizers made separately from the same key (two Lambda invocations, two runs)
    first, second = Pseudonymizer(KEY), Pseudonymizer(bytes(KEY))

    # When each pseudonymizes the same values, twice
    def outputs(pseudonyms: Pseudonymizer) -> tuple[object, ...]:
        return (
            pseudonyms.patient_id("123456"),
            pseudonyms.patient_name("Doe^John"),
            pseudonyms.uid(STUDY_UID),
            pseudonyms.date_offset_days("123456"),
        )

    # Then the outputs are identical
    assert outputs(first) == outputs(first) == outputs(second)


@FEW_EXAMPLES
@given(text=st.text(max_size=64))
def test_every_pseudonym_is_deterministic_for_any_text(text: str) -> None:
    # Given any text, and a fresh pseudonymizer with the same key
    fresh = Pseudonymizer(KEY)

    # When both pseudonymize it
    # Then they agree on every kind of pseudonym
    assert fresh.patient_id(text) == PSEUDONYMS.patient_id(text)
    assert fresh.patient_name(text) == PSEUDONYMS.patient_name(text)
    assert fresh.uid(text) == PSEUDONYMS.uid(text)
    assert fresh.date_offset_days(text) == PSEUDONYMS.date_offset_days(text)


def test_a_uid_and_its_references_get_the_same_replacement() -> None:
    # Given a study UID as the study carries it, as a reference carries it, and NUL-padded as on the wire
    study, reference, padded = STUDY_UID, str(STUDY_UID), STUDY_UID + "\x00"

    # When each is replaced
    # Then all three become the same new UID, which is not the original
    assert PSEUDONYMS.uid(study) == PSEUDONYMS.uid(reference) == PSEUDONYMS.uid(padded)
    assert PSEUDONYMS.uid(STUDY_UID + " ") == PSEUDONYMS.uid(study)
    assert PSEUDONYMS.uid(study) != study


# ==================================================================================== key separation
def test_another_key_gives_other_pseudonyms() -> None:
    # Given two pseudonymizers with different keys
    # When each pseudonymizes the same values
    # Then no pseudonym is shared
    assert PSEUDONYMS.patient_id("123456") != OTHER.patient_id("123456")
    assert PSEUDONYMS.patient_name("Doe^John") != OTHER.patient_name("Doe^John")
    assert PSEUDONYMS.uid(STUDY_UID) != OTHER.uid(STUDY_UID)
    patients = [f"PAT{number:04d}" for number in range(50)]
    assert [PSEUDONYMS.date_offset_days(key) for key in patients] != [
        OTHER.date_offset_days(key) for key in patients
    ]


def test_a_patient_id_and_a_patient_name_of_the_same_text_are_unrelated() -> None:
    # Given a text used both as a patient ID and as a patient name
    text = "DOE^JOHN"

    # When it is pseudonymized as each
    as_id = PSEUDONYMS.patient_id(text).removeprefix("ANON")
    as_name = PSEUDONYMS.patient_name(text).removeprefix("ANON^")

    # Then the two share nothing (independent sub-keys), nor does the UID of the same text
    assert not as_id.startswith(as_name[:4])
    assert as_name not in as_id
    assert hmac_of(KEY, b"patient-id", text) != hmac_of(KEY, b"patient-name", text)


# ==================================================================================== names and ids
@pytest.mark.parametrize(
    "variant",
    [
        "DOE^JOHN",
        "Doe^John",
        "DOE^JOHN^^",
        "doe^john^^^",
        " Doe^John ",
        "Doe ^ John",
        "DOE^JOHN=",
        "DOE^JOHN^=^",
    ],
)
def test_equivalent_spellings_of_a_name_get_one_pseudonym(variant: str) -> None:
    # Given a spelling of the same PN value (case, padding, trailing empty components or groups)
    # When it is pseudonymized
    # Then it is the pseudonym of DOE^JOHN
    assert PSEUDONYMS.patient_name(variant) == PSEUDONYMS.patient_name("DOE^JOHN")


@pytest.mark.parametrize(
    "other", ["JOHN^DOE", "DOE^JON", "DOE", "DOE^^JOHN", "DOE^JOHN=ДОУ^ДЖОН", "DOE-JOHN"]
)
def test_different_names_get_different_pseudonyms(other: str) -> None:
    # Given a name that differs from DOE^JOHN in content or in component order
    # When both are pseudonymized
    # Then the pseudonyms differ
    assert PSEUDONYMS.patient_name(other) != PSEUDONYMS.patient_name("DOE^JOHN")


def test_patient_ids_ignore_padding_but_not_leading_zeros_or_case() -> None:
    # Given patient IDs with and without padding, with leading zeros and in another case
    # When pseudonymized
    # Then padding is ignored, everything else is significant
    assert PSEUDONYMS.patient_id("00123 ") == PSEUDONYMS.patient_id(" 00123")
    assert PSEUDONYMS.patient_id("00123") != PSEUDONYMS.patient_id("123")
    assert PSEUDONYMS.patient_id("abc") != PSEUDONYMS.patient_id("ABC")


def test_patient_pseudonyms_have_the_documented_shape() -> None:
    # Given a patient ID and name
    # When pseudonymized
    patient_id = PSEUDONYMS.patient_id("123456")
    patient_name = PSEUDONYMS.patient_name("Doe^John")

    # Then: ANON + 16 and ANON^ + 12 characters of the upper-case base32 alphabet
    assert re.fullmatch(r"ANON[A-Z2-7]{16}", patient_id)
    assert re.fullmatch(r"ANON\^[A-Z2-7]{12}", patient_name)


@SOME_EXAMPLES
@given(text=st.text(max_size=200))
def test_patient_pseudonyms_are_valid_lo_and_pn_for_any_original(text: str) -> None:
    # Given any original text (control characters, backslashes, long strings, any script)
    # When pseudonymized as a patient ID and a patient name
    # Then the results are valid LO and PN values
    assert_valid("LO", PSEUDONYMS.patient_id(text))
    assert_valid("PN", PSEUDONYMS.patient_name(text))


# ==================================================================================== UIDs
@SOME_EXAMPLES
@given(original=uids)
def test_replacement_uids_are_valid_ui_values(original: str) -> None:
    # Given any UID-shaped original (components may be 0, long, or have leading zeros removed)
    # When replaced
    replaced = PSEUDONYMS.uid(original)

    # Then the result is a valid UI: 2.25 root, at most 64 characters, no leading zeros, digits and dots
    assert replaced.startswith(UID_ROOT)
    assert_valid("UI", replaced)
    assert int(replaced.removeprefix(UID_ROOT)) < 2**128


@FEW_EXAMPLES
@given(originals=st.sets(uids, min_size=2, max_size=20))
def test_distinct_uids_get_distinct_replacements(originals: set[str]) -> None:
    # Given distinct UIDs
    # When each is replaced
    replaced = {PSEUDONYMS.uid(original) for original in originals}

    # Then no two collide
    assert len(replaced) == len(originals)


def test_malformed_uids_are_still_replaced_consistently() -> None:
    # Given UIDs found in the wild that break the UI rules (leading zeros, letters, too long)
    originals = ["1.2.03.4", "1.2.3.ABC", "1." + "9" * 80]

    # When replaced
    # Then each gets a valid replacement, the same every time
    for original in originals:
        assert_valid("UI", PSEUDONYMS.uid(original))
        assert PSEUDONYMS.uid(original) == Pseudonymizer(KEY).uid(original)


# ==================================================================================== date offsets
def test_date_offsets_stay_in_range_never_zero_and_spread_over_it() -> None:
    # Given many patient keys
    patients = [f"PAT{number:05d}" for number in range(3000)]

    # When each gets its offset
    days = [PSEUDONYMS.date_offset_days(patient) for patient in patients]

    # Then all lie in [-3650, -1], none is 0, and they cover the range (not a handful of values)
    assert all(-DATE_SHIFT_MAX_DAYS <= day <= -1 for day in days)
    assert 0 not in days
    assert min(days) < -3500
    assert max(days) > -150
    assert len(set(days)) > 1500


def test_a_patients_offset_is_stable_and_ignores_padding() -> None:
    # Given a patient key with and without padding, and a fresh pseudonymizer
    # When offsets are computed
    # Then they are the same
    offset = PSEUDONYMS.date_offset_days("123456")
    assert PSEUDONYMS.date_offset_days(" 123456 ") == offset
    assert Pseudonymizer(KEY).date_offset_days("123456") == offset


@SOME_EXAMPLES
@given(patient=patient_keys, date=dates)
def test_a_shifted_date_always_differs_from_the_original(patient: str, date: datetime.date) -> None:
    # Given any patient and any date of theirs
    original = date.strftime("%Y%m%d")

    # When the date is shifted by the patient's offset
    shifted = PSEUDONYMS.shift_date(original, PSEUDONYMS.date_offset_days(patient))

    # Then the result is a valid DA, earlier than the original
    assert_valid("DA", shifted)
    assert shifted < original


# ==================================================================================== DA
@pytest.mark.parametrize(
    ("original", "days", "expected"),
    [
        ("20240229", -365, "20230301"),  # leap day, back one year: 2023 has no 29 February
        ("20240229", -366, "20230228"),
        ("20240229", -1461, "20200229"),  # four years back: another leap day
        ("20240301", -1, "20240229"),  # month boundary into a leap day
        ("20230301", -1, "20230228"),  # month boundary, common year
        ("20000301", -1, "20000229"),  # 2000 is a leap year (divisible by 400)
        ("19000301", -1, "19000228"),  # 1900 is not (divisible by 100)
        ("20240101", -1, "20231231"),  # year boundary
        ("20240115", -3650, "20140117"),
        ("20231231", 1, "20240101"),  # forward shifts work too
        ("2024.02.29", -1, "20240228"),  # the legacy form comes back as YYYYMMDD
        ("20240315 ", -10, "20240305"),  # trailing padding
    ],
)
def test_da_values_are_shifted_by_whole_days(original: str, days: int, expected: str) -> None:
    # Given a DA value and a shift
    # When shifted
    shifted = Pseudonymizer.shift_date(original, days)

    # Then the date moves by exactly that many days and is a valid DA
    assert shifted == expected
    assert_valid("DA", shifted)


@pytest.mark.parametrize(
    "malformed",
    [
        "",
        "2024-02-29",
        "20240230",
        "20241301",
        "20240000",
        "2024022",
        "202402290",
        "2024.2.29",
        "20240101-20240131",
        "-20240101",
        " 20240101",
        "\uff12\uff10\uff12\uff14\uff10\uff12\uff12\uff19",  # fullwidth digits
        PATIENT,
    ],
)
def test_malformed_da_values_raise_without_echoing_the_value(malformed: str) -> None:
    # Given something that is not a DA date (a range, another format, an impossible date, a name)
    # When shifted
    with pytest.raises(ValueError, match="DA value") as info:
        Pseudonymizer.shift_date(malformed, -10)

    # Then the error does not quote the value
    if malformed.strip():
        assert malformed.strip() not in str(info.value)


def test_a_shift_beyond_year_one_raises() -> None:
    # Given the first representable date
    # When shifted backwards
    # Then the error says the result is out of range, without the value
    with pytest.raises(ValueError, match="outside the years") as info:
        Pseudonymizer.shift_date("00010101", -1)
    assert "00010101" not in str(info.value)


# ==================================================================================== DT
@pytest.mark.parametrize(
    ("original", "days", "expected"),
    [
        ("2024", -365, "2023"),  # round(-365 / 365.25) = -1 year
        ("2024", -3650, "2014"),  # round(-9.99) = -10 years
        ("2024", -100, "2024"),  # under half a year: the year says no more than it did
        ("2024+0100", -730, "2022+0100"),
        ("202402", -365, "202302"),  # round(-365 / 30.44) = -12 months
        ("202401", -31, "202312"),  # -1 month, across the year boundary
        ("202403", -60, "202401"),  # -2 months
        ("202402", -10, "202402"),  # under half a month
        ("20240229", -365, "20230301"),
        ("20240301", -1, "20240229"),
        ("2024022913", -365, "2023030113"),
        ("202402291330", -1, "202402281330"),
        ("20240229133005", -1, "20240228133005"),
        ("20240229133005.123456+0100", -365, "20230301133005.123456+0100"),
        ("20240229133005.1-0500", -1, "20240228133005.1-0500"),
        ("20240101000000+1400", -1, "20231231000000+1400"),
        ("20161231235960", -1, "20161230235960"),  # a leap second is kept as written
        ("20240229133005.123456 ", -1, "20240228133005.123456"),  # trailing padding
    ],
)
def test_dt_values_keep_their_precision_and_offset(original: str, days: int, expected: str) -> None:
    # Given a DT value of some precision, with or without a UTC offset
    # When shifted
    shifted = Pseudonymizer.shift_datetime(original, days)

    # Then it has the same precision and offset, moved by the rounded whole units, and is a valid DT
    assert shifted == expected
    assert_valid("DT", shifted)


@pytest.mark.parametrize(
    "malformed",
    [
        "",
        "202",
        "20241",
        "202413",
        "202400",
        "20240230",
        "2024022924",
        "202402291360",
        "20240229133061",
        "2024022913300",
        "20240229133005.",
        "20240229133005.1234567",
        "2024022913.5",  # a fraction without seconds
        "20240229T133005",
        "2024-02-29T13:30:05",
        "20240229133005+1500",
        "20240229133005+0160",
        "20240229133005+01",
        "20240229133005Z",
        "\u0662\u0660\u0662\u0664",  # Arabic-Indic digits
        PATIENT,
    ],
)
def test_malformed_dt_values_raise_without_echoing_the_value(malformed: str) -> None:
    # Given something that is not a DT value
    # When shifted
    with pytest.raises(ValueError, match="DT value") as info:
        Pseudonymizer.shift_datetime(malformed, -10)

    # Then the error does not quote the value
    if malformed:
        assert malformed not in str(info.value)


@SOME_EXAMPLES
@given(
    moment=st.datetimes(min_value=datetime.datetime(1900, 1, 1), max_value=datetime.datetime(2100, 12, 31)),
    precision=st.sampled_from([4, 6, 8, 10, 12, 14, 16, 21]),
    offset=st.sampled_from(["", "+0000", "-0500", "+0100", "+1400", "-1200"]),
    days=offsets,
)
def test_shifted_dt_values_are_valid_at_every_precision(
    moment: datetime.datetime, precision: int, offset: str, days: int
) -> None:
    # Given a DT value cut to one of its precisions (16 and 21: seconds with 1 and 6 fraction digits)
    original = moment.strftime("%Y%m%d%H%M%S.%f")[:precision] + offset

    # When shifted
    shifted = Pseudonymizer.shift_datetime(original, days)

    # Then it is a valid DT of the same length, with the same time of day and offset
    assert_valid("DT", shifted)
    assert len(shifted) == len(original)
    assert shifted.endswith(offset)
    if precision >= 8:
        assert shifted[8:] == original[8:]
        moved = datetime.datetime.strptime(shifted[:8], "%Y%m%d").date()
        assert (moved - moment.date()).days == days


# ==================================================================================== TM
@pytest.mark.parametrize("original", ["13", "1330", "133005", "133005.123456", "000000", "235960"])
def test_tm_values_are_unchanged(original: str) -> None:
    # Given a TM value
    # When shifted by whole days
    # Then it is unchanged
    assert Pseudonymizer.shift_time(original, -1234) == original
    assert PSEUDONYMS.shift_time(original, PSEUDONYMS.date_offset_days("123456")) == original


# ==================================================================================== dummies
@pytest.mark.parametrize(
    ("vr", "expected"),
    [
        ("AE", "ANONYMOUS"),
        ("AS", "000D"),
        ("CS", "ANONYMOUS"),
        ("DA", "19000101"),
        ("DS", "0"),
        ("DT", "19000101000000"),
        ("IS", "0"),
        ("LO", "ANONYMOUS"),
        ("LT", "ANONYMOUS"),
        ("PN", "ANONYMOUS"),
        ("SH", "ANONYMOUS"),
        ("ST", "ANONYMOUS"),
        ("TM", "000000"),
        ("UC", "ANONYMOUS"),
        ("UR", "http://anonymous.invalid"),
        ("UT", "ANONYMOUS"),
        ("US", 0),
        ("SS", 0),
        ("UL", 0),
        ("SL", 0),
        ("UV", 0),
        ("SV", 0),
        ("FL", 0.0),
        ("FD", 0.0),
    ],
)
def test_dummies_are_valid_for_their_vr(vr: str, expected: object) -> None:
    # Given a VR whose attributes may be replaced with a dummy
    # When its dummy is asked for (on the class or an instance)
    dummy = Pseudonymizer.dummy(vr)

    # Then it is the documented value, of the JSON type the VR uses, and valid for the VR
    assert dummy == expected
    assert type(dummy) is type(expected)
    assert PSEUDONYMS.dummy(vr) == dummy
    assert_valid(vr, dummy)


@pytest.mark.parametrize("vr", ["SQ", "OB", "OW", "OD", "OF", "OL", "OV", "UN"])
def test_sequences_and_bulk_data_have_no_dummy(vr: str) -> None:
    # Given a VR that metadata JSON cannot carry a dummy for
    # When its dummy is asked for
    # Then there is none: the caller removes the attribute
    assert Pseudonymizer.dummy(vr) is None


def test_uids_are_never_dummied() -> None:
    # Given the UI VR
    # When a dummy is asked for
    # Then it is refused, pointing at uid()
    with pytest.raises(ValueError, match=r"uid\(\)"):
        Pseudonymizer.dummy("UI")


@pytest.mark.parametrize("vr", ["AT", "XX", "pn", ""])
def test_a_vr_without_a_dummy_is_refused(vr: str) -> None:
    # Given a VR with no defined dummy (AT, an unknown or lower-case code)
    # When a dummy is asked for
    # Then it is refused
    with pytest.raises(ValueError, match="no dummy value"):
        Pseudonymizer.dummy(vr)


# ==================================================================================== secrets as text
def test_a_base64_secret_is_decoded() -> None:
    # Given a 32-byte key as base64 text, with the trailing newline a file or console may add
    text = base64.b64encode(KEY).decode() + "\n"

    # When a pseudonymizer is made from the text
    pseudonyms = Pseudonymizer.from_text(text)

    # Then it is the pseudonymizer of the decoded key
    assert pseudonyms.patient_id("123456") == PSEUDONYMS.patient_id("123456")
    assert pseudonyms.uid(STUDY_UID) == PSEUDONYMS.uid(STUDY_UID)


def test_a_16_byte_base64_secret_is_enough() -> None:
    # Given exactly 16 bytes as base64 (24 characters: too short as a plain secret)
    raw = b"0123456789abcdef"
    text = base64.b64encode(raw).decode()

    # When a pseudonymizer is made from the text
    # Then it is the pseudonymizer of the 16 bytes
    assert Pseudonymizer.from_text(text).patient_id("1") == Pseudonymizer(raw).patient_id("1")


@pytest.mark.parametrize(
    "secret",
    ["correct horse battery staple, twice over", "Ünïcödé pässphrase of thirty-two chars!"],
)
def test_a_long_plain_secret_is_used_as_utf8(secret: str) -> None:
    # Given a plain (not base64) secret of at least 32 characters
    assert len(secret) >= MIN_PLAIN_SECRET_CHARS

    # When a pseudonymizer is made from it
    # Then it is the pseudonymizer of its UTF-8 bytes
    assert Pseudonymizer.from_text(secret).patient_id("1") == Pseudonymizer(secret.encode()).patient_id("1")


@pytest.mark.parametrize(
    "secret",
    [
        "",
        "   ",
        "too short a secret",
        "x" * (MIN_PLAIN_SECRET_CHARS - 1),
        base64.b64encode(b"fifteen bytes!!").decode(),  # valid base64 of 15 bytes
    ],
)
def test_a_short_secret_is_refused_without_echoing_it(secret: str) -> None:
    # Given a secret that is neither 16 bytes of base64 nor 32 plain characters
    # When a pseudonymizer is made from it
    with pytest.raises(ValueError, match="base64") as info:
        Pseudonymizer.from_text(secret)

    # Then the error does not quote the secret
    if secret.strip():
        assert secret not in str(info.value)

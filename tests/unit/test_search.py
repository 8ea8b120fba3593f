"""SearchImageSets semantics, summaries and pagination tokens (emulator/search.py)."""

from __future__ import annotations

import base64
import json
from collections.abc import Mapping
from dataclasses import dataclass, replace
from datetime import UTC, datetime, timedelta, timezone
from typing import Any

import botocore.session
import pytest
from botocore.utils import parse_timestamp
from botocore.validate import ParamValidator

from emulator import search
from emulator.exceptions import ValidationException

pytestmark = pytest.mark.unit

MODEL = botocore.session.get_session().get_service_model("medical-imaging")

# The image set of the spec's search examples (api spec 7.4, "common response object").
SPEC_IMAGE_SET_ID = "09876543210987654321098765432109"
SPEC_TIME = datetime(2022, 12, 6, 21, 40, 59, 429000, tzinfo=UTC)
SPEC_STUDY_UID = "1.2.840.99999999.84710745.943275268089"
SPEC_DICOM_TAGS = {
    "DICOMStudyId": "2011201407",
    "DICOMStudyDate": "19991122",
    "DICOMPatientSex": "F",
    "DICOMStudyInstanceUID": SPEC_STUDY_UID,
    "DICOMPatientBirthDate": "19201120",
    "DICOMStudyDescription": "UNKNOWN",
    "DICOMPatientId": "SUBJECT08701",
    "DICOMPatientName": "Melissa844 Huel628",
    "DICOMNumberOfStudyRelatedInstances": 1,
    "DICOMStudyTime": "140728",
    "DICOMNumberOfStudyRelatedSeries": 1,
}

# The normalized test vectors of api spec 7.4, verbatim JSON.
VECTOR_EQUAL_PATIENT = '{"filters":[{"values":[{"DICOMPatientId":"SUBJECT08701"}],"operator":"EQUAL"}]}'
VECTOR_BETWEEN_STUDY_DATE = """{"filters":[{"values":[
    {"DICOMStudyDateAndTime":{"DICOMStudyDate":"19900101","DICOMStudyTime":"000000"}},
    {"DICOMStudyDateAndTime":{"DICOMStudyDate":"20230101","DICOMStudyTime":"000000"}}],"operator":"BETWEEN"}]}"""
VECTOR_BETWEEN_CREATED = """{"filters":[{"values":[{"createdAt":"1985-04-12T23:20:50.52Z"},
    {"createdAt":"2022-04-12T23:20:50.52Z"}],"operator":"BETWEEN"}]}"""
VECTOR_UPDATED_SERIES_SORT = """{"filters":[{"values":[{"updatedAt":"2024-03-11T15:00:05.074000-07:00"},
    {"updatedAt":"2024-03-11T16:00:05.074000-07:00"}],"operator":"BETWEEN"},
    {"values":[{"DICOMSeriesInstanceUID":"1.2.840.99999999.84710745.943275268089"}],"operator":"EQUAL"}],
    "sort":{"sortField":"updatedAt","sortOrder":"ASC"}}"""


@dataclass(frozen=True)
class FakeImageSet:
    """A synthetic image set as the backend hands it to the search."""

    image_set_id: str
    created_at: datetime
    updated_at: datetime
    document: Mapping[str, Any]
    version: int = 1
    is_primary: bool = True
    storage_tier: str | None = None
    last_accessed_at: datetime | None = None


def make_document(
    *,
    patient_id: Any = "PAT-1",
    patient_name: Any = "DOE^JANE",
    birth_date: str | None = "19700101",
    sex: str | None = "F",
    study_uid: str = "1.2.3.4",
    study_id: str | None = "S1",
    study_date: str | None = "20200101",
    study_time: str | None = "120000",
    description: str | None = "CT CHEST",
    accession: str | None = "ACC-1",
    series: Mapping[str, Mapping[str, Any]] | None = None,
) -> dict[str, Any]:
    """A metadata document shaped as api spec 4.2 (Series inside Study, ImageFrames beside DICOM)."""
    if series is None:
        series = {"1.2.3.4.5": {"Modality": "CT", "BodyPartExamined": "CHEST", "SeriesNumber": "3"}}
    return {
        "SchemaVersion": "1.1",
        "DatastoreID": "0" * 32,
        "ImageSetID": "f" * 32,
        "Patient": {
            "DICOM": {
                "PatientName": patient_name,
                "PatientID": patient_id,
                "PatientBirthDate": birth_date,
                "PatientSex": sex,
            }
        },
        "Study": {
            "DICOM": {
                "StudyInstanceUID": study_uid,
                "StudyID": study_id,
                "StudyDate": study_date,
                "StudyTime": study_time,
                "StudyDescription": description,
                "AccessionNumber": accession,
            },
            "Series": {
                uid: {
                    "DICOM": {"SeriesInstanceUID": uid, **attributes},
                    "Instances": {
                        f"{uid}.{n}": {"DICOM": {"InstanceNumber": str(n)}, "ImageFrames": [{"ID": "a" * 32}]}
                        for n in range(1, int(attributes.get("_instances", 1)) + 1)
                    },
                }
                for uid, attributes in series.items()
            },
        },
    }


def spec_image_set() -> FakeImageSet:
    document = make_document(
        patient_id="SUBJECT08701",
        patient_name="Melissa844 Huel628",
        birth_date="19201120",
        sex="F",
        study_uid=SPEC_STUDY_UID,
        study_id="2011201407",
        study_date="19991122",
        study_time="140728",
        description="UNKNOWN",
        accession=None,
        series={SPEC_STUDY_UID: {"Modality": "CT"}},  # example 4 filters on this UID as a series UID
    )
    return FakeImageSet(SPEC_IMAGE_SET_ID, SPEC_TIME, SPEC_TIME, document)


def image_set(number: int, *, updated: datetime | None = None, **document: Any) -> FakeImageSet:
    created = datetime(2021, 1, 1, tzinfo=UTC) + timedelta(days=number)
    return FakeImageSet(f"{number:032x}", created, updated or created, make_document(**document))


def parsed(vector: str) -> dict[str, Any]:
    """A JSON criteria vector as the HTTP layer hands it over: timestamps parsed the way botocore does."""

    def convert(value: Any) -> Any:
        if isinstance(value, dict):
            return {
                k: parse_timestamp(v) if k in ("createdAt", "updatedAt") else convert(v)
                for k, v in value.items()
            }
        if isinstance(value, list):
            return [convert(v) for v in value]
        return value

    result: dict[str, Any] = convert(json.loads(vector))
    return result


def ids(found: list[Any]) -> list[str]:
    return [s.image_set_id for s in found]


def between(attribute: str, lower: Any, upper: Any) -> dict[str, Any]:
    return {"filters": [{"values": [{attribute: lower}, {attribute: upper}], "operator": "BETWEEN"}]}


def equal(attribute: str, value: Any) -> dict[str, Any]:
    return {"filters": [{"values": [{attribute: value}], "operator": "EQUAL"}]}


def timezone_offset(*, hours: int) -> timezone:
    return timezone(timedelta(hours=hours))


def model_members(shape: str) -> tuple[str, ...]:
    return tuple(MODEL.shape_for(shape).members)


# --------------------------------------------------------------------------------------------------
# The module's tables match botocore's model (a model update shows up here first)


def test_tables_match_the_model() -> None:
    # Given the model shapes
    sort = MODEL.shape_for("Sort").members
    filters = MODEL.shape_for("SearchCriteria").members["filters"]

    # Then the module's tables name exactly the model's members
    assert model_members("SearchByAttributeValue") == search.SEARCH_ATTRIBUTES
    assert model_members("DICOMTags") == search.DICOM_TAG_MEMBERS
    assert tuple(sort["sortField"].enum) == search.SORT_FIELDS
    assert tuple(sort["sortOrder"].enum) == search.SORT_ORDERS
    assert filters.metadata["max"] == search.MAX_FILTERS


# --------------------------------------------------------------------------------------------------
# The spec's examples and test vectors (api spec 7.4)


def test_vector_1_equal_patient_id_returns_the_example_summary() -> None:
    # Given the example image set among others
    example = spec_image_set()
    others = [image_set(1, patient_id="SUBJECT00001"), image_set(2, patient_id=None)]

    # When searching with test vector 1
    found = search.search_image_sets([*others, example], parsed(VECTOR_EQUAL_PATIENT))

    # Then only the example matches, and its summary carries the example's values
    assert ids(found) == [SPEC_IMAGE_SET_ID]
    result = search.summary(found[0])
    assert result["imageSetId"] == SPEC_IMAGE_SET_ID
    assert result["version"] == 1
    assert result["createdAt"] == result["updatedAt"] == SPEC_TIME
    assert {k: result["DICOMTags"][k] for k in SPEC_DICOM_TAGS} == SPEC_DICOM_TAGS
    assert result["DICOMTags"]["DICOMAccessionNumber"] is None


def test_vector_2_between_study_date_and_time() -> None:
    # Given studies before, inside and after 1990-01-01 00:00 .. 2023-01-01 00:00
    example = spec_image_set()
    before = image_set(1, study_date="19891231", study_time="235959")
    first_instant = image_set(2, study_date="19900101", study_time="000000")
    last_instant = image_set(3, study_date="20230101", study_time=None)  # no time: 00:00
    after = image_set(4, study_date="20230101", study_time="000000.000001")

    # When searching with test vector 2
    found = search.search_image_sets(
        [example, before, first_instant, last_instant, after], parsed(VECTOR_BETWEEN_STUDY_DATE)
    )

    # Then the bounds are inclusive and the example (1999-11-22) is inside
    assert set(ids(found)) == {SPEC_IMAGE_SET_ID, first_instant.image_set_id, last_instant.image_set_id}


def test_vector_3_between_created_at_excludes_the_inconsistent_example() -> None:
    # Given the example (created 2022-12-06, outside the vector's range; spec 7.4 notes it) and a 2021 set
    example = spec_image_set()
    inside = image_set(10)

    # When searching with test vector 3
    found = search.search_image_sets([example, inside], parsed(VECTOR_BETWEEN_CREATED))

    # Then only the set created inside 1985-04-12T23:20:50.52Z .. 2022-04-12T23:20:50.52Z matches
    assert ids(found) == [inside.image_set_id]


def test_vector_4_updated_at_range_and_series_uid_sorted_ascending() -> None:
    # Given sets updated around 2024-03-11 22:00:05.074 .. 23:00:05.074 UTC (15:00-16:00 at -07:00)
    series = {SPEC_STUDY_UID: {"Modality": "CT"}}
    lower = datetime(2024, 3, 11, 22, 0, 5, 74000, tzinfo=UTC)
    upper = lower + timedelta(hours=1)
    at_lower = image_set(1, updated=lower, series=series)
    middle = image_set(2, updated=lower + timedelta(minutes=30), series=series)
    at_upper = image_set(3, updated=upper, series=series)
    too_late = image_set(4, updated=upper + timedelta(microseconds=1), series=series)
    other_series = image_set(5, updated=lower + timedelta(minutes=10))

    # When searching with test vector 4
    found = search.search_image_sets(
        [middle, too_late, at_upper, other_series, at_lower], parsed(VECTOR_UPDATED_SERIES_SORT)
    )

    # Then both filters apply (ANDed), bounds compare in UTC, oldest first
    assert ids(found) == [at_lower.image_set_id, middle.image_set_id, at_upper.image_set_id]


@pytest.mark.parametrize(
    "vector",
    [VECTOR_EQUAL_PATIENT, VECTOR_BETWEEN_STUDY_DATE, VECTOR_BETWEEN_CREATED, VECTOR_UPDATED_SERIES_SORT],
)
def test_spec_vectors_are_valid_for_the_model_and_for_the_semantics(vector: str) -> None:
    # Given a spec vector
    criteria = parsed(vector)

    # When checking it against the model's shapes and then the semantic rules
    report = ParamValidator().validate(criteria, MODEL.shape_for("SearchCriteria"))
    search.validate_search_criteria(criteria)

    # Then both accept it
    assert not report.has_errors(), report.generate_report()


@pytest.mark.parametrize("criteria", [None, {}, {"sort": {"sortField": "updatedAt", "sortOrder": "DESC"}}])
def test_no_filters_returns_every_image_set(criteria: dict[str, Any] | None) -> None:
    # Given three image sets (the tutorials empty a data store this way, spec 7.1)
    sets = [image_set(n) for n in range(3)]

    # When searching without filters
    found = search.search_image_sets(sets, criteria)

    # Then all come back
    assert len(found) == 3


# --------------------------------------------------------------------------------------------------
# Every attribute with EQUAL


@pytest.mark.parametrize(
    ("attribute", "value", "document"),
    [
        ("DICOMPatientId", "PAT-7", {"patient_id": "PAT-7"}),
        ("DICOMAccessionNumber", "ACC-7", {"accession": "ACC-7"}),
        ("DICOMStudyId", "S7", {"study_id": "S7"}),
        ("DICOMStudyInstanceUID", "1.2.7", {"study_uid": "1.2.7"}),
        ("DICOMSeriesInstanceUID", "1.2.7.1", {"series": {"1.2.7.1": {"Modality": "MR"}}}),
        (
            "DICOMStudyDateAndTime",
            {"DICOMStudyDate": "20240229", "DICOMStudyTime": "081530.250000"},
            {"study_date": "20240229", "study_time": "081530.25"},
        ),
    ],
)
def test_equal_on_document_attributes(attribute: str, value: Any, document: dict[str, Any]) -> None:
    # Given one image set with the value and two without
    target = image_set(7, **document)
    others = [image_set(1), image_set(2, patient_id=None, accession=None, study_id=None)]

    # When searching with EQUAL
    found = search.search_image_sets([*others, target], equal(attribute, value))

    # Then only the one that has the value matches
    assert ids(found) == [target.image_set_id]


def test_equal_on_study_date_without_time_means_midnight() -> None:
    # Given a study at 00:00, one without a time and one later the same day
    midnight = image_set(1, study_date="20240229", study_time="000000")
    no_time = image_set(2, study_date="20240229", study_time=None)
    later = image_set(3, study_date="20240229", study_time="081530")

    # When searching EQUAL on the date alone (spec 7.2: absent time is 00:00)
    found = search.search_image_sets(
        [midnight, no_time, later], equal("DICOMStudyDateAndTime", {"DICOMStudyDate": "20240229"})
    )

    # Then only the 00:00 instants match
    assert set(ids(found)) == {midnight.image_set_id, no_time.image_set_id}


@pytest.mark.parametrize("attribute", ["createdAt", "updatedAt"])
def test_equal_on_timestamps_compares_instants_in_utc(attribute: str) -> None:
    # Given a set created and updated at 12:00 UTC
    instant = datetime(2024, 5, 1, 12, 0, tzinfo=UTC)
    target = FakeImageSet("a" * 32, instant, instant, make_document())
    other = FakeImageSet(
        "b" * 32, instant + timedelta(seconds=1), instant + timedelta(seconds=1), make_document()
    )
    plus_two = timezone_offset(hours=2)

    # When searching EQUAL with the same instant written at +02:00
    found = search.search_image_sets([target, other], equal(attribute, instant.astimezone(plus_two)))

    # Then the instant matches
    assert ids(found) == [target.image_set_id]


@pytest.mark.parametrize("flag", [True, False])
def test_equal_on_is_primary(flag: bool) -> None:
    # Given a primary and a non-primary image set
    primary = image_set(1)
    secondary = replace(image_set(2), is_primary=False)

    # When searching EQUAL on isPrimary
    found = search.search_image_sets([primary, secondary], equal("isPrimary", flag))

    # Then the flag selects one
    assert ids(found) == [(primary if flag else secondary).image_set_id]


def test_equal_matches_values_exactly() -> None:
    # Given IDs that differ only in case or by a prefix
    sets = [
        image_set(1, patient_id="pat-1"),
        image_set(2, patient_id="PAT-10"),
        image_set(3, patient_id="PAT-1"),
    ]

    # When searching EQUAL
    found = search.search_image_sets(sets, equal("DICOMPatientId", "PAT-1"))

    # Then matching is exact and case-sensitive
    assert ids(found) == [sets[2].image_set_id]


# --------------------------------------------------------------------------------------------------
# Every attribute with BETWEEN


def test_between_created_at_is_inclusive() -> None:
    # Given sets created on consecutive days
    sets = [image_set(n) for n in range(5)]

    # When searching between the second and the fourth creation instants
    found = search.search_image_sets(sets, between("createdAt", sets[1].created_at, sets[3].created_at))

    # Then both bounds are included
    assert set(ids(found)) == {s.image_set_id for s in sets[1:4]}


def test_between_updated_at_accepts_mixed_offsets() -> None:
    # Given sets updated hourly from 10:00 UTC
    base = datetime(2024, 3, 11, 10, tzinfo=UTC)
    sets = [image_set(n, updated=base + timedelta(hours=n)) for n in range(5)]

    # When the bounds are 11:00 UTC written at -07:00 and 13:00 UTC written at +02:00
    lower = (base + timedelta(hours=1)).astimezone(timezone_offset(hours=-7))
    upper = (base + timedelta(hours=3)).astimezone(timezone_offset(hours=2))
    found = search.search_image_sets(sets, between("updatedAt", lower, upper))

    # Then the comparison is in UTC
    assert set(ids(found)) == {s.image_set_id for s in sets[1:4]}


def test_between_study_date_and_time_with_optional_times_and_fractions() -> None:
    # Given studies on 2001-01-09 at several times (one with a fractional TM, as in JA:2283)
    early = image_set(1, study_date="20010109", study_time="084247.000000")
    noon = image_set(2, study_date="20010109", study_time="1200")
    late = image_set(3, study_date="20010109", study_time="235959.999999")
    no_date = image_set(4, study_date=None)

    # When the lower bound has no time (00:00) and the upper bound is 12:00
    criteria = between(
        "DICOMStudyDateAndTime",
        {"DICOMStudyDate": "20010109"},
        {"DICOMStudyDate": "20010109", "DICOMStudyTime": "12"},
    )
    found = search.search_image_sets([early, noon, late, no_date], criteria)

    # Then the times are compared to the microsecond and a set without a study date never matches
    assert set(ids(found)) == {early.image_set_id, noon.image_set_id}


@pytest.mark.parametrize(
    ("attribute", "lower", "upper"),
    [
        ("DICOMPatientId", "A", "Z"),
        ("DICOMAccessionNumber", "A", "Z"),
        ("DICOMStudyId", "1", "9"),
        ("DICOMStudyInstanceUID", "1.1", "1.9"),
        ("DICOMSeriesInstanceUID", "1.1", "1.9"),
        ("isPrimary", False, True),
    ],
)
def test_between_is_refused_on_attributes_without_an_order(attribute: str, lower: Any, upper: Any) -> None:
    # Given a BETWEEN on a non-range attribute
    criteria = between(attribute, lower, upper)

    # When validating
    with pytest.raises(ValidationException) as caught:
        search.search_image_sets([image_set(1)], criteria)

    # Then the message names the attribute and the allowed ones
    assert f"not supported for {attribute}" in caught.value.message
    assert "createdAt" in caught.value.message


# --------------------------------------------------------------------------------------------------
# Sorting


def test_default_order_is_updated_at_descending() -> None:
    # Given sets updated in scrambled order
    base = datetime(2024, 1, 1, tzinfo=UTC)
    sets = [image_set(n, updated=base + timedelta(hours=h)) for n, h in [(1, 5), (2, 1), (3, 9), (4, 3)]]

    # When searching without a sort
    found = search.search_image_sets(sets, None)

    # Then the newest update comes first (spec 7.1)
    assert ids(found) == [sets[i].image_set_id for i in (2, 0, 3, 1)]


@pytest.mark.parametrize(
    ("field", "order", "expected"),
    [
        ("updatedAt", "ASC", [2, 1, 3]),
        ("updatedAt", "DESC", [3, 1, 2]),
        ("createdAt", "ASC", [1, 2, 3]),
        ("createdAt", "DESC", [3, 2, 1]),
        ("DICOMStudyDateAndTime", "ASC", [3, 1, 2]),
        ("DICOMStudyDateAndTime", "DESC", [2, 1, 3]),
    ],
)
def test_sort_fields_and_orders(field: str, order: str, expected: list[int]) -> None:
    # Given three sets whose creation, update and study instants are ordered differently
    base = datetime(2024, 1, 1, tzinfo=UTC)
    sets = {
        1: image_set(1, updated=base + timedelta(hours=2), study_date="20200101", study_time="120000"),
        2: image_set(2, updated=base + timedelta(hours=1), study_date="20200101", study_time="120001"),
        3: image_set(3, updated=base + timedelta(hours=3), study_date="20191231"),
    }

    # When sorting
    found = search.search_image_sets(list(sets.values()), {"sort": {"sortField": field, "sortOrder": order}})

    # Then the order follows the field and the direction
    assert ids(found) == [sets[n].image_set_id for n in expected]


@pytest.mark.parametrize("order", ["ASC", "DESC"])
def test_sets_without_study_date_sort_last_and_ties_break_by_id(order: str) -> None:
    # Given two sets without a study date and two with the same study instant
    sets = [
        image_set(4, study_date=None),
        image_set(3, study_date="20200101"),
        image_set(1, study_date=None),
        image_set(2, study_date="20200101"),
    ]

    # When sorting by study date and time
    found = search.search_image_sets(
        sets, {"sort": {"sortField": "DICOMStudyDateAndTime", "sortOrder": order}}
    )

    # Then undated sets come last, and equal keys keep image set id order in either direction
    assert ids(found) == [f"{n:032x}" for n in (2, 3, 1, 4)]


# --------------------------------------------------------------------------------------------------
# Criteria the model accepts but the service refuses


BAD_CRITERIA = [
    pytest.param(
        {"filters": [{"values": [{"DICOMPatientId": "A"}, {"DICOMPatientId": "B"}], "operator": "EQUAL"}]},
        "EQUAL operator takes exactly one value",
        id="equal-two-values",
    ),
    pytest.param(
        {"filters": [{"values": [{"createdAt": datetime(2020, 1, 1, tzinfo=UTC)}], "operator": "BETWEEN"}]},
        "BETWEEN operator takes exactly two values",
        id="between-one-value",
    ),
    pytest.param(
        {
            "filters": [
                {
                    "values": [
                        {"createdAt": datetime(2020, 1, 1, tzinfo=UTC)},
                        {"updatedAt": datetime(2021, 1, 1, tzinfo=UTC)},
                    ],
                    "operator": "BETWEEN",
                }
            ]
        },
        "same attribute",
        id="between-mixed-attributes",
    ),
    pytest.param(
        between("createdAt", datetime(2022, 1, 1, tzinfo=UTC), datetime(2021, 1, 1, tzinfo=UTC)),
        "(lowerBound, upperBound)",
        id="between-reversed-timestamps",
    ),
    pytest.param(
        between("DICOMStudyDateAndTime", {"DICOMStudyDate": "20230101"}, {"DICOMStudyDate": "19900101"}),
        "lower bound is after the upper bound",
        id="between-reversed-study-dates",
    ),
    pytest.param(
        equal("DICOMStudyDateAndTime", {"DICOMStudyDate": "1999-11-22"}),
        "YYYYMMDD",
        id="study-date-with-dashes",
    ),
    pytest.param(
        equal("DICOMStudyDateAndTime", {"DICOMStudyDate": "991122"}),
        "YYYYMMDD",
        id="study-date-two-digit-year",
    ),
    pytest.param(
        equal("DICOMStudyDateAndTime", {"DICOMStudyDate": "19991332"}),
        "not a valid calendar date",
        id="study-date-impossible",
    ),
    pytest.param(
        equal("DICOMStudyDateAndTime", {"DICOMStudyDate": "19991122", "DICOMStudyTime": "250000"}),
        "HHMMSS.FFFFFF",
        id="study-time-hour-25",
    ),
    pytest.param(
        equal("DICOMStudyDateAndTime", {"DICOMStudyDate": "19991122", "DICOMStudyTime": "12345"}),
        "HHMMSS.FFFFFF",
        id="study-time-odd-digits",
    ),
    pytest.param(
        equal("DICOMStudyDateAndTime", {"DICOMStudyDate": "19991122", "DICOMStudyTime": "120000.1234567"}),
        "HHMMSS.FFFFFF",
        id="study-time-seven-fraction-digits",
    ),
    pytest.param(
        equal("DICOMStudyDateAndTime", {"DICOMStudyDate": ""}),
        "YYYYMMDD",
        id="study-date-empty",
    ),
]


@pytest.mark.parametrize(("criteria", "message"), BAD_CRITERIA)
def test_semantic_errors_the_model_cannot_catch(criteria: dict[str, Any], message: str) -> None:
    # Given criteria that satisfy every shape of the model
    report = ParamValidator().validate(criteria, MODEL.shape_for("SearchCriteria"))
    assert not report.has_errors(), report.generate_report()

    # When validating them semantically
    with pytest.raises(ValidationException) as caught:
        search.validate_search_criteria(criteria)

    # Then a ValidationException explains the rule
    assert message in caught.value.message
    assert caught.value.code == "ValidationException"


@pytest.mark.parametrize(
    ("criteria", "message"),
    [
        pytest.param({"filters": []}, "1 to 2 filters", id="empty-filters"),
        pytest.param(
            {"filters": [equal("DICOMPatientId", str(n))["filters"][0] for n in range(3)]},
            "1 to 2 filters; got 3",
            id="three-filters",
        ),
        pytest.param(
            {"filters": [{"values": [{}], "operator": "EQUAL"}]}, "exactly one of", id="empty-union"
        ),
        pytest.param(
            {"filters": [{"values": [{"DICOMPatientId": "A", "DICOMStudyId": "B"}], "operator": "EQUAL"}]},
            "exactly one of",
            id="two-union-members",
        ),
        pytest.param(equal("DICOMModality", "CT"), "unknown search attribute", id="unknown-attribute"),
        pytest.param(
            {"filters": [{"values": [{"DICOMPatientId": "A"}], "operator": "LIKE"}]}, "operator", id="op"
        ),
        pytest.param({"filters": [{"values": [], "operator": "EQUAL"}]}, "non-empty list", id="no-values"),
        pytest.param(equal("isPrimary", "true"), "boolean", id="is-primary-string"),
        pytest.param(equal("createdAt", "yesterday"), "timestamp", id="created-at-garbage"),
        pytest.param({"sort": {"sortField": "imageSetId", "sortOrder": "ASC"}}, "sortField", id="sort-field"),
        pytest.param({"sort": {"sortField": "updatedAt", "sortOrder": "UP"}}, "sortOrder", id="sort-order"),
        pytest.param({"sort": {"sortField": "updatedAt"}}, "sortOrder", id="sort-without-order"),
    ],
)
def test_shape_errors_are_refused_too(criteria: dict[str, Any], message: str) -> None:
    # Given criteria the HTTP layer should already have refused
    # When validating them anyway
    with pytest.raises(ValidationException) as caught:
        search.validate_search_criteria(criteria)

    # Then the search still refuses them with a clear message
    assert message in caught.value.message


def test_error_messages_name_the_filter() -> None:
    # Given a good first filter and a bad second one
    criteria = {
        "filters": [
            equal("DICOMPatientId", "A")["filters"][0],
            {"values": [{"DICOMStudyId": "1"}, {"DICOMStudyId": "2"}], "operator": "EQUAL"},
        ]
    }

    # When validating
    with pytest.raises(ValidationException) as caught:
        search.validate_search_criteria(criteria)

    # Then the message points at the second filter
    assert caught.value.message.startswith("searchCriteria.filters[2]")


def test_naive_timestamps_are_taken_as_utc() -> None:
    # Given a set created at 12:00 UTC and bounds without a zone
    instant = datetime(2024, 5, 1, 12, tzinfo=UTC)
    target = FakeImageSet("a" * 32, instant, instant, make_document())

    # When searching with naive bounds around 12:00
    found = search.search_image_sets(
        [target], between("createdAt", datetime(2024, 5, 1, 11, 59), datetime(2024, 5, 1, 12, 1))
    )

    # Then they are read as UTC
    assert ids(found) == [target.image_set_id]


# --------------------------------------------------------------------------------------------------
# DICOMTags and summaries


def test_dicom_tags_has_every_model_member_with_model_types() -> None:
    # Given a document with two series, five instances and SeriesNumber "3"
    document = make_document(
        series={
            "1.2.3.4.5": {
                "Modality": "CT",
                "BodyPartExamined": "CHEST",
                "SeriesNumber": "3",
                "_instances": 2,
            },
            "1.2.3.4.6": {"Modality": "CT", "SeriesNumber": "4", "_instances": 3},
        }
    )

    # When building the tags
    tags = search.dicom_tags(document)

    # Then every member is there, integers where the model says integer, series values from the first series
    assert tuple(tags) == model_members("DICOMTags")
    members = MODEL.shape_for("DICOMTags").members
    for name, value in tags.items():
        assert isinstance(value, int if members[name].type_name == "integer" else str), name
    assert tags["DICOMNumberOfStudyRelatedSeries"] == 2
    assert tags["DICOMNumberOfStudyRelatedInstances"] == 5
    assert tags["DICOMSeriesInstanceUID"] == "1.2.3.4.5"
    assert tags["DICOMSeriesModality"] == "CT"
    assert tags["DICOMSeriesBodyPart"] == "CHEST"
    assert tags["DICOMSeriesNumber"] == 3


@pytest.mark.parametrize(
    ("raw", "expected"), [("3", 3), (" 12 ", 12), ("-1", -1), ("", None), ("x", None), (None, None)]
)
def test_series_number_is_an_integer_or_none(raw: str | None, expected: int | None) -> None:
    # Given a series whose IS SeriesNumber is raw
    document = make_document(series={"1.2.9": {"Modality": "MR", "SeriesNumber": raw}})

    # When building the tags
    tags = search.dicom_tags(document)

    # Then the number is parsed as the model's integer
    assert tags["DICOMSeriesNumber"] == expected


def test_dicom_tags_of_a_sparse_document_are_nulls() -> None:
    # Given the JA 2023 output's situation: birth date, sex, description and accession missing (JA:2048-2076)
    document = make_document(
        patient_id="2CT2",
        patient_name="CompressedSamples^CT2",
        birth_date=None,
        sex=None,
        description=None,
        accession=None,
        study_uid="1.3.6.1.4.1.5962.1.2.2.20040826185059.5457",
        study_id="2CT2",
        study_date="20040826",
        study_time="185059",
    )

    # When building the tags
    tags = search.dicom_tags(document)

    # Then the missing values are None and the rest are kept verbatim
    assert tags["DICOMPatientBirthDate"] is None
    assert tags["DICOMPatientSex"] is None
    assert tags["DICOMStudyDescription"] is None
    assert tags["DICOMAccessionNumber"] is None
    assert tags["DICOMPatientName"] == "CompressedSamples^CT2"
    assert tags["DICOMStudyTime"] == "185059"


def test_dicom_tags_of_an_empty_document() -> None:
    # Given a document without levels
    # When building the tags
    tags = search.dicom_tags({"SchemaVersion": "1.1"})

    # Then strings are None and counts are zero
    assert tags["DICOMNumberOfStudyRelatedSeries"] == 0
    assert tags["DICOMNumberOfStudyRelatedInstances"] == 0
    assert all(v is None for k, v in tags.items() if not k.startswith("DICOMNumberOf"))


def test_multi_valued_and_json_person_names_become_strings() -> None:
    # Given a PN in DICOM JSON form and a multi-valued patient id
    document = make_document(patient_name={"Alphabetic": "DOE^JOHN"}, patient_id=["A", "B"])

    # When building the tags
    tags = search.dicom_tags(document)

    # Then they are strings as the model requires
    assert tags["DICOMPatientName"] == "DOE^JOHN"
    assert tags["DICOMPatientId"] == "A\\B"


def test_summary_members_follow_the_model() -> None:
    # Given an image set with a storage tier and a last access (what the backend's view offers)
    accessed = datetime(2024, 6, 1, tzinfo=UTC)
    item = replace(image_set(1), version=3, storage_tier="FREQUENT_ACCESS", last_accessed_at=accessed)

    # When summarizing
    result = search.summary(item)

    # Then members are those of ImageSetsMetadataSummary, in model order, with Python values
    assert list(result) == [m for m in model_members("ImageSetsMetadataSummary") if m in result]
    assert set(result) == set(model_members("ImageSetsMetadataSummary"))
    assert result["version"] == 3
    assert result["createdAt"] is item.created_at
    assert result["lastAccessedAt"] is accessed
    assert result["storageTier"] == "FREQUENT_ACCESS"
    assert result["isPrimary"] is True


def test_summary_without_optional_attributes() -> None:
    # Given an image set without storage tier or last access
    # When summarizing
    result = search.summary(image_set(1))

    # Then those members are left out
    assert "storageTier" not in result
    assert "lastAccessedAt" not in result


# --------------------------------------------------------------------------------------------------
# Pagination


def test_paginate_walks_every_page() -> None:
    # Given seven items and a page size of three
    items = list(range(7))
    scope = search.scope_key("SearchImageSets", "d" * 32, None)

    # When following the tokens
    pages, token = [], None
    while True:
        page, token = search.paginate(items, max_results=3, next_token=token, default_max=50, scope=scope)
        pages.append(page)
        if token is None:
            break

    # Then every item comes exactly once and the last page has no token
    assert pages == [[0, 1, 2], [3, 4, 5], [6]]


def test_paginate_default_page_size_and_exact_fit() -> None:
    # Given four items and a default page size of two
    # When asking without maxResults
    first, token = search.paginate([1, 2, 3, 4], max_results=None, next_token=None, default_max=2, scope="s")
    second, last = search.paginate([1, 2, 3, 4], max_results=None, next_token=token, default_max=2, scope="s")

    # Then the default applies and an exactly filled last page has no token
    assert (first, second, last) == ([1, 2], [3, 4], None)


def test_paginate_tokens_are_opaque_ascii_within_the_model_limit() -> None:
    # Given a first page in a recognizable scope
    scope = search.scope_key("SearchImageSets", "d" * 32, equal("DICOMPatientId", "SUBJECT08701"))
    _, token = search.paginate(list(range(100)), max_results=1, next_token=None, default_max=50, scope=scope)

    # Then the token is ASCII, 1..8192 characters (NextToken shape), and does not reveal the criteria
    assert token is not None
    assert token.isascii()
    assert 1 <= len(token) <= MODEL.shape_for("NextToken").metadata["max"]
    assert b"SUBJECT08701" not in base64.urlsafe_b64decode(token)


def test_paginate_an_empty_list() -> None:
    # Given nothing
    # When paginating
    page, token = search.paginate([], max_results=10, next_token=None, default_max=50, scope="s")

    # Then there is one empty page
    assert (page, token) == ([], None)


def forged(offset: int, scope: str) -> str:
    payload = json.dumps({"o": offset, "s": scope}).encode()
    return base64.urlsafe_b64encode(payload + b"0" * 16).decode()


def tampered(token: str) -> str:
    raw = bytearray(base64.urlsafe_b64decode(token))
    raw[2] ^= 0x01  # change the offset's JSON without re-signing
    return base64.urlsafe_b64encode(bytes(raw)).decode()


@pytest.mark.parametrize(
    "make_token",
    [
        pytest.param(lambda good: "garbage", id="garbage"),
        pytest.param(lambda good: "!!!!", id="not-base64"),
        pytest.param(lambda good: "é", id="not-ascii"),
        pytest.param(lambda good: base64.urlsafe_b64encode(b"{}").decode(), id="too-short"),
        pytest.param(lambda good: forged(1, "s"), id="forged"),
        pytest.param(tampered, id="tampered"),
        pytest.param(lambda good: good[:-4], id="truncated"),
    ],
)
def test_paginate_refuses_bad_tokens(make_token: Any) -> None:
    # Given a good token and a bad one made from it
    _, good = search.paginate(list(range(10)), max_results=2, next_token=None, default_max=50, scope="s")
    bad = make_token(good)

    # When presenting the bad token
    with pytest.raises(ValidationException) as caught:
        search.paginate(list(range(10)), max_results=2, next_token=bad, default_max=50, scope="s")

    # Then it is refused as an invalid nextToken
    assert caught.value.message.startswith("Invalid nextToken")


def test_paginate_refuses_a_token_from_another_scope() -> None:
    # Given a token from a search with other criteria
    first_scope = search.scope_key("SearchImageSets", "d" * 32, equal("DICOMPatientId", "A"))
    other_scope = search.scope_key("SearchImageSets", "d" * 32, equal("DICOMPatientId", "B"))
    _, token = search.paginate(
        list(range(10)), max_results=2, next_token=None, default_max=50, scope=first_scope
    )

    # When using it for the other search
    with pytest.raises(ValidationException, match="Invalid nextToken"):
        search.paginate(list(range(10)), max_results=2, next_token=token, default_max=50, scope=other_scope)


def test_scope_key_is_canonical() -> None:
    # Given the same criteria with keys in another order and the instant at another offset
    instant = datetime(2024, 1, 1, 12, tzinfo=UTC)
    one = {"filters": [{"values": [{"createdAt": instant}], "operator": "EQUAL"}]}
    two = {
        "filters": [
            {"operator": "EQUAL", "values": [{"createdAt": instant.astimezone(timezone_offset(hours=5))}]}
        ]
    }

    # Then the scopes are equal
    assert search.scope_key("SearchImageSets", "d", one) == search.scope_key("SearchImageSets", "d", two)


def test_paginate_refuses_max_results_below_one() -> None:
    # Given maxResults 0
    # When paginating
    with pytest.raises(ValidationException, match="maxResults"):
        search.paginate([1], max_results=0, next_token=None, default_max=50, scope="s")


def test_paginate_past_the_end_after_deletions() -> None:
    # Given a token for offset 4 of a list that then shrinks to three items
    _, token = search.paginate(list(range(6)), max_results=4, next_token=None, default_max=50, scope="s")

    # When asking for the next page
    page, after = search.paginate([0, 1, 2], max_results=4, next_token=token, default_max=50, scope="s")

    # Then the page is empty and final
    assert (page, after) == ([], None)


def test_search_results_paginate_end_to_end() -> None:
    # Given 12 matching image sets and a search page size of 5
    sets = [image_set(n, patient_id="P") for n in range(12)]
    criteria = equal("DICOMPatientId", "P")
    scope = search.scope_key("SearchImageSets", "d" * 32, criteria)

    # When paging through the summaries
    seen: list[str] = []
    token = None
    while True:
        found = search.search_image_sets(sets, criteria)
        page, token = search.paginate(found, max_results=5, next_token=token, default_max=50, scope=scope)
        seen += [search.summary(s)["imageSetId"] for s in page]
        if token is None:
            break

    # Then every set is listed once, newest update first
    assert seen == [s.image_set_id for s in reversed(sets)]

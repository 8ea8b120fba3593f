"""An import job's results (ahi_pipeline.job_results): the manifest, the NDJSON lines, their agreement.

The examples are the guide's, from the api spec §3.5 "Output S3 layout": the normalized
``job-output-manifest.json`` and the verbatim ``success.ndjson`` and ``failure.ndjson`` lines.
"""

from __future__ import annotations

import copy
import json
from collections.abc import Iterable, Iterator
from typing import Any

import pytest

from ahi_pipeline.job_results import (
    FAILURE_FILE,
    MANIFEST_FILE,
    SUCCESS_FILE,
    FailureRecord,
    ImageSetCount,
    JobManifest,
    ResultsError,
    ResultsTally,
    SuccessRecord,
    check_consistency,
    failure_records,
    input_key,
    parse_manifest,
    success_records,
)

pytestmark = pytest.mark.unit

JOB_ID = "09876543210987654321098765432109"
DATASTORE_ID = "12345678901234567890123456789012"
SET_A = "12345612345612345678907890789012"
SET_B = "12345612345612345678917891789012"
OUTPUT_FOLDER = f"s3://medical-imaging-output/job_output/{DATASTORE_ID}-DicomImport-{JOB_ID}/"
PATIENT = "DOE^JANE"  # a sentinel that must never reach an error message

# The spec's normalized manifest (§3.5), verbatim apart from the unwrapped URIs.
SPEC_MANIFEST: dict[str, Any] = {
    "jobSummary": {
        "jobId": JOB_ID,
        "datastoreId": DATASTORE_ID,
        "inputS3Uri": "s3://medical-imaging-dicom-input/dicom_input/",
        "outputS3Uri": OUTPUT_FOLDER,
        "successOutputS3Uri": f"{OUTPUT_FOLDER}SUCCESS/",
        "failureOutputS3Uri": f"{OUTPUT_FOLDER}FAILURE/",
        "numberOfScannedFiles": 5,
        "numberOfImportedFiles": 3,
        "numberOfFilesWithCustomerError": 2,
        "numberOfFilesWithServerError": 0,
        "numberOfGeneratedImageSets": 2,
        "imageSetsSummary": [
            {"imageSetId": SET_A, "numberOfMatchedSOPInstances": 2},
            {"imageSetId": SET_B, "numberOfMatchedSOPInstances": 1},
        ],
    }
}

# The guide's lines, verbatim (§3.5).
SPEC_SUCCESS_LINES = [
    '{"inputFile":"dicomInputFolder/1.3.51.5145.5142.20010109.1105620.1.0.1.dcm",'
    '"importResponse":{"imageSetId":"12345612345612345678907890789012"}}',
    '{"inputFile":"dicomInputFolder/1.3.51.5145.5142.20010109.1105630.1.0.1.dcm",'
    '"importResponse":{"imageSetId":"12345612345612345678917891789012"}}',
]
SPEC_FAILURE_LINES = [
    '{"inputFile":"dicom_input/invalidDicomFile1.dcm","exception":{"exceptionType":"ValidationException",'
    '"message":"DICOM attribute TransferSyntaxUID does not exist"}}',
    '{"inputFile":"dicom_input/invalidDicomFile2.dcm","exception":{"exceptionType":"ValidationException",'
    '"message":"DICOM attributes does not exist"}}',
]
# A third success line (a second instance of image set A) makes the guide's lines agree with its manifest.
EXTRA_SUCCESS_LINE = (
    '{"inputFile":"dicomInputFolder/1.3.51.5145.5142.20010109.1105621.1.0.1.dcm",'
    '"importResponse":{"imageSetId":"12345612345612345678907890789012"}}'
)


def manifest_doc(**changes: Any) -> dict[str, Any]:
    """A deep copy of the spec's manifest with ``jobSummary`` fields replaced (``None`` removes one)."""
    document = copy.deepcopy(SPEC_MANIFEST)
    for name, value in changes.items():
        if value is None:
            document["jobSummary"].pop(name, None)
        else:
            document["jobSummary"][name] = value
    return document


def success_line(input_file: str, image_set_id: str, **response: Any) -> str:
    return json.dumps({"inputFile": input_file, "importResponse": {"imageSetId": image_set_id, **response}})


def tally_of(success: Iterable[str], failure: Iterable[str] = ()) -> ResultsTally:
    tally = ResultsTally()
    for record in success_records(success):
        tally.add_success(record)
    for failed in failure_records(failure):
        tally.add_failure(failed)
    return tally


def problems_of(document: Any, **kwargs: Any) -> list[str]:
    with pytest.raises(ResultsError) as info:
        parse_manifest(document, **kwargs)
    return info.value.problems


# ==================================================================================== the guide's examples
def test_the_spec_manifest_parses_to_its_counts_and_image_sets() -> None:
    # Given the guide's manifest (normalized)
    # When it is parsed for its own job and data store
    manifest = parse_manifest(SPEC_MANIFEST, job_id=JOB_ID, datastore_id=DATASTORE_ID)

    # Then the counts, URIs and the two image sets (2 and 1 instances) are read
    assert isinstance(manifest, JobManifest)
    assert (manifest.job_id, manifest.datastore_id) == (JOB_ID, DATASTORE_ID)
    assert manifest.input_s3_uri == "s3://medical-imaging-dicom-input/dicom_input/"
    assert manifest.output_s3_uri == OUTPUT_FOLDER
    assert (manifest.scanned, manifest.imported) == (5, 3)
    assert (manifest.customer_errors, manifest.server_errors, manifest.failed) == (2, 0, 2)
    assert manifest.generated_image_sets == 2
    assert manifest.summary_entries == 2
    assert manifest.image_sets == (ImageSetCount(SET_A, 2), ImageSetCount(SET_B, 1))
    assert manifest.image_sets[0].version is None
    assert manifest.image_sets[0].is_primary is None


def test_the_spec_manifest_parses_from_json_text_loaded_by_the_caller() -> None:
    # Given the manifest as the bytes S3 would return
    raw = json.dumps(SPEC_MANIFEST).encode()

    # When loaded and parsed
    manifest = parse_manifest(json.loads(raw))

    # Then it is the same manifest
    assert manifest == parse_manifest(SPEC_MANIFEST)


def test_the_spec_success_lines_parse_to_records() -> None:
    # Given the guide's success lines
    # When parsed
    records = list(success_records(SPEC_SUCCESS_LINES))

    # Then each names its file and image set, with no version or primary flag
    assert records == [
        SuccessRecord("dicomInputFolder/1.3.51.5145.5142.20010109.1105620.1.0.1.dcm", SET_A),
        SuccessRecord("dicomInputFolder/1.3.51.5145.5142.20010109.1105630.1.0.1.dcm", SET_B),
    ]
    assert records[0].version is None
    assert records[0].is_primary is None


def test_the_spec_failure_lines_parse_to_records() -> None:
    # Given the guide's failure lines
    # When parsed
    records = list(failure_records(SPEC_FAILURE_LINES))

    # Then each names its file, exception type and message
    assert records == [
        FailureRecord(
            "dicom_input/invalidDicomFile1.dcm",
            "ValidationException",
            "DICOM attribute TransferSyntaxUID does not exist",
        ),
        FailureRecord(
            "dicom_input/invalidDicomFile2.dcm", "ValidationException", "DICOM attributes does not exist"
        ),
    ]


def test_a_consistent_trio_of_manifest_success_and_failure_lines_is_accepted() -> None:
    # Given the spec's manifest (A: 2 instances, B: 1), and its lines plus a second line for image set A
    manifest = parse_manifest(SPEC_MANIFEST)
    tally = tally_of([*SPEC_SUCCESS_LINES, EXTRA_SUCCESS_LINE], SPEC_FAILURE_LINES)

    # When they are checked against each other
    image_sets = check_consistency(manifest, tally)

    # Then the image sets are the manifest's, in its order, and the tally counted everything
    assert image_sets == [ImageSetCount(SET_A, 2), ImageSetCount(SET_B, 1)]
    assert (tally.imported, tally.failed) == (3, 2)
    assert tally.error_types == {"ValidationException": 2}
    assert tally.image_sets[SET_A].instances == 2


def test_the_guides_own_example_lines_disagree_with_its_manifest_and_the_disagreement_is_named() -> None:
    # Given the guide's manifest (3 imported: A 2, B 1) and its two success lines (A 1, B 1)
    manifest = parse_manifest(SPEC_MANIFEST)
    tally = tally_of(SPEC_SUCCESS_LINES, SPEC_FAILURE_LINES)

    # When they are checked
    with pytest.raises(ResultsError) as info:
        check_consistency(manifest, tally)

    # Then the line count and image set A's instance count are named, and nothing else
    problems = info.value.problems
    assert len(problems) == 2
    assert f"{SUCCESS_FILE} has 2 lines but the manifest counts 3 imported files" in problems
    assert f"image set {SET_A}: imageSetsSummary matches 2 instances, {SUCCESS_FILE} 1" in problems
    assert str(info.value) == "; ".join(problems)


# ======================================================================================== the newer shape
@pytest.mark.parametrize("version", ["3", 3], ids=["string", "integer"])
def test_image_set_version_and_primary_flag_are_read_from_the_summary(version: str | int) -> None:
    # Given a summary entry with imageSetVersion (as a string or an integer) and isPrimary
    summary = [
        {
            "imageSetId": SET_A,
            "numberOfMatchedSOPInstances": 2,
            "imageSetVersion": version,
            "isPrimary": True,
        },
        {"imageSetId": SET_B, "numberOfMatchedSOPInstances": 1, "isPrimary": False},
    ]

    # When the manifest is parsed
    manifest = parse_manifest(manifest_doc(imageSetsSummary=summary))

    # Then the version is a string of digits and the flag a boolean; absent values stay None
    assert manifest.image_sets == (
        ImageSetCount(SET_A, 2, "3", True),
        ImageSetCount(SET_B, 1, None, False),
    )


@pytest.mark.parametrize("version", ["3", 3], ids=["string", "integer"])
def test_image_set_version_and_primary_flag_are_read_from_the_import_response(version: str | int) -> None:
    # Given a success line of the newer shape
    line = success_line("in/a.dcm", SET_A, imageSetVersion=version, isPrimary=False)

    # When parsed
    (record,) = success_records([line])

    # Then the record carries them
    assert record == SuccessRecord("in/a.dcm", SET_A, "3", False)


@pytest.mark.parametrize(
    ("field", "value", "expected"),
    [
        ("imageSetVersion", "v3", "imageSetVersion is not a version number"),
        ("imageSetVersion", -1, "imageSetVersion is not a version number"),
        ("imageSetVersion", True, "imageSetVersion is not a version number"),
        ("imageSetVersion", 1.5, "imageSetVersion is not a version number"),
        ("isPrimary", "true", "isPrimary is not a boolean"),
        ("isPrimary", 1, "isPrimary is not a boolean"),
    ],
)
def test_a_malformed_version_or_primary_flag_is_refused_in_summary_and_lines(
    field: str, value: Any, expected: str
) -> None:
    # Given a summary entry and a success line with a malformed field
    summary = [
        {"imageSetId": SET_A, "numberOfMatchedSOPInstances": 2, field: value},
        {"imageSetId": SET_B, "numberOfMatchedSOPInstances": 1},
    ]
    line = success_line("in/a.dcm", SET_A, **{field: value})

    # When each is parsed
    manifest_problems = problems_of(manifest_doc(imageSetsSummary=summary))
    with pytest.raises(ResultsError) as info:
        list(success_records([line]))

    # Then both name the field and where it is
    assert manifest_problems == [f"{MANIFEST_FILE}: imageSetsSummary[0].{expected}"]
    assert str(info.value) == f"{SUCCESS_FILE} line 1: importResponse.{expected}"


def test_the_merged_result_prefers_the_manifests_values_and_falls_back_to_the_lines() -> None:
    # Given a manifest giving A's version and flag but not B's, and lines giving both
    summary = [
        {"imageSetId": SET_A, "numberOfMatchedSOPInstances": 2, "imageSetVersion": 4, "isPrimary": False},
        {"imageSetId": SET_B, "numberOfMatchedSOPInstances": 1},
    ]
    manifest = parse_manifest(manifest_doc(imageSetsSummary=summary))
    tally = tally_of(
        [
            success_line("in/a1.dcm", SET_A, imageSetVersion="2", isPrimary=True),
            success_line("in/a2.dcm", SET_A, imageSetVersion="2", isPrimary=True),
            success_line("in/b.dcm", SET_B, imageSetVersion="7", isPrimary=True),
        ],
        SPEC_FAILURE_LINES,
    )

    # When checked
    image_sets = check_consistency(manifest, tally)

    # Then A keeps the manifest's version and flag, B takes the lines'
    assert image_sets == [
        ImageSetCount(SET_A, 2, "4", False),
        ImageSetCount(SET_B, 1, "7", True),
    ]


def test_the_merged_result_has_no_version_when_neither_side_gives_one() -> None:
    # Given the guide's 2024 shape on both sides
    manifest = parse_manifest(SPEC_MANIFEST)
    tally = tally_of([*SPEC_SUCCESS_LINES, EXTRA_SUCCESS_LINE], SPEC_FAILURE_LINES)

    # When checked
    image_sets = check_consistency(manifest, tally)

    # Then versions and flags stay unknown
    assert all(s.version is None and s.is_primary is None for s in image_sets)


@pytest.mark.parametrize("generated", [2, 3], ids=["distinct-ids", "entries"])
def test_an_id_listed_twice_in_the_summary_is_merged_and_either_count_is_accepted(generated: int) -> None:
    # Given image set A listed twice (1 + 1 instances) and numberOfGeneratedImageSets 2 or 3
    summary = [
        {"imageSetId": SET_A, "numberOfMatchedSOPInstances": 1, "imageSetVersion": "2", "isPrimary": True},
        {"imageSetId": SET_B, "numberOfMatchedSOPInstances": 1},
        {"imageSetId": SET_A, "numberOfMatchedSOPInstances": 1, "imageSetVersion": "10"},
    ]

    # When the manifest is parsed
    manifest = parse_manifest(manifest_doc(imageSetsSummary=summary, numberOfGeneratedImageSets=generated))

    # Then A appears once with its instances summed, the later version (numerically), and its flag
    assert manifest.image_sets == (ImageSetCount(SET_A, 2, "10", True), ImageSetCount(SET_B, 1))
    assert manifest.summary_entries == 3
    assert manifest.generated_image_sets == generated


def test_a_merged_duplicate_checks_against_the_lines_as_one_image_set() -> None:
    # Given A listed twice in the summary and three lines in all
    summary = [
        {"imageSetId": SET_A, "numberOfMatchedSOPInstances": 1},
        {"imageSetId": SET_B, "numberOfMatchedSOPInstances": 1},
        {"imageSetId": SET_A, "numberOfMatchedSOPInstances": 1},
    ]
    manifest = parse_manifest(manifest_doc(imageSetsSummary=summary))
    tally = tally_of([*SPEC_SUCCESS_LINES, EXTRA_SUCCESS_LINE], SPEC_FAILURE_LINES)

    # When checked
    # Then they agree
    assert check_consistency(manifest, tally) == [ImageSetCount(SET_A, 2), ImageSetCount(SET_B, 1)]


def test_the_tally_keeps_the_later_version_and_the_last_known_primary_flag() -> None:
    # Given lines of one image set with versions out of order and a flag on some of them only
    tally = tally_of(
        [
            success_line("in/1.dcm", SET_A, imageSetVersion="9", isPrimary=False),
            success_line("in/2.dcm", SET_A, imageSetVersion="11"),
            success_line("in/3.dcm", SET_A),
        ]
    )

    # Then the tally has 3 instances, version 11 (not "9", the string maximum) and the known flag
    assert tally.image_sets == {SET_A: ImageSetCount(SET_A, 3, "11", False)}
    assert tally.imported == 3


def test_unknown_fields_are_ignored() -> None:
    # Given a manifest, a success and a failure line with fields the parser does not know
    document = manifest_doc(someFutureField={"x": 1})
    document["jobSummary"]["imageSetsSummary"][0]["extra"] = "value"
    success = json.dumps(
        {"inputFile": "a.dcm", "importResponse": {"imageSetId": SET_A, "other": 1}, "more": []}
    )
    failure = '{"inputFile":"b.dcm","exception":{"exceptionType":"X","message":"m","code":7},"more":1}'

    # When parsed
    # Then nothing is refused
    assert parse_manifest(document).image_sets[0] == ImageSetCount(SET_A, 2)
    assert list(success_records([success])) == [SuccessRecord("a.dcm", SET_A)]
    assert list(failure_records([failure])) == [FailureRecord("b.dcm", "X", "m")]


# ======================================================================================== malformed manifests
@pytest.mark.parametrize(
    "document",
    [None, [], "text", 5, {}, {"jobSummary": None}, {"jobSummary": []}, {"jobSummary": "x"}, {"other": {}}],
    ids=["none", "list", "str", "int", "empty", "null-summary", "list-summary", "str-summary", "no-summary"],
)
def test_a_document_without_a_job_summary_object_is_refused(document: Any) -> None:
    # Given something that is not a manifest
    # When parsed
    problems = problems_of(document)

    # Then the one problem says so
    assert problems == [f"{MANIFEST_FILE} has no jobSummary object"]


@pytest.mark.parametrize(
    "value",
    [None, -1, True, False, 3.0, "3"],
    ids=["missing", "negative", "true", "false", "float", "string"],
)
@pytest.mark.parametrize(
    "name",
    [
        "numberOfScannedFiles",
        "numberOfImportedFiles",
        "numberOfFilesWithCustomerError",
        "numberOfFilesWithServerError",
        "numberOfGeneratedImageSets",
    ],
)
def test_a_count_that_is_missing_negative_or_not_an_integer_is_refused(name: str, value: Any) -> None:
    # Given a manifest with one count missing or mistyped
    document = manifest_doc(**{name: value})

    # When parsed
    problems = problems_of(document)

    # Then only that count is named (the arithmetic is not checked on a malformed manifest)
    assert problems == [f"{MANIFEST_FILE}: jobSummary.{name} is missing or not a count"]


def test_zero_counts_and_no_summary_are_a_valid_empty_job() -> None:
    # Given a job that imported nothing and lists no image sets
    document = manifest_doc(
        numberOfScannedFiles=0,
        numberOfImportedFiles=0,
        numberOfFilesWithCustomerError=0,
        numberOfFilesWithServerError=0,
        numberOfGeneratedImageSets=0,
        imageSetsSummary=None,
    )

    # When parsed and checked against no lines
    manifest = parse_manifest(document)

    # Then it is empty and consistent
    assert manifest.image_sets == ()
    assert manifest.summary_entries == 0
    assert check_consistency(manifest, ResultsTally()) == []


@pytest.mark.parametrize("name", ["jobId", "datastoreId"])
@pytest.mark.parametrize("value", [None, "", 42], ids=["missing", "empty", "number"])
def test_a_missing_job_or_data_store_id_is_refused(name: str, value: Any) -> None:
    # Given a manifest without its job id or data store id
    document = manifest_doc(**{name: value})

    # When parsed
    problems = problems_of(document, job_id=JOB_ID, datastore_id=DATASTORE_ID)

    # Then it is named
    assert problems == [f"{MANIFEST_FILE}: jobSummary.{name} is missing or not a string"]


@pytest.mark.parametrize(
    "image_set_id",
    [SET_A[:-1], SET_A + "0", "AB" * 16, "x" * 31 + "-", 12345, None],
    ids=["31-chars", "33-chars", "uppercase", "punctuation", "number", "missing"],
)
def test_a_summary_entry_without_a_32_character_image_set_id_is_refused(image_set_id: Any) -> None:
    # Given a summary whose second entry has a malformed image set id
    summary = [
        {"imageSetId": SET_A, "numberOfMatchedSOPInstances": 2},
        {"imageSetId": image_set_id, "numberOfMatchedSOPInstances": 1},
    ]

    # When parsed
    problems = problems_of(manifest_doc(imageSetsSummary=summary))

    # Then that entry is named
    assert problems == [f"{MANIFEST_FILE}: imageSetsSummary[1].imageSetId is not an image set id"]


@pytest.mark.parametrize("instances", [None, -1, True, 1.0, "1"])
def test_a_summary_entry_without_an_instance_count_is_refused(instances: Any) -> None:
    # Given a summary entry with a missing or mistyped numberOfMatchedSOPInstances
    summary = [
        {"imageSetId": SET_A, "numberOfMatchedSOPInstances": 2},
        {"imageSetId": SET_B, "numberOfMatchedSOPInstances": instances},
    ]

    # When parsed
    problems = problems_of(manifest_doc(imageSetsSummary=summary))

    # Then that entry is named
    assert problems == [f"{MANIFEST_FILE}: imageSetsSummary[1].numberOfMatchedSOPInstances is not a count"]


@pytest.mark.parametrize(
    ("summary", "expected"),
    [
        ({"imageSetId": SET_A}, "jobSummary.imageSetsSummary is not a list"),
        ([SET_A, SET_B], "imageSetsSummary[0] is not an object"),
    ],
    ids=["object", "list-of-strings"],
)
def test_a_summary_that_is_not_a_list_of_objects_is_refused(summary: Any, expected: str) -> None:
    # Given a malformed imageSetsSummary
    # When parsed
    problems = problems_of(manifest_doc(imageSetsSummary=summary))

    # Then it is named
    assert f"{MANIFEST_FILE}: {expected}" in problems


def test_scanned_files_must_be_imported_plus_customer_plus_server_errors() -> None:
    # Given 5 scanned files but 3 imported + 1 + 0 accounted for
    document = manifest_doc(numberOfFilesWithCustomerError=1)

    # When parsed
    problems = problems_of(document)

    # Then the arithmetic is named with every term
    assert problems == [
        f"{MANIFEST_FILE}: 5 files scanned but 3 imported + 1 customer errors + 0 server errors = 4"
    ]


def test_server_errors_count_towards_the_scanned_files() -> None:
    # Given 5 scanned = 3 imported + 1 customer error + 1 server error
    document = manifest_doc(numberOfFilesWithCustomerError=1, numberOfFilesWithServerError=1)

    # When parsed
    manifest = parse_manifest(document)

    # Then it adds up, and both kinds are failures
    assert manifest.failed == 2


@pytest.mark.parametrize("generated", [0, 1, 4])
def test_generated_image_sets_must_match_the_summary(generated: int) -> None:
    # Given numberOfGeneratedImageSets other than the 2 image sets listed
    # When parsed
    problems = problems_of(manifest_doc(numberOfGeneratedImageSets=generated))

    # Then the disagreement is named
    assert problems == [
        f"{MANIFEST_FILE}: numberOfGeneratedImageSets is {generated} but imageSetsSummary lists 2 image sets"
    ]


def test_matched_instances_must_equal_the_imported_files() -> None:
    # Given a summary matching 2 + 2 instances for 3 imported files
    summary = [
        {"imageSetId": SET_A, "numberOfMatchedSOPInstances": 2},
        {"imageSetId": SET_B, "numberOfMatchedSOPInstances": 2},
    ]

    # When parsed
    problems = problems_of(manifest_doc(imageSetsSummary=summary))

    # Then the disagreement is named
    assert problems == [f"{MANIFEST_FILE}: imageSetsSummary matches 4 instances but 3 files were imported"]


def test_a_manifest_of_another_job_is_refused() -> None:
    # Given the spec's manifest, expected for another job
    other = "f" * 32

    # When parsed
    problems = problems_of(SPEC_MANIFEST, job_id=other)

    # Then the job is named
    assert problems == [f"{MANIFEST_FILE} belongs to job {JOB_ID}, not {other}"]


def test_a_manifest_of_another_data_store_is_refused() -> None:
    # Given the spec's manifest, expected for another data store
    other = "e" * 32

    # When parsed
    problems = problems_of(SPEC_MANIFEST, datastore_id=other)

    # Then the data store is named
    assert problems == [f"{MANIFEST_FILE} belongs to data store {DATASTORE_ID}, not {other}"]


def test_every_shape_problem_is_listed_at_once() -> None:
    # Given a manifest of another job, with a negative count and a bad image set id
    document = manifest_doc(numberOfImportedFiles=-3)
    document["jobSummary"]["imageSetsSummary"][1]["imageSetId"] = "short"

    # When parsed
    with pytest.raises(ResultsError) as info:
        parse_manifest(document, job_id="f" * 32)

    # Then all three are listed, in the error's problems and its message
    problems = info.value.problems
    assert problems == [
        f"{MANIFEST_FILE} belongs to job {JOB_ID}, not {'f' * 32}",
        f"{MANIFEST_FILE}: jobSummary.numberOfImportedFiles is missing or not a count",
        f"{MANIFEST_FILE}: imageSetsSummary[1].imageSetId is not an image set id",
    ]
    assert str(info.value) == "; ".join(problems)


def test_every_arithmetic_problem_is_listed_at_once() -> None:
    # Given a manifest where all three invariants fail
    document = manifest_doc(numberOfScannedFiles=9, numberOfGeneratedImageSets=5, numberOfImportedFiles=4)

    # When parsed
    problems = problems_of(document)

    # Then each invariant is named
    assert len(problems) == 3
    assert "9 files scanned but 4 imported" in problems[0]
    assert "numberOfGeneratedImageSets is 5" in problems[1]
    assert "matches 3 instances but 4 files were imported" in problems[2]


def test_results_error_is_a_value_error_with_its_problems() -> None:
    # Given two problems
    error = ResultsError(iter(["first", "second"]))

    # Then both are kept, joined in the message
    assert isinstance(error, ValueError)
    assert error.problems == ["first", "second"]
    assert str(error) == "first; second"


# ======================================================================================== NDJSON lines
def test_blank_lines_are_skipped_and_line_numbers_stay_physical() -> None:
    # Given blank and whitespace-only lines around two good ones, then a bad one on line 6
    lines = ["", SPEC_SUCCESS_LINES[0], "   ", "\n", SPEC_SUCCESS_LINES[1], '{"inputFile":"x"}']

    # When parsed
    parsed = success_records(lines)

    # Then the two good lines are records and the bad one is named by its physical line number
    assert [record.image_set_id for record in (next(parsed), next(parsed))] == [SET_A, SET_B]
    with pytest.raises(ResultsError, match=rf"^{SUCCESS_FILE} line 6 has no importResponse object$"):
        next(parsed)


def test_lines_given_as_bytes_and_as_str_parse_alike() -> None:
    # Given the same lines as text and as the bytes iter_lines() gives (with and without newlines)
    as_bytes = [line.encode() + b"\n" for line in SPEC_SUCCESS_LINES]
    as_failure_bytes = [line.encode() for line in SPEC_FAILURE_LINES]

    # When parsed
    # Then the records are the same
    assert list(success_records(as_bytes)) == list(success_records(SPEC_SUCCESS_LINES))
    assert list(failure_records(as_failure_bytes)) == list(failure_records(SPEC_FAILURE_LINES))
    assert list(success_records([b"", b"  \r\n"])) == []


def test_non_ascii_input_files_are_read_from_utf8_bytes() -> None:
    # Given a success line whose key is not ASCII, as UTF-8 bytes
    line = success_line("in/ü é/1.dcm", SET_A).encode()

    # When parsed
    (record,) = success_records([line])

    # Then the key is decoded
    assert record.input_file == "in/ü é/1.dcm"


def test_a_truncated_last_line_names_the_file_and_line_but_not_its_content() -> None:
    # Given a success file cut off in its third line
    lines = [*(line.encode() for line in SPEC_SUCCESS_LINES), b'{"inputFile":"DOE^JANE.dcm","importRe']

    # When parsed
    parsed = success_records(lines)
    first_two = [next(parsed), next(parsed)]
    with pytest.raises(ResultsError) as info:
        next(parsed)

    # Then the two good lines came first, and the error names file and line, without the content
    assert len(first_two) == 2
    assert str(info.value) == f"{SUCCESS_FILE} line 3 is not valid JSON (truncated or corrupt file?)"
    assert PATIENT not in str(info.value)
    assert info.value.__cause__ is None


def test_the_source_name_given_is_the_one_named() -> None:
    # Given a truncated line from a file read elsewhere
    # When parsed with a source name
    with pytest.raises(ResultsError) as info:
        list(failure_records([b'{"inputFile":"a.dcm","exce'], source="s3://b/k/FAILURE/failure.ndjson"))

    # Then that name is used
    assert str(info.value).startswith("s3://b/k/FAILURE/failure.ndjson line 1 ")


def test_invalid_utf8_is_reported_as_a_corrupt_line() -> None:
    # Given a line that is not UTF-8
    line = b'{"inputFile":"\xff\xfe DOE^JANE"}'

    # When parsed
    with pytest.raises(ResultsError) as info:
        list(failure_records([line]))

    # Then it is a corrupt line, named without its content
    assert str(info.value) == f"{FAILURE_FILE} line 1 is not valid JSON (truncated or corrupt file?)"
    assert PATIENT not in str(info.value)


@pytest.mark.parametrize(
    "line",
    ['["DOE^JANE", "a.dcm"]', '"DOE^JANE"', "42", "null"],
    ids=["array", "string", "number", "null"],
)
@pytest.mark.parametrize("parser", [success_records, failure_records], ids=["success", "failure"])
def test_a_line_that_is_not_a_json_object_is_refused(parser: Any, line: str) -> None:
    # Given a valid JSON line that is not an object, after a blank line
    # When parsed
    with pytest.raises(ResultsError) as info:
        list(parser(["", line]))

    # Then it is named by file and line, without its content
    source = SUCCESS_FILE if parser is success_records else FAILURE_FILE
    assert info.value.problems == [f"{source} line 2 is not a JSON object"]
    assert PATIENT not in str(info.value)


@pytest.mark.parametrize(
    ("line", "expected"),
    [
        ('{"inputFile":"DOE^JANE.dcm"}', "line 1 has no importResponse object"),
        ('{"inputFile":"DOE^JANE.dcm","importResponse":"DOE^JANE"}', "line 1 has no importResponse object"),
        (
            '{"inputFile":"DOE^JANE.dcm","importResponse":{"imageSetId":"DOE^JANE"}}',
            "line 1: importResponse.imageSetId is not an image set id",
        ),
        (
            json.dumps({"inputFile": "DOE^JANE.dcm", "importResponse": {"imageSetId": "AB" * 16}}),
            "line 1: importResponse.imageSetId is not an image set id",
        ),
        (
            '{"inputFile":"DOE^JANE.dcm","importResponse":{}}',
            "line 1: importResponse.imageSetId is not an image set id",
        ),
        (json.dumps({"importResponse": {"imageSetId": SET_A}, "x": PATIENT}), "line 1 has no inputFile"),
        (
            json.dumps({"inputFile": "", "importResponse": {"imageSetId": SET_A}, "x": PATIENT}),
            "line 1 has no inputFile",
        ),
        (
            json.dumps({"inputFile": 7, "importResponse": {"imageSetId": SET_A}, "x": PATIENT}),
            "line 1 has no inputFile",
        ),
    ],
    ids=[
        "no-response",
        "response-not-object",
        "bad-id",
        "uppercase-id",
        "no-id",
        "no-input-file",
        "empty-input-file",
        "input-file-not-string",
    ],
)
def test_a_malformed_success_line_is_named_without_its_content(line: str, expected: str) -> None:
    # Given a success line missing a field, with a patient-like value in it
    # When parsed
    with pytest.raises(ResultsError) as info:
        list(success_records([line]))

    # Then the file, line and problem are named, and the patient-like value is not
    assert str(info.value) == f"{SUCCESS_FILE} {expected}"
    assert PATIENT not in str(info.value)


@pytest.mark.parametrize(
    ("line", "expected"),
    [
        ('{"inputFile":"in/a.dcm"}', FailureRecord("in/a.dcm", "UnknownException", "")),
        ('{"inputFile":"in/a.dcm","exception":"boom"}', FailureRecord("in/a.dcm", "UnknownException", "")),
        ('{"inputFile":"in/a.dcm","exception":{}}', FailureRecord("in/a.dcm", "UnknownException", "")),
        (
            '{"inputFile":"in/a.dcm","exception":{"exceptionType":"","message":"m"}}',
            FailureRecord("in/a.dcm", "UnknownException", "m"),
        ),
        (
            '{"inputFile":"in/a.dcm","exception":{"exceptionType":"X","message":5}}',
            FailureRecord("in/a.dcm", "X", ""),
        ),
    ],
    ids=["no-exception", "exception-not-object", "empty-exception", "empty-type", "message-not-string"],
)
def test_a_failure_line_without_a_usable_exception_is_an_unknown_exception(
    line: str, expected: FailureRecord
) -> None:
    # Given a failure line without (part of) its exception object
    # When parsed
    records = list(failure_records([line]))

    # Then the file is still reported failed
    assert records == [expected]


@pytest.mark.parametrize(
    "line",
    [
        '{"exception":{"exceptionType":"ValidationException","message":"DOE^JANE"}}',
        '{"inputFile":null,"exception":{"message":"DOE^JANE"}}',
    ],
    ids=["missing", "null"],
)
def test_a_failure_line_without_an_input_file_is_refused(line: str) -> None:
    # Given a failure line that names no file
    # When parsed
    with pytest.raises(ResultsError) as info:
        list(failure_records([SPEC_FAILURE_LINES[0], line]))

    # Then it is named, without its content
    assert str(info.value) == f"{FAILURE_FILE} line 2 has no inputFile"
    assert PATIENT not in str(info.value)


def raising_after(lines: list[str]) -> Iterator[str]:
    yield from lines
    raise OSError("connection reset")


@pytest.mark.parametrize("parser", [success_records, failure_records], ids=["success", "failure"])
def test_the_parsers_are_lazy_and_yield_each_record_before_reading_the_next_line(parser: Any) -> None:
    # Given a stream that breaks after two lines
    lines = SPEC_SUCCESS_LINES if parser is success_records else SPEC_FAILURE_LINES
    records = parser(raising_after(lines))

    # When records are pulled one by one
    got = [next(records), next(records)]

    # Then both came before the stream broke, and the break surfaces on the third pull
    assert len(got) == 2
    with pytest.raises(OSError, match="connection reset"):
        next(records)


def test_nothing_is_read_until_the_first_record_is_asked_for() -> None:
    # Given a stream that breaks immediately
    # When the parser is made
    records = success_records(raising_after([]))

    # Then nothing has been read yet
    with pytest.raises(OSError, match="connection reset"):
        next(records)


# ======================================================================================== input_key
@pytest.mark.parametrize(
    ("input_file", "bucket", "expected"),
    [
        ("dicom_input/invalidDicomFile1.dcm", None, "dicom_input/invalidDicomFile1.dcm"),
        ("dicom_input/invalidDicomFile1.dcm", "landing", "dicom_input/invalidDicomFile1.dcm"),
        ("s3://landing/staging/b1/x.dcm", None, "staging/b1/x.dcm"),
        ("s3://landing/staging/b1/x.dcm", "landing", "staging/b1/x.dcm"),
        ("s3://other/staging/b1/x.dcm", "landing", "s3://other/staging/b1/x.dcm"),
        ("s3://landing/a/s3://b/c.dcm", "landing", "a/s3://b/c.dcm"),
    ],
    ids=["key", "key-with-bucket", "uri", "uri-of-bucket", "uri-of-other-bucket", "nested-uri"],
)
def test_input_key_names_the_object_key(input_file: str, bucket: str | None, expected: str) -> None:
    # Given an inputFile as a key or an S3 URI
    # When its key is taken
    # Then it is the key, unless the URI names another bucket
    assert input_key(input_file, bucket) == expected


# ======================================================================================== check_consistency
def consistent_manifest() -> JobManifest:
    return parse_manifest(SPEC_MANIFEST)


def consistent_success() -> list[str]:
    return [*SPEC_SUCCESS_LINES, EXTRA_SUCCESS_LINE]


def test_success_lines_must_number_the_imported_files() -> None:
    # Given one success line too many (a fourth instance of B): B's count disagrees too
    tally = tally_of([*consistent_success(), success_line("in/b2.dcm", SET_B)], SPEC_FAILURE_LINES)

    # When checked
    with pytest.raises(ResultsError) as info:
        check_consistency(consistent_manifest(), tally)

    # Then both disagreements are named
    assert info.value.problems == [
        f"{SUCCESS_FILE} has 4 lines but the manifest counts 3 imported files",
        f"image set {SET_B}: imageSetsSummary matches 1 instances, {SUCCESS_FILE} 2",
    ]


@pytest.mark.parametrize("failure_lines", [SPEC_FAILURE_LINES[:1], [*SPEC_FAILURE_LINES] * 2])
def test_failure_lines_must_number_the_customer_and_server_errors(failure_lines: list[str]) -> None:
    # Given too few or too many failure lines for 2 + 0 failed files
    tally = tally_of(consistent_success(), failure_lines)

    # When checked
    with pytest.raises(ResultsError) as info:
        check_consistency(consistent_manifest(), tally)

    # Then the failure count is named
    assert info.value.problems == [
        f"{FAILURE_FILE} has {len(failure_lines)} lines but the manifest counts 2 failed files"
    ]


def test_failure_lines_count_server_errors_too() -> None:
    # Given a manifest with 1 customer and 1 server error and two failure lines
    manifest = parse_manifest(manifest_doc(numberOfFilesWithCustomerError=1, numberOfFilesWithServerError=1))
    tally = tally_of(consistent_success(), SPEC_FAILURE_LINES)

    # When checked
    # Then they agree
    assert len(check_consistency(manifest, tally)) == 2


def test_an_image_set_of_the_lines_missing_from_the_summary_is_named() -> None:
    # Given B's line replaced by a line of an image set the summary does not list
    other = "0" * 32
    lines = [SPEC_SUCCESS_LINES[0], EXTRA_SUCCESS_LINE, success_line("in/c.dcm", other)]
    tally = tally_of(lines, SPEC_FAILURE_LINES)

    # When checked
    with pytest.raises(ResultsError) as info:
        check_consistency(consistent_manifest(), tally)

    # Then both directions are named: the stray image set, and B without lines
    assert info.value.problems == [
        f"1 image set(s) of {SUCCESS_FILE} are not in imageSetsSummary: ['{other}']",
        f"1 image set(s) of imageSetsSummary have no line in {SUCCESS_FILE}: ['{SET_B}']",
    ]


def test_an_image_set_of_the_summary_without_lines_is_named() -> None:
    # Given a manifest where A has all 3 instances and B has 0, and the consistent lines
    summary = [
        {"imageSetId": SET_A, "numberOfMatchedSOPInstances": 2},
        {"imageSetId": SET_B, "numberOfMatchedSOPInstances": 1},
        {"imageSetId": "0" * 32, "numberOfMatchedSOPInstances": 0},
    ]
    manifest = parse_manifest(manifest_doc(imageSetsSummary=summary, numberOfGeneratedImageSets=3))
    tally = tally_of(consistent_success(), SPEC_FAILURE_LINES)

    # When checked
    with pytest.raises(ResultsError) as info:
        check_consistency(manifest, tally)

    # Then the image set without lines is named
    assert info.value.problems == [
        f"1 image set(s) of imageSetsSummary have no line in {SUCCESS_FILE}: ['{'0' * 32}']"
    ]


def test_a_per_image_set_instance_mismatch_is_named() -> None:
    # Given one line of A and two of B (the totals agree, the split does not)
    lines = [SPEC_SUCCESS_LINES[0], SPEC_SUCCESS_LINES[1], success_line("in/b2.dcm", SET_B)]
    tally = tally_of(lines, SPEC_FAILURE_LINES)

    # When checked
    with pytest.raises(ResultsError) as info:
        check_consistency(consistent_manifest(), tally)

    # Then each image set's disagreement is named, in id order
    assert info.value.problems == [
        f"image set {SET_A}: imageSetsSummary matches 2 instances, {SUCCESS_FILE} 1",
        f"image set {SET_B}: imageSetsSummary matches 1 instances, {SUCCESS_FILE} 2",
    ]


def test_every_disagreement_is_listed_at_once() -> None:
    # Given no success lines and no failure lines at all for the spec's manifest
    # When checked
    with pytest.raises(ResultsError) as info:
        check_consistency(consistent_manifest(), ResultsTally())

    # Then the success count, failure count and the unseen image sets are all named
    assert info.value.problems == [
        f"{SUCCESS_FILE} has 0 lines but the manifest counts 3 imported files",
        f"{FAILURE_FILE} has 0 lines but the manifest counts 2 failed files",
        f"2 image set(s) of imageSetsSummary have no line in {SUCCESS_FILE}: ['{SET_A}', '{SET_B}']",
    ]


def test_the_tally_counts_error_types() -> None:
    # Given failure lines of several types
    lines = [
        *SPEC_FAILURE_LINES,
        '{"inputFile":"c.dcm","exception":{"exceptionType":"InternalServerException","message":""}}',
        '{"inputFile":"d.dcm"}',
    ]

    # When tallied
    tally = tally_of([], lines)

    # Then each type is counted
    assert tally.failed == 4
    assert tally.error_types == {
        "ValidationException": 2,
        "InternalServerException": 1,
        "UnknownException": 1,
    }

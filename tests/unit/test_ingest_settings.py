"""StartImport's settings (ahi_pipeline.settings): defaults, validation, derived URIs."""

from __future__ import annotations

import pytest

from ahi_pipeline.settings import JOB_MAX_BYTES, JOB_MAX_FILES, Settings, SettingsError

pytestmark = pytest.mark.unit

ENV = {
    "DATASTORE_ID": "0123456789abcdef0123456789abcdef",
    "LANDING_BUCKET": "landing-bucket",
    "OUTPUT_BUCKET": "output-bucket",
    "IMPORT_ROLE_ARN": "arn:aws:iam::123456789012:role/ImportRole",
    "BATCH_TABLE": "batches",
    "IDEMPOTENCY_TABLE": "idempotency",
}


def test_defaults_are_the_service_limits_and_the_documented_prefixes() -> None:
    # Given only the required variables
    # When the settings are read
    settings = Settings.from_env(ENV)

    # Then the prefixes and limits take their defaults
    assert settings.incoming_prefix == "incoming/"
    assert settings.staging_prefix == "staging/"
    assert settings.results_prefix == "import-results/"
    assert settings.max_files_per_job == JOB_MAX_FILES == 5000
    assert settings.max_bytes_per_job == JOB_MAX_BYTES == 10 * 1024**3


def test_derived_uris() -> None:
    # Given settings
    settings = Settings.from_env(ENV)

    # Then the job's URIs and the manifest's key follow from the batch id
    assert settings.output_s3_uri == "s3://output-bucket/import-results/"
    assert settings.input_s3_uri("abc") == "s3://landing-bucket/staging/abc/"
    assert settings.staging_folder("abc") == "staging/abc/"
    assert settings.manifest_key("abc") == "batches/abc.json"


def test_limits_can_be_lowered() -> None:
    # Given lower limits
    env = {**ENV, "MAX_FILES_PER_JOB": "100", "MAX_BYTES_PER_JOB": "1048576", "INCOMING_PREFIX": "drop/"}

    # When the settings are read
    settings = Settings.from_env(env)

    # Then they are used
    assert (settings.max_files_per_job, settings.max_bytes_per_job) == (100, 1048576)
    assert settings.incoming_prefix == "drop/"


def test_every_missing_variable_is_named_at_once() -> None:
    # Given an empty environment
    # When the settings are read
    with pytest.raises(SettingsError) as info:
        Settings.from_env({})

    # Then the message names each missing variable
    for name in ENV:
        assert f"{name} is not set" in str(info.value)


@pytest.mark.parametrize(
    ("name", "value", "expected"),
    [
        ("MAX_FILES_PER_JOB", "5001", "MAX_FILES_PER_JOB must be 1–5000"),
        ("MAX_FILES_PER_JOB", "0", "MAX_FILES_PER_JOB must be 1–5000"),
        ("MAX_FILES_PER_JOB", "many", "MAX_FILES_PER_JOB must be an integer"),
        ("MAX_BYTES_PER_JOB", str(10 * 1024**3 + 1), "MAX_BYTES_PER_JOB must be 1–"),
        ("DATASTORE_ID", "not-an-id", "DATASTORE_ID must be 32"),
        ("LANDING_BUCKET", "Bad_Bucket", "LANDING_BUCKET is not a valid S3 bucket name"),
        ("IMPORT_ROLE_ARN", "arn:aws:iam::123:user/x", "IMPORT_ROLE_ARN is not an IAM role ARN"),
        ("INCOMING_PREFIX", "incoming", "INCOMING_PREFIX must be a key prefix ending with '/'"),
        ("STAGING_PREFIX", "/staging/", "STAGING_PREFIX must be a key prefix"),
        ("BATCH_TABLE", "x", "BATCH_TABLE is not a valid DynamoDB table name"),
    ],
)
def test_invalid_values_are_refused_with_the_variable_named(name: str, value: str, expected: str) -> None:
    # Given one invalid variable
    env = {**ENV, name: value}

    # When the settings are read
    with pytest.raises(SettingsError) as info:
        Settings.from_env(env)

    # Then the message says which and why
    assert expected in str(info.value)


@pytest.mark.parametrize(
    "env",
    [
        {"STAGING_PREFIX": "incoming/staging/"},  # copies would raise upload events for themselves
        {"INCOMING_PREFIX": "data/", "STAGING_PREFIX": "data/"},
        {"OUTPUT_BUCKET": "landing-bucket", "RESULTS_PREFIX": "incoming/results/"},
        {"OUTPUT_BUCKET": "landing-bucket", "INCOMING_PREFIX": "batches/"},
    ],
)
def test_overlapping_prefixes_in_one_bucket_are_refused(env: dict[str, str]) -> None:
    # Given prefixes that overlap in the same bucket
    # When the settings are read
    with pytest.raises(SettingsError) as info:
        Settings.from_env({**ENV, **env})

    # Then the overlap is named
    assert "overlaps" in str(info.value)


def test_one_bucket_for_everything_is_fine_when_prefixes_are_disjoint() -> None:
    # Given a single bucket with disjoint prefixes
    settings = Settings.from_env({**ENV, "OUTPUT_BUCKET": "landing-bucket"})

    # Then it is accepted
    assert settings.output_bucket == settings.landing_bucket

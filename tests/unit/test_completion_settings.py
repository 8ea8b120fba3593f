"""ImportCompleted's and ReconcileJobs' settings (ahi_pipeline.settings.CompletionSettings)."""

from __future__ import annotations

import dataclasses

import pytest

from ahi_pipeline.settings import CompletionSettings, SettingsError

pytestmark = pytest.mark.unit

ENV = {
    "DATASTORE_ID": "0123456789abcdef0123456789abcdef",
    "OUTPUT_BUCKET": "output-bucket",
    "BATCH_TABLE": "batches",
    "IDEMPOTENCY_TABLE": "idempotency",
    "EVENT_BUS_NAME": "ahi-pipeline",
}
QUEUE_URL = "http://127.0.0.1:4566/123456789012/jobs"


def problems(env: dict[str, str]) -> str:
    with pytest.raises(SettingsError) as info:
        CompletionSettings.from_env(env)
    message = str(info.value)
    assert message.startswith("invalid ImportCompleted settings: ")
    return message


def test_required_variables_with_defaults() -> None:
    # Given only the required variables
    # When the settings are read
    settings = CompletionSettings.from_env(ENV)

    # Then they are used, and the rest take their defaults
    assert settings == CompletionSettings(
        datastore_id="0123456789abcdef0123456789abcdef",
        output_bucket="output-bucket",
        batch_table="batches",
        idempotency_table="idempotency",
        event_bus_name="ahi-pipeline",
    )
    assert settings.results_prefix == "import-results/"
    assert settings.reports_prefix == "reports/"
    assert settings.job_events_queue_url is None
    assert settings.manifest_wait_seconds == 10.0
    assert isinstance(settings.manifest_wait_seconds, float)
    assert (settings.reconcile_lookback_hours, settings.reconcile_grace_minutes) == (72, 10)


def test_every_optional_variable_is_read() -> None:
    # Given every optional variable too
    env = {
        **ENV,
        "JOB_EVENTS_QUEUE_URL": QUEUE_URL,
        "RECONCILE_LOOKBACK_HOURS": "24",
        "RECONCILE_GRACE_MINUTES": "0",
        "MANIFEST_WAIT_SECONDS": "30",
        "RESULTS_PREFIX": "results/",
        "REPORTS_PREFIX": "job-reports/",
    }

    # When the settings are read
    settings = CompletionSettings.from_env(env)

    # Then each is used
    assert settings.job_events_queue_url == QUEUE_URL
    assert settings.reconcile_lookback_hours == 24
    assert settings.reconcile_grace_minutes == 0
    assert settings.manifest_wait_seconds == 30.0
    assert settings.results_prefix == "results/"
    assert settings.reports_prefix == "job-reports/"
    assert settings.report_key("abc") == "job-reports/import-jobs/abc.json"


def test_report_and_manifest_keys() -> None:
    # Given the default prefixes
    settings = CompletionSettings.from_env(ENV)

    # Then a job's report and a batch's member list have their documented keys
    assert settings.report_key("abc") == "reports/import-jobs/abc.json"
    assert settings.manifest_key("b1") == "batches/b1.json"


def test_values_are_stripped_and_blank_optionals_take_defaults() -> None:
    # Given padded values and blank optional variables
    env = {
        **{name: f"  {value}\n" for name, value in ENV.items()},
        "JOB_EVENTS_QUEUE_URL": "   ",
        "RECONCILE_LOOKBACK_HOURS": "",
        "REPORTS_PREFIX": " ",
    }

    # When the settings are read
    settings = CompletionSettings.from_env(env)

    # Then the values are stripped and the blanks are defaults
    assert settings.datastore_id == ENV["DATASTORE_ID"]
    assert settings.job_events_queue_url is None
    assert settings.reconcile_lookback_hours == 72
    assert settings.reports_prefix == "reports/"


def test_settings_are_immutable() -> None:
    # Given settings
    settings = CompletionSettings.from_env(ENV)

    # Then they cannot be changed
    with pytest.raises(dataclasses.FrozenInstanceError):
        settings.datastore_id = "x"  # type: ignore[misc]


def test_from_env_reads_os_environ_by_default(monkeypatch: pytest.MonkeyPatch) -> None:
    # Given the variables in the process environment
    for name, value in ENV.items():
        monkeypatch.setenv(name, value)
    monkeypatch.setenv("JOB_EVENTS_QUEUE_URL", QUEUE_URL)

    # When the settings are read without a mapping
    settings = CompletionSettings.from_env()

    # Then they come from os.environ
    assert settings.event_bus_name == "ahi-pipeline"
    assert settings.job_events_queue_url == QUEUE_URL


def test_every_missing_variable_is_named_in_one_error() -> None:
    # Given an empty environment
    # When the settings are read
    message = problems({})

    # Then each required variable is named, and nothing optional
    for name in ENV:
        assert f"{name} is not set" in message
    assert message.count("is not set") == len(ENV)


@pytest.mark.parametrize("name", sorted(ENV))
def test_one_missing_variable_is_named(name: str) -> None:
    # Given all but one required variable
    env = {key: value for key, value in ENV.items() if key != name}

    # When the settings are read
    # Then just that one is named
    assert problems(env) == f"invalid ImportCompleted settings: {name} is not set"


@pytest.mark.parametrize(
    ("name", "value", "expected"),
    [
        (
            "DATASTORE_ID",
            "0123456789ABCDEF0123456789ABCDEF",
            "DATASTORE_ID must be 32 lowercase letters or digits",
        ),
        ("DATASTORE_ID", "0123456789abcdef", "DATASTORE_ID must be 32 lowercase letters or digits"),
        ("OUTPUT_BUCKET", "Bad_Bucket", "OUTPUT_BUCKET is not a valid S3 bucket name"),
        ("OUTPUT_BUCKET", "a..b", "OUTPUT_BUCKET is not a valid S3 bucket name"),
        ("BATCH_TABLE", "x", "BATCH_TABLE is not a valid DynamoDB table name"),
        ("IDEMPOTENCY_TABLE", "bad table", "IDEMPOTENCY_TABLE is not a valid DynamoDB table name"),
        ("EVENT_BUS_NAME", "bad bus", "EVENT_BUS_NAME is not an event bus name"),
        ("RECONCILE_LOOKBACK_HOURS", "many", "RECONCILE_LOOKBACK_HOURS must be an integer; got 'many'"),
        ("RECONCILE_LOOKBACK_HOURS", "1.5", "RECONCILE_LOOKBACK_HOURS must be an integer"),
        ("RECONCILE_LOOKBACK_HOURS", "0", "RECONCILE_LOOKBACK_HOURS must be 1–2160 (90 days); got 0"),
        ("RECONCILE_LOOKBACK_HOURS", "3000", "RECONCILE_LOOKBACK_HOURS must be 1–2160 (90 days); got 3000"),
        ("RECONCILE_GRACE_MINUTES", "-1", "RECONCILE_GRACE_MINUTES must be 0–1440; got -1"),
        ("RECONCILE_GRACE_MINUTES", "1441", "RECONCILE_GRACE_MINUTES must be 0–1440; got 1441"),
        ("RECONCILE_GRACE_MINUTES", "soon", "RECONCILE_GRACE_MINUTES must be an integer"),
        ("MANIFEST_WAIT_SECONDS", "301", "MANIFEST_WAIT_SECONDS must be 0–300; got 301"),
        ("MANIFEST_WAIT_SECONDS", "-1", "MANIFEST_WAIT_SECONDS must be 0–300; got -1"),
        ("MANIFEST_WAIT_SECONDS", "ten", "MANIFEST_WAIT_SECONDS must be a number of seconds"),
        ("RESULTS_PREFIX", "import-results", "RESULTS_PREFIX must be a key prefix ending with '/'"),
        ("RESULTS_PREFIX", "/import-results/", "RESULTS_PREFIX must be a key prefix"),
        ("REPORTS_PREFIX", "reports//x/", "REPORTS_PREFIX must be a key prefix"),
        ("REPORTS_PREFIX", "import-results/x/", "RESULTS_PREFIX ('import-results/') overlaps REPORTS_PREFIX"),
        (
            "REPORTS_PREFIX",
            "batches/",
            "REPORTS_PREFIX ('batches/') overlaps the batch manifests ('batches/')",
        ),
        ("RESULTS_PREFIX", "batches/x/", "RESULTS_PREFIX ('batches/x/') overlaps the batch manifests"),
        ("RESULTS_PREFIX", "reports/", "RESULTS_PREFIX ('reports/') overlaps REPORTS_PREFIX ('reports/')"),
        ("JOB_EVENTS_QUEUE_URL", "jobs", "JOB_EVENTS_QUEUE_URL is not an SQS queue URL"),
        (
            "JOB_EVENTS_QUEUE_URL",
            "http://127.0.0.1:4566/jobs",
            "JOB_EVENTS_QUEUE_URL is not an SQS queue URL",
        ),
        (
            "JOB_EVENTS_QUEUE_URL",
            "arn:aws:sqs:us-east-1:123456789012:jobs",
            "JOB_EVENTS_QUEUE_URL is not an SQS queue URL",
        ),
        (
            "JOB_EVENTS_QUEUE_URL",
            "https://sqs.us-east-1.amazonaws.com/12345/jobs",
            "JOB_EVENTS_QUEUE_URL is not an SQS queue URL",
        ),
    ],
)
def test_an_invalid_value_is_reported(name: str, value: str, expected: str) -> None:
    # Given one invalid value
    env = {**ENV, name: value}

    # When the settings are read
    # Then the problem is reported, naming the variable
    assert expected in problems(env)


@pytest.mark.parametrize(
    ("name", "value"),
    [
        ("RECONCILE_LOOKBACK_HOURS", "1"),
        ("RECONCILE_LOOKBACK_HOURS", "2160"),
        ("RECONCILE_GRACE_MINUTES", "1440"),
        ("MANIFEST_WAIT_SECONDS", "0"),
        ("MANIFEST_WAIT_SECONDS", "300"),
        (
            "JOB_EVENTS_QUEUE_URL",
            "https://sqs.us-east-1.amazonaws.com/123456789012/ahi-JobEventsQueue-AbC_12",
        ),
        ("EVENT_BUS_NAME", "stack-pipeline.v2/x"),
        ("OUTPUT_BUCKET", "my.output-bucket-1"),
        ("BATCH_TABLE", "Stack-BatchTable-1ABC.x_y"),
        ("REPORTS_PREFIX", "import-results-reports/"),
    ],
)
def test_boundary_and_realistic_values_are_accepted(name: str, value: str) -> None:
    # Given a value at a limit, or shaped like what CloudFormation generates
    # When the settings are read
    settings = CompletionSettings.from_env({**ENV, name: value})

    # Then it is accepted
    assert settings is not None


def test_every_invalid_value_is_reported_at_once() -> None:
    # Given several invalid values (all variables present, all integers parse)
    env = {
        **ENV,
        "DATASTORE_ID": "not-an-id",
        "RECONCILE_LOOKBACK_HOURS": "3000",
        "REPORTS_PREFIX": "batches/",
        "JOB_EVENTS_QUEUE_URL": "jobs",
    }

    # When the settings are read
    message = problems(env)

    # Then each is named in the one error
    for expected in (
        "DATASTORE_ID must be 32",
        "RECONCILE_LOOKBACK_HOURS must be 1–2160",
        "REPORTS_PREFIX ('batches/') overlaps the batch manifests",
        "JOB_EVENTS_QUEUE_URL is not an SQS queue URL",
    ):
        assert expected in message


def test_every_unparsable_or_missing_variable_is_reported_at_once() -> None:
    # Given a missing variable and two values that are not integers
    env = {key: value for key, value in ENV.items() if key != "OUTPUT_BUCKET"}
    env |= {"RECONCILE_LOOKBACK_HOURS": "many", "RECONCILE_GRACE_MINUTES": "few"}

    # When the settings are read
    message = problems(env)

    # Then all three are named
    assert "OUTPUT_BUCKET is not set" in message
    assert "RECONCILE_LOOKBACK_HOURS must be an integer" in message
    assert "RECONCILE_GRACE_MINUTES must be an integer" in message


def test_an_invalid_value_is_reported_with_a_missing_one() -> None:
    # Given a missing variable and an invalid (but present) data store id
    env = {key: value for key, value in ENV.items() if key != "OUTPUT_BUCKET"}
    env["DATASTORE_ID"] = "not-an-id"

    # When the settings are read
    message = problems(env)

    # Then both are named in the one error
    assert "OUTPUT_BUCKET is not set" in message
    assert "DATASTORE_ID must be 32" in message


def test_an_event_bus_arn_is_accepted() -> None:
    # Given the bus as an ARN (PutEvents' EventBusName accepts a name or an ARN)
    env = {**ENV, "EVENT_BUS_NAME": "arn:aws:events:us-east-1:123456789012:event-bus/ahi-pipeline"}

    # When the settings are read
    settings = CompletionSettings.from_env(env)

    # Then the ARN is used
    assert settings.event_bus_name == env["EVENT_BUS_NAME"]


def test_a_fractional_manifest_wait_is_read() -> None:
    # Given a fractional wait in the environment
    # When the settings are read
    # Then it is used as it is, and a value that is not a number is named
    assert CompletionSettings.from_env({**ENV, "MANIFEST_WAIT_SECONDS": "2.5"}).manifest_wait_seconds == 2.5
    assert "MANIFEST_WAIT_SECONDS must be a number of seconds; got 'soon'" in problems(
        {**ENV, "MANIFEST_WAIT_SECONDS": "soon"}
    )


def test_the_constructor_validates_too() -> None:
    # Given settings built directly with an invalid value
    # When constructed
    # Then the same validation applies
    with pytest.raises(SettingsError, match="RECONCILE_GRACE_MINUTES must be 0–1440; got 2000"):
        CompletionSettings(
            datastore_id=ENV["DATASTORE_ID"],
            output_bucket=ENV["OUTPUT_BUCKET"],
            batch_table=ENV["BATCH_TABLE"],
            idempotency_table=ENV["IDEMPOTENCY_TABLE"],
            event_bus_name=ENV["EVENT_BUS_NAME"],
            reconcile_grace_minutes=2000,
        )

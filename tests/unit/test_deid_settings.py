"""DeidSettings: Deidentify's environment, read once and validated (every problem named at once)."""

from __future__ import annotations

import pytest

from ahi_pipeline.settings import DeidSettings, SettingsError

pytestmark = pytest.mark.unit

ENV = {
    "DATASTORE_ID": "0123456789abcdef0123456789abcdef",
    "OUTPUT_BUCKET": "output-bucket",
    "BATCH_TABLE": "batches",
    "IDEMPOTENCY_TABLE": "idempotency",
    "EVENT_BUS_NAME": "pipeline",
    "DEID_KEY_SECRET_ARN": "arn:aws:secretsmanager:us-east-1:123456789012:secret:deid-key-AbCdEf",
}


def test_a_valid_environment_gives_the_defaults() -> None:
    # Given only the required variables / When read / Then de-identification and purge are on
    settings = DeidSettings.from_env(ENV)
    assert (settings.enabled, settings.purge_history, settings.options, settings.safe_private) == (
        True,
        True,
        "",
        "",
    )
    assert settings.report_key("abc") == "reports/deidentification/abc.json"


def test_the_switches_and_options_are_read() -> None:
    # Given every optional variable
    env = {
        **ENV,
        "DEIDENTIFY": "false",
        "PURGE_HISTORY": "no",
        "DEID_OPTIONS": "RetainUIDs, CleanDescriptors",
        "DEID_SAFE_PRIVATE": "GEMS_ACQU_01:0019:1E",
    }
    # When read / Then each is kept
    settings = DeidSettings.from_env(env)
    assert (settings.enabled, settings.purge_history) == (False, False)
    assert settings.options == "RetainUIDs, CleanDescriptors"
    assert settings.safe_private == "GEMS_ACQU_01:0019:1E"


def test_every_problem_is_named_at_once() -> None:
    # Given a missing secret, an unknown option, a bad switch and a malformed safe private entry
    env = {key: value for key, value in ENV.items() if key != "DEID_KEY_SECRET_ARN"}
    env |= {"DEID_OPTIONS": "RetainEverything", "DEIDENTIFY": "maybe", "DEID_SAFE_PRIVATE": "GEMS:0018:1E"}

    # When read
    with pytest.raises(SettingsError) as info:
        DeidSettings.from_env(env)

    # Then one error names them all
    message = str(info.value)
    assert "DEID_KEY_SECRET_ARN is not set" in message
    assert "DEIDENTIFY must be true or false" in message
    assert "RetainEverything" in message
    assert "DEID_SAFE_PRIVATE" in message


def test_a_secret_that_is_not_a_secrets_manager_arn_is_refused() -> None:
    with pytest.raises(SettingsError, match="DEID_KEY_SECRET_ARN is not a Secrets Manager secret ARN"):
        DeidSettings.from_env(
            {**ENV, "DEID_KEY_SECRET_ARN": "arn:aws:ssm:us-east-1:123456789012:parameter/key"}
        )

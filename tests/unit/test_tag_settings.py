"""TagSettings: TagImageSet's environment, read once and validated."""

from __future__ import annotations

import pytest

from ahi_pipeline.settings import SettingsError, TagSettings

pytestmark = pytest.mark.unit

DATASTORE = "0123456789abcdef0123456789abcdef"


def test_rules_and_options_are_read() -> None:
    settings = TagSettings.from_env(
        {"DATASTORE_ID": DATASTORE, "TAG_RULES": "site:protocol=ProtocolName", "DEID_OPTIONS": "RetainUIDs"}
    )
    assert (settings.rules, settings.deid_options) == ("site:protocol=ProtocolName", "RetainUIDs")


def test_every_problem_is_named_at_once() -> None:
    # Given a bad data store id, a rule naming no DICOM attribute and an unknown option
    env = {"DATASTORE_ID": "nope", "TAG_RULES": "site:protocol=ProtocolNme", "DEID_OPTIONS": "RetainAll"}
    # When read / Then one error names the three
    with pytest.raises(SettingsError) as info:
        TagSettings.from_env(env)
    message = str(info.value)
    assert "DATASTORE_ID" in message
    assert "ProtocolNme" in message
    assert "RetainAll" in message

"""``python -m emulator``: the one-command start, a boto3 call, and a clean stop on SIGTERM."""

from __future__ import annotations

import re
import signal
import subprocess
import sys
from pathlib import Path

import boto3
import pytest

from emulator.__main__ import events_enabled, parse_args
from tests.conftest import REGION, client_config

pytestmark = pytest.mark.emulator


def test_the_command_serves_boto3_and_stops_cleanly(tmp_path: Path) -> None:
    # Given the emulator started from the command line on a free port
    command = [sys.executable, "-m", "emulator", "--port", "0", "--data-dir", str(tmp_path / "state")]
    process = subprocess.Popen(command, stderr=subprocess.PIPE, text=True)
    try:
        assert process.stderr is not None
        line = process.stderr.readline()
        match = re.search(r"on (http://127\.0\.0\.1:\d+)", line)
        assert match, line
        # When boto3 calls it
        ahi = boto3.client(
            "medical-imaging", region_name=REGION, endpoint_url=match.group(1), config=client_config()
        )
        created = ahi.create_datastore(datastoreName="from-the-command-line")
        # Then it answers, and its state is in the data directory
        assert created["datastoreStatus"] == "CREATING"
        assert (tmp_path / "state" / "state.sqlite3").exists()
    finally:
        process.send_signal(signal.SIGTERM)
        assert process.wait(timeout=20) == 0


@pytest.mark.parametrize(
    ("flag", "endpoint", "environment", "expected"),
    [
        (None, None, {}, False),
        (None, "http://127.0.0.1:5000", {}, True),
        (None, None, {"AWS_ENDPOINT_URL_EVENTS": "http://127.0.0.1:5000"}, True),
        (None, None, {"AWS_ENDPOINT_URL": "http://127.0.0.1:4566"}, True),
        (False, "http://127.0.0.1:5000", {}, False),
        (True, None, {}, True),
    ],
)
def test_events_are_on_when_an_eventbridge_is_configured(
    monkeypatch: pytest.MonkeyPatch,
    flag: bool | None,
    endpoint: str | None,
    environment: dict[str, str],
    expected: bool,
) -> None:
    for name in ("AWS_ENDPOINT_URL_EVENTS", "AWS_ENDPOINT_URL"):
        monkeypatch.delenv(name, raising=False)
    for name, value in environment.items():
        monkeypatch.setenv(name, value)
    assert events_enabled(flag, endpoint) is expected


def test_the_documented_command_line_parses() -> None:
    args = parse_args(["--host", "127.0.0.1", "--port", "4567", "--data-dir", ".emulator", "--throttling"])
    assert (args.host, args.port, str(args.data_dir), args.throttling) == (
        "127.0.0.1",
        4567,
        ".emulator",
        True,
    )


def test_frames_keep_their_original_encoding_unless_told_otherwise() -> None:
    # Given the command line with and without --no-retain-original-encoding
    # When parsing it
    # Then the service's behaviour (keep JPEG Baseline, JPEG 2000, HTJ2K frames) is the default
    assert parse_args([]).retain_original_encoding is True
    assert parse_args(["--no-retain-original-encoding"]).retain_original_encoding is False

"""Fixtures of the local runtime's tests: the fixture template, and a helper that waits for a condition."""

from __future__ import annotations

import json
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any, TypeVar

import pytest

FIXTURES = Path(__file__).parent / "fixtures"
TEMPLATE = FIXTURES / "template.yaml"

T = TypeVar("T")


def eventually(probe: Callable[[], T], done: Callable[[T], bool], *, what: str, timeout: float = 30.0) -> T:
    """Call ``probe`` until ``done(result)``; fail with the last result after ``timeout`` seconds."""
    deadline = time.monotonic() + timeout
    while True:
        result = probe()
        if done(result):
            return result
        if time.monotonic() > deadline:
            pytest.fail(f"timed out after {timeout:.0f} s waiting for {what}; last: {result!r}")
        time.sleep(0.05)


def drain(sqs: Any, queue_url: str) -> list[dict[str, Any]]:
    """Every message currently visible in a queue, deleted as read."""
    messages: list[dict[str, Any]] = []
    while batch := sqs.receive_message(
        QueueUrl=queue_url, MaxNumberOfMessages=10, WaitTimeSeconds=0, MessageAttributeNames=["All"]
    ).get("Messages", []):
        for message in batch:
            sqs.delete_message(QueueUrl=queue_url, ReceiptHandle=message["ReceiptHandle"])
        messages += batch
    return messages


def skip_body(key: str) -> str:
    """An S3-event-shaped body that the fixture's recorder acknowledges without work (zero bytes)."""
    return json.dumps({"detail": {"bucket": {"name": "b"}, "object": {"key": key, "size": 0}}})

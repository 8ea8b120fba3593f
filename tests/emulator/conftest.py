"""Fixtures of the conformance suite: a fresh data store per test, and extra emulators with other settings."""

from __future__ import annotations

import dataclasses
from collections.abc import Callable, Iterator
from contextlib import ExitStack
from pathlib import Path
from typing import Any

import pytest

from emulator.config import EmulatorConfig
from emulator.server import Emulator
from tests.emulator import helpers


@pytest.fixture
def datastore(ahi: Any, emulator: Emulator) -> Iterator[str]:
    """An ACTIVE data store of the session emulator, emptied and deleted after the test.

    Deleting it keeps the session under the quota of 10 active data stores per Region.
    """
    datastore_id = helpers.create_datastore(ahi)
    yield datastore_id
    emulator.wait_idle()
    helpers.delete_datastore(ahi, datastore_id)


@pytest.fixture
def start_emulator(moto_url: str, tmp_path: Path) -> Iterator[Callable[..., Emulator]]:
    """Start another emulator (S3 on moto, its own data directory) with some settings changed.

    ``start_emulator(quotas=Quotas(active_datastores=2))``; every one started is stopped after the test.
    """
    started = 0
    with ExitStack() as stack:

        def start(**settings: Any) -> Emulator:
            nonlocal started
            started += 1
            defaults = EmulatorConfig(
                data_dir=tmp_path / f"emulator-{started}",
                s3_endpoint_url=moto_url,
                transition_delay=0.01,
            )
            config = dataclasses.replace(defaults, **settings)
            running = Emulator(config).start()
            stack.callback(running.stop)
            stack.callback(running.wait_idle)
            return running

        yield start


@pytest.fixture
def event_sink(moto_url: str) -> Iterator[helpers.EventSink]:
    """A queue receiving the service's events from moto's EventBridge (request it before ``datastore``)."""
    sink = helpers.EventSink(moto_url)
    yield sink
    sink.close()

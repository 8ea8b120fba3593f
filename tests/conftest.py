"""Shared fixtures: AWS settings for offline runs, moto on loopback, and the emulator in-process."""

from __future__ import annotations

import os
from collections.abc import Iterator
from typing import Any

import boto3
import pytest
from botocore.config import Config
from moto.server import ThreadedMotoServer

from emulator.config import EmulatorConfig
from emulator.server import Emulator

REGION = "us-east-1"
ROLE_ARN = "arn:aws:iam::123456789012:role/ImportJobDataAccessRole"


@pytest.fixture(scope="session", autouse=True)
def offline_aws() -> Iterator[None]:
    """Fake credentials and no host prefix (the emulator has one host), never real AWS."""
    saved = dict(os.environ)
    os.environ.update(
        {
            "AWS_ACCESS_KEY_ID": "testing",
            "AWS_SECRET_ACCESS_KEY": "testing",
            "AWS_SESSION_TOKEN": "testing",
            "AWS_DEFAULT_REGION": REGION,
            "AWS_DISABLE_HOST_PREFIX_INJECTION": "true",
            "AWS_EC2_METADATA_DISABLED": "true",
        }
    )
    for name in ("AWS_PROFILE", "AWS_ENDPOINT_URL", "AWS_ENDPOINT_URL_S3", "AWS_ENDPOINT_URL_EVENTS"):
        os.environ.pop(name, None)
    yield
    os.environ.clear()
    os.environ.update(saved)


@pytest.fixture(scope="session")
def moto_url(offline_aws: None) -> Iterator[str]:
    """moto's server (S3, EventBridge, SQS, …) on a free loopback port."""
    server = ThreadedMotoServer(ip_address="127.0.0.1", port=0, verbose=False)
    server.start()
    host, port = server.get_host_and_port()
    yield f"http://{host}:{port}"
    server.stop()


@pytest.fixture(scope="session")
def emulator(moto_url: str, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Emulator]:
    """The emulator in-process on a free port, reading S3 and publishing events through moto."""
    config = EmulatorConfig(
        data_dir=tmp_path_factory.mktemp("emulator"),
        s3_endpoint_url=moto_url,
        events=True,
        events_endpoint_url=moto_url,
        transition_delay=0.01,
    )
    with Emulator(config) as running:
        yield running


def client_config() -> Config:
    return Config(inject_host_prefix=False, retries={"mode": "standard", "total_max_attempts": 1})


@pytest.fixture
def ahi(emulator: Emulator) -> Any:
    """An unmodified boto3 ``medical-imaging`` client pointed at the emulator."""
    return boto3.client(
        "medical-imaging", region_name=REGION, endpoint_url=emulator.endpoint_url, config=client_config()
    )


@pytest.fixture
def s3(moto_url: str) -> Any:
    return boto3.client("s3", region_name=REGION, endpoint_url=moto_url)


@pytest.fixture
def bucket(s3: Any, request: pytest.FixtureRequest) -> str:
    """A fresh bucket per test (moto's state is shared by the session)."""
    name = "t-" + "".join(c for c in request.node.name.lower() if c.isalnum())[:40] + f"-{os.getpid()}"
    s3.create_bucket(Bucket=name)
    return name

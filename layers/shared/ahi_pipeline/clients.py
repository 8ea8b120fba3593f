"""boto3 clients, made on first use and kept for the execution environment.

Endpoints are never configured here: boto3 reads the standard ``AWS_ENDPOINT_URL`` /
``AWS_ENDPOINT_URL_<SERVICE>`` variables and ``AWS_DISABLE_HOST_PREFIX_INJECTION`` itself, which is
how the local stack and the tests point the same code at moto and the emulator.

Retries use botocore's ``adaptive`` mode: exponential backoff with jitter on ``ThrottlingException``
and other transient errors, plus a client-side rate limiter that slows down once the service throttles.
With 10 attempts a throttled StartDICOMImportJob (0.25 TPS, burst 1) waits long enough for a token.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any, Final

import boto3
from botocore.config import Config
from botocore.exceptions import ClientError

from ahi_pipeline.runtime import per_environment

if TYPE_CHECKING:
    from mypy_boto3_medical_imaging import HealthImagingClient
    from mypy_boto3_s3 import S3Client

__all__ = [
    "MAX_ATTEMPTS",
    "POOL_CONNECTIONS",
    "dynamodb",
    "error_code",
    "events",
    "medical_imaging",
    "s3",
    "secrets_manager",
    "sqs",
]

MAX_ATTEMPTS: Final = 10
#: S3 copies run on this many threads (one connection each).
POOL_CONNECTIONS: Final = 32


def _config(**extra: Any) -> Config:
    return Config(retries={"mode": "adaptive", "total_max_attempts": MAX_ATTEMPTS}, **extra)


@per_environment
def _session() -> boto3.session.Session:
    return boto3.session.Session()


@per_environment
def s3() -> S3Client:
    return _session().client("s3", config=_config(max_pool_connections=POOL_CONNECTIONS))


@per_environment
def medical_imaging() -> HealthImagingClient:
    return _session().client("medical-imaging", config=_config())


@per_environment
def dynamodb() -> Any:
    """The DynamoDB client (untyped: the project does not install ``mypy-boto3-dynamodb``)."""
    return _session().client("dynamodb", config=_config())


@per_environment
def events() -> Any:
    """The EventBridge client (untyped: the project does not install ``mypy-boto3-events``)."""
    return _session().client("events", config=_config())


@per_environment
def sqs() -> Any:
    """The SQS client (untyped: the project does not install ``mypy-boto3-sqs``)."""
    return _session().client("sqs", config=_config())


@per_environment
def secrets_manager() -> Any:
    """The Secrets Manager client (untyped: the project does not install ``mypy-boto3-secretsmanager``)."""
    return _session().client("secretsmanager", config=_config())


def error_code(error: BaseException) -> str:
    """The AWS error code of a failed call (``ClientError``: ``Error.Code``, else "ClientError"); for any
    other exception (a ``BotoCoreError`` such as a timeout), its class name."""
    if isinstance(error, ClientError):
        return str(error.response.get("Error", {}).get("Code") or "ClientError")
    return type(error).__name__

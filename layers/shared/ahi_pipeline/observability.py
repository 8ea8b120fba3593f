"""The Powertools singletons shared by the handlers and the package, and the ingest metric names.

Logger, Tracer and Metrics read ``POWERTOOLS_SERVICE_NAME``, ``POWERTOOLS_LOG_LEVEL`` and
``POWERTOOLS_METRICS_NAMESPACE`` when created; no I/O happens here.  Logs never carry object keys or
DICOM content (keys can hold patient names): uploads are named by their object id, a hash.
"""

from __future__ import annotations

import os
from typing import Final

from aws_lambda_powertools import Logger, Metrics, Tracer
from aws_lambda_powertools.metrics import MetricUnit

__all__ = ["Metric", "count", "logger", "metrics", "tracer"]

DEFAULT_NAMESPACE: Final = "HealthImagingAutomation"

logger = Logger()
tracer = Tracer(patch_modules=("botocore",))  # AWS SDK calls only; not every HTTP library installed
metrics = Metrics(namespace=os.environ.get("POWERTOOLS_METRICS_NAMESPACE") or DEFAULT_NAMESPACE)


class Metric:
    """Metric names of the ingest stage (all counts)."""

    FILES_ACCEPTED: Final = "FilesAccepted"
    FILES_SKIPPED: Final = "FilesSkipped"
    FILES_ALREADY_SUBMITTED: Final = "FilesAlreadySubmitted"
    FILES_STAGED: Final = "FilesStaged"
    FILES_UNAVAILABLE: Final = "FilesUnavailable"
    FILES_FAILED: Final = "FilesFailed"
    POISON_MESSAGES: Final = "PoisonMessages"
    BATCHES_PLANNED: Final = "BatchesPlanned"
    BATCHES_RESUMED: Final = "BatchesResumed"
    BATCHES_FAILED: Final = "BatchesFailed"
    JOBS_STARTED: Final = "ImportJobsStarted"
    THROTTLES: Final = "ImportStartThrottles"


def count(name: str, value: int = 1) -> None:
    """Add ``value`` to a count metric of this invocation (nothing when ``value`` is 0)."""
    if value:
        metrics.add_metric(name=name, unit=MetricUnit.Count, value=value)

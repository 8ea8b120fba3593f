"""The Powertools singletons shared by the handlers and the package, and the ingest metric names.

Logger, Tracer and Metrics read ``POWERTOOLS_SERVICE_NAME``, ``POWERTOOLS_LOG_LEVEL`` and
``POWERTOOLS_METRICS_NAMESPACE`` when created; no I/O happens here.  Logs never carry object keys or
DICOM content (keys can hold patient names): uploads are named by their object id, a hash.
"""

from __future__ import annotations

import os
from collections.abc import Callable
from typing import Any, Final, ParamSpec, TypeVar

from aws_lambda_powertools import Logger, Metrics, Tracer
from aws_lambda_powertools.metrics import MetricUnit

__all__ = ["Metric", "count", "in_this_trace", "logger", "metrics", "tracer"]

DEFAULT_NAMESPACE: Final = "HealthImagingAutomation"

logger = Logger()
tracer = Tracer(patch_modules=("botocore",))  # AWS SDK calls only; not every HTTP library installed
metrics = Metrics(namespace=os.environ.get("POWERTOOLS_METRICS_NAMESPACE") or DEFAULT_NAMESPACE)

P = ParamSpec("P")
R = TypeVar("R")


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


def in_this_trace(function: Callable[P, R], recorder: Any = None) -> Callable[P, R]:
    """``function``, to run on worker threads under the calling thread's current X-Ray entity.

    The X-Ray SDK keeps the current segment and subsegments per thread: without this, a worker's AWS
    calls land on a segment of their own (in Lambda, a facade segment of the same trace) instead of
    under the subsegment that started the work (``## render_image_set``).  ``recorder`` is the X-Ray
    recorder (default: the Tracer's, when tracing is enabled); with none, or no current entity, the
    function is returned as it is.
    """
    if recorder is None:
        if tracer.disabled:
            return function
        recorder = tracer.provider
    try:
        entity = recorder.get_trace_entity()
    except Exception:  # noqa: BLE001 - context_missing=RUNTIME_ERROR: nothing to propagate
        entity = None
    if entity is None:
        return function

    def traced(*args: P.args, **kwargs: P.kwargs) -> R:
        recorder.set_trace_entity(entity)
        try:
            return function(*args, **kwargs)
        finally:
            recorder.clear_trace_entities()

    return traced

"""ReconcileJobs (on a schedule): finished import jobs whose completion event never arrived → JobEventsQueue.

EventBridge delivers HealthImaging's events on a best-effort basis; this sends every recent job of the
pipeline that has no job record through the same queue as the events
(:func:`ahi_pipeline.completion.reconcile_jobs`).
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from ahi_pipeline.completion import completion_services, reconcile_jobs
from ahi_pipeline.observability import logger, metrics, tracer
from ahi_pipeline.settings import current_completion_settings

if TYPE_CHECKING:
    from aws_lambda_powertools.utilities.typing import LambdaContext


@logger.inject_lambda_context(clear_state=True)
@tracer.capture_lambda_handler(capture_response=False)
@metrics.log_metrics(capture_cold_start_metric=True)
def lambda_handler(event: dict[str, Any], context: LambdaContext) -> dict[str, Any]:
    settings = current_completion_settings()
    return reconcile_jobs(settings=settings, services=completion_services(settings)).as_dict()

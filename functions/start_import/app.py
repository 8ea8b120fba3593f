"""StartImport: upload events from UploadQueue → batched, staged, throttle-aware import jobs.

The event is an SQS batch whose messages are S3 "Object Created" events from EventBridge.  The work
is :func:`ahi_pipeline.ingest.start_imports`; this handler parses, calls it, and returns the partial
batch response (``batchItemFailures``: the messages whose batch could not be started, and poison ones).
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from ahi_pipeline.ingest import services_for, start_imports
from ahi_pipeline.observability import logger, metrics, tracer
from ahi_pipeline.settings import current_settings
from ahi_pipeline.uploads import parse_sqs_event

if TYPE_CHECKING:
    from aws_lambda_powertools.utilities.typing import LambdaContext


@logger.inject_lambda_context(correlation_id_path="Records[0].messageId", clear_state=True)
@tracer.capture_lambda_handler(capture_response=False)
@metrics.log_metrics(capture_cold_start_metric=True)
def lambda_handler(event: dict[str, Any], context: LambdaContext) -> dict[str, Any]:
    messages = parse_sqs_event(event)
    settings = current_settings()
    outcome = start_imports(
        messages, settings=settings, services=services_for(settings), lambda_context=context
    )
    return outcome.as_response()

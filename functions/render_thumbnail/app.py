"""RenderThumbnail: "Image Set Ready" events from ThumbnailQueue → thumbnail, contact sheets, sidecar.

Each SQS message is a pipeline event; :func:`ahi_pipeline.thumbnailing.handle_ready_message` handles it.
Powertools' batch processor returns the partial batch response, so a failing image set is retried alone
and, after the queue's last receive, moved to the dead-letter queue.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from ahi_pipeline.observability import logger, metrics, tracer
from ahi_pipeline.sqs_batch import process_sqs_batch
from ahi_pipeline.thumbnailing import handle_ready_message

if TYPE_CHECKING:
    from aws_lambda_powertools.utilities.typing import LambdaContext


@logger.inject_lambda_context(correlation_id_path="Records[0].messageId", clear_state=True)
@tracer.capture_lambda_handler(capture_response=False)
@metrics.log_metrics(capture_cold_start_metric=True)
def lambda_handler(event: dict[str, Any], context: LambdaContext) -> dict[str, Any]:
    return process_sqs_batch(event, context, handle_ready_message)

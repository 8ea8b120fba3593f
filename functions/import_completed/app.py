"""ImportCompleted: finished import jobs from JobEventsQueue → one "Image Set Imported" event per image set.

Each SQS message is an EventBridge event, HealthImaging's "Import Job Completed" / "Import Job Failed" or
the reconciler's stand-in for one; :func:`ahi_pipeline.completion.handle_job_message` handles it.
Powertools' batch processor returns the partial batch response, so a failing job is retried alone.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from ahi_pipeline.completion import handle_job_message
from ahi_pipeline.observability import logger, metrics, tracer
from ahi_pipeline.sqs_batch import process_sqs_batch

if TYPE_CHECKING:
    from aws_lambda_powertools.utilities.typing import LambdaContext


@logger.inject_lambda_context(correlation_id_path="Records[0].messageId", clear_state=True)
@tracer.capture_lambda_handler(capture_response=False)
@metrics.log_metrics(capture_cold_start_metric=True)
def lambda_handler(event: dict[str, Any], context: LambdaContext) -> dict[str, Any]:
    return process_sqs_batch(event, context, handle_job_message)

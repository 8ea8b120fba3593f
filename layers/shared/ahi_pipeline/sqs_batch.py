"""The SQS consumers' one way of handling a batch: Powertools' batch processor, record by record.

A record whose handler raises fails alone (``batchItemFailures``); SQS returns it after the queue's
visibility timeout, and its redrive policy moves it to the dead-letter queue after the last receive.
A batch whose every record failed is answered like any other (every id in ``batchItemFailures``), not
with an exception: SQS retries the same records either way, and each failure is logged and counted.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import TYPE_CHECKING, Any

from aws_lambda_powertools.utilities.batch import BatchProcessor, EventType, process_partial_response

if TYPE_CHECKING:
    from aws_lambda_powertools.utilities.typing import LambdaContext

__all__ = ["process_sqs_batch"]


def process_sqs_batch(
    event: dict[str, Any], context: LambdaContext, record_handler: Callable[..., Any]
) -> dict[str, Any]:
    """The partial batch response of ``record_handler`` applied to each record of ``event``."""
    processor = BatchProcessor(event_type=EventType.SQS, raise_on_entire_batch_failure=False)
    return dict(
        process_partial_response(
            event=event, record_handler=record_handler, processor=processor, context=context
        )
    )

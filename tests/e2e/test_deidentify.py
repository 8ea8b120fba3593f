"""De-identification end to end on the local stack: uploads → import → ImportCompleted → Deidentify →
"Image Set Ready", with the history purged; a poison event ends in Deidentify's dead-letter queue.
"""

from __future__ import annotations

import gzip
import json
from pathlib import Path
from typing import Any

import pytest

from local.stack import LocalStack
from tests.e2e.pipeline import pipeline, upload
from tests.e2e.test_completion import drain, subscribe
from tests.integration.test_deidentify import PHI, synthetic_series

pytestmark = pytest.mark.e2e


def history(stack: LocalStack, image_set_id: str) -> str:
    """Every version of an image set's metadata, as one text."""
    ahi = stack.client("medical-imaging")
    datastore = stack.outputs["DatastoreId"]
    versions = ahi.list_image_set_versions(datastoreId=datastore, imageSetId=image_set_id)[
        "imageSetPropertiesList"
    ]
    texts = []
    for version in versions:
        blob = ahi.get_image_set_metadata(
            datastoreId=datastore, imageSetId=image_set_id, versionId=version["versionId"]
        )["imageSetMetadataBlob"].read()
        texts.append(gzip.decompress(blob).decode())
    return "\n".join(texts)


def test_uploaded_identifiers_never_reach_a_ready_image_set(tmp_path: Path) -> None:
    with pipeline(tmp_path) as stack:
        # Given a subscriber on the pipeline bus and a synthetic series full of identifiers uploaded
        captured = subscribe(stack)
        files: dict[str, Path | bytes] = dict(synthetic_series(2))
        upload(stack, files)
        # When the stack has finished with it
        stack.wait_idle(timeout=180)
        # Then the image set was announced imported, then Ready as a new image set
        events = drain(stack, captured)
        imported = [e["detail"] for e in events if e["detail-type"] == "Image Set Imported"]
        ready = [e["detail"] for e in events if e["detail-type"] == "Image Set Ready"]
        assert len(imported) == len(ready) == 1
        assert ready[0]["sourceImageSetId"] == imported[0]["imageSetId"] != ready[0]["imageSetId"]
        assert ready[0]["deidentification"]["status"] == "deidentified"
        # … whose every version is free of the uploaded identifiers, the original being deleted
        text = history(stack, ready[0]["imageSetId"]).casefold()
        for value in PHI.values():
            for part in value if isinstance(value, list) else [value]:
                assert part.casefold() not in text, part
        ahi = stack.client("medical-imaging")
        original = ahi.get_image_set(
            datastoreId=stack.outputs["DatastoreId"], imageSetId=ready[0]["sourceImageSetId"]
        )
        assert original["imageSetState"] == "DELETED"
        assert drain(stack, stack.outputs["DeidentifyDeadLetterQueueUrl"]) == []
        assert drain(stack, stack.outputs["TagDeadLetterQueueUrl"]) == []


def test_a_poison_image_set_event_ends_in_the_dead_letter_queue(tmp_path: Path) -> None:
    with pipeline(tmp_path) as stack:
        # Given Deidentify's queue with a short visibility timeout (5400 s on AWS)
        sqs = stack.client("sqs")
        queue = stack.outputs["DeidentifyQueueUrl"]
        stack.set_queue_attributes(queue, {"VisibilityTimeout": "1"})  # returns once its poller has seen it
        # When a message that is not a pipeline event arrives
        sqs.send_message(QueueUrl=queue, MessageBody='{"not": "an event"}')
        stack.wait_idle(timeout=120)
        # Then, after its retries, it waits in the dead-letter queue
        dead: list[dict[str, Any]] = []
        while batch := sqs.receive_message(
            QueueUrl=stack.outputs["DeidentifyDeadLetterQueueUrl"], MaxNumberOfMessages=10
        ).get("Messages", []):
            dead += batch
            for message in batch:
                sqs.delete_message(
                    QueueUrl=stack.outputs["DeidentifyDeadLetterQueueUrl"],
                    ReceiptHandle=message["ReceiptHandle"],
                )
        assert [json.loads(m["Body"]) for m in dead] == [{"not": "an event"}]

"""The completion stage end to end on the local stack: the emulator's job events → ImportCompleted →
"Image Set Imported" / "Import Files Failed" on the pipeline bus; the reconciler; the dead-letter queue.

Issue 4: integration through the whole template. HealthImaging's "Import Job Completed" event goes
from the emulator to (moto's) default bus, through JobEventsRule and JobEventsQueue to
ImportCompletedFunction, which announces each image set on PipelineBus.
"""

from __future__ import annotations

import itertools
import json
import uuid
from pathlib import Path
from typing import Any

import pytest

from local.stack import LocalStack
from tests.e2e.pipeline import batches, handled, jobs, pipeline, queue_arn, samples, upload

pytestmark = pytest.mark.e2e


def subscribe(stack: LocalStack) -> str:
    """A queue receiving every event of the pipeline bus (as a later stage's rule would)."""
    events, sqs = stack.client("events"), stack.client("sqs")
    bus = stack.outputs["PipelineBusName"]
    # Unique names: moto's state outlives a stack within one test process.
    suffix = uuid.uuid4().hex[:8]
    url = str(sqs.create_queue(QueueName=f"e2e-pipeline-events-{suffix}")["QueueUrl"])
    rule = f"e2e-everything-{suffix}"
    events.put_rule(Name=rule, EventBusName=bus, EventPattern=json.dumps({"source": [{"prefix": ""}]}))
    events.put_targets(Rule=rule, EventBusName=bus, Targets=[{"Id": "capture", "Arn": queue_arn(stack, url)}])
    return url


def drain(stack: LocalStack, url: str) -> list[dict[str, Any]]:
    sqs = stack.client("sqs")
    bodies: list[dict[str, Any]] = []
    while messages := sqs.receive_message(QueueUrl=url, MaxNumberOfMessages=10, VisibilityTimeout=60).get(
        "Messages", []
    ):
        bodies += [json.loads(m["Body"]) for m in messages]
    return bodies


def job_record(stack: LocalStack, job_id: str) -> dict[str, Any]:
    item = stack.client("dynamodb").get_item(
        TableName=stack.outputs["BatchTableName"], Key={"batchId": {"S": f"job#{job_id}"}}
    )
    return {name: next(iter(value.values())) for name, value in item.get("Item", {}).items()}


def test_each_finished_job_is_announced_per_image_set_and_reported(tmp_path: Path) -> None:
    ct, mr, *_ = samples()
    files: dict[str, Path | bytes] = {
        "incoming/e2e/CT.dcm": ct,
        "incoming/e2e/MR.dcm": mr,
        "incoming/e2e/notes.txt": b"not a DICOM file",
    }
    with pipeline(tmp_path) as stack:
        # Given a subscriber on the pipeline bus, and uploads of two DICOM files and a text file
        captured = subscribe(stack)
        upload(stack, files)
        # When the stack has finished with them
        stack.wait_idle(timeout=120)
        # Then the job's event reached ImportCompleted, which announced each image set once…
        (job,) = jobs(stack)
        (batch,) = batches(stack)
        events = drain(stack, captured)
        imported = [e["detail"] for e in events if e["detail-type"] == "Image Set Imported"]
        assert sorted(e["imageSetId"] for e in imported) == sorted(
            s["imageSetId"] for s in job.summary["imageSetsSummary"]
        )
        assert {(e["importJobId"], e["batchId"]) for e in imported} == {(job.job_id, batch["batchId"])}
        # … reported the text file…
        (failed,) = [e["detail"] for e in events if e["detail-type"] == "Import Files Failed"]
        assert failed["failedFiles"] == 1
        bucket, _, key = failed["reportUri"].removeprefix("s3://").partition("/")
        report = json.loads(stack.client("s3").get_object(Bucket=bucket, Key=key)["Body"].read())
        assert [f["key"] for f in report["failedFiles"]] == ["incoming/e2e/notes.txt"]
        assert sorted(f["key"] for f in report["importedFiles"]) == [
            "incoming/e2e/CT.dcm",
            "incoming/e2e/MR.dcm",
        ]
        # … and recorded the batch's outcome and the job as handled, with nothing dead-lettered
        assert (batch["state"], batch["reportUri"]) == ("PARTIAL", failed["reportUri"])
        assert job_record(stack, job.job_id)["state"] == "HANDLED"
        assert drain(stack, stack.outputs["JobEventsDeadLetterQueueUrl"]) == []


def test_a_job_whose_event_was_lost_is_handled_by_the_reconciler(tmp_path: Path) -> None:
    with pipeline(tmp_path, parameters={"ReconcileGraceMinutes": "0"}) as stack:
        # Given HealthImaging's job events lost (the rule disabled) while a file is imported
        events = stack.client("events")
        job_queue = queue_arn(stack, stack.outputs["JobEventsQueueUrl"])
        (rule,) = events.list_rule_names_by_target(TargetArn=job_queue)["RuleNames"]
        events.disable_rule(Name=rule)
        captured = subscribe(stack)
        upload(stack, {"incoming/lost/CT.dcm": samples(1)[0]})
        stack.wait_idle(timeout=120)
        (job,) = jobs(stack)
        assert job_record(stack, job.job_id) == {}
        assert drain(stack, captured) == []
        # When the reconciler runs (as its schedule would)
        invocation = stack.invoke("ReconcileJobsFunction", {})
        stack.wait_idle(timeout=120)
        # Then it sent the job through the job events queue, and the image set was announced once
        assert invocation.ok, invocation
        assert invocation.response["queued"] == 1
        announced = [
            e["detail"]["importJobId"]
            for e in drain(stack, captured)
            if e["detail-type"] == "Image Set Imported"
        ]
        assert announced == [job.job_id] * len(job.summary["imageSetsSummary"])
        assert job_record(stack, job.job_id)["state"] == "HANDLED"
        # … and running it again sends nothing
        assert stack.invoke("ReconcileJobsFunction", {}).response["queued"] == 0


def test_a_poison_job_event_ends_in_the_dead_letter_queue_without_a_retry_storm(tmp_path: Path) -> None:
    with pipeline(tmp_path) as stack:
        # Given the job events queue's visibility timeout shortened for the test (5400 s on AWS)
        sqs = stack.client("sqs")
        queue = stack.outputs["JobEventsQueueUrl"]
        stack.set_queue_attributes(queue, {"VisibilityTimeout": "2"})  # returns once its poller has seen it
        attributes = sqs.get_queue_attributes(QueueUrl=queue, AttributeNames=["RedrivePolicy"])["Attributes"]
        max_receives = int(json.loads(attributes["RedrivePolicy"])["maxReceiveCount"])
        # When a message that is not a job event arrives
        body = json.dumps(
            {"source": "aws.medical-imaging", "detail-type": "Import Job Completed", "detail": {}}
        )
        poison = sqs.send_message(QueueUrl=queue, MessageBody=body)["MessageId"]
        stack.wait_idle(timeout=120)
        # Then ImportCompleted failed it maxReceiveCount times, a visibility timeout apart, and no more
        attempts = [d for d in handled(stack, queue) if poison in d.message_ids]
        assert len(attempts) == max_receives
        assert all(poison in d.failed_ids for d in attempts)
        # (timed from when each receive returned: a late response can shorten a gap, never a storm)
        assert min(b.received - a.received for a, b in itertools.pairwise(attempts)) >= 1.5
        # … and it waits in the dead-letter queue, unchanged
        (dead,) = [m["Body"] for m in drain_raw(stack, stack.outputs["JobEventsDeadLetterQueueUrl"])]
        assert dead == body


def drain_raw(stack: LocalStack, url: str) -> list[dict[str, Any]]:
    sqs = stack.client("sqs")
    messages: list[dict[str, Any]] = []
    while batch := sqs.receive_message(QueueUrl=url, MaxNumberOfMessages=10, VisibilityTimeout=60).get(
        "Messages", []
    ):
        messages += batch
    return messages

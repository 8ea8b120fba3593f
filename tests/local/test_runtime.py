"""The local runtime on the fixture template: resources, functions, and every kind of event source.

One stack serves the module (starting one takes about a second); each test waits for the stack to be
idle before it checks, so the tests do not see each other's work.
"""

from __future__ import annotations

import json
import logging
import os
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from pydicom.data import get_testdata_file

from local.event_sources import SqsEventSource
from local.stack import LocalStack
from tests.local.conftest import TEMPLATE, drain, eventually, skip_body

pytestmark = pytest.mark.integration


@pytest.fixture(scope="module")
def stack(tmp_path_factory: pytest.TempPathFactory) -> Iterator[LocalStack]:
    data_dir = tmp_path_factory.mktemp("local")
    with LocalStack(
        TEMPLATE,
        port=0,
        stack_name="fixture",
        time_scale=60,  # rate(1 minute) fires every second; async retries after 1 and 2 s
        data_dir=data_dir,
        outputs_file=data_dir / "outputs.json",
        function_log=data_dir / "functions.log",
    ) as running:
        yield running


def items(stack: LocalStack, kind: str) -> list[dict[str, Any]]:
    dynamodb = stack.client("dynamodb")
    found = dynamodb.scan(
        TableName=stack.outputs["BatchTableName"],
        FilterExpression="kind = :k",
        ExpressionAttributeValues={":k": {"S": kind}},
    )["Items"]
    return [{name: next(iter(value.values())) for name, value in item.items()} for item in found]


def deliveries_of(stack: LocalStack, message_id: str) -> list[Any]:
    return [d for d in stack.deliveries.snapshot() if message_id in d.message_ids]


def send(stack: LocalStack, *bodies: str) -> list[str]:
    entries = [{"Id": str(i), "MessageBody": body} for i, body in enumerate(bodies)]
    sent = stack.client("sqs").send_message_batch(QueueUrl=stack.outputs["UploadQueueUrl"], Entries=entries)
    by_id = {entry["Id"]: entry["MessageId"] for entry in sent["Successful"]}
    return [by_id[str(i)] for i in range(len(bodies))]


# ---------------------------------------------------------------------- resources
def test_outputs_are_keyed_like_the_template_and_written_to_a_file(stack: LocalStack) -> None:
    assert set(stack.outputs) == {
        "LandingBucketName",
        "DatastoreId",
        "ImportRoleArn",
        "UploadQueueUrl",
        "UploadDeadLetterQueueUrl",
        "AsyncDeadLetterQueueUrl",
        "BatchTableName",
        "RecorderFunctionName",
        "ProjectKeyArn",
    }  # StrictOnly's condition is false
    assert stack.outputs["LandingBucketName"].startswith("fixture-landingbucket-")
    assert stack.outputs["UploadQueueUrl"].startswith(stack.endpoint_url)
    assert stack.outputs_file is not None
    assert json.loads(stack.outputs_file.read_text()) == stack.outputs


def test_resources_are_created_with_their_properties(stack: LocalStack) -> None:
    s3, sqs, dynamodb = stack.client("s3"), stack.client("sqs"), stack.client("dynamodb")
    bucket = stack.outputs["LandingBucketName"]
    # The bucket: versioned, encrypted with the project key, lifecycle, public access blocked
    assert s3.get_bucket_versioning(Bucket=bucket)["Status"] == "Enabled"
    sse = s3.get_bucket_encryption(Bucket=bucket)["ServerSideEncryptionConfiguration"]["Rules"][0]
    assert sse["ApplyServerSideEncryptionByDefault"]["KMSMasterKeyID"] == stack.outputs["ProjectKeyArn"]
    rule = s3.get_bucket_lifecycle_configuration(Bucket=bucket)["Rules"][0]
    assert (rule["ID"], rule["Filter"], rule["Expiration"]) == (
        "expire-staging",
        {"Prefix": "staging/"},
        {"Days": 7},
    )
    # (moto does not echo EventBridgeConfiguration back; the upload test shows the events flow)
    assert s3.get_public_access_block(Bucket=bucket)["PublicAccessBlockConfiguration"]["BlockPublicAcls"]
    # The queue: visibility timeout from a parameter, redrive to the dead-letter queue
    attributes = sqs.get_queue_attributes(QueueUrl=stack.outputs["UploadQueueUrl"], AttributeNames=["All"])[
        "Attributes"
    ]
    assert attributes["VisibilityTimeout"] == "2"
    redrive = json.loads(attributes["RedrivePolicy"])
    assert redrive["deadLetterTargetArn"] == stack.resource("UploadDeadLetterQueue").attributes["Arn"]
    assert int(redrive["maxReceiveCount"]) == 2
    # The table: key schema, GSI, TTL
    table = dynamodb.describe_table(TableName=stack.outputs["BatchTableName"])["Table"]
    assert table["GlobalSecondaryIndexes"][0]["IndexName"] == "by-kind"
    ttl = dynamodb.describe_time_to_live(TableName=stack.outputs["BatchTableName"])["TimeToLiveDescription"]
    assert ttl == {"TimeToLiveStatus": "ENABLED", "AttributeName": "expiresAt"}
    # The data store in the emulator, its KMS key and the alias; the skipped policies are recorded
    store = stack.client("medical-imaging").get_datastore(datastoreId=stack.outputs["DatastoreId"])
    assert store["datastoreProperties"]["datastoreStatus"] == "ACTIVE"
    assert store["datastoreProperties"]["kmsKeyArn"] == stack.outputs["ProjectKeyArn"]
    aliases = stack.client("kms").list_aliases()["Aliases"]
    assert "alias/fixture" in {alias["AliasName"] for alias in aliases}
    assert stack.resource("LandingBucketPolicy").skipped
    # SAM's implicit role and event resources exist under SAM's logical ids
    assert stack.resource("RecorderFunctionRole").type == "AWS::IAM::Role"
    assert stack.resource("RecorderFunctionUploads").type == "AWS::Lambda::EventSourceMapping"
    assert stack.resource("TickFunctionEveryMinute").type == "AWS::Events::Rule"


# ---------------------------------------------------------------------- functions
def test_a_function_runs_with_its_environment_code_and_context(stack: LocalStack) -> None:
    # Given the host's environment
    host = dict(os.environ)
    # When the recorder is invoked synchronously
    outcome = stack.invoke("RecorderFunction", {"inspect": True})
    # Then it saw Globals + its own variables, resolved, and Lambda's variables
    assert outcome.ok, outcome.error
    seen = outcome.response
    env = seen["environment"]
    name = stack.outputs["RecorderFunctionName"]
    assert env["TABLE_NAME"] == stack.outputs["BatchTableName"]  # Globals, !Ref
    assert env["STACK"] == "fixture"  # Globals, !Ref AWS::StackName
    assert env["DATASTORE_ID"] == stack.outputs["DatastoreId"]  # !If
    assert env["ROLE_ARN"] == stack.resource("ImportRole").attributes["Arn"]  # !GetAtt
    assert env["FLAG"] == "true"
    assert "STRICT" not in env  # !If … AWS::NoValue
    assert env["AWS_ENDPOINT_URL"] == stack.endpoint_url
    assert env["AWS_DISABLE_HOST_PREFIX_INJECTION"] == "true"
    assert env["AWS_LAMBDA_FUNCTION_NAME"] == name
    assert env["AWS_LAMBDA_FUNCTION_MEMORY_SIZE"] == "256"
    assert env["AWS_ACCESS_KEY_ID"] == "testing"
    assert env["_HANDLER"] == "app.lambda_handler"
    # … its own code folder first on the path, and a context like Lambda's
    assert seen["module_file"] == str(TEMPLATE.parent / "functions" / "recorder" / "app.py")
    assert seen["sys_path0"] == str(TEMPLATE.parent / "functions" / "recorder")
    assert seen["loaded_for"] == name
    assert (seen["function_name"], seen["memory"]) == (name, 256)
    assert seen["arn"] == f"arn:aws:lambda:us-east-1:123456789012:function:{name}"
    assert 0 < seen["remaining_ms"] <= 30_000
    # … and the host's environment is as it was
    assert dict(os.environ) == host


def test_a_response_lambda_cannot_serialize_is_an_error(stack: LocalStack) -> None:
    record = {"messageId": "m", "body": json.dumps({"unserializable": True})}
    outcome = stack.invoke("RecorderFunction", {"Records": [record]})
    assert not outcome.ok
    assert outcome.error_type == "TypeError"


def test_an_upload_becomes_an_import_job_whose_event_reaches_another_function(stack: LocalStack) -> None:
    # Given two DICOM files and an empty object uploaded under incoming/
    s3 = stack.client("s3")
    bucket = stack.outputs["LandingBucketName"]
    for name in ("CT_small.dcm", "MR_small.dcm"):
        s3.upload_file(str(get_testdata_file(name)), bucket, f"incoming/upload test/{name}")
    s3.put_object(Bucket=bucket, Key="incoming/upload test/empty.dcm", Body=b"")
    # When the stack has done everything there was to do
    stack.wait_idle(timeout=60)
    # Then the recorder made one batch and one job, which completed in the emulator
    batches = [b for b in items(stack, "batch") if b["files"] == "2"]
    assert len(batches) == 1
    job_id = batches[0]["jobId"]
    job = stack.client("medical-imaging").get_dicom_import_job(
        datastoreId=stack.outputs["DatastoreId"], jobId=job_id
    )
    assert job["jobProperties"]["jobStatus"] == "COMPLETED"
    # … the empty object was skipped
    assert {"pk": "skip#incoming/upload test/empty.dcm", "kind": "skip", "reason": "empty"} in items(
        stack, "skip"
    )
    # … and HealthImaging's "Import Job Completed" reached JobEventsFunction through its EventBridge rule,
    # which loaded its own copy of the shared layer (its module state names it, not the recorder)
    jobs = {item["pk"]: item for item in items(stack, "job")}
    assert jobs[f"job#{job_id}"]["status"] == "COMPLETED"
    assert jobs[f"job#{job_id}"]["loadedFor"] != batches[0]["loadedFor"]
    assert batches[0]["loadedFor"] == stack.outputs["RecorderFunctionName"]


def test_s3_events_reach_eventbridge_as_s3_sends_them(stack: LocalStack) -> None:
    # Given a rule of our own catching the landing bucket's events in a queue
    events, sqs, s3 = stack.client("events"), stack.client("sqs"), stack.client("s3")
    bucket = stack.outputs["LandingBucketName"]
    queue_url = sqs.create_queue(QueueName="fixture-capture")["QueueUrl"]
    queue_arn = sqs.get_queue_attributes(QueueUrl=queue_url, AttributeNames=["QueueArn"])["Attributes"][
        "QueueArn"
    ]
    pattern = {"source": ["aws.s3"], "detail": {"object": {"key": [{"prefix": "elsewhere/"}]}}}
    events.put_rule(Name="fixture-capture", EventPattern=json.dumps(pattern))
    events.put_targets(Rule="fixture-capture", Targets=[{"Id": "q", "Arn": queue_arn}])
    try:
        # When two objects are written outside incoming/
        s3.put_object(Bucket=bucket, Key="elsewhere/a b é.txt", Body=b"12345")
        s3.copy_object(
            Bucket=bucket,
            Key="elsewhere/copy.txt",
            CopySource={"Bucket": bucket, "Key": "elsewhere/a b é.txt"},
        )
        received = eventually(lambda: drain(sqs, queue_url), lambda m: len(m) == 2, what="two S3 events")
    finally:
        events.remove_targets(Rule="fixture-capture", Ids=["q"])
        events.delete_rule(Name="fixture-capture")
        sqs.delete_queue(QueueUrl=queue_url)
    # Then each event has its own id, S3's field names and reasons, the raw key and the version
    bodies = sorted((json.loads(m["Body"]) for m in received), key=lambda e: e["detail"]["reason"])
    assert bodies[0]["id"] != bodies[1]["id"]
    assert [b["detail"]["reason"] for b in bodies] == ["CopyObject", "PutObject"]
    put = bodies[1]
    assert put["detail-type"] == "Object Created"
    assert put["resources"] == [f"arn:aws:s3:::{bucket}"]
    assert put["detail"]["object"]["key"] == "elsewhere/a b é.txt"
    assert put["detail"]["object"]["size"] == 5
    assert put["detail"]["object"]["etag"] == "827ccb0eea8a706c4c34a16891f84e7b"
    assert put["detail"]["object"]["version-id"]
    assert put["time"].endswith("Z")
    # … and the rule on incoming/ did not fire for them
    stack.wait_idle()
    assert not [item for item in items(stack, "skip") if "elsewhere" in item["pk"]]


# ---------------------------------------------------------------------- SQS event source
def test_records_are_gathered_into_batches_up_to_the_batch_size(stack: LocalStack) -> None:
    # Given 14 messages sent at once (BatchSize 10, a 1 s batching window)
    ids = send(stack, *(skip_body(f"incoming/gather-{i}/") for i in range(10))) + send(
        stack, *(skip_body(f"incoming/gather-{i}/") for i in range(10, 14))
    )
    # When they are processed
    stack.wait_idle()
    # Then they arrive in two invocations, the first full, each record exactly once
    batches = [d for d in stack.deliveries.snapshot() if set(d.message_ids) & set(ids)]
    assert sorted(len(d.message_ids) for d in batches) == [4, 10]
    assert sorted(i for d in batches for i in d.message_ids) == sorted(ids)
    assert all(d.ok and not d.failed_ids for d in batches)


def test_a_reported_failure_is_retried_after_the_visibility_timeout_then_dead_lettered(
    stack: LocalStack,
) -> None:
    # Given a good message and a poison one in the same batch
    good, poison = send(stack, skip_body("incoming/partial/"), json.dumps({"poison": True}))
    # When the stack has finished with them
    stack.wait_idle(timeout=60)
    # Then the good one was processed once and deleted; the poison one was received maxReceiveCount
    # (2) times, a visibility timeout (2 s) apart, and then moved to the dead-letter queue: no storm
    assert len(deliveries_of(stack, good)) == 1
    attempts = deliveries_of(stack, poison)
    assert len(attempts) == 2
    assert all(d.failed_ids == (poison,) for d in attempts)
    # (timed from when each receive returned: a late response can shorten the gap, never a storm)
    assert attempts[1].received - attempts[0].received >= 1.5
    dead = drain(stack.client("sqs"), stack.outputs["UploadDeadLetterQueueUrl"])
    assert [m["MessageId"] for m in dead] == [poison]


def test_a_changed_queue_attribute_is_returned_once_every_poller_of_the_queue_receives_again(
    stack: LocalStack,
) -> None:
    # Given the upload queue and its poller (a receive reads VisibilityTimeout when it starts)
    queue = stack.outputs["UploadQueueUrl"]
    sqs = stack.client("sqs")

    def visibility() -> dict[str, str]:
        return sqs.get_queue_attributes(QueueUrl=queue, AttributeNames=["VisibilityTimeout"])["Attributes"]

    timeout = visibility()
    pollers = [s for s in stack.sources if isinstance(s, SqsEventSource) and s.queue_url == queue]
    # When its visibility timeout is set through the stack (to the value it has: other tests rely on it)
    before = time.monotonic()
    stack.set_queue_attributes(queue, timeout)
    # Then the queue has it, and every poller has started a receive since
    assert visibility() == timeout
    assert len(pollers) == 1
    assert all(poller.receive_started > before for poller in pollers)


@pytest.mark.parametrize("failure", ["raise", "bad_identifier"])
def test_a_handler_error_or_malformed_response_fails_the_whole_batch(stack: LocalStack, failure: str) -> None:
    # Given a good message sharing a batch with one that makes the handler raise (or answer a
    # batchItemFailures entry that names no message of the batch)
    good, bad = send(stack, skip_body(f"incoming/whole-{failure}/"), json.dumps({failure: True}))
    # When the stack has finished with them
    stack.wait_idle(timeout=60)
    # Then no record was deleted: both came back, twice, and both are in the dead-letter queue
    attempts = deliveries_of(stack, good)
    assert len(attempts) == 2
    assert all(set(d.failed_ids) == {good, bad} for d in attempts)
    dead = drain(stack.client("sqs"), stack.outputs["UploadDeadLetterQueueUrl"])
    assert sorted(m["MessageId"] for m in dead) == sorted([good, bad])


# ---------------------------------------------------------------------- asynchronous and scheduled
def test_an_eventbridge_invocation_that_fails_is_retried_then_sent_to_the_dead_letter_queue(
    stack: LocalStack,
) -> None:
    # Given an event matching the Broken rule (InputPath $.detail), which the function always fails
    stack.client("events").put_events(
        Entries=[{"Source": "fixture.broken", "DetailType": "test", "Detail": json.dumps({"fail": True})}]
    )
    # When it has been delivered
    dead = eventually(
        lambda: drain(stack.client("sqs"), stack.outputs["AsyncDeadLetterQueueUrl"]),
        lambda m: len(m) == 1,
        what="the event in the function's dead-letter queue",
    )
    # Then it was tried 1 + MaximumRetryAttempts (1) times, the retry a (scaled) minute later
    attempts = [d for d in stack.deliveries.snapshot() if d.function == "JobEventsFunction" and not d.ok]
    assert len(attempts) == 2
    assert attempts[1].started - attempts[0].started >= 0.9
    assert json.loads(dead[0]["Body"])["source"] == "fixture.broken"
    assert "ValueError" in dead[0]["MessageAttributes"]["ErrorMessage"]["StringValue"]


def test_a_schedule_invokes_its_function_with_the_rules_input(stack: LocalStack) -> None:
    # rate(1 minute) at time scale 60: about once a second
    ticks = eventually(
        lambda: items(stack, "tick"), lambda found: len(found) >= 2, what="two ticks", timeout=10
    )
    assert {tick["input"] for tick in ticks} == {json.dumps({"tick": True})}


def test_function_output_and_loggers_stay_with_the_functions(stack: LocalStack) -> None:
    # Given functions that have run (their shared layer configures a logger at cold start)
    stack.invoke("RecorderFunction", {"Records": [{"messageId": "m", "body": json.dumps({"raise": True})}]})
    stack.invoke("TickFunction", {})
    # Then their output went to the function log: the error report and each one's own cold start
    assert isinstance(stack.function_log, Path)
    log = stack.function_log.read_text()
    assert "RuntimeError: asked to fail the whole batch" in log
    assert f"cold start of {stack.functions['RecorderFunction'].config.name}" in log
    assert f"cold start of {stack.functions['TickFunction'].config.name}" in log
    # … and their loggers are theirs: the host's logging registry never saw them
    assert "fixture" not in logging.Logger.manager.loggerDict

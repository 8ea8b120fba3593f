"""The real template end to end on the local stack: uploads → batches → import jobs in the emulator.

Issue 3 §5: an upload is imported (odd keys and odd objects included, each imported or reported with a
reason); every S3 event delivered twice still gives one job per batch; with HealthImaging throttling
(time-scaled) nothing is lost and no job starts twice; a poison message ends in the dead-letter queue
after maxReceiveCount receives, never in a retry storm.
"""

from __future__ import annotations

import itertools
import json
import uuid
from collections import Counter
from pathlib import Path

import pytest

from tests.e2e.pipeline import (
    batches,
    dead_letters,
    handled,
    jobs,
    manifest_members,
    pipeline,
    queue_arn,
    samples,
    staged_key,
    upload,
)

pytestmark = pytest.mark.e2e


def test_uploads_are_imported_or_reported_with_a_reason(tmp_path: Path) -> None:
    ct, mr = samples(2)
    files: dict[str, Path | bytes] = {
        "incoming/study one/CT small.dcm": ct,  # spaces
        "incoming/étude/ünïcode/MR.dcm": mr,  # unicode
        "incoming/a/../b/CT again.dcm": ct,  # a '..' segment (a key, not a path)
        "incoming/notes/readme.txt": b"not a DICOM file",
        "incoming/empty.dcm": b"",
        "incoming/folder/": b"",
    }
    with pipeline(tmp_path) as stack:
        # Given uploads under incoming/ of the landing bucket
        upload(stack, files)
        # When the stack has finished with them
        stack.wait_idle(timeout=120)
        # Then every upload event was handled, and nothing went to the dead-letter queue
        assert sum(
            len(set(d.message_ids) - set(d.failed_ids))
            for d in handled(stack, stack.outputs["UploadQueueUrl"])
        ) == len(files)
        assert dead_letters(stack) == []
        # … the four non-empty objects form one batch, whose one job COMPLETED with a failed file
        (batch,) = batches(stack)
        assert (batch["state"], batch["jobStatus"]) == ("PARTIAL", "COMPLETED")
        members = {m["stagedKey"]: m["key"] for m in manifest_members(stack, batch)}
        assert sorted(members.values()) == sorted(k for k, v in files.items() if v != b"")
        (job,) = jobs(stack)
        assert (job.job_id, job.status) == (batch["jobId"], "COMPLETED")
        # … the three DICOM files were imported, under their own keys
        assert sorted(members[key] for key in job.imported) == [
            "incoming/a/../b/CT again.dcm",
            "incoming/study one/CT small.dcm",
            "incoming/étude/ünïcode/MR.dcm",
        ]
        assert job.summary["numberOfImportedFiles"] == 3
        # … and the text file is reported with the service's reason
        (failure,) = job.failed
        assert members[staged_key(failure["inputFile"])] == "incoming/notes/readme.txt"
        assert failure["exception"]["exceptionType"] == "ValidationException"


def test_every_event_delivered_twice_gives_exactly_one_job_per_batch(tmp_path: Path) -> None:
    files = {f"incoming/replay/{index}-{path.name}": path for index, path in enumerate(samples(5))}
    with pipeline(tmp_path, parameters={"MaxFilesPerJob": "2"}) as stack:
        # Given the upload rule delivering every event twice, and a copy of each kept aside
        events, sqs = stack.client("events"), stack.client("sqs")
        upload_queue = queue_arn(stack, stack.outputs["UploadQueueUrl"])
        (rule,) = events.list_rule_names_by_target(TargetArn=upload_queue)["RuleNames"]
        capture = sqs.create_queue(QueueName=f"e2e-capture-{uuid.uuid4().hex[:8]}")["QueueUrl"]
        events.put_targets(
            Rule=rule,
            Targets=[
                {"Id": "again", "Arn": upload_queue},
                {"Id": "capture", "Arn": queue_arn(stack, capture)},
            ],
        )
        # When files are uploaded and processed, and then every event is delivered once more, late
        upload(stack, files)
        stack.wait_idle(timeout=120)
        first_jobs = {job.job_id for job in jobs(stack)}
        kept = [m["Body"] for m in sqs.receive_message(QueueUrl=capture, MaxNumberOfMessages=10)["Messages"]]
        assert len(kept) == len(files)
        for body in kept:
            sqs.send_message(QueueUrl=stack.outputs["UploadQueueUrl"], MessageBody=body)
        stack.wait_idle(timeout=120)
        # Then each event was handled three times…
        deliveries = handled(stack, stack.outputs["UploadQueueUrl"])
        assert sum(len(set(d.message_ids) - set(d.failed_ids)) for d in deliveries) == 3 * len(files)
        # … yet there is exactly one job per batch, the replay started none, and each file was
        # imported exactly once
        recorded = batches(stack)
        all_jobs = jobs(stack)
        assert len(recorded) == 3  # 5 files, at most 2 per job
        assert sorted(b["jobId"] for b in recorded) == sorted(job.job_id for job in all_jobs)
        assert {job.job_id for job in all_jobs} == first_jobs
        members = [m["key"] for b in recorded for m in manifest_members(stack, b)]
        assert Counter(members) == Counter(list(files))
        assert sum(job.summary["numberOfImportedFiles"] for job in all_jobs) == len(files)
        assert all(job.status == "COMPLETED" for job in all_jobs)
        assert dead_letters(stack) == []


def test_throttled_healthimaging_loses_nothing_and_starts_no_job_twice(tmp_path: Path) -> None:
    files = {f"incoming/throttled/{index}-{path.name}": path for index, path in enumerate(samples(6))}
    # Given HealthImaging enforcing its documented rates, 10 times faster (StartDICOMImportJob:
    # 2.5 calls per second, burst 1) and one file per job, so six jobs start at once
    with pipeline(tmp_path, throttling=True, time_scale=10, parameters={"MaxFilesPerJob": "1"}) as stack:
        # When six files are uploaded together
        upload(stack, files)
        stack.wait_idle(timeout=120)
        # Then six batches, six jobs, one per batch, every one COMPLETED and every file imported once
        recorded = batches(stack)
        all_jobs = jobs(stack)
        assert len(recorded) == len(all_jobs) == len(files)
        assert sorted(b["jobId"] for b in recorded) == sorted(job.job_id for job in all_jobs)
        assert all(job.status == "COMPLETED" for job in all_jobs)
        assert sum(job.summary["numberOfImportedFiles"] for job in all_jobs) == len(files)
        assert Counter(m["key"] for b in recorded for m in manifest_members(stack, b)) == Counter(list(files))
        assert dead_letters(stack) == []
        # … and the throttle was in force: six calls at 2.5 per second (burst 1) take two seconds
        submitted = sorted(job.submitted_at for job in all_jobs)
        assert submitted[-1] - submitted[0] >= 1.6


def test_a_poison_message_ends_in_the_dead_letter_queue_without_a_retry_storm(tmp_path: Path) -> None:
    with pipeline(tmp_path) as stack:
        # Given the upload queue's visibility timeout shortened for the test (2100 s on AWS), still
        # longer than the batching window (1 s) as it must be
        sqs = stack.client("sqs")
        queue = stack.outputs["UploadQueueUrl"]
        stack.set_queue_attributes(queue, {"VisibilityTimeout": "2"})  # returns once its poller has seen it
        attributes = sqs.get_queue_attributes(QueueUrl=queue, AttributeNames=["RedrivePolicy"])["Attributes"]
        max_receives = int(json.loads(attributes["RedrivePolicy"])["maxReceiveCount"])
        # When a message that is not an S3 event arrives
        poison = sqs.send_message(QueueUrl=queue, MessageBody="this is not an S3 event")["MessageId"]
        stack.wait_idle(timeout=120)
        # Then StartImport failed it maxReceiveCount times, one visibility timeout apart, and no more
        attempts = [d for d in handled(stack, queue) if poison in d.message_ids]
        assert len(attempts) == max_receives
        assert all(poison in d.failed_ids for d in attempts)
        # (timed from when each receive returned: a late response can shorten a gap, never a storm)
        gaps = [b.received - a.received for a, b in itertools.pairwise(attempts)]
        assert min(gaps) >= 1.5
        # … and it waits in the dead-letter queue, unchanged; no batch was made of it
        (dead,) = dead_letters(stack)
        assert (dead["MessageId"], dead["Body"]) == (poison, "this is not an S3 event")
        assert batches(stack) == []

"""Benchmark of the completion stage (ImportCompleted): parsing and fan-out of an import job's results.

A synthetic job folder (``job-output-manifest.json``, a ``SUCCESS/success.ndjson`` of 5,000 lines over
50 image sets, an empty ``FAILURE/failure.ndjson``) and the batch's member list are written to moto's
S3, which runs in its own process on loopback (so this process's memory is the stage's alone).  The
measured path is the stage's own code, as ``completion._process`` calls it: ``batch_members`` and
``parse_manifest`` on the member list and the manifest, ``read_results`` (SUCCESS and FAILURE streamed
line by line, tallied per image set, each file mapped to its upload, checked against the manifest),
``announcements`` (one "Image Set Imported" entry per image set) and ``EventBusGateway.put``.

PutEvents goes to a bus of moto's EventBridge without targets.  Real EventBridge answers PutEvents
before it delivers to targets; moto delivers inside the call (about 3 ms per event into SQS), so a
routed bus is measured beside it for information, and one routed run checks that the rule really
receives one event per image set.  Left out: DynamoDB (job and batch records) and GetImageSet, whose
existence check is bounded by the service's 25 TPS, not by parsing.

Targets: ≥ 20,000 lines per second end to end, and < 20 MB of memory growth (Python heap peak under
``tracemalloc``; and peak resident memory, VmHWM after ``clear_refs``, over VmRSS before).  Rounds
alternate with the floor, raw ``json.loads`` of the same lines in the same run; best of each is kept.

Run ``python -m bench.completion`` (or ``python -m bench --only completion``); exits non-zero when a
target is missed.
"""

from __future__ import annotations

import argparse
import contextlib
import gc
import hashlib
import json
import sys
import time
import tracemalloc
from collections import Counter
from collections.abc import Iterator
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import boto3
from botocore.config import Config

ROOT = Path(__file__).resolve().parents[1]
LAYER = ROOT / "layers" / "shared"
if str(LAYER) not in sys.path:
    sys.path.insert(0, str(LAYER))  # the layer's package, as /opt/python is in Lambda

from ahi_pipeline import completion  # noqa: E402
from ahi_pipeline.imaging_gateway import ImportJob  # noqa: E402
from ahi_pipeline.job_results import (  # noqa: E402
    FAILURE_FILE,
    MANIFEST_FILE,
    SUCCESS_FILE,
    JobManifest,
    parse_manifest,
)
from ahi_pipeline.pipeline_events import (  # noqa: E402
    IMAGE_SET_IMPORTED,
    SOURCE,
    EventBusGateway,
)
from ahi_pipeline.s3_gateway import S3Gateway  # noqa: E402
from ahi_pipeline.settings import CompletionSettings  # noqa: E402
from bench.processes import free_port, process  # noqa: E402

REGION = "us-east-1"
BUCKET = "bench-completion"
LANDING_BUCKET = "bench-landing"
BUS = "bench-pipeline-bus"
ROUTED_BUS = "bench-routed-bus"  # a rule into SQS: moto delivers inside PutEvents
TARGET_RATE = 20_000  # lines per second
TARGET_MB = 20.0


# ------------------------------------------------------------------------------------------ helpers
def _id(kind: str, n: int) -> str:
    """A synthetic HealthImaging id: 32 characters of [0-9a-z]."""
    return hashlib.sha256(f"{kind}-{n}".encode()).hexdigest()[:32]


def _proc_kb(field_name: str) -> int | None:
    try:
        for line in Path("/proc/self/status").read_text().splitlines():
            if line.startswith(field_name + ":"):
                return int(line.split()[1])
    except OSError:
        return None
    return None


def _reset_peak_rss() -> bool:
    """Reset VmHWM to the current RSS (Linux ≥ 4.0); False when it cannot be done."""
    try:
        Path("/proc/self/clear_refs").write_text("5")
    except OSError:
        return False
    return True


@dataclass
class Job:
    """The synthetic job: what the stage knows of it, and the lines of its success.ndjson."""

    job: ImportJob
    batch_id: str
    settings: CompletionSettings
    lines: list[bytes]


def write_job(s3: Any, lines: int, image_sets: int) -> Job:
    """The job folder, and the batch member list StartImport would have written (no PHI: synthetic)."""
    datastore_id, job_id = _id("datastore", 0), _id("job", 0)
    batch_id = hashlib.sha1(b"bench-batch", usedforsecurity=False).hexdigest()
    staging = f"staging/{batch_id}/"
    folder = f"import-results/{datastore_id}-DicomImport-{job_id}/"
    set_ids = [_id("image-set", n) for n in range(image_sets)]
    members: list[dict[str, Any]] = []
    success: list[bytes] = []
    total_bytes = 0
    for n in range(lines):
        series, slice_number = n % image_sets, n // image_sets + 1
        relative = f"series-{series:02d}/slice-{slice_number:04d}.dcm"
        total_bytes += 526_000 + n
        members.append(
            {
                "objectId": hashlib.sha256(relative.encode()).hexdigest(),
                "bucket": LANDING_BUCKET,
                "key": f"incoming/site-1/study-001/{relative}",
                "versionId": None,
                "etag": f"{n:032x}",
                "size": 526_000 + n,
                "stagedKey": staging + relative,
                "status": "staged",
            }
        )
        line = {
            "inputFile": staging + relative,
            "importResponse": {"imageSetId": set_ids[series], "imageSetVersion": "1", "isPrimary": True},
        }
        success.append(json.dumps(line, separators=(",", ":")).encode())
    counts = Counter(n % image_sets for n in range(lines))
    input_uri, output_uri = f"s3://{BUCKET}/{staging}", f"s3://{BUCKET}/{folder}"
    manifest = {
        "jobSummary": {
            "jobId": job_id,
            "datastoreId": datastore_id,
            "inputS3Uri": input_uri,
            "outputS3Uri": output_uri,
            "successOutputS3Uri": output_uri + "SUCCESS/",
            "failureOutputS3Uri": output_uri + "FAILURE/",
            "numberOfScannedFiles": lines,
            "numberOfImportedFiles": lines,
            "numberOfFilesWithCustomerError": 0,
            "numberOfFilesWithServerError": 0,
            "numberOfGeneratedImageSets": len(counts),
            "imageSetsSummary": [
                {
                    "imageSetId": set_ids[series],
                    "imageSetVersion": "1",
                    "isPrimary": True,
                    "numberOfMatchedSOPInstances": instances,
                }
                for series, instances in sorted(counts.items())
            ],
        }
    }
    member_list = {
        "schemaVersion": 1,
        "batchId": batch_id,
        "inputS3Uri": input_uri,
        "files": lines,
        "bytes": total_bytes,
        "members": members,
    }
    settings = CompletionSettings(
        datastore_id=datastore_id,
        output_bucket=BUCKET,
        batch_table="bench-batches",
        idempotency_table="bench-idempotency",
        event_bus_name=BUS,
    )
    s3.put_object(Bucket=BUCKET, Key=settings.manifest_key(batch_id), Body=json.dumps(member_list).encode())
    s3.put_object(Bucket=BUCKET, Key=folder + SUCCESS_FILE, Body=b"\n".join(success) + b"\n")
    s3.put_object(Bucket=BUCKET, Key=folder + FAILURE_FILE, Body=b"")
    s3.put_object(Bucket=BUCKET, Key=folder + MANIFEST_FILE, Body=json.dumps(manifest, indent=2).encode())
    ended = datetime(2026, 11, 22, 9, 30, tzinfo=UTC)
    job = ImportJob(
        job_id=job_id,
        datastore_id=datastore_id,
        job_name=f"ingest-{batch_id}",
        status="COMPLETED",
        submitted_at=ended - timedelta(minutes=4),
        ended_at=ended,
        input_s3_uri=input_uri,
        output_s3_uri=output_uri,
    )
    return Job(job, batch_id, settings, success)


# ------------------------------------------------------------------------------------------ the path
@dataclass
class Run:
    read_parse: float
    put_events: float
    calls: int
    entries: list[dict[str, Any]]
    results: completion.JobResults | None

    @property
    def seconds(self) -> float:
        return self.read_parse + self.put_events


def fan_out(data: Job, s3: S3Gateway, bus: EventBusGateway, *, keep: bool = False) -> Run:
    """The stage's path from the member list to PutEvents (no DynamoDB, GetImageSet or report)."""
    job, settings = data.job, data.settings
    started = time.perf_counter()
    bucket, folder = completion._split_s3_uri(job.output_s3_uri)
    members = completion.batch_members(
        s3.get_json(settings.output_bucket, settings.manifest_key(data.batch_id))
    )
    manifest = parse_manifest(
        s3.get_json(bucket, folder + MANIFEST_FILE), job_id=job.job_id, datastore_id=job.datastore_id
    )
    results = completion.read_results(job, members, manifest, s3)
    report_uri = f"s3://{settings.output_bucket}/{settings.report_key(job.job_id)}"
    entries = completion.announcements(
        job, data.batch_id, results, bus=settings.event_bus_name, report_uri=report_uri
    )
    if results.files.failed:
        raise AssertionError(f"{len(results.files.failed)} file(s) reported failed in a clean job")
    read_parse_done = time.perf_counter()
    calls = bus.calls
    bus.put(entries)
    done = time.perf_counter()
    return Run(
        read_parse_done - started,
        done - read_parse_done,
        bus.calls - calls,
        entries,
        results if keep else None,
    )


def report_seconds(data: Job, s3: S3Gateway, results: completion.JobResults) -> tuple[float, int]:
    """Build and put the job's report as ``completion._process`` does (for information)."""
    started = time.perf_counter()
    outcome = completion._outcome(data.job, results.files)
    document = completion._report(data.job, data.batch_id, results, outcome, datetime.now(UTC))
    s3.put_json(data.settings.output_bucket, data.settings.report_key(data.job.job_id), document)
    seconds = time.perf_counter() - started
    return seconds, len(json.dumps(document, separators=(",", ":"), ensure_ascii=False))


def floor_seconds(lines: list[bytes]) -> float:
    """Raw ``json.loads`` of the same lines, already in memory: nothing else."""
    started = time.perf_counter()
    for line in lines:
        json.loads(line)
    return time.perf_counter() - started


def in_memory_seconds(
    data: Job, members: dict[str, tuple[str, str, str | None]], manifest: JobManifest
) -> float:
    """The same parse, tally, checks and member mapping with the lines from a list (no S3)."""
    started = time.perf_counter()
    completion.gather_results(data.job, members, manifest, data.lines, [])
    return time.perf_counter() - started


# ------------------------------------------------------------------------------------------ the stack
@dataclass
class Stack:
    s3: Any
    events: Any
    sqs: Any
    queue_url: str


@contextlib.contextmanager
def moto_stack() -> Iterator[Stack]:
    """moto in its own process on loopback; a bucket, and two buses: one without targets, one with a
    rule into an SQS queue."""
    port = free_port()
    url = f"http://127.0.0.1:{port}"
    with process(
        [sys.executable, "-m", "moto.server", "-H", "127.0.0.1", "-p", str(port)], f"{url}/moto-api/"
    ):
        session = boto3.Session(
            aws_access_key_id="testing", aws_secret_access_key="testing", region_name=REGION
        )
        config = Config(retries={"mode": "standard"})
        s3 = session.client("s3", endpoint_url=url, config=config)
        events = session.client("events", endpoint_url=url, config=config)
        sqs: Any = session.client("sqs", endpoint_url=url, config=config)
        s3.create_bucket(Bucket=BUCKET)
        events.create_event_bus(Name=BUS)
        events.create_event_bus(Name=ROUTED_BUS)
        queue_url = sqs.create_queue(QueueName="bench-image-sets")["QueueUrl"]
        queue_arn = sqs.get_queue_attributes(QueueUrl=queue_url, AttributeNames=["QueueArn"])["Attributes"][
            "QueueArn"
        ]
        pattern = {"source": [SOURCE], "detail-type": [IMAGE_SET_IMPORTED]}
        events.put_rule(Name="bench-image-sets", EventBusName=ROUTED_BUS, EventPattern=json.dumps(pattern))
        events.put_targets(
            Rule="bench-image-sets", EventBusName=ROUTED_BUS, Targets=[{"Id": "queue", "Arn": queue_arn}]
        )
        yield Stack(s3, events, sqs, queue_url)


def drain(stack: Stack) -> set[str]:
    """Receive and delete what the rule delivered (moto's SQS slows down as a queue fills up); return
    the image set ids of the "Image Set Imported" events among them."""
    image_set_ids: set[str] = set()
    while True:
        messages = stack.sqs.receive_message(QueueUrl=stack.queue_url, MaxNumberOfMessages=10).get(
            "Messages", []
        )
        if not messages:
            return image_set_ids
        for message in messages:
            event = json.loads(message["Body"])
            if event.get("detail-type") == IMAGE_SET_IMPORTED:
                image_set_ids.add(event["detail"]["imageSetId"])
        stack.sqs.delete_message_batch(
            QueueUrl=stack.queue_url,
            Entries=[{"Id": str(n), "ReceiptHandle": m["ReceiptHandle"]} for n, m in enumerate(messages)],
        )


def routed_seconds(bus: EventBusGateway, entries: list[dict[str, Any]]) -> float:
    """The same PutEvents calls to the bus whose rule delivers into SQS (moto does it inside the call)."""
    moved = [{**entry, "EventBusName": ROUTED_BUS} for entry in entries]
    started = time.perf_counter()
    bus.put(moved)
    return time.perf_counter() - started


# ------------------------------------------------------------------------------------------ the benchmark
def bench_fan_out(lines: int = 5000, image_sets: int = 50, rounds: int = 5) -> bool:
    """Parsing and fan-out of a ``lines``-line success.ndjson (targets ≥ 20,000 lines/s, < 20 MB)."""
    print(
        f"\n## Completion fan-out: {lines}-line success.ndjson over {image_sets} image sets "
        "(S3 and EventBridge: moto in its own process, on loopback)"
    )
    started = time.perf_counter()
    floors, in_memory, runs, routed = [], [], [], []
    heap_mb: list[float] = []
    rss_mb: list[float] = []
    with moto_stack() as stack:
        data = write_job(stack.s3, lines, image_sets)
        size_mb = sum(len(line) + 1 for line in data.lines) / 1e6
        s3, bus = S3Gateway(stack.s3), EventBusGateway(stack.events)
        warm = fan_out(data, s3, bus, keep=True)  # warm-up: connections, lazily loaded models
        assert warm.results is not None
        assert warm.results.manifest is not None
        members = completion.batch_members(
            s3.get_json(data.settings.output_bucket, data.settings.manifest_key(data.batch_id))
        )
        report_s, report_chars = report_seconds(data, s3, warm.results)
        routed.append(routed_seconds(bus, warm.entries))
        routed_ok = drain(stack) == {
            entry["Detail"] and json.loads(entry["Detail"])["imageSetId"] for entry in warm.entries
        }
        for round_index in range(rounds):
            floors.append(floor_seconds(data.lines))
            in_memory.append(in_memory_seconds(data, members, warm.results.manifest))
            # Timed, with peak resident memory, and without tracemalloc (it slows allocation down).
            gc.collect()
            rss_before = _proc_kb("VmRSS")
            reset = _reset_peak_rss()
            run = fan_out(data, s3, bus)
            hwm = _proc_kb("VmHWM")
            if reset and rss_before is not None and hwm is not None:
                rss_mb.append((hwm - rss_before) / 1024)
            runs.append(run)
            routed.append(routed_seconds(bus, run.entries))
            routed_ok = routed_ok and len(drain(stack)) == image_sets
            # Python heap growth, same path, under tracemalloc.
            gc.collect()
            tracemalloc.start()
            start_bytes = tracemalloc.get_traced_memory()[0]
            fan_out(data, s3, bus)
            peak_bytes = tracemalloc.get_traced_memory()[1]
            tracemalloc.stop()
            heap_mb.append((peak_bytes - start_bytes) / 1e6)
            print(
                f"   round {round_index + 1}: json.loads floor {floors[-1] * 1000:.1f} ms, in-memory parse "
                f"{in_memory[-1] * 1000:.1f} ms, fan-out {run.seconds * 1000:.1f} ms (S3 read + parse "
                f"{run.read_parse * 1000:.1f}, PutEvents {run.put_events * 1000:.1f}; routed "
                f"{routed[-1] * 1000:.1f}), heap +{heap_mb[-1]:.1f} MB"
                + (f", RSS +{rss_mb[-1]:.1f} MB" if rss_mb else "")
            )
    best = min(runs, key=lambda r: r.seconds)
    floor, parse_only = min(floors), min(in_memory)
    rate = lines / best.seconds
    routed_rate = lines / (min(r.read_parse for r in runs) + min(routed))
    growth = max(heap_mb + rss_mb)

    def row(label: str, seconds: float) -> str:
        return f"   {label:<58} {lines / seconds:>9,.0f} lines/s {seconds * 1000:7.1f} ms"

    print(f"   success.ndjson {size_mb:.2f} MB; best of {rounds}:")
    print(row("raw json.loads of the same lines, in memory (floor)", floor))
    print(row("parse + tally + checks + member mapping, in memory", parse_only))
    print(row("fan-out end to end (S3 → parse → PutEvents)", best.seconds))
    print(
        f"      split: S3 read + parse (member list, manifest, SUCCESS, FAILURE, checks, entries) "
        f"{best.read_parse * 1000:.1f} ms ({best.read_parse / best.seconds:.0%}), PutEvents "
        f"{best.put_events * 1000:.1f} ms ({best.put_events / best.seconds:.0%}) in {best.calls} calls "
        f"for {len(best.entries)} entries"
    )
    print(
        f"   ratio in-memory parse / json.loads floor = {floor / parse_only:.2f}; "
        f"fan-out / floor = {floor / best.seconds:.3f}"
    )
    print(
        f"   (info) PutEvents to a bus whose rule delivers into SQS: {min(routed) * 1000:.1f} ms → "
        f"{routed_rate:,.0f} lines/s (moto delivers inside the call; real EventBridge after it); "
        "one event per image set reached the queue in every round: " + ("yes" if routed_ok else "NO")
    )
    print(
        f"   memory growth, worst round: Python heap peak +{max(heap_mb):.1f} MB (tracemalloc)"
        + (f", peak RSS +{max(rss_mb):.1f} MB (VmHWM - VmRSS)" if rss_mb else ", RSS n/a")
    )
    print(
        f"   (info, not in the target) report build + PutObject: {report_s * 1000:.1f} ms, "
        f"{report_chars / 1e6:.2f} MB of JSON"
    )
    print(
        "   (not measured: GetImageSet, the existence check; it is bounded by the service's 25 TPS, "
        f"~{image_sets / 25:.0f} s for {image_sets} image sets, not by parsing)"
    )
    rate_ok, memory_ok = rate >= TARGET_RATE, growth < TARGET_MB
    print(f"   rate / {TARGET_RATE:,} lines/s = {rate / TARGET_RATE:.2f}  {'ok' if rate_ok else 'MISSED'}")
    print(
        f"   memory growth {growth:.1f} MB / {TARGET_MB:.0f} MB = {growth / TARGET_MB:.2f}  "
        f"{'ok' if memory_ok else 'MISSED'}"
    )
    print(f"   (completion benchmark took {time.perf_counter() - started:.1f} s)")
    return rate_ok and memory_ok and routed_ok


def main() -> int:
    parser = argparse.ArgumentParser(description="Completion stage (ImportCompleted) benchmark")
    parser.add_argument("--lines", type=int, default=5000)
    parser.add_argument("--image-sets", type=int, default=50)
    parser.add_argument("--rounds", type=int, default=5)
    args = parser.parse_args()
    return 0 if bench_fan_out(args.lines, args.image_sets, args.rounds) else 1


if __name__ == "__main__":
    raise SystemExit(main())

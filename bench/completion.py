"""Benchmark of the completion stage (ImportCompleted): parsing and fan-out of an import job's results.

A synthetic job folder (``job-output-manifest.json``, a ``SUCCESS/success.ndjson`` of 5,000 lines over
50 image sets, an empty ``FAILURE/failure.ndjson``) and the batch's member list are written to moto's
S3, running in this process as a real HTTP server on loopback.  The measured path is the one
``completion._process`` runs, with the package's own functions: the member list and the manifest read
and parsed, SUCCESS and FAILURE streamed line by line (``S3Gateway.lines``) through
``success_records`` / ``failure_records`` into a ``ResultsTally``, each input file mapped to its batch
member (the per-file report entries), ``check_consistency`` against the manifest, one
"Image Set Imported" entry per image set, and ``EventBusGateway.put`` to a custom event bus whose
rule routes to an SQS queue (moto's EventBridge and SQS), so ``PutEvents`` really routes.

Left out: DynamoDB (job and batch records) and GetImageSet, whose existence check is bounded by the
service's 25 TPS, not by parsing.  The report (build + PutObject) is timed for information only.

Target: ≥ 20,000 lines per second end to end, and < 20 MB of memory growth (Python heap peak under
``tracemalloc``, and peak resident memory, VmHWM after ``clear_refs``, over VmRSS before).  moto serves
from this process, so both memory figures include its share of the work: an upper bound.  Rounds
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
import logging
import sys
import time
import tracemalloc
from collections import Counter
from collections.abc import Iterable, Iterator
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import boto3
from botocore.config import Config
from moto.server import ThreadedMotoServer

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
    ImageSetCount,
    JobManifest,
    ResultsTally,
    check_consistency,
    failure_records,
    input_key,
    parse_manifest,
    success_records,
)
from ahi_pipeline.pipeline_events import (  # noqa: E402
    IMAGE_SET_IMPORTED,
    SOURCE,
    EventBusGateway,
    image_set_imported,
)
from ahi_pipeline.s3_gateway import S3Gateway  # noqa: E402
from ahi_pipeline.settings import CompletionSettings  # noqa: E402

REGION = "us-east-1"
BUCKET = "bench-completion"
LANDING_BUCKET = "bench-landing"
BUS = "bench-pipeline-bus"
UNROUTED_BUS = "bench-unrouted-bus"  # no rule: moto delivers nothing
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
class Parsed:
    """What ``completion._process`` has gathered from the lines."""

    tally: ResultsTally = field(default_factory=ResultsTally)
    files: completion._Files = field(default_factory=completion._Files)
    seen: set[str] = field(default_factory=set)


def gather(
    job: ImportJob,
    members: dict[str, dict[str, Any]],
    success: Iterable[bytes],
    failure: Iterable[bytes],
) -> Parsed:
    """The loops of ``completion._process`` over SUCCESS and FAILURE (``member_of`` copied verbatim)."""
    parsed = Parsed()
    tally, files, seen = parsed.tally, parsed.files, parsed.seen

    def member_of(input_file: str) -> dict[str, Any]:
        key = input_key(
            input_file, completion._split_s3_uri(job.input_s3_uri)[0] if job.input_s3_uri else None
        )
        seen.add(key)
        member = members.get(key)
        if member is None:
            files.not_in_batch += 1
            return {"stagedKey": key, "key": None}
        return {"key": member["key"], "bucket": member["bucket"], "versionId": member.get("versionId")}

    for record in success_records(success):
        tally.add_success(record)
        files.imported.append({**member_of(record.input_file), "imageSetId": record.image_set_id})
    for failure_record in failure_records(failure):
        tally.add_failure(failure_record)
        files.failed.append(
            {
                **member_of(failure_record.input_file),
                "exceptionType": failure_record.exception_type,
                "message": failure_record.message,
            }
        )
    return parsed


@dataclass
class Run:
    read_parse: float
    put_events: float
    calls: int
    entries: list[dict[str, Any]]
    manifest: JobManifest
    image_sets: list[ImageSetCount]
    parsed: Parsed

    @property
    def seconds(self) -> float:
        return self.read_parse + self.put_events


def fan_out(data: Job, s3: S3Gateway, bus: EventBusGateway) -> Run:
    """``completion._process`` from the member list to PutEvents (no DynamoDB, GetImageSet or report)."""
    job, settings = data.job, data.settings
    started = time.perf_counter()
    bucket, folder = completion._split_s3_uri(job.output_s3_uri)
    members = completion._members(s3.get_json(settings.output_bucket, settings.manifest_key(data.batch_id)))
    # completion._read_manifest without its wait loop (the manifest is there).
    document = s3.get_json(bucket, folder + MANIFEST_FILE)
    manifest = parse_manifest(document, job_id=job.job_id, datastore_id=job.datastore_id)
    parsed = gather(
        job,
        members,
        completion._lines(s3, bucket, folder + SUCCESS_FILE),
        completion._lines(s3, bucket, folder + FAILURE_FILE),
    )
    image_sets = check_consistency(manifest, parsed.tally)
    completion._report_unscanned(job, members, parsed.seen, parsed.files, parsed.tally)
    entries = [
        image_set_imported(
            bus=settings.event_bus_name,
            datastore_id=job.datastore_id,
            image_set=image_set,
            job_id=job.job_id,
            batch_id=data.batch_id,
        )
        for image_set in image_sets
    ]
    if parsed.files.failed:
        raise AssertionError(f"{len(parsed.files.failed)} file(s) reported failed in a clean job")
    read_parse_done = time.perf_counter()
    calls = bus.calls
    bus.put(entries)
    done = time.perf_counter()
    return Run(
        read_parse_done - started,
        done - read_parse_done,
        bus.calls - calls,
        entries,
        manifest,
        image_sets,
        parsed,
    )


def report_seconds(data: Job, s3: S3Gateway, run: Run) -> tuple[float, int]:
    """Build and put the job's report as ``completion._process`` does (for information)."""
    started = time.perf_counter()
    document = completion._report(
        data.job,
        data.batch_id,
        run.manifest,
        run.image_sets,
        run.parsed.files,
        run.parsed.tally,
        completion._outcome(data.job, run.parsed.files),
        datetime.now(UTC),
    )
    s3.put_json(data.settings.output_bucket, data.settings.report_key(data.job.job_id), document)
    seconds = time.perf_counter() - started
    return seconds, len(json.dumps(document, separators=(",", ":"), ensure_ascii=False))


def floor_seconds(lines: list[bytes]) -> float:
    """Raw ``json.loads`` of the same lines, already in memory: nothing else."""
    started = time.perf_counter()
    for line in lines:
        json.loads(line)
    return time.perf_counter() - started


def in_memory_seconds(data: Job, members: dict[str, dict[str, Any]]) -> float:
    """The same parse, tally and member mapping with the lines from a list (no S3)."""
    started = time.perf_counter()
    gather(data.job, members, data.lines, [])
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
    """moto in this process, on loopback; a bucket, and a custom bus with a rule → SQS queue."""
    werkzeug = logging.getLogger("werkzeug")
    level = werkzeug.level
    werkzeug.setLevel(logging.ERROR)  # no line per request on stderr
    server = ThreadedMotoServer(ip_address="127.0.0.1", port=0, verbose=False)
    server.start()
    try:
        host, port = server.get_host_and_port()
        session = boto3.Session(
            aws_access_key_id="testing", aws_secret_access_key="testing", region_name=REGION
        )
        config = Config(retries={"mode": "standard"})
        url = f"http://{host}:{port}"
        s3 = session.client("s3", endpoint_url=url, config=config)
        events = session.client("events", endpoint_url=url, config=config)
        sqs: Any = session.client("sqs", endpoint_url=url, config=config)
        s3.create_bucket(Bucket=BUCKET)
        events.create_event_bus(Name=BUS)
        events.create_event_bus(Name=UNROUTED_BUS)
        queue_url = sqs.create_queue(QueueName="bench-image-sets")["QueueUrl"]
        queue_arn = sqs.get_queue_attributes(QueueUrl=queue_url, AttributeNames=["QueueArn"])["Attributes"][
            "QueueArn"
        ]
        pattern = {"source": [SOURCE], "detail-type": [IMAGE_SET_IMPORTED]}
        events.put_rule(Name="bench-image-sets", EventBusName=BUS, EventPattern=json.dumps(pattern))
        events.put_targets(
            Rule="bench-image-sets", EventBusName=BUS, Targets=[{"Id": "queue", "Arn": queue_arn}]
        )
        yield Stack(s3, events, sqs, queue_url)
    finally:
        server.stop()
        werkzeug.setLevel(level)


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


def unrouted_seconds(bus: EventBusGateway, entries: list[dict[str, Any]]) -> float:
    """The same PutEvents calls to a bus without rules: moto answers without delivering to SQS."""
    moved = [{**entry, "EventBusName": UNROUTED_BUS} for entry in entries]
    started = time.perf_counter()
    bus.put(moved)
    return time.perf_counter() - started


# ------------------------------------------------------------------------------------------ the benchmark
def bench_fan_out(lines: int = 5000, image_sets: int = 50, rounds: int = 5) -> bool:
    """Parsing and fan-out of a ``lines``-line success.ndjson (targets ≥ 20,000 lines/s, < 20 MB)."""
    print(
        f"\n## Completion fan-out: {lines}-line success.ndjson over {image_sets} image sets "
        "(S3, EventBridge → SQS: moto in this process, on loopback)"
    )
    started = time.perf_counter()
    floors, in_memory, runs, unrouted, reports = [], [], [], [], []
    heap_mb: list[float] = []
    rss_mb: list[float] = []
    with moto_stack() as stack:
        data = write_job(stack.s3, lines, image_sets)
        size_mb = sum(len(line) + 1 for line in data.lines) / 1e6
        s3, bus = S3Gateway(stack.s3), EventBusGateway(stack.events)
        members = completion._members(
            s3.get_json(data.settings.output_bucket, data.settings.manifest_key(data.batch_id))
        )
        fan_out(data, s3, bus)  # warm-up: connections, lazily loaded models, moto's first requests
        routed_ok = len(drain(stack)) == image_sets
        for round_index in range(rounds):
            floors.append(floor_seconds(data.lines))
            in_memory.append(in_memory_seconds(data, members))
            # Timed, with peak resident memory, and without tracemalloc (it slows allocation down).
            gc.collect()
            rss_before = _proc_kb("VmRSS")
            reset = _reset_peak_rss()
            run = fan_out(data, s3, bus)
            hwm = _proc_kb("VmHWM")
            if reset and rss_before is not None and hwm is not None:
                rss_mb.append((hwm - rss_before) / 1024)
            runs.append(run)
            routed_ok = routed_ok and len(drain(stack)) == image_sets
            unrouted.append(unrouted_seconds(bus, run.entries))
            reports.append(report_seconds(data, s3, run))
            run.parsed = Parsed()  # keep the timings only
            # Python heap growth, same path, under tracemalloc.
            gc.collect()
            tracemalloc.start()
            start_bytes = tracemalloc.get_traced_memory()[0]
            fan_out(data, s3, bus)
            peak_bytes = tracemalloc.get_traced_memory()[1]
            tracemalloc.stop()
            heap_mb.append((peak_bytes - start_bytes) / 1e6)
            routed_ok = routed_ok and len(drain(stack)) == image_sets
            print(
                f"   round {round_index + 1}: json.loads floor {floors[-1] * 1000:.1f} ms, in-memory parse "
                f"{in_memory[-1] * 1000:.1f} ms, fan-out {run.seconds * 1000:.1f} ms (S3 read + parse "
                f"{run.read_parse * 1000:.1f}, PutEvents {run.put_events * 1000:.1f}; unrouted "
                f"{unrouted[-1] * 1000:.1f}), heap +{heap_mb[-1]:.1f} MB"
                + (f", RSS +{rss_mb[-1]:.1f} MB" if rss_mb else "")
            )
    best = min(runs, key=lambda r: r.seconds)
    floor, parse_only = min(floors), min(in_memory)
    best_read_parse, best_put, best_unrouted = (
        min(r.read_parse for r in runs),
        min(r.put_events for r in runs),
        min(unrouted),
    )
    rate, floor_rate = lines / best.seconds, lines / floor
    unrouted_rate = lines / (best_read_parse + best_unrouted)
    growth = max(heap_mb + rss_mb)
    report_s, report_chars = min(reports)

    def row(label: str, seconds: float) -> str:
        return f"   {label:<58} {lines / seconds:>9,.0f} lines/s {seconds * 1000:7.1f} ms"

    print(f"   success.ndjson {size_mb:.2f} MB; best of {rounds}:")
    print(row("raw json.loads of the same lines, in memory (floor)", floor))
    print(row("parse + tally + member mapping, lines in memory", parse_only))
    print(row("fan-out end to end (S3 → ... → PutEvents, routed to SQS)", best.seconds))
    print(
        f"      split: S3 read + parse (member list, manifest, SUCCESS, FAILURE, checks, entries) "
        f"{best.read_parse * 1000:.1f} ms ({best.read_parse / best.seconds:.0%}), PutEvents "
        f"{best.put_events * 1000:.1f} ms ({best.put_events / best.seconds:.0%}); "
        f"best of each: {best_read_parse * 1000:.1f} / {best_put * 1000:.1f} ms"
    )
    print(
        f"      PutEvents: {best.calls} calls for {len(best.entries)} entries; "
        "the rule delivered one message per image set to SQS in every run: "
        + ("yes" if routed_ok else "NO, ROUTING BROKEN")
    )
    print(
        f"   ratio fan-out / json.loads floor = {rate / floor_rate:.3f} (the floor is "
        f"{floor_rate / rate:.0f}× faster); in-memory parse / floor = {floor / parse_only:.2f}"
    )
    print(
        f"   (info) the same PutEvents to a bus without rules: {best_unrouted * 1000:.1f} ms → "
        f"{unrouted_rate:,.0f} lines/s; moto delivers to SQS inside PutEvents, real EventBridge after it"
    )
    print(
        f"   memory growth, worst round: Python heap peak +{max(heap_mb):.1f} MB (tracemalloc)"
        + (f", peak RSS +{max(rss_mb):.1f} MB (VmHWM - VmRSS)" if rss_mb else ", RSS n/a")
        + "; both include moto's in-process share"
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

"""Benchmarks of the ingest stage (StartImport), measured side by side in one run.

1. Planning.  A 5,000-record SQS event of S3 "Object Created" events is parsed, filtered, batched and
   its manifest serialised, exactly as StartImport does before any I/O (the copies, DynamoDB and S3
   calls are excluded).  Target: ≥ 5,000 records per second.
2. Cold start.  Importing the handler module ``functions.start_import.app`` in a fresh process, against
   importing ``boto3`` alone in a fresh process, alternating, best of each.  Target: ≤ 1.5×.

Both run in child processes whose ``sys.path`` mirrors Lambda's (the layer's ``layers/shared`` stands
for ``/opt/python``), with ``LAMBDA_TASK_ROOT`` set so Powertools' Tracer and the X-Ray SDK behave as
in Lambda (the X-Ray SDK makes no sampling client there).  Cold start is measured twice:

* with bytecode for everything, as the layer ships (``layers/shared/Makefile`` compiles it);
* with bytecode for the dependencies only, as SAM's python builder would ship the layer: pip compiles
  what it installs, our own sources are copied and Lambda's read-only file system cannot cache their
  bytecode.

The target applies to the first; the second is printed to show what compiling the layer saves.

Run ``python -m bench.ingest`` (or ``make bench``); functions: :func:`bench_planning`,
:func:`bench_cold_start`.  Exits non-zero when a target is missed.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]
LAYER = ROOT / "layers" / "shared"
HANDLER_MODULE = "functions.start_import.app"


# ------------------------------------------------------------------------------------------ helpers
def lambda_like_env(pycache: str) -> dict[str, str]:
    """Environment of a child process that imports like Lambda (see the module docstring)."""
    env = dict(os.environ)
    env.update(
        PYTHONPATH=os.pathsep.join([str(ROOT), str(LAYER)]),
        LAMBDA_TASK_ROOT=str(ROOT / "functions" / "start_import"),
        AWS_LAMBDA_FUNCTION_NAME="StartImport",
        AWS_DEFAULT_REGION=env.get("AWS_DEFAULT_REGION", "us-east-1"),
    )
    env.pop("PYTHONDONTWRITEBYTECODE", None)
    env["PYTHONPYCACHEPREFIX"] = pycache  # bytecode in a temporary folder, never in the tree
    return env


def child(code: str, env: dict[str, str]) -> str:
    return subprocess.run(
        [sys.executable, "-c", code], env=env, cwd=ROOT, check=True, capture_output=True, text=True
    ).stdout


def import_ms(module: str, env: dict[str, str]) -> float:
    """Milliseconds to import ``module`` in a fresh interpreter (measured inside it)."""
    code = f"import time; t = time.perf_counter(); import {module}; print((time.perf_counter() - t) * 1000)"
    return float(child(code, env))


# ------------------------------------------------------------------------------------------ planning
_PLANNING = """
import json, time
from bench.ingest import planning_event
from ahi_pipeline.batch_manifest import manifest_document
from ahi_pipeline.batching import Limits, plan_batches, skip_reason
from ahi_pipeline.uploads import UploadMessage, parse_sqs_event

records = {records}
event = planning_event(records)
limits = Limits("landing-bucket", "incoming/", 5000, 10 * 1024**3)
best = float("inf")
for _ in range({rounds}):
    start = time.perf_counter()
    messages = parse_sqs_event(event)
    uploads = [m.upload for m in messages if isinstance(m, UploadMessage)]
    accepted = [u for u in uploads if skip_reason(u, limits) is None]
    for batch in plan_batches(accepted, limits):
        folder = f"staging/{{batch.batch_id}}/"
        uri = "s3://landing-bucket/" + folder
        document = manifest_document(batch, staging_folder=folder, input_s3_uri=uri)
        body = json.dumps(document, separators=(",", ":"), ensure_ascii=False).encode()
    best = min(best, time.perf_counter() - start)
print(json.dumps({{"seconds": best, "batches": len(plan_batches(accepted, limits)), "bytes": len(body)}}))
"""


def planning_event(records: int) -> dict[str, Any]:
    """An SQS event of ``records`` S3 Object Created events (versioned bucket, nested folders)."""
    items = []
    for n in range(records):
        body = {
            "version": "0",
            "id": f"00000000-0000-4000-8000-{n:012d}",
            "detail-type": "Object Created",
            "source": "aws.s3",
            "account": "123456789012",
            "time": "2026-11-22T09:00:00Z",
            "region": "us-east-1",
            "resources": ["arn:aws:s3:::landing-bucket"],
            "detail": {
                "version": "0",
                "bucket": {"name": "landing-bucket"},
                "object": {
                    "key": f"incoming/site-{n % 7}/study {n // 500:03d}/series-{n % 5}/IM{n:06d}.dcm",
                    "size": 500_000 + n,
                    "etag": f"{n:032x}",
                    "version-id": f"v{n:031d}",
                    "sequencer": f"{n:018X}",
                },
                "request-id": "N4N7GDK58NMKJ12R",
                "requester": "123456789012",
                "source-ip-address": "203.0.113.10",
                "reason": "PutObject",
            },
        }
        items.append(
            {
                "messageId": f"m-{n}",
                "receiptHandle": f"r-{n}",
                "body": json.dumps(body),
                "attributes": {"ApproximateReceiveCount": "1"},
                "messageAttributes": {},
                "eventSource": "aws:sqs",
                "awsRegion": "us-east-1",
            }
        )
    return {"Records": items}


def bench_planning(records: int = 5000, rounds: int = 5) -> bool:
    """StartImport planning of a ``records``-record event in records per second (target ≥ 5,000/s)."""
    print(f"\n## StartImport planning: {records} records (parse, filter, batch, ids, staged keys, manifest)")
    with tempfile.TemporaryDirectory() as pycache:
        output = child(_PLANNING.format(records=records, rounds=rounds), lambda_like_env(pycache))
    result = json.loads(output)
    rate = records / result["seconds"]
    print(
        f"   best of {rounds}: {result['seconds'] * 1000:.1f} ms → {rate:,.0f} records/s "
        f"({result['batches']} batch(es), manifest {result['bytes'] / 1e6:.1f} MB)"
    )
    print(f"   rate / 5,000 records/s = {rate / 5000:.1f}  {'PASS' if rate >= 5000 else 'FAIL'}")
    return rate >= 5000


# ------------------------------------------------------------------------------------------ cold start
def bench_cold_start(rounds: int = 11) -> bool:
    """Fresh-process import of the handler vs of boto3 alone (target ≤ 1.5×)."""
    print(f"\n## Cold start: import {HANDLER_MODULE} vs import boto3, fresh processes, best of {rounds}")
    ok = True
    with tempfile.TemporaryDirectory() as compiled_cache, tempfile.TemporaryDirectory() as deps_cache:
        compiled = lambda_like_env(compiled_cache)
        import_ms(HANDLER_MODULE, compiled)  # warm-up: bytecode of every module
        deps_only = lambda_like_env(deps_cache)
        import_ms(HANDLER_MODULE, deps_only)  # warm-up, then forget the bytecode of our own sources
        for ours in ("functions", "layers"):
            shutil.rmtree(Path(deps_cache + str(ROOT)) / ours, ignore_errors=True)
        deps_only["PYTHONDONTWRITEBYTECODE"] = "1"
        for label, env, checked in (
            ("layer as it ships, with bytecode (layers/shared/Makefile)", compiled, True),
            ("layer as SAM's python builder would ship it (our sources compiled)", deps_only, False),
        ):
            samples: dict[str, list[float]] = {"boto3": [], HANDLER_MODULE: []}
            for _ in range(rounds):
                for module, times in samples.items():
                    times.append(import_ms(module, env))
            boto3_ms, handler_ms = min(samples["boto3"]), min(samples[HANDLER_MODULE])
            ratio = handler_ms / boto3_ms
            verdict = ("PASS" if ratio <= 1.5 else "FAIL") if checked else "(info)"
            print(
                f"   {label}: boto3 {boto3_ms:.0f} ms (median {statistics.median(samples['boto3']):.0f}), "
                f"handler {handler_ms:.0f} ms (median {statistics.median(samples[HANDLER_MODULE]):.0f})"
            )
            print(f"      handler / boto3 = {ratio:.2f}  {verdict}")
            ok = ok and (ratio <= 1.5 or not checked)
    return ok


def main() -> int:
    parser = argparse.ArgumentParser(description="Ingest stage (StartImport) benchmarks")
    parser.add_argument("--records", type=int, default=5000)
    parser.add_argument("--rounds", type=int, default=11)
    parser.add_argument("--only", choices=("planning", "cold-start"))
    args = parser.parse_args()
    started = time.perf_counter()
    results = []
    if args.only in (None, "planning"):
        results.append(bench_planning(args.records, args.rounds))
    if args.only in (None, "cold-start"):
        results.append(bench_cold_start(args.rounds))
    print(f"\n(ingest benchmarks took {time.perf_counter() - started:.0f} s)")
    return 0 if all(results) else 1


if __name__ == "__main__":
    raise SystemExit(main())

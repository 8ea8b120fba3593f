"""``make demo``: the pipeline of ``template.yaml`` end to end, offline, on sample DICOM.

Starts the template on the local stack (:class:`local.stack.LocalStack`), uploads DICOM under
``incoming/`` of the landing bucket (the samples bundled with pydicom, plus a file that is not DICOM, a
zero-byte object and a folder marker; or, with ``--dicom-dir`` / ``DICOM_DIR``, every file of a folder
of your own, recursively), then follows every stage the template has until the stack is idle: upload
events handled, batches recorded, import jobs finished.  It ends with a summary of files, batches,
jobs, image sets and every failure with its reason, and exits 0 when nothing was lost (each upload
imported, reported with a reason, or skipped by StartImport with a logged reason; nothing in a
dead-letter queue).

Only non-identifying facts are printed (keys the user chose, ids, counts, sizes): never DICOM content.
The functions' own logs go to ``<data dir>/functions.log``.
"""

from __future__ import annotations

import argparse
import contextlib
import html
import json
import logging
import os
import sys
import time
from collections import Counter
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, TextIO

from local.progress import Board
from local.samples import sample_paths, synthetic_series
from local.stack import LocalStack, StackError
from local.template import TemplateError

__all__ = ["DemoResult", "main", "run", "uploads"]

INCOMING = "incoming/"
#: Parameters the demo sets when the template declares them: a short batching window for a quick run.
DEMO_PARAMETERS = {"UploadBatchingWindowSeconds": "2"}


@dataclass(frozen=True)
class Upload:
    """One object the demo puts under ``incoming/``."""

    key: str
    body: bytes | None = None
    path: Path | None = None
    kind: str = "DICOM"

    @property
    def size(self) -> int:
        return self.path.stat().st_size if self.path is not None else len(self.body or b"")


def uploads(dicom_dir: Path | None) -> list[Upload]:
    """What to upload: the bundled samples and three odd objects, or every file under ``dicom_dir``."""
    if dicom_dir is not None:
        files = sorted(p for p in dicom_dir.rglob("*") if p.is_file())
        return [
            Upload(f"{INCOMING}{p.relative_to(dicom_dir).as_posix()}", path=p, kind="file") for p in files
        ]
    samples = [
        Upload(f"{INCOMING}samples/series-{index % 2}/{name}", path=path)
        for index, (name, path) in enumerate(sample_paths())
    ]
    synthetic = [
        Upload(f"{INCOMING}samples/synthetic-ct/{name}", body=data, kind="synthetic DICOM")
        for name, data in synthetic_series()
    ]
    return [
        *samples,
        *synthetic,
        Upload(f"{INCOMING}samples/notes/readme.txt", body=b"not a DICOM file", kind="not DICOM"),
        Upload(f"{INCOMING}samples/empty.dcm", body=b"", kind="zero-byte"),
        Upload(f"{INCOMING}samples/folder/", body=b"", kind="folder marker"),
    ]


@dataclass
class DemoResult:
    """What the pipeline did with the uploads."""

    uploaded: int = 0
    events_handled: int = 0
    batches: Counter[str] = field(default_factory=Counter)
    jobs: Counter[str] = field(default_factory=Counter)
    imported: int = 0
    image_sets: int = 0
    failures: list[tuple[str, str]] = field(default_factory=list)
    skipped: Counter[str] = field(default_factory=Counter)
    not_batched: int = 0
    dead_letters: int = 0
    unaccounted: list[str] = field(default_factory=list)
    #: The completion stage, when the template has it: jobs it handled, and its announcements.
    completion: bool = False
    jobs_handled: int = 0
    announced: int = 0
    reports: list[str] = field(default_factory=list)
    #: The de-identification stage, when the template has it: image set record states, Ready events.
    deidentification: Counter[str] = field(default_factory=Counter)
    ready: int = 0
    #: The tagging stage: the pipeline's tags of each Ready image set.
    tags: dict[str, dict[str, str]] = field(default_factory=dict)
    #: The thumbnail stage: each rendered image set's sidecar, and the contact page written.
    thumbnails: dict[str, dict[str, Any]] = field(default_factory=dict)
    contact_page: Path | None = None

    @property
    def ok(self) -> bool:
        handled = not self.completion or self.jobs_handled == sum(self.jobs.values())
        deidentified = not self.deidentification or self.deidentification["FAILED"] == 0
        return (
            not self.unaccounted
            and not self.dead_letters
            and self.events_handled >= self.uploaded
            and handled
            and deidentified
        )


class Demo:
    """The scenario on a running stack; ``out`` receives everything printed."""

    def __init__(self, stack: LocalStack, out: TextIO, *, tty: bool | None = None) -> None:
        self.stack = stack
        self.out = out
        self.board = Board(out, tty=tty)
        self.s3 = stack.client("s3")
        self.sqs = stack.client("sqs")
        self.ahi = stack.client("medical-imaging")
        self.dynamodb = stack.client("dynamodb")
        self.outputs = stack.outputs
        self.announcements: str | None = None
        self.announced: Counter[str] = Counter()
        self.ready_ids: list[str] = []
        self.rendered: list[dict[str, Any]] = []

    def subscribe(self) -> None:
        """Listen to the pipeline bus as a later stage would (a rule into a queue of the demo's own)."""
        bus = self.outputs.get("PipelineBusName")
        if not bus:
            return
        events = self.stack.client("events")
        self.announcements = self.sqs.create_queue(QueueName="demo-pipeline-events")["QueueUrl"]
        arn = self.sqs.get_queue_attributes(QueueUrl=self.announcements, AttributeNames=["QueueArn"])[
            "Attributes"
        ]["QueueArn"]
        events.put_rule(Name="demo-listener", EventBusName=bus, EventPattern='{"source": [{"prefix": ""}]}')
        events.put_targets(Rule="demo-listener", EventBusName=bus, Targets=[{"Id": "demo", "Arn": arn}])

    def _drain_announcements(self) -> None:
        if self.announcements is None:
            return
        while messages := self.sqs.receive_message(
            QueueUrl=self.announcements, MaxNumberOfMessages=10, WaitTimeSeconds=0
        ).get("Messages", []):
            for message in messages:
                event = json.loads(message["Body"])
                self.announced[event.get("detail-type", "?")] += 1
                if event.get("detail-type") == "Image Set Ready":
                    self.ready_ids.append(str(event["detail"]["imageSetId"]))
                if event.get("detail-type") == "Thumbnail Rendered":
                    self.rendered.append(dict(event["detail"]))
                self.sqs.delete_message(QueueUrl=self.announcements, ReceiptHandle=message["ReceiptHandle"])

    def say(self, line: str) -> None:
        print(line, file=self.out, flush=True)

    # ------------------------------------------------------------------ steps
    def upload(self, items: list[Upload]) -> None:
        bucket = self.outputs["LandingBucketName"]
        total = sum(item.size for item in items)
        self.say(f"\n== Upload {len(items)} objects ({total:,} bytes) to s3://{bucket}/{INCOMING}")
        row = self.board.row("objects uploaded", total=len(items))
        for item in items:
            if item.path is not None:
                self.s3.upload_file(str(item.path), bucket, item.key)
            else:
                self.s3.put_object(Bucket=bucket, Key=item.key, Body=item.body or b"")
            row.advance()
            self.board.refresh()
        row.finish()
        self.board.close()

    def follow(self, expected_events: int, timeout: float) -> None:
        """Progress of every stage the template has, until the whole stack is idle."""
        self.say("\n== Pipeline (until every queue is empty, every function idle, every job finished)")
        events = self.board.row("upload events handled", total=expected_events)
        batches = self.board.row("batches submitted") if "BatchTableName" in self.outputs else None
        jobs = self.board.row("import jobs finished") if "DatastoreId" in self.outputs else None
        completion = "PipelineBusName" in self.outputs
        reported = self.board.row("import jobs reported") if completion else None
        announced = self.board.row("image sets announced") if completion else None
        deid = "DeidentifyQueueUrl" in self.outputs
        deidentified = self.board.row("image sets de-identified") if deid else None
        ready = self.board.row("image sets ready") if deid else None
        tagged = self.board.row("image sets tagged") if "TagQueueUrl" in self.outputs else None
        thumbnails = self.board.row("thumbnails rendered") if "ThumbnailQueueUrl" in self.outputs else None

        def update(reason: str | None) -> None:
            events.set(len(self._handled_events()), expected_events)
            if batches is not None:
                states = self._batch_states()
                done = sum(states[s] for s in ("SUBMITTED", "EMPTY", "FAILED", "COMPLETED", "PARTIAL"))
                batches.set(done, sum(states.values()))
            if jobs is not None:
                statuses = self._job_statuses()
                finished = statuses["COMPLETED"] + statuses["FAILED"]
                jobs.set(finished, sum(statuses.values()))
                if reported is not None and announced is not None:
                    reported.set(self._job_records()["HANDLED"], finished)
                    self._drain_announcements()
                    imported = self.announced["Image Set Imported"]
                    announced.set(imported, imported)
                    if deidentified is not None and ready is not None:
                        states = self._records("imageset")
                        deidentified.set(sum(states[s] for s in ("READY", "SKIPPED", "FAILED")), imported)
                        ready.set(self.announced["Image Set Ready"], imported)
                    if tagged is not None:
                        tagged.set(len(self._tagged()), imported)
                    if thumbnails is not None:
                        thumbnails.set(self.announced["Thumbnail Rendered"], imported)
            if events.done >= expected_events:
                events.finish()
            if reason is None:
                for row in self.board.rows:
                    row.finish()
            self.board.refresh()

        self.stack.wait_idle(timeout=timeout, settle=0.5, progress=_throttled(update, 0.2))
        update(None)
        self.board.close()

    def summarize(
        self, items: list[Upload], function_log: Path | None, output_dir: Path | None = None
    ) -> DemoResult:
        result = DemoResult(uploaded=len(items), events_handled=len(self._handled_events()))
        members = self._batch_members(result)
        if "PipelineBusName" in self.outputs:
            self._job_reports(result, members)
        else:
            self._job_results(result, members)
        if "DeidentifyQueueUrl" in self.outputs:
            result.deidentification = self._records("imageset")
            result.ready = self.announced["Image Set Ready"]
        if "TagQueueUrl" in self.outputs:
            result.tags = self._tagged()
        if "ThumbnailQueueUrl" in self.outputs:
            result.thumbnails = self._thumbnails(output_dir)
            if output_dir is not None and result.thumbnails:
                result.contact_page = write_contact_page(output_dir, result.thumbnails)
        batched = {key for key, _ in members.values()}
        result.not_batched = sum(1 for item in items if item.key not in batched)
        result.skipped = _skip_reasons(function_log)
        for name in (
            "UploadDeadLetterQueueUrl",
            "JobEventsDeadLetterQueueUrl",
            "DeidentifyDeadLetterQueueUrl",
            "TagDeadLetterQueueUrl",
            "ThumbnailDeadLetterQueueUrl",
        ):
            dead_letter = self.outputs.get(name)
            if dead_letter:
                attributes = self.sqs.get_queue_attributes(
                    QueueUrl=dead_letter, AttributeNames=["ApproximateNumberOfMessages"]
                )["Attributes"]
                result.dead_letters += int(attributes["ApproximateNumberOfMessages"])
        self._print_summary(items, result)
        return result

    # ------------------------------------------------------------------ reading the stages
    def _handled_events(self) -> set[str]:
        queue = self.outputs.get("UploadQueueUrl")
        arns = {r.attributes.get("Arn") for r in self.stack.resources.values() if r.physical_id == queue}
        handled: set[str] = set()
        for delivery in self.stack.deliveries.snapshot():
            if delivery.source in arns:
                handled |= set(delivery.message_ids) - set(delivery.failed_ids)
        return handled

    def _batch_items(self) -> list[dict[str, Any]]:
        table = self.outputs.get("BatchTableName")
        if not table:
            return []
        items: list[dict[str, Any]] = []
        for page in self.dynamodb.get_paginator("scan").paginate(TableName=table):
            for item in page["Items"]:
                if item.get("kind", {}).get("S") == "batch":
                    items.append({name: next(iter(value.values())) for name, value in item.items()})
        return items

    def _thumbnails(self, output_dir: Path | None) -> dict[str, dict[str, Any]]:
        """Each rendered image set's sidecar; with ``output_dir``, its PNGs copied under ``thumbnails/``."""
        self._drain_announcements()
        found: dict[str, dict[str, Any]] = {}
        for detail in self.rendered:
            bucket, image_set_id = str(detail["bucket"]), str(detail["imageSetId"])
            body = self.s3.get_object(Bucket=bucket, Key=str(detail["sidecarKey"]))["Body"].read()
            sidecar = json.loads(body)
            found[image_set_id] = sidecar
            if output_dir is None:
                continue
            folder = output_dir / "thumbnails" / image_set_id
            folder.mkdir(parents=True, exist_ok=True)
            for key in [detail["thumbnailKey"], *detail.get("contactSheetKeys", [])]:
                png = self.s3.get_object(Bucket=bucket, Key=str(key))["Body"].read()
                (folder / str(key).rsplit("/", 1)[-1]).write_bytes(png)
            (folder / "thumbnail.json").write_bytes(body)
        return found

    def _tagged(self) -> dict[str, dict[str, str]]:
        """The pipeline's tags of each Ready image set that has them."""
        datastore = self.outputs.get("DatastoreId")
        found: dict[str, dict[str, str]] = {}
        for image_set_id in self.ready_ids:
            arn = self.ahi.get_image_set(datastoreId=datastore, imageSetId=image_set_id).get("imageSetArn")
            tags = self.ahi.list_tags_for_resource(resourceArn=arn)["tags"] if arn else {}
            if "pipeline:version" in tags:
                found[image_set_id] = dict(tags)
        return found

    def _job_records(self) -> Counter[str]:
        """States of the completion stage's job records (``job#<id>`` items of the batch table)."""
        return self._records("job")

    def _records(self, kind: str) -> Counter[str]:
        """States of the batch table's items of one ``kind`` (``job``, ``imageset``)."""
        table = self.outputs.get("BatchTableName")
        states: Counter[str] = Counter()
        if not table:
            return states
        for page in self.dynamodb.get_paginator("scan").paginate(TableName=table):
            for item in page["Items"]:
                if item.get("kind", {}).get("S") == kind:
                    states[item.get("state", {}).get("S", "?")] += 1
        return states

    def _batch_states(self) -> Counter[str]:
        return Counter(str(item.get("state", "?")) for item in self._batch_items())

    def _job_statuses(self) -> Counter[str]:
        return Counter(summary["jobStatus"] for summary in self._jobs())

    def _jobs(self) -> list[dict[str, Any]]:
        datastore = self.outputs.get("DatastoreId")
        if not datastore:
            return []
        jobs: list[dict[str, Any]] = []
        for page in self.ahi.get_paginator("list_dicom_import_jobs").paginate(datastoreId=datastore):
            jobs += page["jobSummaries"]
        return jobs

    def _batch_members(self, result: DemoResult) -> dict[str, tuple[str, str]]:
        """Staged key → (uploaded key, member status), from each batch's manifest."""
        members: dict[str, tuple[str, str]] = {}
        for item in self._batch_items():
            result.batches[str(item.get("state", "?"))] += 1
            uri = str(item.get("manifestUri", ""))
            if not uri.startswith("s3://"):
                continue
            bucket, _, key = uri.removeprefix("s3://").partition("/")
            manifest = json.loads(self.s3.get_object(Bucket=bucket, Key=key)["Body"].read())
            for member in manifest.get("members", []):
                members[member["stagedKey"]] = (member["key"], member.get("status", ""))
                if member.get("status") == "unavailable":
                    result.failures.append((member["key"], f"not staged: {member.get('reason', '?')}"))
        return members

    def _job_results(self, result: DemoResult, members: dict[str, tuple[str, str]]) -> None:
        datastore = self.outputs.get("DatastoreId")
        imported: set[str] = set()
        for summary in self._jobs():
            result.jobs[summary["jobStatus"]] += 1
            job = self.ahi.get_dicom_import_job(datastoreId=datastore, jobId=summary["jobId"])[
                "jobProperties"
            ]
            bucket, _, folder = str(job.get("outputS3Uri", "")).removeprefix("s3://").partition("/")
            with contextlib.suppress(self.s3.exceptions.NoSuchKey):
                manifest = json.loads(
                    self.s3.get_object(Bucket=bucket, Key=f"{folder}job-output-manifest.json")["Body"].read()
                )
                result.image_sets += int(manifest["jobSummary"].get("numberOfGeneratedImageSets", 0))
            for record in self._ndjson(bucket, f"{folder}SUCCESS/success.ndjson"):
                imported.add(_staged_key(record.get("inputFile", "")))
            for record in self._ndjson(bucket, f"{folder}FAILURE/failure.ndjson"):
                staged = _staged_key(record.get("inputFile", ""))
                exception = record.get("exception", {})
                reason = f"{exception.get('exceptionType', '?')}: {exception.get('message', '')}"
                result.failures.append((members.get(staged, (staged, ""))[0], reason))
            if job["jobStatus"] == "FAILED":
                result.failures.append((f"job {summary['jobId']}", str(job.get("message", "FAILED"))))
        result.imported = len(imported)
        reported = {key for key, _ in result.failures}
        for staged, (key, status) in members.items():
            if status != "unavailable" and staged not in imported and key not in reported:
                result.unaccounted.append(key)

    def _job_reports(self, result: DemoResult, members: dict[str, tuple[str, str]]) -> None:
        """What the completion stage reported for each job (its report in the output bucket)."""
        result.completion = True
        self._drain_announcements()
        result.announced = self.announced["Image Set Imported"]
        bucket = self.outputs["OutputBucketName"]
        imported: set[str] = set()
        for summary in self._jobs():
            result.jobs[summary["jobStatus"]] += 1
            key = f"reports/import-jobs/{summary['jobId']}.json"
            try:
                report = json.loads(self.s3.get_object(Bucket=bucket, Key=key)["Body"].read())
            except self.s3.exceptions.NoSuchKey:
                continue
            result.jobs_handled += 1
            result.reports.append(f"s3://{bucket}/{key}")
            result.image_sets += int(report["counts"]["imageSets"])
            imported.update(str(f["key"]) for f in report["importedFiles"])
            for failure in report["failedFiles"]:
                reason = f"{failure['exceptionType']}: {failure['message']}"
                result.failures.append((str(failure.get("key") or failure.get("stagedKey")), reason))
        result.imported = len(imported)
        reported = {key for key, _ in result.failures}
        for key, status in members.values():
            if status != "unavailable" and key not in imported and key not in reported:
                result.unaccounted.append(key)

    def _ndjson(self, bucket: str, key: str) -> Iterator[dict[str, Any]]:
        try:
            body = self.s3.get_object(Bucket=bucket, Key=key)["Body"].read().decode()
        except self.s3.exceptions.NoSuchKey:
            return
        for line in body.splitlines():
            if line.strip():
                yield json.loads(line)

    # ------------------------------------------------------------------ summary
    def _print_summary(self, items: list[Upload], result: DemoResult) -> None:
        self.say("\n== Summary")
        kinds = Counter(item.kind for item in items)
        described = ", ".join(f"{count} {kind}" for kind, count in kinds.items())
        self.say(f"   files uploaded:     {result.uploaded} ({described})")
        self.say(f"   upload events:      {result.events_handled} handled by StartImport")
        batches = ", ".join(f"{n} {state}" for state, n in sorted(result.batches.items())) or "none"
        self.say(f"   batches:            {sum(result.batches.values())} ({batches})")
        jobs = ", ".join(f"{n} {status}" for status, n in sorted(result.jobs.items())) or "none"
        self.say(f"   import jobs:        {sum(result.jobs.values())} ({jobs})")
        self.say(f"   imported:           {result.imported} files into {result.image_sets} image sets")
        if result.completion:
            self.say(
                f"   job reports:        {result.jobs_handled} of {sum(result.jobs.values())} jobs "
                f"reported by ImportCompleted"
            )
            for uri in result.reports:
                self.say(f"     {uri}")
            self.say(
                f"   announced:          {result.announced} Image Set Imported event(s) on the pipeline bus, "
                f"{self.announced['Import Files Failed']} Import Files Failed"
            )
        if result.deidentification:
            states = ", ".join(f"{n} {state}" for state, n in sorted(result.deidentification.items()))
            self.say(f"   de-identification:  {sum(result.deidentification.values())} image sets ({states})")
            self.say(
                f"   ready:              {result.ready} Image Set Ready event(s); reports under "
                f"s3://{self.outputs['OutputBucketName']}/reports/deidentification/"
            )
        if result.tags:
            self.say(f"   tagged:             {len(result.tags)} image sets, for example:")
            image_set_id, tags = sorted(result.tags.items())[0]
            shown = ", ".join(f"{k}={v}" for k, v in sorted(tags.items()) if not k.endswith(("job", "batch")))
            self.say(f"     {image_set_id}: {shown}")
        if result.thumbnails:
            sheets = sum(len(s.get("contactSheets", [])) for s in result.thumbnails.values())
            frames = [s["thumbnail"]["frame"] for s in result.thumbnails.values()]
            read = sum(f["bytesRead"] for f in frames)
            total = sum(f["frameBytes"] or f["bytesRead"] for f in frames)
            checked = sum(1 for f in frames if f["checksum"]["verified"])
            self.say(
                f"   thumbnails:         {len(result.thumbnails)} image sets, {sheets} contact sheet(s); "
                f"{read:,} of {total:,} frame bytes read ({read / max(total, 1):.0%}); "
                f"{checked} of {len(frames)} levels checksummed"
            )
            if result.contact_page is not None:
                self.say(f"     contact page: {result.contact_page}")
        skipped = ", ".join(f"{reason} ×{n}" for reason, n in result.skipped.items())
        self.say(
            f"   not batched:        {result.not_batched}" + (f" (skipped: {skipped})" if skipped else "")
        )
        self.say(f"   failures:           {len(result.failures)}")
        for key, reason in result.failures:
            self.say(f"     {key}: {reason}")
        self.say(f"   dead-letter queues: {result.dead_letters} message(s)")
        for key in result.unaccounted:
            self.say(f"   LOST: {key} is in a batch but neither imported nor reported")
        self.say("   " + ("every upload is accounted for" if result.ok else "SOMETHING WAS LOST (see above)"))


def write_contact_page(output_dir: Path, sidecars: dict[str, dict[str, Any]]) -> Path:
    """``index.html`` showing each image set's thumbnail and contact sheets (ids and numbers only)."""
    cards = []
    for image_set_id, sidecar in sorted(sidecars.items()):
        thumbnail = sidecar["thumbnail"]
        frame = thumbnail["frame"]
        level = frame["level"]
        series = thumbnail.get("series") or {}
        folder = f"thumbnails/{html.escape(image_set_id)}"
        fraction = frame["bytesRead"] / frame["frameBytes"] if frame.get("frameBytes") else 1.0
        facts = (
            f"{html.escape(str(series.get('modality') or '?'))} · {thumbnail['width']}×{thumbnail['height']}"
            f" from level {level['width']}×{level['height']} of {frame['fullSize']['width']}×"
            f"{frame['fullSize']['height']} · {fraction:.0%} of the frame read"
        )
        sheets = "".join(
            f'<figure class="sheet"><img src="{folder}/{html.escape(s["key"].rsplit("/", 1)[-1])}" '
            f'alt="contact sheet {n}" width="{s["width"]}" height="{s["height"]}">'
            f"<figcaption>series {html.escape(str(s['series'].get('seriesNumber') or '?'))}: "
            f"{len(s['tiles'])} of {s['series']['instances']} instances</figcaption></figure>"
            for n, s in enumerate(sidecar.get("contactSheets", []), start=1)
        )
        cards.append(
            f'<section class="image-set"><h2>{html.escape(image_set_id)}</h2>'
            f'<figure><img src="{folder}/thumbnail.png" alt="thumbnail of {html.escape(image_set_id)}" '
            f'width="{thumbnail["width"]}" height="{thumbnail["height"]}"><figcaption>{facts}</figcaption>'
            f"</figure>{sheets}</section>"
        )
    page = (
        '<!doctype html>\n<html lang="en"><head><meta charset="utf-8">'
        "<title>HealthImaging automation: thumbnails</title><style>"
        "body{font-family:system-ui,sans-serif;background:#111;color:#ddd;margin:2rem}"
        "section{display:flex;flex-wrap:wrap;gap:1rem;align-items:flex-start;margin-bottom:2rem}"
        "h2{flex-basis:100%;font:600 0.9rem monospace;margin:0}figure{margin:0}"
        "figcaption{font-size:0.8rem;color:#aaa;max-width:32rem}img{background:#000;display:block}"
        "</style></head><body>"
        f"<h1>{len(sidecars)} image sets</h1>{''.join(cards)}</body></html>\n"
    )
    output_dir.mkdir(parents=True, exist_ok=True)
    path = output_dir / "index.html"
    path.write_text(page, encoding="utf-8")
    return path.resolve()


def _staged_key(input_file: str) -> str:
    """A job's ``inputFile`` (``s3://bucket/key`` or ``key``) as a key."""
    if input_file.startswith("s3://"):
        return input_file.removeprefix("s3://").partition("/")[2]
    return input_file


def _skip_reasons(function_log: Path | None) -> Counter[str]:
    """Reasons StartImport logged for the uploads it skipped (its JSON log lines)."""
    reasons: Counter[str] = Counter()
    if function_log is None or not function_log.exists():
        return reasons
    for line in function_log.read_text(encoding="utf-8", errors="replace").splitlines():
        with contextlib.suppress(ValueError):
            record = json.loads(line)
            if isinstance(record, dict) and record.get("message") == "upload skipped":
                reasons[str(record.get("reason", "?"))] += 1
    return reasons


def _throttled(function: Any, interval: float) -> Any:
    last = [0.0]

    def call(reason: str | None) -> None:
        now = time.monotonic()
        if now - last[0] >= interval:
            last[0] = now
            function(reason)

    return call


def run(
    *,
    dicom_dir: Path | None = None,
    template: Path = Path("template.yaml"),
    data_dir: Path = Path(".local/demo"),
    output_dir: Path | None = Path("demo-output"),
    parameters: dict[str, str] | None = None,
    port: int = 0,
    throttling: bool = False,
    time_scale: float = 1.0,
    timeout: float = 600.0,
    out: TextIO | None = None,
    tty: bool | None = None,
) -> int:
    """The whole demo; 0 when every upload is accounted for."""
    out = out or sys.stdout
    items = uploads(dicom_dir)
    if not items:
        print(f"no files under {dicom_dir}", file=out)
        return 2
    function_log = data_dir / "functions.log"
    data_dir.mkdir(parents=True, exist_ok=True)
    function_log.write_text("")
    overrides = _demo_parameters(template, parameters or {})
    print(f"== Local stack from {template}", file=out, flush=True)
    started = time.monotonic()
    with LocalStack(
        template,
        port=port,
        parameters=overrides,
        data_dir=data_dir,
        throttling=throttling,
        time_scale=time_scale,
        function_log=function_log,
        outputs_file=data_dir / "outputs.json",
    ) as stack:
        print(
            f"   stack {stack.stack_name} on {stack.endpoint_url}: {len(stack.resources)} resources, "
            f"{len(stack.functions)} function(s), started in {time.monotonic() - started:.1f} s",
            file=out,
            flush=True,
        )
        if overrides:
            print("   parameters: " + ", ".join(f"{k}={v}" for k, v in overrides.items()), file=out)
        demo = Demo(stack, out, tty=tty)
        demo.subscribe()
        demo.upload(items)
        demo.follow(expected_events=len(items), timeout=timeout)
        result = demo.summarize(items, function_log, output_dir)
    print(f"\nFunction logs: {function_log}", file=out)
    if result.contact_page is not None:
        print(f"Thumbnails: open {result.contact_page}", file=out)
    return 0 if result.ok else 1


def _demo_parameters(template: Path, given: dict[str, str]) -> dict[str, str]:
    from local.template import load_template  # noqa: PLC0415 - only to see which parameters exist

    declared = load_template(template).parameters
    chosen = {name: value for name, value in DEMO_PARAMETERS.items() if name in declared}
    return chosen | given


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="python -m local.demo", description=__doc__.splitlines()[0] if __doc__ else None
    )
    parser.add_argument(
        "--dicom-dir",
        type=Path,
        default=Path(os.environ["DICOM_DIR"]) if os.environ.get("DICOM_DIR") else None,
        help="upload every file under this folder, recursively (default: DICOM_DIR, else bundled samples)",
    )
    parser.add_argument("--template", type=Path, default=Path("template.yaml"))
    parser.add_argument("--data-dir", type=Path, default=Path(".local/demo"))
    parser.add_argument(
        "--output-dir",
        type=Path,
        default=Path("demo-output"),
        help="where the thumbnails and their contact page (index.html) are written",
    )
    parser.add_argument("-p", "--parameter", action="append", default=[], metavar="KEY=VALUE")
    parser.add_argument("--port", type=int, default=0, help="the endpoint's port (0: any free one)")
    parser.add_argument("--throttling", action="store_true", help="enforce HealthImaging's documented TPS")
    parser.add_argument("--time-scale", type=float, default=1.0)
    parser.add_argument("--timeout", type=float, default=600.0, help="seconds to wait for the pipeline")
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.WARNING, format="%(levelname)s %(name)s %(message)s")
    if args.dicom_dir is not None and not args.dicom_dir.is_dir():
        print(f"error: {args.dicom_dir} is not a folder", file=sys.stderr)
        return 2
    parameters = dict(pair.split("=", 1) for pair in args.parameter)
    try:
        return run(
            dicom_dir=args.dicom_dir,
            template=args.template,
            data_dir=args.data_dir,
            output_dir=args.output_dir,
            parameters=parameters,
            port=args.port,
            throttling=args.throttling,
            time_scale=args.time_scale,
            timeout=args.timeout,
        )
    except (StackError, TemplateError, TimeoutError) as error:
        print(f"error: {error}", file=sys.stderr)
        return 1


if __name__ == "__main__":
    raise SystemExit(main())

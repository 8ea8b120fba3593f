"""Event sources run the way Lambda runs them: SQS pollers, asynchronous delivery, schedules.

:class:`SqsEventSource` (an ``AWS::Lambda::EventSourceMapping`` on a queue, SAM's ``SQS`` event)
    long-polls the queue, gathers a batch until ``BatchSize`` records or ``MaximumBatchingWindowInSeconds``
    after the first record (or 6 MB), invokes the function with ``{"Records": [...]}`` in Lambda's record
    shape, then deletes: every record on success; none when the handler raises or times out; with
    ``ReportBatchItemFailures``, all but the ``batchItemFailures`` (a malformed response fails the whole
    batch, as documented).  Failed records come back after the queue's ``VisibilityTimeout``; moto moves
    a message to the dead-letter queue once it has been received ``maxReceiveCount`` times, as SQS does.
    Records filtered out by ``FilterCriteria`` are deleted without an invocation.
:class:`AsyncEventSource` (an EventBridge rule targeting the function)
    EventBridge's asynchronous invocation: the rule (matched by moto's EventBridge) targets a delivery
    queue owned by the runtime; each event is one invocation, retried ``MaximumRetryAttempts`` times
    (default 2) after 1 and 2 minutes, then sent to the function's dead-letter queue or on-failure
    destination if it has one, else dropped with a log line.  ``Input`` and ``InputPath`` of the target
    are applied here (moto ignores them for queue targets).
:class:`ScheduleSource` (a rule with a ``ScheduleExpression``, SAM's ``Schedule``)
    fires ``Scheduled Event`` events to the rule's targets on a virtual clock that runs ``time_scale``
    times faster than the wall clock (the first ``rate`` firing is one period after start).

Every invocation is recorded as a :class:`Delivery` so tests can count them.
"""

from __future__ import annotations

import base64
import contextlib
import json
import logging
import math
import threading
import time
import uuid
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from typing import Any, Final

from botocore.exceptions import BotoCoreError, ClientError

from local.functions import LocalFunction
from local.schedule import Schedule

__all__ = [
    "AsyncEventSource",
    "Delivery",
    "DeliveryLog",
    "EventSource",
    "ScheduleSource",
    "SqsEventSource",
    "batch_failures",
    "json_path",
    "sqs_record",
]

log = logging.getLogger(__name__)

#: Lambda's synchronous invocation payload limit.
_PAYLOAD_LIMIT: Final = 6 * 1024 * 1024
#: Lambda's asynchronous retry delays (before the first and the second retry), in seconds.
_ASYNC_RETRY_DELAYS: Final = (60, 120)
_POLL_ERRORS: Final = (ClientError, BotoCoreError, OSError)


@dataclass(frozen=True)
class Delivery:
    """One invocation made by an event source."""

    function: str
    source: str
    message_ids: tuple[str, ...]
    failed_ids: tuple[str, ...]
    ok: bool
    error_type: str | None
    #: When ReceiveMessage returned the earliest of its records (``time.monotonic()``): the queue's
    #: visibility timeout runs from (just before) here, so retries of a failed record are about that
    #: far apart by this clock (not by ``started``, which a batching window or a slow machine delays).
    received: float
    started: float
    duration: float


@dataclass
class DeliveryLog:
    """Every delivery, in order (thread-safe)."""

    entries: list[Delivery] = field(default_factory=list)
    _lock: threading.Lock = field(default_factory=threading.Lock)

    def add(self, delivery: Delivery) -> None:
        with self._lock:
            self.entries.append(delivery)

    def snapshot(self) -> list[Delivery]:
        with self._lock:
            return list(self.entries)


# ---------------------------------------------------------------------- pure helpers
def sqs_record(message: Mapping[str, Any], *, queue_arn: str, region: str) -> dict[str, Any]:
    """A received SQS message as Lambda passes it in ``Records``."""
    attributes = {
        key: value
        for key, value in (message.get("Attributes") or {}).items()
        if key
        in (
            "ApproximateReceiveCount",
            "SentTimestamp",
            "SenderId",
            "ApproximateFirstReceiveTimestamp",
            "SequenceNumber",
            "MessageGroupId",
            "MessageDeduplicationId",
            "AWSTraceHeader",
            "DeadLetterQueueSourceArn",
        )
    }
    message_attributes = {
        name: {
            "stringValue": value.get("StringValue"),
            "binaryValue": _base64(value.get("BinaryValue")),
            "stringListValues": list(value.get("StringListValues") or []),
            "binaryListValues": [_base64(item) for item in value.get("BinaryListValues") or []],
            "dataType": value["DataType"],
        }
        for name, value in (message.get("MessageAttributes") or {}).items()
    }
    record: dict[str, Any] = {
        "messageId": message["MessageId"],
        "receiptHandle": message["ReceiptHandle"],
        "body": message["Body"],
        "attributes": attributes,
        "messageAttributes": message_attributes,
        "md5OfBody": message.get("MD5OfBody"),
        "eventSource": "aws:sqs",
        "eventSourceARN": queue_arn,
        "awsRegion": region,
    }
    if "MD5OfMessageAttributes" in message:
        record["md5OfMessageAttributes"] = message["MD5OfMessageAttributes"]
    return record


def _base64(value: Any) -> str | None:
    if value is None:
        return None
    return base64.b64encode(value).decode() if isinstance(value, bytes) else str(value)


def batch_failures(response: Any, message_ids: list[str]) -> set[str] | None:
    """The message ids a partial batch response reports as failed; None when the whole batch failed.

    Complete success: no response, an empty or null ``batchItemFailures``.  Complete failure: an
    entry that is not an object, or whose ``itemIdentifier`` is missing, empty, null or not in the
    batch (Lambda developer guide, "Reporting batch item failures").
    """
    if not isinstance(response, dict):
        return set()
    failures = response.get("batchItemFailures")
    if not failures:
        return set()
    if not isinstance(failures, list):
        return None
    known = set(message_ids)
    failed: set[str] = set()
    for entry in failures:
        identifier = entry.get("itemIdentifier") if isinstance(entry, dict) else None
        if not isinstance(identifier, str) or identifier not in known:
            return None
        failed.add(identifier)
    return failed


def json_path(event: Any, path: str) -> Any:
    """The value at a simple JSONPath (``$``, ``$.detail``, ``$.detail.object.key``) of ``event``."""
    if path in ("$", ""):
        return event
    value = event
    for part in path.removeprefix("$.").split("."):
        if not isinstance(value, dict) or part not in value:
            return None
        value = value[part]
    return value


def _matches(patterns: list[Any], record: Mapping[str, Any]) -> bool:
    """Lambda event filtering on an SQS record (the body is matched as JSON when it is JSON)."""
    if not patterns:
        return True
    subject = dict(record)
    with contextlib.suppress(TypeError, ValueError):
        subject["body"] = json.loads(record["body"])
    return any(pattern.matches_event(subject) for pattern in patterns)


# ---------------------------------------------------------------------- sources
class EventSource(threading.Thread):
    """A background poller that stops when asked."""

    def __init__(self, name: str) -> None:
        super().__init__(name=name, daemon=True)
        self._stopping = threading.Event()
        self.busy = False

    def stop(self) -> None:
        self._stopping.set()

    @property
    def stopping(self) -> bool:
        return self._stopping.is_set()

    def run(self) -> None:
        while not self.stopping:
            try:
                self.poll()
            except _POLL_ERRORS as error:
                if self._stopping.is_set():
                    break
                log.warning("%s: %s; retrying in 1 s", self.name, error)
                self._stopping.wait(1.0)
            except Exception:  # keep the poller alive whatever happens, like Lambda's
                log.exception("%s: unexpected error; retrying in 1 s", self.name)
                self._stopping.wait(1.0)
            finally:
                self.busy = False

    def poll(self) -> None:
        raise NotImplementedError


class SqsEventSource(EventSource):
    """An SQS event source mapping."""

    def __init__(
        self,
        function: LocalFunction,
        *,
        sqs: Any,
        queue_url: str,
        queue_arn: str,
        batch_size: int = 10,
        batching_window: float = 0.0,
        report_failures: bool = False,
        filters: list[Any] | None = None,
        deliveries: DeliveryLog,
        name: str | None = None,
    ) -> None:
        super().__init__(name or f"sqs:{queue_arn.rsplit(':', 1)[-1]}→{function.config.logical_id}")
        self.function = function
        self.sqs = sqs
        self.queue_url = queue_url
        self.queue_arn = queue_arn
        self.batch_size = max(1, int(batch_size))
        self.batching_window = max(0.0, float(batching_window))
        self.report_failures = report_failures
        self.filters = filters or []
        self.deliveries = deliveries
        self._carry: list[dict[str, Any]] = []
        self._received: dict[str, float] = {}
        #: When the latest ReceiveMessage call was made (``time.monotonic()``; 0 before the first).
        self.receive_started = 0.0

    def poll(self) -> None:
        batch = self._gather()
        if batch and not self.stopping:
            self._process(batch)

    def _receive(self, count: int, wait: int) -> list[dict[str, Any]]:
        self.receive_started = time.monotonic()
        response = self.sqs.receive_message(
            QueueUrl=self.queue_url,
            MaxNumberOfMessages=max(1, min(10, count)),
            WaitTimeSeconds=wait,
            AttributeNames=["All"],
            MessageAttributeNames=["All"],
        )
        messages: list[dict[str, Any]] = response.get("Messages", [])
        now = time.monotonic()
        for message in messages:
            self._received[message["MessageId"]] = now
        return messages

    def _gather(self) -> list[dict[str, Any]]:
        batch, self._carry = self._carry, []
        size = sum(len(m["Body"]) for m in batch)
        window_ends = time.monotonic() + self.batching_window if batch else math.inf
        while len(batch) < self.batch_size and not self.stopping:
            if batch and (self.batching_window == 0 or time.monotonic() >= window_ends):
                break
            remaining = window_ends - time.monotonic()
            wait = 1 if not batch or remaining >= 1 else 0
            received = self._receive(self.batch_size - len(batch), wait)
            if received:
                self.busy = True
                if not batch:
                    window_ends = time.monotonic() + self.batching_window
            elif wait == 0:
                self._stopping.wait(min(0.05, max(0.0, remaining)))
            for message in received:
                if size + len(message["Body"]) > _PAYLOAD_LIMIT and batch:
                    self._carry.append(message)
                    continue
                size += len(message["Body"])
                batch.append(message)
            if self._carry:
                break
        return batch

    def _process(self, messages: list[dict[str, Any]]) -> None:
        self.busy = True
        records = [
            sqs_record(m, queue_arn=self.queue_arn, region=self.function.config.region) for m in messages
        ]
        received = min(self._received.pop(record["messageId"], time.monotonic()) for record in records)
        kept = [record for record in records if _matches(self.filters, record)]
        dropped = [record for record in records if record not in kept]
        if dropped:
            self._delete_records(dropped)
        if not kept:
            return
        ids = [record["messageId"] for record in kept]
        started = time.monotonic()
        outcome = self.function.invoke({"Records": kept})
        failed: set[str] = set()
        if not outcome.ok:
            failed = set(ids)
        elif self.report_failures:
            reported = batch_failures(outcome.response, ids)
            if reported is None:
                log.warning(
                    "%s: malformed batchItemFailures response; the whole batch failed",
                    self.function.config.logical_id,
                )
            failed = set(ids) if reported is None else reported
        self._delete_records([record for record in kept if record["messageId"] not in failed])
        self.deliveries.add(
            Delivery(
                function=self.function.config.logical_id,
                source=self.queue_arn,
                message_ids=tuple(ids),
                failed_ids=tuple(i for i in ids if i in failed),
                ok=outcome.ok,
                error_type=outcome.error_type,
                received=received,
                started=started,
                duration=outcome.duration,
            )
        )
        log.info(
            "%s ← %d record(s) from %s: %s",
            self.function.config.logical_id,
            len(ids),
            self.queue_arn.rsplit(":", 1)[-1],
            "ok" if not failed else f"{len(failed)} failed ({outcome.error_type or 'batchItemFailures'})",
        )

    def _delete_records(self, records: list[dict[str, Any]]) -> None:
        for start in range(0, len(records), 10):
            chunk = records[start : start + 10]
            entries = [{"Id": str(i), "ReceiptHandle": r["receiptHandle"]} for i, r in enumerate(chunk)]
            response = self.sqs.delete_message_batch(QueueUrl=self.queue_url, Entries=entries)
            for failure in response.get("Failed", []):
                log.warning("%s: could not delete a message: %s", self.name, failure.get("Code"))


@dataclass(frozen=True)
class AsyncTarget:
    """How a rule's target delivers to a function: its delivery queue and the target's input settings."""

    queue_url: str
    queue_arn: str
    input: str | None = None
    input_path: str | None = None


class AsyncEventSource(EventSource):
    """Asynchronous invocations from one delivery queue (one EventBridge target)."""

    def __init__(
        self,
        function: LocalFunction,
        target: AsyncTarget,
        *,
        sqs: Any,
        deliveries: DeliveryLog,
        time_scale: float = 1.0,
        maximum_retry_attempts: int = 2,
        maximum_event_age: float = 21600.0,
        on_failure_queue_url: str | None = None,
        name: str | None = None,
    ) -> None:
        super().__init__(name or f"async:{target.queue_arn.rsplit(':', 1)[-1]}")
        self.function = function
        self.target = target
        self.sqs = sqs
        self.deliveries = deliveries
        self.time_scale = max(time_scale, 1e-9)
        self.maximum_retry_attempts = maximum_retry_attempts
        self.maximum_event_age = maximum_event_age
        self.on_failure_queue_url = on_failure_queue_url

    def payload(self, event: Any) -> Any:
        if self.target.input is not None:
            return json.loads(self.target.input)
        if self.target.input_path is not None:
            return json_path(event, self.target.input_path)
        return event

    def poll(self) -> None:
        response = self.sqs.receive_message(
            QueueUrl=self.target.queue_url, MaxNumberOfMessages=10, WaitTimeSeconds=1, AttributeNames=["All"]
        )
        received = time.monotonic()
        for message in response.get("Messages", []):
            if self.stopping:
                return
            self.busy = True
            self._deliver(message, received)

    def _deliver(self, message: dict[str, Any], received: float) -> None:
        attempt = int(message["Attributes"].get("ApproximateReceiveCount", "1"))
        sent = int(message["Attributes"].get("SentTimestamp", "0")) / 1000
        age = (time.time() - sent) * self.time_scale
        event = json.loads(message["Body"])
        if age > self.maximum_event_age:
            self._give_up(message, event, "event older than MaximumEventAgeInSeconds")
            return
        started = time.monotonic()
        outcome = self.function.invoke(self.payload(event))
        self.deliveries.add(
            Delivery(
                function=self.function.config.logical_id,
                source=self.target.queue_arn,
                message_ids=(message["MessageId"],),
                failed_ids=() if outcome.ok else (message["MessageId"],),
                ok=outcome.ok,
                error_type=outcome.error_type,
                received=received,
                started=started,
                duration=outcome.duration,
            )
        )
        if outcome.ok:
            self.sqs.delete_message(QueueUrl=self.target.queue_url, ReceiptHandle=message["ReceiptHandle"])
        elif attempt <= self.maximum_retry_attempts:
            delay = _ASYNC_RETRY_DELAYS[min(attempt, len(_ASYNC_RETRY_DELAYS)) - 1] / self.time_scale
            self.sqs.change_message_visibility(
                QueueUrl=self.target.queue_url,
                ReceiptHandle=message["ReceiptHandle"],
                VisibilityTimeout=max(0, math.ceil(delay)),
            )
        else:
            self._give_up(message, event, f"{outcome.error_type} after {attempt} attempt(s)")

    def _give_up(self, message: dict[str, Any], event: Any, reason: str) -> None:
        if self.on_failure_queue_url:
            self.sqs.send_message(
                QueueUrl=self.on_failure_queue_url,
                MessageBody=json.dumps(event),
                MessageAttributes={
                    "ErrorMessage": {"DataType": "String", "StringValue": reason},
                    "RequestID": {"DataType": "String", "StringValue": str(uuid.uuid4())},
                },
            )
            log.warning(
                "%s: event sent to the dead-letter queue: %s", self.function.config.logical_id, reason
            )
        else:
            log.warning("%s: event dropped: %s", self.function.config.logical_id, reason)
        self.sqs.delete_message(QueueUrl=self.target.queue_url, ReceiptHandle=message["ReceiptHandle"])


@dataclass(frozen=True)
class ScheduledTarget:
    """A rule target as stored in EventBridge, resolved to a queue URL to send to."""

    queue_url: str
    input: str | None = None
    input_path: str | None = None


class VirtualClock:
    """Wall-clock time running ``scale`` times faster from the moment it is made."""

    def __init__(self, scale: float = 1.0) -> None:
        self.scale = max(scale, 1e-9)
        self._wall = datetime.now(UTC)
        self._mono = time.monotonic()

    def now(self) -> datetime:
        return self._wall + timedelta(seconds=(time.monotonic() - self._mono) * self.scale)

    def seconds_until(self, moment: datetime) -> float:
        return (moment - self.now()).total_seconds() / self.scale


class ScheduleSource(EventSource):
    """Fires a scheduled rule's ``Scheduled Event`` to its targets."""

    def __init__(
        self,
        *,
        rule_arn: str,
        schedule: Schedule,
        targets: list[ScheduledTarget],
        sqs: Any,
        account_id: str,
        region: str,
        clock: VirtualClock,
        on_fire: Callable[[], None] | None = None,
    ) -> None:
        super().__init__(f"schedule:{rule_arn.rsplit('/', 1)[-1]}")
        self.rule_arn = rule_arn
        self.schedule = schedule
        self.targets = targets
        self.sqs = sqs
        self.account_id = account_id
        self.region = region
        self.clock = clock
        self.on_fire = on_fire
        self._next: datetime | None = schedule.next_after(clock.now())
        self.fired = 0

    def poll(self) -> None:
        if self._next is None:
            self._stopping.wait(1.0)
            return
        wait = self.clock.seconds_until(self._next)
        if wait > 0:
            self._stopping.wait(min(wait, 1.0))
            return
        moment, self._next = self._next, self.schedule.next_after(self._next)
        event = {
            "version": "0",
            "id": str(uuid.uuid4()),
            "detail-type": "Scheduled Event",
            "source": "aws.events",
            "account": self.account_id,
            "time": moment.strftime("%Y-%m-%dT%H:%M:%SZ"),
            "region": self.region,
            "resources": [self.rule_arn],
            "detail": {},
        }
        for target in self.targets:
            if target.input is not None:
                body = target.input
            else:
                body = json.dumps(json_path(event, target.input_path or "$"))
            self.sqs.send_message(QueueUrl=target.queue_url, MessageBody=body)
        self.fired += 1
        if self.on_fire is not None:
            self.on_fire()

"""Where moto 5.2's S3 → EventBridge → SQS path differs from AWS in ways a pipeline notices, corrected.

:func:`install` patches moto in this process (idempotent):

S3 → EventBridge notifications
    moto puts an event on EventBridge for every object change in a bucket whose notification
    configuration enables EventBridge, but every event carries the same ``id``, the ETag under
    ``eTag``, ``reason`` ``ObjectCreated`` instead of the API (``PutObject``, ``CopyObject``, …), a
    constant ``sequencer`` and a ``version-id`` of ``"null"`` in unversioned buckets; it reaches the
    rules of *every* event bus; and each PutObject and CompleteMultipartUpload also raises an
    ``Object Tags Added`` event (moto stores the request's tags through its PutObjectTagging code).
    Consumers that deduplicate on the event id, or read ``etag``, would behave differently against
    AWS.  The replacement follows the documented message structure (Amazon S3 user guide,
    "EventBridge event message structure"): a fresh UUID per event from ``PutEvents``, ``etag``, an
    increasing ``sequencer``, ``version-id`` only in versioned buckets, ``reason`` and
    ``deletion-type`` as documented, tag events only for PutObjectTagging/DeleteObjectTagging, on the
    **default** bus only.  Object keys are not URL-encoded (only the SQS/SNS/Lambda notification
    format encodes them).
Rules and their queue targets
    moto delivers events to ``DISABLED`` rules and to schedule-only rules (no ``EventPattern``
    matches everything in moto); EventBridge does neither.  And moto rebuilds the event it sends to a
    queue from a template that drops ``account``, and ignores a target's ``Input`` and ``InputPath``.
    Queue targets without an ``InputTransformer`` are delivered here instead: the event exactly as
    EventBridge has it (``version``, ``id``, ``detail-type``, ``source``, ``account``, ``time`` in
    ISO 8601, ``region``, ``resources``, ``detail``), or the target's ``Input`` / ``InputPath``.
    Other targets still go through moto.
"""

from __future__ import annotations

import copy
import itertools
import json
import logging
import threading
import uuid
from collections.abc import Mapping
from datetime import UTC, datetime
from typing import Any, Final

from moto.events.models import Rule, events_backends
from moto.s3 import notifications
from moto.s3.responses import S3Response
from moto.sqs.models import sqs_backends

from local.event_sources import json_path

__all__ = ["build_detail", "eventbridge_event", "install", "rule_receives_events", "target_body"]

log = logging.getLogger(__name__)

_CREATED_REASONS: Final = {
    "s3:ObjectCreated:Put": "PutObject",
    "s3:ObjectCreated:Post": "POST Object",
    "s3:ObjectCreated:Copy": "CopyObject",
    "s3:ObjectCreated:CompleteMultipartUpload": "CompleteMultipartUpload",
}
_DELETION_TYPES: Final = {
    "s3:ObjectRemoved:Delete": ("DeleteObject", "Permanently Deleted"),
    "s3:ObjectRemoved:DeleteMarkerCreated": ("DeleteObject", "Delete Marker Created"),
    "s3:LifecycleExpiration:Delete": ("Lifecycle Expiration", "Permanently Deleted"),
    "s3:LifecycleExpiration:DeleteMarkerCreated": ("Lifecycle Expiration", "Delete Marker Created"),
}
_ENVELOPE: Final = (
    "version",
    "id",
    "detail-type",
    "source",
    "account",
    "time",
    "region",
    "resources",
    "detail",
)
_sequence = itertools.count(1)
_install_lock = threading.Lock()
_tagging_request = threading.local()


# ---------------------------------------------------------------------- pure
def build_detail(
    *,
    event_name: str,
    bucket: str,
    key: str,
    size: int,
    etag: str,
    version_id: str | None,
    sequencer: str,
    requester: str,
) -> dict[str, Any]:
    """The ``detail`` of an S3 event on EventBridge."""
    obj: dict[str, Any] = {"key": key}
    if not event_name.startswith(("s3:ObjectRemoved", "s3:LifecycleExpiration")):
        obj.update(size=size, etag=etag.strip('"'))
    if version_id:
        obj["version-id"] = version_id
    obj["sequencer"] = sequencer
    detail: dict[str, Any] = {
        "version": "0",
        "bucket": {"name": bucket},
        "object": obj,
        "request-id": uuid.uuid4().hex[:16].upper(),
        "requester": requester,
        "source-ip-address": "127.0.0.1",
    }
    if event_name in _CREATED_REASONS:
        detail["reason"] = _CREATED_REASONS[event_name]
    elif event_name in _DELETION_TYPES:
        detail["reason"], detail["deletion-type"] = _DELETION_TYPES[event_name]
    return detail


def rule_receives_events(state: str, pattern: Any) -> bool:
    """Whether EventBridge matches events against a rule at all: enabled, with an event pattern."""
    return state == "ENABLED" and bool(pattern)


def eventbridge_event(event: Mapping[str, Any]) -> dict[str, Any]:
    """The event as EventBridge delivers it: its envelope fields in order, ``time`` in ISO 8601."""
    delivered = {key: event[key] for key in _ENVELOPE if key in event}
    when = delivered.get("time")
    if isinstance(when, int | float):
        delivered["time"] = datetime.fromtimestamp(when, UTC).strftime("%Y-%m-%dT%H:%M:%SZ")
    return delivered


def target_body(target: Mapping[str, Any], event: Mapping[str, Any]) -> str:
    """What a target receives: its ``Input``, the ``InputPath`` of the event, or the event."""
    if "Input" in target:
        return str(target["Input"])
    return json.dumps(json_path(eventbridge_event(event), str(target.get("InputPath") or "$")))


# ---------------------------------------------------------------------- replacements
def _send_event_bridge_message(account_id: str, bucket: Any, event_name: Any, key: Any) -> None:
    name = str(getattr(event_name, "value", event_name))
    if name.startswith("s3:ObjectTagging") and not getattr(_tagging_request, "active", False):
        return  # moto stores a PutObject's tags through PutObjectTagging; S3 sends no tag event
    try:
        detail = build_detail(
            event_name=name,
            bucket=bucket.name,
            key=key.name,
            size=int(key.size),
            etag=str(key.etag),
            version_id=str(key.version_id) if bucket.is_versioned else None,
            sequencer=f"{next(_sequence):018X}",
            requester=account_id,
        )
        entry = {
            "Source": "aws.s3",
            "DetailType": notifications._detail_type(name),
            "Detail": json.dumps(detail),
            "Resources": [bucket.arn],
            "EventBusName": "default",
        }
        events_backends[account_id][bucket.region_name].put_events([entry])
    except Exception:  # an asynchronous side effect in AWS: never fail the S3 request
        log.exception("could not put the S3 event for s3://%s on EventBridge", bucket.name)


def _deliver_to_queue(target: Mapping[str, Any], event: Mapping[str, Any]) -> None:
    _, _, _, region, account, name = str(target["Arn"]).split(":", 5)
    group_id = (target.get("SqsParameters") or {}).get("MessageGroupId")
    sqs_backends[account][region].send_message(
        queue_name=name, message_body=target_body(target, event), group_id=group_id
    )


def _faithful(function: Any) -> Any:
    function.local_faithful = True
    return function


def install() -> None:
    """Apply the corrections to moto (idempotent, process-wide)."""
    with _install_lock:
        if not getattr(notifications._send_event_bridge_message, "local_faithful", False):
            notifications._send_event_bridge_message = _faithful(_send_event_bridge_message)
        for api in ("put_object_tagging", "delete_object_tagging"):
            handler = getattr(S3Response, api, None)
            if handler is not None and not getattr(handler, "local_faithful", False):
                setattr(S3Response, api, _faithful(_tagging_api(handler)))
        if not getattr(Rule.send_to_targets, "local_faithful", False):
            Rule.send_to_targets = _faithful(_send_to_targets(Rule.send_to_targets))  # type: ignore[method-assign]


def _tagging_api(handler: Any) -> Any:
    def tagging_api(self: Any, *args: Any, **kwargs: Any) -> Any:
        _tagging_request.active = True
        try:
            return handler(self, *args, **kwargs)
        finally:
            _tagging_request.active = False

    return tagging_api


def _send_to_targets(original: Any) -> Any:
    def send_to_targets(self: Any, original_event: Any, transform_input: bool = True) -> None:
        if not rule_receives_events(self.state, self.event_pattern.get_pattern()):
            return
        if not self.event_pattern.matches_event(original_event):
            return
        others = []
        for target in self.targets:
            if str(target["Arn"]).startswith("arn:aws:sqs:") and "InputTransformer" not in target:
                _deliver_to_queue(target, original_event)
            else:
                others.append(target)
        if others:
            clone = copy.copy(self)
            clone.targets = others
            original(clone, original_event, transform_input)

    return send_to_targets

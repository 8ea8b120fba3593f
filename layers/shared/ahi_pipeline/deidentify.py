"""The de-identification stage (Deidentify): "Image Set Imported" → de-identified, verified, purged, Ready.

For each imported image set, :func:`deidentify_image_set`

1. acknowledges events of another data store and image sets already finished (their record is final);
   with de-identification disabled, announces the image set Ready with status ``skipped``;
2. under Powertools idempotency (key: the image set id), records the attempt and the version it
   starts from (the event's ``imageSetVersion``, else the latest; a retry keeps the first one), reads
   that version's metadata: the **original** values every replacement derives from;
3. loops: GetImageSet (the latest version id) and GetImageSetMetadata, :func:`~ahi_pipeline.deid_plan.plan`,
   one UpdateImageSetMetadata with the plan's first payload (``latestVersionId`` chained, waiting for
   ACTIVE); a ConflictException re-reads and re-plans; throttling backs off in the gateway;
4. verifies the latest metadata: an empty plan (every planned action took effect) and no identifying
   value of the original anywhere in the document;
5. purges the history (on by default): CopyImageSet of the verified version into a new image set,
   the same checks on the copy (one version only), then DeleteImageSet of the original;
6. writes a report (actions by type, attributes that could not be changed, versions, calls; no PHI)
   and announces "Image Set Ready" with the final and the source image set ids.

When de-identification cannot complete (BurnedInAnnotation YES, an update the service refuses, a
verification that finds an identifying value), the image set is recorded FAILED, tagged
``pipeline:deidentification=failed``, reported, counted (``DeidentificationFailed``, which an alarm
watches) and not announced; the message is acknowledged, since retrying cannot help.  Transient errors
raise and the message is retried, then dead-lettered.
"""

from __future__ import annotations

import json
import time
from collections import Counter
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import TYPE_CHECKING, Any, Final

from aws_lambda_powertools.utilities.idempotency import (
    DynamoDBPersistenceLayer,
    IdempotencyConfig,
    idempotent_function,
)
from aws_lambda_powertools.utilities.idempotency.exceptions import IdempotencyAlreadyInProgressError
from aws_lambda_powertools.utilities.idempotency.persistence.base import BasePersistenceLayer

from ahi_pipeline import clients
from ahi_pipeline.batch_store import BatchStore, DeidState
from ahi_pipeline.deid_plan import identifying_values, plan, remaining_identifiers
from ahi_pipeline.deid_profile import Profile, load_profile, parse_safe_private
from ahi_pipeline.image_set_gateway import ImageSetConflict, ImageSetGateway, WriteFailed
from ahi_pipeline.observability import count, logger, tracer
from ahi_pipeline.pipeline_events import SOURCE, EventBusGateway, image_set_ready
from ahi_pipeline.pseudonyms import Pseudonymizer
from ahi_pipeline.runtime import per_environment
from ahi_pipeline.s3_gateway import S3Gateway
from ahi_pipeline.settings import DeidSettings, current_deid_settings

if TYPE_CHECKING:
    from aws_lambda_powertools.utilities.data_classes.sqs_event import SQSRecord
    from aws_lambda_powertools.utilities.typing import LambdaContext

__all__ = [
    "DeidOutcome",
    "DeidServices",
    "ImageSetEvent",
    "ImageSetEventError",
    "RetryLater",
    "deid_services",
    "deidentify_image_set",
    "handle_image_set_message",
    "parse_image_set_event",
]

STATUS_TAG: Final = "pipeline:deidentification"
REPORT_SCHEMA_VERSION: Final = 1
IDEMPOTENCY_SECONDS: Final = 24 * 3600
#: Most update rounds per image set before giving up (a plan shrinks at every round it is applied).
MAX_ROUNDS: Final = 400


class Metric:
    IMAGE_SETS_DEIDENTIFIED: Final = "ImageSetsDeidentified"
    IMAGE_SETS_SKIPPED: Final = "ImageSetsDeidentificationSkipped"
    DEID_FAILED: Final = "DeidentificationFailed"
    UPDATES: Final = "MetadataUpdates"
    CONFLICTS: Final = "MetadataUpdateConflicts"


class ImageSetEventError(ValueError):
    """A message that is not an "Image Set Imported" event (a poison message)."""


class RetryLater(RuntimeError):  # noqa: N818 - names what happens to the message
    """Another invocation is de-identifying the image set."""


@dataclass(frozen=True, slots=True)
class ImageSetEvent:
    datastore_id: str
    image_set_id: str
    job_id: str | None
    batch_id: str | None
    version: str | None


def parse_image_set_event(body: Any) -> ImageSetEvent:
    """The "Image Set Imported" event in an SQS message body.

    Raises
    ------
    ImageSetEventError
        For anything else.
    """
    if isinstance(body, str | bytes):
        try:
            body = json.loads(body)
        except ValueError:
            raise ImageSetEventError("the message is not JSON") from None
    if not isinstance(body, Mapping) or body.get("source") != SOURCE:
        raise ImageSetEventError("the message is not an event of the pipeline")
    if body.get("detail-type") != "Image Set Imported":
        raise ImageSetEventError(f"unexpected detail-type {body.get('detail-type')!r}")
    detail = body.get("detail")
    if not isinstance(detail, Mapping):
        raise ImageSetEventError("the event has no detail object")
    datastore_id, image_set_id = detail.get("datastoreId"), detail.get("imageSetId")
    for name, value in (("datastoreId", datastore_id), ("imageSetId", image_set_id)):
        if not isinstance(value, str) or len(value) != 32 or not value.isalnum():
            raise ImageSetEventError(f"detail.{name} is missing or not an id")
    version = detail.get("imageSetVersion")
    return ImageSetEvent(
        str(datastore_id),
        str(image_set_id),
        detail.get("importJobId"),
        detail.get("batchId"),
        str(version) if version is not None else None,
    )


@dataclass(frozen=True)
class DeidServices:
    imaging: ImageSetGateway
    s3: S3Gateway
    bus: EventBusGateway
    records: BatchStore
    key: Callable[[], str]
    idempotency: BasePersistenceLayer | None = None
    now: Callable[[], datetime] = field(default=lambda: datetime.now(UTC))


@per_environment
def deid_services(settings: DeidSettings) -> DeidServices:
    """The stage's gateways on boto3 clients; the key is read through Powertools parameters (cached 5 min)."""

    from aws_lambda_powertools.utilities.parameters import SecretsProvider  # noqa: PLC0415 - lazily

    # A provider of our own, on the environment's client (Powertools' default provider would keep the
    # first client it made, whatever endpoint the environment names later).
    provider = SecretsProvider(boto3_client=clients.secrets_manager())

    def key() -> str:
        secret = provider.get(settings.key_secret_arn, max_age=300)
        if isinstance(secret, bytes):
            return secret.decode()
        if not isinstance(secret, str):
            raise TypeError("the de-identification key secret holds no text")
        return secret

    return DeidServices(
        imaging=ImageSetGateway(clients.medical_imaging()),
        s3=S3Gateway(clients.s3()),
        bus=EventBusGateway(clients.events()),
        records=BatchStore(clients.dynamodb(), settings.batch_table),
        key=key,
        idempotency=DynamoDBPersistenceLayer(
            table_name=settings.idempotency_table, boto3_client=clients.dynamodb()
        ),
    )


@dataclass(frozen=True, slots=True)
class DeidOutcome:
    image_set_id: str
    action: str  # deidentified, skipped, failed, duplicate, other-datastore
    final_image_set_id: str | None = None
    reason: str | None = None
    report_uri: str | None = None

    def as_dict(self) -> dict[str, Any]:
        return {
            "imageSetId": self.image_set_id,
            "action": self.action,
            "finalImageSetId": self.final_image_set_id,
            "reason": self.reason,
            "reportUri": self.report_uri,
        }


def handle_image_set_message(
    record: SQSRecord, lambda_context: LambdaContext | None = None
) -> dict[str, Any]:
    """Powertools' SQS record handler: one DeidentifyQueue message → :func:`deidentify_image_set`."""
    settings = current_deid_settings()
    try:
        event = parse_image_set_event(record.body)
    except ImageSetEventError as error:
        logger.error("poison image set event", extra={"message_id": record.message_id, "reason": str(error)})
        raise
    return deidentify_image_set(
        event, settings=settings, services=deid_services(settings), lambda_context=lambda_context
    ).as_dict()


@tracer.capture_method(capture_response=False)
def deidentify_image_set(
    event: ImageSetEvent,
    *,
    settings: DeidSettings,
    services: DeidServices,
    lambda_context: LambdaContext | None = None,
) -> DeidOutcome:
    """De-identify one imported image set, exactly once (see the module docstring)."""
    tracer.put_annotation("image_set_id", event.image_set_id)
    if event.datastore_id != settings.datastore_id:
        logger.warning(
            "image set event of another data store ignored", extra={"image_set_id": event.image_set_id}
        )
        return DeidOutcome(event.image_set_id, "other-datastore")
    known = services.records.deid_record(event.image_set_id)
    if known is not None and known.state.final:
        return DeidOutcome(
            event.image_set_id, "duplicate", known.final_image_set_id, report_uri=known.report_uri
        )
    profile = load_profile(settings.options, safe_private=parse_safe_private(settings.safe_private))
    if not settings.enabled:
        return _skip(event, profile, settings, services)
    runner: Callable[..., dict[str, Any]] = _run
    if services.idempotency is not None:
        config = IdempotencyConfig(
            event_key_jmespath="imageSetId",
            raise_on_no_idempotency_key=True,
            expires_after_seconds=IDEMPOTENCY_SECONDS,
        )
        if lambda_context is not None:
            config.register_lambda_context(lambda_context)
        runner = idempotent_function(
            _run, data_keyword_argument="image_set_key", persistence_store=services.idempotency, config=config
        )
    try:
        result = runner(
            image_set_key={"imageSetId": event.image_set_id},
            event=event,
            profile=profile,
            settings=settings,
            services=services,
        )
    except IdempotencyAlreadyInProgressError:
        raise RetryLater(f"image set {event.image_set_id} is being de-identified elsewhere") from None
    return DeidOutcome(
        event.image_set_id,
        result["action"],
        result.get("finalImageSetId"),
        result.get("reason"),
        result.get("reportUri"),
    )


def _profile_detail(profile: Profile) -> dict[str, Any]:
    return {"edition": profile.edition, "options": sorted(o.value for o in profile.options)}


def _skip(
    event: ImageSetEvent, profile: Profile, settings: DeidSettings, services: DeidServices
) -> DeidOutcome:
    services.bus.put(
        [
            image_set_ready(
                bus=settings.event_bus_name,
                datastore_id=event.datastore_id,
                image_set_id=event.image_set_id,
                source_image_set_id=event.image_set_id,
                job_id=event.job_id,
                batch_id=event.batch_id,
                status="skipped",
                profile=_profile_detail(profile),
            )
        ]
    )
    services.records.finish_deid(
        event.image_set_id, state=DeidState.SKIPPED, final_image_set_id=event.image_set_id, report_uri=None
    )
    count(Metric.IMAGE_SETS_SKIPPED)
    return DeidOutcome(event.image_set_id, "skipped", event.image_set_id)


@dataclass
class _Progress:
    """What one image set's de-identification did, for its report."""

    actions: Counter[str] = field(default_factory=Counter)
    unchangeable: list[str] = field(default_factory=list)
    versions_created: int = 0
    conflicts: int = 0
    rounds: int = 0
    payload_bytes: int = 0
    calls_before: Counter[str] = field(default_factory=Counter)
    produced: frozenset[str] = frozenset()


class _Failed(Exception):  # noqa: N818 - control flow inside _run
    def __init__(self, reason: str) -> None:
        super().__init__(reason)
        self.reason = reason


@tracer.capture_method(capture_response=False)
def _run(
    *,
    image_set_key: dict[str, str],
    event: ImageSetEvent,
    profile: Profile,
    settings: DeidSettings,
    services: DeidServices,
) -> dict[str, Any]:
    ds, image_set_id = event.datastore_id, event.image_set_id
    imaging, records = services.imaging, services.records
    started = time.monotonic()
    calls_before = Counter(imaging.calls)
    current = imaging.image_set_or_none(ds, image_set_id)
    final = records.begin_deid(
        image_set_id, start_version=event.version or (current.version_id if current else "1")
    )
    if final is not None:
        return {
            "action": "duplicate",
            "finalImageSetId": final.final_image_set_id,
            "reportUri": final.report_uri,
        }
    record = records.deid_record(image_set_id)
    if record is None or record.start_version is None:
        raise RuntimeError(f"the record of image set {image_set_id} vanished")
    progress = _Progress(calls_before=calls_before)
    report_uri = f"s3://{settings.output_bucket}/{settings.report_key(image_set_id)}"
    try:
        gone = current is None or current.state == "DELETED"
        if gone and record.copy_image_set_id is not None:
            final_id = record.copy_image_set_id  # purged by an attempt that stopped before finishing
        elif gone:
            raise _Failed(
                "the image set is not in the data store any more (deleted before de-identification)"
            )
        else:
            original = imaging.metadata(ds, image_set_id, record.start_version)
            pseudonyms = Pseudonymizer.from_text(services.key())
            version = _apply(ds, image_set_id, original, profile, pseudonyms, services, progress)
            final_id = image_set_id
            if settings.purge_history:
                final_id = _purge(
                    ds, image_set_id, version, original, profile, pseudonyms, services, record, progress
                )
    except _Failed as failure:
        return _fail(event, failure.reason, profile, settings, services, progress, report_uri, started)
    _write_report(event, "deidentified", final_id, None, profile, settings, services, progress, started)
    services.bus.put(
        [
            image_set_ready(
                bus=settings.event_bus_name,
                datastore_id=ds,
                image_set_id=final_id,
                source_image_set_id=image_set_id,
                job_id=event.job_id,
                batch_id=event.batch_id,
                status="deidentified",
                profile=_profile_detail(profile),
            )
        ]
    )
    records.finish_deid(
        image_set_id, state=DeidState.READY, final_image_set_id=final_id, report_uri=report_uri
    )
    count(Metric.IMAGE_SETS_DEIDENTIFIED)
    count(Metric.UPDATES, progress.versions_created)
    count(Metric.CONFLICTS, progress.conflicts)
    logger.info(
        "image set de-identified",
        extra={
            "image_set_id": image_set_id,
            "final_image_set_id": final_id,
            "versions": progress.versions_created,
        },
    )
    return {"action": "deidentified", "finalImageSetId": final_id, "reportUri": report_uri}


def _apply(  # noqa: PLR0917 - one call site
    ds: str,
    image_set_id: str,
    original: dict[str, Any],
    profile: Profile,
    pseudonyms: Pseudonymizer,
    services: DeidServices,
    progress: _Progress,
) -> str:
    """Update until the plan is empty; verify; the verified version id.

    One plan's payloads are sent in a chain (each ``latestVersionId`` the version the previous update
    made), since a plan never addresses a key that an earlier payload of the same plan moves; the
    document is read and planned again after the chain (to verify, or to finish what a value too large
    to quote needed in two steps) and after a ConflictException.
    """
    imaging = services.imaging
    identifiers = identifying_values(original, profile)
    produced: frozenset[str] = frozenset()
    first = True
    while True:
        progress.rounds += 1
        if progress.rounds > MAX_ROUNDS:
            raise _Failed(f"the plan did not converge after {MAX_ROUNDS} rounds")
        version = imaging.image_set(ds, image_set_id).version_id
        latest = imaging.metadata(ds, image_set_id)
        current = plan(latest, original, profile, pseudonyms, identifiers=identifiers)
        produced |= current.produced()
        if first:
            progress.actions.update(current.actions)
            progress.unchangeable = list(current.unchangeable)
            first = False
        if current.blockers:
            raise _Failed("; ".join(current.blockers))
        if current.done:
            break
        for payload in current.payloads():
            try:
                version = imaging.update(ds, image_set_id, version, payload)
            except ImageSetConflict:
                progress.conflicts += 1
                logger.warning(
                    "image set changed meanwhile; re-planning", extra={"image_set_id": image_set_id}
                )
                break
            except WriteFailed as failure:
                raise _Failed(
                    f"HealthImaging refused an update ({failure.status}): {failure.message}"
                ) from failure
            progress.versions_created += 1
            progress.payload_bytes += len(payload.updatable or b"") + len(payload.removable or b"")
    progress.produced = produced
    left = remaining_identifiers(latest, identifiers, produced)
    if left:
        raise _Failed(f"verification found identifying values at {len(left)} place(s): {left[:10]}")
    return version


def _purge(  # noqa: PLR0917 - one call site
    ds: str,
    image_set_id: str,
    version: str,
    original: dict[str, Any],
    profile: Profile,
    pseudonyms: Pseudonymizer,
    services: DeidServices,
    record: Any,
    progress: _Progress,
) -> str:
    """Copy the verified version into a new image set, check the copy, delete the original; the copy's id."""
    imaging = services.imaging
    copy_id: str | None = record.copy_image_set_id
    if copy_id is None:
        try:
            copy_id = imaging.copy(ds, image_set_id, version)
        except WriteFailed as failure:
            raise _Failed(f"HealthImaging could not copy the image set: {failure.message}") from failure
        services.records.record_copy(image_set_id, copy_id)
    copied = imaging.metadata(ds, copy_id)
    identifiers = identifying_values(original, profile)
    if not plan(copied, original, profile, pseudonyms, identifiers=identifiers).done:
        raise _Failed("the copy is not de-identified like the verified version")
    if remaining_identifiers(copied, identifiers, progress.produced):
        raise _Failed("verification found identifying values in the copy")
    if len(imaging.versions(ds, copy_id)) != 1:
        raise _Failed("the copy has more than one version")
    imaging.delete(ds, image_set_id)
    return copy_id


def _fail(  # noqa: PLR0917 - one call site
    event: ImageSetEvent,
    reason: str,
    profile: Profile,
    settings: DeidSettings,
    services: DeidServices,
    progress: _Progress,
    report_uri: str,
    started: float,
) -> dict[str, Any]:
    logger.error(
        "image set cannot be de-identified", extra={"image_set_id": event.image_set_id, "reason": reason}
    )
    properties = services.imaging.image_set_or_none(event.datastore_id, event.image_set_id)
    if properties is not None and properties.arn and properties.state != "DELETED":
        services.imaging.tag(properties.arn, {STATUS_TAG: "failed"})
    _write_report(event, "failed", None, reason, profile, settings, services, progress, started)
    services.records.finish_deid(
        event.image_set_id,
        state=DeidState.FAILED,
        final_image_set_id=None,
        report_uri=report_uri,
        error=reason,
    )
    count(Metric.DEID_FAILED)
    return {"action": "failed", "reason": reason, "reportUri": report_uri}


def _write_report(  # noqa: PLR0917 - two call sites, every argument part of the report
    event: ImageSetEvent,
    status: str,
    final_id: str | None,
    reason: str | None,
    profile: Profile,
    settings: DeidSettings,
    services: DeidServices,
    progress: _Progress,
    started: float,
) -> None:
    """The image set's report: ids, counts, calls and reasons (attribute names and tags, never values)."""
    services.s3.put_json(
        settings.output_bucket,
        settings.report_key(event.image_set_id),
        {
            "schemaVersion": REPORT_SCHEMA_VERSION,
            "datastoreId": event.datastore_id,
            "sourceImageSetId": event.image_set_id,
            "finalImageSetId": final_id,
            "importJobId": event.job_id,
            "batchId": event.batch_id,
            "status": status,
            "reason": reason,
            "profile": {**_profile_detail(profile), "method": profile.method},
            "actions": dict(sorted(progress.actions.items())),
            "unchangeable": progress.unchangeable,
            "versionsCreated": progress.versions_created,
            "conflicts": progress.conflicts,
            "updatePayloadBytes": progress.payload_bytes,
            "calls": dict(sorted((services.imaging.calls - progress.calls_before).items())),
            "seconds": round(time.monotonic() - started, 3),
            "reportedAt": services.now().isoformat(timespec="seconds"),
        },
    )

"""The tagging stage (TagImageSet): "Image Set Ready" → classification and pipeline tags, never PHI.

For each Ready image set, :func:`tag_image_set` reads its metadata, computes the tags of the rules
(:mod:`ahi_pipeline.tag_rules`: the defaults and the deployment's ``TAG_RULES``), drops any tag whose value
holds an identifying value of the metadata (the values of the attributes the de-identification profile
changes: for a de-identified image set, its pseudonyms and dummies; for one whose de-identification was
skipped, the patient's real identity), reads the tags already there, and sets only what is new or
changed: a tag someone else set is never removed or overwritten, and the image set keeps at most 50.
The data store is tagged ``pipeline:managed-by`` once per execution environment.

Replaying an event sets nothing (the tags are already there).  TagResource allows 10 calls per second;
botocore's adaptive retry mode backs off when it throttles.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, Final

from botocore.exceptions import ClientError

import ahi_pipeline
from ahi_pipeline import clients
from ahi_pipeline.deid_plan import identifying_values
from ahi_pipeline.deid_profile import load_profile
from ahi_pipeline.image_set_gateway import ImageSetGateway
from ahi_pipeline.observability import count, logger, tracer
from ahi_pipeline.pipeline_events import ReadyEvent, ReadyEventError, ready_event_in
from ahi_pipeline.runtime import per_environment
from ahi_pipeline.settings import TagSettings, current_tag_settings
from ahi_pipeline.tag_rules import DEFAULT_RULES, compute_tags, computed_keys, guard, merge, parse_rules

if TYPE_CHECKING:
    from aws_lambda_powertools.utilities.data_classes.sqs_event import SQSRecord

__all__ = ["ReadyEvent", "ReadyEventError", "TagOutcome", "handle_ready_message", "tag_image_set"]

MANAGED_BY: Final = {"pipeline:managed-by": "healthimaging-automation"}


class Metric:
    IMAGE_SETS_TAGGED: Final = "ImageSetsTagged"
    TAGS_DROPPED_PHI: Final = "TagsDroppedAsIdentifying"
    TAGS_OVER_LIMIT: Final = "TagsOverLimit"


@dataclass(frozen=True, slots=True)
class TagOutcome:
    image_set_id: str
    action: str
    set_keys: tuple[str, ...] = ()
    dropped: tuple[str, ...] = ()
    over_limit: tuple[str, ...] = ()

    def as_dict(self) -> dict[str, Any]:
        return {
            "imageSetId": self.image_set_id,
            "action": self.action,
            "set": list(self.set_keys),
            "droppedAsIdentifying": list(self.dropped),
            "overLimit": list(self.over_limit),
        }


@per_environment
def _gateway() -> ImageSetGateway:
    return ImageSetGateway(clients.medical_imaging())


@per_environment
def _managed_stores() -> set[str]:
    """Data stores already tagged as managed by the pipeline in this execution environment."""
    return set()


def _mark_managed(imaging: ImageSetGateway, datastore_arn: str) -> None:
    """Tag the data store as managed by the pipeline (checked once per execution environment)."""
    if datastore_arn in _managed_stores():
        return
    existing = imaging.tags(datastore_arn)
    missing = {k: v for k, v in MANAGED_BY.items() if existing.get(k) != v}
    if missing:
        imaging.tag(datastore_arn, missing)
    _managed_stores().add(datastore_arn)


def handle_ready_message(record: SQSRecord) -> dict[str, Any]:
    """Powertools' SQS record handler: one TagQueue message → :func:`tag_image_set`."""
    event = ready_event_in(record)
    return tag_image_set(event, settings=current_tag_settings(), imaging=_gateway()).as_dict()


@tracer.capture_method(capture_response=False)
def tag_image_set(event: ReadyEvent, *, settings: TagSettings, imaging: ImageSetGateway) -> TagOutcome:
    """Tag one Ready image set (see the module docstring)."""
    if event.datastore_id != settings.datastore_id:
        logger.warning(
            "Ready event of another data store ignored", extra={"image_set_id": event.image_set_id}
        )
        return TagOutcome(event.image_set_id, "other-datastore")
    properties = imaging.image_set(event.datastore_id, event.image_set_id)
    if properties.arn is None or properties.state == "DELETED":
        logger.warning("image set gone before it was tagged", extra={"image_set_id": event.image_set_id})
        return TagOutcome(event.image_set_id, "gone")
    _mark_managed(imaging, properties.arn.split("/imageset/")[0])
    metadata = imaging.metadata(event.datastore_id, event.image_set_id)
    deid = event.detail.get("deidentification") or {}
    announced = deid.get("options")
    options: str | list[str] = (
        [str(o) for o in announced] if isinstance(announced, list) else settings.deid_options
    )
    rules = (*DEFAULT_RULES, *parse_rules(settings.rules))
    computed = compute_tags(metadata, event.detail, rules, version=ahi_pipeline.__version__)
    identifiers = identifying_values(metadata, load_profile(options)).changed
    kept, dropped = guard(computed, identifiers, computed=computed_keys(rules))
    for key in dropped:
        logger.warning("tag dropped: its value holds an identifying value", extra={"tag": key})
    existing = _tags(imaging, properties.arn)
    plan = merge(existing, kept)
    if plan.over_limit:
        logger.warning("tags left out: the image set has 50", extra={"tags": plan.over_limit})
    if plan.to_set:
        imaging.tag(properties.arn, plan.to_set)
    count(Metric.IMAGE_SETS_TAGGED)
    count(Metric.TAGS_DROPPED_PHI, len(dropped))
    count(Metric.TAGS_OVER_LIMIT, len(plan.over_limit))
    return TagOutcome(
        event.image_set_id, "tagged", tuple(plan.to_set), tuple(dropped), tuple(plan.over_limit)
    )


def _tags(imaging: ImageSetGateway, arn: str) -> dict[str, str]:
    try:
        return imaging.tags(arn)
    except ClientError as error:
        if clients.error_code(error) == "ResourceNotFoundException":
            return {}
        raise

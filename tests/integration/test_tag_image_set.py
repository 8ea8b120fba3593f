"""TagImageSet end to end: the handler against the emulator, on image sets really imported, announced and
de-identified by the stages before it; the tags are read back with ListTagsForResource.
"""

from __future__ import annotations

import json
from collections.abc import Callable
from typing import Any

import pytest

from ahi_pipeline.runtime import reset_environment
from emulator.server import Emulator
from tests.integration.conftest import FakeContext, failed_ids
from tests.integration.test_deidentify import (
    DeidStack,
    make_deid,  # noqa: F401 - the fixture
    synthetic_series,
)
from tests.integration.test_import_completed import make_completion  # noqa: F401 - the fixture
from tests.integration.test_start_import import bundled

pytestmark = pytest.mark.integration


def ready_bodies(deid: DeidStack, files: dict[str, bytes]) -> list[str]:
    """Import, announce and de-identify ``files``; the bodies of the "Image Set Ready" events."""
    bodies = deid.imported(files)
    assert deid.deidentify(*bodies) == {"batchItemFailures": []}
    return [
        json.dumps(event)
        for event in deid.completion.bus_events()
        if event["detail-type"] == "Image Set Ready"
    ]


def tag(*bodies: str) -> dict[str, Any]:
    from functions.tag_image_set.app import lambda_handler  # noqa: PLC0415 - after the env is set

    event = {
        "Records": [
            {
                "messageId": f"m{index}",
                "receiptHandle": f"r{index}",
                "body": body,
                "attributes": {"ApproximateReceiveCount": "1"},
                "messageAttributes": {},
                "eventSource": "aws:sqs",
                "eventSourceARN": "arn:aws:sqs:us-east-1:123456789012:TagQueue",
                "awsRegion": "us-east-1",
            }
            for index, body in enumerate(bodies)
        ]
    }
    response: dict[str, Any] = lambda_handler(event, FakeContext("TagImageSet"))
    return response


def tags_of(deid: DeidStack, image_set_id: str) -> dict[str, str]:
    arn = deid.ahi.get_image_set(datastoreId=deid.datastore_id, imageSetId=image_set_id)["imageSetArn"]
    found: dict[str, str] = deid.ahi.list_tags_for_resource(resourceArn=arn)["tags"]
    return found


def test_ready_image_sets_get_classification_and_pipeline_tags(
    make_deid: Callable[..., DeidStack],  # noqa: F811 - the fixture
    emulator: Emulator,
) -> None:
    # Given a de-identified CT, Ready
    deid = make_deid(emulator, TAG_RULES="site:manufacturer=Manufacturer")
    [body] = ready_bodies(deid, {"incoming/t/CT_small.dcm": bundled("CT_small.dcm")})
    detail = json.loads(body)["detail"]

    # When TagImageSet handles the event
    assert tag(body) == {"batchItemFailures": []}

    # Then the image set carries the pipeline's tags and the deployment's rule's tag
    tags = tags_of(deid, detail["imageSetId"])
    assert tags["pipeline:modality"] == "CT"
    assert tags["pipeline:sop-class"] == "CTImageStorage"
    assert (tags["pipeline:instances"], tags["pipeline:frames"]) == ("1", "1")
    assert tags["pipeline:deidentification"] == "deidentified"
    assert tags["pipeline:import-job"] == detail["importJobId"]
    assert tags["pipeline:batch"] == detail["batchId"]
    assert tags["site:manufacturer"] == "GE MEDICAL SYSTEMS"
    # … and the data store is tagged as managed by the pipeline
    datastore_arn = deid.ahi.get_datastore(datastoreId=deid.datastore_id)["datastoreProperties"][
        "datastoreArn"
    ]
    managed = deid.ahi.list_tags_for_resource(resourceArn=datastore_arn)["tags"]
    assert managed["pipeline:managed-by"] == "healthimaging-automation"


def test_the_same_event_twice_gives_the_same_tags_and_user_tags_stay(
    make_deid: Callable[..., DeidStack],  # noqa: F811 - the fixture
    emulator: Emulator,
) -> None:
    # Given a tagged image set on which a user then sets a tag of their own
    deid = make_deid(emulator)
    [body] = ready_bodies(deid, {"incoming/t2/MR_small.dcm": bundled("MR_small.dcm")})
    image_set_id = json.loads(body)["detail"]["imageSetId"]
    assert tag(body) == {"batchItemFailures": []}
    arn = deid.ahi.get_image_set(datastoreId=deid.datastore_id, imageSetId=image_set_id)["imageSetArn"]
    deid.ahi.tag_resource(resourceArn=arn, tags={"owner": "radiology-research"})
    before = tags_of(deid, image_set_id)

    # When the event arrives again
    assert tag(body) == {"batchItemFailures": []}

    # Then the tags are the same, the user's included
    assert tags_of(deid, image_set_id) == before
    assert before["owner"] == "radiology-research"


def test_identifying_values_never_become_tags(
    make_deid: Callable[..., DeidStack],  # noqa: F811 - the fixture
    emulator: Emulator,
) -> None:
    # Given de-identification turned off (the metadata keeps the patient's identity) and rules that
    # would copy identifying attributes into tags
    deid = make_deid(
        emulator,
        DEIDENTIFY="false",
        TAG_RULES="x:name=PatientName;x:id=PatientID;x:institution=InstitutionName;x:modality=Modality",
    )
    [body] = ready_bodies(deid, synthetic_series(1))

    # When TagImageSet handles the event
    assert tag(body) == {"batchItemFailures": []}

    # Then no tag carries an identifying value; the harmless ones are set
    tags = tags_of(deid, json.loads(body)["detail"]["imageSetId"])
    assert not {"x:name", "x:id", "x:institution"} & set(tags)
    assert tags["x:modality"] == "CT"
    text = json.dumps(tags).casefold()
    assert "victoria" not in text
    assert "mrn-4417-2208" not in text
    assert tags["pipeline:deidentification"] == "skipped"


def test_a_poison_message_fails_alone(
    make_deid: Callable[..., DeidStack],  # noqa: F811 - the fixture
    emulator: Emulator,
) -> None:
    # Given a good Ready event and a message that is not one
    deid = make_deid(emulator)
    [body] = ready_bodies(deid, {"incoming/t3/CT_small.dcm": bundled("CT_small.dcm")})

    # When both are handled, then only the poison one fails
    assert len(failed_ids(tag(body, '{"detail-type": "nope"}'))) == 1
    reset_environment()

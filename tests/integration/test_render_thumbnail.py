"""RenderThumbnail end to end: the handler against the emulator and moto, on image sets really imported,
announced and de-identified by the stages before it.  Thumbnails, contact sheets and sidecars are read
back from S3, the tag with ListTagsForResource, the event from the pipeline bus.

Bad input is made the way it happens: a stored frame that no longer matches its checksum, a frame cut
short, a photometric interpretation the renderer does not know (written with UpdateImageSetMetadata).
"""

from __future__ import annotations

import json
from collections.abc import Callable
from typing import Any

import imagecodecs
import numpy as np
import pytest

from bench.synthetic import ct_series
from emulator.imaging.htj2k import encode, prepare_frame
from emulator.server import Emulator
from tests.emulator import helpers
from tests.integration.conftest import FakeContext, failed_ids, log_lines
from tests.integration.test_deidentify import (
    DeidStack,
    make_deid,  # noqa: F401 - the fixture
)
from tests.integration.test_import_completed import make_completion  # noqa: F401 - the fixture
from tests.integration.test_start_import import bundled
from tests.integration.test_tag_image_set import ready_bodies

pytestmark = pytest.mark.integration


def render(deid: DeidStack, *bodies: str) -> list[int]:
    """Invoke the handler with one message per body; the positions of the messages that failed."""
    from functions.render_thumbnail.app import lambda_handler  # noqa: PLC0415 - after the env is set

    event = deid.completion.sqs_event(*bodies)
    for record in event["Records"]:
        record["eventSourceARN"] = "arn:aws:sqs:us-east-1:123456789012:ThumbnailQueue"
    response: dict[str, Any] = lambda_handler(event, FakeContext("RenderThumbnail"))
    ids = [record["messageId"] for record in event["Records"]]
    return [ids.index(failed) for failed in failed_ids(response)]


def output(deid: DeidStack) -> tuple[Any, str]:
    ingest = deid.completion.ingest
    return ingest.s3, ingest.output


def thumbnail_keys(deid: DeidStack) -> list[str]:
    s3, bucket = output(deid)
    listed = s3.list_objects_v2(Bucket=bucket, Prefix="thumbnails/").get("Contents", [])
    return sorted(str(item["Key"]) for item in listed)


def rendered_events(deid: DeidStack) -> list[dict[str, Any]]:
    return [e for e in deid.completion.bus_events() if e["detail-type"] == "Thumbnail Rendered"]


def first_frame(deid: DeidStack, image_set_id: str) -> tuple[dict[str, Any], str]:
    """The instance and frame id of the image set's only instance."""
    document = deid.metadata(image_set_id)
    [series] = document["Study"]["Series"].values()
    [instance] = series["Instances"].values()
    return instance, str(instance["ImageFrames"][0]["ID"])


def test_a_ready_ct_gets_a_thumbnail_a_sidecar_a_tag_and_an_event(
    make_deid: Callable[..., DeidStack],  # noqa: F811 - the fixture
    emulator: Emulator,
) -> None:
    # Given a de-identified CT, Ready
    deid = make_deid(emulator, THUMBNAIL_SIZE="256")
    [body] = ready_bodies(deid, {"incoming/th/CT_small.dcm": bundled("CT_small.dcm")})
    image_set_id = json.loads(body)["detail"]["imageSetId"]

    # When RenderThumbnail handles the event
    assert render(deid, body) == []

    # Then the thumbnail is a PNG of the 128² frame (smaller than 256: never enlarged), cacheable
    s3, bucket = output(deid)
    folder = f"thumbnails/{deid.datastore_id}/{image_set_id}/"
    assert thumbnail_keys(deid) == [f"{folder}thumbnail.json", f"{folder}thumbnail.png"]
    png = s3.get_object(Bucket=bucket, Key=f"{folder}thumbnail.png")
    assert png["ContentType"] == "image/png"
    assert "max-age" in png["CacheControl"]
    image = imagecodecs.png_decode(png["Body"].read())
    assert image.shape == (128, 128)
    assert image.dtype == np.uint8
    assert image.std() > 20  # a picture, not a flat field
    # … the sidecar says how it was made, with ids and numbers only
    sidecar_object = s3.get_object(Bucket=bucket, Key=f"{folder}thumbnail.json")
    assert sidecar_object["ContentType"] == "application/json"
    sidecar = json.loads(sidecar_object["Body"].read())
    instance, frame_id = first_frame(deid, image_set_id)
    frame = sidecar["thumbnail"]["frame"]
    assert frame["imageFrameId"] == frame_id
    assert frame["level"] == {"reduce": 0, "width": 128, "height": 128}
    assert frame["checksum"]["verified"] is True
    assert 0 < frame["bytesRead"] <= frame["frameBytes"]
    assert frame["window"]["source"] in {"metadata", "percentiles"}
    text = json.dumps(sidecar)
    for attribute in ("PatientName", "PatientID", "StudyInstanceUID", "SOPInstanceUID"):
        value = instance["DICOM"].get(attribute) or deid.metadata(image_set_id)["Patient"]["DICOM"].get(
            attribute
        )
        if isinstance(value, str) and value:
            assert value not in text, attribute
    # … the image set is tagged with the thumbnail's key, and the bus hears of it
    arn = deid.ahi.get_image_set(datastoreId=deid.datastore_id, imageSetId=image_set_id)["imageSetArn"]
    tags = deid.ahi.list_tags_for_resource(resourceArn=arn)["tags"]
    assert tags["pipeline:thumbnail"] == f"{folder}thumbnail.png"
    [event] = rendered_events(deid)
    assert event["detail"]["thumbnailKey"] == f"{folder}thumbnail.png"
    assert event["detail"]["sidecarKey"] == f"{folder}thumbnail.json"
    assert (event["detail"]["width"], event["detail"]["height"]) == (128, 128)


def test_a_series_gets_its_middle_slice_and_a_contact_sheet_read_from_prefixes(
    make_deid: Callable[..., DeidStack],  # noqa: F811 - the fixture
    emulator: Emulator,
) -> None:
    # Given a Ready 5-slice 512² CT series
    deid = make_deid(emulator)
    files = {f"incoming/series/{i}.dcm": data for i, data in enumerate(ct_series(5, 512))}
    [body] = ready_bodies(deid, files)
    image_set_id = json.loads(body)["detail"]["imageSetId"]

    # When RenderThumbnail handles it, and the same event again
    assert render(deid, body) == []
    assert render(deid, body) == []

    # Then the thumbnail is the middle slice at 256 px, decoded from level 256² of a prefix
    s3, bucket = output(deid)
    folder = f"thumbnails/{deid.datastore_id}/{image_set_id}/"
    sidecar = json.loads(s3.get_object(Bucket=bucket, Key=f"{folder}thumbnail.json")["Body"].read())
    frame = sidecar["thumbnail"]["frame"]
    assert frame["level"] == {"reduce": 1, "width": 256, "height": 256}
    assert frame["bytesRead"] < 0.6 * frame["frameBytes"]
    assert frame["window"] == {"center": 40.0, "width": 400.0, "source": "metadata"}
    document = deid.metadata(image_set_id)
    [series] = document["Study"]["Series"].values()
    by_position = sorted(series["Instances"].values(), key=lambda i: i["DICOM"]["ImagePositionPatient"][2])
    assert frame["imageFrameId"] == by_position[2]["ImageFrames"][0]["ID"]
    # … and one contact sheet of five 128-px tiles (4 columns, 2 rows), each from its own prefix
    [sheet] = sidecar["contactSheets"]
    assert sheet["key"] == f"{folder}contact-sheet-01.png"
    assert [t["imageFrameId"] for t in sheet["tiles"]] == [i["ImageFrames"][0]["ID"] for i in by_position]
    assert all(t["level"]["width"] == 128 and t["checksum"]["verified"] for t in sheet["tiles"])
    picture = imagecodecs.png_decode(s3.get_object(Bucket=bucket, Key=sheet["key"])["Body"].read())
    assert picture.shape == (sheet["height"], sheet["width"]) == (2 * 128 + 2, 4 * 128 + 3 * 2)
    # … written once per key however often the event comes
    assert thumbnail_keys(deid) == [
        f"{folder}contact-sheet-01.png",
        f"{folder}thumbnail.json",
        f"{folder}thumbnail.png",
    ]
    assert len(rendered_events(deid)) == 2


def test_a_frame_that_no_longer_matches_its_checksum_fails_and_writes_nothing(
    make_deid: Callable[..., DeidStack],  # noqa: F811 - the fixture
    emulator: Emulator,
    capsys: pytest.CaptureFixture[str],
) -> None:
    # Given a Ready CT whose stored frame was replaced by another valid frame of the same size
    deid = make_deid(emulator)
    [body] = ready_bodies(deid, {"incoming/bad/CT_small.dcm": bundled("CT_small.dcm")})
    image_set_id = json.loads(body)["detail"]["imageSetId"]
    _, frame_id = first_frame(deid, image_set_id)
    other = np.full((128, 128), 1000, np.uint16)
    emulator.store.frame_path(deid.datastore_id, frame_id).write_bytes(encode(prepare_frame(other, 16)))

    # When RenderThumbnail handles the event
    failed = render(deid, body)

    # Then the message fails with a clear reason, and nothing is written, tagged or announced
    assert failed == [0]
    assert thumbnail_keys(deid) == []
    assert rendered_events(deid) == []
    errors = [line for line in log_lines(capsys.readouterr().out) if line.get("level") == "ERROR"]
    assert any("CRC32" in json.dumps(line) for line in errors)


def test_a_truncated_frame_fails_with_a_clear_error(
    make_deid: Callable[..., DeidStack],  # noqa: F811 - the fixture
    emulator: Emulator,
    capsys: pytest.CaptureFixture[str],
) -> None:
    # Given a Ready 512² CT slice whose stored frame was cut short after its main header
    deid = make_deid(emulator)
    [body] = ready_bodies(deid, {"incoming/cut/slice.dcm": ct_series(1, 512)[0]})
    image_set_id = json.loads(body)["detail"]["imageSetId"]
    _, frame_id = first_frame(deid, image_set_id)
    path = emulator.store.frame_path(deid.datastore_id, frame_id)
    path.write_bytes(path.read_bytes()[:600])

    # When RenderThumbnail handles the event
    failed = render(deid, body)

    # Then it fails, saying the frame ended early; nothing is written
    assert failed == [0]
    assert thumbnail_keys(deid) == []
    errors = [line for line in log_lines(capsys.readouterr().out) if line.get("level") == "ERROR"]
    assert any("the frame ended after 600 bytes" in json.dumps(line) for line in errors)


def test_an_unsupported_photometric_interpretation_fails_before_any_frame_is_read(
    make_deid: Callable[..., DeidStack],  # noqa: F811 - the fixture
    emulator: Emulator,
    capsys: pytest.CaptureFixture[str],
) -> None:
    # Given a Ready image set whose instance now says YBR_PARTIAL_420 (set with UpdateImageSetMetadata)
    deid = make_deid(emulator)
    [body] = ready_bodies(deid, {"incoming/pi/MR_small.dcm": bundled("MR_small.dcm")})
    image_set_id = json.loads(body)["detail"]["imageSetId"]
    document = deid.metadata(image_set_id)
    [(series_uid, series)] = document["Study"]["Series"].items()
    [sop_uid] = series["Instances"]
    latest = deid.ahi.get_image_set(datastoreId=deid.datastore_id, imageSetId=image_set_id)["versionId"]
    updates = {
        "SchemaVersion": "1.1",
        "Study": {
            "Series": {
                series_uid: {
                    "Instances": {sop_uid: {"DICOM": {"PhotometricInterpretation": "YBR_PARTIAL_420"}}}
                }
            }
        },
    }
    deid.ahi.update_image_set_metadata(
        datastoreId=deid.datastore_id,
        imageSetId=image_set_id,
        latestVersionId=latest,
        updateImageSetMetadataUpdates={"DICOMUpdates": {"updatableAttributes": json.dumps(updates).encode()}},
        force=True,
    )
    helpers.wait_image_set(deid.ahi, deid.datastore_id, image_set_id)
    # … and whose frame is gone: reading it would fail with another error
    _, frame_id = first_frame(deid, image_set_id)
    emulator.store.frame_path(deid.datastore_id, frame_id).unlink()

    # When RenderThumbnail handles the event
    failed = render(deid, body)

    # Then it fails, naming the photometric interpretation, without reading a frame
    assert failed == [0]
    assert thumbnail_keys(deid) == []
    errors = [line for line in log_lines(capsys.readouterr().out) if line.get("level") == "ERROR"]
    assert any("YBR_PARTIAL_420" in json.dumps(line) for line in errors)


def test_a_poison_message_fails_alone(
    make_deid: Callable[..., DeidStack],  # noqa: F811 - the fixture
    emulator: Emulator,
) -> None:
    # Given a good Ready event and a message that is not one
    deid = make_deid(emulator)
    [body] = ready_bodies(deid, {"incoming/p/CT_small.dcm": bundled("CT_small.dcm")})

    # When both arrive in one batch
    failed = render(deid, body, "{not json")

    # Then only the poison message fails
    assert failed == [1]
    assert len(rendered_events(deid)) == 1


def test_the_sample_event_of_events_runs(
    make_deid: Callable[..., DeidStack],  # noqa: F811 - the fixture
    emulator: Emulator,
) -> None:
    # Given events/render_thumbnail.json pointed at a real Ready image set of this stack
    deid = make_deid(emulator)
    [body] = ready_bodies(deid, {"incoming/sample/MR_small.dcm": bundled("MR_small.dcm")})
    real = json.loads(body)["detail"]
    with open("events/render_thumbnail.json") as handle:
        event = json.load(handle)
    sample = json.loads(event["Records"][0]["body"])
    sample["detail"].update({k: real[k] for k in ("datastoreId", "imageSetId", "sourceImageSetId")})

    # When RenderThumbnail handles it, then the thumbnail is written
    assert render(deid, json.dumps(sample)) == []
    assert f"thumbnails/{deid.datastore_id}/{real['imageSetId']}/thumbnail.png" in thumbnail_keys(deid)

"""Thumbnails end to end on the local stack: uploads → import → Deidentify → "Image Set Ready" →
RenderThumbnail → PNGs, a sidecar, a tag and "Thumbnail Rendered"; a frame that no longer matches its
checksum fails its three receives and waits in RenderThumbnail's dead-letter queue.
"""

from __future__ import annotations

import gzip
import json
from pathlib import Path

import imagecodecs
import numpy as np
import pytest

from bench.synthetic import ct_series
from emulator.imaging.htj2k import encode, prepare_frame
from local.stack import LocalStack
from tests.e2e.pipeline import pipeline, queue_arn, samples, upload
from tests.e2e.test_completion import drain, drain_raw, subscribe

pytestmark = pytest.mark.e2e


def test_a_ready_series_gets_its_thumbnail_and_contact_sheet(tmp_path: Path) -> None:
    with pipeline(tmp_path) as stack:
        # Given a subscriber on the pipeline bus and a 4-slice 512² CT series uploaded
        captured = subscribe(stack)
        upload(stack, {f"incoming/th/{i}.dcm": data for i, data in enumerate(ct_series(4, 512))})
        # When the stack has finished with it
        stack.wait_idle(timeout=180)
        # Then the Ready image set's thumbnail was announced, written, and recorded in a tag
        events = drain(stack, captured)
        [ready] = [e["detail"] for e in events if e["detail-type"] == "Image Set Ready"]
        [rendered] = [e["detail"] for e in events if e["detail-type"] == "Thumbnail Rendered"]
        assert rendered["imageSetId"] == ready["imageSetId"]
        s3 = stack.client("s3")
        png = s3.get_object(Bucket=rendered["bucket"], Key=rendered["thumbnailKey"])["Body"].read()
        assert imagecodecs.png_decode(png).shape == (256, 256)
        [sheet_key] = rendered["contactSheetKeys"]
        sheet = imagecodecs.png_decode(s3.get_object(Bucket=rendered["bucket"], Key=sheet_key)["Body"].read())
        assert sheet.shape == (128, 4 * 128 + 3 * 2)
        sidecar = json.loads(
            s3.get_object(Bucket=rendered["bucket"], Key=rendered["sidecarKey"])["Body"].read()
        )
        assert sidecar["thumbnail"]["frame"]["checksum"]["verified"] is True
        ahi = stack.client("medical-imaging")
        arn = ahi.get_image_set(datastoreId=stack.outputs["DatastoreId"], imageSetId=ready["imageSetId"])[
            "imageSetArn"
        ]
        assert (
            ahi.list_tags_for_resource(resourceArn=arn)["tags"]["pipeline:thumbnail"]
            == rendered["thumbnailKey"]
        )
        assert drain(stack, stack.outputs["ThumbnailDeadLetterQueueUrl"]) == []


def test_a_frame_that_fails_its_checksum_ends_in_the_dead_letter_queue_after_three_tries(
    tmp_path: Path,
) -> None:
    with pipeline(tmp_path) as stack:
        # Given a Ready CT whose thumbnail was rendered
        captured = subscribe(stack)
        ct, *_ = samples()
        upload(stack, {"incoming/bad/CT.dcm": ct})
        stack.wait_idle(timeout=180)
        [ready] = [e for e in drain(stack, captured) if e["detail-type"] == "Image Set Ready"]
        # … whose stored frame then no longer matches its checksum
        corrupt_only_frame(stack, ready["detail"]["imageSetId"])
        # … and RenderThumbnail's queue with a short visibility timeout (720 s on AWS)
        sqs = stack.client("sqs")
        queue = stack.outputs["ThumbnailQueueUrl"]
        stack.set_queue_attributes(queue, {"VisibilityTimeout": "1"})  # returns once its poller has seen it
        before = len(stack.deliveries.snapshot())
        # When the Ready event is delivered again
        sqs.send_message(QueueUrl=queue, MessageBody=json.dumps(ready))
        stack.wait_idle(timeout=120)
        # Then it was tried three times (maxReceiveCount), no more, and waits in the dead-letter queue
        source = queue_arn(stack, queue)
        tries = [d for d in stack.deliveries.snapshot()[before:] if d.source == source]
        assert len(tries) == 3
        assert all(d.failed_ids for d in tries)
        dead = drain_raw(stack, stack.outputs["ThumbnailDeadLetterQueueUrl"])
        assert [json.loads(m["Body"])["detail"]["imageSetId"] for m in dead] == [
            ready["detail"]["imageSetId"]
        ]
        # … and the function's log says why
        log = (tmp_path / "functions.log").read_text()
        assert "CRC32" in log


def corrupt_only_frame(stack: LocalStack, image_set_id: str) -> None:
    """Replace the image set's only stored frame by another valid frame of the same size."""
    assert stack.emulator is not None
    ahi = stack.client("medical-imaging")
    datastore = stack.outputs["DatastoreId"]
    blob = ahi.get_image_set_metadata(datastoreId=datastore, imageSetId=image_set_id)["imageSetMetadataBlob"]
    document = json.loads(gzip.decompress(blob.read()))
    [series] = document["Study"]["Series"].values()
    [instance] = series["Instances"].values()
    frame_id = instance["ImageFrames"][0]["ID"]
    rows, columns = int(instance["DICOM"]["Rows"]), int(instance["DICOM"]["Columns"])
    other = encode(prepare_frame(np.full((rows, columns), 1000, np.uint16), 16))
    stack.emulator.store.frame_path(datastore, frame_id).write_bytes(other)

"""The thumbnail stage (RenderThumbnail): "Image Set Ready" → a thumbnail, contact sheets, a sidecar.

For each Ready image set, :func:`render_image_set` reads its metadata and picks the representative
frame (:func:`ahi_pipeline.frame_choice.representative`: the middle instance along the slice normal,
the middle frame of a multi-frame instance) and, for every series of more than one instance, up to 16
evenly spaced frames for a contact sheet.  Each frame is fetched with GetImageFrame and read only as
far as the smallest resolution level of at least the thumbnail's size needs (the TLM marker of the
service's HTJ2K codestream says how far), decoded at that level with OpenJPEG, checked against the
level's CRC32 in the metadata, and rendered (:mod:`ahi_pipeline.render`: modality LUT, VOI window,
MONOCHROME1, colour).  Frames the service stores as uploaded (``StoredTransferSyntaxUID``: JPEG, JPEG-LS)
are read whole and decoded by their own codec (:func:`ahi_pipeline.thumbnails.decode_frame`).

It writes, in the output bucket under ``thumbnails/<datastoreId>/<imageSetId>/``:

* ``thumbnail.png``: the representative frame, longest side ``THUMBNAIL_SIZE``;
* ``contact-sheet-NN.png``: one per multi-instance series (ordered by SeriesNumber), tiles half as large;
* ``thumbnail.json``: the sidecar: for every image, the frame id, transfer syntax, resolution level,
  bytes read of the frame's bytes, checksum, window; series by number and modality.  Ids, sizes and
  numbers only: no DICOM value that could identify anyone (no UIDs, no names, no dates).

Then it tags the image set ``pipeline:thumbnail`` with the thumbnail's key and puts a "Thumbnail
Rendered" event on the pipeline bus.  Rendering again overwrites the same keys, so a replayed event is
harmless.  Anything wrong with a frame (a checksum that does not match, a truncated or undecodable
frame, an unsupported photometric interpretation or transfer syntax) raises before anything is written:
the message fails, is retried a few times and ends in the dead-letter queue.
"""

from __future__ import annotations

import json
import math
from collections.abc import Callable, Mapping, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, Final

import ahi_pipeline
from ahi_pipeline import clients
from ahi_pipeline.frame_choice import FrameRef, contact_sheet, representative
from ahi_pipeline.htj2k_prefix import CodestreamError
from ahi_pipeline.image_set_gateway import ImageSetGateway
from ahi_pipeline.observability import count, in_this_trace, logger, metrics, tracer
from ahi_pipeline.pipeline_events import (
    EventBusGateway,
    ReadyEvent,
    ready_event_in,
    thumbnail_rendered,
)
from ahi_pipeline.render import COLOUR, MONOCHROME, FrameDescription, RenderError, render
from ahi_pipeline.runtime import per_environment
from ahi_pipeline.settings import ThumbnailSettings, current_thumbnail_settings
from ahi_pipeline.thumbnails import (
    ChecksumMismatch,
    DecodedFrame,
    UnsupportedFrame,
    decode_frame,
    stored_transfer_syntax,
)

if TYPE_CHECKING:
    from aws_lambda_powertools.utilities.data_classes.sqs_event import SQSRecord
    from mypy_boto3_s3 import S3Client

__all__ = [
    "FRAME_ERRORS",
    "THUMBNAIL_TAG",
    "RenderedImage",
    "ThumbnailOutcome",
    "check_renderable",
    "compose_sheet",
    "handle_ready_message",
    "render_image_set",
]

THUMBNAIL_TAG: Final = "pipeline:thumbnail"
#: Frames fetched and decoded at once (GetImageFrame allows 1,000 calls per second).
WORKERS: Final = 8
#: Thumbnails of an image set never change once rendered (pixel data is immutable); a re-render
#: (a changed window) overwrites them, so caches keep them a day, not forever.
CACHE_CONTROL: Final = "public, max-age=86400"
SIDECAR_CACHE_CONTROL: Final = "no-cache"
SHEET_COLUMNS: Final = 4
SHEET_GAP: Final = 2


class Metric:
    THUMBNAILS_RENDERED: Final = "ThumbnailsRendered"
    CONTACT_SHEETS_RENDERED: Final = "ContactSheetsRendered"
    FRAMES_DECODED: Final = "ThumbnailFramesDecoded"
    FRAME_BYTES_READ: Final = "ThumbnailFrameBytesRead"
    THUMBNAILS_FAILED: Final = "ThumbnailsFailed"


#: What is wrong with a frame or its metadata (the message fails, and ends in the dead-letter queue).
FRAME_ERRORS: Final = (ChecksumMismatch, CodestreamError, UnsupportedFrame, RenderError)


@dataclass(frozen=True)
class RenderedImage:
    """One frame decoded and rendered, with what the sidecar says about it."""

    image: Any
    ref: FrameRef
    decoded: DecodedFrame
    frame_bytes: int | None
    window: tuple[float, float] | None
    window_source: str

    def describe(self) -> dict[str, Any]:
        full_width, full_height = self.decoded.full_size
        width, height = self.decoded.size
        return {
            "imageFrameId": self.ref.frame_id,
            "frameIndex": self.ref.frame_index,
            "transferSyntax": self.decoded.transfer_syntax,
            "level": {"reduce": self.decoded.reduce, "width": width, "height": height},
            "fullSize": {"width": full_width, "height": full_height},
            "bytesRead": self.decoded.bytes_read,
            "frameBytes": self.frame_bytes,
            "wholeFrameRead": self.decoded.complete,
            "checksum": (
                {"crc32": self.decoded.checksum, "verified": True}
                if self.decoded.checksum is not None
                else {"verified": False, "reason": "the metadata has no checksum for this level"}
            ),
            "window": (
                {"center": self.window[0], "width": self.window[1], "source": self.window_source}
                if self.window is not None
                else {"source": self.window_source}
            ),
        }


@dataclass(frozen=True, slots=True)
class ThumbnailOutcome:
    image_set_id: str
    action: str
    thumbnail_key: str | None = None
    contact_sheet_keys: tuple[str, ...] = ()
    bytes_read: int = 0
    frames: int = 0

    def as_dict(self) -> dict[str, Any]:
        return {
            "imageSetId": self.image_set_id,
            "action": self.action,
            "thumbnailKey": self.thumbnail_key,
            "contactSheetKeys": list(self.contact_sheet_keys),
            "framesDecoded": self.frames,
            "bytesRead": self.bytes_read,
        }


# ---------------------------------------------------------------------- pure steps
def check_renderable(dicom: Mapping[str, Any]) -> FrameDescription:
    """The instance's frame description, when the thumbnails can render it.

    Raises
    ------
    RenderError
        For a photometric interpretation other than MONOCHROME1/2, RGB, YBR_FULL(_422), YBR_RCT/ICT or
        PALETTE COLOR (checked before any frame is fetched).
    """
    description = FrameDescription.from_metadata(dicom)
    if description.photometric not in MONOCHROME | COLOUR:
        raise RenderError(f"photometric interpretation {description.photometric!r} is not supported")
    return description


def _as_rgb(image: Any) -> Any:
    import numpy as np  # noqa: PLC0415 - from the imaging layer

    return image if image.ndim == 3 else np.repeat(image[:, :, None], 3, axis=2)


def compose_sheet(tiles: Sequence[Any], tile: int, columns: int = SHEET_COLUMNS, gap: int = SHEET_GAP) -> Any:
    """Tiles (8-bit, longest side at most ``tile``) centred in a grid of ``tile``-pixel cells, row by row.

    Grey when every tile is grey, else RGB (grey tiles repeated in three channels).  Black background.
    """
    import numpy as np  # noqa: PLC0415 - from the imaging layer

    if not tiles:
        raise ValueError("a contact sheet needs at least one tile")
    columns = min(columns, len(tiles))
    rows = math.ceil(len(tiles) / columns)
    colour = any(t.ndim == 3 for t in tiles)
    shape: tuple[int, ...] = (rows * tile + (rows - 1) * gap, columns * tile + (columns - 1) * gap)
    sheet = np.zeros((*shape, 3) if colour else shape, np.uint8)
    for index, tile_image in enumerate(tiles):
        image = _as_rgb(tile_image) if colour else tile_image
        height, width = image.shape[:2]
        top = (index // columns) * (tile + gap) + (tile - height) // 2
        left = (index % columns) * (tile + gap) + (tile - width) // 2
        sheet[top : top + height, left : left + width] = image
    return sheet


def _png(image: Any) -> bytes:
    import imagecodecs  # noqa: PLC0415 - from the imaging layer

    return bytes(imagecodecs.png_encode(image))


def _series_order(metadata: Mapping[str, Any], series_uid: str) -> tuple[float, str]:
    series = ((metadata.get("Study") or {}).get("Series") or {}).get(series_uid) or {}
    number = (series.get("DICOM") or {}).get("SeriesNumber")
    try:
        return float(str(number)), series_uid
    except ValueError:
        return math.inf, series_uid


def _series_facts(metadata: Mapping[str, Any], series_uid: str) -> dict[str, Any]:
    """What the sidecar says of a series: its number, modality and instance count (no UID)."""
    series = ((metadata.get("Study") or {}).get("Series") or {}).get(series_uid) or {}
    dicom = series.get("DICOM") or {}
    number = dicom.get("SeriesNumber")
    return {
        "seriesNumber": number if isinstance(number, int | float | str) else None,
        "modality": str(dicom.get("Modality") or "") or None,
        "instances": len(series.get("Instances") or {}),
    }


# ---------------------------------------------------------------------- I/O
def _render_frame(
    imaging: ImageSetGateway,
    event: ReadyEvent,
    metadata: Mapping[str, Any],
    job: tuple[FrameRef, FrameDescription, int],
) -> RenderedImage:
    ref, description, longest = job
    instance = metadata["Study"]["Series"][ref.series_uid]["Instances"][ref.sop_uid]
    stream = imaging.frame(event.datastore_id, event.image_set_id, ref.frame_id)
    decoded = decode_frame(
        stream.body,
        ref.frame,
        ref.dicom,
        transfer_syntax=stored_transfer_syntax(instance),
        longest_side=longest,
    )
    rendered = render(decoded.pixels, description, longest)
    return RenderedImage(rendered.image, ref, decoded, stream.length, rendered.window, rendered.window_source)


def _put(s3: S3Client, bucket: str, key: str, body: bytes, *, content_type: str, cache: str) -> None:
    s3.put_object(Bucket=bucket, Key=key, Body=body, ContentType=content_type, CacheControl=cache)


@per_environment
def _gateway() -> ImageSetGateway:
    return ImageSetGateway(clients.medical_imaging())


@per_environment
def _events() -> EventBusGateway:
    return EventBusGateway(clients.events())


def handle_ready_message(record: SQSRecord) -> dict[str, Any]:
    """Powertools' SQS record handler: one ThumbnailQueue message → :func:`render_image_set`."""
    event = ready_event_in(record)
    try:
        outcome = render_image_set(
            event,
            settings=current_thumbnail_settings(),
            imaging=_gateway(),
            s3=clients.s3(),
            events=_events(),
        )
    except FRAME_ERRORS as error:
        # The reason names sizes, checksums, syntaxes or the photometric interpretation: never a value
        # that could identify anyone.
        logger.error(
            "thumbnail not rendered",
            extra={
                "image_set_id": event.image_set_id,
                "error": type(error).__name__,
                "reason": str(error),
            },
        )
        count(Metric.THUMBNAILS_FAILED)
        raise
    return outcome.as_dict()


@tracer.capture_method(capture_response=False)
def render_image_set(
    event: ReadyEvent,
    *,
    settings: ThumbnailSettings,
    imaging: ImageSetGateway,
    s3: S3Client,
    events: EventBusGateway,
    workers: int = WORKERS,
    executor: Callable[[int], ThreadPoolExecutor] = ThreadPoolExecutor,
) -> ThumbnailOutcome:
    """Render, write, tag and announce one Ready image set's thumbnails (see the module docstring)."""
    image_set_id = event.image_set_id
    if event.datastore_id != settings.datastore_id:
        logger.warning("Ready event of another data store ignored", extra={"image_set_id": image_set_id})
        return ThumbnailOutcome(image_set_id, "other-datastore")
    properties = imaging.image_set_or_none(event.datastore_id, image_set_id)
    if properties is None or properties.arn is None or properties.state == "DELETED":
        logger.warning("image set gone before its thumbnail", extra={"image_set_id": image_set_id})
        return ThumbnailOutcome(image_set_id, "gone")
    metadata = imaging.metadata(event.datastore_id, image_set_id)
    chosen = representative(metadata)
    if chosen is None:
        logger.info("no image frames: no thumbnail", extra={"image_set_id": image_set_id})
        return ThumbnailOutcome(image_set_id, "no-frames")
    sheets = sorted(contact_sheet(metadata).items(), key=lambda item: _series_order(metadata, item[0]))
    # Every frame's photometric interpretation is checked before any frame is fetched.
    sized = [(chosen, settings.size), *((ref, settings.tile_size) for _, refs in sheets for ref in refs)]
    jobs = [(ref, check_renderable(ref.dicom), size) for ref, size in sized]
    with executor(workers) as pool:
        render_one = in_this_trace(lambda job: _render_frame(imaging, event, metadata, job))
        rendered = list(pool.map(render_one, jobs))
    main, tiles = rendered[0], rendered[1:]

    folder = settings.folder(event.datastore_id, image_set_id)
    thumbnail_key = f"{folder}thumbnail.png"
    sidecar_key = f"{folder}thumbnail.json"
    images: list[tuple[str, bytes]] = [(thumbnail_key, _png(main.image))]
    sheet_entries = []
    position = 0
    for number, (series_uid, refs) in enumerate(sheets, start=1):
        series_tiles = tiles[position : position + len(refs)]
        position += len(refs)
        sheet = compose_sheet([t.image for t in series_tiles], settings.tile_size)
        key = f"{folder}contact-sheet-{number:02d}.png"
        images.append((key, _png(sheet)))
        sheet_entries.append(
            {
                "key": key,
                "width": int(sheet.shape[1]),
                "height": int(sheet.shape[0]),
                "tileSize": settings.tile_size,
                "series": _series_facts(metadata, series_uid),
                "tiles": [t.describe() for t in series_tiles],
            }
        )
    height, width = (int(n) for n in main.image.shape[:2])
    sidecar = {
        "schemaVersion": 1,
        "renderer": f"healthimaging-automation {ahi_pipeline.__version__}",
        "datastoreId": event.datastore_id,
        "imageSetId": image_set_id,
        "imageSetVersion": properties.version_id,
        "thumbnail": {
            "key": thumbnail_key,
            "width": width,
            "height": height,
            "series": _series_facts(metadata, chosen.series_uid),
            "frame": main.describe(),
        },
        "contactSheets": sheet_entries,
    }
    for key, png in images:
        _put(s3, settings.output_bucket, key, png, content_type="image/png", cache=CACHE_CONTROL)
    _put(
        s3,
        settings.output_bucket,
        sidecar_key,
        json.dumps(sidecar, indent=1).encode(),
        content_type="application/json",
        cache=SIDECAR_CACHE_CONTROL,
    )
    imaging.tag(properties.arn, {THUMBNAIL_TAG: thumbnail_key})
    sheet_keys = tuple(key for key, _ in images[1:])
    events.put(
        [
            thumbnail_rendered(
                bus=settings.event_bus_name,
                datastore_id=event.datastore_id,
                image_set_id=image_set_id,
                bucket=settings.output_bucket,
                thumbnail_key=thumbnail_key,
                sidecar_key=sidecar_key,
                contact_sheet_keys=sheet_keys,
                width=width,
                height=height,
                image_set_arn=properties.arn,
            )
        ]
    )
    bytes_read = sum(r.decoded.bytes_read for r in rendered)
    count(Metric.THUMBNAILS_RENDERED)
    count(Metric.CONTACT_SHEETS_RENDERED, len(sheet_keys))
    count(Metric.FRAMES_DECODED, len(rendered))
    metrics.add_metric(name=Metric.FRAME_BYTES_READ, unit="Bytes", value=bytes_read)
    logger.info(
        "thumbnail rendered",
        extra={
            "image_set_id": image_set_id,
            "frames": len(rendered),
            "bytes_read": bytes_read,
            "contact_sheets": len(sheet_keys),
        },
    )
    return ThumbnailOutcome(
        image_set_id,
        "rendered",
        thumbnail_key,
        sheet_keys,
        bytes_read,
        len(rendered),
    )

"""Which frames a thumbnail and a contact sheet show (pure): from the image set's metadata.

The representative frame of an image set is its middle instance along the slice normal (the
projection of ``(0020,0032) ImagePositionPatient`` on the cross product of the two direction cosines of
``(0020,0037) ImageOrientationPatient``), else by ``(0020,0013) InstanceNumber``, else in the order the
metadata lists them; of a multi-frame instance, its middle frame.  A contact sheet shows up to 16
instances of a series, evenly spaced in the same order (the first and the last included).
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any, Final

__all__ = ["CONTACT_SHEET_TILES", "FrameRef", "contact_sheet", "ordered_instances", "representative"]

CONTACT_SHEET_TILES: Final = 16


@dataclass(frozen=True, slots=True)
class FrameRef:
    """One frame of the image set: its series, instance and frame id, and the instance's attributes."""

    series_uid: str
    sop_uid: str
    frame_id: str
    frame_index: int
    dicom: Mapping[str, Any]
    frame: Mapping[str, Any]


def _floats(value: Any, count: int) -> list[float] | None:
    if not isinstance(value, list) or len(value) != count:
        return None
    try:
        numbers = [float(item) for item in value]
    except (TypeError, ValueError):
        return None
    return numbers if all(math.isfinite(n) for n in numbers) else None


def _position(dicom: Mapping[str, Any]) -> float | None:
    orientation = _floats(dicom.get("ImageOrientationPatient"), 6)
    position = _floats(dicom.get("ImagePositionPatient"), 3)
    if orientation is None or position is None:
        return None
    (rx, ry, rz), (cx, cy, cz) = orientation[:3], orientation[3:]
    normal = (ry * cz - rz * cy, rz * cx - rx * cz, rx * cy - ry * cx)
    return sum(p * n for p, n in zip(position, normal, strict=True))


def _number(dicom: Mapping[str, Any]) -> float | None:
    try:
        return float(dicom.get("InstanceNumber"))  # type: ignore[arg-type]
    except (TypeError, ValueError):
        return None


def ordered_instances(series: Mapping[str, Any]) -> list[tuple[str, Mapping[str, Any]]]:
    """A series' instances ``(sop uid, instance)`` along the slice normal, else by number, else as listed."""
    instances = [
        (sop, instance)
        for sop, instance in (series.get("Instances") or {}).items()
        if isinstance(instance, Mapping) and instance.get("ImageFrames")
    ]
    positions = [_position(instance.get("DICOM") or {}) for _, instance in instances]
    if instances and all(p is not None for p in positions):
        order = sorted(range(len(instances)), key=lambda i: (positions[i], i))
        return [instances[i] for i in order]
    numbers = [_number(instance.get("DICOM") or {}) for _, instance in instances]
    if instances and all(n is not None for n in numbers):
        order = sorted(range(len(instances)), key=lambda i: (numbers[i], i))
        return [instances[i] for i in order]
    return instances


def _middle_frame(series_uid: str, sop: str, instance: Mapping[str, Any]) -> FrameRef:
    frames: Sequence[Mapping[str, Any]] = instance.get("ImageFrames") or []
    index = len(frames) // 2
    return FrameRef(
        series_uid, sop, str(frames[index]["ID"]), index, instance.get("DICOM") or {}, frames[index]
    )


def representative(metadata: Mapping[str, Any]) -> FrameRef | None:
    """The frame the image set's thumbnail shows (``None`` when it has no frames)."""
    everything = [
        (series_uid, sop, instance)
        for series_uid, series in ((metadata.get("Study") or {}).get("Series") or {}).items()
        for sop, instance in ordered_instances(series)
    ]
    if not everything:
        return None
    series_uid, sop, instance = everything[len(everything) // 2]
    return _middle_frame(series_uid, sop, instance)


def contact_sheet(metadata: Mapping[str, Any], tiles: int = CONTACT_SHEET_TILES) -> dict[str, list[FrameRef]]:
    """Series uid → up to ``tiles`` evenly spaced frames, for every series with more than one instance."""
    sheets: dict[str, list[FrameRef]] = {}
    for series_uid, series in ((metadata.get("Study") or {}).get("Series") or {}).items():
        instances = ordered_instances(series)
        if len(instances) < 2:
            continue
        count = min(tiles, len(instances))
        picks = sorted({round(i * (len(instances) - 1) / (count - 1)) for i in range(count)})
        sheets[series_uid] = [_middle_frame(series_uid, *instances[i]) for i in picks]
    return sheets

"""Which frames a thumbnail and a contact sheet show."""

from __future__ import annotations

import itertools
from typing import Any

import pytest

from ahi_pipeline.frame_choice import contact_sheet, ordered_instances, representative

pytestmark = pytest.mark.unit


def instance(
    sop: str, *, z: float | None = None, number: int | None = None, frames: int = 1
) -> dict[str, Any]:
    dicom: dict[str, Any] = {"SOPInstanceUID": sop}
    if z is not None:
        dicom["ImageOrientationPatient"] = ["1", "0", "0", "0", "1", "0"]
        dicom["ImagePositionPatient"] = ["0", "0", str(z)]
    if number is not None:
        dicom["InstanceNumber"] = str(number)
    return {"DICOM": dicom, "ImageFrames": [{"ID": f"{sop}-f{i}"} for i in range(frames)]}


def document(*instances: tuple[str, dict[str, Any]], series: str = "1.2.3") -> dict[str, Any]:
    return {"Study": {"Series": {series: {"DICOM": {}, "Instances": dict(instances)}}}}


def test_instances_are_ordered_along_the_slice_normal_whatever_their_numbers() -> None:
    # Given slices listed out of order, numbered against their positions
    doc = document(
        ("c", instance("c", z=30, number=1)),
        ("a", instance("a", z=-10, number=3)),
        ("b", instance("b", z=5, number=2)),
    )
    # When ordered / Then by position along the normal (z for an axial orientation)
    assert [sop for sop, _ in ordered_instances(doc["Study"]["Series"]["1.2.3"])] == ["a", "b", "c"]


def test_without_positions_the_instance_number_decides_then_the_listing() -> None:
    by_number = document(("x", instance("x", number=9)), ("y", instance("y", number=2)))
    assert [s for s, _ in ordered_instances(by_number["Study"]["Series"]["1.2.3"])] == ["y", "x"]
    as_listed = document(("x", instance("x")), ("y", instance("y", number=2)))
    assert [s for s, _ in ordered_instances(as_listed["Study"]["Series"]["1.2.3"])] == ["x", "y"]


def test_the_representative_frame_is_the_middle_instance_and_its_middle_frame() -> None:
    doc = document(*((sop, instance(sop, z=float(i))) for i, sop in enumerate("abcde")))
    chosen = representative(doc)
    assert chosen is not None
    assert (chosen.sop_uid, chosen.frame_id) == ("c", "c-f0")
    multiframe = document(("m", instance("m", frames=7)))
    chosen = representative(multiframe)
    assert chosen is not None
    assert (chosen.frame_index, chosen.frame_id) == (3, "m-f3")
    assert representative({"Study": {"Series": {}}}) is None


def test_a_contact_sheet_spaces_up_to_sixteen_instances_evenly_including_both_ends() -> None:
    doc = document(*((f"s{i:03d}", instance(f"s{i:03d}", z=float(i))) for i in range(100)))
    [tiles] = contact_sheet(doc).values()
    assert len(tiles) == 16
    assert (tiles[0].sop_uid, tiles[-1].sop_uid) == ("s000", "s099")
    steps = {int(b.sop_uid[1:]) - int(a.sop_uid[1:]) for a, b in itertools.pairwise(tiles)}
    assert steps <= {6, 7}
    few = document(*((f"t{i}", instance(f"t{i}", z=float(i))) for i in range(3)))
    assert [t.sop_uid for t in next(iter(contact_sheet(few).values()))] == ["t0", "t1", "t2"]
    assert contact_sheet(document(("only", instance("only")))) == {}

"""Benchmark of thumbnails: our reduced-level path next to the HealthImaging guide's full decode.

Three frames, each imported by the emulator's own code (``import_instance``: ``prepare_frame``, the
HTJ2K RPCL codestream with TLM markers and one tile-part per resolution, ``level_checksums``), so the
codestream is what GetImageFrame returns and the ``ImageFrames`` entry is what the metadata holds:

* a 2048×2048 chest radiograph (DX, BitsStored 12), ``bench.synthetic.radiograph``;
* a 4096×4096 one (BitsStored 16);
* a 512×512 CT slice (BitsStored 12), ``bench.synthetic.ct_series``.

Contenders, on the same bytes, with the same rendering (``ahi_pipeline.render``) and PNG encoder:

* ours (``ahi_pipeline.thumbnails``): ``read_prefix`` of a ``BytesIO`` over the frame (reads the
  main header, then only the tile-parts the smallest level of ≥ 256 pixels needs), ``decode_level``
  (OpenJPEG at that level), ``verify_level`` (its CRC32 against the metadata), ``thumbnail``;
* the guide's Python sample: ``openjpeg.utils.decode`` of the whole codestream (pylibjpeg-openjpeg),
  then ``render`` of the full-resolution array to a 256-pixel longest side and ``imagecodecs.png_encode``.

Rounds interleave the contenders (their order alternating) after one warm-up; medians are kept, so
noise hits both alike.  Targets, as ratios: speed-up ≥ 20× at 2048², ≥ 50× at 4096², ≥ 2× at 512²,
and bytes read ≤ 15 % of the frame at 2048².  The two thumbnails' grey difference is reported only.

Run ``python -m bench.thumbnails`` (function :func:`bench_thumbnails`); exits non-zero when a target is
missed.
"""

from __future__ import annotations

import argparse
import io
import statistics
import sys
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import imagecodecs
import numpy as np
import openjpeg.utils
import pydicom
from pydicom.dataset import FileMetaDataset
from pydicom.uid import DigitalXRayImageStorageForPresentation, ExplicitVRLittleEndian, generate_uid

ROOT = Path(__file__).resolve().parents[1]
LAYER = ROOT / "layers" / "shared"
if str(LAYER) not in sys.path:
    sys.path.insert(0, str(LAYER))  # the layer's package, as /opt/python is in Lambda

from ahi_pipeline.render import FrameDescription, render  # noqa: E402
from ahi_pipeline.thumbnails import decode_level, read_prefix, thumbnail, verify_level  # noqa: E402
from bench.synthetic import ct_series, radiograph  # noqa: E402
from emulator.imaging.instance import import_instance  # noqa: E402

SIZE = 256  # the thumbnail's longest side


@dataclass(frozen=True)
class Case:
    """One frame as the service stores it: codestream, ``ImageFrames`` entry, instance ``DICOM`` map."""

    name: str
    codestream: bytes
    frame: dict[str, Any]
    dicom: dict[str, Any]
    speedup_target: float
    read_target: float | None = None


class CountingReader(io.BytesIO):
    """A ``BytesIO`` that counts the bytes handed out, as a GetImageFrame body would be read."""

    delivered = 0

    def read(self, size: int | None = -1) -> bytes:
        data = super().read(size)
        self.delivered += len(data)
        return data


@dataclass
class Runs:
    """Per-step seconds of one contender on one case, and its last PNG."""

    steps: dict[str, list[float]] = field(default_factory=dict)
    png: bytes = b""
    bytes_read: int = 0
    level: tuple[int, int] = (0, 0)

    def add(self, step: str, seconds: float) -> None:
        self.steps.setdefault(step, []).append(seconds)

    def median_ms(self, step: str = "total") -> float:
        return statistics.median(self.steps[step]) * 1e3


# ------------------------------------------------------------------------------------------ frames
def radiograph_file(size: int, bits_stored: int) -> bytes:
    """A DX instance (MONOCHROME2, a VOI window) holding :func:`bench.synthetic.radiograph`."""
    meta = FileMetaDataset()
    meta.MediaStorageSOPClassUID = DigitalXRayImageStorageForPresentation
    meta.MediaStorageSOPInstanceUID = generate_uid()
    meta.TransferSyntaxUID = ExplicitVRLittleEndian
    ds = pydicom.Dataset()
    ds.file_meta = meta
    ds.SOPClassUID, ds.SOPInstanceUID = meta.MediaStorageSOPClassUID, meta.MediaStorageSOPInstanceUID
    ds.StudyInstanceUID, ds.SeriesInstanceUID = generate_uid(), generate_uid()
    ds.PatientName, ds.PatientID = "SYNTHETIC^PHANTOM", "SYN-0002"
    ds.StudyDate, ds.StudyTime, ds.Modality = "20240101", "120000", "DX"
    ds.SeriesNumber, ds.InstanceNumber = 1, 1
    ds.Rows = ds.Columns = size
    ds.SamplesPerPixel, ds.PhotometricInterpretation = 1, "MONOCHROME2"
    ds.BitsAllocated, ds.BitsStored, ds.HighBit, ds.PixelRepresentation = 16, bits_stored, bits_stored - 1, 0
    top = (1 << bits_stored) - 1
    ds.WindowCenter, ds.WindowWidth = round(top * 0.45), round(top * 0.8)
    ds.PixelData = radiograph(size, bits_stored).tobytes()
    buffer = io.BytesIO()
    ds.save_as(buffer, enforce_file_format=True)
    return buffer.getvalue()


def imported(name: str, data: bytes, speedup_target: float, read_target: float | None = None) -> Case:
    """Import ``data`` with the emulator's code; keep its one codestream and its metadata."""
    stored: list[bytes] = []

    def store_frame(codestream: bytes) -> str:
        stored.append(codestream)
        return f"{len(stored):032x}"

    instance = import_instance(io.BytesIO(data), f"{name}.dcm", store_frame)
    [frame] = instance.instance_document()["ImageFrames"]
    return Case(name, stored[0], frame, instance.instance, speedup_target, read_target)


def cases() -> list[Case]:
    return [
        imported("2048² DX 12-bit", radiograph_file(2048, 12), 20.0, 0.15),
        imported("4096² DX 16-bit", radiograph_file(4096, 16), 50.0),
        imported("512² CT 12-bit", ct_series(1, 512)[0], 2.0),
    ]


# ------------------------------------------------------------------------------------------ contenders
def _timed(runs: Runs, step: str, call: Callable[[], Any]) -> Any:
    started = time.perf_counter()
    result = call()
    runs.add(step, time.perf_counter() - started)
    return result


def ours(case: Case, runs: Runs) -> None:
    """Read the level's prefix, decode it, verify its checksum, render and encode the PNG."""
    started = time.perf_counter()
    body = CountingReader(case.codestream)
    prefix = _timed(runs, "read", lambda: read_prefix(body, SIZE))
    pixels = _timed(runs, "decode", lambda: decode_level(prefix))
    _timed(runs, "verify", lambda: verify_level(pixels, case.frame))
    result = _timed(runs, "render+png", lambda: thumbnail(pixels, case.dicom, SIZE))
    runs.add("total", time.perf_counter() - started)
    runs.png, runs.bytes_read, runs.level = result.png, body.delivered, pixels.shape[:2]


def guide(case: Case, runs: Runs) -> None:
    """The guide's sample: decode the whole codestream, then the same render, resize and PNG."""
    started = time.perf_counter()
    pixels = _timed(runs, "decode", lambda: openjpeg.utils.decode(case.codestream))
    description = FrameDescription.from_metadata(case.dicom)
    image = _timed(runs, "render", lambda: render(pixels, description, SIZE).image)
    png = _timed(runs, "png", lambda: bytes(imagecodecs.png_encode(image)))
    runs.add("total", time.perf_counter() - started)
    runs.png, runs.bytes_read, runs.level = png, len(case.codestream), pixels.shape[:2]


def grey_difference(ours_png: bytes, guide_png: bytes) -> tuple[int, float, float]:
    """Max, 99th percentile and mean of the absolute grey difference of the two thumbnails."""
    a = imagecodecs.png_decode(ours_png).astype(np.int16)
    b = imagecodecs.png_decode(guide_png).astype(np.int16)
    if a.shape != b.shape:
        return -1, float("nan"), float("nan")
    difference = np.abs(a - b)
    return int(difference.max()), float(np.percentile(difference, 99)), float(difference.mean())


def _verdict(ok: bool) -> str:
    return "PASS" if ok else "FAIL"


def _steps(runs: Runs) -> str:
    return ", ".join(f"{step} {runs.median_ms(step):.1f}" for step in runs.steps if step != "total")


# ------------------------------------------------------------------------------------------ benchmark
def bench_thumbnails(rounds: int = 7) -> bool:
    """Our thumbnail path against the guide's full decode on three frames; True when every target holds."""
    print(f"\n## Thumbnails ({SIZE} px): reduced-level prefix decode vs the guide's full OpenJPEG decode")
    started = time.perf_counter()
    chosen = cases()
    print(f"   frames imported by the emulator's code in {time.perf_counter() - started:.1f} s")
    results = {case.name: (Runs(), Runs()) for case in chosen}
    for round_index in range(rounds + 1):  # round 0 warms up and is dropped
        for case in chosen:
            mine, theirs = (Runs(), Runs()) if round_index == 0 else results[case.name]
            contenders = [(ours, mine), (guide, theirs)]
            for contender, runs in contenders if round_index % 2 else reversed(contenders):
                contender(case, runs)
    print(
        f"   {'frame':<16} {'ours ms':>8} {'guide ms':>9} {'speed-up':>9} {'target':>7}     "
        f"{'read/frame':>10} {'target':>7}     {'level':>9}  grey diff max / p99 / mean"
    )
    ok = True
    for case in chosen:
        mine, theirs = results[case.name]
        speedup = theirs.median_ms() / mine.median_ms()
        fast = speedup >= case.speedup_target
        read = mine.bytes_read / len(case.codestream)
        small = case.read_target is None or read <= case.read_target
        ok = ok and fast and small
        worst, p99, mean = grey_difference(mine.png, theirs.png)
        read_target = "" if case.read_target is None else f"≤ {case.read_target:.0%} {_verdict(small)}"
        height, width = mine.level
        print(
            f"   {case.name:<16} {mine.median_ms():8.1f} {theirs.median_ms():9.1f} {speedup:8.1f}× "
            f"≥ {case.speedup_target:>3.0f}× {_verdict(fast)}  {read:10.1%} {read_target:<12} "
            f"{width:>4}×{height:<4}  {worst:>5} / {p99:3.0f} / {mean:4.2f}"
        )
    print(f"   medians of {rounds} interleaved rounds, in ms:")
    for case in chosen:
        mine, theirs = results[case.name]
        decode_ratio = theirs.median_ms("decode") / (mine.median_ms("read") + mine.median_ms("decode"))
        print(
            f"   {case.name:<16} ours: {_steps(mine)}; guide: {_steps(theirs)}  "
            f"(frame {len(case.codestream) / 1e6:.2f} MB, {mine.bytes_read / 1e3:.0f} kB read; "
            f"decode alone {decode_ratio:.0f}× faster)"
        )
    print(
        "   (ours includes the CRC32 check of the decoded level; the guide's sample checks nothing. "
        "Thumbnails differ because ours renders the 5/3 wavelet's LL band, the guide an area mean.)"
    )
    print(f"   (thumbnail benchmark took {time.perf_counter() - started:.1f} s)")
    return ok


def main() -> int:
    parser = argparse.ArgumentParser(description="Thumbnail benchmark: reduced-level vs full decode")
    parser.add_argument("--rounds", type=int, default=7, help="measured rounds (after one warm-up)")
    args = parser.parse_args()
    return 0 if bench_thumbnails(args.rounds) else 1


if __name__ == "__main__":
    raise SystemExit(main())

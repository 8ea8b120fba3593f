"""The sample DICOM both demos use: files bundled with pydicom and the pydicom-data package (no PHI)."""

from __future__ import annotations

import warnings
from pathlib import Path
from typing import Final

from pydicom.data import get_testdata_file

__all__ = ["SAMPLES", "SYNTHETIC_SLICES", "sample_paths", "synthetic_series"]

SAMPLES: Final = (
    "CT_small.dcm",  # CT, 16-bit signed, explicit VR little endian
    "MR_small.dcm",  # MR, 16-bit, explicit VR
    "emri_small.dcm",  # MR, 10 frames
    "SC_rgb_rle.dcm",  # RGB, RLE lossless
    "JPEG2000.dcm",  # JPEG 2000 lossless source
    "693_J2KR.dcm",  # from the pydicom-data package
)


#: A synthetic CT series made in code (``bench.synthetic``: a phantom, no PHI), so that the demo has a
#: multi-instance series for its contact sheet.
SYNTHETIC_SLICES: Final = 12


def synthetic_series(count: int = SYNTHETIC_SLICES, size: int = 256) -> list[tuple[str, bytes]]:
    """``(name, DICOM P10 bytes)`` of ``count`` slices of one synthetic CT series."""
    from bench.synthetic import ct_series  # noqa: PLC0415 - NumPy and pydicom only when asked

    return [(f"slice-{index + 1:03d}.dcm", data) for index, data in enumerate(ct_series(count, size))]


def sample_paths() -> list[tuple[str, Path]]:
    """``(name, path)`` of each sample that is installed."""
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        found = [(name, get_testdata_file(name)) for name in SAMPLES]
    return [(name, Path(str(path))) for name, path in found if path]

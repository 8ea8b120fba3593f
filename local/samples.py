"""The sample DICOM both demos use: files bundled with pydicom and the pydicom-data package (no PHI)."""

from __future__ import annotations

import warnings
from pathlib import Path
from typing import Final

from pydicom.data import get_testdata_file

__all__ = ["SAMPLES", "sample_paths"]

SAMPLES: Final = (
    "CT_small.dcm",  # CT, 16-bit signed, explicit VR little endian
    "MR_small.dcm",  # MR, 16-bit, explicit VR
    "emri_small.dcm",  # MR, 10 frames
    "SC_rgb_rle.dcm",  # RGB, RLE lossless
    "JPEG2000.dcm",  # JPEG 2000 lossless source
    "693_J2KR.dcm",  # from the pydicom-data package
)


def sample_paths() -> list[tuple[str, Path]]:
    """``(name, path)`` of each sample that is installed."""
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        found = [(name, get_testdata_file(name)) for name in SAMPLES]
    return [(name, Path(str(path))) for name, path in found if path]

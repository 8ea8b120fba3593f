"""The files pydicom bundles for tests: its own and those of the pydicom-data package.

``pydicom.data.get_testdata_files("*")`` also tries to download pydicom's online test set, which the
pydicom-data package already holds; offline, that costs about 15 s of failed downloads and a warning.
Test parametrization needs the list at collection time, so :func:`bundled_files` lists the same
files without the download step, and :func:`testdata_files` (the pydicom call, warning muted) is
used by one slow test that checks both lists agree.
"""

from __future__ import annotations

import functools
import os
import warnings
from pathlib import Path

from pydicom.data import get_testdata_files
from pydicom.data.data_manager import DATA_ROOT, DataTypes, external_data_sources


def _files(paths: list[str]) -> tuple[str, ...]:
    return tuple(sorted({os.path.realpath(path) for path in paths if os.path.isfile(path)}))


@functools.cache
def bundled_files() -> tuple[str, ...]:
    """Return the files of ``get_testdata_files("*")`` (pydicom's and pydicom-data's), sorted."""
    local = [os.fspath(path) for path in (Path(DATA_ROOT) / "test_files").glob("*") if path.suffix != ".py"]
    external = [
        path
        for source in external_data_sources().values()
        for path in source.get_paths("*", DataTypes.DATASET)
    ]
    return _files(local + external)


def testdata_files() -> tuple[str, ...]:
    """Return the files ``get_testdata_files("*")`` lists (slow offline), sorted."""
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        return _files(get_testdata_files("*"))


def short_name(path: str) -> str:
    """Return ``<folder>/<file>`` for a bundled file (``test_files/CT_small.dcm``, ``data/...``)."""
    return f"{os.path.basename(os.path.dirname(path))}/{os.path.basename(path)}"

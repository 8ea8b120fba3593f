"""The files pydicom bundles for tests (its own and the pydicom-data package's), listed once per session."""

from __future__ import annotations

import functools
import os
import warnings

from pydicom.data import get_testdata_files


@functools.cache
def bundled_files() -> tuple[str, ...]:
    """Return the paths of ``get_testdata_files("*")`` that are files, sorted.

    Offline, pydicom also tries to download the files of its online test set and warns that some
    downloads failed; the pydicom-data package already holds those files, so the warning is muted.
    """
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        paths = get_testdata_files("*")
    return tuple(sorted(path for path in paths if os.path.isfile(path)))


def short_name(path: str) -> str:
    """Return ``<folder>/<file>`` for a bundled file (``test_files/CT_small.dcm``, ``data/...``)."""
    return f"{os.path.basename(os.path.dirname(path))}/{os.path.basename(path)}"

"""The import engine of the emulated HealthImaging service: from a DICOM P10 file to image sets.

An import job calls :func:`import_instance` once per input file (frames are transcoded to HTJ2K, or kept
in their original encoding for the syntaxes the service keeps, and handed to the job's ``store_frame``),
then :func:`group_into_image_sets` over the imported
instances, then :func:`build_metadata_document` once per image set.  Files that cannot be imported
raise :class:`ImportFileError`, one ``failure.ndjson`` line each.
"""

from emulator.imaging.errors import ExceptionType, ImportFileError
from emulator.imaging.htj2k import FrameInfo, LevelChecksum
from emulator.imaging.image_sets import SCHEMA_VERSION, build_metadata_document, group_into_image_sets
from emulator.imaging.instance import ImportedInstance, PendingInstance, begin_import, import_instance
from emulator.imaging.stored_syntax import (
    HTJ2K_LOSSLESS_RPCL,
    RETAINED_TRANSFER_SYNTAXES,
    frame_content_type,
    stored_transfer_syntax,
)

__all__ = [
    "HTJ2K_LOSSLESS_RPCL",
    "RETAINED_TRANSFER_SYNTAXES",
    "SCHEMA_VERSION",
    "ExceptionType",
    "FrameInfo",
    "ImportFileError",
    "ImportedInstance",
    "LevelChecksum",
    "PendingInstance",
    "begin_import",
    "build_metadata_document",
    "frame_content_type",
    "group_into_image_sets",
    "import_instance",
    "stored_transfer_syntax",
]

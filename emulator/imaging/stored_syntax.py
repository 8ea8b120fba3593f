"""The transfer syntax an instance's frames are stored in, and the content type GetImageFrame gives them.

The service no longer transcodes every frame (the seed spec, platform §6.3, says it does).  The current
Developer Guide page "Supported transfer syntaxes"
(https://docs.aws.amazon.com/healthimaging/latest/devguide/supported-transfer-syntaxes.html) marks some
syntaxes with an asterisk: their files are "stored in [their] original encoded format during import", and
the instance metadata's ``StoredTransferSyntaxUID`` is the original syntax.  Every other file is
transcoded to HTJ2K lossless, and ``StoredTransferSyntaxUID`` is HTJ2K Lossless RPCL
(1.2.840.10008.1.2.4.202); "if the StoredTransferSyntaxUID key does not exist or is set to null, you can
assume it is encoded as HTJ2K Lossless RPCL".  A real GetImageSetMetadata response of a transcoded
instance carries ``"StoredTransferSyntaxUID": "1.2.840.10008.1.2.4.202"``, so the emulator writes the key
for every instance with frames.

Starred rows on that page, and what the emulator does with them:

* 1.2.840.10008.1.2.4.50 JPEG Baseline (Process 1), 1.2.840.10008.1.2.4.91 JPEG 2000 and
  1.2.840.10008.1.2.4.203 HTJ2K (lossy allowed): stored as-is (:data:`RETAINED_TRANSFER_SYNTAXES`).
  1.2.840.10008.1.2.4.51 (JPEG 12-bit), .81 (JPEG-LS near-lossless), .90, .92/.93 and .201/.202 are not
  starred: transcoded.
* 1.2.840.10008.1.2.1 Explicit VR Little Endian is starred for binary segmentations only ("binary
  segmentation retains original encoding, whereas non-binary segmentation is transcoded").  The emulator
  still refuses 1-bit pixel data (validation), so that case never arises here.
* The MPEG-2, H.264 and HEVC video syntaxes (.100-.108) are starred too; the emulator does not accept
  them on import.

The GetImageFrame content types come from botocore's model of ``GetImageFrameResponse.contentType``:
``image/jph`` for .202 or a missing stored syntax, ``image/jpeg`` for .50, ``image/j2c`` for .91,
``image/jphc`` for .203, ``application/octet-stream`` for 1.2.840.10008.1.2.1.

Not documented, so decided here: a kept frame is the file's encapsulated frame byte for byte (its
fragments joined, DICOM's even-length padding included); its ``ImageFrames`` entry has no
``PixelDataChecksumFromBaseToFullResolution`` (pixel data verification is about transcoding, platform
§6.6, and nothing is transcoded; the reduced levels of a lossy codestream depend on the decoder), while
``MinPixelValue``, ``MaxPixelValue`` and ``FrameSizeInBytes`` come from pydicom's decoding of the frame,
as for transcoded frames.  A real response also carries ``"ChecksumType": "DECOMPRESSED"`` beside
``StoredTransferSyntaxUID``; no page explains it, so the emulator does not write it.

The page newer still (its ``.md`` edition) adds data stores created with ``losslessStorageFormat``
``JPEG_2000_LOSSLESS``; the emulator refuses that option, so HTJ2K is the only lossless store format.
"""

from __future__ import annotations

from typing import Final

HTJ2K_LOSSLESS_RPCL: Final = "1.2.840.10008.1.2.4.202"
"""High-Throughput JPEG 2000 with RPCL Options Image Compression (Lossless Only): transcoded frames."""

RETAINED_TRANSFER_SYNTAXES: Final[dict[str, str]] = {
    "1.2.840.10008.1.2.4.50": "image/jpeg",
    "1.2.840.10008.1.2.4.91": "image/j2c",
    "1.2.840.10008.1.2.4.203": "image/jphc",
}
"""Accepted syntaxes whose frames the service stores in their original encoding, to their content type."""

FRAME_CONTENT_TYPES: Final[dict[str, str]] = {
    HTJ2K_LOSSLESS_RPCL: "image/jph",
    "1.2.840.10008.1.2.1": "application/octet-stream",
    **RETAINED_TRANSFER_SYNTAXES,
}
"""GetImageFrame's ``Content-Type`` by ``StoredTransferSyntaxUID`` (botocore's documentation)."""

DEFAULT_CONTENT_TYPE: Final = "application/octet-stream"
"""The documented default, for a stored syntax the model does not name."""


def stored_transfer_syntax(transfer_syntax: str, *, retain_original_encoding: bool = True) -> str:
    """Return the ``StoredTransferSyntaxUID`` of an instance imported in ``transfer_syntax``.

    Parameters
    ----------
    transfer_syntax : str
        The file's (0002,0010) TransferSyntaxUID, one the import accepts.
    retain_original_encoding : bool
        Keep the syntaxes the service keeps (the service's behaviour); False transcodes every frame to
        HTJ2K, as the seed spec describes.
    """
    if retain_original_encoding and transfer_syntax in RETAINED_TRANSFER_SYNTAXES:
        return transfer_syntax
    return HTJ2K_LOSSLESS_RPCL


def frame_content_type(stored: str | None) -> str:
    """Return GetImageFrame's content type for frames stored in ``stored`` (None: HTJ2K lossless RPCL)."""
    return FRAME_CONTENT_TYPES.get(stored or HTJ2K_LOSSLESS_RPCL, DEFAULT_CONTENT_TYPE)

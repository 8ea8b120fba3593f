"""Import one DICOM P10 file: validate it, transcode (or keep) its frames, and convert its metadata.

:func:`import_instance` is the unit of work of an import job.  The job hands it one downloaded input
file and a callback that stores one encoded frame and returns its image frame ID; it gets back the
instance's metadata (split by level) with one ``ImageFrames`` entry per stored frame, or an
:class:`~emulator.imaging.errors.ImportFileError` for the file's ``failure.ndjson`` line.

Frames are stored as lossless HTJ2K, except those of the syntaxes the service keeps in their original
encoding (:mod:`emulator.imaging.stored_syntax`: JPEG Baseline, JPEG 2000, HTJ2K): their encapsulated
frames are stored byte for byte, without resolution checksums.  Those frames are decoded all the same,
which checks that the pixel data is readable and gives each frame's smallest and largest sample.

Frames are decoded one at a time (pydicom's ``iter_pixels``; multi-frame pixel data is streamed from
the file), so a large multi-frame instance is never decoded whole.  HTJ2K encoding and its
verification run on a small shared thread pool while this thread decodes the next frame, computes
the resolution checksums and converts the metadata; ``store_frame`` is always called on the calling
thread, in frame order.  A file that fails after some frames were stored leaves those frames
unreferenced: no metadata points at them.
"""

from __future__ import annotations

import collections
import contextlib
import functools
import io
import os
from collections.abc import Callable, Iterator
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass
from typing import Any, BinaryIO, Final, Protocol

import numpy as np
from pydicom import dcmread
from pydicom.dataelem import RawDataElement
from pydicom.dataset import Dataset
from pydicom.encaps import generate_frames
from pydicom.errors import InvalidDicomError
from pydicom.pixels.utils import iter_pixels

from emulator.imaging.dicom_json import partitioned_attributes
from emulator.imaging.errors import ImportFileError
from emulator.imaging.htj2k import (
    FrameInfo,
    HTJ2KError,
    LevelChecksum,
    Pixels,
    PreparedFrame,
    VerificationError,
    encode_and_verify,
    level_checksums,
    prepare_frame,
)
from emulator.imaging.levels import Level
from emulator.imaging.stored_syntax import HTJ2K_LOSSLESS_RPCL, stored_transfer_syntax
from emulator.imaging.validation import (
    PIXEL_DATA,
    SUPPORTED_TRANSFER_SYNTAXES,
    PixelDescription,
    check_element_constraints,
    check_identifiers,
    check_transfer_syntax,
    describe_pixels,
)

DEFLATED: Final = "1.2.840.10008.1.2.1.99"

DEFER_SIZE: Final = 4 * 1024 * 1024
"""Top-level values larger than this stay in the file until used (multi-frame pixel data never is)."""

WORKERS: Final = max(2, min(4, os.cpu_count() or 2))
"""Threads that encode and verify frames."""

StoreFrame = Callable[[bytes], str]


@dataclass(frozen=True)
class ImportedInstance:
    """One imported SOP instance: its metadata, split by level, and its stored frames.

    Attributes
    ----------
    input_file : str
        The input object's key, as ``success.ndjson`` reports it.
    study_instance_uid, series_instance_uid, sop_instance_uid : str
        (0020,000D) StudyInstanceUID, (0020,000E) SeriesInstanceUID and (0008,0018) SOPInstanceUID.
    patient, study, series : dict[str, Any]
        The normalized attributes of the Patient, Study and Series levels.
    instance : dict[str, Any]
        Every other attribute: file meta, private elements, ``"PixelData": None``.
    vrs : dict[str, str]
        The instance's ``DICOMVRs``.
    frames : tuple[FrameInfo, ...]
        One entry per frame, in frame order; empty for instances without (7FE0,0010) PixelData.
    stored_transfer_syntax : str or None
        The ``StoredTransferSyntaxUID`` of the frames: HTJ2K Lossless RPCL, or the file's own syntax
        when the service keeps it; None without frames.
    """

    input_file: str
    study_instance_uid: str
    series_instance_uid: str
    sop_instance_uid: str
    patient: dict[str, Any]
    study: dict[str, Any]
    series: dict[str, Any]
    instance: dict[str, Any]
    vrs: dict[str, str]
    frames: tuple[FrameInfo, ...]
    stored_transfer_syntax: str | None = None

    def instance_document(self) -> dict[str, Any]:
        """Return the instance's entry under ``Study.Series.<uid>.Instances``.

        ``DICOMVRs`` is always present (``{}`` when every VR follows from its key);
        ``StoredTransferSyntaxUID`` and ``ImageFrames`` are present only when the instance has frames
        (the order of keys is that of a real GetImageSetMetadata response).
        """
        document: dict[str, Any] = {"DICOM": self.instance, "DICOMVRs": self.vrs}
        if self.frames:
            document["StoredTransferSyntaxUID"] = self.stored_transfer_syntax or HTJ2K_LOSSLESS_RPCL
            document["ImageFrames"] = [frame.as_metadata() for frame in self.frames]
        return document


def _executor() -> ThreadPoolExecutor:
    """Return this process's encoding thread pool (a forked child gets its own)."""
    return _executor_of(os.getpid())


@functools.cache
def _executor_of(pid: int) -> ThreadPoolExecutor:
    return ThreadPoolExecutor(max_workers=WORKERS, thread_name_prefix=f"htj2k-{pid}")


@dataclass
class _Pending:
    number: int
    frame: PreparedFrame
    future: Future[tuple[bytes, tuple[LevelChecksum, ...]]]


def _transcode(frame: PreparedFrame) -> tuple[bytes, tuple[LevelChecksum, ...]]:
    """Encode and verify one frame and compute its per-level checksums (on a pool thread)."""
    return encode_and_verify(frame), level_checksums(frame)


class _FrameSink(Protocol):
    """Where decoded frames go: :class:`_FrameTranscoder` or :class:`_FrameRetainer`."""

    def submit(self, number: int, pixels: Pixels) -> None: ...

    def finish(self) -> tuple[FrameInfo, ...]: ...

    def abandon(self) -> None: ...


class _FrameTranscoder:
    """Encodes frames on the thread pool and stores them, in order, on the calling thread."""

    def __init__(self, store_frame: StoreFrame, bits_stored: int) -> None:
        self._store_frame = store_frame
        self._bits_stored = bits_stored
        self._pending: collections.deque[_Pending] = collections.deque()
        self.frames: list[FrameInfo] = []

    def submit(self, number: int, pixels: Pixels) -> None:
        """Start transcoding frame ``number`` (1-based); store earlier frames once done."""
        try:
            frame = prepare_frame(pixels, self._bits_stored)
        except HTJ2KError as exc:
            raise ImportFileError.validation(f"Frame {number} cannot be transcoded: {exc}") from exc
        future = _executor().submit(_transcode, frame)
        self._pending.append(_Pending(number, frame, future))
        while len(self._pending) > WORKERS:
            self._complete_oldest()

    def finish(self) -> tuple[FrameInfo, ...]:
        """Wait for every frame, store it, and return the frames in order."""
        while self._pending:
            self._complete_oldest()
        return tuple(self.frames)

    def abandon(self) -> None:
        """Drop the frames still in flight (the import failed)."""
        for pending in self._pending:
            pending.future.cancel()
        self._pending.clear()

    def _complete_oldest(self) -> None:
        pending = self._pending.popleft()
        try:
            codestream, checksums = pending.future.result()
        except VerificationError as exc:
            raise ImportFileError.internal(
                f"Pixel data verification failed for frame {pending.number}: {exc}"
            ) from exc
        except HTJ2KError as exc:
            raise ImportFileError.internal(f"Frame {pending.number} could not be transcoded: {exc}") from exc
        try:
            frame_id = self._store_frame(codestream)
        except Exception as exc:
            raise ImportFileError.internal(f"Frame {pending.number} could not be stored") from exc
        self.frames.append(
            FrameInfo(
                frame_id=frame_id,
                checksums=checksums,
                min_pixel_value=pending.frame.minimum,
                max_pixel_value=pending.frame.maximum,
                frame_size_in_bytes=int(pending.frame.pixels.nbytes),
            )
        )


class _FrameRetainer:
    """Stores each frame in its original encoding (a syntax the service keeps), in order.

    :meth:`submit` takes each decoded frame for its smallest and largest sample and its decoded size;
    :meth:`store` then stores the encapsulated frames read from the file.  No resolution checksums: the
    frames are not transcoded, so nothing is verified, and a lossy codestream has no reversible
    resolution levels to checksum (the Developer Guide does not say; see ``stored_syntax``).
    """

    def __init__(self, store_frame: StoreFrame) -> None:
        self._store_frame = store_frame
        self._decoded: list[tuple[int, int, int]] = []
        self.frames: list[FrameInfo] = []

    def submit(self, number: int, pixels: Pixels) -> None:
        array = np.asarray(pixels)
        if array.dtype.kind not in "iu":
            raise ImportFileError.validation(f"Frame {number} decodes to {array.dtype} samples")
        self._decoded.append((int(array.min()), int(array.max()), int(array.nbytes)))

    def store(self, encoded: Iterator[bytes]) -> None:
        """Store the encoded frames; there must be one per decoded frame."""
        for number, data in enumerate(encoded, start=1):
            if number > len(self._decoded):
                break
            try:
                frame_id = self._store_frame(data)
            except Exception as exc:
                raise ImportFileError.internal(f"Frame {number} could not be stored") from exc
            minimum, maximum, size = self._decoded[number - 1]
            self.frames.append(FrameInfo(frame_id, (), minimum, maximum, size))
        if len(self.frames) != len(self._decoded):
            raise ImportFileError.validation(
                f"The encapsulated pixel data does not hold the {len(self._decoded)} frames it decodes to"
            )

    def finish(self) -> tuple[FrameInfo, ...]:
        return tuple(self.frames)

    def abandon(self) -> None:
        """Nothing is in flight: frames are stored as soon as they are read."""


def _encapsulated_frames(fp: BinaryIO, ds: Dataset, transfer_syntax: str, count: int) -> Iterator[bytes]:
    """Yield the encoded bytes of each frame of the encapsulated (7FE0,0010) PixelData, in order.

    The value is read from ``ds`` when it was loaded, else from the file (deferred values keep their
    offset); frames spanning several fragments are joined, as pydicom's ``generate_frames`` does with the
    Basic or Extended Offset Table or, without one, the markers of the codestreams.
    """
    # pydicom types get_item() as a DataElement, but a deferred value is still a RawDataElement
    element: object = ds.get_item(PIXEL_DATA, keep_deferred=True)
    value: object = getattr(element, "value", None)
    source: bytes | BinaryIO
    if isinstance(value, bytes):
        source = value
    elif isinstance(element, RawDataElement):  # deferred: its value is still in the file
        fp.seek(element.value_tell)
        source = fp
    else:
        raise ImportFileError.validation("The encapsulated pixel data could not be read")
    offsets = None
    if "ExtendedOffsetTable" in ds and "ExtendedOffsetTableLengths" in ds:
        offsets = (ds.ExtendedOffsetTable, ds.ExtendedOffsetTableLengths)
    try:
        yield from generate_frames(source, number_of_frames=count, extended_offsets=offsets)
    except ImportFileError:
        raise
    except Exception as exc:
        raise ImportFileError.validation(
            f"The encapsulated pixel data ({SUPPORTED_TRANSFER_SYNTAXES[transfer_syntax]}) could not be "
            f"split into its {count} frames: {type(exc).__name__}"
        ) from exc


@contextlib.contextmanager
def _opened(source: str | os.PathLike[str] | BinaryIO) -> Iterator[BinaryIO]:
    if isinstance(source, str | os.PathLike):
        try:
            handle = open(source, "rb")  # noqa: SIM115 - closed by the with below
        except OSError as exc:
            raise ImportFileError.internal("The input file could not be opened") from exc
        with handle:
            yield handle
    elif source.seekable():
        yield source
    else:
        yield io.BytesIO(source.read())


def _read_dataset(fp: BinaryIO) -> Dataset:
    """Return the data set in ``fp``, large top-level values deferred (except for deflated files)."""
    start = fp.tell()
    try:
        ds = dcmread(fp, defer_size=DEFER_SIZE)
        transfer_syntax = getattr(ds, "file_meta", {}).get("TransferSyntaxUID")
        if transfer_syntax == DEFLATED:
            fp.seek(start)
            ds = dcmread(fp)
    except InvalidDicomError:
        raise ImportFileError.validation(
            "The input file is not a DICOM Part 10 file: the 'DICM' prefix is missing"
        ) from None
    except MemoryError:
        raise
    except Exception as exc:
        raise _unparsable(exc) from exc
    return ds


def _unparsable(exc: BaseException) -> ImportFileError:
    return ImportFileError.validation(f"The DICOM data set could not be parsed ({type(exc).__name__})")


def _streamed(transfer_syntax: str, pixels: PixelDescription | None) -> bool:
    """Whether the frames are read from the file one by one (multi-frame, not deflated)."""
    return pixels is not None and pixels.number_of_frames > 1 and transfer_syntax != DEFLATED


def _frames(
    fp: BinaryIO, ds: Dataset, transfer_syntax: str, pixels: PixelDescription | None
) -> Iterator[tuple[int, Pixels]]:
    """Yield ``(number, samples)`` for each frame, decoded by pydicom one at a time.

    Multi-frame pixel data is streamed from the file, which then must not be read elsewhere until
    the last frame; a single frame is decoded from the data set.
    """
    if pixels is None:
        return
    frames = iter_pixels(fp) if _streamed(transfer_syntax, pixels) else iter_pixels(ds)
    number = 0
    while True:
        number += 1
        try:
            frame = next(frames)
        except StopIteration:
            return
        except Exception as exc:
            raise ImportFileError.validation(
                f"Pixel data of frame {number} could not be decoded with transfer syntax {transfer_syntax} "
                f"({SUPPORTED_TRANSFER_SYNTAXES[transfer_syntax]}): {type(exc).__name__}"
            ) from exc
        yield number, frame


def _attributes(ds: Dataset) -> tuple[dict[Level, dict[str, Any]], dict[str, str]]:
    try:
        return partitioned_attributes(ds)
    except Exception as exc:
        raise _unparsable(exc) from exc


def import_instance(
    source: str | os.PathLike[str] | BinaryIO,
    input_file: str,
    store_frame: StoreFrame,
    *,
    retain_original_encoding: bool = True,
) -> ImportedInstance:
    """Import one DICOM P10 file.

    Parameters
    ----------
    source : str | os.PathLike | BinaryIO
        The file's path, or a binary file object positioned at its start.
    input_file : str
        The input object's key, recorded in :attr:`ImportedInstance.input_file`.
    store_frame : Callable[[bytes], str]
        Stores one encoded frame and returns its image frame ID; called once per frame, in order, on
        the calling thread, only for frames that passed pixel verification.  A frame is an HTJ2K
        codestream, or the file's own encoded frame for a syntax the service keeps.
    retain_original_encoding : bool
        Keep the frames of JPEG Baseline, JPEG 2000 and HTJ2K files in their original encoding, as the
        service does; False transcodes every frame to HTJ2K lossless (the seed spec's behaviour).

    Returns
    -------
    ImportedInstance
        The instance's metadata and frames.

    Raises
    ------
    ImportFileError
        ``ValidationException`` when the file is not DICOM P10, lacks (0002,0010) TransferSyntaxUID
        or uses an unsupported one, lacks (0020,000D) StudyInstanceUID, (0020,000E)
        SeriesInstanceUID or (0008,0018) SOPInstanceUID, breaks an element constraint, or has pixel
        data pydicom cannot decode; ``InternalServerException`` when transcoding, pixel verification
        or storing a frame fails.
    """
    return begin_import(
        source, input_file, store_frame, retain_original_encoding=retain_original_encoding
    ).result()


class PendingInstance:
    """An instance whose metadata is read and whose last frames may still be encoding.

    :func:`begin_import` returns it as soon as every frame is decoded and handed to the encoding pool,
    so a caller can start reading the next file while this one's frames are encoded, verified and
    checksummed; :meth:`result` waits for them, stores them in order and returns the instance.
    """

    def __init__(
        self, identity: tuple[str, str, str, str], levels: dict[Level, dict[str, Any]], vrs: dict[str, str],
        transcoder: _FrameSink, stored_transfer_syntax: str | None,
    ) -> None:  # fmt: skip
        self._identity = identity
        self._levels = levels
        self._vrs = vrs
        self._transcoder = transcoder
        self._stored_transfer_syntax = stored_transfer_syntax

    def result(self) -> ImportedInstance:
        """Wait for the frames; raises ImportFileError when one fails verification or storage."""
        try:
            stored = self._transcoder.finish()
        finally:
            self._transcoder.abandon()
        input_file, study_uid, series_uid, sop_uid = self._identity
        return ImportedInstance(
            input_file=input_file,
            study_instance_uid=study_uid,
            series_instance_uid=series_uid,
            sop_instance_uid=sop_uid,
            patient=self._levels[Level.PATIENT],
            study=self._levels[Level.STUDY],
            series=self._levels[Level.SERIES],
            instance=self._levels[Level.INSTANCE],
            vrs=self._vrs,
            frames=stored,
            stored_transfer_syntax=self._stored_transfer_syntax if stored else None,
        )

    def abandon(self) -> None:
        """Drop the frames still in flight (the caller gives up on this instance)."""
        self._transcoder.abandon()


def begin_import(
    source: str | os.PathLike[str] | BinaryIO,
    input_file: str,
    store_frame: StoreFrame,
    *,
    retain_original_encoding: bool = True,
) -> PendingInstance:
    """Read, validate and decode one DICOM P10 file, leaving its frames encoding on the pool.

    The same as :func:`import_instance` (same parameters and errors) but in two steps: validation and
    pixel decoding errors are raised here, transcoding and storage errors by ``result()``.  ``source``
    may be closed once this returns.
    """
    with _opened(source) as fp:
        ds = _read_dataset(fp)
        try:
            transfer_syntax = check_transfer_syntax(ds)
            study_uid, series_uid, sop_uid = check_identifiers(ds)
            check_element_constraints(ds)
            pixels = describe_pixels(ds)
        except ImportFileError:
            raise
        except Exception as exc:
            raise _unparsable(exc) from exc
        stored = stored_transfer_syntax(transfer_syntax, retain_original_encoding=retain_original_encoding)
        retainer = _FrameRetainer(store_frame) if stored != HTJ2K_LOSSLESS_RPCL else None
        bits_stored = pixels.bits_stored if pixels else 0
        transcoder: _FrameSink = retainer or _FrameTranscoder(store_frame, bits_stored)
        try:
            # Converting the metadata may read deferred values from the file, so it happens before
            # streamed frames are read, or while the first (already read) frame is being encoded.
            converted = _attributes(ds) if _streamed(transfer_syntax, pixels) else None
            frames = _frames(fp, ds, transfer_syntax, pixels)
            first = next(frames, None)
            if first is not None:
                transcoder.submit(*first)
            levels, vrs = converted or _attributes(ds)
            for number, frame in frames:
                transcoder.submit(number, frame)
            if retainer is not None and pixels is not None:
                # Every frame decoded: now read the encoded frames (streamed ones from the same file).
                retainer.store(_encapsulated_frames(fp, ds, transfer_syntax, pixels.number_of_frames))
        except BaseException:
            transcoder.abandon()
            raise
    return PendingInstance(
        (input_file, study_uid, series_uid, sop_uid), levels, vrs, transcoder, stored if pixels else None
    )

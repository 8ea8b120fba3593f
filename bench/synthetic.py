"""Synthetic DICOM series for benchmarks: realistic-looking CT slices built in code, no PHI."""

from __future__ import annotations

import io

import numpy as np
import pydicom
from pydicom.dataset import FileMetaDataset
from pydicom.uid import CTImageStorage, ExplicitVRLittleEndian, generate_uid


def phantom(size: int, index: int, rng: np.random.Generator) -> np.ndarray:
    """A 16-bit CT-like slice: body ellipse, organs and bone, plus acquisition noise (HU + 1024)."""
    y, x = np.mgrid[-1 : 1 : size * 1j, -1 : 1 : size * 1j]
    shift = 0.1 * np.sin(index / 25)
    image = np.full((size, size), -1000.0)
    image[(x / 0.85) ** 2 + (y / 0.65) ** 2 < 1] = 40
    image[((x - 0.3 - shift) / 0.25) ** 2 + (y / 0.3) ** 2 < 1] = 60
    image[((x + 0.3) / 0.2) ** 2 + ((y + shift) / 0.25) ** 2 < 1] = -800
    image[(x / 0.08) ** 2 + ((y - 0.45) / 0.08) ** 2 < 1] = 1200
    image += rng.normal(0, 12, image.shape)
    stored: np.ndarray = np.clip(image + 1024, 0, 4095).astype(np.uint16)
    return stored


def ct_series(count: int, size: int = 512, seed: int = 7) -> list[bytes]:
    """``count`` slices of one synthetic CT series as DICOM P10 bytes (Explicit VR Little Endian)."""
    rng = np.random.default_rng(seed)
    study, series, frame_of_reference = generate_uid(), generate_uid(), generate_uid()
    files = []
    for index in range(count):
        meta = FileMetaDataset()
        meta.MediaStorageSOPClassUID = CTImageStorage
        meta.MediaStorageSOPInstanceUID = generate_uid()
        meta.TransferSyntaxUID = ExplicitVRLittleEndian
        ds = pydicom.Dataset()
        ds.file_meta = meta
        ds.SOPClassUID = CTImageStorage
        ds.SOPInstanceUID = meta.MediaStorageSOPInstanceUID
        ds.StudyInstanceUID, ds.SeriesInstanceUID, ds.FrameOfReferenceUID = study, series, frame_of_reference
        ds.PatientName, ds.PatientID = "SYNTHETIC^PHANTOM", "SYN-0001"
        ds.StudyDate, ds.StudyTime, ds.Modality = "20240101", "120000", "CT"
        ds.SeriesNumber, ds.InstanceNumber = 1, index + 1
        ds.ImagePositionPatient = [0, 0, index * 1.25]
        ds.ImageOrientationPatient = [1, 0, 0, 0, 1, 0]
        ds.PixelSpacing, ds.SliceThickness = [0.7, 0.7], 1.25
        ds.RescaleIntercept, ds.RescaleSlope = -1024, 1
        ds.WindowCenter, ds.WindowWidth = 40, 400
        ds.Rows = ds.Columns = size
        ds.SamplesPerPixel, ds.PhotometricInterpretation = 1, "MONOCHROME2"
        ds.BitsAllocated, ds.BitsStored, ds.HighBit, ds.PixelRepresentation = 16, 12, 11, 0
        ds.PixelData = phantom(size, index, rng).tobytes()
        buffer = io.BytesIO()
        ds.save_as(buffer, enforce_file_format=True)
        files.append(buffer.getvalue())
    return files


def radiograph(size: int, bits_stored: int = 12, seed: int = 11) -> np.ndarray:
    """A ``size``² chest-radiograph-like frame (MONOCHROME2, ``bits_stored`` bits, uint16).

    Smooth structure at every scale (a soft-edged torso, darker lungs crossed by ribs, spine, heart and
    diaphragm, a heel-effect gradient) plus quantum noise whose deviation grows as the square root of
    the signal (≈ 11 grey levels at mid-range in 12 bits, scaled with the range), so the high
    resolutions carry noise as a detector's do.  Float32 throughout.
    """
    rng = np.random.default_rng(seed)
    axis = np.linspace(-1, 1, size, dtype=np.float32)
    y, x = axis[:, None], axis[None, :]

    def soft(distance: np.ndarray, edge: float) -> np.ndarray:
        """1 inside (``distance`` < 1), 0 outside, with a smooth edge of width ``edge``."""
        return np.broadcast_to(0.5 - 0.5 * np.tanh((distance - 1) / edge), (size, size))

    torso = soft(np.abs(x / 0.9) ** 3 + np.abs(y / 1.05) ** 3, 0.08)
    lungs = soft(((np.abs(x) - 0.4) / 0.3) ** 2 + ((y + 0.1) / 0.6) ** 2, 0.1)
    ribs = 0.5 + 0.5 * np.cos(2 * np.pi * (y * 5.5 + 0.8 * (np.abs(x) - 0.4) ** 2))
    heart = soft(((x + 0.1) / 0.28) ** 2 + ((y - 0.2) / 0.3) ** 2, 0.15)
    spine = soft(np.abs(x / 0.07) ** 4, 0.3)
    diaphragm = soft((0.55 + 0.15 * x**2 - y) / 0.05, 0.5)
    # Attenuation (0 = air, 1 = dense): air dark, bone bright.
    density = torso * (0.55 - 0.35 * lungs * (1 - diaphragm) + 0.12 * lungs * ribs)
    density += 0.25 * spine * torso + 0.15 * heart + 0.2 * diaphragm * torso + 0.04 * (y + 1)
    top = float((1 << bits_stored) - 1)
    scale = top / 4095
    signal = (0.05 + 0.85 * np.clip(density, 0, 1)) * top
    signal += rng.standard_normal((size, size), dtype=np.float32) * 0.25 * np.sqrt(signal / scale) * scale
    frame: np.ndarray = np.clip(np.rint(signal), 0, top).astype(np.uint16)
    return frame

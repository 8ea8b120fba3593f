"""The built imaging layer works: numpy's core and every codec the thumbnails use, on synthetic images.

Run with the built layer alone on the path, on the runtime's interpreter and architecture::

    PYTHONPATH=.aws-sam/host-x86_64/build/ImagingLayer/python python3.12 -S layers/imaging/selftest.py

``make template`` runs it (``tools/check_lambda_imports.py --layer-test``).  Each codec round-trips a
12-bit image (lossless, so the decoded pixels must equal the encoded ones; baseline JPEG within a
tolerance), JPEG 2000 and HTJ2K are also decoded at a reduced resolution as the thumbnails decode them,
and the numpy operations the rendering uses are checked against plain Python.  It also checks that
the trimmed codecs are really gone, so a layer that still carries them fails here.
"""

from __future__ import annotations

import base64
import sys

import imagecodecs
import numpy as np
import numpy.typing as npt

#: Codecs the thumbnails use (imagecodecs attribute → available).
KEPT = ("JPEG2K", "HTJ2K", "JPEG8", "LJPEG", "JPEGLS", "PNG")
#: A few of the codecs the layer leaves out.
TRIMMED = ("WEBP", "AVIF", "JPEGXL", "TIFF", "ZSTD", "PACKBITS")
#: ``image(16, 16)`` as lossless HTJ2K (OpenJPH's ``htj2k_encode``), as the service stores frames.
HTJ2K_16X16 = base64.b64decode(
    "/0//UQApQAAAAAAQAAAAEAAAAAAAAAAAAAAAEAAAABAAAAAAAAAAAAABDwEB/1AACAACAAAACv9SAAwAAgABAAUEBEAB/1wA"
    "EyCIkJCQkJCQkJCQkJCQiIiI/2QAFwABT3BlbkpQSCBWZXIgMC4zMi4wLv+QAAoAAAAAAKQAAf+TwAAm5/oFB3QAAMAAE0AA"
    "EsAAEoD2/gIHdACKAod0AKQBB3QAwAATwAATQAASgABQTQBgVACYqwCDVADoAAPUAMAAFVAABVQAATAmHECZ+6QxAnUAxq3V"
    "/cAxgey2AAD0khnkAMAALSgABaMAAJQIA1EYBwBM/udACHtqenCCegDITCgVywWT/YhAe/YhAey6AP7+gEQA/9k="
)


def image(rows: int = 48, columns: int = 64, bits: int = 12) -> npt.NDArray[np.uint16]:
    y, x = np.indices((rows, columns), dtype=np.uint32)
    pixels: npt.NDArray[np.uint16] = ((x * 37 + y * 101 + x * y) % (1 << bits)).astype(np.uint16)
    return pixels


def check_numpy() -> None:
    pixels = image()
    values = sorted(int(v) for v in pixels.ravel())
    assert np.percentile(pixels, 50, method="lower") == values[(len(values) - 1) // 2]
    window = np.clip((pixels.astype(np.float64) - 100.0) / 3000.0, 0.0, 1.0)
    eight = np.rint(window * 255.0).astype(np.uint8)
    assert eight.dtype == np.uint8
    assert int(eight.max()) == 255
    assert int(eight.min()) == 0
    rgb = np.stack([eight, eight, eight], axis=-1)
    grey = np.tensordot(rgb.astype(np.float64), np.array([0.299, 0.587, 0.114]), axes=([2], [0]))
    assert np.allclose(grey, eight)
    assert np.take(pixels, [0, -1], axis=1).shape == (48, 2)
    bits = np.unpackbits(np.frombuffer(b"\xa5", dtype=np.uint8), bitorder="little")
    assert bits.tolist() == [1, 0, 1, 0, 0, 1, 0, 1]
    assert np.where(np.ascontiguousarray(pixels[:, ::2]) > 0, 1, 0).sum() == np.count_nonzero(pixels[:, ::2])
    assert float(np.exp(np.zeros(1))[0]) == 1.0


def check_codecs() -> None:
    pixels = image()
    for name in KEPT:
        assert getattr(imagecodecs, name).available, f"{name} is missing"
    for name in TRIMMED:
        assert not getattr(imagecodecs, name).available, f"{name} should have been trimmed"

    j2k = imagecodecs.jpeg2k_encode(pixels, level=0, numthreads=1)
    assert np.array_equal(imagecodecs.jpeg2k_decode(j2k), pixels)
    assert imagecodecs.jpeg2k_decode(j2k, skipres=1).shape == (24, 32)

    # OpenJPEG decodes HTJ2K too, as the thumbnails decode the service's frames.
    assert np.array_equal(imagecodecs.jpeg2k_decode(HTJ2K_16X16), image(16, 16))
    assert imagecodecs.jpeg2k_decode(HTJ2K_16X16, skipres=1).shape == (8, 8)
    # OpenJPH, for the frames of 32-bit samples OpenJPEG refuses.
    assert np.array_equal(imagecodecs.htj2k_decode(HTJ2K_16X16), image(16, 16))
    wide = np.arange(64, dtype=np.uint32).reshape(8, 8) * np.uint32(50_000_000)
    assert np.array_equal(imagecodecs.htj2k_decode(imagecodecs.htj2k_encode(wide)), wide)

    jpegls = imagecodecs.jpegls_encode(pixels)
    assert np.array_equal(imagecodecs.jpegls_decode(jpegls), pixels)

    lossless = imagecodecs.jpeg8_encode(pixels, lossless=True, bitspersample=12)
    assert np.array_equal(imagecodecs.ljpeg_decode(lossless), pixels)
    assert np.array_equal(imagecodecs.jpeg8_decode(lossless), pixels)

    eight = (pixels >> 4).astype(np.uint8)
    baseline = imagecodecs.jpeg8_decode(imagecodecs.jpeg8_encode(eight, level=95))
    assert np.abs(baseline.astype(np.int16) - eight).max() <= 16

    png = imagecodecs.png_encode(eight)
    assert png[:8] == b"\x89PNG\r\n\x1a\n"
    assert np.array_equal(imagecodecs.png_decode(png), eight)


def main() -> int:
    check_numpy()
    check_codecs()
    sys.stdout.write(
        f"numpy {np.__version__} and imagecodecs {imagecodecs.__version__} work "
        f"({', '.join(name.lower() for name in KEPT)}) from {imagecodecs.__file__}\n"
    )
    return 0


if __name__ == "__main__":
    sys.exit(main())

"""Trim pip's install of numpy and imagecodecs to what the thumbnails use (run by this folder's Makefile).

``python trim.py SITE`` removes from ``SITE`` (the layer's ``python/`` folder):

* imagecodecs' extension modules but the codecs of :data:`CODECS` and the two modules every codec
  imports (``_shared``, ``_shared_cython``); imagecodecs loads its extensions lazily, by name, so a
  removed codec's functions become stubs that raise ``DelayedImportError`` when called;
* numpy's subpackages that neither ``import numpy`` nor the thumbnails import (:data:`NUMPY_UNUSED`):
  ``numpy.lib`` imports ``numpy.linalg`` and ``numpy.matrixlib``, and ``ahi_pipeline.render`` imports
  ``numpy.typing``, so those stay;
* every test folder, type stub, Cython and C header, console script, ``__pycache__`` (the Makefile
  compiles the layer afterwards) and the dist-info ``RECORD`` (it would list the removed files);
* the bundled shared libraries (``*.libs/``) that nothing kept needs: the closure of the kept ELF
  files' ``DT_NEEDED`` entries, read from the files themselves (any architecture).

Licences stay: the dist-info ``licenses/`` folders and ``imagecodecs/licenses/``.  A ``DT_NEEDED`` entry
that is neither bundled nor part of the python3.12 runtime's system (:data:`SYSTEM_LIBRARIES`) fails
the build.
"""

from __future__ import annotations

import shutil
import struct
import sys
from collections.abc import Iterable, Iterator
from pathlib import Path

#: imagecodecs codecs the thumbnails decode (and encode: PNG) - ahi_pipeline.thumbnails.  OpenJPEG's
#: ``jpeg2k_decode`` decodes HTJ2K at every level; ``htj2k`` (OpenJPH, 0.8 MB with its library) only
#: frames of 32-bit samples, which OpenJPEG refuses (RT Dose, 32-bit secondary captures).
CODECS = ("jpeg2k", "htj2k", "jpeg8", "ljpeg", "jpegls", "png")
#: imagecodecs extension modules every codec imports (``cimport`` of the shared Cython code).
IMAGECODECS_SUPPORT = ("_shared", "_shared_cython")
#: imagecodecs' pure-Python modules for other libraries (numcodecs, zarr) and its command line.
IMAGECODECS_UNUSED = ("numcodecs.py", "zarr.py", "__main__.py")
#: Parts of numpy that ``import numpy`` does not load and the thumbnails do not use (globs).
NUMPY_UNUSED = (
    "random",
    "fft",
    "polynomial",
    "ma",
    "f2py",
    "testing",
    "ctypeslib",
    "_pyinstaller",
    "doc",
    "matlib.py",
    "conftest.py",
    "typing/mypy_plugin.py",
    "_core/include",
    "_core/lib",
    "_core/_simd.*.so",
    "_core/_*_tests.*.so",
    "linalg/lapack_lite.*.so",
)
#: Anywhere in the layer.
UNUSED_EVERYWHERE = ("tests", "__pycache__", "*.pyi", "*.pxd", "*.pyx", "*.h", "*.c", "py.typed")
DIST_INFO_UNUSED = ("RECORD", "INSTALLER", "REQUESTED", "entry_points.txt")
#: What the python3.12 runtime (Amazon Linux 2023) provides: glibc, libgcc and libstdc++.
SYSTEM_LIBRARIES = frozenset(
    {
        "libc.so.6",
        "libm.so.6",
        "libpthread.so.0",
        "libdl.so.2",
        "librt.so.1",
        "libgcc_s.so.1",
        "libstdc++.so.6",
        "ld-linux-x86-64.so.2",
        "ld-linux-aarch64.so.1",
    }
)

_SHT_DYNAMIC = 6
_DT_NEEDED = 1


def say(message: str) -> None:
    sys.stdout.write(message + "\n")


def remove(paths: Iterable[Path]) -> int:
    """Remove files and folders; the bytes they held."""
    freed = 0
    for path in sorted(set(paths), reverse=True):  # children before their parents
        if path.is_dir() and not path.is_symlink():
            freed += sum(f.stat().st_size for f in path.rglob("*") if f.is_file())
            shutil.rmtree(path)
        elif path.exists():
            freed += path.stat().st_size
            path.unlink()
    return freed


def is_elf(path: Path) -> bool:
    with path.open("rb") as file:
        return file.read(4) == b"\x7fELF"


def needed_libraries(path: Path) -> list[str]:
    """The ``DT_NEEDED`` entries of a 64-bit little-endian ELF file (both Lambda architectures)."""
    data = path.read_bytes()
    if data[4] != 2 or data[5] != 1:
        raise SystemExit(f"{path}: not a 64-bit little-endian ELF file")
    shoff, shentsize, shnum = struct.unpack_from("<Q", data, 0x28)[0], *struct.unpack_from("<HH", data, 0x3A)
    # sh_name, sh_type, sh_flags, sh_addr, sh_offset, sh_size, sh_link, sh_info, sh_addralign, sh_entsize
    sections = [struct.unpack_from("<IIQQQQIIQQ", data, shoff + i * shentsize) for i in range(shnum)]
    names = []
    for section in sections:
        if section[1] != _SHT_DYNAMIC:
            continue
        strings = sections[section[6]][4]
        for offset in range(section[4], section[4] + section[5], 16):
            tag, value = struct.unpack_from("<qQ", data, offset)
            if tag == 0:
                break
            if tag == _DT_NEEDED:
                start = strings + value
                names.append(data[start : data.index(b"\0", start)].decode())
    return names


def unused_libraries(site: Path) -> Iterator[Path]:
    """Bundled libraries (``*.libs/``) no kept ELF file needs, directly or through another library."""
    bundled = {path.name: path for path in site.glob("*.libs/*") if path.is_file()}
    pending = [p for p in site.rglob("*.so") if p.is_file() and p.parent.suffix != ".libs" and is_elf(p)]
    reached: set[str] = set()
    while pending:
        for name in needed_libraries(pending.pop()):
            if name in reached or name in SYSTEM_LIBRARIES:
                continue
            if name not in bundled:
                raise SystemExit(f"{name} is needed but neither bundled nor provided by the runtime")
            reached.add(name)
            pending.append(bundled[name])
    return (path for name, path in bundled.items() if name not in reached)


def unused_imagecodecs(package: Path) -> Iterator[Path]:
    kept = {f"_{codec}" for codec in CODECS} | set(IMAGECODECS_SUPPORT)
    for extension in package.glob("_*.so"):
        if extension.name.split(".")[0] not in kept:
            yield extension
    yield from (package / name for name in IMAGECODECS_UNUSED)


def trim(site: Path) -> None:
    before = sum(f.stat().st_size for f in site.rglob("*") if f.is_file())
    numpy, imagecodecs = site / "numpy", site / "imagecodecs"
    if not (numpy / "__init__.py").is_file() or not (imagecodecs / "__init__.py").is_file():
        raise SystemExit(f"{site}: numpy and imagecodecs are not installed there")
    freed = remove(unused_imagecodecs(imagecodecs))
    freed += remove(path for pattern in NUMPY_UNUSED for path in numpy.glob(pattern))
    freed += remove(path for pattern in UNUSED_EVERYWHERE for path in site.rglob(pattern))
    freed += remove(path for name in DIST_INFO_UNUSED for path in site.glob(f"*.dist-info/{name}"))
    freed += remove([site / "bin"])
    freed += remove(unused_libraries(site))
    kept = sorted(p.name.split(".")[0] for p in imagecodecs.glob("_*.so"))
    say(f"trim: removed {freed / 1e6:.1f} of {before / 1e6:.1f} MB; imagecodecs keeps {', '.join(kept)}")
    missing = {f"_{codec}" for codec in CODECS} - set(kept)
    if missing:
        raise SystemExit(f"imagecodecs has no {', '.join(sorted(missing))}")


if __name__ == "__main__":
    if len(sys.argv) != 2:
        raise SystemExit(f"usage: {sys.argv[0]} SITE")
    trim(Path(sys.argv[1]))

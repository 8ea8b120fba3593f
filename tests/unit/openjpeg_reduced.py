"""Reduced-resolution decoding with the OpenJPEG library bundled in pylibjpeg-openjpeg (test helper).

pylibjpeg-openjpeg 2.6 decodes only at full resolution (``openjpeg.decode`` has no ``reduce``), but
its extension module exports the OpenJPEG 2.5 C API.  This helper drives that API through ctypes, so
the tests can ask the very decoder the AWS verification samples use for what it returns when it
discards ``reduce`` resolution levels (``opj_set_decoded_resolution_factor``).
"""

from __future__ import annotations

import ctypes
import functools
import pathlib
from typing import Any

import numpy as np
import openjpeg


class _ImageComponent(ctypes.Structure):
    _fields_ = [
        (name, ctypes.c_uint32)
        for name in ("dx", "dy", "w", "h", "x0", "y0", "prec", "bpp", "sgnd", "resno_decoded", "factor")
    ] + [("data", ctypes.POINTER(ctypes.c_int32)), ("alpha", ctypes.c_uint16)]


class _Image(ctypes.Structure):
    _fields_ = [(name, ctypes.c_uint32) for name in ("x0", "y0", "x1", "y1", "numcomps")] + [
        ("color_space", ctypes.c_int),
        ("comps", ctypes.POINTER(_ImageComponent)),
        ("icc_profile_buf", ctypes.c_void_p),
        ("icc_profile_len", ctypes.c_uint32),
    ]


_READ = ctypes.CFUNCTYPE(ctypes.c_size_t, ctypes.c_void_p, ctypes.c_size_t, ctypes.c_void_p)
_SKIP = ctypes.CFUNCTYPE(ctypes.c_int64, ctypes.c_int64, ctypes.c_void_p)
_SEEK = ctypes.CFUNCTYPE(ctypes.c_int, ctypes.c_int64, ctypes.c_void_p)
_CODEC_J2K = 0
_END_OF_STREAM = ctypes.c_size_t(-1).value


@functools.cache
def _library() -> ctypes.CDLL:
    site = pathlib.Path(openjpeg.__file__).parent.parent
    lib = ctypes.CDLL(str(next(site.glob("_openjpeg*.so"))))
    signatures: dict[str, tuple[Any, list[Any]]] = {
        "opj_version": (ctypes.c_char_p, []),
        "opj_stream_create": (ctypes.c_void_p, [ctypes.c_size_t, ctypes.c_int]),
        "opj_stream_set_read_function": (None, [ctypes.c_void_p, _READ]),
        "opj_stream_set_skip_function": (None, [ctypes.c_void_p, _SKIP]),
        "opj_stream_set_seek_function": (None, [ctypes.c_void_p, _SEEK]),
        "opj_stream_set_user_data": (None, [ctypes.c_void_p, ctypes.c_void_p, ctypes.c_void_p]),
        "opj_stream_set_user_data_length": (None, [ctypes.c_void_p, ctypes.c_uint64]),
        "opj_stream_destroy": (None, [ctypes.c_void_p]),
        "opj_create_decompress": (ctypes.c_void_p, [ctypes.c_int]),
        "opj_set_default_decoder_parameters": (None, [ctypes.c_void_p]),
        "opj_setup_decoder": (ctypes.c_int, [ctypes.c_void_p, ctypes.c_void_p]),
        "opj_read_header": (
            ctypes.c_int,
            [ctypes.c_void_p, ctypes.c_void_p, ctypes.POINTER(ctypes.POINTER(_Image))],
        ),
        "opj_set_decoded_resolution_factor": (ctypes.c_int, [ctypes.c_void_p, ctypes.c_uint32]),
        "opj_decode": (ctypes.c_int, [ctypes.c_void_p, ctypes.c_void_p, ctypes.POINTER(_Image)]),
        "opj_end_decompress": (ctypes.c_int, [ctypes.c_void_p, ctypes.c_void_p]),
        "opj_image_destroy": (None, [ctypes.POINTER(_Image)]),
        "opj_destroy_codec": (None, [ctypes.c_void_p]),
    }
    for name, (restype, argtypes) in signatures.items():
        function = getattr(lib, name)
        function.restype = restype
        function.argtypes = argtypes
    return lib


def version() -> str:
    """Return the version of the OpenJPEG library inside pylibjpeg-openjpeg."""
    return str(_library().opj_version().decode())


def decode(codestream: bytes, reduce: int = 0) -> np.ndarray[Any, Any]:
    """Return the samples OpenJPEG decodes from ``codestream`` after discarding ``reduce`` levels.

    The array is ``(rows, columns)`` or ``(rows, columns, components)``, with ``ceil(precision / 8)``
    bytes per sample (4 for 17-32 bits), signed when the codestream says so.
    """
    lib = _library()
    data = bytes(codestream)
    position = [0]

    def read(buffer: int, size: int, _user: int) -> int:
        if position[0] >= len(data):
            return _END_OF_STREAM
        chunk = data[position[0] : position[0] + size]
        ctypes.memmove(buffer, chunk, len(chunk))
        position[0] += len(chunk)
        return len(chunk)

    def skip(size: int, _user: int) -> int:
        position[0] += size
        return size

    def seek(offset: int, _user: int) -> int:
        position[0] = offset
        return 1

    callbacks = (_READ(read), _SKIP(skip), _SEEK(seek))
    stream = lib.opj_stream_create(1 << 16, 1)
    lib.opj_stream_set_read_function(stream, callbacks[0])
    lib.opj_stream_set_skip_function(stream, callbacks[1])
    lib.opj_stream_set_seek_function(stream, callbacks[2])
    lib.opj_stream_set_user_data(stream, None, None)
    lib.opj_stream_set_user_data_length(stream, len(data))
    codec = lib.opj_create_decompress(_CODEC_J2K)
    parameters = ctypes.create_string_buffer(1 << 16)  # larger than opj_dparameters_t
    lib.opj_set_default_decoder_parameters(parameters)
    image = ctypes.POINTER(_Image)()
    try:
        steps = (
            ("setup", lambda: lib.opj_setup_decoder(codec, parameters)),
            ("read header", lambda: lib.opj_read_header(stream, codec, ctypes.byref(image))),
            ("reduce", lambda: lib.opj_set_decoded_resolution_factor(codec, reduce)),
            ("decode", lambda: lib.opj_decode(codec, stream, image)),
            ("end", lambda: lib.opj_end_decompress(codec, stream)),
        )
        for name, step in steps:
            if not step():
                raise RuntimeError(f"OpenJPEG failed to {name}")
        decoded = image.contents
        planes = []
        precision, signed = 0, False
        for index in range(decoded.numcomps):
            component = decoded.comps[index]
            planes.append(np.ctypeslib.as_array(component.data, shape=(component.h, component.w)).copy())
            precision, signed = component.prec, bool(component.sgnd)
        size = (precision + 7) // 8
        size = 4 if size == 3 else size
        samples = planes[0] if len(planes) == 1 else np.stack(planes, axis=-1)
        return samples.astype(f"<{'i' if signed else 'u'}{size}")
    finally:
        if image:
            lib.opj_image_destroy(image)
        lib.opj_destroy_codec(codec)
        lib.opj_stream_destroy(stream)

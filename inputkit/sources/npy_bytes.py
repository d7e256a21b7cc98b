"""Read a ``.npy`` file held in memory, safely from many threads at once.

``np.load`` parses the header with ``ast.literal_eval``, and CPython 3.11's AST
builder keeps its recursion depth in interpreter-wide state: two worker threads
parsing at once can fail with ``SystemError: AST constructor recursion depth
mismatch`` (CPython gh-106905; seen in CI reading ``.npy`` members of shards with
two thread workers). So the headers numpy itself writes (a plain dtype string,
``fortran_order`` and a shape) are parsed here without ``ast``; anything else (a
structured dtype) goes through ``np.load`` under one process-wide lock.
"""

from __future__ import annotations

import io
import re
import struct
import threading

import numpy as np

MAGIC = b"\x93NUMPY"
_HEADER = re.compile(
    r"\{'descr': '(?P<descr>[^']+)', 'fortran_order': (?P<fortran>True|False), "
    r"'shape': \((?P<shape>(?:\d+, ?)*\d*)\), ?\}\s*\Z")
_NP_LOAD_LOCK = threading.Lock()


def load_npy_bytes(data: bytes | memoryview) -> np.ndarray:
    """A writable array from the bytes of a ``.npy`` file; no pickles.

    Raises ``ValueError`` naming what is wrong (not a .npy file, a header that
    does not parse, an object dtype, fewer bytes than the shape needs), as
    ``np.load`` would.
    """
    view = memoryview(data)
    if len(view) < 10 or bytes(view[:6]) != MAGIC:
        raise ValueError("not a .npy file (its first bytes are not the magic string "
                         f"{MAGIC!r})")
    major = view[6]
    if major == 1:
        (header_len,), start = struct.unpack("<H", view[8:10]), 10
    elif major in (2, 3):
        if len(view) < 12:
            raise ValueError("a .npy file cut short in its header")
        (header_len,), start = struct.unpack("<I", view[8:12]), 12
    else:
        raise ValueError(f"a .npy format version {major}.{view[7]} that numpy does not write")
    end = start + header_len
    if len(view) < end:
        raise ValueError("a .npy file cut short in its header")
    header = bytes(view[start:end]).decode("utf-8" if major == 3 else "latin1")
    match = _HEADER.match(header)
    if match is None:
        return _np_load_locked(bytes(view))
    dtype = np.dtype(match["descr"])
    if dtype.hasobject:
        raise ValueError("the array holds Python objects, which need pickles "
                         "(refused: allow_pickle=False)")
    shape = tuple(int(n) for n in match["shape"].replace(" ", "").split(",") if n)
    count = 1
    for n in shape:
        count *= n
    need = count * dtype.itemsize
    if len(view) - end < need:
        raise ValueError(f"a .npy array of shape {shape} and dtype {dtype} needs {need} bytes "
                         f"of data; the file holds {len(view) - end}")
    flat = np.frombuffer(view, dtype=dtype, count=count, offset=end).copy()
    if match["fortran"] == "True":
        return flat.reshape(shape[::-1]).transpose()
    return flat.reshape(shape)


def _np_load_locked(data: bytes) -> np.ndarray:
    with _NP_LOAD_LOCK:
        return np.load(io.BytesIO(data), allow_pickle=False)

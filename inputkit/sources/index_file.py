"""A compact index written once to one file and mapped read-only by every process that reads it.

Why: an index of 1.28M image names held as a fixed-width numpy bytes array was ~36 MiB per
process, and process workers each took a pickled copy. Here names are one bytes blob plus
offsets, numbers are the narrowest integer type that holds them, and everything lives in one
file that each process maps (``mmap``): the pages are shared through the page cache, and a
pickled :class:`IndexFile` is its path and build id, not its arrays.

The file: a 16-byte magic, an 8-byte header length, a JSON header (arrays: dtype, shape and
offset; ``meta``: what the builder stores; a CRC-32 of the data), then the arrays, each at a
64-byte boundary. It is written to a temporary name and renamed, so a reader never sees half.
"""

from __future__ import annotations

import json
import mmap
import os
import struct
import uuid
import zlib
from collections.abc import Mapping, Sequence
from typing import Any

import numpy as np

MAGIC = b"INPUTKIT-INDEX\x00\x01"
_ALIGN = 64


class IndexFileError(Exception):
    """The file is not a whole, readable index (truncated, damaged, another version)."""


class IndexFile:
    """Named read-only arrays and a ``meta`` dict: mapped from ``path``, or held in memory.

    Pickles as ``(path, build)`` when it has a file (the receiver maps the same file and
    checks it is the same build); an in-memory index (no writable cache) pickles its arrays.
    """

    def __init__(self, arrays: Mapping[str, np.ndarray], meta: Mapping[str, Any],
                 path: str | None = None, build: str | None = None,
                 mapped: mmap.mmap | None = None) -> None:
        self.arrays = dict(arrays)
        self.meta = dict(meta)
        self.path = path
        self.build = build or uuid.uuid4().hex
        self._mapped = mapped

    def __getitem__(self, name: str) -> np.ndarray:
        return self.arrays[name]

    def __contains__(self, name: str) -> bool:
        return name in self.arrays

    @property
    def nbytes(self) -> int:
        """The arrays' bytes (what one process maps, shared with the others)."""
        return sum(int(a.nbytes) for a in self.arrays.values())

    # writing and opening ------------------------------------------------------------------------

    @classmethod
    def write(cls, path: str, arrays: Mapping[str, np.ndarray], meta: Mapping[str, Any]) -> IndexFile:
        """Write ``arrays`` and ``meta`` to ``path`` (temporary name, then rename) and map it."""
        build = uuid.uuid4().hex
        layout: dict[str, dict[str, Any]] = {}
        offset = 0
        contiguous = {name: np.ascontiguousarray(a) for name, a in arrays.items()}
        for name, array in contiguous.items():
            if array.dtype.hasobject:
                raise TypeError(f"index array {name!r} holds Python objects; only plain numbers "
                                "and bytes can be mapped")
            layout[name] = {"dtype": array.dtype.str, "shape": list(array.shape), "offset": offset}
            offset += -(-array.nbytes // _ALIGN) * _ALIGN
        crc = 0
        for array in contiguous.values():
            crc = zlib.crc32(array.view(np.uint8).reshape(-1) if array.size else b"", crc)
        header = json.dumps({"version": 1, "build": build, "meta": dict(meta), "arrays": layout,
                             "data_bytes": offset, "crc32": crc}).encode("ascii")
        start = -(-(len(MAGIC) + 8 + len(header)) // _ALIGN) * _ALIGN
        temp = f"{path}.{os.getpid()}.{build[:8]}.tmp"
        os.makedirs(os.path.dirname(path) or ".", exist_ok=True)
        try:
            with open(temp, "wb") as f:
                f.write(MAGIC + struct.pack("<Q", len(header)) + header)
                f.write(b"\0" * (start - f.tell()))
                for array in contiguous.values():
                    if array.size:
                        f.write(memoryview(array.view(np.uint8).reshape(-1)))
                    f.write(b"\0" * (-array.nbytes % _ALIGN))
                f.flush()
                os.fsync(f.fileno())
            os.replace(temp, path)
        except BaseException:
            if os.path.exists(temp):
                os.unlink(temp)
            raise
        return cls.open(path, verify=False)

    @classmethod
    def open(cls, path: str, verify: bool = True, build: str | None = None) -> IndexFile:
        """Map the index at ``path``. ``verify`` checks the data's CRC-32 (once, in the process
        that decides to trust a cached file); ``build`` insists on that build (a worker mapping
        the file its parent checked). IndexFileError when it is not a whole index. A symbolic
        link is resolved: ``path`` is then the file it names (what workers are given)."""
        path = os.path.realpath(path)
        try:
            with open(path, "rb") as f:
                size = os.fstat(f.fileno()).st_size
                mapped = mmap.mmap(f.fileno(), 0, access=mmap.ACCESS_READ) if size else None
        except (OSError, ValueError) as exc:
            raise IndexFileError(f"cannot map '{path}': {type(exc).__name__}: {exc}") from exc
        if mapped is None or size < len(MAGIC) + 8 or mapped[:len(MAGIC)] != MAGIC:
            _close(mapped)
            raise IndexFileError(f"'{path}' is not an inputkit index (no header)")
        try:
            (length,) = struct.unpack("<Q", mapped[len(MAGIC):len(MAGIC) + 8])
            header = json.loads(bytes(mapped[len(MAGIC) + 8:len(MAGIC) + 8 + length]))
            start = -(-(len(MAGIC) + 8 + length) // _ALIGN) * _ALIGN
            if header.get("version") != 1 or size != start + header["data_bytes"]:
                raise ValueError(f"size {size:,} B, expected {start + header['data_bytes']:,}")
            arrays = {}
            for name, spec in header["arrays"].items():
                dtype, shape = np.dtype(spec["dtype"]), tuple(spec["shape"])
                count = int(np.prod(shape)) if shape else 1
                arrays[name] = np.frombuffer(mapped, dtype, count,
                                             start + spec["offset"]).reshape(shape)
        except (ValueError, KeyError, TypeError, struct.error, UnicodeDecodeError) as exc:
            arrays = {}
            _close(mapped)
            raise IndexFileError(f"'{path}' is damaged or truncated: {exc}") from exc
        if build is not None and header["build"] != build:
            arrays.clear()
            _close(mapped)
            raise IndexFileError(f"'{path}' was replaced (by another run's index build) since this "
                                 "run's parent built it")
        if verify:
            crc = 0
            for array in arrays.values():
                crc = zlib.crc32(array.view(np.uint8).reshape(-1) if array.size else b"", crc)
            if crc != header["crc32"]:
                arrays.clear()
                _close(mapped)
                raise IndexFileError(f"'{path}' is damaged: its data does not match its checksum")
        return cls(arrays, header["meta"], path, header["build"], mapped)

    def close(self) -> None:
        """Let go of the mapping (arrays handed out keep it alive until they are dropped)."""
        self.arrays = {}
        self._mapped = None

    # pickling: the path, not the arrays ---------------------------------------------------------

    def __getstate__(self) -> dict[str, Any]:
        if self.path is None:
            return {"arrays": self.arrays, "meta": self.meta, "build": self.build, "path": None}
        return {"path": self.path, "build": self.build}

    def __setstate__(self, state: dict[str, Any]) -> None:
        if state["path"] is None:
            self.__init__(state["arrays"], state["meta"], None, state["build"])  # type: ignore[misc]
            return
        opened = IndexFile.open(state["path"], verify=False, build=state["build"])
        self.__dict__.update(opened.__dict__)

    def __repr__(self) -> str:
        where = f"'{self.path}'" if self.path else "in memory"
        return f"IndexFile({where}, {len(self.arrays)} arrays, {self.nbytes:,} B)"


def _close(mapped: mmap.mmap | None) -> None:
    if mapped is not None:
        try:
            mapped.close()
        except BufferError:  # arrays still view it: it closes when they are dropped
            pass


class Names:
    """Names (bytes) as one blob and ``n + 1`` offsets: ``names[i]`` is the i-th name's bytes."""

    def __init__(self, blob: np.ndarray, offsets: np.ndarray) -> None:
        self.blob = blob
        self.offsets = offsets

    def __len__(self) -> int:
        return len(self.offsets) - 1

    def __getitem__(self, index: int) -> bytes:
        index = int(index)
        if index < 0:
            index += len(self)
        if not 0 <= index < len(self):
            raise IndexError(f"name {index} is out of range (0..{len(self) - 1})")
        return self.blob[int(self.offsets[index]):int(self.offsets[index + 1])].tobytes()

    def tolist(self) -> list[bytes]:
        return [self[i] for i in range(len(self))]


def pack_names(names: Sequence[bytes]) -> tuple[np.ndarray, np.ndarray]:
    """(blob uint8, offsets) for :class:`Names`; offsets are uint32 while the blob fits."""
    lengths = np.fromiter(map(len, names), dtype=np.int64, count=len(names))
    offsets = np.zeros(len(names) + 1, dtype=np.int64)
    np.cumsum(lengths, out=offsets[1:])
    blob = np.frombuffer(b"".join(names), dtype=np.uint8)
    return blob, offsets.astype(narrowest(0, int(offsets[-1])))


def narrowest(low: int, high: int) -> np.dtype:
    """The smallest integer dtype holding ``low..high`` (unsigned when low >= 0)."""
    kinds = (np.uint8, np.uint16, np.uint32, np.uint64) if low >= 0 else \
        (np.int8, np.int16, np.int32, np.int64)
    for kind in kinds:
        info = np.iinfo(kind)
        if info.min <= low and high <= info.max:
            return np.dtype(kind)
    return np.dtype(np.int64)


def narrow(values: np.ndarray | Sequence[int]) -> np.ndarray:
    """``values`` as the narrowest integer array that holds them."""
    array = np.asarray(values, dtype=np.int64)
    if not array.size:
        return array.astype(np.uint8)
    return array.astype(narrowest(int(array.min()), int(array.max())))

"""Byte-level access to files that live in an object store, for the file-based sources.

The tokens, Parquet, arrays and shards sources read local files with ``open``, ``np.memmap`` or
pyarrow; for an ``s3://``, ``gs://``, ``az://`` or ``http(s)://`` path they read through
:mod:`inputkit.storage` instead: sizes from one ``head`` per object (asked concurrently),
``.npy`` headers from one ranged read of the first bytes, and everything else as byte ranges
(``Store.read_ranges``, fetched together, not one blocking GET at a time). ``RangeFile`` is a
read-only, seekable file object over ranged reads with a read-ahead buffer, for readers that
want a file (pyarrow's Parquet reader, tarfile's stream).

Nothing here imports ``inputkit.storage`` (and so obstore) until a path is remote: a local path
never needs it.
"""

from __future__ import annotations

import io
from collections.abc import Sequence
from concurrent.futures import ThreadPoolExecutor
from typing import Any

import numpy as np

from inputkit.errors import SourceError

STORAGE = "inputkit.storage"
_HEADER_READ = 4096  # bytes read for a .npy header: every plain array's header fits
_MAX_LOOKUPS = 16  # heads in flight while sizing many objects


def is_url(path: object) -> bool:
    """Whether ``path`` names an object in a store (s3://, gs://, az://, http(s)://...)."""
    if not isinstance(path, str) or "://" not in path:
        return False
    from inputkit import storage

    return storage.is_remote(path)


def store(url: str) -> Any:
    """The :class:`inputkit.storage.Store` that serves ``url``."""
    from inputkit import storage

    return storage.open_store(url)


def expand(entry: str, key: str) -> list[str]:
    """The objects named by one URL pattern (brace ranges, globs; a glob lists the store)."""
    from inputkit import storage

    return storage.expand(entry, key)


def list_prefix(url: str) -> list[Any]:
    """Every object under the "folder" ``url`` (an ``ObjectInfo`` each, sorted by URL)."""
    prefix = url if url.endswith("/") else url + "/"
    return list(store(prefix).list(prefix))


def sizes(urls: Sequence[str]) -> list[int]:
    """The size in bytes of each object, from one ``head`` each, up to 16 asked at once."""
    def size(url: str) -> int:
        return int(store(url).head(url).size)

    if len(urls) <= 1:
        return [size(u) for u in urls]
    with ThreadPoolExecutor(min(_MAX_LOOKUPS, len(urls)),
                            thread_name_prefix="remote-sizes") as pool:
        return list(pool.map(size, urls))


def npy_header(url: str, size: int) -> tuple[tuple[int, ...], np.dtype, int, bool]:
    """(shape, dtype, data offset, fortran order) of the ``.npy`` object ``url`` from one
    ranged read of its first bytes (a second only for a header past 4 KiB)."""
    from numpy.lib import format as npy_format

    head = store(url).read_range(url, 0, min(size, _HEADER_READ))
    if len(head) >= 12 and head[:6] == npy_format.MAGIC_PREFIX:
        major = head[6]
        length = int.from_bytes(head[8:10] if major == 1 else head[8:12], "little")
        need = (10 if major == 1 else 12) + length
        if need > len(head) and need <= size:
            head = store(url).read_range(url, 0, need)
    f = io.BytesIO(head)
    version = npy_format.read_magic(f)
    if version == (1, 0):
        shape, fortran, dtype = npy_format.read_array_header_1_0(f)
    elif version == (2, 0):
        shape, fortran, dtype = npy_format.read_array_header_2_0(f)
    else:
        raise ValueError(f".npy format version {version[0]}.{version[1]} is not supported; save "
                         "a plain numeric array")
    return tuple(int(d) for d in shape), np.dtype(dtype), f.tell(), bool(fortran)


def read_spans(requests: Sequence[tuple[str, int, int]]) -> list[bytes]:
    """The bytes of each ``(url, start, length)``, in that order: one ``read_ranges`` per
    object (the store coalesces near ranges and keeps them in flight together), the objects
    asked at once. A short answer (the object shrank) is a StorageError naming the URL."""
    by_url: dict[str, list[int]] = {}
    for k, (url, _, _) in enumerate(requests):
        by_url.setdefault(url, []).append(k)
    out: list[bytes] = [b""] * len(requests)

    def one(url: str) -> None:
        ks = by_url[url]
        got = store(url).read_ranges(url, [requests[k][1] for k in ks],
                                     [requests[k][2] for k in ks])
        for k, data in zip(ks, got, strict=True):
            data = bytes(data)
            if len(data) != requests[k][2]:
                raise SourceError(STORAGE, f"'{url}' returned {len(data):,} bytes for the range "
                                  f"at byte {requests[k][1]:,} of {requests[k][2]:,}: the object "
                                  "changed since the source was built; build the source again")
            out[k] = data

    if len(by_url) == 1:
        one(next(iter(by_url)))
    elif by_url:
        with ThreadPoolExecutor(min(_MAX_LOOKUPS, len(by_url)),
                                thread_name_prefix="remote-ranges") as pool:
            for done in [pool.submit(one, url) for url in by_url]:
                done.result()
    return out


class RangeFile(io.RawIOBase):
    """A read-only, seekable file over ranged reads of one object of ``size`` bytes.

    A read outside the buffer fetches at least ``block`` bytes from there on (one request),
    so a sequential reader (tarfile's stream) costs one request per ``block`` and holds at
    most one block; pyarrow's column-chunk reads are one request each."""

    def __init__(self, url: str, size: int, block: int = 1 << 20) -> None:
        super().__init__()
        self.url, self._size, self.block = url, int(size), int(block)
        self._pos = 0
        self._buf, self._buf_start = b"", 0
        self._store = store(url)

    def readable(self) -> bool:
        return True

    def seekable(self) -> bool:
        return True

    def size(self) -> int:
        return self._size

    def tell(self) -> int:
        return self._pos

    def seek(self, offset: int, whence: int = io.SEEK_SET) -> int:
        if whence not in (io.SEEK_SET, io.SEEK_CUR, io.SEEK_END):
            raise ValueError(f"seek of '{self.url}': invalid whence {whence!r}")
        base = {io.SEEK_SET: 0, io.SEEK_CUR: self._pos, io.SEEK_END: self._size}[whence]
        if base + int(offset) < 0:  # as a file does: clamping to 0 would read other bytes
            raise ValueError(f"seek of '{self.url}' to byte {base + int(offset)}: a position "
                             "is never negative")
        self._pos = base + int(offset)
        return self._pos

    def read(self, size: int | None = -1) -> bytes:
        if self.closed:
            raise ValueError(f"read of closed file '{self.url}'")
        end = self._size if size is None or size < 0 else min(self._size, self._pos + size)
        if end <= self._pos:
            return b""
        lo = self._pos - self._buf_start
        if not (0 <= lo and end - self._buf_start <= len(self._buf)):
            length = min(self._size - self._pos, max(end - self._pos, self.block))
            data = bytes(self._store.read_range(self.url, self._pos, length))
            if len(data) != length:
                raise SourceError(STORAGE, f"'{self.url}' returned {len(data):,} bytes at byte "
                                  f"{self._pos:,} where {length:,} were asked: the object "
                                  "changed while it was read")
            self._buf, self._buf_start, lo = data, self._pos, 0
        out = self._buf[lo:lo + end - self._pos]
        self._pos = end
        return out

    def readinto(self, buffer: Any) -> int:
        data = self.read(len(buffer))
        buffer[:len(data)] = data
        return len(data)

    def close(self) -> None:
        self._buf = b""
        super().close()

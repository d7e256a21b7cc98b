"""Open shard files of one source, kept per thread, for positioned reads of members.

Why per thread: a thread worker may close a file (an evicted shard's, or the oldest when it
holds too many) while it is not reading it; were the table shared, another thread could be
about to ``pread`` that descriptor number, which the kernel may by then have given to another
shard's file: silently wrong bytes. Each thread closes only its own descriptors.

Why keep them open: a sample read is then one ``pread`` (plus one ``fstat`` for a cached copy
of a remote shard), as cheap as a local shard's, instead of finding, checking and opening the
cached copy for every sample. A cached copy that the disk cache evicts (unlinks) stays readable
through an open descriptor, but its bytes stay on disk until the last one closes: a read that
finds its shard's link count at 0 closes it and makes the shard local again, and a thread that
opens a shard closes every other unlinked copy it still holds, so an evicted shard's bytes
outlive the eviction only until each thread that held it opens its next shard (or the source
is closed).
"""

from __future__ import annotations

import os
import threading
from collections.abc import Callable
from typing import Any

MAX_OPEN = 128  # descriptors one thread keeps; past it the oldest is closed


class ShardFiles:
    """Per-thread open descriptors of shard files. ``remote`` says whether a file is a cached
    copy the disk cache may evict under an open descriptor (then each read checks its link
    count).

    Picklable: a process worker's copy starts with no descriptors.
    """

    def __init__(self, names: list[str], remote: bool, max_open: int = MAX_OPEN) -> None:
        """``names``: each shard's path or URL, for errors."""
        self.names = names
        self.remote = remote
        self.max_open = max_open
        self.opens = 0  # files opened by this process (for tests and diagnosis)
        self._init()

    def _init(self) -> None:
        self._lock = threading.Lock()
        self._local = threading.local()
        self._tables: list[dict[int, int]] = []  # every thread's table, for close()

    def _table(self) -> dict[int, int]:
        table = getattr(self._local, "fds", None)
        if table is None:
            table = self._local.fds = {}
            with self._lock:
                self._tables.append(table)
        return table

    def read(self, shard: int, offset: int, size: int, locate: Callable[[int], str]) -> bytes:
        """``size`` bytes at ``offset`` of shard ``shard``; a short read is an OSError (the
        file changed since it was indexed). ``locate(shard)`` gives the path to open when this
        thread has no open file of the shard (for a remote shard: its cached copy, made local
        or waited for)."""
        table = self._table()
        fd = table.get(shard)
        if fd is not None and self.remote and os.fstat(fd).st_nlink == 0:
            del table[shard]  # evicted from the cache since we opened it
            os.close(fd)
            fd = None
        if fd is None:
            fd = self._open(table, shard, locate)
        data = os.pread(fd, size, offset)
        if len(data) != size:
            raise OSError(f"read {len(data):,} of {size:,} bytes: the shard changed since it "
                          "was indexed")
        return data

    def _open(self, table: dict[int, int], shard: int, locate: Callable[[int], str]) -> int:
        if self.remote:
            for other in [s for s, fd in table.items() if os.fstat(fd).st_nlink == 0]:
                os.close(table.pop(other))  # evicted copies: give their disk space back
        while len(table) >= self.max_open:
            os.close(table.pop(next(iter(table))))  # the oldest opened
        for _ in range(3):
            path = locate(shard)
            try:
                fd = os.open(path, os.O_RDONLY)
            except FileNotFoundError:
                if not self.remote:
                    raise
                continue  # evicted between finding and opening it: make it local again
            table[shard] = fd
            with self._lock:
                self.opens += 1
            return fd
        raise OSError(f"the cached copy of '{self.names[shard]}' was evicted three times before "
                      "it could be opened: raise cache.max_bytes")

    def open_count(self) -> int:
        """Descriptors open now, over every thread."""
        with self._lock:
            return sum(len(t) for t in self._tables)

    def close(self) -> None:
        """Close every thread's descriptors (when no thread reads any more)."""
        with self._lock:
            tables, self._tables = self._tables, []
        for table in tables:
            while table:
                _, fd = table.popitem()
                os.close(fd)
        self._local = threading.local()

    def __getstate__(self) -> dict[str, Any]:
        return {"names": self.names, "remote": self.remote, "max_open": self.max_open,
                "opens": 0}

    def __setstate__(self, state: dict[str, Any]) -> None:
        self.__dict__.update(state)
        self._init()

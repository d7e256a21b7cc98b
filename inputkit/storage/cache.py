"""A bounded disk cache of whole remote objects (shards), shared by threads and processes.

Why it is shaped this way:

- never a partial file under a final name: an object is downloaded to ``<key>.dl`` (the
  store's own temporary names beside it) in the same folder, size-checked against the
  listing, then renamed; its size and etag
  are recorded beside it (``<key>.meta``) so a later run reuses it only when they match;
- one download per object across threads *and* processes: the downloader holds an
  ``fcntl.flock`` on ``<key>.lock``; a second asker waits for it and then finds the file;
- the folder's total (temporary files included) never passes ``max_bytes``: a download
  first reserves its size, under a folder-wide lock, with a reservation record
  ``<key>.part`` that counts as its full size until the download is renamed, evicting
  cached objects that are not needed soon (given the epoch's
  order, the one whose next use is farthest: Belady's rule), and waits, bounded, when
  everything cached is still needed;
- a download lands (renamed, its reservation removed) under that same lock: a reservation's
  scan of the folder (list, then size each file) must never run across a landing, or it
  misses the object whole and admits one too many (CI saw five objects in a four-object
  budget with process workers).

The folder's names and records are read and written in ``cache_files.py``; the locks are
``file_locks.py``'s.
"""

from __future__ import annotations

import contextlib
import hashlib
import math
import os
import re
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass

from inputkit.storage import file_locks
from inputkit.storage.cache_files import (
    META_BYTES,
    folder_usage,
    mtime,
    read_meta,
    remove_download,
    size_of,
    touch,
    write_meta,
)
from inputkit.storage.errors import StorageError

_BUDGET_LOCK = ".budget.lock"
_POLL_S = file_locks.POLL_S

NextUse = Callable[[str], float]  # url -> when it is needed next (math.inf: not this epoch)


@dataclass(frozen=True)
class Cached:
    """One object in the cache: where it came from and how large it is."""

    url: str
    size: int
    etag: str | None
    path: str


def _count(name: str, n: int = 1) -> None:
    from inputkit.storage import counters

    counters.add(name, n)


class DiskCache:
    """Whole objects in ``dir/objects``, at most ``max_bytes`` of them, temporary files included.

    Picklable (its folder and budget): process workers open the same folder and obey the
    same locks. ``wait_s`` bounds how long a download waits for room, or for another's
    download of the same object.
    """

    def __init__(self, dir: str, max_bytes: int, wait_s: float = 120.0) -> None:
        if isinstance(max_bytes, bool) or not isinstance(max_bytes, int) or max_bytes <= 0:
            raise ValueError(f"cache.max_bytes: expected a positive number of bytes, got "
                             f"{max_bytes!r}")
        self.root = dir
        self.dir = os.path.join(dir, "objects")
        self.max_bytes = max_bytes
        self.wait_s = wait_s
        os.makedirs(self.dir, exist_ok=True)

    def __getstate__(self) -> dict[str, object]:
        return {"root": self.root, "dir": self.dir, "max_bytes": self.max_bytes,
                "wait_s": self.wait_s}

    def __setstate__(self, state: dict[str, object]) -> None:
        self.__dict__.update(state)

    def __repr__(self) -> str:
        return f"DiskCache({self.dir!r}, max_bytes={self.max_bytes:,})"

    # names ----------------------------------------------------------------------------------

    def key(self, url: str) -> str:
        """The file name an object gets: a hash of its URL, then its base name for people."""
        digest = hashlib.sha256(url.encode("utf-8", "surrogateescape")).hexdigest()[:24]
        base = re.sub(r"[^A-Za-z0-9._-]", "_", url.rstrip("/").rsplit("/", 1)[-1])[:60]
        return f"{digest}-{base}" if base else digest

    def path(self, url: str) -> str:
        """Where ``url`` lives once cached (it may not be there: see :meth:`cached`)."""
        return os.path.join(self.dir, self.key(url))

    # looking ----------------------------------------------------------------------------------

    def cached(self, url: str, size: int, etag: str | None) -> str | None:
        """The local file of ``url`` when a complete copy of this size (and etag, when both are
        known) is cached; else None. Counts nothing."""
        path = self.path(url)
        meta = read_meta(path + ".meta")
        if meta is None or meta.get("url") != url or meta.get("size") != size:
            return None
        if etag is not None and meta.get("etag") is not None and meta["etag"] != etag:
            return None
        try:
            if os.stat(path).st_size != size:
                return None
        except FileNotFoundError:
            return None
        return path

    def usage(self) -> int:
        """Bytes the folder holds or has promised: cached objects and their records, plus each
        download under way at its full size (its reservation), whatever it has written yet.

        An object being fetched counts once, at the most of what its reservation promised
        (its record ``.part`` and its ``.meta`` included) and what it holds: the scan lists
        the folder, then sizes each file. Under the budget lock (every decision to reserve)
        that is exact: bytes are added to the folder only under that lock (a reservation; a
        landing, which renames and ends the reservation in one step) or within a reservation
        (its partial file); anything else only removes files. Outside the lock (a sampler) a
        landing mid-scan may show twice (the ``.dl`` listed before the rename, the object
        after), hence the most, not the sum; it may also be missed (listed as ``.dl`` and
        ``.part``, both gone when sized): such a reading is a sample, not a budget."""
        return folder_usage(self.dir)

    def entries(self) -> list[Cached]:
        """Every complete object in the folder (with a record that matches its file)."""
        found = []
        with contextlib.suppress(FileNotFoundError):
            for name in os.listdir(self.dir):
                if not name.endswith(".meta"):
                    continue
                path = os.path.join(self.dir, name[:-5])
                meta = read_meta(path + ".meta")
                if meta is None:
                    continue
                with contextlib.suppress(FileNotFoundError):
                    if os.stat(path).st_size == meta.get("size"):
                        found.append(Cached(meta["url"], meta["size"], meta.get("etag"), path))
        return found

    # fetching ---------------------------------------------------------------------------------

    def fetch(self, url: str, size: int, etag: str | None, download: Callable[[str, str], int],
              next_use: NextUse | None = None) -> str:
        """The local file of ``url``, downloaded with ``download(url, dest_path)`` unless a
        matching copy is cached (a stale one, of another size or etag, is replaced).

        ``next_use(url)`` ranks objects by when they are needed next (smaller is sooner;
        math.inf: not needed again this epoch): to make room, the cache evicts objects
        needed later than this one, farthest first, and never one needed sooner. Without
        it, the least recently used go first.
        """
        if size + META_BYTES > self.max_bytes:
            raise StorageError(url, "other", f"'{url}' is {size:,} bytes, more than the whole "
                               f"cache (cache.max_bytes={self.max_bytes:,}): raise cache.max_bytes "
                               f"to at least {size + META_BYTES:,}")
        path = self.path(url)
        found = self.cached(url, size, etag)
        if found is not None:
            touch(found)
            _count("cache_hits")
            return found
        with self._object_lock(url):
            found = self.cached(url, size, etag)  # another process may have just made it
            if found is not None:
                touch(found)
                _count("cache_hits")
                return found
            self._remove(path)  # a stale copy (size or etag changed), if any
            part, dest = path + ".part", path + ".dl"
            remove_download(path)  # left by a crashed download (we hold its lock)
            self._reserve(url, part, size, next_use)
            try:
                written = download(url, dest)
                actual = os.path.getsize(dest)
                if actual != size or written != size:
                    got = written if written != size else actual
                    raise StorageError(url, "other", f"'{url}' changed while it was read: the "
                                       f"listing said {size:,} bytes, the download gave "
                                       f"{got:,}; run again to list it anew")
                write_meta(path + ".meta", url, size, etag)
                # the rename and the end of the reservation are one step for every budget scan
                # (scans run under this lock): a scan that listed the folder before a landing
                # and sized its files after would otherwise miss the object altogether
                with self._budget_lock():
                    os.replace(dest, path)
                    remove_download(path)
            finally:
                remove_download(path)
            _count("cache_misses")
            _count("cache_bytes", size)
            return path

    def wait_for(self, url: str, size: int, etag: str | None, seconds: float,
                 failed: Callable[[], str | None] | None = None) -> str:
        """The local file of ``url`` once someone else (the prefetcher) has cached it; waits up
        to ``seconds``. ``failed()`` returns a reason when that download has failed."""
        deadline = time.monotonic() + seconds
        while True:
            found = self.cached(url, size, etag)
            if found is not None:
                _count("cache_hits")
                return found
            reason = failed() if failed is not None else None
            if reason is not None:
                raise StorageError(url, "other", reason)
            if time.monotonic() > deadline:
                raise StorageError(url, "unreachable", f"'{url}' was not in the cache after "
                                   f"{seconds:g} s of waiting for the shard prefetcher to fetch "
                                   f"it (cache.dir={self.root!r})")
            time.sleep(_POLL_S)

    def evict(self, url: str) -> bool:
        """Remove ``url``'s cached copy now (not needed again this epoch); False when absent
        or being downloaded."""
        lock = self._try_object_lock(url)
        if lock is None:
            return False
        try:
            return self._remove(self.path(url))
        finally:
            file_locks.unlock(lock)

    # internals ----------------------------------------------------------------------------------

    def _reserve(self, url: str, part: str, size: int, next_use: NextUse | None) -> None:
        """Write the reservation record ``part`` once the budget has room, evicting as allowed."""
        need = size + META_BYTES
        mine = next_use(url) if next_use is not None else -math.inf
        deadline = time.monotonic() + self.wait_s
        while True:
            with self._budget_lock():
                used = self.usage()
                if used + need > self.max_bytes:
                    self._drop_orphans()
                    used = self.usage()
                for victim in self._victims(mine, next_use, exclude=url):
                    if used + need <= self.max_bytes:
                        break
                    freed = size_of(victim.path) + size_of(victim.path + ".meta")
                    if self.evict(victim.url):
                        used -= freed
                if used + need <= self.max_bytes:
                    with open(part, "w") as f:
                        f.write(str(need))  # the reservation, visible to every process
                    return
            if time.monotonic() > deadline:
                raise StorageError(url, "other", f"the disk cache has no room for '{url}' "
                                   f"({size:,} bytes) after {self.wait_s:g} s: "
                                   f"cache.max_bytes={self.max_bytes:,} holds {used:,} bytes of "
                                   "objects still needed sooner; raise cache.max_bytes (to at "
                                   f"least {used + need:,}) or lower cache.read_ahead")
            time.sleep(_POLL_S * 5)

    def _victims(self, mine: float, next_use: NextUse | None, exclude: str) -> list[Cached]:
        """Cached objects that may go to make room, the first to go first."""
        others = [c for c in self.entries() if c.url != exclude]
        if next_use is None:
            return sorted(others, key=lambda c: mtime(c.path))
        ranked = [(next_use(c.url), mtime(c.path), c) for c in others]
        return [c for rank, _, c in sorted(ranked, key=lambda r: (-r[0], r[1]))
                if rank > mine or rank == math.inf]

    def _drop_orphans(self) -> None:
        """Remove ``.part`` files whose downloader is gone (a crashed process) and records
        without an object."""
        try:
            names = os.listdir(self.dir)
        except FileNotFoundError:
            return
        for name in names:
            full = os.path.join(self.dir, name)
            if name.endswith(".part"):
                url_path = full[:-5]
                lock = file_locks.try_lock(url_path + ".lock")
                if lock is not None:
                    try:
                        remove_download(url_path)
                    finally:
                        file_locks.unlock(lock)
            elif name.endswith(".meta") and not os.path.exists(full[:-5]) \
                    and not os.path.exists(full[:-5] + ".part"):
                with contextlib.suppress(FileNotFoundError):
                    os.unlink(full)

    def _remove(self, path: str) -> bool:
        removed = False
        for name in (path, path + ".meta"):
            with contextlib.suppress(FileNotFoundError):
                os.unlink(name)
                removed = True
        return removed

    @contextlib.contextmanager
    def _budget_lock(self) -> Iterator[None]:
        with file_locks.locked(os.path.join(self.dir, _BUDGET_LOCK), self.wait_s, "the cache's budget lock"):
            yield

    @contextlib.contextmanager
    def _object_lock(self, url: str) -> Iterator[None]:
        with file_locks.locked(self.path(url) + ".lock", self.wait_s + 600.0, f"'{url}''s download"):
            yield

    def _try_object_lock(self, url: str) -> int | None:
        return file_locks.try_lock(self.path(url) + ".lock")

"""Fetch an input's remote shards into the disk cache ahead of need, in the epoch's order.

One :class:`ShardPrefetcher` runs in the parent per input with remote shards. It follows the
dispatchers (``Dispatcher.progress()``: the epoch, its order and ``low``, the position below
which every sample was delivered or skipped; over several devices, the smallest ``low``):

- it keeps the next ``read_ahead`` shards from ``low`` (by first position in the order)
  cached or downloading, plus any shard a worker is waiting for (its ``.want`` record;
  with ``read_ahead=0`` only those);
- a worker's want record is read from one small folder (``RemoteShards.waited_for``), and
  a shard found cached is checked in full once, then by its file alone;
- when every shard fits ``cache.max_bytes``, a shard stays cached once read (the next epoch
  and the next run read it without a download); otherwise a shard is evicted once its last
  position in this epoch is below ``low``, leaving room for the shards ahead;
- the cache makes room by Belady's rule with each shard's next use (its first position
  still ahead, else ``low``; not needed again this epoch: infinity);
- a download that fails after the storage layer's retries is recorded for that epoch
  (``RemoteShards.mark_failed``): the workers waiting for the shard raise it (on_error=skip:
  its samples of this epoch alone are skipped, counted), and it is tried again next epoch.

Workers, threads or processes, never download while a prefetcher runs: they wait for the
shard's final file (``RemoteShards.local``).
"""

from __future__ import annotations

import math
import os
import queue
import threading
import time
from collections.abc import Sequence
from typing import Any

import numpy as np

from inputkit.storage.cache import META_BYTES

_POLL_S = 0.02


class ShardPrefetcher:
    """Downloads one input's shards ahead of its dispatchers. A stage of the runner:
    ``start()``, ``stop()``, ``join(deadline)`` (names of threads still running)."""

    def __init__(self, remote: Any, groups: np.ndarray, dispatchers: Sequence[Any],
                 read_ahead: int, name: str = "main", threads: int = 2) -> None:
        """``remote``: the source's RemoteShards; ``groups``: the shard number of each sample."""
        if read_ahead < 0:
            raise ValueError(f"cache.read_ahead must be 0 or more shards, got {read_ahead}")
        self.remote = remote
        self.groups = np.asarray(groups, dtype=np.int64)
        self.dispatchers = list(dispatchers)
        self.read_ahead = read_ahead
        self._stop = threading.Event()
        self._todo: queue.Queue[tuple[int, int] | None] = queue.Queue()
        self._lock = threading.Lock()
        self._busy: set[int] = set()  # shards queued or downloading
        self._failed: set[tuple[int, int]] = set()  # (epoch, shard) given up on this epoch
        self._epoch = -1
        self._first = np.zeros(0, dtype=np.int64)
        self._last = np.zeros(0, dtype=np.int64)
        self._low = 0
        self._have: set[int] = set()  # shards whose cached copy was found complete
        self._paths = [remote.cache.path(u) for u in remote.urls]
        self._shard_of = {u: i for i, u in enumerate(remote.urls)}
        # every shard fits at once: keep what was read (epochs and runs after need no download)
        self._all_fit = sum(s + META_BYTES for s in remote.sizes) <= remote.cache.max_bytes
        self.downloads = 0  # shards downloaded by this prefetcher
        self.fetched: dict[tuple[int, int], int] = {}  # (epoch, shard) -> downloads
        self._threads = [threading.Thread(target=self._plan, name=f"inputkit-prefetch-{name}",
                                          daemon=True)]
        self._threads += [threading.Thread(target=self._download, daemon=True,
                                           name=f"inputkit-prefetch-{name}-{i}")
                          for i in range(max(1, threads))]
        remote.prefetched = True
        remote.clear_failures()

    def start(self) -> ShardPrefetcher:
        for thread in self._threads:
            thread.start()
        return self

    def stop(self) -> None:
        self._stop.set()
        self.remote.stopped = True  # thread workers waiting for a shard give up
        for _ in self._threads:
            self._todo.put(None)

    def join(self, deadline: float) -> list[str]:
        stuck = []
        for thread in self._threads:
            if thread.ident is not None:
                thread.join(max(0.0, deadline - time.monotonic()))
            if thread.is_alive():
                stuck.append(thread.name)
        return stuck

    # planning ---------------------------------------------------------------------------------

    def _progress(self) -> tuple[int, np.ndarray, int] | None:
        """The slowest dispatcher's (epoch, order, low); None once every one is done."""
        live = [d.progress() for d in self.dispatchers if not d.done]
        if not live:
            return None
        epoch = min(p[0] for p in live)
        at = [p for p in live if p[0] == epoch]
        return epoch, at[0][1], min(p[2] for p in at)

    def _plan(self) -> None:
        while not self._stop.is_set():
            progress = self._progress()
            if progress is None:
                return
            epoch, order, low = progress
            if epoch != self._epoch:
                self._new_epoch(epoch, order)
            self._low = low
            if not self._all_fit:
                self._evict_done(low)
            for shard in self._wanted(epoch, low):
                with self._lock:
                    if shard in self._busy or (epoch, shard) in self._failed:
                        continue
                    self._busy.add(shard)
                self._todo.put((epoch, shard))
            self._stop.wait(_POLL_S)

    def _new_epoch(self, epoch: int, order: np.ndarray) -> None:
        """Each shard's first and last position in this epoch's order (-1: not in it)."""
        shards = len(self.remote)
        positions = np.arange(len(order), dtype=np.int64)
        shard_at = self.groups[order]
        first = np.full(shards, -1, dtype=np.int64)
        last = np.full(shards, -1, dtype=np.int64)
        first[shard_at[::-1]] = positions[::-1]
        last[shard_at] = positions
        self._first, self._last, self._epoch = first, last, epoch

    def _evict_done(self, low: int) -> None:
        """Evict the shards whose last use this epoch is behind ``low`` (when not every shard
        fits the budget: room for the ones ahead)."""
        for shard in np.flatnonzero((self._last >= 0) & (self._last < low)).tolist():
            if self._is_cached(shard):
                self.remote.cache.evict(self.remote.urls[shard])
                self._have.discard(shard)

    def _wanted(self, epoch: int, low: int) -> list[int]:
        """Any shard a worker waits for, then the next ``read_ahead`` shards still to read from
        ``low``: those not cached."""
        waited = []
        for shard in self.remote.waited_for():
            if self._last[shard] >= low:
                waited.append(shard)
            else:  # read to its end this epoch: a record left as its download ended
                self.remote.clear_want(shard)
        ahead = np.flatnonzero(self._last >= low)
        ahead = ahead[np.argsort(self._first[ahead], kind="stable")][:self.read_ahead]
        missing = []
        for shard in waited + [s for s in ahead.tolist() if s not in waited]:
            if not self._is_cached(shard):
                missing.append(shard)
            elif shard in waited:
                self.remote.clear_want(shard)  # left after its download ended: satisfied
        return missing

    def _is_cached(self, shard: int) -> bool:
        """Whether ``shard``'s complete copy is cached: its record checked once, then only that
        its file is still there (an eviction unlinks it; only this prefetcher replaces it)."""
        if shard in self._have and os.path.exists(self._paths[shard]):
            return True
        self._have.discard(shard)
        if self.remote.cache.cached(self.remote.urls[shard], self.remote.sizes[shard],
                                    self.remote.etags[shard]) is None:
            return False
        self._have.add(shard)
        return True

    def next_use(self, url: str) -> float:
        """When ``url`` is needed next in this epoch (a position), for the cache's evictions."""
        shard = self._shard_of.get(url)
        if shard is None:
            return math.inf
        if shard >= len(self._last) or self._last[shard] < self._low:
            return math.inf
        return float(max(int(self._first[shard]), self._low))

    # downloading ------------------------------------------------------------------------------

    def _download(self) -> None:
        while not self._stop.is_set():
            job = self._todo.get()
            if job is None:
                return
            epoch, shard = job
            try:
                if self.remote.cache.cached(self.remote.urls[shard], self.remote.sizes[shard],
                                            self.remote.etags[shard]) is None:
                    self.remote.fetch(shard, self.next_use)
                    with self._lock:
                        self.downloads += 1
                        self.fetched[(epoch, shard)] = self.fetched.get((epoch, shard), 0) + 1
            except Exception as exc:  # noqa: BLE001 - recorded for the workers that need it
                with self._lock:
                    self._failed.add((epoch, shard))
                self.remote.mark_failed(shard, epoch, f"{type(exc).__name__}: {exc}")
            finally:
                with self._lock:
                    self._busy.discard(shard)
                self.remote.clear_want(shard)

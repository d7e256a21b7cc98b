"""Shards that live in an object store, made local through the bounded disk cache.

A source whose shards are remote (``s3://``, ``gs://``, ``az://``, ``http(s)://``) keeps a
:class:`RemoteShards`: the shards' URLs, sizes and etags from one listing, and the
:class:`~inputkit.storage.cache.DiskCache` they are downloaded into. Reading a sample is then a
positioned read of the cached shard file. Who downloads:

- the :class:`~inputkit.storage.prefetch.ShardPrefetcher` in the parent, in the epoch's order,
  when the runner started one (``prefetched``): workers, threads or processes, wait for the
  shard to appear under its final name, or for the prefetcher's record that it failed;
- else the worker that needs it (a source used directly in a script).

Nothing here imports a storage client until a URL is remote.
"""

from __future__ import annotations

import contextlib
import functools
import math
import os
from collections.abc import Callable, Sequence
from concurrent.futures import ThreadPoolExecutor, as_completed
from typing import Any, TypeVar

from inputkit.storage.cache import DiskCache, NextUse

T = TypeVar("T")
_MAX_HEADS = 16  # heads in flight while listing sizes
_WAIT_S = 600.0  # a worker waits this long for the prefetcher before naming the shard


def remote_urls(urls: str | Sequence[str]) -> bool:
    """Whether ``urls`` (a pattern or a list) names remote objects; a list mixing local paths
    and URLs is refused, naming ``urls``."""
    from inputkit.sources.remote_files import is_url

    entries = [urls] if isinstance(urls, str) else list(urls)
    remote = [is_url(u) for u in entries]
    if any(remote) and not all(remote):
        raise ValueError("urls: mixes local paths and remote URLs; put the shards in one place "
                         "(all local, or all in the store)")
    return bool(entries) and all(remote)


class RemoteShards:
    """The shards of one source: URLs, sizes and etags, and the cache that makes them local.

    Picklable: process workers take it with the source and open the same cache folder.
    """

    def __init__(self, urls: list[str], sizes: list[int], etags: list[str | None],
                 cache: DiskCache) -> None:
        self.urls = urls
        self.sizes = sizes
        self.etags = etags
        self.cache = cache
        self.prefetched = False  # set when a ShardPrefetcher in the parent fetches them
        self.stopped = False  # set when that prefetcher stops (this process's workers stop waiting)

    @classmethod
    def listed(cls, urls: str | Sequence[str], key: str) -> RemoteShards:
        """Expand ``urls`` (brace ranges, globs listing the store) and ask each object's size
        and etag, concurrently."""
        from inputkit import storage

        found: list[str] = []
        for entry in [urls] if isinstance(urls, str) else list(urls):
            found.extend(storage.expand(entry, key))

        def head(url: str) -> Any:
            return storage.open_store(url).head(url)

        with ThreadPoolExecutor(min(_MAX_HEADS, len(found)) or 1,
                                thread_name_prefix="inputkit-head") as pool:
            infos = list(pool.map(head, found))
        _, cache_cfg = storage.settings()
        cache = DiskCache(cache_cfg.dir or storage.cache_dir(), cache_cfg.max_bytes)
        return cls(found, [i.size for i in infos], [i.etag for i in infos], cache)

    def __len__(self) -> int:
        return len(self.urls)

    @property
    def total_bytes(self) -> int:
        return sum(self.sizes)

    # making a shard local -------------------------------------------------------------------

    def fetch(self, shard: int, next_use: NextUse | None = None) -> str:
        """Download shard ``shard`` into the cache unless it is there; its local path."""
        from inputkit import storage

        url, etag = self.urls[shard], self.etags[shard]
        # the version listed and indexed, or a StorageError: never a replaced object's bytes
        # read through offsets of the old one
        download = functools.partial(storage.open_store(url).download, etag=etag)
        return self.cache.fetch(url, self.sizes[shard], etag, download, next_use)

    def local(self, shard: int, epoch: int) -> str:
        """The local file of shard ``shard`` for a read in ``epoch``: waited for when the
        prefetcher fetches it, else fetched here."""
        from inputkit.storage import counters

        with counters.waiting():  # a worker blocked on the store: the verdict's evidence
            return self._local(shard, epoch)

    def _local(self, shard: int, epoch: int) -> str:
        if not self.prefetched:
            return self.fetch(shard)
        url = self.urls[shard]
        marker = self.failure_marker(shard, epoch)

        want = self.want_marker(shard)

        def failed() -> str | None:
            if self.stopped:
                return "the run is closing: the shard prefetcher stopped"
            try:
                with open(marker, encoding="utf-8") as f:
                    return f.read() or f"the shard prefetcher could not download '{url}'"
            except FileNotFoundError:
                pass
            # still not cached: (re)leave the want record, which the prefetcher clears once
            # the shard is cached, even if it is evicted again before this worker looks
            try:
                open(want, "a").close()
            except FileNotFoundError:
                os.makedirs(os.path.dirname(want), exist_ok=True)
                open(want, "a").close()
            return None

        return self.cache.wait_for(url, self.sizes[shard], self.etags[shard], _WAIT_S, failed)

    def want_marker(self, shard: int) -> str:
        """The (empty) file a waiting worker leaves for the prefetcher, in a folder of its own
        (``<cache.dir>/want``: the prefetcher lists that small folder, not every shard)."""
        return os.path.join(self.cache.root, "want", self.cache.key(self.urls[shard]))

    def waited_for(self) -> list[int]:
        """The shards some worker is waiting for (has left a want record for), in order."""
        try:
            names = os.listdir(os.path.join(self.cache.root, "want"))
        except FileNotFoundError:
            return []
        if not names:
            return []
        numbers = self.__dict__.get("_numbers")
        if numbers is None:
            numbers = self._numbers = {self.cache.key(u): i for i, u in enumerate(self.urls)}
        return sorted(numbers[n] for n in names if n in numbers)

    def clear_want(self, shard: int) -> None:
        with contextlib.suppress(FileNotFoundError):
            os.unlink(self.want_marker(shard))

    # the prefetcher's failure records ------------------------------------------------------------

    def failure_marker(self, shard: int, epoch: int) -> str:
        """The file that says the prefetcher's download of ``shard`` failed in ``epoch``, in
        ``<cache.dir>/failed``: not in ``objects/``, whose every byte is the budget's (a
        record written there after a failed download would be bytes nothing reserved)."""
        return os.path.join(self.cache.root, "failed",
                            f"{self.cache.key(self.urls[shard])}.failed-{epoch}")

    def mark_failed(self, shard: int, epoch: int, message: str) -> None:
        marker = self.failure_marker(shard, epoch)
        os.makedirs(os.path.dirname(marker), exist_ok=True)
        with open(marker + ".tmp", "w", encoding="utf-8") as f:
            f.write(message)
        os.replace(marker + ".tmp", marker)

    def clear_failures(self) -> None:
        """Forget every failure record of these shards (a new run tries them again)."""
        folder = os.path.join(self.cache.root, "failed")
        keys = {self.cache.key(u) for u in self.urls}
        with contextlib.suppress(FileNotFoundError):
            for name in os.listdir(folder):
                if ".failed-" in name and name.split(".failed-", 1)[0] in keys:
                    with contextlib.suppress(FileNotFoundError):
                        os.unlink(os.path.join(folder, name))
        for shard in range(len(self.urls)):
            self.clear_want(shard)

    # indexing -------------------------------------------------------------------------------------

    def stage(self, index_one: Callable[[int, str], T], parallel: int = 4) -> list[T]:
        """``index_one(number, local_path)`` for every shard, downloading several at once into
        the cache (where they stay while the budget allows, so the first epoch starts warm on
        them). To make room the cache evicts shards already indexed first, then the highest
        numbers (Belady's rule on the stage's own order), never a lower-numbered shard still
        to index: with LRU a shard downloaded but not yet indexed was evicted by another
        thread's download and downloaded again. A shard evicted before it was indexed (by
        another process on the same cache.dir) is fetched again."""
        numbers = {url: number for number, url in enumerate(self.urls)}
        indexed: set[int] = set()

        def next_use(url: str) -> float:
            number = numbers.get(url)
            return math.inf if number is None or number in indexed else float(number)

        def one(number: int) -> T:
            for _ in range(3):
                path = self.fetch(number, next_use)
                try:
                    found = index_one(number, path)
                except FileNotFoundError:
                    continue  # evicted by another download before we read it
                indexed.add(number)
                return found
            raise ValueError(f"urls: '{self.urls[number]}' was evicted from the disk cache three "
                             f"times before it could be indexed: raise cache.max_bytes "
                             f"(now {self.cache.max_bytes:,})")

        from inputkit.startup import progress

        workers = max(1, min(parallel, len(self.urls)))
        label = f"downloading and indexing {len(self.urls):,} shards"
        with ThreadPoolExecutor(workers, thread_name_prefix="inputkit-index") as pool:
            futures = [pool.submit(one, number) for number in range(len(self.urls))]
            # counted here, in the caller's thread: the start-up clock is not the pool's
            for done, _ in enumerate(as_completed(futures), start=1):
                progress(done, "shards", label)
            return [future.result() for future in futures]


def index_remote(remote: RemoteShards, extensions: tuple[str, ...],
                 label: str | None) -> dict[str, Any]:
    """The tar index (inputkit.sources.tar_index's arrays) of remote shards: each shard
    downloaded whole into the cache (several at once) and its headers read from the local
    file; errors name the shard's URL, not its cached copy."""
    from inputkit.sources.tar_index import _check_uncompressed, _index_arrays, compact

    images = {e.lstrip(".") for e in extensions}

    def one(number: int, path: str) -> Any:
        try:
            _check_uncompressed(path)
            return _index_arrays(path, images, label)
        except ValueError as exc:
            raise ValueError(str(exc).replace(path, remote.urls[number])) from None

    return compact(remote.stage(one), images, len(remote))

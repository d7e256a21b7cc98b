"""The plan's lines for an input that reads from an object store: the disk cache (on disk, never
counted against ``memory.budget``) and the download buffers (in RAM), and the refusal of a
cache too small for the shuffle's shards in flight plus the read-ahead.

The facts come from the probe's copy of the source (``remote_data``): the shards' sizes and
each sample's shard. The arithmetic here is pure; it imports no storage client.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

import numpy as np

from inputkit.config.sizes import format_size
from inputkit.errors import ConfigError
from inputkit.storage.cache import META_BYTES

#: Store.download streams each object through chunks of at least this size (obstore's stream).
STREAM_CHUNK_BYTES = 8 * 2**20
#: whole-shard downloads at once: four while the index is built (RemoteShards.stage), two by
#: the prefetcher's threads while the run reads
SHARD_DOWNLOADS = 4


@dataclass(frozen=True)
class RemoteData:
    """What the plan needs of an input whose data lives in a store."""

    where: str  # the first object's URL: names the store in the plan and the errors
    objects: int
    largest: int  # bytes of the largest object
    total: int
    whole: bool  # whole shards into the disk cache (image_shards), else ranged reads
    range_bytes: int = 0  # ranged reads: the largest one (0: one sample's bytes)
    per_object: bool = False  # one object per sample (image_folder/image_list from a store)
    groups: np.ndarray | None = field(default=None, compare=False, repr=False)


def remote_data(source: Any) -> RemoteData | None:
    """The store facts of a built source (a BoundSource: its capabilities say whether it keeps
    shards in a store), or None when it reads local files only."""
    obj = source.obj
    remote = obj.remote_shards() if source.caps.remote_shards else None
    if remote is not None:
        sizes = [int(s) for s in remote.sizes]
        return RemoteData(remote.urls[0], len(sizes), max(sizes, default=0), sum(sizes), True,
                          groups=np.asarray(obj.sample_groups(), dtype=np.int64))
    if getattr(obj, "remote", None) is True:  # image_folder/image_list: an object per sample
        largest = int(getattr(obj, "largest", (0, 0))[0])  # the largest file the probe read
        where = str(getattr(obj, "path", None) or getattr(obj, "root", None) or "")
        return RemoteData(where, len(obj), largest, 0, False, per_object=True)
    remote_sizes = getattr(obj, "remote_sizes", None)  # parquet: sizes by head, footers kept
    if isinstance(remote_sizes, dict) and remote_sizes:
        largest_range = 0
        for footer in getattr(obj, "footers", None) or []:
            for g in range(footer.num_row_groups):
                row_group = footer.row_group(g)
                for c in range(row_group.num_columns):
                    largest_range = max(largest_range,
                                        int(row_group.column(c).total_compressed_size))
        sizes = list(remote_sizes.values())
        return RemoteData(next(iter(remote_sizes)), len(sizes), max(sizes), sum(sizes), False,
                          range_bytes=largest_range)
    flags = getattr(obj, "remote", None)  # tokens: a flag per file, windows read by ranges
    paths = getattr(obj, "paths", None)
    if isinstance(flags, list) and any(f is True for f in flags) and paths:
        urls = [p for p, f in zip(paths, flags, strict=False) if f]
        return RemoteData(urls[0], len(urls), 0, 0, False)
    return None


def in_flight_span(inp: Any, chunk: int, devices: int) -> int:
    """Positions of the epoch's order being read at once: every device's workers, a chunk each
    (the chunks of an input's devices interleave in one order; a finished chunk waiting in
    the reorder buffer no longer holds its shards)."""
    return max(1, devices * max(1, inp.worker_count) * max(1, chunk))


def shards_held(inp: Any, data: RemoteData, span: int, window: int | None = None) -> int:
    """The most shards the cache holds at once. The prefetcher keeps each shard from its first
    to its last use (inputkit.pipeline.shuffle.shards_in_flight over epoch 0's order, reads ``span``
    positions apart), and the next ``cache.read_ahead`` shards counted from the oldest unread
    position, which are those same shards first: the larger of the two."""
    from inputkit import storage

    read_ahead = storage.settings()[1].read_ahead
    return min(data.objects, max(shards_in_use(inp, data, span, window), read_ahead))


def shards_in_use(inp: Any, data: RemoteData, span: int, window: int | None = None) -> int:
    """The most shards that reads ``span`` positions apart keep in use at once."""
    from inputkit.pipeline.shuffle import epoch_order, shards_in_flight

    if data.groups is None or len(data.groups) == 0:
        return min(data.objects, 1)
    mode = inp.epoch.shuffle_mode
    order = epoch_order(len(data.groups), inp.epoch.seed, 0, mode, data.groups,
                        window or inp.epoch.shuffle_window) if mode == "shards" else \
        epoch_order(len(data.groups), inp.epoch.seed, 0, mode)
    return shards_in_flight(order, data.groups, span).max_in_flight


def storage_terms(inp: Any, data: RemoteData, chunk: int, sample_bytes: int,
                  devices: int) -> list[Any]:
    """The disk cache and download-buffer lines of one input (not per device: one cache and
    one prefetcher serve every device of the input)."""
    from inputkit import storage
    from inputkit.planning.memory_terms import kind_plan
    from inputkit.planning.plan_lines import BYTE_LIMIT, DISK, HOST, Term

    store_cfg, cache_cfg = storage.settings()
    name, p = inp.name, inp.key_prefix
    terms = []
    if data.whole:
        span = in_flight_span(inp, chunk, devices)
        held = shards_held(inp, data, span)
        terms.append(Term(name, "disk cache", DISK, 1, BYTE_LIMIT, cache_cfg.max_bytes,
                          "cache.max_bytes", f"cache.max_bytes at {cache_cfg.dir}; on disk, not "
                          "in host memory", per_device=False))
        terms.append(Term(name, "disk cache: shards in use", DISK, held, "shards", data.largest + META_BYTES,
                          p + "epoch.shuffle_window", f"{format_size(data.largest)}, the largest "
                          f"of {data.objects:,} shards in {data.where.rsplit('/', 1)[0]}/ "
                          f"(in use at once, or cache.read_ahead={cache_cfg.read_ahead} if more)",
                          per_device=False))
        terms.append(Term(name, "download buffers", HOST, SHARD_DOWNLOADS, "downloads",
                          STREAM_CHUNK_BYTES, "cache.read_ahead", f"{format_size(STREAM_CHUNK_BYTES)} "
                          "stream chunk (shards stream to disk)", per_device=False))
        return terms
    if data.per_object:  # a chunk's objects are fetched together and held until decoded
        terms.append(Term(name, "download buffers", HOST, inp.worker_count * max(1, chunk),
                          "objects", data.largest, p + "workers.count",
                          f"{format_size(data.largest)}, the largest file the probe read (a "
                          f"chunk's objects fetched together, storage.concurrency="
                          f"{store_cfg.concurrency} in flight per process)", per_device=False))
        return terms
    size = data.range_bytes or sample_bytes
    processes = inp.worker_count if kind_plan(inp).worker_processes else 1
    per_process = store_cfg.concurrency
    if not data.range_bytes:  # a window per request: a chunk's windows at most
        per_process = min(per_process, max(1, chunk) * (inp.worker_count if processes == 1 else 1))
    what = "the largest column chunk" if data.range_bytes else "one sample's bytes"
    terms.append(Term(name, "download buffers", HOST, per_process * processes, "requests", size,
                      "storage.concurrency", f"{format_size(size)} ({what}; storage.concurrency="
                      f"{store_cfg.concurrency} per process)", per_device=False))
    return terms


def check_cache(inp: Any, data: RemoteData, chunk: int, devices: int) -> None:
    """Refuse a disk cache that cannot hold the shards in flight plus the read-ahead: a
    ConfigError naming ``cache.max_bytes``, the smallest size that works, and the largest
    ``epoch.shuffle_window`` and ``cache.read_ahead`` that fit the budget as it is."""
    from inputkit import storage

    if not data.whole or data.largest == 0:
        return
    cache_cfg = storage.settings()[1]
    span = in_flight_span(inp, chunk, devices)
    held = shards_held(inp, data, span)
    slot = data.largest + META_BYTES  # a shard and its .meta record, reserved together
    need = held * slot
    if need <= cache_cfg.max_bytes:
        return
    fits = cache_cfg.max_bytes // slot
    p = inp.key_prefix
    in_use = shards_in_use(inp, data, span)
    ahead = fits if in_use <= fits else -1
    fixes = []
    if inp.epoch.shuffle_mode == "shards":
        window = _largest_window(inp, data, span, fits)
        if window:
            fixes.append(f"{p}epoch.shuffle_window={window} (with cache.read_ahead="
                         f"{cache_cfg.read_ahead})")
    else:
        fixes.append(f"{p}epoch.shuffle=shards (a {inp.epoch.shuffle_mode} order keeps "
                     f"{in_use:,} shards in use at once)")
    if ahead >= 0:
        fixes.append(f"cache.read_ahead={ahead}")
    tail = ("; or " + ", or ".join(fixes)) if fixes else \
        f"; no shuffle window or read-ahead fits {format_size(cache_cfg.max_bytes)}"
    raise ConfigError("cache.max_bytes", (
        f"{format_size(cache_cfg.max_bytes)} cannot hold what input '{inp.name}' reads from "
        f"{data.where.rsplit('/', 1)[0]}/ at once: {held:,} shards (in use with "
        f"{p}epoch.shuffle={inp.epoch.shuffle_mode}"
        + (f", shuffle_window={inp.epoch.shuffle_window}" if inp.epoch.shuffle_mode == "shards" else "")
        + f"; cache.read_ahead={cache_cfg.read_ahead}) x {format_size(slot)} (the largest "
        f"shard and its record) = {format_size(need)}; set cache.max_bytes={need} or more"
        + tail))


def _largest_window(inp: Any, data: RemoteData, span: int, fits: int) -> int:
    """The largest ``epoch.shuffle_window`` whose shards in use plus the read-ahead fit in
    ``fits`` shards (0: not even 1). Shards held grow with the window: a bisection."""
    lo, hi = 0, max(1, inp.epoch.shuffle_window - 1)
    while lo < hi:
        mid = (lo + hi + 1) // 2
        if shards_held(inp, data, span, mid) <= fits:
            lo = mid
        else:
            hi = mid - 1
    return lo

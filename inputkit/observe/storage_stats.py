"""What the store did, as the dashboard, metrics.jsonl, summary.json and the verdict read it.

A :class:`StorageReading` is a snapshot of ``storage.stats()`` (summed over every process of
the run) with the disk cache's fill, taken by ``Runner.stats()`` for the inputs that read from
a store; rates come from two readings. Reading it lists the cache folder once (no request).
"""

from __future__ import annotations

import os
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from inputkit.config.sizes import format_size


@dataclass(frozen=True)
class StorageReading:
    """The run's storage counters at one moment (``storage.stats()``), where the input reads
    from, and the disk cache's bytes against its budget (None without a disk cache).

    The counters are run-wide: every input that reads from a store shows the same ones."""

    where: str  # the store and prefix the input reads (its first URL's folder)
    bytes_read: int = 0
    requests: int = 0
    in_flight: int = 0
    retries: int = 0
    errors: int = 0
    cache_hits: int = 0
    cache_misses: int = 0
    cache_bytes: int = 0  # bytes downloaded into the cache
    wait_us: int = 0  # readers' time blocked on the store
    cache_used: int | None = None  # bytes in the cache folder now
    cache_max: int | None = None  # cache.max_bytes
    readers: int = 0  # workers of every coordinator reading this store (wait_us is theirs)

    @property
    def cache_share(self) -> float | None:
        if self.cache_used is None or not self.cache_max:
            return None
        return self.cache_used / self.cache_max


def remote_where(source_cfg: Mapping[str, Any]) -> str | None:
    """The first remote URL an input's source config names (its folder), else None."""
    from inputkit.storage import is_remote

    for value in source_cfg.values():
        for item in value if isinstance(value, (list, tuple)) else [value]:
            if isinstance(item, str) and is_remote(item):
                head, _, last = item.rstrip("/").rpartition("/")
                # a file name or a pattern names its folder; a prefix (s3://b/imgs) itself
                if "/" in item.split("://", 1)[1] and any(c in last for c in "{*?[."):
                    return head + "/"
                return item.rstrip("/") + "/"
    return None


def folder_bytes(folder: str) -> int:
    """Bytes of the files directly in ``folder`` now (0 when it does not exist)."""
    total = 0
    try:
        with os.scandir(folder) as entries:
            for entry in entries:
                try:
                    if entry.is_file(follow_symlinks=False):
                        total += entry.stat(follow_symlinks=False).st_size
                except FileNotFoundError:  # evicted or renamed while we looked
                    continue
    except FileNotFoundError:
        return 0
    return total


def read_storage(where: str) -> StorageReading:
    """The counters now, and the disk cache's fill (``<cache.dir>/objects``) when it exists."""
    from inputkit import storage

    counts = storage.stats()
    cache = storage.settings()[1]
    objects = os.path.join(cache.dir, "objects")
    used = folder_bytes(objects) if os.path.isdir(objects) else None
    return StorageReading(where=where, cache_used=used,
                          cache_max=cache.max_bytes if used is not None else None,
                          **{k: int(v) for k, v in counts.items()
                             if k in StorageReading.__dataclass_fields__})


def storage_rate(now: StorageReading, before: StorageReading | None, span_s: float) -> float:
    """MB/s downloaded between two readings (since start without ``before``)."""
    if span_s <= 0:
        return 0.0
    return (now.bytes_read - (before.bytes_read if before else 0)) / 1e6 / span_s


def storage_line(now: StorageReading, before: StorageReading | None, span_s: float) -> str:
    """The dashboard's storage row: MB/s, requests in flight, retries and errors, the cache's
    fill against its budget, hits and misses."""
    parts = [f"{storage_rate(now, before, span_s):.1f} MB/s",
             f"{now.in_flight} in flight",
             f"{now.retries:,} retries", f"{now.errors:,} errors"]
    if now.cache_used is not None and now.cache_max:
        parts.append(f"cache {format_size(now.cache_used)} of {format_size(now.cache_max)} "
                     f"({now.cache_share:.0%})")
    parts.append(f"{now.cache_hits:,} hits / {now.cache_misses:,} misses")
    return f"storage {now.where}: " + ", ".join(parts)


def storage_record(now: StorageReading, before: StorageReading | None,
                   span_s: float) -> dict[str, Any]:
    """The same figures for metrics.jsonl."""
    from dataclasses import asdict

    return {**asdict(now), "mb_per_s": storage_rate(now, before, span_s),
            "cache_share": now.cache_share}

"""What the runner builds once per input, beside its coordinators, and shares across devices.

An input's epoch orders (drawn once, read by every device's dispatcher), the check that
epoch keys need an indexable source, and the shard prefetcher of a source whose shards live
in an object store. Each is a decision about the input, not about one device's chain, so it
lives neither in the coordinator nor in the runner's lifecycle.
"""

from __future__ import annotations

from typing import Any

from inputkit.errors import ConfigError
from inputkit.pipeline.dispatcher import EpochOrders
from inputkit.sources.loader import BoundSource
from inputkit.sources.protocol import sample_groups


def check_epoch_keys(spec: Any, length: int | None) -> None:
    """epoch.* keys other than the defaults need an indexable source; say so instead of ignoring them."""
    if length is not None:
        return
    from inputkit.pipeline.dispatcher import EpochSpec

    default = EpochSpec()
    for name in ("shuffle", "shuffle_window", "ordered", "chunk_size", "count"):
        if getattr(spec.epoch, name) != getattr(default, name):
            raise ConfigError(
                f"{spec.key_prefix}epoch.{name}",
                f"needs an indexable source (one with __len__ and read(indices)), and "
                f"'{spec.source['_target_']}' is read by fetch(worker_id, batch_size); "
                "see docs/reliability.md")


def epoch_orders(spec: Any, source: BoundSource | None, length: int | None) -> EpochOrders | None:
    """The input's epoch orders, shared by its devices; ``shuffle=shards`` takes the source's
    shards (``sample_groups()``) here, before a process-worker source is dropped."""
    if length is None or source is None:
        return None
    groups = None
    if spec.epoch.shuffle_mode == "shards":
        groups = sample_groups(source, length, f"{spec.key_prefix}epoch.shuffle",
                               spec.source["_target_"])
    return EpochOrders(length, spec.epoch, groups)


def expect_prefetcher(source: BoundSource | None) -> None:
    """Mark a source's remote shards as fed by a ShardPrefetcher now, before the coordinators
    pickle the source for process workers: a copy pickled without the mark downloaded shards
    itself beside the prefetcher (twice the downloads, evictions ranked by no order)."""
    remote = source.obj.remote_shards() if source is not None and source.caps.remote_shards \
        else None
    if remote is not None:
        remote.prefetched = True


def shard_prefetcher(name: str, source: BoundSource | None, dispatchers: list[Any]) -> Any:
    """A ShardPrefetcher for an input whose source keeps its shards in an object store
    (``remote_shards()``): it fills the disk cache in the dispatchers' order, and the workers
    wait for it instead of downloading. None for every other source."""
    remote = source.obj.remote_shards() if source is not None and source.caps.remote_shards \
        else None
    if remote is None or not dispatchers or any(d is None for d in dispatchers):
        return None
    from inputkit import storage
    from inputkit.storage.prefetch import ShardPrefetcher

    return ShardPrefetcher(remote, source.obj.sample_groups(), dispatchers,
                           storage.settings()[1].read_ahead, name=name)

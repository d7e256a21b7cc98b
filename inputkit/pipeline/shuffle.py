"""Epoch orders: none, a global permutation, or a block shuffle that respects shards.

Pure functions over index arrays (no I/O), used by the Dispatcher (inputkit/pipeline/dispatcher.py) to
draw each epoch's order and by the shard cache/prefetcher and the plan to know how many
shards an order keeps in use at once.

``shards`` is a block shuffle in the manner of Mosaic Streaming's ``py1b``: from
``(seed, epoch)`` the shard order is permuted; the shards are cut, in that order, into
*blocks* of ``window`` whole shards; the samples of each block are shuffled among
themselves; the blocks follow one another. So every shard lives inside one block (it is
read over one stretch of the epoch and can then be evicted), and any run of consecutive
positions inside one block touches at most ``window`` shards, a run crossing one block
boundary at most ``2 * window``. A *shard* here is any group of samples that a source
stores together (a tar shard, a token or Parquet file): the source's ``sample_groups()``.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np

MODES = ("none", "global", "shards")
DEFAULT_WINDOW = 8


@dataclass(frozen=True)
class ShardLayout:
    """The shards of a source, prepared once: dense shard id per sample and each shard's
    samples in index order (so an epoch's order costs one pass, not a sort)."""

    dense: np.ndarray      # shard number 0..shards-1 of each sample (int64)
    counts: np.ndarray     # samples per shard (int64)
    rank: np.ndarray       # each sample's position among its shard's samples (int64)

    @property
    def shards(self) -> int:
        return len(self.counts)

    @classmethod
    def of(cls, groups: np.ndarray | Sequence[int]) -> ShardLayout:
        """``groups``: one group id per sample (any integers; a shard need not be contiguous)."""
        groups = np.asarray(groups)
        if groups.ndim != 1:
            raise ValueError(f"sample_groups(): expected one group id per sample (1-D), got shape "
                             f"{groups.shape}")
        _, dense, counts = np.unique(groups, return_inverse=True, return_counts=True)
        dense = dense.astype(np.int64, copy=False).reshape(-1)
        by_shard = np.argsort(dense, kind="stable")
        starts = np.concatenate([[0], np.cumsum(counts)[:-1]]).astype(np.int64)
        rank = np.empty(len(dense), dtype=np.int64)
        rank[by_shard] = np.arange(len(dense), dtype=np.int64) - np.repeat(starts, counts)
        return cls(dense=dense, counts=counts.astype(np.int64), rank=rank)


def epoch_order(length: int, seed: int, epoch: int, mode: str = "global",
                groups: np.ndarray | ShardLayout | None = None,
                window: int = DEFAULT_WINDOW) -> np.ndarray:
    """The order (an int64 permutation of ``range(length)``) in which epoch ``epoch`` reads.

    ``none``: index order. ``global``: ``np.random.default_rng((seed, epoch)).permutation``
    (the order inputkit has always used, so saved resume state stays valid). ``shards``: the
    block shuffle of the module docstring, over ``groups`` (one shard id per sample, or a
    prepared :class:`ShardLayout`) in blocks of ``window`` shards.
    """
    if mode == "none":
        return np.arange(length, dtype=np.int64)
    rng = np.random.default_rng((seed, epoch))
    if mode == "global":
        return rng.permutation(length).astype(np.int64)
    if mode != "shards":
        raise ValueError(f"unknown shuffle mode {mode!r}; use one of: {', '.join(MODES)}")
    if groups is None:
        raise ValueError("shuffle mode 'shards' needs the source's sample_groups()")
    if window < 1:
        raise ValueError(f"window must be at least 1 shard, got {window}")
    layout = groups if isinstance(groups, ShardLayout) else ShardLayout.of(groups)
    if len(layout.dense) != length:
        raise ValueError(f"sample_groups() gave {len(layout.dense):,} group ids for a source of "
                         f"{length:,} samples; it must give one per sample")
    shard_order = rng.permutation(layout.shards)
    counts = layout.counts[shard_order]
    ends = np.cumsum(counts)
    start_of = np.empty(layout.shards, dtype=np.int64)  # where each shard's samples begin
    start_of[shard_order] = ends - counts
    order = np.empty(length, dtype=np.int64)
    order[start_of[layout.dense] + layout.rank] = np.arange(length, dtype=np.int64)
    bounds = np.concatenate([[0], ends[window - 1::window]])
    if bounds[-1] != length:
        bounds = np.append(bounds, length)
    for a, b in zip(bounds[:-1].tolist(), bounds[1:].tolist(), strict=True):
        rng.shuffle(order[a:b])
    return order


@dataclass(frozen=True)
class ShardSpans:
    """Where each shard is read in one epoch's order, and how many shards are in use at once."""

    first: np.ndarray   # first position of each shard in the order (-1: not in it)
    last: np.ndarray    # last position of each shard in the order (-1: not in it)
    max_in_flight: int  # the most shards held at once (see shards_in_flight)


def shards_in_flight(order: np.ndarray, groups: np.ndarray | ShardLayout, span: int) -> ShardSpans:
    """For each shard (dense ids as in :class:`ShardLayout`), its first and last position in
    ``order``; and the most shards held at once by a cache that keeps each shard from its
    first to its last use while reads are ``span`` positions apart (workers x chunk, the
    reorder window, devices): the most shards whose [first, last] meets any ``span``
    consecutive positions. That is at least the distinct shards any ``span`` consecutive
    positions touch (the same for ``shards`` orders, whose shards are interleaved within a
    block). ``order`` may be a resumed epoch's remainder (a subset).

    One vectorized pass: counted with a difference array over positions.
    """
    if span < 1:
        raise ValueError(f"span must be at least 1 position, got {span}")
    layout = groups if isinstance(groups, ShardLayout) else ShardLayout.of(groups)
    order = np.asarray(order, dtype=np.int64)
    shard = layout.dense[order]
    n = len(order)
    first = np.full(layout.shards, -1, dtype=np.int64)
    last = np.full(layout.shards, -1, dtype=np.int64)
    positions = np.arange(n, dtype=np.int64)
    # reversed assignment keeps the smallest position for repeated indices
    first[shard[::-1]] = positions[::-1]
    last[shard] = positions
    if n == 0:
        return ShardSpans(first, last, 0)
    present = first >= 0
    # A window [p - span + 1, p] (p from span-1 to n-1, clipped at 0) meets [f, l] when
    # p >= f and p - span + 1 <= l, i.e. p in [f, l + span - 1].
    lo = first[present]
    hi = np.minimum(last[present] + span - 1, n - 1)
    diff = np.bincount(lo, minlength=n + 1) - np.bincount(hi + 1, minlength=n + 1)
    live = np.cumsum(diff[:-1])
    return ShardSpans(first, last, int(live.max()))

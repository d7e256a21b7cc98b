"""Read an existing ``torch.utils.data.Dataset`` through inputkit's workers.

::

    source:
      _target_: inputkit.sources.torch_dataset.TorchDatasetSource
      dataset: {_target_: mypkg.MyDataset, root: /data}    # built with hydra's instantiate
    # or: dataset: mypkg.MyDataset  with  dataset_args: {root: /data}

A *map-style* dataset (``__len__`` and ``__getitem__``) makes an indexable source:
the pipeline hands out index ranges (exactly-once epochs, ``epoch.shuffle``, worker
restarts), and ``read(indices)`` calls ``dataset[i]`` for each index and copies each
sample into arrays allocated once per chunk. An ``IterableDataset`` makes a plain
fetch source: every worker runs its own iterator, and sharding is the dataset's
(:func:`worker_info`) or, with ``shard=True``, the source's. See docs/torch.md.

This module is the adapter: the source's hooks (setup, close, read, fetch). Its jobs live
beside it: ``torch_build.py`` (``fields`` and the dataset, checked), ``torch_collate.py``
(samples to arrays), ``torch_workers.py`` (per-worker state, ``worker_info``, the iterator's
share) and ``torch_describe.py`` (names in messages). It imports torch; inputkit imports it
only when a config names it.
"""

from __future__ import annotations

import threading
from collections.abc import Mapping, Sequence
from typing import Any

import numpy as np

from inputkit.errors import SourceError, SourceExhausted
from inputkit.sources.torch_build import dataset_kind, dataset_of, parse_fields
from inputkit.sources.torch_collate import Collator
from inputkit.sources.torch_describe import describe_type, note
from inputkit.sources.torch_workers import WorkerState, draw, swap, worker_info

# dataset_kind and worker_info are named from here (torch_adapter, docs/torch.md, datasets'
# own code); they live beside the config checks and the worker state.
__all__ = ["TorchDatasetSource", "dataset_kind", "worker_info"]


class TorchDatasetSource:
    """An inputkit source over a torch ``Dataset``: map-style (indexable) or iterable.

    ``dataset``: the dataset object (a nested ``{_target_: ...}`` config is built
    before it gets here), or the dotted name of a dataset class or factory, called
    with ``dataset_args``. ``fields``: names for the fields of tuple (or single-value)
    samples, in order, where ``None`` drops the value at that position (a file name in
    ``(image, label, path)``); for dict samples, the keys to keep (others, e.g. strings,
    are ignored). As a mapping ``{name: {shape, dtype}}`` it also declares each field's
    per-sample shape and dtype (``name: None`` drops that position): the first sample is
    checked against them, and the memory planner takes its sizes from them instead of
    probing.

    ``shard`` (iterable datasets only): unless the dataset takes its share with
    :func:`worker_info`, worker ``w`` of ``n`` keeps items ``w, w + n, ...`` of its own
    iterator, so each item arrives once (every worker still iterates every item).
    """

    def __init__(self, dataset: Any, fields: Sequence[str] | Mapping[str, Any] | None = None,
                 shard: bool = True, dataset_args: Mapping[str, Any] | None = None) -> None:
        fields, self.declared = parse_fields(fields)
        if not isinstance(shard, bool):
            raise ValueError(f"shard: expected true or false, got {shard!r}")
        dataset, self.iterable = dataset_of(dataset, dataset_args)
        self.dataset = dataset
        self.fields = fields
        self.shard = shard
        self.name = describe_type(dataset)  # the source named in SourceErrors
        self._getitems = getattr(dataset, "__getitems__", None) if not self.iterable else None
        self._collator = Collator(fields, self.declared, self.name)
        self._num_workers: int | None = None
        self._workers: dict[int, WorkerState] = {}  # per worker id: thread workers share us
        self._by_thread: dict[int, WorkerState] = {}  # per thread ident, for read()

    def __repr__(self) -> str:
        kind = "iterable" if self.iterable else f"map-style, {len(self.dataset)} samples"
        return f"TorchDatasetSource({self.name}, {kind})"

    # the worker hooks -------------------------------------------------------------------------

    def setup(self, worker_id: int, num_workers: int) -> None:
        """Record this worker's share, which :func:`worker_info` returns inside read and fetch."""
        if num_workers < 1 or not 0 <= worker_id < num_workers:
            raise ValueError(f"setup: worker_id {worker_id} is not in 0..{num_workers - 1}")
        self._num_workers = num_workers
        state = WorkerState(worker_id, num_workers)
        self._workers[worker_id] = state  # one thread (or process) per worker id
        self._by_thread[threading.get_ident()] = state

    def close(self) -> None:
        """Close the iterators the workers opened (generators release their files)."""
        workers, self._workers = self._workers, {}
        self._by_thread = {}
        for state in workers.values():
            close = getattr(state.iterator, "close", None)
            if callable(close):
                close()

    # map-style: indexable ----------------------------------------------------------------------

    def __len__(self) -> int:
        if self.iterable:
            raise TypeError(f"{self.name} is an IterableDataset: it has no length, inputkit "
                            "reads it with fetch")
        return len(self.dataset)

    def read(self, indices: np.ndarray) -> dict[str, np.ndarray]:
        """``dataset[i]`` for each index, in order, collated into one array per field."""
        if self.iterable:
            raise TypeError(f"{self.name} is an IterableDataset; it cannot be read by index")
        positions = np.asarray(indices, dtype=np.int64).tolist()
        previous = swap(self._by_thread.get(threading.get_ident()))  # for worker_info()
        try:
            return self._read(positions)
        finally:
            swap(previous)

    def _read(self, positions: list[int]) -> dict[str, np.ndarray]:
        if not positions:
            return self._collator.empty(lambda: self._get(0), "index 0")
        if self._getitems is not None:
            samples = self._get_many(positions)
            if len(samples) != len(positions):
                raise SourceError(self.name, f"__getitems__ returned {len(samples)} samples for "
                                  f"{len(positions)} indices; it must return one per index")
        else:
            get = self._get
            samples = [get(index) for index in positions]
        return self._collator.collate(samples, positions, "index {}")

    def _get(self, index: int) -> Any:
        try:
            return self.dataset[index]
        except Exception as exc:
            note(exc, f"[inputkit] raised by {self.name}.__getitem__({index}), called by "
                 "TorchDatasetSource.read")
            raise

    def _get_many(self, positions: list[int]) -> list[Any]:
        try:
            return list(self._getitems(positions))  # type: ignore[misc]
        except Exception as exc:
            note(exc, f"[inputkit] raised by {self.name}.__getitems__ for {len(positions)} "
                 f"indices from {positions[0]}, called by TorchDatasetSource.read")
            raise

    # iterable: fetch ----------------------------------------------------------------------------

    def fetch(self, worker_id: int, batch_size_hint: int) -> dict[str, np.ndarray]:
        """Up to ``batch_size_hint`` items of this worker's iterator, collated; then SourceExhausted."""
        if not self.iterable:
            raise TypeError(f"{self.name} is a map-style dataset: the pipeline reads it with "
                            "read(indices), not fetch")
        state = self._workers.get(worker_id)
        if state is None:  # fetch without setup (by hand): this worker id reads everything
            state = self._workers[worker_id] = WorkerState(0, 1)
        if state.done:
            raise SourceExhausted
        wanted = max(1, int(batch_size_hint))
        previous = swap(state)  # worker_info() in the dataset's code answers for this worker
        try:
            samples, items = draw(state, self.dataset, self.name, worker_id, wanted, self.shard)
        finally:
            swap(previous)
        if not samples:
            raise SourceExhausted
        return self._collator.collate(samples, items, f"item {{}} of worker {worker_id}'s iterator")

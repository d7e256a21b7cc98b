"""The worker side of the torch-dataset source: which worker runs, and its own iterator.

Its own module because this state is per worker, not per source: thread workers share one
``TorchDatasetSource``, so each worker's id, share and (iterable datasets) iterator live in
a ``WorkerState`` that the source keeps per worker id, and the one running in this thread is
what :func:`worker_info` answers from inside the dataset's code. :func:`draw` pulls one
chunk's items from a worker's iterator and applies ``shard=True``'s share.
"""

from __future__ import annotations

import threading
from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any

from inputkit.errors import SourceError
from inputkit.sources.torch_describe import note

_local = threading.local()  # the WorkerState of the worker running in this thread


@dataclass
class WorkerState:
    """One worker's view of the source: its id, its share and (iterable datasets) its iterator."""

    worker_id: int
    num_workers: int
    iterator: Iterator[Any] | None = None
    items: int = 0  # items drawn from the iterator, kept or skipped
    skip: bool | None = None  # shard=True and the dataset does not shard itself (decided once)
    consulted: bool = False  # the dataset called worker_info() in this worker
    done: bool = False


def worker_info() -> tuple[int, int]:
    """``(worker_id, num_workers)`` of the inputkit worker that runs the calling code.

    The counterpart of ``torch.utils.data.get_worker_info()`` for datasets read by
    :class:`~inputkit.sources.torch_dataset.TorchDatasetSource`: an ``IterableDataset``
    calls it in ``__iter__`` to take its share (``range(worker_id, n, num_workers)``).
    ``num_workers`` counts the input's workers on every device; ids are unique across them.
    Outside an inputkit worker (your own loop, torch's DataLoader) it returns ``(0, 1)``:
    the whole dataset.

    An ``IterableDataset`` that calls it before yielding its first item is trusted to
    shard itself, so ``shard=True`` leaves its items alone.
    """
    state: WorkerState | None = getattr(_local, "state", None)
    if state is None:
        return 0, 1
    state.consulted = True
    return state.worker_id, state.num_workers


def swap(state: WorkerState | None) -> WorkerState | None:
    """Make ``state`` the one :func:`worker_info` answers in this thread; the previous one
    is returned, for the caller to put back when its call into the dataset ends."""
    previous = getattr(_local, "state", None)
    _local.state = state
    return previous


def draw(state: WorkerState, dataset: Any, name: str, worker_id: int, wanted: int,
         shard: bool) -> tuple[list[Any], list[int]]:
    """Up to ``wanted`` items of this worker's iterator (opened on first use) and their item
    numbers; fewer, and ``state.done``, when it ends. Under ``shard`` a worker that the
    dataset does not shard itself keeps items ``w, w + n, ...`` only."""
    if state.iterator is None:
        try:
            state.iterator = iter(dataset)
        except Exception as exc:
            note(exc, f"[inputkit] raised by iter() of {name} in worker {worker_id}")
            raise
        if state.iterator is dataset:
            raise SourceError(name, "__iter__ returned the dataset itself; every worker "
                              "needs its own iterator: make __iter__ a generator (or return a "
                              "new iterator on each call)")
    iterator = state.iterator
    samples: list[Any] = []
    items: list[int] = []
    while len(samples) < wanted:
        try:
            sample = next(iterator)
        except StopIteration:
            state.done = True
            break
        except Exception as exc:
            note(exc, f"[inputkit] raised by the iterator of {name} in worker "
                 f"{worker_id}, after {state.items} items")
            raise
        item = state.items
        state.items += 1
        if state.skip is None:  # decided once: did the dataset take its share itself?
            state.skip = shard and state.num_workers > 1 and not state.consulted
        if state.skip and item % state.num_workers != state.worker_id:
            continue
        samples.append(sample)
        items.append(item)
    return samples, items

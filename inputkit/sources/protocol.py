"""The fetch-plugin protocol, after Caffe2's data_workers.

A source is anything with ``fetch(worker_id, batch_size_hint)`` returning one
*chunk*: a mapping of field name to numpy array (or a sequence of arrays,
whose fields are then named "0", "1", ...), every array with the same leading
length n >= 0. n may be anything: the batcher re-chunks into exact batches.

``worker_id`` is unique across all workers of an input, over every device, so a
source can shard its work by it. ``batch_size_hint`` is the input's batch size.
A finite source raises :class:`~inputkit.errors.SourceExhausted` (or
``StopIteration``) when its epoch is over.

All workers of one input call the *same* source object, from several threads:
a source that keeps state (a cursor, a file handle) must guard it with a lock.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Protocol, runtime_checkable

import numpy as np

FetchResult = Mapping[str, np.ndarray] | Sequence[np.ndarray]


@runtime_checkable
class Source(Protocol):
    def fetch(self, worker_id: int, batch_size_hint: int) -> FetchResult:
        """Return the next chunk of samples, or raise SourceExhausted at the end of the epoch."""
        ...

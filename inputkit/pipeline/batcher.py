"""Re-chunking: exact ``batch_size`` batches from chunks of any size.

Leftovers carry over to the next batch; nothing is dropped or duplicated. A
batch that lies inside one chunk is a *view* of it (no copy); a batch spanning
chunks is assembled with exactly one copy per field. At the end of a finite
input the remainder becomes a final partial batch, unless ``drop_last``.
"""

from __future__ import annotations

import threading
import time
from collections import deque
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import numpy as np

from inputkit.pipeline.chunk import Chunk
from inputkit.pipeline.chunk_stream import ChunkStream
from inputkit.pipeline.dispatcher import INDEX_FIELD, EpochEnd
from inputkit.pipeline.messages import END, Failure
from inputkit.pipeline.queues import BoundedQueue, QueueClosed


@dataclass(slots=True)
class Batch:
    """``n`` samples per field; ``copied`` tells whether assembling it copied data. Not changed
    once made (not frozen, which would cost 0.8 us a batch: see Chunk)."""

    fields: dict[str, np.ndarray]
    n: int
    nbytes: int
    copied: bool
    # Index-range work: the sample indices in this batch (for Runner.state_dict), taken out
    # of the fields by the batcher thread so they never reach the device.
    indices: np.ndarray | None = None


class Rechunker:
    """Pure re-chunking logic (no threads), easy to test exhaustively."""

    def __init__(self, batch_size: int, drop_last: bool = False,
                 copy_borrowed: Callable[[], bool] = lambda: True) -> None:
        if batch_size < 1:
            raise ValueError(f"batch_size must be >= 1, got {batch_size}")
        self.batch_size = batch_size
        self.drop_last = drop_last
        # Asked before a borrowed chunk (a view of a worker's shared-memory slot) would reach
        # the consumer as a view: True means copy it into a batch of its own instead.
        self.copy_borrowed = copy_borrowed
        self._pending: deque[tuple[dict[str, np.ndarray], int, bool]] = deque()
        self._count = 0
        self.dropped = 0  # samples dropped by drop_last at the end of the input

    @property
    def pending(self) -> int:
        """Samples waiting for the next batch."""
        return self._count

    def add(self, fields: dict[str, np.ndarray], n: int, borrowed: bool = False,
            nbytes: int | None = None) -> list[Batch]:
        """Take a chunk of ``n`` samples (``nbytes``, if known); return the batches it completes
        (maybe none)."""
        if n == 0:
            return []
        if n == self.batch_size and not self._pending and not borrowed:
            # Chunk = batch, nothing carried over (W1's shape): the chunk is the batch, as is.
            return [Batch(fields=fields, n=n, nbytes=_nbytes(fields) if nbytes is None else nbytes,
                          copied=False)]
        self._pending.append((fields, n, borrowed))
        self._count += n
        batches = []
        while self._count >= self.batch_size:
            batches.append(self._take(self.batch_size))
        return batches

    def flush(self) -> Batch | None:
        """End of input: the final partial batch, or None (nothing left, or drop_last)."""
        if self._count == 0:
            return None
        if self.drop_last:
            self.dropped += self._count
            self._pending.clear()
            self._count = 0
            return None
        return self._take(self._count)

    def _take(self, k: int) -> Batch:
        head, head_n, borrowed = self._pending[0]
        if head_n >= k and not (borrowed and self.copy_borrowed()):
            # The whole batch lies in one chunk: hand out views, no copy.
            fields = {name: arr[:k] for name, arr in head.items()}
            self._consume_head(head, head_n, borrowed, k)
            self._count -= k
            return Batch(fields=fields, n=k, nbytes=_nbytes(fields), copied=False)
        out = {name: np.empty((k, *arr.shape[1:]), dtype=arr.dtype) for name, arr in head.items()}
        filled = 0
        while filled < k:
            head, head_n, borrowed = self._pending[0]
            take = min(head_n, k - filled)
            for name, dest in out.items():
                dest[filled:filled + take] = head[name][:take]
            filled += take
            self._consume_head(head, head_n, borrowed, take)
        self._count -= k
        return Batch(fields=out, n=k, nbytes=_nbytes(out), copied=True)

    def _consume_head(self, head: dict[str, np.ndarray], head_n: int, borrowed: bool,
                      used: int) -> None:
        if used == head_n:
            self._pending.popleft()
        else:
            rest = {name: arr[used:] for name, arr in head.items()}
            self._pending[0] = (rest, head_n - used, borrowed)


def _nbytes(fields: dict[str, np.ndarray]) -> int:
    return sum(arr.nbytes for arr in fields.values())


class Batcher:
    """A Rechunker, and what leaves it: index-range sample indices taken out of the fields
    (they never reach the device), and the count of batches copied or passed as views."""

    def __init__(self, batch_size: int, drop_last: bool,
                 copy_borrowed: Callable[[], bool] = lambda: True) -> None:
        self.rechunker = Rechunker(batch_size, drop_last, copy_borrowed)
        self.copied_batches = 0
        self.view_batches = 0
        self._ready: deque[Batch | Any] = deque()  # batches made, then the message after them

    def pull(self, stream: ChunkStream, stop: threading.Event | None = None) -> Batch | Any:
        """The next finished batch, or the control message next in line (END, an EpochEnd, a
        Failure), pulling chunks from ``stream`` as needed; QueueClosed once it stops.

        The one place an epoch ends: its remainder becomes its last batch (or is dropped
        under drop_last) before the EpochEnd or END passes, so no batch mixes two epochs.
        The batcher thread calls it on the chunk queue; inline, the consumer's thread on the
        inline pool.
        """
        ready = self._ready
        while not ready:
            item = stream.get(stop)
            if isinstance(item, Chunk):
                made = self.rechunker.add(item.fields, item.n, item.borrowed, item.nbytes)
                if len(made) == 1:  # the usual case: straight out, no deque
                    return self.finish(made[0])
                ready.extend(made)
            elif item is END or isinstance(item, EpochEnd):
                last = self.rechunker.flush()
                if last is not None:
                    ready.append(last)
                ready.append(item)
            else:  # a Failure: passed on at once (nothing follows it)
                return item
        item = ready.popleft()
        return self.finish(item) if isinstance(item, Batch) else item

    def clear(self) -> None:
        """Forget batches made and not taken (the pipeline stopped)."""
        self._ready.clear()

    def finish(self, batch: Batch) -> Batch:
        if INDEX_FIELD in batch.fields:
            fields = dict(batch.fields)
            indices = fields.pop(INDEX_FIELD)
            batch = Batch(fields=fields, n=batch.n, nbytes=batch.nbytes - indices.nbytes,
                          copied=batch.copied, indices=indices)
        if batch.copied:
            self.copied_batches += 1
        else:
            self.view_batches += 1
        return batch


class BatcherThread(Batcher):
    """Moves chunks from the chunk queue through a Rechunker into the batch queue."""

    def __init__(self, *, name: str, chunks: BoundedQueue, batches: BoundedQueue,
                 batch_size: int, drop_last: bool, stop: threading.Event, where: str,
                 copy_borrowed: Callable[[], bool] = lambda: True) -> None:
        super().__init__(batch_size, drop_last, copy_borrowed)
        self._chunks = chunks
        self._batches = batches
        self._stop = stop
        self._where = where
        self.thread = threading.Thread(target=self._run, name=name, daemon=True)

    def start(self) -> None:
        self.thread.start()

    def _run(self) -> None:
        try:
            while not self._stop.is_set():
                try:
                    item = self.pull(self._chunks, self._stop)
                except QueueClosed:
                    return
                if isinstance(item, Batch):
                    if not self._batches.put(item, item.nbytes, self._stop):
                        return
                    continue
                self._batches.put_control(item)
                if item is END or isinstance(item, Failure):
                    return
        except BaseException as exc:  # a bug in re-chunking must reach the consumer, not vanish
            self._batches.put_control(Failure.capture(exc, self._where))

    def join(self, deadline: float) -> list[str]:
        self.thread.join(max(0.0, deadline - time.monotonic()))
        return [self.thread.name] if self.thread.is_alive() else []

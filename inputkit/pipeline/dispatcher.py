"""Index-range work for indexable sources: who reads which samples, and in which order they leave.

A source with ``__len__`` and ``read(indices)`` is not asked for "the next chunk";
each device's :class:`Dispatcher` hands its workers *work items* (a seq number
and the sample indices to read). Because the parent knows what every worker
holds, a chunk lost with a dead worker is handed out again (only the samples not
yet delivered), so with ``failures.on_worker_death=restart`` every sample of an
epoch still arrives exactly once. The same bookkeeping gives:

- devices: device ``d`` of ``D`` takes items ``d, d + D, ...`` of each epoch, so
  devices never overlap and together cover every sample;
- epochs: items of epoch ``e + 1`` are handed out only once epoch ``e`` is
  complete, so no batch mixes two epochs; each epoch ends with an
  :class:`EpochEnd` marker (the last one with ``END``);
- shuffling: epoch ``e`` reads an order drawn from ``(seed, e)`` (inputkit/pipeline/shuffle.py): a
  global permutation, or with ``shuffle=shards`` a block shuffle that keeps reads within a
  window of the source's shards; every device computes the same order;
- ``ordered``: chunks leave in seq order whatever the worker count or timing, so
  the same config and seed give the same batches. Out-of-order chunks wait in a
  reorder buffer, bounded by handing out at most ``window`` items past the
  oldest unfinished one;
- skips (``failures.on_error=skip``): an item none of whose samples could be read is
  complete without a chunk (:meth:`Dispatcher.skip`); one that lost only some forgets
  those (:meth:`Dispatcher.drop`) and delivers the rest, so delivered + skipped is
  every sample of the epoch.

Each epoch's order, its end marker and the arithmetic of a device's share live in
``epochs.py``; this module keeps the bookkeeping of what is handed out and what came back.
"""

from __future__ import annotations

import threading
from collections import deque
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from inputkit.config.records import EpochSpec  # declared once there; imported from here too
from inputkit.pipeline.epochs import EpochEnd, EpochOrders
from inputkit.pipeline.messages import END

# Index-range chunks carry their sample indices in this hidden field through the batcher,
# so the runner knows which samples the consumer has received (Runner.state_dict).
INDEX_FIELD = "__inputkit_index__"


@dataclass
class WorkItem:
    """Read ``indices[offset:]``; ``seq`` orders items over every epoch of one device."""

    epoch: int
    seq: int
    indices: np.ndarray
    offset: int = 0

    @property
    def remaining(self) -> np.ndarray:
        return self.indices[self.offset:]


@dataclass
class _Entry:
    """A handed-out item: pieces waiting to leave (ordered mode), and whether it is complete."""

    item: WorkItem
    start: int = 0  # the item's first position in this epoch's order
    pieces: deque[Any] = field(default_factory=deque)
    complete: bool = False


class Dispatcher:
    """Hands out one device's work items and releases finished chunks in order. Thread-safe.

    The worker pool binds ``emit(item)``, which puts a chunk or control message
    downstream (it may block on a full queue and returns False once the pipeline
    stops; it is never called with the lock held), and ``hold(chunk)``, which makes
    a chunk safe to keep in the reorder buffer (process workers copy it out of its
    shared-memory slot, so out-of-order chunks never starve the workers of slots).
    """

    def __init__(self, length: int, batch_size: int, spec: EpochSpec, device_index: int,
                 num_devices: int, window: int, first_epoch: int = 0,
                 consumed: dict[int, np.ndarray] | None = None,
                 orders: EpochOrders | None = None) -> None:
        """``first_epoch`` and ``consumed`` (epoch -> bool mask of samples already delivered)
        resume a run saved with Runner.state_dict: those samples are not read again.
        ``orders``: the input's epoch orders, shared by its devices (default: this
        dispatcher's own; ``shuffle=shards`` needs one built with the source's groups)."""
        self.length = length
        self.chunk_size = spec.chunk_size or batch_size
        self.spec = spec
        self.device_index = device_index
        self.num_devices = num_devices
        self.window = max(1, window)
        self._emit: Callable[[Any], bool] = lambda item: False
        self._hold: Callable[[Any], Any] = lambda chunk: chunk
        self._cond = threading.Condition()
        self._consumed = consumed or {}
        self.orders = orders if orders is not None else EpochOrders(length, spec)
        self._positions: np.ndarray | None = None  # index order materialized for progress()
        self._chunks_per_epoch = 0
        self.epoch = -1  # the epoch being handed out
        self._order: np.ndarray | None = None  # this epoch's permutation (shuffle only)
        self._next_k = 0  # next chunk number of this epoch to hand out
        self._seq = 0
        self._requeued: deque[WorkItem] = deque()
        self._entries: dict[int, _Entry] = {}  # handed out and not yet released, by seq
        self._next_release = 0  # ordered: the seq whose pieces leave next
        self._draining = False
        self._finished = False
        self._start_epoch(first_epoch)

    def bind(self, emit: Callable[[Any], bool], hold: Callable[[Any], Any] | None = None) -> None:
        self._emit = emit
        if hold is not None:
            self._hold = hold

    # handing out ----------------------------------------------------------------------------

    def try_take(self) -> WorkItem | None:
        """The next item to read, or None when there is none right now (or ever: see done)."""
        with self._cond:
            return self._take_locked()

    def take(self, stop: threading.Event, poll: float = 0.1) -> WorkItem | None:
        """Block until an item is available; None once the stream is finished or ``stop`` is set."""
        with self._cond:
            while not stop.is_set():
                item = self._take_locked()
                if item is not None or self._finished:
                    return item
                self._cond.wait(poll)
        return None

    @property
    def done(self) -> bool:
        """True when every epoch has been handed out, delivered and marked."""
        return self._finished

    def _take_locked(self) -> WorkItem | None:
        if self._requeued:
            return self._requeued.popleft()
        if self._finished or self._next_k >= self._chunks_per_epoch:
            return None  # this epoch is all handed out: wait for it to complete
        if self.spec.ordered and self._seq >= self._next_release + self.window:
            return None  # the reorder buffer is as full as it may get
        k = self._next_k
        self._next_k += self.num_devices
        start, stop = k * self.chunk_size, min((k + 1) * self.chunk_size, self._epoch_length)
        indices = self._order[start:stop] if self._order is not None else \
            np.arange(start, stop, dtype=np.int64)
        item = WorkItem(epoch=self.epoch, seq=self._seq, indices=indices)
        self._seq += 1
        self._entries[item.seq] = _Entry(item, start=start)
        return item

    def _start_epoch(self, epoch: int) -> None:
        """Begin handing out ``epoch`` (called with the lock held, or from __init__)."""
        self.epoch = epoch
        self._next_k = self.device_index
        self._positions = None
        self._order = self.orders.get(epoch) if self.length else None
        consumed = self._consumed.pop(epoch, None)
        if consumed is not None:  # resuming: only what the consumer had not received
            order = self._order if self._order is not None else np.arange(self.length, dtype=np.int64)
            self._order = order[~consumed[order]]
            self._order.flags.writeable = False
        self._epoch_length = len(self._order) if self._order is not None else self.length
        self._chunks_per_epoch = -(-self._epoch_length // self.chunk_size)

    def progress(self) -> tuple[int, np.ndarray, int]:
        """``(epoch, order, low)`` for a prefetcher: the epoch being handed out, its order (the
        sample index at each position; a resumed epoch's order holds only what was left), and
        the position below which every sample of this device's share was read (delivered or
        skipped): the start of its oldest unfinished item, or of the next to hand out.

        Shards whose last position is below ``low`` are done with for this epoch; fetch ahead
        from ``low``. Positions of other devices' items (chunks ``d, d + D, ...`` go to device
        ``d``) are not tracked here: a process feeding several devices takes the smallest
        ``low``. ``order`` is the dispatcher's own array, not a copy: read-only, do not write
        to it. Cheap, and safe from any thread."""
        with self._cond:
            order = self._order
            if order is None:  # index order: materialized once per epoch, only if asked
                if self._positions is None:
                    self._positions = np.arange(self._epoch_length, dtype=np.int64)
                    self._positions.flags.writeable = False
                order = self._positions
            low = min(self._next_k * self.chunk_size, self._epoch_length)
            for entry in self._entries.values():  # by seq: the first unfinished is the oldest
                if not entry.complete and entry.item.epoch == self.epoch:
                    low = min(low, entry.start)
                    break
            return self.epoch, order, low

    # results --------------------------------------------------------------------------------

    def deliver(self, item: WorkItem, chunk: Any, n: int, last: bool) -> bool:
        """A piece of ``n`` samples of ``item`` was read (``last``: the item is complete)."""
        if self.spec.ordered and item.seq != self._next_release:
            # It waits for older items. (An unlocked peek: a copy too many is harmless.)
            chunk = self._hold(chunk)
        with self._cond:
            entry = self._entries[item.seq]
            entry.item.offset += n
            if not self.spec.ordered:
                entry.complete = last
                direct = True
            else:
                entry.pieces.append(chunk)
                entry.complete = last
                direct = False
        if direct:
            if not self._emit(chunk):
                return False
            if last:
                return self._release([item.seq])
            return True
        return self._drain()

    def skip(self, item: WorkItem) -> bool:
        """``item``'s remaining samples failed to read and on_error=skip (the pool counts them):
        move on."""
        with self._cond:
            entry = self._entries[item.seq]
            entry.item.offset = len(entry.item.indices)
            entry.complete = True
        if self.spec.ordered:
            return self._drain()
        return self._release([item.seq])

    def drop(self, item: WorkItem, bad: Any) -> bool:
        """Some of ``item``'s remaining samples (the indices ``bad``) failed to read and
        on_error=skip (the pool counts them); the others will be delivered as pieces.

        The item forgets them, so its offset goes on counting delivered samples of what is
        left, and a requeue after a worker death hands out only good samples not yet
        delivered: a skipped sample is never read again, a delivered one never twice.
        Nothing left: the same as :meth:`skip`.
        """
        with self._cond:
            entry = self._entries[item.seq]
            kept = entry.item
            rest = kept.indices[kept.offset:]
            good = rest[~np.isin(rest, np.asarray(bad, dtype=np.int64))]
            if len(good):
                kept.indices = np.concatenate([kept.indices[:kept.offset], good])
                if item is not kept:  # a requeued copy shows the same
                    item.indices, item.offset = kept.indices, kept.offset
                return True
        return self.skip(item)

    def open(self, item: WorkItem) -> bool:
        """Whether ``item`` still waits for samples: False once it was delivered or skipped (a
        second answer for it, from a worker taken for dead, is a duplicate)."""
        with self._cond:
            entry = self._entries.get(item.seq)
            return entry is not None and not entry.complete

    def requeue(self, item: WorkItem) -> None:
        """A worker died holding ``item``: hand out what it had not delivered again, first."""
        with self._cond:
            entry = self._entries.get(item.seq)
            if entry is None or entry.complete:
                return
            self._requeued.append(WorkItem(epoch=entry.item.epoch, seq=entry.item.seq,
                                           indices=entry.item.indices, offset=entry.item.offset))
            self._cond.notify_all()

    def _drain(self) -> bool:
        """Ordered mode: emit pieces of the oldest items, in seq order, by one thread at a time."""
        with self._cond:
            if self._draining:
                return True  # the thread already draining will emit these too
            self._draining = True
        try:
            while True:
                with self._cond:
                    entry = self._entries.get(self._next_release)
                    if entry is None or (not entry.pieces and not entry.complete):
                        self._draining = False
                        return True
                    if entry.pieces:
                        piece = entry.pieces.popleft()
                    else:  # complete, every piece emitted
                        piece = None
                        seq = self._next_release
                        self._next_release += 1
                if piece is not None:
                    if not self._emit(piece):
                        return False
                elif not self._release([seq]):
                    return False
        except BaseException:
            with self._cond:
                self._draining = False
            raise

    def _release(self, seqs: list[int]) -> bool:
        """Forget finished items; close the epoch (and maybe the stream) when it is complete."""
        markers: list[Any] = []
        with self._cond:
            for seq in seqs:
                self._entries.pop(seq, None)
            epoch_complete = (self._next_k >= self._chunks_per_epoch and not self._entries
                              and not self._requeued and not self._finished)
            if epoch_complete:
                markers = self._close_epoch_locked()
            self._cond.notify_all()
        return all(self._emit(m) for m in markers)

    def _close_epoch_locked(self) -> list[Any]:
        """Markers for the end of this epoch, and of any following ones that give this device
        nothing (a resumed epoch whose share was already delivered)."""
        markers: list[Any] = []
        while True:
            if self.spec.count is not None and self.epoch + 1 >= self.spec.count:
                self._finished = True
                return [*markers, END]
            markers.append(EpochEnd(self.epoch))
            self._start_epoch(self.epoch + 1)
            if self._next_k < self._chunks_per_epoch:
                return markers
            if self._epoch_length == self.length:  # a whole epoch has nothing for this device
                self._finished = True
                return [*markers, END]

    def start(self) -> bool:
        """Emit the markers of a first epoch that gives this device nothing: END when no epoch
        ever will (fewer chunks than devices), EpochEnd for a resumed epoch already delivered."""
        markers: list[Any] = []
        with self._cond:
            if self.spec.count is not None and self.epoch >= self.spec.count:  # resumed, all done
                self._finished = True
                markers = [END]
            elif not self._finished and self._next_k >= self._chunks_per_epoch:
                if self._epoch_length == self.length:
                    self._finished = True
                    markers = [END]
                else:
                    markers = self._close_epoch_locked()
        return all(self._emit(m) for m in markers)

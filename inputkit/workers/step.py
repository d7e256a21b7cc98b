"""One worker step: a unit of work through the checks, the processors and the failure policy.

Every worker kind runs its work through :class:`WorkerStep` and gets a typed
:mod:`~inputkit.workers.outcome` back; only where the arrays go differs (thread
workers: the chunk queue; process workers: a shared-memory slot; Ray actors: the
object store; inline: the consumer's own thread). A unit of work is either

- a fetch, :meth:`WorkerStep.fetch` (``source.fetch(worker_id, hint)``, or
  ``fetch_into(worker_id, hint, allocate)`` when given an allocator), or
- a read of an index-range work item, :meth:`WorkerStep.read` (``read(indices)``, with the
  item's ``epoch`` if the source takes one) or :meth:`WorkerStep.read_into`.

What the source returned is checked (its schema; for a read, one sample per index),
the processors run on it and their output is checked, all of it under the failure
policy: ``raise`` lets the error out of the step (the caller reports it:
:meth:`Error.of <inputkit.workers.outcome.Error.of>` across a process boundary),
``retry`` retries and lists what it retried in the outcome, ``skip`` skips the fetch
(:class:`FetchSkipped`) or, for a read, only the bad samples (workers/samples.py:
:class:`Got` with ``skipped``, or :class:`SamplesSkipped` when none was good). A read
adds the index field (the samples' global indices) to the chunk.

The source's optional capabilities (``setup``, ``fetch_into``, ``read_into``, ``read``
and its ``epoch`` keyword) are looked up here, in :meth:`WorkerStep.__init__`, and
nowhere else in the worker code.

Kept lean: per fetch, no lock and one allocation (the outcome) beyond the chunk.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from typing import Any

import numpy as np

from inputkit.errors import SourceExhausted
from inputkit.pipeline.chunk import Chunk, ChunkSchema, check_read, with_field
from inputkit.pipeline.dispatcher import INDEX_FIELD
from inputkit.pipeline.failures import FailurePolicy, RepeatedLog, Skipped, call_with_policy
from inputkit.processors import ProcessorChain
from inputkit.workers.base import Activity, FetchClock
from inputkit.workers.outcome import (
    DONE,
    NO_RETRIES,
    STOPPED,
    Empty,
    FetchSkipped,
    Got,
    Outcome,
    SamplesSkipped,
)
from inputkit.workers.samples import read_skipping

_STATS_EVERY_S = 0.5


def describe(exc: BaseException) -> str:
    """``"Type: message"``: how a retried or skipped error travels and is keyed."""
    return f"{type(exc).__name__}: {exc}"


class WorkerStep:
    """One worker's way of turning a unit of work into an :data:`Outcome`.

    ``schema`` checks what the source returns; with ``chain`` (processors),
    ``out_schema`` checks what they make. ``stop`` (an Event or StopFlag) ends retry
    waits and one-by-one reads. ``repeats``: the pool's log of skips and retries when
    the step runs in the pool's process (thread workers); None elsewhere, where the
    parent logs them from the outcome. ``activity``/``index``: the watchdog's clocks
    (each call of the source is timed for ``failures.fetch_timeout``); None for Ray.
    ``report_processors``: put the chain's snapshot on outcomes, at most twice a
    second (workers in another process; thread workers read the chain directly).
    """

    def __init__(self, source: Any, *, worker_id: int, num_workers: int, hint: int,
                 policy: FailurePolicy, where: str, stop: Any, schema: ChunkSchema,
                 chain: ProcessorChain | None = None, out_schema: ChunkSchema | None = None,
                 repeats: RepeatedLog | None = None, activity: Activity | None = None,
                 index: int = 0, report_processors: bool = False) -> None:
        self.source = source
        self.worker_id = worker_id
        self.num_workers = num_workers
        self.hint = hint
        self.policy = policy
        self.where = where
        self.stop = stop
        self.schema = schema
        self.chain = chain
        self.out_schema = out_schema if chain is not None else None
        self.repeats = repeats
        self.activity = activity
        self.index = index
        self.clock = FetchClock()
        self._raising = policy.on_error == "raise"
        self._skipping = policy.on_error == "skip"
        self._report = report_processors and chain is not None
        self._stats_sent = 0.0
        # The source's optional capabilities, as recorded when it was bound (BoundSource.caps).
        obj, caps = source.obj, source.caps
        self.has_setup = caps.setup
        self.fetch_into: Callable[..., Any] | None = obj.fetch_into if caps.fetch_into else None
        self._read: Callable[..., Any] | None = obj.read if caps.reads else None
        self._by_epoch = caps.takes_epoch
        # read_into writes the source's arrays into a slot: processors would replace them.
        # (named apart from the read_into method, which an attribute of its name would hide)
        self.source_read_into: Callable[..., Any] | None = \
            obj.read_into if caps.read_into and chain is None else None

    def setup(self) -> None:
        """The source's ``setup(worker_id, num_workers)``, if it has one."""
        self.source.setup(self.worker_id, self.num_workers)

    # checks --------------------------------------------------------------------------------

    def check_raw(self, raw: Any, expect: int | None) -> Chunk:
        """What the source returned, checked (its schema; ``expect`` samples for a read)."""
        return check_read(self.schema.check(raw, self.worker_id), expect, self.source.name)

    def finish(self, chunk: Chunk, key: Any) -> Chunk:
        """The processors, and their output checked; ``chunk`` itself without processors."""
        chain = self.chain
        if chain is None:
            return chunk
        wid = self.worker_id
        return self.out_schema.check(chain.apply(chunk.fields, wid, key), wid)  # type: ignore[union-attr]

    def processors(self) -> Any:
        """The chain's cumulative snapshot, at most twice a second (None in between)."""
        if not self._report:
            return None
        now = time.monotonic()
        if now - self._stats_sent < _STATS_EVERY_S:
            return None
        self._stats_sent = now
        return self.chain.snapshot()  # type: ignore[union-attr]

    # units of work -------------------------------------------------------------------------

    def fetch(self, allocate: Any = None) -> Outcome:
        """One fetch: :class:`Got`, :class:`Empty`, :class:`FetchSkipped` or :data:`DONE`.
        With ``allocate`` (a slot allocator) the source's ``fetch_into`` writes into it."""
        fetch_into = self.fetch_into if allocate is not None else None
        source, wid, hint = self.source, self.worker_id, self.hint

        def call() -> Chunk:
            raw = fetch_into(wid, hint, allocate) if fetch_into is not None \
                else source.fetch(wid, hint)
            return self.finish(self.check_raw(raw, None), None)

        try:
            chunk, wall, cpu, retries = self._timed(call)
        except (SourceExhausted, StopIteration):
            return DONE
        except Skipped as skipped:  # (skip never retries: no retries to report)
            return FetchSkipped(describe(skipped.error))
        if chunk.n == 0:
            return Empty(wall, cpu, retries)
        return Got(chunk, wall, cpu, -1, retries, None, self.processors())

    def read(self, seq: int, epoch: int, indices: np.ndarray) -> Outcome:
        """Read work item ``seq``: :class:`Got` (its chunk with the index field; under
        ``on_error=skip`` perhaps with skipped samples), :class:`SamplesSkipped` when no
        sample could be read, or :data:`STOPPED`."""
        source_read = self._read
        if source_read is None:
            raise TypeError(f"{self.where}: the source has no read(indices) for index-range work")
        read = (lambda ids: source_read(ids, epoch=epoch)) if self._by_epoch else source_read
        key = (epoch, int(indices[0])) if len(indices) else None
        if self._skipping:  # a bad sample costs only itself
            return self._read_skipping(read, seq, indices, key)
        n = len(indices)
        chunk, wall, cpu, retries = self._timed(
            lambda: self.finish(self.check_raw(read(indices), n), key))
        chunk = with_field(chunk, INDEX_FIELD, np.array(indices, dtype=np.int64))
        return Got(chunk, wall, cpu, seq, retries, None, self.processors())

    def read_into(self, seq: int, epoch: int, indices: np.ndarray, allocate: Any) -> Got:
        """Work item ``seq`` written by the source's ``read_into(indices, allocate)``, the index
        field allocated beside it (no processors: :attr:`source_read_into` is None with them)."""
        read_into = self.source_read_into
        if read_into is None:
            raise TypeError(f"{self.where}: read_into is not usable here (none, or processors)")
        n = len(indices)
        if self._by_epoch:
            def call() -> Chunk:
                return self.check_raw(read_into(indices, allocate, epoch=epoch), n)
        else:
            def call() -> Chunk:
                return self.check_raw(read_into(indices, allocate), n)
        chunk, wall, cpu, retries = self._timed(call)
        ids = allocate(INDEX_FIELD, (n,), np.dtype(np.int64))
        ids[:] = indices
        return Got(with_field(chunk, INDEX_FIELD, ids), wall, cpu, seq, retries, None,
                   self.processors())

    # the policy and the clocks ---------------------------------------------------------------

    def _timed(self, call: Callable[[], Chunk]) -> tuple[Chunk, float, float, tuple[str, ...]]:
        """``call()`` under the policy, timed: (chunk, wall, cpu, retries); Skipped if skipped."""
        activity, index = self.activity, self.index
        if activity is not None:
            activity.fetching(index)
        clock = self.clock
        clock.start()
        retries: tuple[str, ...] = NO_RETRIES
        try:
            if self._raising:  # on_error=raise: the policy would only re-raise
                chunk = call()
            else:
                seen: list[str] = []
                chunk = call_with_policy(call, self.policy, self.where, self.stop,
                                         on_retry=lambda e: seen.append(describe(e)),
                                         repeats=self.repeats)
                if seen:
                    retries = tuple(seen)
        except BaseException:
            if activity is not None:
                activity.fetched(index, progress=False)
            raise
        wall, cpu = clock.stop()
        if activity is not None:
            activity.fetched(index, progress=chunk.n > 0)
        return chunk, wall, cpu, retries

    def _read_skipping(self, read: Callable[[np.ndarray], Any], seq: int, indices: np.ndarray,
                       key: Any) -> Outcome:
        """Item ``seq`` under on_error=skip (workers/samples.py), timed like one fetch."""
        activity, index = self.activity, self.index
        begin = None
        if activity is not None:
            activity.fetching(index)

            def begin() -> None:  # each single read is one call of the source, timed
                activity.fetching(index)
        wall0, cpu0 = time.perf_counter(), time.thread_time()
        try:
            got = read_skipping(read, indices, self.check_raw, lambda c: self.finish(c, key),
                                self.policy, self.where, self.stop, begin=begin)
        except BaseException:
            if activity is not None:
                activity.fetched(index, progress=False)
            raise
        if activity is not None:
            activity.fetched(index, progress=got.chunk is not None)
        if got.stopped:
            return STOPPED
        if got.chunk is None:  # read_skipping names each sample it did not deliver
            return SamplesSkipped(seq, got.bad, got.ok, NO_RETRIES, self.processors())
        skipped = SamplesSkipped(seq, got.bad, got.ok) if got.bad else None
        chunk = with_field(got.chunk, INDEX_FIELD, np.array(got.indices, dtype=np.int64))
        return Got(chunk, time.perf_counter() - wall0, time.thread_time() - cpu0, seq,
                   NO_RETRIES, skipped, self.processors())


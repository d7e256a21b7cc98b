"""One supervisor for workers in other processes: the parent's decisions, written once.

Process workers and Ray actors differ in how work and outcomes travel (a
:class:`~inputkit.workers.transport.Transport`), not in what the parent decides.
This module decides it, for both:

- the **ledger**: which work items each worker holds (handed out, not yet
  answered), so that a death loses nothing: its items are handed out again;
- the **restart policy** (``failures.on_worker_death``, ``failures.max_restarts``):
  a death is repaired by a new worker in the same place, or fails the run with a
  message naming the worker (id, pid or node) and how it died;
- the **failure tallies**: retries, skipped fetches and samples against the skip
  ceiling, restarts, each logged once per kind of error (rate-limited);
- **duplicates**: an answer for an item that is no longer open (handed out again
  after a death, and delivered by the other worker) is counted and dropped, so
  every sample arrives exactly once;
- the end: END once every worker has finished, unless the run failed.

It runs in the transport's receiver thread; the watchdog may only mark a worker
finished (:meth:`finish`) and fail the pool.
"""

from __future__ import annotations

import logging
from collections import deque
from collections.abc import Callable
from typing import Any

from inputkit.errors import WorkerFailure
from inputkit.pipeline.chunk import Chunk, private_copy
from inputkit.pipeline.dispatcher import Dispatcher, WorkItem
from inputkit.pipeline.failures import (
    RETRY,
    SKIP,
    SKIP_SAMPLES,
    FailurePolicy,
    FailureTally,
    pool_log,
    samples_message,
)
from inputkit.pipeline.messages import END, Failure
from inputkit.workers.outcome import Done, Empty, Error, FetchSkipped, SamplesSkipped, error_type
from inputkit.workers.transport import Transport

log = logging.getLogger("inputkit.workers")


class Supervisor:
    """The ledger, restart policy, failure tallies and duplicate dropping of one pool.

    ``put(chunk)`` is the transport's way into the chunk queue (it may wait for room and
    returns False once the pipeline stops); ``out`` takes control messages; ``fail`` is
    the pool's (it stops every worker and reaches the consumer once); ``stopping`` and
    ``failed`` read the pool's state.
    """

    def __init__(self, transport: Transport, count: int, *, policy: FailurePolicy,
                 dispatcher: Dispatcher | None, pool: str, put: Callable[[Chunk], bool],
                 out: Any, fail: Callable[[Failure], None], stopping: Callable[[], bool],
                 failed: Callable[[], bool]) -> None:
        self.transport = transport
        self.policy = policy
        self.dispatcher = dispatcher
        self.failures = FailureTally(policy, pool, per_sample=dispatcher is not None)
        self.repeats = pool_log(pool)  # skips and retries, logged here, rate-limited
        self.duplicates = 0
        self._put = put
        self._out = out
        self._fail = fail
        self._stopping = stopping
        self._failed = failed
        self._held: list[deque[WorkItem]] = [deque() for _ in range(count)]
        self._finished = [False] * count
        # Items whose delivered samples were counted with their skipped ones (read_samples).
        self._counted: set[int] = set()
        if dispatcher is not None:
            dispatcher.bind(self._emit, hold=private_copy)

    # the ledger ------------------------------------------------------------------------------

    def held(self, index: int) -> deque[WorkItem]:
        """The items worker ``index`` holds, oldest first (read only)."""
        return self._held[index]

    def finished(self, index: int) -> bool:
        """Worker ``index`` said done, failed, died or was stopped: it gets no more work."""
        return self._finished[index]

    def finish(self, index: int) -> None:
        self._finished[index] = True

    def hand_out(self, index: int, limit: int) -> bool:
        """Keep worker ``index`` holding up to ``limit`` items; False when the dispatcher has
        none to give right now (the other workers need not be asked)."""
        held = self._held[index]
        while len(held) < limit and not self._finished[index]:
            item = self.take(index)
            if item is None:
                return False
            if not self.transport.send(index, item):
                break  # it died: the item goes back when its death is reported
        return True

    def take(self, index: int) -> WorkItem | None:
        """The dispatcher's next item, entered in worker ``index``'s ledger (the transport
        then sends it), or None."""
        if self.dispatcher is None or self._finished[index]:
            return None
        item = self.dispatcher.try_take()
        if item is not None:
            self._held[index].append(item)
        return item

    def current(self, index: int, seq: int) -> WorkItem | None:
        """Worker ``index``'s item ``seq`` if it still waits for samples; None for a duplicate
        (counted and dropped). An item the worker was never given is a protocol error."""
        for item in self._held[index]:
            if item.seq == seq:
                break
        else:
            raise WorkerFailure(f"{self.transport.where(index)} answered for work item {seq}, "
                                "which it does not hold")
        if self.dispatcher is not None and self.dispatcher.open(item):
            return item
        self._held[index].remove(item)
        self.duplicates += 1
        return None

    # outcomes --------------------------------------------------------------------------------

    def handle(self, index: int, outcome: Any) -> bool:
        """An outcome that carries no chunk (Empty, FetchSkipped, SamplesSkipped, Done, Error);
        False when the receiver should end."""
        kind = type(outcome)
        if kind is Empty:
            self.retried(index, outcome.retries)
            self.failures.fetched()
            return True
        if kind is FetchSkipped:
            self.retried(index, outcome.retries)
            return self.skipped(index, outcome.why)
        if kind is SamplesSkipped:
            item = self.current(index, outcome.seq)
            return item is None or self.samples(index, item, outcome)
        if kind is Done:
            self.done(index)
            return True
        if kind is Error:
            self._finished[index] = True
            self._fail(outcome.failure(self.transport.where(index)))
            return False
        raise WorkerFailure(f"unexpected outcome {outcome!r} from {self.transport.where(index)}")

    def deliver(self, index: int, item: WorkItem | None, chunk: Chunk, n: int, last: bool) -> bool:
        """A chunk (or a piece of one: ``last`` False) of worker ``index``: of ``item`` (from
        :meth:`current`), or of a fetch (None). False when the receiver should end."""
        dispatcher = self.dispatcher
        if dispatcher is None or item is None:
            if last:  # the fetch's last piece: it delivered
                self.failures.fetched()
            return self._put(chunk)
        seq = item.seq
        if seq not in self._counted:  # not yet counted with the samples it skipped
            self.failures.fetched(n)
        if last:
            self._counted.discard(seq)
            self._held[index].remove(item)
        return dispatcher.deliver(item, chunk, n, last)

    def retried(self, index: int, retries: tuple[str, ...]) -> None:
        """Count and log the errors a worker retried before an outcome (on_error=retry)."""
        for text in retries:
            self.failures.retried(text)
            self.repeats.log(logging.INFO, RETRY, error_type(text),
                             f"{self.transport.where(index)}: fetch failed ({text}); retried "
                             "(failures.on_error=retry)")

    def skipped(self, index: int, why: str) -> bool:
        """A worker skipped a fetch: count it and, past the skip ceiling, fail the run."""
        where = self.transport.where(index)
        self.repeats.log(logging.WARNING, SKIP, error_type(why), f"{where}: {SKIP}: {why}")
        limit = self.failures.skipped(why)
        if limit is not None:
            self._fail(Failure(exc=limit, where=where, traceback_text=""))
            return False
        return True

    def samples(self, index: int, item: WorkItem, skipped: SamplesSkipped) -> bool:
        """Samples of ``item`` were skipped (its good ones, if any, follow as chunks). Count
        them, and drop them from the item, so that a requeue after this worker's death never
        reads them again (workers/samples.py). Past the skip ceiling, fail the run."""
        where = self.transport.where(index)
        bad, ok = skipped.bad, skipped.ok
        self.repeats.log(logging.WARNING, SKIP_SAMPLES, error_type(bad[-1][1]),
                         samples_message(where, bad, len(ok)))
        limit = self.failures.read_samples(bad, ok)
        if limit is not None:
            self._fail(Failure(exc=limit, where=where, traceback_text=""))
            return False
        dispatcher = self.dispatcher
        if dispatcher is None:
            raise WorkerFailure(f"{where} reported skipped samples of item {skipped.seq} "
                                "without index-range work")
        if any(ok):
            self._counted.add(item.seq)  # its chunks are not counted again
            return dispatcher.drop(item, [i for i, _ in bad])
        self._held[index].remove(item)
        return dispatcher.skip(item)

    def done(self, index: int) -> None:
        """The source is exhausted for worker ``index``; END once it is for all of them."""
        if self._finished[index]:
            return
        self._finished[index] = True
        if all(self._finished) and not self._failed():
            self._out.put_control(END)

    # deaths ----------------------------------------------------------------------------------

    def died(self, index: int) -> bool:
        """Worker ``index`` ended without saying done: hand its items out again, then start
        another (``failures.on_worker_death=restart``, within ``max_restarts``) or fail the run
        naming it and how it died. False when the receiver should end."""
        items, self._held[index] = self._held[index], deque()
        self._finished[index] = True
        if self.dispatcher is not None:
            for item in items:
                self.dispatcher.requeue(item)
        if self._stopping():
            return True
        where = self.transport.where(index)
        reason = f"{where} {self.transport.exit_reason(index)}"
        policy = self.policy
        restarts_left = policy.max_restarts is None or self.failures.restarts < policy.max_restarts
        if policy.on_worker_death != "restart" or not restarts_left:
            note = "" if restarts_left else \
                f"; it is not restarted: failures.max_restarts={policy.max_restarts} reached"
            self._fail(Failure(exc=WorkerFailure(f"{reason}{note}"), where=where,
                               traceback_text=""))
            return False
        self.failures.restarted(reason)
        log.warning("%s; starting another (failures.on_worker_death=restart)", reason)
        self._finished[index] = False  # the new worker may be handed work as it starts
        self.transport.spawn(index)
        return True

    def _emit(self, item: Any) -> bool:
        """The dispatcher's way downstream: chunks wait for room, control messages do not."""
        if isinstance(item, Chunk):
            return self._put(item)
        return bool(self._out.put_control(item))

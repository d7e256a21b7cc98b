"""Inline workers: fetch runs in the consumer's own thread, when it asks for the next chunk.

A thread pool hands every chunk across two queues and three threads, and each hand-over
waits for a wake-up and the GIL: about 30 us a batch here, more than a trivial fetch of
tiny samples costs. Inline, the consumer's ``next()`` pulls a batch from the batcher, which
pulls chunks from this pool (its ``get``: the chunk stream of inputkit/pipeline/chunk_stream.py);
``get`` calls fetch (or reads the next work item) there and then, as
``DataLoader(num_workers=0)`` does, and nothing waits. The fetch (or read) runs through
the one worker step every kind runs (workers/step.py: checks, processors, failure
policies, index field, per-sample skip) and its outcome is accounted as thread workers
account theirs (workers/accounting.py), so every guarantee holds; what it gives up is
overlap: the consumer waits for each fetch.

Because the fetch runs on the consumer's thread, nothing can interrupt it: the watchdog
still reports a stall (with its stack), and a ``failures.fetch_timeout`` or
``failures.on_stall=raise`` failure is raised as soon as that fetch returns.
"""

from __future__ import annotations

import sys
import threading
import traceback
from collections import deque
from collections.abc import Callable
from typing import Any

from inputkit.errors import InputkitError, SourceExhausted
from inputkit.pipeline.chunk import ChunkSchema
from inputkit.pipeline.dispatcher import Dispatcher
from inputkit.pipeline.failures import FailurePolicy, FailureTally, FetchTimeout, pool_log
from inputkit.pipeline.messages import END, Failure
from inputkit.pipeline.queues import QueueClosed
from inputkit.processors import ProcessorChain
from inputkit.sources.loader import BoundSource
from inputkit.workers.accounting import (
    BLOCKED,
    DONE,
    FETCHING,
    IDLE,
    PHASES,
    SETUP,
    OutcomeAccounting,
)
from inputkit.workers.base import Activity, FetchTally, WorkerPoolStats, inside, overdue
from inputkit.workers.step import WorkerStep


class InlineWorkerPool(OutcomeAccounting):
    """One worker, run by the caller of :meth:`get` (the consumer's thread): the pool is the
    chunk stream the batcher pulls, with no queue between. ``worker_ids`` holds its one
    worker's id; ``thread_prefix`` is unused (no thread of its own)."""

    kind = "inline"

    def __init__(self, *, source: BoundSource, schema: ChunkSchema, worker_ids: list[int],
                 num_workers: int, batch_size_hint: int, label: str, thread_prefix: str,
                 on_failure: Callable[[Failure], None],
                 policy: FailurePolicy = FailurePolicy(),
                 dispatcher: Dispatcher | None = None,
                 processors: ProcessorChain | None = None) -> None:
        wid = self._wid = worker_ids[0]
        chain = processors if processors else None
        self._source = source
        self._chain = chain
        self._label = label
        self._on_failure = on_failure
        self._dispatcher = dispatcher
        self._stop = threading.Event()
        self._lock = threading.Lock()  # fail() may come from the watchdog's thread
        self._failed = False
        self._states = {wid: IDLE}
        self._tally = FetchTally()
        pool = f"{label} (source '{source.name}')"
        # Counts skips and holds them to the ceiling (in samples, for index-range work).
        self._failures = FailureTally(policy, pool, per_sample=dispatcher is not None)
        self._repeats = pool_log(pool)  # skip and retry messages: the first in full, then counted
        self._activity = Activity.local(1)
        self._where_text = f"worker {wid} of {label} (source '{source.name}')"
        self._stalls: tuple[str, ...] = ()
        # With processors the source's own output is checked first (its errors name the
        # source), then what the processors made.
        self._step = WorkerStep(
            source, worker_id=wid, num_workers=num_workers, hint=batch_size_hint, policy=policy,
            where=self._where_text, stop=self._stop,
            schema=ChunkSchema(source.name) if chain is not None else schema, chain=chain,
            out_schema=schema, repeats=self._repeats, activity=self._activity, index=0)
        # What one step made, for get() to hand out: a chunk, or (index-range work) what the
        # dispatcher released with it (the chunk, an EpochEnd, END); or a failure.
        self._made: deque[Any] = deque()
        self._set_up = False
        self._ended = False
        self._consumer = -1  # the thread that calls get (for stall reports)
        if dispatcher is not None:
            dispatcher.bind(self._emit)

    def start(self) -> None:
        """Nothing runs until the consumer asks (setup() too: it runs before the first fetch)."""
        self._activity.started(0)

    def stop(self) -> None:
        self._stop.set()

    def join(self, deadline: float) -> list[str]:
        self._states[self._wid] = DONE
        self._repeats.flush()
        return []  # no thread of its own: a fetch in progress is the consumer's

    def slots_scarce(self) -> bool:
        return False  # its chunks are its own arrays: nothing is borrowed

    def stats(self) -> WorkerPoolStats:
        state = self._states[self._wid]
        return self._tally.stats(self.kind, [IDLE if state in PHASES else state],
                                 (IDLE, FETCHING, BLOCKED, DONE), stalls=self._stalls,
                                 processors=self._chain.stats() if self._chain else (),
                                 gil=None,  # one thread: no GIL contention to probe
                                 **self._failures.snapshot())

    def watch(self, now: float, fetch_timeout: float | None,
              stall_timeout: float | None) -> list[tuple[str, str]]:
        """Fail a fetch past fetch_timeout (raised when the fetch returns: it runs in the
        consumer's thread); describe a stall with the consumer's stack."""
        if self._failed:
            return []
        state = self._states[self._wid]
        timeouts, stalls = overdue(self._activity, [state], (BLOCKED, DONE), now, fetch_timeout,
                                   stall_timeout, PHASES)
        where = self._where_text
        for _, seconds in timeouts[:1]:
            exc = FetchTimeout(f"{where}: {inside(state, PHASES)} has not returned after "
                               f"{seconds:.1f}s (failures.fetch_timeout={fetch_timeout:g}); "
                               f"it is stuck here:\n{self._stack()}")
            self.fail(Failure(exc=exc, where=where, traceback_text=""))
        found = [(where, f"{what}\n{self._stack()}") for _, what in stalls]
        self._stalls = tuple(f"{where}: {text.splitlines()[0]}" for where, text in found)
        return found

    def fail(self, failure: Any) -> None:
        """Stop, and hand ``failure`` to the consumer next (the first failure only)."""
        with self._lock:
            first = not self._failed
            self._failed = True
        self._stop.set()
        if first:
            self._made.append(failure)
            self._on_failure(failure)

    def get(self, stop: threading.Event | None = None) -> Any:
        """The chunk stream (inputkit/pipeline/chunk_stream.py): the next chunk, or END, an EpochEnd, a
        Failure, fetched now in the caller's thread; QueueClosed once stopped.

        A failure of the fetch (under the failure policy) comes back as a Failure that names
        the worker and source, as from a thread; KeyboardInterrupt passes straight through.
        """
        made = self._made
        self._consumer = threading.get_ident()
        while not made:  # (a failure, from here or the watchdog, is put there too)
            if self._stop.is_set() or (stop is not None and stop.is_set()):
                raise QueueClosed(self._label)
            if self._ended:
                raise InputkitError(f"{self._label}: iterated past the end of source "
                                    f"'{self._source.name}'")
            try:
                self._next()
            except Exception as exc:
                self.fail(Failure.capture(exc, self._where_text))
        return made.popleft()

    def _where(self, wid: int) -> str:
        return self._where_text

    def _stack(self) -> str:
        """The consumer's stack (the watchdog's stall report): it runs the fetch."""
        frame = sys._current_frames().get(self._consumer)
        return "".join(traceback.format_stack(frame)) if frame is not None else ""

    def _emit(self, item: Any) -> bool:
        """The dispatcher's way downstream: what it releases waits for get(), in order."""
        self._made.append(item)
        return True

    def _next(self) -> None:
        """One fetch (or one work item) through the worker step; what it made waits in
        ``_made``."""
        wid, states, step = self._wid, self._states, self._step
        if not self._set_up:
            self._set_up = True
            if step.has_setup:
                states[wid] = SETUP
                self._activity.fetching(0)
                step.setup()
                self._activity.started(0)
            states[wid] = IDLE
        dispatcher = self._dispatcher
        if dispatcher is not None:
            item = dispatcher.try_take()
            if item is None:  # every item is delivered before the next is taken
                if not dispatcher.done:
                    raise InputkitError(f"{self._label}: the dispatcher has no work item for "
                                        "the inline worker, yet its epoch is not complete")
                self._finished()
                return
            states[wid] = FETCHING
            self._delivered(wid, item, step.read(item.seq, item.epoch, item.remaining))
            states[wid] = IDLE
            return
        states[wid] = FETCHING
        try:
            chunk = self._fetched(wid, step.fetch())
        except SourceExhausted:
            self._finished()
            self._made.append(END)
            return
        states[wid] = IDLE
        if chunk is not None:
            self._made.append(chunk)

    def _finished(self) -> None:
        self._ended = True
        self._states[self._wid] = DONE

"""Thread workers: a pool of threads per coordinator, each calling fetch in a loop.

Threads suit fetches that wait (I/O, remote services, numpy/C code that releases
the GIL). Pure-Python CPU work serialises on the GIL; process workers are the
answer to that (their own issue).
"""

from __future__ import annotations

import sys
import threading
import time
import traceback
from collections.abc import Callable
from typing import Any

from inputkit.errors import SourceExhausted
from inputkit.observe.probes import GilProbe
from inputkit.pipeline.chunk import Chunk, ChunkSchema
from inputkit.pipeline.dispatcher import Dispatcher
from inputkit.pipeline.failures import (
    FailurePolicy,
    FailureTally,
    FetchTimeout,
    pool_log,
)
from inputkit.pipeline.messages import END, Failure
from inputkit.pipeline.queues import BoundedQueue
from inputkit.processors import ProcessorChain
from inputkit.sources.loader import BoundSource
from inputkit.workers.accounting import (
    BLOCKED,
    DONE,
    FETCHING,
    IDLE,
    SETUP,
    OutcomeAccounting,
)
from inputkit.workers.accounting import PHASES as _PHASES
from inputkit.workers.base import (
    Activity,
    FailsOnce,
    FetchTally,
    WorkerPoolStats,
    inside,
    overdue,
)
from inputkit.workers.step import WorkerStep


class ThreadWorkerPool(OutcomeAccounting, FailsOnce):
    kind = "thread"

    def __init__(self, *, source: BoundSource, schema: ChunkSchema, worker_ids: list[int],
                 num_workers: int, batch_size_hint: int, out: BoundedQueue, label: str,
                 thread_prefix: str, on_failure: Callable[[Failure], None],
                 policy: FailurePolicy = FailurePolicy(),
                 dispatcher: Dispatcher | None = None,
                 processors: ProcessorChain | None = None) -> None:
        self._source = source
        self._chain = processors if processors else None
        # With processors, the source's own output is checked first (its errors name the
        # source), then what the processors made (what flows downstream).
        self._raw_schema = ChunkSchema(source.name) if self._chain is not None else schema
        self._num_workers = num_workers
        self._schema = schema
        self._ids = list(worker_ids)
        self._hint = batch_size_hint
        self._out = out
        self._stop = threading.Event()  # the pool's own: a failure stops workers, not the batcher
        self._label = label
        self._on_failure = on_failure
        self._policy = policy
        self._dispatcher = dispatcher
        self._lock = threading.Lock()
        self._states = {wid: IDLE for wid in self._ids}
        self._active = len(self._ids)
        self._failed = False
        self._tally = FetchTally()
        pool = f"{label} (source '{source.name}')"
        # Counts skips and holds them to the ceiling (in samples, for index-range work).
        self._failures = FailureTally(policy, pool, per_sample=dispatcher is not None)
        self._repeats = pool_log(pool)  # skip and retry messages: the first in full, then counted
        self._activity = Activity.local(len(self._ids))
        self._steps: dict[int, WorkerStep] = {}  # each worker's step, made in its thread
        self._wheres = {wid: f"worker {wid} of {label} (source '{source.name}')" for wid in self._ids}
        self._stalls: tuple[str, ...] = ()
        self._threads = [
            threading.Thread(target=self._run, args=(index, wid),
                             name=f"{thread_prefix}-fetch-{wid}", daemon=True)
            for index, wid in enumerate(self._ids)
        ]
        # Whether fetch holds the GIL: the diagnosis reads it (inputkit/observe/probes.py says how).
        self._gil = GilProbe(f"{thread_prefix}-gil-probe")
        if dispatcher is not None:
            dispatcher.bind(self._emit)

    def start(self) -> None:
        for thread in self._threads:
            thread.start()
        self._gil.start()

    def stop(self) -> None:
        self._stop.set()
        self._gil.stop()

    def slots_scarce(self) -> bool:
        return False  # thread workers hand over arrays they own: nothing is borrowed

    def join(self, deadline: float) -> list[str]:
        stuck = []
        for index, thread in enumerate(self._threads):
            thread.join(max(0.0, deadline - time.monotonic()))
            if thread.is_alive():
                what = inside(self._states[self._ids[index]], _PHASES)
                stuck.append(f"{thread.name} (still inside {what} of {self._source.name}):\n"
                             f"{self._stack(index)}")
        self._repeats.flush()
        return stuck + self._gil.join(deadline)

    def _stack(self, index: int) -> str:
        frame = sys._current_frames().get(self._threads[index].ident or -1)
        return "".join(traceback.format_stack(frame)) if frame is not None else ""

    def stats(self) -> WorkerPoolStats:
        return self._tally.stats(self.kind, [IDLE if s in _PHASES else s
                                             for s in self._states.values()],
                                 (IDLE, FETCHING, BLOCKED, DONE), stalls=self._stalls,
                                 processors=self._chain.stats() if self._chain else (),
                                 gil=self._gil.reading(), **self._failures.snapshot())

    def watch(self, now: float, fetch_timeout: float | None,
              stall_timeout: float | None) -> list[tuple[str, str]]:
        """Fail a fetch past fetch_timeout (the thread cannot be stopped: it is left behind, and
        close() names it); describe stalled workers with their stacks."""
        if self._failed:
            return []
        states = list(self._states.values())
        timeouts, stalls = overdue(self._activity, states, (BLOCKED, DONE), now, fetch_timeout,
                                   stall_timeout, _PHASES)
        for index, seconds in timeouts[:1]:
            what = inside(states[index], _PHASES)
            exc = FetchTimeout(f"{self._where(self._ids[index])}: {what} has not returned after "
                               f"{seconds:.1f}s (failures.fetch_timeout={fetch_timeout:g}); "
                               f"it is stuck here:\n{self._stack(index)}")
            self.fail(Failure(exc=exc, where=self._where(self._ids[index]), traceback_text=""))
        found = [(self._where(self._ids[i]), f"{what}\n{self._stack(i)}") for i, what in stalls]
        self._stalls = tuple(f"{where}: {text.splitlines()[0]}" for where, text in found)
        return found

    def _where(self, wid: int) -> str:
        return self._wheres[wid]

    def _step_of(self, index: int, wid: int) -> WorkerStep:
        """Worker ``wid``'s step (workers/step.py): the shared source, its own clocks."""
        step = self._steps.get(wid)
        if step is None:
            step = self._steps[wid] = WorkerStep(
                self._source, worker_id=wid, num_workers=self._num_workers, hint=self._hint,
                policy=self._policy, where=self._where(wid), stop=self._stop,
                schema=self._raw_schema, chain=self._chain, out_schema=self._schema,
                repeats=self._repeats, activity=self._activity, index=index)
        return step

    def _run(self, index: int, wid: int) -> None:
        states = self._states
        self._activity.started(index)
        try:
            step = self._step_of(index, wid)
            if step.has_setup:  # threads share one source object: setup sees every worker id
                states[wid] = SETUP  # timed like a fetch (failures.fetch_timeout)
                self._activity.fetching(index)
                step.setup()
                self._activity.started(index)
                states[wid] = IDLE
            if self._dispatcher is not None:
                self._read_items(step, wid)
            else:
                self._fetch_chunks(step, wid)
        except BaseException as exc:
            self.fail(Failure.capture(exc, self._where(wid)))
        finally:
            states[wid] = DONE
            with self._lock:
                self._active -= 1
                last = self._active == 0 and not self._failed
            if last and not self._stop.is_set() and self._dispatcher is None:
                self._out.put_control(END)

    def _fetch_chunks(self, step: WorkerStep, wid: int) -> None:
        states, stop, out = self._states, self._stop, self._out
        while not stop.is_set():
            states[wid] = FETCHING
            try:
                chunk = self._fetched(wid, step.fetch())
            except SourceExhausted:  # (zero-cost unless raised)
                return
            if chunk is None:
                continue
            states[wid] = BLOCKED
            if not out.put(chunk, chunk.nbytes, stop):
                return
            states[wid] = IDLE

    def _read_items(self, step: WorkerStep, wid: int) -> None:
        """Index-range work: read the dispatcher's items until the stream is finished."""
        dispatcher = self._dispatcher
        assert dispatcher is not None
        states = self._states
        while not self._stop.is_set():
            states[wid] = BLOCKED  # waiting for work is not a stall
            item = dispatcher.take(self._stop)
            if item is None:
                return
            states[wid] = FETCHING
            if not self._delivered(wid, item, step.read(item.seq, item.epoch, item.remaining)):
                return
            states[wid] = IDLE

    def _emit(self, item: Any) -> bool:
        """The dispatcher's way downstream: chunks wait for room, control messages do not."""
        if isinstance(item, Chunk):
            return self._out.put(item, item.nbytes, self._stop)
        return self._out.put_control(item)


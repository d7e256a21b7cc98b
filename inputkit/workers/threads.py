"""Thread workers: a pool of threads per coordinator, each calling fetch in a loop.

Threads suit fetches that wait (I/O, remote services, numpy/C code that releases
the GIL). Pure-Python CPU work serialises on the GIL; process workers are the
answer to that (their own issue).
"""

from __future__ import annotations

import functools
import logging
import sys
import threading
import time
import traceback
from collections.abc import Callable
from typing import Any

import numpy as np

from inputkit.chunk import Chunk, ChunkSchema, check_read, with_field
from inputkit.errors import SourceExhausted
from inputkit.failures import (
    SKIP_SAMPLES,
    FailurePolicy,
    FailureTally,
    FetchTimeout,
    Skipped,
    call_with_policy,
    pool_log,
    samples_message,
)
from inputkit.messages import END, Failure
from inputkit.probes import GilProbe
from inputkit.processors import ProcessorChain
from inputkit.queues import BoundedQueue
from inputkit.sources.loader import BoundSource
from inputkit.sources.protocol import reads_epoch
from inputkit.work import INDEX_FIELD, Dispatcher, WorkItem
from inputkit.workers.base import (
    Activity,
    FailsOnce,
    FetchClock,
    FetchTally,
    WorkerPoolStats,
    inside,
    overdue,
)
from inputkit.workers.samples import SampleRead, read_skipping

IDLE, FETCHING, BLOCKED, DONE = "idle", "fetching", "blocked", "done"
SETUP = "setup"  # inside the shared source's setup() for this worker id
_PHASES = {SETUP: "setup()"}


class ThreadWorkerPool(FailsOnce):
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
        self._clocks = [FetchClock() for _ in self._ids]
        self._raising = policy.on_error == "raise"
        self._wheres = {wid: f"worker {wid} of {label} (source '{source.name}')" for wid in self._ids}
        self._stalls: tuple[str, ...] = ()
        self._read: Callable[..., Any] | None = None  # the source's read(indices), once looked up
        self._by_epoch = False  # ... and whether it takes the epoch
        self._threads = [
            threading.Thread(target=self._run, args=(index, wid),
                             name=f"{thread_prefix}-fetch-{wid}", daemon=True)
            for index, wid in enumerate(self._ids)
        ]
        # Whether fetch holds the GIL: the diagnosis reads it (inputkit/probes.py says how).
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

    def _run(self, index: int, wid: int) -> None:
        states = self._states
        self._activity.started(index)
        try:
            setup = getattr(self._source.obj, "setup", None)
            if callable(setup):  # threads share one source object: setup sees every worker id
                states[wid] = SETUP  # timed like a fetch (failures.fetch_timeout)
                self._activity.fetching(index)
                setup(wid, self._num_workers)
                self._activity.started(index)
                states[wid] = IDLE
            if self._dispatcher is not None:
                self._read_items(index, wid)
            else:
                self._fetch_chunks(index, wid)
        except BaseException as exc:
            self.fail(Failure.capture(exc, self._where(wid)))
        finally:
            states[wid] = DONE
            with self._lock:
                self._active -= 1
                last = self._active == 0 and not self._failed
            if last and not self._stop.is_set() and self._dispatcher is None:
                self._out.put_control(END)

    def _checked(self, raw: Any, wid: int, expect: int | None, key: Any) -> Chunk:
        return self._finish(self._check_raw(raw, wid, expect), wid, key)

    def _check_raw(self, raw: Any, wid: int, expect: int | None) -> Chunk:
        """What the source returned, checked (its schema; ``expect`` samples for a read)."""
        return check_read(self._raw_schema.check(raw, wid), expect, self._source.name)

    def _finish(self, chunk: Chunk, wid: int, key: Any) -> Chunk:
        """The processors, and their output checked; ``chunk`` itself without processors."""
        if self._chain is None:
            return chunk
        return self._schema.check(self._chain.apply(chunk.fields, wid, key), wid)

    def _fetch(self, index: int, wid: int, call: Callable[[], Any],
               expect: int | None = None, key: Any = None) -> Chunk | None:
        """One fetch, its check and the processors, under the failure policy; None when it was
        skipped. ``expect``: the number of samples a read(indices) must return; ``key`` seeds
        the processors (index-range work: the epoch and first index)."""
        self._states[wid] = FETCHING
        self._activity.fetching(index)
        clock = self._clocks[index]
        clock.start()
        try:
            if self._raising:  # on_error=raise: the policy would only re-raise
                chunk = self._checked(call(), wid, expect, key)
            else:
                chunk = call_with_policy(
                    lambda: self._checked(call(), wid, expect, key),
                    self._policy, self._where(wid), self._stop,
                    on_retry=lambda e: self._failures.retried(_describe(e)), repeats=self._repeats)
        except Skipped as skipped:
            self._activity.fetched(index, progress=False)
            limit = self._failures.skipped(_describe(skipped.error), expect or 0)
            if limit is not None:
                raise limit from skipped.error
            return None
        except BaseException:
            self._activity.fetched(index, progress=False)
            raise
        wall, cpu = clock.stop()
        self._activity.fetched(index, progress=chunk.n > 0)
        self._tally.fetched(chunk.n, chunk.nbytes, wall, cpu)
        self._failures.fetched(chunk.n)  # counted as one fetch, or n samples (index-range work)
        return chunk

    def _fetch_chunks(self, index: int, wid: int) -> None:
        fetch = self._source.fetch
        while not self._stop.is_set():
            try:
                chunk = self._fetch(index, wid, functools.partial(fetch, wid, self._hint))
            except (SourceExhausted, StopIteration):
                return
            if chunk is None or chunk.n == 0:
                continue
            self._states[wid] = BLOCKED
            if not self._out.put(chunk, chunk.nbytes, self._stop):
                return
            self._states[wid] = IDLE

    def _read_items(self, index: int, wid: int) -> None:
        """Index-range work: read the dispatcher's items until the stream is finished."""
        dispatcher = self._dispatcher
        assert dispatcher is not None
        while not self._stop.is_set():
            self._states[wid] = BLOCKED  # waiting for work is not a stall
            item = dispatcher.take(self._stop)
            if item is None or not self._read_item(index, wid, item):
                return

    def _read_item(self, index: int, wid: int, item: WorkItem) -> bool:
        """Read one work item and hand its chunk to the dispatcher; False once the pipeline
        stops."""
        dispatcher = self._dispatcher
        assert dispatcher is not None
        if self._read is None:
            self._read = self._source.obj.read
            self._by_epoch = reads_epoch(self._read)
        indices = item.remaining
        key = (item.epoch, int(indices[0])) if len(indices) else None
        read = functools.partial(self._read, epoch=item.epoch) if self._by_epoch else self._read
        if self._policy.on_error == "skip":  # a bad sample costs only itself (workers/samples.py)
            got = self._read_skipping(index, wid, read, indices, key)
            if got.stopped or not self._account(wid, item, got):
                return False
            chunk, indices = got.chunk, got.indices
        else:
            chunk = self._fetch(index, wid, functools.partial(read, indices),
                                expect=len(indices), key=key)
        if chunk is None:
            return True
        chunk = with_field(chunk, INDEX_FIELD, np.array(indices, dtype=np.int64))
        self._states[wid] = BLOCKED
        if not dispatcher.deliver(item, chunk, chunk.n, last=True):
            return False
        self._states[wid] = IDLE
        return True

    def _read_skipping(self, index: int, wid: int, read: Callable[[np.ndarray], Any],
                       indices: np.ndarray, key: Any) -> SampleRead:
        """One item under on_error=skip, timed like one fetch (its one-by-one reads too)."""
        self._states[wid] = FETCHING
        self._activity.fetching(index)
        clock = self._clocks[index]
        clock.start()
        try:
            got = read_skipping(read, indices, lambda raw, n: self._check_raw(raw, wid, n),
                                lambda chunk: self._finish(chunk, wid, key), self._policy,
                                self._where(wid), self._stop,
                                begin=lambda: self._activity.fetching(index))
        except BaseException:
            self._activity.fetched(index, progress=False)
            raise
        self._activity.fetched(index, progress=got.chunk is not None)
        wall, cpu = clock.stop()
        if got.chunk is not None:
            self._tally.fetched(got.chunk.n, got.chunk.nbytes, wall, cpu)
        return got

    def _account(self, wid: int, item: WorkItem, got: SampleRead) -> bool:
        """Count what reading ``item`` came to, and tell the dispatcher which samples it loses;
        past the skip ceiling, raise. False once the pipeline stops."""
        dispatcher = self._dispatcher
        assert dispatcher is not None
        if not got.bad:
            self._failures.fetched(got.chunk.n if got.chunk is not None else 0)
            return True
        self._repeats.log(logging.WARNING, SKIP_SAMPLES, got.bad[-1][1].split(":", 1)[0],
                          samples_message(self._where(wid), got.bad, len(got.ok)))
        limit = self._failures.read_samples(got.bad, got.ok)
        if limit is not None:
            raise limit
        if got.chunk is None:
            return dispatcher.skip(item)
        return dispatcher.drop(item, [index for index, _ in got.bad])

    def _emit(self, item: Any) -> bool:
        """The dispatcher's way downstream: chunks wait for room, control messages do not."""
        if isinstance(item, Chunk):
            return self._out.put(item, item.nbytes, self._stop)
        return self._out.put_control(item)


def _describe(exc: BaseException) -> str:
    return f"{type(exc).__name__}: {exc}"

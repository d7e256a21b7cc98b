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

from inputkit.chunk import ChunkSchema
from inputkit.errors import SourceExhausted
from inputkit.messages import END, Failure
from inputkit.queues import BoundedQueue
from inputkit.sources.loader import BoundSource
from inputkit.workers.base import FetchTally, WorkerPoolStats

IDLE, FETCHING, BLOCKED, DONE = "idle", "fetching", "blocked", "done"


class ThreadWorkerPool:
    kind = "thread"

    def __init__(self, *, source: BoundSource, schema: ChunkSchema, worker_ids: list[int],
                 num_workers: int, batch_size_hint: int, out: BoundedQueue, label: str,
                 thread_prefix: str, on_failure: Callable[[Failure], None]) -> None:
        self._source = source
        self._num_workers = num_workers
        self._schema = schema
        self._ids = list(worker_ids)
        self._hint = batch_size_hint
        self._out = out
        self._stop = threading.Event()  # the pool's own: a failure stops workers, not the batcher
        self._label = label
        self._on_failure = on_failure
        self._lock = threading.Lock()
        self._states = {wid: IDLE for wid in self._ids}
        self._active = len(self._ids)
        self._failed = False
        self._tally = FetchTally()
        self._threads = [
            threading.Thread(target=self._run, args=(wid,), name=f"{thread_prefix}-fetch-{wid}",
                             daemon=True)
            for wid in self._ids
        ]

    def start(self) -> None:
        for thread in self._threads:
            thread.start()

    def stop(self) -> None:
        self._stop.set()

    def slots_scarce(self) -> bool:
        return False  # thread workers hand over arrays they own: nothing is borrowed

    def join(self, deadline: float) -> list[str]:
        stuck = []
        frames = None
        for thread in self._threads:
            thread.join(max(0.0, deadline - time.monotonic()))
            if thread.is_alive():
                frames = frames if frames is not None else sys._current_frames()
                frame = frames.get(thread.ident or -1)
                stack = "".join(traceback.format_stack(frame)) if frame is not None else ""
                stuck.append(f"{thread.name} (still inside fetch of {self._source.name}):\n{stack}")
        return stuck

    def stats(self) -> WorkerPoolStats:
        return self._tally.stats(self.kind, list(self._states.values()),
                                 (IDLE, FETCHING, BLOCKED, DONE))

    def _run(self, wid: int) -> None:
        fetch = self._source.fetch
        states = self._states
        try:
            setup = getattr(self._source.obj, "setup", None)
            if callable(setup):  # threads share one source object: setup sees every worker id
                setup(wid, self._num_workers)
            while not self._stop.is_set():
                states[wid] = FETCHING
                wall0, cpu0 = time.perf_counter(), time.thread_time()
                try:
                    raw = fetch(wid, self._hint)
                except (SourceExhausted, StopIteration):
                    return
                wall, cpu = time.perf_counter() - wall0, time.thread_time() - cpu0
                chunk = self._schema.check(raw, wid)
                self._tally.fetched(chunk.n, chunk.nbytes, wall, cpu)
                if chunk.n == 0:
                    continue
                states[wid] = BLOCKED
                if not self._out.put(chunk, chunk.nbytes, self._stop):
                    return
                states[wid] = IDLE
        except BaseException as exc:
            with self._lock:
                first = not self._failed
                self._failed = True
            self._stop.set()  # siblings stop after their current fetch
            if first:
                where = f"worker {wid} of {self._label} (source '{self._source.name}')"
                failure = Failure.capture(exc, where)
                self._out.put_control(failure)
                self._on_failure(failure)  # stops every worker of the runner at once
        finally:
            states[wid] = DONE
            with self._lock:
                self._active -= 1
                last = self._active == 0 and not self._failed
            if last and not self._stop.is_set():
                self._out.put_control(END)

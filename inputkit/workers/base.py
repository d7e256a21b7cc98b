"""What every worker pool provides to its coordinator, and the statistics it reports.

A pool calls ``source.fetch(worker_id, batch_size_hint)`` on its workers, checks
each result with the input's ChunkSchema, and puts chunks into the chunk queue.
When every worker has seen the end of the source, the pool puts ``END``; when a
worker fails, it puts a ``Failure`` and stops its siblings.
"""

from __future__ import annotations

import threading
import time
from collections import deque
from dataclasses import dataclass
from typing import Any, Protocol

import numpy as np

from inputkit.kinds.ray_stats import ActorStats, RayStats  # noqa: F401 - re-exported (their old home)
from inputkit.observe.probes import GilReading, machine_idle_s

_LATENCY_WINDOW = 1024  # fetch latencies kept for the percentiles


@dataclass(frozen=True)
class WorkerPoolStats:
    """A snapshot of one pool.

    ``fetching``/``blocked``/``idle``/``done``: workers inside fetch, waiting on a full
    chunk queue, between the two, or finished. ``fetch_cpu_s`` close to ``fetch_wall_s``
    with thread workers means fetch is CPU-bound and contends for the GIL.
    """

    kind: str
    workers: int
    fetching: int
    blocked: int
    idle: int
    done: int
    chunks: int
    samples: int
    bytes: int
    empty_chunks: int
    fetch_wall_s: float
    fetch_cpu_s: float
    fetch_p50_ms: float
    fetch_p95_ms: float
    # Process workers: shared-memory slots (reserved = slots x slot bytes), those holding a
    # chunk now, and the bytes those chunks take. Thread workers use none.
    shm_slots: int = 0
    shm_slot_bytes: int = 0
    shm_slots_in_use: int = 0
    shm_bytes_in_use: int = 0
    shm_chunks_in_place: int = 0  # written by the source straight into a slot (no copy)
    pids: tuple[int, ...] = ()
    # The failure policies at work: fetches retried, chunks (and, for index-range work,
    # samples) skipped, worker processes restarted, and the latest error they handled.
    retries: int = 0
    skipped_chunks: int = 0
    skipped_samples: int = 0
    restarts: int = 0
    last_error: str = ""
    # Index-range work under on_error=skip: the first 1,000 skipped samples by index (the
    # source's index, not a position in the epoch's order), and each one's error (its first
    # line, at most 200 characters: a file source's error names the file). skipped_samples
    # is the total.
    skipped_indices: tuple[int, ...] = ()
    skipped_errors: tuple[str, ...] = ()
    # Stalls the watchdog sees now (one line each: the worker and what it is stuck on).
    stalls: tuple[str, ...] = ()
    # Each processor step's calls and time, over every worker (processors.ProcessorStats).
    processors: tuple[Any, ...] = ()
    # Evidence for the diagnosis (inputkit/observe/probes.py): the GIL probe's reading (thread
    # workers), and the machine's idle CPU seconds since the pool was made.
    gil: GilReading | None = None
    idle_cpu_s: float | None = None
    ray: RayStats | None = None  # Ray workers: the cluster, the actors, the object store
    # A registered kind's own stats extension (a dataclass its view reads; summary.json shows
    # its fields under workers.ext); None for the built-in kinds.
    ext: Any = None


class Activity:
    """When each worker's current fetch began (0: not fetching) and when it last delivered.

    Backed by a list for threads or a shared array for processes (time.monotonic is
    system-wide on Linux, so the parent can compare a worker's stamps with its own clock).
    The watchdog reads it to spot a fetch past ``fetch_timeout`` or a stalled worker.
    """

    def __init__(self, stamps: Any, workers: int) -> None:
        self._stamps = stamps  # [fetch_started..., last_progress...]
        self._n = workers

    @classmethod
    def local(cls, workers: int) -> Activity:
        return cls([0.0] * (2 * workers), workers)

    @property
    def stamps(self) -> Any:
        return self._stamps

    def fetching(self, index: int) -> None:
        self._stamps[index] = time.monotonic()

    def fetched(self, index: int, progress: bool) -> None:
        """The fetch returned; ``progress`` when it brought samples (not an empty chunk)."""
        now = time.monotonic()
        self._stamps[index] = 0.0
        if progress:
            self._stamps[self._n + index] = now

    def started(self, index: int) -> None:
        self._stamps[index] = 0.0
        self._stamps[self._n + index] = time.monotonic()

    def fetch_started(self, index: int) -> float:
        return float(self._stamps[index])

    def last_progress(self, index: int) -> float:
        return float(self._stamps[self._n + index])


class FetchClock:
    """One worker's wall and CPU time per fetch, reading the CPU clock only where it is cheap.

    ``time.thread_time()`` is a system call: 0.8 us here, more on a loaded machine, and
    a fetch of W1's tiny samples takes about 2 us, so two reads a fetch cost a quarter
    of the inline loop's rate. A fetch whose CPU time was under ``FAST_S`` (and wall time
    under ``SLOW_WALL_S``) reads it on one call in ``EVERY``; the calls between count the
    CPU share that read measured. Other fetches read it every time. The test is on CPU
    time, not wall: on a loaded machine a 10 us fetch waits for a core and takes 50 to
    100 us of wall, and reading the clock twice a fetch made the slow case slower still.
    """

    FAST_S = 50e-6
    SLOW_WALL_S = 500e-6  # a fetch that waits this long (I/O) reads the clock each time
    EVERY = 16

    def __init__(self) -> None:
        self._share = 1.0  # CPU seconds per wall second of the last fetch whose CPU was read
        self._skip = 0
        self._wall0 = 0.0
        self._cpu0: float | None = None

    def start(self) -> None:
        self._wall0 = time.perf_counter()
        if self._skip:
            self._skip -= 1
            self._cpu0 = None
        else:
            self._cpu0 = time.thread_time()

    def stop(self) -> tuple[float, float]:
        """(wall, cpu) seconds since :meth:`start`."""
        wall = time.perf_counter() - self._wall0
        if self._cpu0 is None:
            return wall, wall * self._share
        cpu = time.thread_time() - self._cpu0
        self._share = min(1.0, cpu / wall) if wall > 0 else 1.0
        self._skip = self.EVERY - 1 if cpu < self.FAST_S and wall < self.SLOW_WALL_S else 0
        return wall, cpu


class WorkerPool(Protocol):
    kind: str

    def start(self) -> None: ...

    def stop(self) -> None:
        """Ask every worker to stop after its current fetch (does not wait)."""

    def join(self, deadline: float) -> list[str]:
        """Wait until ``deadline`` (time.monotonic); return descriptions of workers still running."""

    def stats(self) -> WorkerPoolStats: ...

    def slots_scarce(self) -> bool:
        """Whether borrowed chunks must be copied before they reach the consumer."""

    def fail(self, failure: Any) -> None:
        """Stop every worker and send ``failure`` (a messages.Failure) to the consumer."""

    def watch(self, now: float, fetch_timeout: float | None,
              stall_timeout: float | None) -> list[tuple[str, str]]:
        """Fail a fetch past ``fetch_timeout``; return ``(worker, what and its stack)`` for each
        worker stalled past ``stall_timeout``."""


class FailsOnce:
    """The first failure of a pool stops its workers and reaches the consumer; later ones (a
    sibling failing as it stops) are dropped. Thread, process and Ray pools share it; each
    sets ``_lock``, ``_failed``, ``_stop`` (anything with ``set()``), ``_out`` (its chunk
    queue) and ``_on_failure`` (which stops every pool of the runner). (The inline pool has
    no queue: its own ``fail`` hands the failure to its ``get``.)"""

    _lock: threading.Lock
    _failed: bool
    _stop: Any
    _out: Any
    _on_failure: Any

    def fail(self, failure: Any) -> None:
        """Stop every worker and send ``failure`` (a messages.Failure) to the consumer."""
        with self._lock:
            first = not self._failed
            self._failed = True
        self._stop.set()  # siblings stop after their current fetch
        if first:
            self._out.put_control(failure)
            self._on_failure(failure)


class FetchTally:
    """What a pool's workers fetched: counts, bytes, time, recent latencies. Thread-safe."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._chunks = self._samples = self._bytes = self._empty = self._in_place = 0
        self._wall = self._cpu = 0.0
        self._latencies: deque[float] = deque(maxlen=_LATENCY_WINDOW)
        self._idle0 = machine_idle_s()

    def fetched(self, n: int, nbytes: int, wall: float, cpu: float, timed: bool = True,
                in_place: bool = False) -> None:
        """One chunk (or piece of one) of ``n`` samples; ``timed=False`` for later pieces;
        ``in_place`` when the source wrote it straight into a shared-memory slot. Counted
        together, so that a snapshot never sees a chunk without its in-place count."""
        with self._lock:
            if n == 0:
                self._empty += 1
            else:
                self._chunks += 1
                self._samples += n
                self._bytes += nbytes
                self._in_place += in_place
            if timed:
                self._wall += wall
                self._cpu += cpu
                self._latencies.append(wall)

    def stats(self, kind: str, states: list[int | str], codes: tuple[Any, Any, Any, Any],
              **extra: Any) -> WorkerPoolStats:
        """A snapshot; ``codes`` are the (idle, fetching, blocked, done) values in ``states``."""
        idle, fetching, blocked, done = codes
        idle_now = machine_idle_s() if self._idle0 is not None else None
        with self._lock:
            latencies = np.array(self._latencies) if self._latencies else None
            p50, p95 = (np.percentile(latencies, [50, 95]) * 1000.0) if latencies is not None \
                else (0.0, 0.0)
            return WorkerPoolStats(
                kind=kind, workers=len(states),
                fetching=states.count(fetching), blocked=states.count(blocked),
                idle=states.count(idle), done=states.count(done),
                chunks=self._chunks, samples=self._samples, bytes=self._bytes,
                empty_chunks=self._empty, fetch_wall_s=self._wall, fetch_cpu_s=self._cpu,
                fetch_p50_ms=float(p50), fetch_p95_ms=float(p95), shm_chunks_in_place=self._in_place,
                idle_cpu_s=None if idle_now is None else idle_now - (self._idle0 or 0.0), **extra,
            )


def overdue(activity: Activity, states: list[Any], waiting: tuple[Any, ...], now: float,
            fetch_timeout: float | None, stall_timeout: float | None,
            phases: dict[Any, str] | None = None,
            ) -> tuple[list[tuple[int, float]], list[tuple[int, str]]]:
    """Workers past ``fetch_timeout`` in one call of the source, and workers stalled past
    ``stall_timeout``.

    The calls are fetch (or read) and, before the first one, the source's constructor
    (process workers build their own) and ``setup()``: ``phases`` names the states in
    which a worker is inside one of those (see :func:`inside`). A stall is one call that
    has not returned, or a worker that is not ``waiting`` (blocked on a full queue, out of
    work, done) and has delivered no samples: only empty chunks, or retries. Returns
    ``[(index, seconds in the call)]`` and ``[(index, description)]``.
    """
    timeouts, stalls = [], []
    for index, state in enumerate(states):
        started = activity.fetch_started(index)
        in_fetch = now - started if started else 0.0
        if fetch_timeout is not None and in_fetch > fetch_timeout:
            timeouts.append((index, in_fetch))
        elif stall_timeout is not None and in_fetch > stall_timeout:
            what = (phases or {}).get(state)
            stalls.append((index, f"inside {what or 'one fetch'} for {_seconds(in_fetch)}"))
        elif stall_timeout is not None and state not in waiting:
            quiet = now - activity.last_progress(index)
            if quiet > stall_timeout:
                stalls.append((index, f"no samples for {_seconds(quiet)} (only empty chunks or "
                                      "failed fetches)"))
    return timeouts, stalls


def inside(state: Any, phases: dict[Any, str]) -> str:
    """What a worker in ``state`` is inside, for a FetchTimeout: fetch unless ``phases`` says."""
    return phases.get(state, "fetch")


def _seconds(value: float) -> str:
    return f"{value:.1f}s" if value < 10 else f"{value:.0f}s"

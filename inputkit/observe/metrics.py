"""One windowed pass over two snapshots: what both the live view and the diagnosis read.

The core only counts (items in and out, seconds full and empty, bytes, seconds inside fetch);
:func:`coordinator_window` turns two snapshots of one coordinator into the figures over the
span between them, once: rates, each queue's fill and its full/empty shares, the workers'
shares inside fetch, the GIL probe and idle cores, the store's share, and the worker kind's
own extension (its view's ``window`` hook, ``CoordinatorWindow.ext``). The dashboard and
``metrics.jsonl`` show a :class:`Window` of them over the last few seconds
(:class:`MovingWindow`); the diagnosis reads the same :class:`CoordinatorWindow` through
:func:`inputkit.observe.evidence.of_window`, over the window live or over the run after it.

Without a ``before`` snapshot the span is the run from its first batch: the start-up before
it, when every queue is empty while workers start, would read as starvation.
"""

from __future__ import annotations

import time
from collections import deque
from dataclasses import dataclass
from typing import Any

from inputkit.kinds.view import view_of
from inputkit.observe.probes import GilReading
from inputkit.observe.stats import CoordinatorStats, RunnerStats
from inputkit.pipeline.queues import QueueStats, Stage
from inputkit.workers.base import WorkerPoolStats


@dataclass(frozen=True)
class QueueWindow:
    """One queue over the window: fill now, and the share of the window full / empty."""

    name: str
    items: int
    capacity: int
    bytes: int
    max_bytes: int | None
    peak_bytes: int
    full: float  # share of the window at capacity
    empty: float  # share of the window empty
    stage: Stage = Stage.OTHER


@dataclass(frozen=True)
class CoordinatorWindow:
    """One coordinator over ``span_s`` seconds (from ``before``; without it, from its first
    batch). Counts are over the span; shares are of the span (``in_fetch``: of the workers'
    time, workers x span); ``fetch_cpu_share`` is CPU over wall time inside fetch;
    ``gil_wait_ms`` None where too few probes ran, ``idle_cores`` None where unknown;
    ``storage``: the store's figures (see :func:`_storage`), empty for local data; ``ext``:
    the worker kind's own window (its view's ``window`` hook; None for kinds without)."""

    input: str
    device: str
    device_index: int
    samples_per_s: float
    batches_per_s: float
    mb_per_s: float
    queues: tuple[QueueWindow, ...]
    stats: CoordinatorStats
    before: CoordinatorStats | None = None  # the snapshot the window starts from
    span_s: float = 0.0
    batches: int = 0
    copied_batches: int = 0
    chunks: int = 0
    empty_chunks: int = 0
    workers: int = 0
    in_fetch: float = 0.0
    fetch_cores: float = 0.0
    fetch_cpu_share: float = 0.0
    gil_wait_ms: float | None = None
    gil_held: float = 0.0
    idle_cores: float | None = None
    in_next: float = 0.0
    device_busy: float = 0.0
    storage: tuple[tuple[str, Any], ...] = ()
    ext: Any = None

    @property
    def ray(self) -> Any:
        """The Ray pool's window (a ``kinds.ray_view.RayWindow``), None for other kinds."""
        return self.ext if self.stats.workers.ray is not None else None


def share(value: float, span: float) -> float:
    """``value`` seconds as a share of ``span`` seconds, within 0 and 1."""
    return min(1.0, max(0.0, value / span)) if span > 0 else 0.0


def per_s(count: float, span: float) -> float:
    return max(0.0, count) / span if span > 0 else 0.0


def coordinator_window(now: CoordinatorStats, before: CoordinatorStats | None = None
                       ) -> CoordinatorWindow:
    """Every figure of ``now`` over the span since ``before`` (or since its first batch)."""
    w = now.workers
    if before is not None:
        span = now.elapsed_s - before.elapsed_s
        then = {q.name: q for q in before.queues}
        queues = tuple(_queue(q, then.get(q.name), span, 0.0) for q in now.queues)
        pw: WorkerPoolStats | None = before.workers
        rates = (per_s(now.samples - before.samples, span), per_s(now.batches - before.batches,
                 span), per_s(now.bytes - before.bytes, span) / 1e6)
        gil, idle = _gil(w.gil, before.workers.gil), _idle(w.idle_cpu_s,
                                                          before.workers.idle_cpu_s, span)
        in_next, device_busy = now.next_s - before.next_s, now.device_busy_s - before.device_busy_s
    else:
        startup = now.first_batch_s or 0.0
        span = now.elapsed_s - startup
        # A queue exists a moment before its coordinator starts and goes on after it
        # finishes; both stretches, and the start-up, are empty time outside the span.
        queues = tuple(_queue(q, None, span, startup + max(0.0, q.elapsed_s - now.elapsed_s))
                       for q in now.queues)
        pw = None
        rates = (now.samples_per_s, now.batches_per_s, now.mb_per_s)
        # The pool counts idle time from its own start: the whole run, not the span.
        gil, idle = _gil(w.gil, None), _idle(w.idle_cpu_s, 0.0, now.elapsed_s)
        in_next, device_busy = now.next_s, now.device_busy_s  # (next_s skips the first batch)
    view = view_of(w.kind)
    ext = view.window(w, pw, span)
    wall = w.fetch_wall_s - (pw.fetch_wall_s if pw else 0.0)
    cpu = w.fetch_cpu_s - (pw.fetch_cpu_s if pw else 0.0)
    workers = view.live_workers(w, ext) or w.workers
    return CoordinatorWindow(
        input=now.input, device=now.device, device_index=now.device_index,
        samples_per_s=rates[0], batches_per_s=rates[1], mb_per_s=rates[2], queues=queues,
        stats=now, before=before, span_s=span,
        batches=now.batches - (before.batches if before else 0),
        copied_batches=now.copied_batches - (before.copied_batches if before else 0),
        chunks=w.chunks - (pw.chunks if pw else 0),
        empty_chunks=w.empty_chunks - (pw.empty_chunks if pw else 0), workers=workers,
        in_fetch=share(wall, span * workers) if workers else 0.0,
        fetch_cores=cpu / span if span > 0 else 0.0,
        fetch_cpu_share=cpu / wall if wall > 0 else 0.0,
        gil_wait_ms=gil[0], gil_held=gil[1], idle_cores=idle,
        in_next=share(in_next, span), device_busy=share(device_busy, span),
        storage=tuple(_storage(now, before, span).items()), ext=ext)


def _queue(now: QueueStats, before: QueueStats | None, span: float, idle_s: float) -> QueueWindow:
    """``idle_s``: seconds of the queue's life outside the span in which it was empty (before
    the first batch, after the end), taken off its empty time when there is no ``before``."""
    if before is None:
        full, empty = now.time_full_s, now.time_empty_s - idle_s
    else:
        full = now.time_full_s - before.time_full_s
        empty = now.time_empty_s - before.time_empty_s
    return QueueWindow(name=now.name, items=now.items, capacity=now.capacity, bytes=now.bytes,
                       max_bytes=now.max_bytes, peak_bytes=now.peak_bytes,
                       full=share(full, span), empty=share(empty, span), stage=now.stage)


def _storage(now: CoordinatorStats, before: CoordinatorStats | None,
             span: float) -> dict[str, Any]:
    """The store's share of the workers' time, from two storage readings (run-wide counters
    divided over every worker that reads the store)."""
    s = now.storage
    if s is None or span <= 0:
        return {}
    b = before.storage if before is not None else None
    wait_s = (s.wait_us - (b.wait_us if b else 0)) / 1e6
    return {"storage_wait": share(wait_s, span * max(1, s.readers)),
            "storage_where": s.where,
            "storage_mb_per_s": (s.bytes_read - (b.bytes_read if b else 0)) / 1e6 / span,
            "storage_retries": s.retries - (b.retries if b else 0),
            "storage_errors": s.errors - (b.errors if b else 0)}


_MIN_PROBES = 5  # fewer probes than this say nothing about the GIL


def _gil(now: GilReading | None, before: GilReading | None) -> tuple[float | None, float]:
    """Mean GIL wait per probe (ms; None without enough probes) and the share of probes that
    found the GIL held, between two readings."""
    if now is None:
        return None, 0.0
    then = before or GilReading()
    probes = now.probes - then.probes
    if probes < _MIN_PROBES:
        return None, 0.0
    return (now.wait_s - then.wait_s) / probes * 1000.0, (now.held - then.held) / probes


def _idle(now: float | None, before: float | None, span: float) -> float | None:
    """The machine's idle cores between two readings (idle CPU seconds per second)."""
    if now is None or before is None or span <= 0:
        return None
    return max(0.0, (now - before) / span)


@dataclass(frozen=True)
class Window:
    """Everything the dashboard and the warnings read: now, over the window, since start."""

    elapsed_s: float
    window_s: float
    samples_per_s: float
    batches_per_s: float
    mb_per_s: float
    coordinators: tuple[CoordinatorWindow, ...]
    stats: RunnerStats

    def record(self, warnings: list[str]) -> dict[str, Any]:
        """One flat JSON-ready line of ``metrics.jsonl``."""
        memory = self.stats.memory
        return {
            "t": round(self.elapsed_s, 3),
            "samples_per_s": self.samples_per_s, "batches_per_s": self.batches_per_s,
            "mb_per_s": self.mb_per_s, "samples": self.stats.samples,
            "batches": self.stats.batches, "buffered_bytes": self.stats.buffered_bytes,
            "planned_host_bytes": self.stats.planned_host_bytes,
            "rss_bytes": memory.total_rss if memory else None,
            "shared_bytes": memory.shared_bytes if memory else None,
            "coordinators": [_coordinator_record(c) for c in self.coordinators],
            "warnings": warnings,
        }


def _coordinator_record(c: CoordinatorWindow) -> dict[str, Any]:
    view = view_of(c.stats.workers.kind)
    own = view.record(c.ext) if c.ext is not None else None
    return {"input": c.input, "device": c.device, "device_index": c.device_index,
            "samples_per_s": c.samples_per_s, "batches_per_s": c.batches_per_s,
            "mb_per_s": c.mb_per_s, "consumer_wait": c.in_next,  # share of the window in next()
            "workers": {"fetching": c.stats.workers.fetching,
                        "blocked": c.stats.workers.blocked, "idle": c.stats.workers.idle,
                        "p50_ms": c.stats.workers.fetch_p50_ms,
                        "p95_ms": c.stats.workers.fetch_p95_ms,
                        "restarts": c.stats.workers.restarts,  # since start, as the pool counts
                        "skipped_samples": c.stats.workers.skipped_samples},
            "queues": [{"stage": q.stage, "items": q.items, "capacity": q.capacity,
                        "bytes": q.bytes, "max_bytes": q.max_bytes, "full": q.full,
                        "empty": q.empty} for q in c.queues],
            **({view.key: own} if own is not None and view.key else {}),
            **({"storage": _storage_record(c)} if c.stats.storage is not None else {})}


def _storage_record(c: CoordinatorWindow) -> dict[str, Any]:
    """The store's figures over the window (MB/s) and now (counters, the cache's fill)."""
    from inputkit.observe.storage_stats import storage_record

    before = c.before.storage if c.before is not None else None
    span = c.stats.elapsed_s - c.before.elapsed_s if c.before is not None else c.stats.elapsed_s
    return storage_record(c.stats.storage, before, span)  # type: ignore[arg-type]


def window(stats: RunnerStats, before: RunnerStats | None = None,
           window_s: float | None = None) -> Window:
    """The :class:`Window` from ``before`` to ``stats`` (each coordinator matched by input and
    device; one without a match, or no ``before``: since its first batch). ``window_s``: the
    seconds shown as the window (default: between the two snapshots)."""
    old = {(c.input, c.device_index): c for c in before.coordinators} if before else {}
    coordinators = tuple(coordinator_window(c, old.get((c.input, c.device_index)))
                         for c in stats.coordinators)
    span = window_s if window_s is not None else \
        stats.elapsed_s - before.elapsed_s if before is not None else 0.0
    return Window(elapsed_s=stats.elapsed_s, window_s=span,
                  samples_per_s=sum(c.samples_per_s for c in coordinators),
                  batches_per_s=sum(c.batches_per_s for c in coordinators),
                  mb_per_s=sum(c.mb_per_s for c in coordinators),
                  coordinators=coordinators, stats=stats)


class MovingWindow:
    """Keeps recent snapshots; ``update`` returns the :class:`Window` over the last seconds."""

    def __init__(self, seconds: float = 5.0) -> None:
        self.seconds = seconds
        self._history: deque[tuple[float, RunnerStats]] = deque()

    def update(self, stats: RunnerStats) -> Window:
        now = time.monotonic()
        self._history.append((now, stats))
        while len(self._history) > 2 and now - self._history[1][0] >= self.seconds:
            self._history.popleft()
        then, old = self._history[0]
        span = now - then
        return window(stats, old if span > 0 else None, window_s=span)

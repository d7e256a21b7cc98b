"""What the diagnosis reads about one coordinator over a span of time.

The figures come from the one windowed pass (:func:`inputkit.observe.metrics.coordinator_window`):
the live view judges the window the dashboard shows, the end-of-run diagnosis the run from
its first batch on. :func:`of_window` only renames and selects; no delta is computed here,
so the dashboard and the verdict cannot disagree on the same two snapshots. Then one
judgement (:func:`inputkit.observe.diagnosis.judge`). :class:`Evidence` is a plain dataclass so that
tests can state a situation directly.
"""

from __future__ import annotations

import os
import sys
from dataclasses import dataclass
from typing import Any

from inputkit.observe.metrics import CoordinatorWindow, QueueWindow, coordinator_window
from inputkit.observe.stats import CoordinatorStats


def available_cores() -> int:
    """Cores this process may run on (its CPU affinity), which is what its workers can use."""
    try:
        return len(os.sched_getaffinity(0))
    except (AttributeError, OSError):  # pragma: no cover - not Linux
        return os.cpu_count() or 1


@dataclass(frozen=True)
class QueueEvidence:
    """One queue: its fill now, and the shares of the span it was full and empty."""

    stage: str
    capacity: int
    items: int
    bytes: int
    full: float
    empty: float
    max_bytes: int | None = None


@dataclass(frozen=True)
class Evidence:
    """One coordinator over ``span_s`` seconds (``over`` names the span in messages).

    ``in_fetch``: share of the workers' time spent inside fetch (summed over workers,
    divided by workers x span). ``fetch_cores``: CPU seconds spent inside fetch per
    second, over all workers. ``gil_wait_ms``: the GIL probe's mean wait for the GIL
    in the span (thread workers; None where it was not measured, see inputkit/observe/probes.py),
    ``gil_held`` the share of its probes that found the GIL held, and
    ``idle_cores`` the machine's idle CPU seconds per second in the span (None: unknown).
    ``fetch_cpu_share``: CPU time over wall time inside fetch (near 0: fetch waits).

    ``ext``: what the worker kind's own verdict rules read (its view's ``evidence`` hook;
    Ray's is ``kinds.ray_view.RayEvidence``), None for kinds without. ``workers`` counts what
    the kind says works (Ray: live actors only, a dead one is replaced, not idle).

    inputkit's own stages after the batcher: ``in_next``, the share of the span the consumer
    spent inside ``next()`` (its thread's time in inputkit: waiting for a batch, and making its
    tensors), and ``device_busy``, the share the device stage's own thread spent copying or
    converting (``device.normalize``) batches; ``device`` is ``cpu`` or ``cuda:N``.
    """

    where: str
    over: str
    span_s: float
    batches: int
    kind: str
    workers: int
    queues: tuple[QueueEvidence, ...]
    in_fetch: float = 0.0
    fetch_cores: float = 0.0
    fetch_p50_ms: float = 0.0
    gil_wait_ms: float | None = None
    gil_held: float = 0.0
    idle_cores: float | None = None
    fetch_cpu_share: float = 0.0
    copied_batches: int = 0
    chunks: int = 0
    empty_chunks: int = 0
    cores: int = 1
    switch_interval_ms: float = 5.0
    in_next: float = 0.0
    device_busy: float = 0.0
    device: str = ""  # (unknown in stated evidence: a device prefetch queue reads as CUDA's)
    # An input reading from an object store: the share of its workers' time spent blocked on
    # the store (Store reads, waits for a shard to reach the cache; None: local data), the
    # store, MB/s downloaded, retries and errors in the span, and the settings that help.
    storage_wait: float | None = None
    storage_where: str = ""
    storage_mb_per_s: float = 0.0
    storage_retries: int = 0
    storage_errors: int = 0
    ext: Any = None

    def queue(self, stage: str) -> QueueEvidence | None:
        return next((q for q in self.queues if q.stage == stage), None)

    @property
    def consumer_queue(self) -> QueueEvidence | None:
        """The queue the training loop takes batches from (device prefetch on CUDA)."""
        return self.queue("device prefetch") or self.queue("batch queue")


def where(c: CoordinatorStats) -> str:
    return f"input '{c.input}' on {c.device_index}:{c.device}"


def _queue(q: QueueWindow) -> QueueEvidence:
    return QueueEvidence(stage=q.stage, capacity=q.capacity, items=q.items, bytes=q.bytes,
                         full=q.full, empty=q.empty, max_bytes=q.max_bytes)


def of_window(c: CoordinatorWindow, over: str) -> Evidence:
    """The evidence of one coordinator's window (``over`` names its span in messages)."""
    from inputkit.kinds.view import view_of

    w = c.stats.workers
    return Evidence(
        where=where(c.stats), over=over, span_s=c.span_s, batches=c.batches, kind=w.kind,
        workers=c.workers, queues=tuple(_queue(q) for q in c.queues), in_fetch=c.in_fetch,
        fetch_cores=c.fetch_cores, fetch_p50_ms=w.fetch_p50_ms, gil_wait_ms=c.gil_wait_ms,
        gil_held=c.gil_held, idle_cores=c.idle_cores, fetch_cpu_share=c.fetch_cpu_share,
        copied_batches=c.copied_batches, chunks=c.chunks, empty_chunks=c.empty_chunks,
        in_next=c.in_next, device_busy=c.device_busy, device=c.stats.device,
        cores=available_cores(), switch_interval_ms=sys.getswitchinterval() * 1000.0,
        ext=view_of(w.kind).evidence(c.ext) if c.ext is not None else None,
        **dict(c.storage))


def evidence(now: CoordinatorStats, before: CoordinatorStats | None = None,
             over: str = "the run") -> Evidence:
    """The evidence between ``before`` and ``now``; from the first batch on without ``before``."""
    return of_window(coordinator_window(now, before), over)

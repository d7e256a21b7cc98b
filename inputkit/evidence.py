"""What the diagnosis reads about one coordinator over a span of time, from two snapshots.

The live view judges the last few seconds (two snapshots of a moving window);
the end-of-run diagnosis judges the run from its first batch on (the start-up
before it, when every queue is empty while workers start, would read as
starvation). Both go through :func:`evidence`, then through one judgement
(:func:`inputkit.diagnosis.judge`), so the two cannot disagree on the same
figures. :class:`Evidence` is a plain dataclass so that tests can state a
situation directly.
"""

from __future__ import annotations

import os
import sys
from dataclasses import dataclass
from typing import Any

from inputkit.probes import GilReading
from inputkit.queues import QueueStats
from inputkit.stats import CoordinatorStats
from inputkit.workers.base import RayStats


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
    in the span (thread workers; None where it was not measured, see inputkit/probes.py),
    ``gil_held`` the share of its probes that found the GIL held, and
    ``idle_cores`` the machine's idle CPU seconds per second in the span (None: unknown).
    ``fetch_cpu_share``: CPU time over wall time inside fetch (near 0: fetch waits).

    Ray workers add: ``receive_busy``, the share of the span the trainer's receiver thread
    spent taking results in (None for other kinds); ``actors_reading``, the share of live
    actors holding a call now; ``inflight_items`` and ``pinned_bytes`` (in flight plus held)
    now, against ``cap_bytes``; how many ``nodes`` the actors run on, and ``ray_local``: a
    private local Ray (this machine's idle cores are then the actors' too). For Ray,
    ``in_fetch`` and ``workers`` count live actors only (a dead one is replaced, not idle).

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
    receive_busy: float | None = None
    actors_reading: float = 0.0
    inflight_items: int = 0
    pinned_bytes: int = 0
    cap_bytes: int | None = None
    nodes: int = 0
    ray_local: bool = False  # a private local Ray: every actor runs on this machine
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

    def queue(self, stage: str) -> QueueEvidence | None:
        return next((q for q in self.queues if q.stage == stage), None)

    @property
    def consumer_queue(self) -> QueueEvidence | None:
        """The queue the training loop takes batches from (device prefetch on CUDA)."""
        return self.queue("device prefetch") or self.queue("batch queue")


def where(c: CoordinatorStats) -> str:
    return f"input '{c.input}' on {c.device_index}:{c.device}"


def _share(value: float, span: float) -> float:
    return min(1.0, max(0.0, value / span)) if span > 0 else 0.0


def _queue(now: QueueStats, before: QueueStats | None, span: float, idle_s: float) -> QueueEvidence:
    """``idle_s``: seconds of the queue's life outside the span in which it was empty (before
    the first batch, after the end), taken off its empty time when there is no ``before``."""
    if before is None:
        full, empty = now.time_full_s, now.time_empty_s - idle_s
    else:
        full = now.time_full_s - before.time_full_s
        empty = now.time_empty_s - before.time_empty_s
    return QueueEvidence(stage=now.stage, capacity=now.capacity, items=now.items,
                         bytes=now.bytes, full=_share(full, span), empty=_share(empty, span),
                         max_bytes=now.max_bytes)


def evidence(now: CoordinatorStats, before: CoordinatorStats | None = None,
             over: str = "the run") -> Evidence:
    """The evidence between ``before`` and ``now``; from the first batch on without ``before``."""
    w = now.workers
    if before is not None:
        span = now.elapsed_s - before.elapsed_s
        then = {q.name: q for q in before.queues}
        queues = tuple(_queue(q, then.get(q.name), span, 0.0) for q in now.queues)
        pw = before.workers
        wall, cpu = w.fetch_wall_s - pw.fetch_wall_s, w.fetch_cpu_s - pw.fetch_cpu_s
        batches, copied = now.batches - before.batches, now.copied_batches - before.copied_batches
        chunks, empty_chunks = w.chunks - pw.chunks, w.empty_chunks - pw.empty_chunks
        gil, idle = _gil(w.gil, pw.gil), _idle(w.idle_cpu_s, pw.idle_cpu_s, span)
        in_next, device_busy = now.next_s - before.next_s, now.device_busy_s - before.device_busy_s
    else:
        startup = now.first_batch_s or 0.0
        span = now.elapsed_s - startup
        # A queue exists a moment before its coordinator starts and goes on after it
        # finishes; both stretches, and the start-up, are empty time outside the span.
        queues = tuple(_queue(q, None, span, startup + max(0.0, q.elapsed_s - now.elapsed_s))
                       for q in now.queues)
        wall, cpu = w.fetch_wall_s, w.fetch_cpu_s
        batches, copied = now.batches, now.copied_batches
        chunks, empty_chunks = w.chunks, w.empty_chunks
        # The pool counts idle time from its own start: the whole run, not the span.
        gil, idle = _gil(w.gil, None), _idle(w.idle_cpu_s, 0.0, now.elapsed_s)
        in_next, device_busy = now.next_s, now.device_busy_s  # (next_s skips the first batch)
    workers = w.workers if w.ray is None else _live(w.ray) or w.workers
    return Evidence(
        where=where(now), over=over, span_s=span, batches=batches, kind=w.kind,
        workers=workers, queues=queues,
        in_fetch=_share(wall, span * workers) if workers else 0.0,
        fetch_cores=cpu / span if span > 0 else 0.0, fetch_p50_ms=w.fetch_p50_ms,
        gil_wait_ms=gil[0], gil_held=gil[1], idle_cores=idle, fetch_cpu_share=cpu / wall if wall > 0 else 0.0,
        copied_batches=copied, chunks=chunks, empty_chunks=empty_chunks,
        in_next=_share(in_next, span), device_busy=_share(device_busy, span), device=now.device,
        cores=available_cores(), switch_interval_ms=sys.getswitchinterval() * 1000.0,
        **_ray(w.ray, before.workers.ray if before is not None else None, span),
        **_storage(now, before, span))


def _storage(now: CoordinatorStats, before: CoordinatorStats | None,
             span: float) -> dict[str, Any]:
    """The store's share of the workers' time, from two storage readings (run-wide counters
    divided over every worker that reads the store)."""
    s = now.storage
    if s is None or span <= 0:
        return {}
    b = before.storage if before is not None else None
    wait_s = (s.wait_us - (b.wait_us if b else 0)) / 1e6
    return {"storage_wait": _share(wait_s, span * max(1, s.readers)),
            "storage_where": s.where,
            "storage_mb_per_s": (s.bytes_read - (b.bytes_read if b else 0)) / 1e6 / span,
            "storage_retries": s.retries - (b.retries if b else 0),
            "storage_errors": s.errors - (b.errors if b else 0)}


_LIVE_STATES = ("reading", "idle")  # an actor that can take calls (not starting, done, dead)


def _live(ray: RayStats) -> int:
    return sum(a.state in _LIVE_STATES for a in ray.actors)


def _ray(now: RayStats | None, before: RayStats | None, span: float) -> dict[str, Any]:
    """The Ray fields of :class:`Evidence` (none for other pools).

    Without ``before`` (the run from its first batch) the receiver's busy time is shared
    over the span, or its life when shorter: it took almost nothing in before the first batch.
    """
    if now is None:
        return {}
    if before is not None:
        busy = now.receive_busy_s - before.receive_busy_s
        wall = now.receive_wall_s - before.receive_wall_s
    else:
        busy, wall = now.receive_busy_s, min(now.receive_wall_s, span)
    live = _live(now)
    reading = sum(a.state == "reading" for a in now.actors)
    return dict(receive_busy=_share(busy, wall), actors_reading=reading / live if live else 0.0,
                inflight_items=now.inflight_items,
                pinned_bytes=now.inflight_bytes + now.held_bytes, cap_bytes=now.cap_bytes,
                nodes=len(now.nodes), ray_local=now.local)


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

"""Metrics over a moving window, computed from successive ``Runner.stats()`` snapshots.

The core only counts (items in and out, seconds full and empty, bytes); this
module turns two snapshots into what a person reads: rates over the last few
seconds, the share of that window each queue was full or empty, and one flat
JSON record per snapshot (``metrics.jsonl``) for plots and tools.
"""

from __future__ import annotations

import time
from collections import Counter, deque
from dataclasses import dataclass
from typing import Any

from inputkit.queues import QueueStats, Stage
from inputkit.stats import CoordinatorStats, RunnerStats
from inputkit.workers.base import RayStats


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


_STATES = ("reading", "idle", "starting", "done", "dead")


@dataclass(frozen=True)
class ActorWindow:
    """One Ray actor over the window: its state now and what it delivered per second."""

    name: str
    pid: int | None
    state: str
    chunks_per_s: float
    samples_per_s: float


@dataclass(frozen=True)
class NodeWindow:
    """The actors of one node (by its address): totals since start, rates over the window."""

    node: str
    actors: tuple[ActorWindow, ...]
    chunks: int
    samples: int
    chunks_per_s: float
    samples_per_s: float

    @property
    def states(self) -> dict[str, int]:
        """How many actors are in each state (reading, idle, starting, done, dead, in that
        order; a state not in that list after them)."""
        found = Counter(a.state for a in self.actors)
        rank = {state: i for i, state in enumerate(_STATES)}
        return {state: found[state] for state in sorted(found, key=lambda s: rank.get(s, 99))}


@dataclass(frozen=True)
class RayWindow:
    """A Ray pool over the window: per node, and the receiver's busy share of the window."""

    stats: RayStats
    nodes: tuple[NodeWindow, ...]
    receive_busy: float

    def record(self) -> dict[str, Any]:
        """The ``ray`` entry of a coordinator in ``metrics.jsonl``."""
        s = self.stats
        return {"nodes": [{"node": n.node, "actors": len(n.actors), "states": n.states,
                           "chunks": n.chunks, "samples": n.samples,
                           "chunks_per_s": n.chunks_per_s, "samples_per_s": n.samples_per_s}
                          for n in self.nodes],
                "inflight_items": s.inflight_items, "inflight_bytes": s.inflight_bytes,
                "held_bytes": s.held_bytes, "cap_bytes": s.cap_bytes,
                "spilled_bytes": s.spilled_bytes, "duplicates": s.duplicates,
                "receive_busy": self.receive_busy}


def ray_window(now: RayStats, before: RayStats | None, span: float) -> RayWindow:
    """Per-node rates between two snapshots (since start without ``before``; ``span`` is the
    seconds between them). An actor is matched by name and pid: one that replaced a dead
    actor (under its name, in another process) counts from 0, and one gone from the list no
    longer counts."""
    then = {a.name: a for a in before.actors} if before is not None else {}
    nodes = []
    for node, actors in now.nodes.items():
        rows = []
        for a in actors:
            old = then.get(a.name)
            if old is not None and (old.pid not in (None, a.pid) or a.chunks < old.chunks):
                old = None  # a new actor under the old one's name
            chunks = a.chunks - (old.chunks if old is not None else 0)
            samples = a.samples - (old.samples if old is not None else 0)
            rows.append(ActorWindow(name=a.name, pid=a.pid, state=a.state,
                                    chunks_per_s=_per_s(chunks, span),
                                    samples_per_s=_per_s(samples, span)))
        nodes.append(NodeWindow(node=node, actors=tuple(rows),
                                chunks=sum(a.chunks for a in actors),
                                samples=sum(a.samples for a in actors),
                                chunks_per_s=sum(r.chunks_per_s for r in rows),
                                samples_per_s=sum(r.samples_per_s for r in rows)))
    if before is not None:
        busy = _share(now.receive_busy_s, before.receive_busy_s,
                      now.receive_wall_s - before.receive_wall_s)
    else:
        busy = _share(now.receive_busy_s, 0.0, now.receive_wall_s)
    return RayWindow(stats=now, nodes=tuple(nodes), receive_busy=busy)


def _per_s(count: int, span: float) -> float:
    return max(0, count) / span if span > 0 else 0.0


@dataclass(frozen=True)
class CoordinatorWindow:
    input: str
    device: str
    device_index: int
    samples_per_s: float
    batches_per_s: float
    mb_per_s: float
    queues: tuple[QueueWindow, ...]
    stats: CoordinatorStats
    before: CoordinatorStats | None = None  # the snapshot the window starts from (diagnosis)
    ray: RayWindow | None = None  # Ray workers: per node, over the window


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
            "coordinators": [
                {"input": c.input, "device": c.device, "device_index": c.device_index,
                 "samples_per_s": c.samples_per_s, "batches_per_s": c.batches_per_s,
                 "workers": {"fetching": c.stats.workers.fetching,
                             "blocked": c.stats.workers.blocked, "idle": c.stats.workers.idle,
                             "p50_ms": c.stats.workers.fetch_p50_ms,
                             "p95_ms": c.stats.workers.fetch_p95_ms},
                 "queues": [{"stage": q.stage, "items": q.items, "capacity": q.capacity,
                             "bytes": q.bytes, "max_bytes": q.max_bytes, "full": q.full,
                             "empty": q.empty} for q in c.queues],
                 **({"ray": c.ray.record()} if c.ray is not None else {}),
                 **({"storage": _storage_record(c)} if c.stats.storage is not None else {})}
                for c in self.coordinators],
            "warnings": warnings,
        }


def _storage_record(c: CoordinatorWindow) -> dict[str, Any]:
    """The store's figures over the window (MB/s) and now (counters, the cache's fill)."""
    from inputkit.storage_stats import storage_record

    before = c.before.storage if c.before is not None else None
    span = c.stats.elapsed_s - c.before.elapsed_s if c.before is not None else c.stats.elapsed_s
    return storage_record(c.stats.storage, before, span)  # type: ignore[arg-type]


def _share(now: float, before: float, span: float) -> float:
    return min(1.0, max(0.0, (now - before) / span)) if span > 0 else 0.0


def _queue_window(now: QueueStats, before: QueueStats | None) -> QueueWindow:
    if before is None:
        full, empty = now.full_fraction, now.empty_fraction
    else:
        span = now.elapsed_s - before.elapsed_s
        full = _share(now.time_full_s, before.time_full_s, span)
        empty = _share(now.time_empty_s, before.time_empty_s, span)
    return QueueWindow(name=now.name, items=now.items, capacity=now.capacity, bytes=now.bytes,
                       max_bytes=now.max_bytes, peak_bytes=now.peak_bytes, full=full, empty=empty,
                       stage=now.stage)


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
        old_by_key = {(c.input, c.device_index): c for c in old.coordinators} if span > 0 else {}
        coordinators = []
        for c in stats.coordinators:
            prev = old_by_key.get((c.input, c.device_index))
            rates = _rates(c.samples, c.batches, c.bytes, prev, span) if prev else \
                (c.samples_per_s, c.batches_per_s, c.mb_per_s)
            before_queues = {q.name: q for q in prev.queues} if prev else {}
            ray = None
            if c.workers.ray is not None:
                old = prev.workers.ray if prev is not None else None
                ray = ray_window(c.workers.ray, old, c.elapsed_s - prev.elapsed_s if prev
                                 else c.elapsed_s)
            coordinators.append(CoordinatorWindow(
                input=c.input, device=c.device, device_index=c.device_index,
                samples_per_s=rates[0], batches_per_s=rates[1], mb_per_s=rates[2],
                queues=tuple(_queue_window(q, before_queues.get(q.name)) for q in c.queues),
                stats=c, before=prev, ray=ray))
        return Window(
            elapsed_s=stats.elapsed_s, window_s=span,
            samples_per_s=sum(c.samples_per_s for c in coordinators),
            batches_per_s=sum(c.batches_per_s for c in coordinators),
            mb_per_s=sum(c.mb_per_s for c in coordinators),
            coordinators=tuple(coordinators), stats=stats)


def _rates(samples: int, batches: int, nbytes: int, prev: CoordinatorStats,
           span: float) -> tuple[float, float, float]:
    return ((samples - prev.samples) / span, (batches - prev.batches) / span,
            (nbytes - prev.bytes) / 1e6 / span)

"""Per-step processor statistics: what each step of a chain cost, and totals over workers.

A chain counts, per step: calls (chunks), samples (the chunks' leading lengths on
the way in), wall seconds and CPU seconds of the calling thread (``time.thread_time``).
A thread pool reads ``chain.stats()`` directly; a process worker ships
``chain.snapshot()`` (a small dict of plain numbers, cumulative since that
chain was built) to its parent, which keeps the latest one per worker in a
:class:`ProcessorTotals`. Imports only the standard library.
"""

from __future__ import annotations

import threading
from collections.abc import Hashable, Iterable, Mapping
from dataclasses import dataclass

# step name -> (calls, samples, wall_s, cpu_s), in step order; cumulative.
Snapshot = dict[str, tuple[int, int, float, float]]


@dataclass(frozen=True)
class ProcessorStats:
    """One processor step: ``calls`` chunks of ``samples`` samples in all, and the time spent.

    ``cpu_s`` well below ``wall_s`` means the step waits (I/O, a lock, the GIL held by
    another thread); ``cpu_s`` close to ``wall_s`` with thread workers means it is
    CPU-bound in Python and contends for the GIL.
    """

    name: str
    calls: int
    samples: int
    wall_s: float
    cpu_s: float

    @property
    def ms_per_chunk(self) -> float:
        """Mean wall milliseconds per call (0 before the first call)."""
        return 1000.0 * self.wall_s / self.calls if self.calls else 0.0

    @property
    def us_per_sample(self) -> float:
        """Mean wall microseconds per sample (0 before the first sample)."""
        return 1e6 * self.wall_s / self.samples if self.samples else 0.0


def stats_from_snapshot(snapshot: Mapping[str, tuple[int, int, float, float]]
                        ) -> tuple[ProcessorStats, ...]:
    """``ProcessorStats`` for each step of a snapshot, in its order."""
    return tuple(ProcessorStats(name, int(c), int(s), float(w), float(u))
                 for name, (c, s, w, u) in snapshot.items())


def merge_snapshots(snapshots: Iterable[Mapping[str, tuple[int, int, float, float]]]) -> Snapshot:
    """The per-step sums of several snapshots; steps keep the order they are first seen in."""
    total: dict[str, list[float]] = {}
    for snapshot in snapshots:
        for name, values in snapshot.items():
            acc = total.setdefault(name, [0, 0, 0.0, 0.0])
            for i, value in enumerate(values):
                acc[i] += value
    return {name: (int(c), int(s), float(w), float(u)) for name, (c, s, w, u) in total.items()}


class ProcessorTotals:
    """Per-step totals over many workers' chains, from their cumulative snapshots. Thread-safe.

    ``add(worker, snapshot)`` *replaces* that worker's previous snapshot, so a worker
    can send its whole snapshot as often as it likes (a lost or repeated message
    changes nothing). A worker whose chain starts again from zero (a restarted worker
    process) must either use a new ``worker`` key (e.g. its pid), or be ``retire``d
    first, which folds its last snapshot into the totals for good; otherwise its
    earlier counts are lost.
    """

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._live: dict[Hashable, Snapshot] = {}
        self._retired: Snapshot = {}

    def add(self, worker: Hashable, snapshot: Mapping[str, tuple[int, int, float, float]]) -> None:
        """Record ``worker``'s latest cumulative snapshot (replaces the one before)."""
        copied = {name: tuple(values) for name, values in snapshot.items()}
        with self._lock:
            self._live[worker] = copied  # type: ignore[assignment]

    def retire(self, worker: Hashable) -> None:
        """Keep ``worker``'s last snapshot in the totals, and forget the key (idempotent)."""
        with self._lock:
            last = self._live.pop(worker, None)
            if last is not None:
                self._retired = merge_snapshots([self._retired, last])

    def snapshot(self) -> Snapshot:
        """The per-step sums over every worker, live and retired."""
        with self._lock:
            return merge_snapshots([self._retired, *self._live.values()])

    def stats(self) -> tuple[ProcessorStats, ...]:
        """``ProcessorStats`` per step name, summed over every worker."""
        return stats_from_snapshot(self.snapshot())

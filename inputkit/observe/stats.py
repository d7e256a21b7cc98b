"""Statistics snapshots: plain dataclasses produced by the core, read by the CLI and reports.

Rates are derived properties, so a snapshot is self-contained and cheap to take
(``Runner.stats()`` takes a lock per queue and per pool, nothing more).
"""

from __future__ import annotations

from dataclasses import asdict, dataclass, field
from typing import Any

from inputkit.observe.storage_stats import StorageReading
from inputkit.pipeline.queues import QueueStats
from inputkit.planning.procmem import ProcessMemory
from inputkit.workers.base import WorkerPoolStats

__all__ = ["CoordinatorStats", "QueueStats", "RunnerStats", "WorkerPoolStats"]


class _Rates:
    """Rates since start, derived from ``samples``, ``batches``, ``bytes`` and ``elapsed_s``."""

    samples: int
    batches: int
    bytes: int
    elapsed_s: float

    @property
    def samples_per_s(self) -> float:
        return self.samples / self.elapsed_s if self.elapsed_s > 0 else 0.0

    @property
    def batches_per_s(self) -> float:
        return self.batches / self.elapsed_s if self.elapsed_s > 0 else 0.0

    @property
    def mb_per_s(self) -> float:
        return self.bytes / 1e6 / self.elapsed_s if self.elapsed_s > 0 else 0.0


@dataclass(frozen=True)
class CoordinatorStats(_Rates):
    """One input on one device: what the consumer received, and each stage's state.

    ``queues`` lists the chain in order: chunk queue, batch queue, and on CUDA (or on CPU
    with ``device.normalize``) the device prefetch queue. ``copied_batches`` were assembled
    from several chunks (one copy); ``view_batches`` lay inside one chunk and were handed out
    without a copy. ``first_batch_s``: seconds from start to the first batch delivered.
    ``next_s``: seconds the consumer spent inside ``next()`` for the batches it received
    (waiting included); ``device_busy_s``: seconds the device stage's own thread spent
    copying or converting batches (0 where it has none).
    """

    input: str
    device: str
    device_index: int
    batch_size: int
    batches: int
    samples: int
    bytes: int
    elapsed_s: float
    first_batch_s: float | None
    finished: bool
    workers: WorkerPoolStats
    queues: tuple[QueueStats, ...]
    copied_batches: int
    view_batches: int
    dropped_samples: int
    # The memory plan's worst case for each stage of this coordinator (stage -> bytes).
    planned: dict[str, int] = field(default_factory=dict)
    source: str = ""  # the source's _target_ (the diagnosis has advice for some kinds)
    # A mixture source: samples the consumer received from each component, by name.
    components: dict[str, int] = field(default_factory=dict)
    next_s: float = 0.0
    device_busy_s: float = 0.0
    # An input that reads from an object store: the run's storage counters and the disk
    # cache's fill at this snapshot (inputkit.observe.storage_stats); None for local data.
    storage: StorageReading | None = None

    @property
    def buffered_bytes(self) -> int:
        """Bytes in this coordinator's queues right now."""
        return sum(q.bytes for q in self.queues)

    def to_dict(self) -> dict[str, Any]:
        data = asdict(self)
        data.update(samples_per_s=self.samples_per_s, batches_per_s=self.batches_per_s,
                    mb_per_s=self.mb_per_s)
        return data


@dataclass(frozen=True)
class RunnerStats(_Rates):
    """Every coordinator of a runner, in (input, device) order."""

    elapsed_s: float
    coordinators: tuple[CoordinatorStats, ...]
    # The plan's host total (None when sizes were unknown), and measured memory now.
    planned_host_bytes: int | None = None
    memory: ProcessMemory | None = None

    @property
    def buffered_bytes(self) -> int:
        return sum(c.buffered_bytes for c in self.coordinators)

    @property
    def samples(self) -> int:
        return sum(c.samples for c in self.coordinators)

    @property
    def batches(self) -> int:
        return sum(c.batches for c in self.coordinators)

    @property
    def bytes(self) -> int:
        return sum(c.bytes for c in self.coordinators)

    def to_dict(self) -> dict[str, Any]:
        return {
            "elapsed_s": self.elapsed_s, "samples": self.samples, "batches": self.batches,
            "bytes": self.bytes, "samples_per_s": self.samples_per_s,
            "batches_per_s": self.batches_per_s, "mb_per_s": self.mb_per_s,
            "planned_host_bytes": self.planned_host_bytes, "buffered_bytes": self.buffered_bytes,
            "memory": asdict(self.memory) if self.memory is not None else None,
            "coordinators": [c.to_dict() for c in self.coordinators],
        }

"""What every worker pool provides to its coordinator, and the statistics it reports.

A pool calls ``source.fetch(worker_id, batch_size_hint)`` on its workers, checks
each result with the input's ChunkSchema, and puts chunks into the chunk queue.
When every worker has seen the end of the source, the pool puts ``END``; when a
worker fails, it puts a ``Failure`` and stops its siblings.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Protocol


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
    pids: tuple[int, ...] = ()


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

"""``Runner.stats()``'s body: every coordinator's snapshot, joined with the readings they share.

A coordinator reports only its own stages. What belongs to the run rather than to one
coordinator (the store's counters and the cache's fill, the memory of this process and its
workers, the plan's host bytes) is read here, once per snapshot, and set beside them.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Iterable, Sequence
from typing import TYPE_CHECKING, Any

from inputkit.observe.stats import RunnerStats

if TYPE_CHECKING:
    from inputkit.planning.memory import MemoryPlan


def run_snapshot(coordinators: Iterable[Any], inputs: Sequence[Any], plan: MemoryPlan | None,
                 devices: Sequence[str], elapsed_s: float) -> RunnerStats:
    """A snapshot of every coordinator's statistics (cheap; any thread), with the run's
    storage and memory readings."""
    from inputkit.planning.procmem import read_process_memory

    stats = tuple(c.stats() for c in coordinators)
    stats = with_storage(stats, inputs)
    pids = [pid for c in stats for pid in c.workers.pids]
    shared = sum(c.workers.shm_bytes_in_use for c in stats)
    return RunnerStats(elapsed_s=elapsed_s, coordinators=stats,
                       planned_host_bytes=plan.host_bytes if plan else None,
                       memory=read_process_memory(
                           pids, shared, [d for d in set(devices) if d != "cpu"]))


def with_storage(coordinators: tuple[Any, ...], inputs: Any) -> tuple[Any, ...]:
    """The coordinators of inputs that read from a store, with one storage reading (the
    run's counters and the cache's fill) beside their own figures."""
    from inputkit.observe.storage_stats import read_storage, remote_where

    wheres = {inp.name: remote_where(inp.source) for inp in inputs}
    if not any(wheres.values()):
        return coordinators
    readers: dict[str, int] = {}
    for c in coordinators:
        if wheres.get(c.input) is not None:
            readers[wheres[c.input]] = readers.get(wheres[c.input], 0) + c.workers.workers
    readings: dict[str, Any] = {}
    out = []
    for c in coordinators:
        where = wheres.get(c.input)
        if where is not None:
            if where not in readings:
                readings[where] = dataclasses.replace(read_storage(where), readers=readers[where])
            c = dataclasses.replace(c, storage=readings[where])
        out.append(c)
    return tuple(out)

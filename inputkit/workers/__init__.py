"""Worker pools. ``make_worker_pool`` picks the implementation for ``workers.kind``."""

from __future__ import annotations

from collections.abc import Callable
from typing import TYPE_CHECKING, Any

from inputkit import kinds
from inputkit.errors import ConfigError
from inputkit.pipeline.chunk import ChunkSchema
from inputkit.pipeline.dispatcher import Dispatcher
from inputkit.pipeline.messages import Failure
from inputkit.pipeline.queues import BoundedQueue
from inputkit.planning.geometry import slot_count  # the planner's and the process kind's: one count
from inputkit.sources.loader import BoundSource
from inputkit.workers.base import WorkerPool, WorkerPoolStats
from inputkit.workers.threads import ThreadWorkerPool

if TYPE_CHECKING:  # the config layer (OmegaConf) stays out of worker processes
    from inputkit.config.spec import InputSpec

__all__ = ["ThreadWorkerPool", "WorkerPool", "WorkerPoolStats", "make_worker_pool", "slot_count"]


def make_worker_pool(spec: InputSpec, device: str, *, source: BoundSource | None,
                     schema: ChunkSchema, worker_ids: list[int], num_workers: int,
                     out: BoundedQueue | None, label: str, thread_prefix: str,
                     on_failure: Callable[[Failure], None],
                     dispatcher: Dispatcher | None = None,
                     processors: Any = None) -> WorkerPool:
    """The pool for ``workers.kind``: threads share ``source``; processes build their own, or
    take a pickled copy of ``source`` when it ships built (sources.protocol.ships_built).

    With a ``dispatcher`` (an indexable source), workers read its index-range items
    instead of calling fetch. ``processors``: the input's ProcessorChain (thread workers
    share it; worker processes build their own from the spec).
    """
    common = dict(schema=schema, worker_ids=worker_ids, num_workers=num_workers,
                  batch_size_hint=spec.batch_size, out=out, label=label,
                  thread_prefix=thread_prefix, on_failure=on_failure, policy=spec.failures,
                  dispatcher=dispatcher)
    kind = kinds.get(spec.worker_kind, f"{spec.key_prefix}workers.kind")
    if kind.source_here and source is None:
        raise ConfigError(f"{spec.key_prefix}workers.kind", f"{spec.worker_kind} workers need "
                          "the source built in this process")
    return kind.make_pool(spec, device, source=source, processors=processors, **common)  # type: ignore[no-any-return]

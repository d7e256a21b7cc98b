"""Worker pools. ``make_worker_pool`` picks the implementation for ``workers.kind``."""

from __future__ import annotations

from collections.abc import Callable

from inputkit.chunk import ChunkSchema
from inputkit.errors import ConfigError
from inputkit.messages import Failure
from inputkit.queues import BoundedQueue
from inputkit.sources.loader import BoundSource
from inputkit.workers.base import WorkerPool, WorkerPoolStats
from inputkit.workers.threads import ThreadWorkerPool

__all__ = ["ThreadWorkerPool", "WorkerPool", "WorkerPoolStats", "make_worker_pool"]


def make_worker_pool(kind: str, *, source: BoundSource, schema: ChunkSchema,
                     worker_ids: list[int], batch_size_hint: int, out: BoundedQueue,
                     label: str, thread_prefix: str,
                     on_failure: Callable[[Failure], None]) -> WorkerPool:
    """The pool for ``workers.kind``; the seam where process workers plug in."""
    if kind == "thread":
        return ThreadWorkerPool(source=source, schema=schema, worker_ids=worker_ids,
                                batch_size_hint=batch_size_hint, out=out, label=label,
                                thread_prefix=thread_prefix, on_failure=on_failure)
    raise ConfigError("workers.kind", f"unknown worker kind '{kind}'; available: thread")

"""Thread workers: a pool of threads in this process sharing one source (the default)."""

from __future__ import annotations

from collections.abc import Sequence
from typing import TYPE_CHECKING, Any

from inputkit.kinds import Kind, register
from inputkit.kinds.plan import chunk_queue_limit, shared_source
from inputkit.planning.plan_lines import HOST, SampleLayout, Term

if TYPE_CHECKING:
    from inputkit.config.spec import InputSpec


def make_pool(spec: Any, device: str, *, source: Any, processors: Any, **common: Any) -> Any:
    from inputkit.workers.threads import ThreadWorkerPool

    return ThreadWorkerPool(source=source, processors=processors, **common)


class ThreadPlan:
    """The memory terms of thread workers: the chunk queue, one chunk in each worker's hands,
    and the one source they share. (Also the plan of a kind that declares none of its own but
    runs its workers in this process.)"""

    in_consumer = False
    worker_processes = False

    def worker_terms(self, inp: InputSpec, layout: SampleLayout, on_gpu: bool) -> list[Term]:
        name, p, chunk, detail = inp.name, inp.key_prefix, layout.chunk_bytes, layout.chunk_detail
        if inp.chunk_capacity_bytes is not None:
            queue = chunk_queue_limit(inp, layout, HOST, inp.chunk_capacity_bytes)
        else:
            queue = Term(name, "chunk queue", HOST, inp.chunk_capacity, "chunks", chunk,
                         p + "queue.capacity", detail)
        return [queue,
                Term(name, "chunks held by workers", HOST, inp.worker_count, "chunks", chunk,
                     p + "workers.count", detail),
                shared_source(inp, layout)]

    def run_terms(self, inputs: Sequence[InputSpec]) -> list[Term]:
        return []


PLAN = ThreadPlan()
KIND = register(Kind(name="thread", summary="threads in this process sharing one source",
                     source_here=True, make_pool=make_pool, plan=PLAN))


def view() -> Any:
    """Its verdict rules (kinds/local_views.py), imported the first time a view asks."""
    from inputkit.kinds.local_views import THREAD

    return THREAD


KIND.view = view

"""Inline: the consumer's own thread fetches when it asks for a batch (no threads, no queues)."""

from __future__ import annotations

from collections.abc import Sequence
from typing import TYPE_CHECKING, Any

from inputkit.kinds import Kind, register
from inputkit.kinds.plan import shared_source
from inputkit.planning.plan_lines import HOST, SampleLayout, Term

if TYPE_CHECKING:
    from inputkit.config.spec import InputSpec


def make_pool(spec: Any, device: str, *, source: Any, processors: Any, **common: Any) -> Any:
    from inputkit.workers.inline_pool import InlineWorkerPool

    common.pop("out", None)  # no chunk queue: the pool is the stream the batcher pulls
    return InlineWorkerPool(source=source, processors=processors, **common)


class InlinePlan:
    """The memory terms of inline work: no queues, one chunk at a time being re-chunked in the
    consumer's thread, and the source built here."""

    in_consumer = True
    worker_processes = False

    def worker_terms(self, inp: InputSpec, layout: SampleLayout, on_gpu: bool) -> list[Term]:
        return [Term(inp.name, "chunk being re-chunked", HOST, 1, "chunk", layout.chunk_bytes,
                     inp.key_prefix + "workers.kind", layout.chunk_detail),
                shared_source(inp, layout)]

    def run_terms(self, inputs: Sequence[InputSpec]) -> list[Term]:
        return []


KIND = register(Kind(name="inline", summary="the consumer's thread fetches; no queues",
                     source_here=True, make_pool=make_pool, plan=InlinePlan()))


def view() -> Any:
    """Its verdict rules (kinds/local_views.py), imported the first time a view asks."""
    from inputkit.kinds.local_views import INLINE

    return INLINE


KIND.view = view

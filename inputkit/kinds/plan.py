"""What a worker kind tells the memory planner: the lines of the plan its workers hold.

A kind's ``plan`` (``inputkit.kinds.Kind.plan``) is an object with this protocol. The planner
(inputkit.planning.memory_terms) adds the lines every kind shares (the batcher, the batch queue, the
device stage, decoding scratch) and asks the kind for the rest: the chunk queue or what holds
chunks in its place, the workers' own copies and processes, and anything started once per
training process. A kind module defines its plan beside its pool; this module and
inputkit.planning.plan_lines are all it needs to import, so planning never imports a kind's pool code.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import TYPE_CHECKING, Protocol

from inputkit.config.sizes import format_size
from inputkit.planning.plan_lines import BYTE_LIMIT, HOST, SampleLayout, Term, limit_detail

if TYPE_CHECKING:
    from inputkit.config.spec import InputSpec

__all__ = ["KindPlan", "chunk_queue_limit", "shared_source"]


class KindPlan(Protocol):
    """A worker kind's memory terms.

    ``in_consumer``: the consumer's own thread makes each batch (inline): no reorder buffer, no
    batch queue, and a batch is copied to the device when it is taken. ``worker_processes``:
    each worker is a process of its own (a copy of the source, its own storage requests).
    """

    in_consumer: bool
    worker_processes: bool

    def worker_terms(self, inp: InputSpec, layout: SampleLayout, on_gpu: bool) -> list[Term]:
        """The chunk queue (or what holds chunks in its place) and what the workers hold, for
        one input on one device, in the order the plan lists them."""
        ...

    def run_terms(self, inputs: Sequence[InputSpec]) -> list[Term]:
        """Lines paid once per training process for every input of this kind (helper
        processes, a private local cluster); ``inputs`` are those inputs, in config order."""
        ...


def chunk_queue_limit(inp: InputSpec, layout: SampleLayout, memory: str, limit: int) -> Term:
    """The chunk queue bounded by ``queue.capacity`` as a size, ``limit`` bytes (one chunk
    always fits)."""
    key = inp.key_prefix + "queue.capacity"
    return Term(inp.name, "chunk queue", memory, 1, BYTE_LIMIT, max(limit, layout.chunk_bytes),
                key, limit_detail(key, limit, "chunk"))


def shared_source(inp: InputSpec, layout: SampleLayout) -> Term:
    """One copy of the source, built in this process and shared by every device's workers."""
    return Term(inp.name, "source", HOST, 1, "shared copy", layout.source_bytes,
                inp.key_prefix + "source", format_size(layout.source_bytes), per_device=False)

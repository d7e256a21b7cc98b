"""Sizes and slot geometry: the facts both the memory planner and the workers read.

How a chunk is laid out in a shared-memory slot (every field on a cache line), how many slots
a process pool needs, and how many lent chunks the queues and the batcher can hold at once.
The planner multiplies these out; ``workers/shm.py``, the process kind and the Ray pool act on
them. Keeping them here, below both, is what lets the plan stay true to the workers without
the planner importing worker code (tests/test_import_cycles.py). Pure arithmetic: this
module imports nothing from inputkit at run time.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

if TYPE_CHECKING:  # the config layer (OmegaConf) stays out of worker processes
    from inputkit.config.spec import InputSpec

__all__ = ["ALIGN", "aligned", "fits_in_slot", "held_views", "slot_count", "slot_used_bytes"]

ALIGN = 64  # every field of a chunk in a slot starts on a cache line


def aligned(size: int) -> int:
    """``size`` rounded up to the next multiple of ALIGN."""
    return (size + ALIGN - 1) // ALIGN * ALIGN


def slot_used_bytes(chunk_bytes: int, fields: int, slot_bytes: int) -> int:
    """The most of a ``slot_bytes`` slot one chunk of ``chunk_bytes`` in ``fields`` fields
    occupies: its bytes rounded up to a cache line, plus up to one line of padding a field."""
    return min(slot_bytes, aligned(chunk_bytes) + ALIGN * fields)


def fits_in_slot(chunk_bytes: int, fields: int, slot_bytes: int) -> bool:
    """A whole chunk fits one slot, whatever the padding between its fields: a source that
    reads into the slot (read_into) then writes it there once, with no private copy."""
    return chunk_bytes + ALIGN * (fields + 1) <= slot_bytes


def slot_count(spec: InputSpec, device: str) -> int:
    """Shared-memory slots a process pool needs so that no stage waits on a slot.

    A slot is held by a chunk in the chunk queue (capacity), by each worker writing
    or waiting to put one (count), by the batcher's current and leftover chunks (2),
    and by uncopied batches in the batch queue and with the consumer or the CUDA
    staging copy (batch capacity + 2). Batches are only lent as views while at least
    count + 2 slots are free, so the workers never wait on a consumer that keeps them.
    """
    queued = spec.chunk_capacity
    if spec.chunk_capacity_bytes is not None:  # a byte limit: as many slots as it fills
        queued = max(2, -(-spec.chunk_capacity_bytes // spec.slot_bytes))
    batches = spec.batch_capacity if spec.batch_capacity_bytes is None else 2
    # (The reorder buffer of epoch.ordered holds private copies, not slots.)
    return queued + spec.worker_count + 2 + batches + 2


def held_views(spec: InputSpec) -> tuple[int, tuple[int, ...]]:
    """What the chunk queue, the batcher and the batch queue can hold at once as views of
    chunks a worker lent (a Ray object): a count (the batcher's current and leftover chunks,
    a batch with the consumer or the copy, and the queues sized in items), and the byte
    limits of the queues sized in bytes. The plan and the Ray pool's default cap read it."""
    chunks = 2 + 2
    limits = []
    for count, size in ((spec.chunk_capacity, spec.chunk_capacity_bytes),
                        (spec.batch_capacity, spec.batch_capacity_bytes)):
        if size is None:
            chunks += count
        else:
            limits.append(size)
    return chunks, tuple(limits)

"""The plan's vocabulary: a line of the plan (Term), the sizes it multiplies (SampleLayout),
the whole plan (MemoryPlan) and the kinds of memory a line may hold.

Below both the planner (inputkit.planning.memory_terms, inputkit.planning.memory) and each worker kind's own
terms (inputkit.kinds.*.plan): a kind describes what it holds in these words without
importing the planner, and the planner adds up lines without knowing the kinds.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from inputkit.config.sizes import format_size, size_setting

__all__ = ["BYTE_LIMIT", "DISK", "GPU", "HOST", "PAGE_CACHE", "PINNED", "SHARED", "MemoryPlan",
           "SampleLayout", "Term", "limit_detail"]

HOST, SHARED, PINNED, GPU = "host", "shared memory", "pinned host", "GPU"
# Memory-mapped files: the operating system's page cache, shared by every process and evicted
# under pressure. Shown in the plan, never counted in the host total or the budget.
PAGE_CACHE = "page cache"
# Files on local disk (the object-store cache): shown in the plan, never counted in memory.
DISK = "disk"
# The unit of a term bounded by a size (queue.capacity=256MiB): one limit, not a count.
BYTE_LIMIT = "byte limit"


@dataclass(frozen=True)
class SampleLayout:
    """Bytes per sample of every field, and the samples one fetch returns."""

    fields: dict[str, tuple[tuple[int, ...], str, int]]  # name -> (shape, dtype, bytes)
    chunk_samples: int
    source: str  # "declared" or "probe"
    source_bytes: int  # the source object's own footprint (one copy)
    # What one read holds while it works, per worker, beyond its output (an image source's
    # encoded file and full-size decoded image), with how it is made up: from the source's
    # read_scratch() after the probe.
    scratch: tuple[int, str] = (0, "")
    # The source writes each read straight into a shared-memory slot (read_into, no
    # processors): a worker process then holds no private copy of its chunk.
    in_place: bool = False
    # The files the source memory-maps (bytes, what they are): from its mapped_bytes().
    mapped: tuple[int, str] = (0, "")
    # The key (without the input's prefix) that sets the samples of a chunk for this source
    # (epoch.chunk_size for an indexable source, source.chunk_size for one that takes it), or
    # "" when no key does: the plan's fixes offer a smaller chunk only through it.
    chunk_key: str = ""
    # What the plan needs when the source reads from an object store (shard sizes, each
    # sample's shard): inputkit.planning.storage_plan.RemoteData, from the probe; None for local data.
    remote: Any = field(default=None, compare=False)

    @property
    def sample_bytes(self) -> int:
        return sum(size for *_, size in self.fields.values())

    @property
    def chunk_bytes(self) -> int:
        return self.sample_bytes * self.chunk_samples

    @property
    def chunk_detail(self) -> str:
        """How one chunk is made up, as the plan shows it: ``128 samples x 618,348 B``."""
        return f"{self.chunk_samples:,} samples x {self.sample_bytes:,} B"


@dataclass(frozen=True)
class Term:
    """One line of the plan: ``count`` units of ``unit_bytes`` in ``stage`` of one input."""

    input: str
    stage: str
    memory: str  # HOST, SHARED, PINNED or GPU
    count: int
    unit: str
    unit_bytes: int
    key: str  # the config key that sets ``count``
    detail: str  # how one unit is made up, e.g. "128 samples x 618,348 B"
    per_device: bool = True

    @property
    def bytes(self) -> int:
        return self.count * self.unit_bytes

    def holds(self) -> str:
        """What the line holds, as the plan's table shows it: a count of units, or for a byte
        limit the most it may hold and what sets it."""
        if self.unit == BYTE_LIMIT:
            return f"up to {format_size(self.bytes)} ({self.detail})"
        return f"{self.count:,} {self.unit} x {self.detail}"

    def formula(self) -> str:
        if self.unit == BYTE_LIMIT:
            return self.holds()
        return f"{self.holds()} = {format_size(self.bytes)}"


@dataclass(frozen=True)
class MemoryPlan:
    devices: tuple[str, ...]
    layouts: dict[str, SampleLayout]
    terms: tuple[Term, ...]
    budget_bytes: int
    budget_text: str
    gpu_budget_bytes: int | None
    suggestions: tuple[str, ...] = field(default=())

    @property
    def device_count(self) -> int:
        return len(self.devices)

    def total(self, memory: tuple[str, ...] = (HOST, SHARED, PINNED)) -> int:
        """Bytes over every device, for the given kinds of memory."""
        return sum(t.bytes * (self.device_count if t.per_device else 1)
                   for t in self.terms if t.memory in memory)

    @property
    def host_bytes(self) -> int:
        return self.total()

    @property
    def gpu_bytes_per_device(self) -> int:
        return sum(t.bytes for t in self.terms if t.memory == GPU)

    @property
    def over_budget(self) -> bool:
        gpu_over = self.gpu_budget_bytes is not None and \
            self.gpu_bytes_per_device > self.gpu_budget_bytes
        return self.host_bytes > self.budget_bytes or gpu_over

    def dominating(self) -> Term:
        return max((t for t in self.terms if t.memory not in (PAGE_CACHE, DISK)),
                   key=lambda t: t.bytes * (self.device_count if t.per_device else 1))

    def stage_bytes(self, input_name: str, stage: str) -> int:
        """Planned bytes of one stage of one input on one device (0 when absent)."""
        return sum(t.bytes for t in self.terms if t.input == input_name and t.stage == stage)


def limit_detail(key: str, limit: int, unit: str) -> str:
    """How a byte limit was set: ``queue.capacity=64GiB, at least one chunk``."""
    return f"{key}={size_setting(limit)}, at least one {unit}"

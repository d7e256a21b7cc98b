"""The lines of a memory plan: what each stage of one input may hold, per worker kind.

Pure arithmetic on a checked InputSpec and the sizes of one sample (SampleLayout):
the chunk queue or what a worker kind holds in its place (threads, shared-memory
slots, Ray's object store, inline's one chunk), the batcher, the batch queue, the
device stage, and memory-mapped files (page cache, shown but never counted).
The planner (inputkit.memory) adds them up against the budget.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from typing import Any

from inputkit.config.sizes import format_size, size_setting
from inputkit.config.spec import InputSpec

# A worker process's own footprint before it holds any data (interpreter, numpy,
# inputkit's worker code), as proportional set size: forkserver children share
# most of their pages with the server.
WORKER_PROCESS_BYTES = 12 * 2**20
# multiprocessing's helper processes, started once per training process when any input
# uses process workers: the resource tracker (about 8 MB) and the forkserver (about 15 MB).
HELPER_PROCESSES_BYTES = 23 * 2**20
# A Ray actor's process (a Ray worker with numpy and inputkit's actor code, PSS), and a
# private local Ray's own processes (GCS, raylet, its agents), measured with Ray 2.60.
RAY_ACTOR_BYTES = 64 * 2**20
LOCAL_RAY_BYTES = 320 * 2**20
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
    # sample's shard): inputkit.storage_plan.RemoteData, from the probe; None for local data.
    remote: Any = field(default=None, compare=False)

    @property
    def sample_bytes(self) -> int:
        return sum(size for *_, size in self.fields.values())


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



def input_terms(inp: InputSpec, layout: SampleLayout, on_gpu: bool, slots: int) -> list[Term]:
    sample = layout.sample_bytes
    chunk_n = layout.chunk_samples
    chunk_bytes = sample * chunk_n
    batch_bytes = sample * inp.batch_size
    chunk_detail = f"{chunk_n:,} samples x {sample:,} B"
    batch_detail = f"{inp.batch_size:,} samples x {sample:,} B"
    name = inp.name
    p = inp.key_prefix
    terms = []
    inline = inp.worker_kind == "inline"  # no queues: one chunk at a time, in the consumer
    if inline:
        terms.append(Term(name, "chunk being re-chunked", HOST, 1, "chunk", chunk_bytes,
                          p + "workers.kind", chunk_detail))
        terms.append(Term(name, "source", HOST, 1, "shared copy", layout.source_bytes,
                          p + "source", format_size(layout.source_bytes), per_device=False))
    else:
        terms.extend(_worker_terms(inp, layout, chunk_bytes, chunk_detail, slots))
    scratch, scratch_detail = layout.scratch
    if scratch:  # each worker decodes one sample at a time
        terms.append(Term(name, "decoding in workers", HOST, inp.worker_count, "workers", scratch,
                          p + "workers.count", scratch_detail))
    if inp.epoch.ordered and not inline:  # chunks that finished early wait for older ones
        terms.append(Term(name, "reorder buffer", HOST, 2 * inp.worker_count - 1, "chunks",
                          chunk_bytes, p + "epoch.ordered", chunk_detail))
    terms.append(Term(name, "batcher", HOST, 1, "batch", batch_bytes, p + "batch_size",
                      batch_detail))
    if not inline:  # inline has no batch queue: the consumer takes each batch as it is made
        terms.append(_batch_queue_term(inp, batch_bytes, batch_detail))
    if layout.mapped[0]:
        terms.append(Term(name, "memory-mapped files", PAGE_CACHE, 1, "set", layout.mapped[0],
                          p + "source", layout.mapped[1] + "; shared by all processes, not "
                          "counted in host memory", per_device=False))
    # After device.normalize the device's batches hold float32 (4 B an element) in its fields.
    normalized = set(inp.normalize.fields) if inp.normalize is not None else set()
    floats = sum(math.prod(shape) * 4 for n, (shape, *_) in layout.fields.items() if n in normalized)
    converted = sum(size for n, (*_, size) in layout.fields.items() if n in normalized)
    device_sample = sample - converted + floats
    names = ", ".join(sorted(normalized))
    as_float = f"{names} in float32 after device.normalize"
    device_detail = f"{inp.batch_size:,} samples x {device_sample:,} B" + \
        (f" ({as_float})" if normalized else "")
    if on_gpu and inline:  # copied when taken, on the consumer's stream: no staging, no prefetch
        terms.append(Term(name, "batch in the consumer's hands", GPU, 1, "batch",
                          device_sample * inp.batch_size, p + "batch_size", device_detail))
        if normalized:
            terms.append(Term(name, "device copy before normalize", GPU, 1, "batch",
                              converted * inp.batch_size, p + "device.normalize",
                              f"{inp.batch_size:,} samples x {converted:,} B ({names} as "
                              "copied, before device.normalize)"))
    elif on_gpu:
        terms.append(Term(name, "batch in the consumer's hands", HOST, 1, "batch", batch_bytes,
                          p + "batch_size", batch_detail))
        terms.append(Term(name, "pinned staging", PINNED, inp.device_prefetch + 1, "batches",
                          batch_bytes, p + "device.prefetch", batch_detail))
        terms.append(Term(name, "device prefetch", GPU, inp.device_prefetch + 1, "batches",
                          device_sample * inp.batch_size, p + "device.prefetch", device_detail))
        if normalized:  # the uint8 copy a conversion reads, on the copy's stream
            terms.append(Term(name, "device copy before normalize", GPU, 1, "batch",
                              converted * inp.batch_size, p + "device.normalize",
                              f"{inp.batch_size:,} samples x {converted:,} B ({names} as "
                              "copied, before device.normalize)"))
    else:
        terms.append(Term(name, "batch in the consumer's hands", HOST, 1, "batch",
                          device_sample * inp.batch_size, p + "batch_size", device_detail))
        if normalized and inline:  # while the next batch converts: its uint8 input and float32
            terms.append(Term(name, "device stage normalize", HOST, 1, "batch",
                              (sample + floats) * inp.batch_size, p + "device.normalize",
                              f"{inp.batch_size:,} samples x ({sample:,} B in + {floats:,} B "
                              f"out: {names} in float32)"))
        elif normalized:  # a thread converts ahead: device.prefetch float batches wait, one forms
            terms.append(Term(name, "device prefetch", HOST, inp.device_prefetch + 1, "batches",
                              device_sample * inp.batch_size, p + "device.prefetch",
                              device_detail))
            terms.append(Term(name, "device stage normalize", HOST, 1, "batch",
                              sample * inp.batch_size, p + "device.normalize",
                              f"{inp.batch_size:,} samples x {sample:,} B (the uint8 batch "
                              f"being converted)"))
    return terms


def _batch_queue_term(inp: InputSpec, batch_bytes: int, batch_detail: str) -> Term:
    """``queue.batch_capacity`` batches, or its byte limit (at least one batch)."""
    if inp.batch_capacity_bytes is not None:
        return Term(inp.name, "batch queue", HOST, 1, BYTE_LIMIT,
                    max(inp.batch_capacity_bytes, batch_bytes), inp.key_prefix + "queue.batch_capacity",
                    _limit_detail(inp.key_prefix + "queue.batch_capacity",
                                  inp.batch_capacity_bytes, "batch"))
    return Term(inp.name, "batch queue", HOST, inp.batch_capacity, "batches", batch_bytes,
                inp.key_prefix + "queue.batch_capacity", batch_detail)


def _worker_terms(inp: InputSpec, layout: SampleLayout, chunk_bytes: int, chunk_detail: str,
                  slots: int) -> list[Term]:
    """The chunk queue and what thread or process workers hold."""
    name, p = inp.name, inp.key_prefix
    if inp.worker_kind == "ray":
        return _ray_terms(inp, layout, chunk_bytes, chunk_detail)
    terms = []
    if inp.chunk_capacity_bytes is not None:
        queue = max(inp.chunk_capacity_bytes, chunk_bytes)  # one chunk always fits
        terms.append(Term(name, "chunk queue", HOST if inp.worker_kind == "thread" else SHARED,
                          1, BYTE_LIMIT, queue, p + "queue.capacity",
                          _limit_detail(p + "queue.capacity", inp.chunk_capacity_bytes, "chunk")))
    if inp.worker_kind == "thread":
        if inp.chunk_capacity_bytes is None:
            terms.append(Term(name, "chunk queue", HOST, inp.chunk_capacity, "chunks", chunk_bytes,
                              p + "queue.capacity", chunk_detail))
        terms.append(Term(name, "chunks held by workers", HOST, inp.worker_count, "chunks",
                          chunk_bytes, p + "workers.count", chunk_detail))
        terms.append(Term(name, "source", HOST, 1, "shared copy", layout.source_bytes,
                          p + "source", format_size(layout.source_bytes), per_device=False))
    else:
        slot = min(inp.slot_bytes, math.ceil(chunk_bytes / 64) * 64 + 64 * len(layout.fields))
        if inp.chunk_capacity_bytes is None:
            terms.append(Term(name, "shared-memory slots", SHARED, slots, "slots", slot,
                              p + "queue.capacity", f"{format_size(slot)} used of "
                              f"{format_size(inp.slot_bytes)} reserved"))
        # (A chunk is written once: into the slot by the source, or copied there from a
        # worker's own arrays, which it then holds until it reads the next one.)
        if not (layout.in_place and chunk_bytes + 64 * (len(layout.fields) + 1) <= inp.slot_bytes):
            terms.append(Term(name, "chunks in worker processes", HOST, inp.worker_count,
                              "chunks", chunk_bytes, p + "workers.count", chunk_detail))
        terms.append(Term(name, "source copies", HOST, inp.worker_count, "copies",
                          layout.source_bytes, p + "workers.count",
                          f"{format_size(layout.source_bytes)} (one per process)"))
        terms.append(Term(name, "worker processes", HOST, inp.worker_count, "processes",
                          WORKER_PROCESS_BYTES, p + "workers.count",
                          f"{format_size(WORKER_PROCESS_BYTES)} each"))
    return terms


def _limit_detail(key: str, limit: int, unit: str) -> str:
    """How a byte limit was set: ``queue.capacity=64GiB, at least one chunk``."""
    return f"{key}={size_setting(limit)}, at least one {unit}"


def held_views(inp: InputSpec) -> tuple[int, tuple[int, ...]]:
    """What the chunk queue, the batcher and the batch queue can hold at once as views of
    chunks a worker lent (a Ray object): a count (the batcher's current and leftover chunks,
    a batch with the consumer or the copy, and the queues sized in items), and the byte
    limits of the queues sized in bytes. The plan and the Ray pool's default cap read it."""
    chunks = 2 + 2
    limits = []
    for count, size in ((inp.chunk_capacity, inp.chunk_capacity_bytes),
                        (inp.batch_capacity, inp.batch_capacity_bytes)):
        if size is None:
            chunks += count
        else:
            limits.append(size)
    return chunks, tuple(limits)


def _ray_terms(inp: InputSpec, layout: SampleLayout, chunk_bytes: int,
               chunk_detail: str) -> list[Term]:
    """Ray actors: the object-store bytes this input may pin on the trainer's node (results in
    flight, and received chunks in the chunk queue and batcher, which stay views of their
    objects), and the actors' own memory (on their nodes; here, with a local Ray)."""
    name, p, actors = inp.name, inp.key_prefix, inp.worker_count
    held, limits = held_views(inp)
    chunks = actors * inp.ray.inflight + held
    queued_bytes = sum(max(size, chunk_bytes) for size in limits)  # one chunk always fits
    natural = chunks * chunk_bytes + queued_bytes
    if inp.ray.inflight_bytes is not None and inp.ray.inflight_bytes < natural:
        store = Term(name, "Ray object store", SHARED, 1, BYTE_LIMIT,
                     max(inp.ray.inflight_bytes, chunk_bytes), p + "workers.ray.inflight_bytes",
                     _limit_detail(p + "workers.ray.inflight_bytes", inp.ray.inflight_bytes,
                                   "chunk"))
    elif queued_bytes:
        store = Term(name, "Ray object store", SHARED, 1, BYTE_LIMIT, natural,
                     p + "workers.ray.inflight", f"{chunks} chunks of {chunk_detail} + the "
                     f"queues' {format_size(queued_bytes)}")
    else:
        store = Term(name, "Ray object store", SHARED, chunks, "chunks", chunk_bytes,
                     p + "workers.ray.inflight", f"{chunk_detail} ({actors} actors x "
                     f"{inp.ray.inflight} in flight, the rest in the queues and batcher)")
    return [
        store,
        Term(name, "chunks in Ray actors", HOST, actors, "chunks", chunk_bytes,
             p + "workers.count", chunk_detail + " (on the actors' nodes)"),
        Term(name, "source copies", HOST, actors, "copies", layout.source_bytes,
             p + "workers.count", f"{format_size(layout.source_bytes)} (one per actor)"),
        Term(name, "Ray actor processes", HOST, actors, "processes", RAY_ACTOR_BYTES,
             p + "workers.count", f"{format_size(RAY_ACTOR_BYTES)} each"),
    ]

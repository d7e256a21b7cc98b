"""The lines of a memory plan: what each stage of one input may hold.

Pure arithmetic on a checked InputSpec and the sizes of one sample (SampleLayout). The
worker kind says what its workers hold (its ``plan``, inputkit.kinds.plan: the chunk queue
or what holds chunks in its place, threads, shared-memory slots, Ray's object store, inline's
one chunk); this module adds what every kind shares: the batcher, the batch queue, the
device stage, and memory-mapped files (page cache, shown but never counted). The planner
(inputkit.planning.memory) adds them up against the budget. The vocabulary (Term, SampleLayout,
MemoryPlan) lives in inputkit.planning.plan_lines and is re-exported here.
"""

from __future__ import annotations

import math

from inputkit import kinds
from inputkit.config.spec import InputSpec
from inputkit.errors import ConfigError
from inputkit.kinds.plan import KindPlan
from inputkit.kinds.process import HELPER_PROCESSES_BYTES, WORKER_PROCESS_BYTES  # noqa: F401
from inputkit.kinds.ray import LOCAL_RAY_BYTES, RAY_ACTOR_BYTES  # noqa: F401
from inputkit.planning.geometry import held_views  # noqa: F401 - its home before inputkit.planning.geometry
from inputkit.planning.plan_lines import (  # noqa: F401 - the plan's vocabulary, re-exported
    BYTE_LIMIT,
    DISK,
    GPU,
    HOST,
    PAGE_CACHE,
    PINNED,
    SHARED,
    MemoryPlan,
    SampleLayout,
    Term,
    limit_detail,
)


def kind_plan(inp: InputSpec) -> KindPlan:
    """The memory terms of ``inp``'s worker kind. A kind that declares none is planned as
    thread workers when its workers run in this process; one whose workers run elsewhere
    cannot be sized without them, and is refused."""
    kind = kinds.get(inp.worker_kind, inp.key_prefix + "workers.kind")
    if kind.plan is not None:
        return kind.plan  # type: ignore[no-any-return]
    if kind.source_here:
        from inputkit.kinds.thread import PLAN

        return PLAN
    raise ConfigError(inp.key_prefix + "workers.kind", f"worker kind {kind.name!r} declares no "
                      "memory terms and runs its workers outside this process, so the planner "
                      "cannot size it; give its Kind a plan (inputkit.kinds.plan.KindPlan), or "
                      "set memory.probe=false and memory.allow_over_budget=true to run unplanned")


def run_terms(inputs: tuple[InputSpec, ...] | list[InputSpec]) -> list[Term]:
    """What each worker kind pays once per training process, for the inputs that use it (the
    kinds in the order the inputs first name them)."""
    by_kind: dict[str, list[InputSpec]] = {}
    for inp in inputs:
        by_kind.setdefault(inp.worker_kind, []).append(inp)
    terms: list[Term] = []
    for group in by_kind.values():
        terms.extend(kind_plan(group[0]).run_terms(group))
    return terms


def input_terms(inp: InputSpec, layout: SampleLayout, on_gpu: bool) -> list[Term]:
    """The lines of one input on one device: its kind's (inputkit.kinds.plan), then the
    decoding scratch, the batcher, the batch queue, mapped files and the device stage."""
    sample = layout.sample_bytes
    chunk_n = layout.chunk_samples
    chunk_bytes = sample * chunk_n
    batch_bytes = sample * inp.batch_size
    chunk_detail = f"{chunk_n:,} samples x {sample:,} B"
    batch_detail = f"{inp.batch_size:,} samples x {sample:,} B"
    name = inp.name
    p = inp.key_prefix
    terms = []
    plan = kind_plan(inp)
    inline = plan.in_consumer  # no queues: one chunk at a time, in the consumer
    terms.extend(plan.worker_terms(inp, layout, on_gpu))
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
                    limit_detail(inp.key_prefix + "queue.batch_capacity",
                                 inp.batch_capacity_bytes, "batch"))
    return Term(inp.name, "batch queue", HOST, inp.batch_capacity, "batches", batch_bytes,
                inp.key_prefix + "queue.batch_capacity", batch_detail)

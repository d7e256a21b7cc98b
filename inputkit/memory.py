"""The memory planner: what every stage may hold at its worst, before anything starts.

The planner multiplies the real sizes out (bytes per sample x chunk x capacity
x workers x devices), compares the total with ``memory.budget``, and when it
does not fit names the dominating term and the largest setting that would.
It reads the config and, unless the source declares its ``fields``, one probe
chunk from a private copy of the source. It never imports torch.
"""

from __future__ import annotations

import dataclasses
import functools
import math
import tracemalloc
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from inputkit.config.normalize import check_fields
from inputkit.config.sizes import format_size, parse_size
from inputkit.config.spec import InputSpec, RunSpec
from inputkit.errors import ConfigError, InputkitError, SourceError, SourceExhausted
from inputkit.failures import call_with_policy
from inputkit.sources.protocol import indexed_length

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

    def formula(self) -> str:
        return f"{self.count:,} {self.unit} x {self.detail} = {format_size(self.bytes)}"


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
        return max((t for t in self.terms if t.memory != PAGE_CACHE),
                   key=lambda t: t.bytes * (self.device_count if t.per_device else 1))

    def stage_bytes(self, input_name: str, stage: str) -> int:
        """Planned bytes of one stage of one input on one device (0 when absent)."""
        return sum(t.bytes for t in self.terms if t.input == input_name and t.stage == stage)


class UnknownSampleSizes(ConfigError):
    """The source declares no fields and the probe is off: nothing to multiply."""


class MemoryBudgetError(InputkitError):
    """The plan does not fit ``memory.budget``; ``plan`` holds every term and the fixes."""

    def __init__(self, plan: MemoryPlan) -> None:
        self.plan = plan
        top = plan.dominating()
        super().__init__(
            f"memory.budget: the pipeline may hold {format_size(plan.host_bytes)} of host memory "
            f"but the budget is {format_size(plan.budget_bytes)} ({plan.budget_text}); the largest "
            f"term is input '{top.input}' {top.stage}: {top.formula()} per device. "
            + " ".join(plan.suggestions)
            + " (set memory.allow_over_budget=true to run anyway)")


# --- sizes of samples and sources ----------------------------------------------------------


def declared_layout(spec: InputSpec) -> SampleLayout | None:
    """Sizes declared in the source config: ``_fields_`` (any source; never passed to it), or
    the ``fields`` argument of a source that takes one (the synthetic source)."""
    where = "_fields_" if "_fields_" in spec.source else "fields"
    fields = spec.source.get(where)
    if not isinstance(fields, dict) or not fields:
        return None
    sizes: dict[str, tuple[tuple[int, ...], str, int]] = {}
    for name, declared in fields.items():
        if declared is None:  # a value the source drops (TorchDatasetSource: name: null)
            continue
        key = f"{spec.key_prefix}source.{where}.{name}"
        if not isinstance(declared, dict):
            raise ConfigError(key, f"expected {{shape: [...], dtype: ...}}, got {declared!r}")
        shape = declared.get("shape", ())
        shape = (shape,) if isinstance(shape, int) else tuple(int(d) for d in shape)
        try:
            dtype = np.dtype(declared.get("dtype", "float32"))
        except TypeError as exc:
            raise ConfigError(f"{key}.dtype", f"{declared.get('dtype')!r} is not a numpy dtype") \
                from exc
        sizes[str(name)] = (shape, dtype.str, int(np.prod(shape, dtype=np.int64)) * dtype.itemsize)
    id_field = spec.source.get("id_field")
    if id_field:
        sizes[str(id_field)] = ((), np.dtype(np.int64).str, 8)
    chunk = spec.source.get("chunk_size_max") or spec.source.get("chunk_size") or spec.batch_size
    length = spec.source.get("length")
    if isinstance(length, int) and length >= 0:  # finite: read by index range (epoch.chunk_size)
        chunk = min(int(spec.epoch.chunk_size or spec.batch_size), length)
    sample_bytes = sum(size for *_, size in sizes.values())
    # The synthetic source keeps one random pool per field, as large as its biggest chunk.
    return SampleLayout(fields=sizes, chunk_samples=int(chunk), source="declared",
                        source_bytes=sample_bytes * max(int(chunk), 1))


# What to do when sizes are unknown, for every kind of source (function, class, object):
# _fields_ is read by the planner and never passed to the source.
DECLARE_SIZES = ("declare them in the config with source._fields_={NAME: {shape: [...], dtype: "
                 "...}, ...} (read by the memory planner, not passed to the source)")

_PROBE_TRIES = 8  # with failures.on_error=skip, chunks the probe may try before it gives up


def _probe_fetch(source: Any, spec: InputSpec) -> Any:
    """The probe's one chunk, read the way the pipeline will read it, under the input's policy:
    retry retries, and skip moves on to the next chunk (a few times)."""
    length = indexed_length(source.obj)
    if length == 0:
        raise SourceExhausted
    if length is not None:  # the first chunks the pipeline will read
        size = spec.epoch.chunk_size or spec.batch_size
        calls = [functools.partial(source.obj.read, np.arange(start, min(start + size, length)))
                 for start in range(0, min(length, _PROBE_TRIES * size), size)]
    else:
        calls = [functools.partial(source.fetch, 0, spec.batch_size)] * _PROBE_TRIES
    policy = spec.failures
    skip = policy.on_error == "skip"
    if skip:
        policy = dataclasses.replace(policy, on_error="raise")
    where = f"the memory probe of {source.name}"
    for i, call in enumerate(calls):
        try:
            return call_with_policy(call, policy, where)
        except Exception:
            if not skip or i == len(calls) - 1:
                raise
    raise SourceExhausted  # unreachable: calls is never empty


def probed_layout(spec: InputSpec, keep: dict[str, Any] | None = None) -> SampleLayout:
    """Sizes from one fetch of a private copy of the source (the pipeline's copy is untouched).

    With ``keep``, the copy is not closed but left in ``keep[spec.name]`` for the caller (the
    Runner reuses it instead of building the source again)."""
    from inputkit.sources.loader import build_source, import_target

    name = spec.source.get("_target_", "?")
    chain = None
    if spec.processors:  # built first: a bad processor config is a ConfigError, not a probe error
        from inputkit.processors import ProcessorChain

        chain = ProcessorChain.from_config(list(spec.processors), key=f"{spec.key_prefix}processors",
                                           seed=spec.epoch.seed)
    # Imported before memory is traced: a module's import (torch, say) is not the source's data.
    import_target(spec.source["_target_"], key=f"{spec.key_prefix}source._target_")
    unclosed: list[Any] = []  # the copy, closed here unless it is handed to the caller
    try:
        tracemalloc.start()
        try:
            source = build_source(spec.source, key=f"{spec.key_prefix}source")
            unclosed.append(source)
            try:
                setup = getattr(source.obj, "setup", None)
                if callable(setup):  # as the only worker of a private copy
                    setup(0, 1)
                raw = _probe_fetch(source, spec)
                if chain is not None:  # the sizes that flow downstream are the processed ones
                    from inputkit.chunk import ChunkSchema

                    raw = chain.apply(ChunkSchema(name).check(raw, 0).fields, 0)
            except (SourceExhausted, StopIteration) as exc:
                raise SourceError(name, "the memory planner's probe found the source exhausted at its "
                                  f"first fetch, so sizes are unknown; {DECLARE_SIZES}") from exc
            except SourceError as exc:  # already names the source (and field): say where it was found
                if hasattr(exc, "add_note"):
                    exc.add_note("[inputkit] found by the memory planner's probe, which reads one chunk "
                                 "at start to learn sample sizes (memory.probe=false skips it)")
                raise
            except Exception as exc:
                error = SourceError(name, f"the memory planner's probe fetch failed: "
                                    f"{type(exc).__name__}: {exc}; fix the source, or {DECLARE_SIZES} "
                                    "to skip the probe")
                if hasattr(error, "add_note"):
                    import traceback

                    error.add_note("[inputkit] the probe's traceback:\n" + "".join(
                        traceback.format_exception(type(exc), exc, exc.__traceback__)).rstrip())
                raise error from exc
            _, peak = tracemalloc.get_traced_memory()
        finally:
            tracemalloc.stop()
        from inputkit.chunk import ChunkSchema

        chunk = ChunkSchema(name).check(raw, 0)
        if chunk.n == 0:
            raise SourceError(name, "the memory planner's probe fetch returned no samples, so sizes "
                              f"are unknown; {DECLARE_SIZES}")
        sizes = {field_name: (arr.shape[1:], arr.dtype.str, int(arr[:1].nbytes))
                 for field_name, arr in chunk.fields.items()}
        scratch_of = getattr(source.obj, "read_scratch", None)
        scratch = scratch_of() if callable(scratch_of) else (0, "")
        in_place = callable(getattr(source.obj, "read_into", None)) and not spec.processors \
            and indexed_length(source.obj) is not None
        mapped_of = getattr(source.obj, "mapped_bytes", None)
        mapped = mapped_of() if callable(mapped_of) else (0, "")
        if keep is not None:
            keep[spec.name] = unclosed.pop()
        return SampleLayout(fields=sizes, chunk_samples=max(chunk.n, spec.batch_size), source="probe",
                            source_bytes=max(0, peak - chunk.nbytes), scratch=scratch,
                            in_place=in_place, mapped=mapped)
    finally:  # a probe that fails closes its copy too, rather than leave it to a finalizer
        for copy in unclosed:
            copy.close()


# --- the plan ------------------------------------------------------------------------------


def guess_devices(requested: tuple[str, ...]) -> tuple[str, ...]:
    """``auto`` without importing torch: the GPUs ``nvidia-smi -L`` lists, else the CPU."""
    if requested != ("auto",):
        return requested
    import shutil
    import subprocess

    smi = shutil.which("nvidia-smi")
    if smi is None:
        return ("cpu",)
    try:
        listing = subprocess.run([smi, "-L"], capture_output=True, text=True, timeout=10).stdout
    except (OSError, subprocess.SubprocessError):
        return ("cpu",)
    gpus = [line for line in listing.splitlines() if line.startswith("GPU ")]
    return tuple(f"cuda:{i}" for i in range(len(gpus))) or ("cpu",)


def plan_memory(spec: RunSpec, devices: tuple[str, ...] | None = None,
                available: int | None = None, keep: dict[str, Any] | None = None) -> MemoryPlan:
    """Every term of every input on one device, the budget, and fixes if it does not fit.

    ``devices`` are the resolved devices (default: the config's, ``auto`` guessed without
    torch); ``available`` overrides the RAM a percentage budget is taken of (for tests);
    ``keep`` receives the sources the probe built, by input name (see probed_layout).
    """
    from inputkit.workers import slot_count

    budget, gpu_budget, probe = spec.memory_budget, spec.memory_gpu_budget, spec.probe
    budget_bytes = parse_budget(budget, "memory.budget", available)
    gpu_bytes = parse_size(gpu_budget, "memory.gpu_budget") if gpu_budget is not None else None
    devices = devices if devices is not None else guess_devices(spec.devices)
    on_gpu = any(d.startswith("cuda") for d in devices)
    layouts: dict[str, SampleLayout] = {}
    terms: list[Term] = []
    for inp in spec.inputs:
        # Processors may change sizes (a crop): then only a probe through them knows.
        layout = declared_layout(inp) if not inp.processors else None
        if layout is None:
            if not probe:
                raise UnknownSampleSizes(f"{inp.key_prefix}source._fields_", "unknown sample sizes: "
                                         "this source declares none and the probe is off "
                                         f"(memory.probe=false); {DECLARE_SIZES}, or allow the probe")
            layout = probed_layout(inp, keep)
        # device.normalize / channels_last against the fields the batches will carry: at start,
        # before any worker runs.
        check_fields(inp.normalize, inp.channels_last,
                     {n: (shape, dtype) for n, (shape, dtype, _) in layout.fields.items()},
                     inp.key_prefix)
        layouts[inp.name] = layout
        terms.extend(_input_terms(inp, layout, on_gpu, slot_count(inp, "cuda" if on_gpu else "cpu")))
    ray_inputs = [inp for inp in spec.inputs if inp.worker_kind == "ray" and inp.ray.address is None]
    if ray_inputs:  # one private local Ray per training process, whatever the inputs
        first = ray_inputs[0]
        terms.append(Term(first.name, "local Ray", HOST, 1, "set", LOCAL_RAY_BYTES,
                          first.key_prefix + "workers.ray.address",
                          "GCS, raylet and agents (address=null starts them here)",
                          per_device=False))
    process_inputs = [inp for inp in spec.inputs if inp.worker_kind == "process"]
    if process_inputs:
        first = process_inputs[0]
        terms.append(Term(first.name, "multiprocessing helpers", HOST, 1, "set",
                          HELPER_PROCESSES_BYTES, first.key_prefix + "workers.kind",
                          "resource tracker + forkserver", per_device=False))
    plan = MemoryPlan(devices=devices, layouts=layouts, terms=tuple(terms),
                      budget_bytes=budget_bytes, budget_text=str(budget), gpu_budget_bytes=gpu_bytes)
    if plan.over_budget:
        plan = MemoryPlan(**{**plan.__dict__, "suggestions": tuple(_suggestions(plan))})
    return plan


def _input_terms(inp: InputSpec, layout: SampleLayout, on_gpu: bool, slots: int) -> list[Term]:
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
        if normalized:  # while the next batch converts: its uint8 input and float32 output
            terms.append(Term(name, "device stage normalize", HOST, 1, "batch",
                              (sample + floats) * inp.batch_size, p + "device.normalize",
                              f"{inp.batch_size:,} samples x ({sample:,} B in + {floats:,} B "
                              f"out: {names} in float32)"))
    return terms


def _batch_queue_term(inp: InputSpec, batch_bytes: int, batch_detail: str) -> Term:
    """``queue.batch_capacity`` batches, or its byte limit (at least one batch)."""
    if inp.batch_capacity_bytes is not None:
        return Term(inp.name, "batch queue", HOST, 1, "byte limit",
                    max(inp.batch_capacity_bytes, batch_bytes), inp.key_prefix + "queue.batch_capacity",
                    f"{format_size(inp.batch_capacity_bytes)} (at least one batch)")
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
                          1, "byte limit", queue, p + "queue.capacity",
                          f"{format_size(inp.chunk_capacity_bytes)} (at least one chunk)"))
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


def _ray_terms(inp: InputSpec, layout: SampleLayout, chunk_bytes: int,
               chunk_detail: str) -> list[Term]:
    """Ray actors: the object-store bytes this input may pin on the trainer's node (results in
    flight, and received chunks in the chunk queue and batcher, which stay views of their
    objects), and the actors' own memory (on their nodes; here, with a local Ray)."""
    name, p, actors = inp.name, inp.key_prefix, inp.worker_count
    chunks = actors * inp.ray.inflight + 2 + 2
    queued_bytes = 0
    for count, size in ((inp.chunk_capacity, inp.chunk_capacity_bytes),
                        (inp.batch_capacity, inp.batch_capacity_bytes)):
        if size is None:
            chunks += count
        else:
            queued_bytes += max(size, chunk_bytes)
    natural = chunks * chunk_bytes + queued_bytes
    if inp.ray.inflight_bytes is not None and inp.ray.inflight_bytes < natural:
        store = Term(name, "Ray object store", SHARED, 1, "byte limit",
                     max(inp.ray.inflight_bytes, chunk_bytes), p + "workers.ray.inflight_bytes",
                     f"{format_size(inp.ray.inflight_bytes)} (at least one chunk)")
    elif queued_bytes:
        store = Term(name, "Ray object store", SHARED, 1, "byte limit", natural,
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


def _suggestions(plan: MemoryPlan) -> list[str]:
    """Concrete settings that fit: the largest count of the dominating term, or a smaller chunk."""
    top = plan.dominating()
    if plan.host_bytes <= plan.budget_bytes:
        return [f"Lower device.prefetch or batch_size to fit memory.gpu_budget "
                f"({format_size(plan.gpu_budget_bytes or 0)} per device)."]
    n = plan.device_count if top.per_device else 1
    rest = plan.host_bytes - top.bytes * n
    room = plan.budget_bytes - rest
    largest = room // (top.unit_bytes * n) if top.unit_bytes else 0
    tips = []
    if top.unit == "byte limit":
        fits = max(0, room // n)
        tips.append(f"Set {top.key}={format_size(fits).replace(' ', '')} or less.")
    elif largest >= 1 and top.key.endswith(("capacity", "workers.count", "prefetch")):
        tips.append(f"Set {top.key}={largest} or less (it holds {format_size(largest * top.unit_bytes * n)}"
                    f" in all).")
    layout = plan.layouts.get(top.input)
    if layout is not None and top.unit in ("chunks", "slots", "byte limit") and top.count >= 1:
        per_chunk = room // (max(top.count, 1) * n)
        samples = per_chunk // max(layout.sample_bytes, 1)
        if samples >= 1:
            tips.append(f"Or keep {top.key}={top.count} with chunks of at most {samples:,} "
                        f"samples (source.chunk_size).")
    if not tips:
        tips.append("Use fewer devices or a smaller batch_size, or raise memory.budget.")
    return tips


def parse_budget(value: Any, key: str, available: int | None = None) -> int:
    """``16GiB`` or ``60%`` (of the RAM available now, read with psutil) -> bytes."""
    text = str(value).strip()
    if text.endswith("%"):
        try:
            share = float(text[:-1])
        except ValueError:
            raise ConfigError(key, f"cannot read {value!r} as a percentage; write e.g. 60%") \
                from None
        if not 0 < share <= 100:
            raise ConfigError(key, f"must be a percentage in (0, 100], got {value!r}")
        if available is None:
            import psutil

            available = int(psutil.virtual_memory().available)
        return int(available * share / 100)
    return parse_size(value, key)

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
import tracemalloc
from typing import Any

import numpy as np

from inputkit import startup
from inputkit.config.normalize import check_fields
from inputkit.config.sizes import format_size, parse_budget, parse_size  # noqa: F401
from inputkit.config.spec import InputSpec, RunSpec
from inputkit.errors import ConfigError, InputkitError, SourceError, SourceExhausted
from inputkit.pipeline.failures import call_with_policy
from inputkit.planning.footprint import object_bytes
from inputkit.planning.memory_terms import (  # noqa: F401 - the plan's vocabulary, re-exported
    DISK,
    GPU,
    HELPER_PROCESSES_BYTES,
    HOST,
    LOCAL_RAY_BYTES,
    PAGE_CACHE,
    PINNED,
    RAY_ACTOR_BYTES,
    SHARED,
    WORKER_PROCESS_BYTES,
    MemoryPlan,
    SampleLayout,
    Term,
    input_terms,
    run_terms,
)
from inputkit.planning.plan_fixes import suggest_fixes
from inputkit.sources.protocol import indexed_length


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
    chunk_key = "source.chunk_size_max" if spec.source.get("chunk_size_max") else \
        "source.chunk_size" if spec.source.get("chunk_size") else ""
    length = spec.source.get("length")
    if isinstance(length, int) and length >= 0:  # finite: read by index range (epoch.chunk_size)
        chunk = min(int(spec.epoch.chunk_size or spec.batch_size), length)
        chunk_key = "epoch.chunk_size"
    sample_bytes = sum(size for *_, size in sizes.values())
    # The synthetic source keeps one random pool per field, as large as its biggest chunk.
    return SampleLayout(fields=sizes, chunk_samples=int(chunk), source="declared",
                        source_bytes=sample_bytes * max(int(chunk), 1), chunk_key=chunk_key)


# What to do when sizes are unknown, for every kind of source (function, class, object):
# _fields_ is read by the planner and never passed to the source.
DECLARE_SIZES = ("declare them in the config with source._fields_={NAME: {shape: [...], dtype: "
                 "...}, ...} (read by the memory planner, not passed to the source)")

_PROBE_TRIES = 8  # with failures.on_error=skip, chunks the probe may try before it gives up


def _probe_fetch(source: Any, spec: InputSpec) -> Any:
    """The probe's one chunk, read the way the pipeline will read it, under the input's policy:
    retry retries; skip skips a bad sample alone (an indexable source's chunk is read again one
    sample at a time, as the workers do) and moves on to the next chunk (a few times)."""
    length = indexed_length(source.obj)
    if length == 0:
        raise SourceExhausted
    where = f"the memory probe of {source.name}"
    skip = spec.failures.on_error == "skip"
    if length is not None:  # the first chunks the pipeline will read
        size = spec.epoch.chunk_size or spec.batch_size
        ranges = [np.arange(start, min(start + size, length))
                  for start in range(0, min(length, _PROBE_TRIES * size), size)]
        if skip:
            return _probe_skipping(source, ranges, spec.failures, where)
        calls = [functools.partial(source.obj.read, indices) for indices in ranges]
    else:
        calls = [functools.partial(source.fetch, 0, spec.batch_size)] * _PROBE_TRIES
    policy = spec.failures
    if skip:
        policy = dataclasses.replace(policy, on_error="raise")
    for i, call in enumerate(calls):
        try:
            return call_with_policy(call, policy, where)
        except Exception:
            if not skip or i == len(calls) - 1:
                raise
    raise SourceExhausted  # unreachable: calls is never empty


def _probe_skipping(source: Any, ranges: list[np.ndarray], policy: Any, where: str) -> Any:
    """The good samples of the first chunk that has any, under ``failures.on_error=skip``: as
    in the workers, a chunk whose read fails is read again one index at a time and only its
    bad samples are left out. Every sample of every chunk tried bad: a SourceError naming the
    first few with their errors."""
    from inputkit.pipeline.chunk import ChunkSchema, check_read
    from inputkit.workers.samples import read_skipping

    schema = ChunkSchema(source.name)

    def check(raw: Any, n: int) -> Any:
        return check_read(schema.check(raw, 0), n, source.name)

    bad: list[tuple[int, str]] = []
    for indices in ranges:
        got = read_skipping(source.obj.read, indices, check, lambda chunk: chunk, policy, where,
                            stop=None)
        if got.chunk is not None:
            return got.chunk.fields
        bad.extend(got.bad)
    shown = "; ".join(f"sample {index}: {error}" for index, error in bad[:3])
    raise SourceError(source.name, f"the memory planner's probe read samples 0-{int(ranges[-1][-1])} and "
                      f"every one of those {len(bad):,} failed (failures.on_error=skip skips them "
                      f"one by one): {shown}; fix the source, or {DECLARE_SIZES} to skip the probe")


def probed_layout(spec: InputSpec, keep: dict[str, Any] | None = None) -> SampleLayout:
    """Sizes from one fetch of a private copy of the source (the pipeline's copy is untouched).

    With ``keep``, the copy is not closed but left in ``keep[spec.name]`` for the caller (the
    Runner reuses it instead of building the source again); a copy already there (auto's
    probe's) is the one read."""
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
    # A copy already in ``keep`` (workers.kind=auto's probe built it) is read, not built again.
    source = keep.pop(spec.name, None) if keep is not None else None
    try:
        # Built untraced (tracing makes indexing a large folder five times slower): what the
        # built object holds (its index) is measured by walking it, and the read is traced.
        if source is None:
            with startup.step("index", f"building {spec.key_prefix}source ({name})"):
                source = build_source(spec.source, key=f"{spec.key_prefix}source")
        unclosed.append(source)
        own_bytes = object_bytes(source.obj)
        tracemalloc.start()
        try:
            try:
                source.setup(0, 1)  # as the only worker of a private copy
                raw = _probe_fetch(source, spec)
                if chain is not None:  # the sizes that flow downstream are the processed ones
                    from inputkit.pipeline.chunk import ChunkSchema

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
        from inputkit.pipeline.chunk import ChunkSchema

        chunk = ChunkSchema(name).check(raw, 0)
        if chunk.n == 0:
            raise SourceError(name, "the memory planner's probe fetch returned no samples, so sizes "
                              f"are unknown; {DECLARE_SIZES}")
        sizes = {field_name: (arr.shape[1:], arr.dtype.str, int(arr[:1].nbytes))
                 for field_name, arr in chunk.fields.items()}
        caps = source.caps
        scratch = source.obj.read_scratch() if caps.read_scratch else (0, "")
        in_place = caps.read_into and not spec.processors and indexed_length(source.obj) is not None
        mapped = source.obj.mapped_bytes() if caps.mapped_bytes else (0, "")
        if keep is not None:
            keep[spec.name] = unclosed.pop()
        chunk_key = "epoch.chunk_size" if indexed_length(source.obj) is not None else \
            "source.chunk_size" if spec.source.get("chunk_size") else ""
        from inputkit.planning.storage_plan import remote_data

        return SampleLayout(fields=sizes, chunk_samples=max(chunk.n, spec.batch_size), source="probe",
                            source_bytes=own_bytes + max(0, peak - chunk.nbytes), scratch=scratch,
                            in_place=in_place, mapped=mapped, chunk_key=chunk_key,
                            remote=remote_data(source))
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
                available: int | None = None, keep: dict[str, Any] | None = None,
                known: dict[str, SampleLayout] | None = None) -> MemoryPlan:
    """Every term of every input on one device, the budget, and fixes if it does not fit.

    ``devices`` are the resolved devices (default: the config's, ``auto`` guessed without
    torch); ``available`` overrides the RAM a percentage budget is taken of (for tests);
    ``keep`` receives the sources the probe built, by input name (see probed_layout);
    ``known``: sizes an earlier plan of the same inputs found, by input name (not probed
    again: ``inputkit bench`` plans before the runner does).
    """
    from inputkit import storage

    storage.configure(spec.storage, spec.cache)  # before the probe builds a source
    budget, gpu_budget, probe = spec.memory_budget, spec.memory_gpu_budget, spec.probe
    budget_bytes = parse_budget(budget, "memory.budget", available)
    gpu_bytes = parse_size(gpu_budget, "memory.gpu_budget") if gpu_budget is not None else None
    devices = devices if devices is not None else guess_devices(spec.devices)
    layouts: dict[str, SampleLayout] = {}
    for inp in spec.inputs:
        # Processors may change sizes (a crop): then only a probe through them knows.
        layout = (known or {}).get(inp.name) or \
            (declared_layout(inp) if not inp.processors else None)
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
        if layout.remote is not None:  # a disk cache too small for the shards in use: refused
            from inputkit.planning.storage_plan import check_cache

            check_cache(inp, layout.remote, layout.chunk_samples, len(devices))

    def plan_of(run: RunSpec, sizes: dict[str, SampleLayout]) -> MemoryPlan:
        return MemoryPlan(devices=devices, layouts=sizes, terms=tuple(plan_terms(run, sizes, devices)),
                          budget_bytes=budget_bytes, budget_text=str(budget),
                          gpu_budget_bytes=gpu_bytes)

    def replan(run: RunSpec, sizes: dict[str, SampleLayout]) -> MemoryPlan:
        """The plan of a fix: declared sizes are read again from its config (a chunk size)."""
        return plan_of(run, {inp.name: (declared_layout(inp) or sizes[inp.name])
                             if sizes[inp.name].source == "declared" else sizes[inp.name]
                             for inp in run.inputs})

    plan = plan_of(spec, layouts)
    if plan.over_budget:
        plan = dataclasses.replace(plan, suggestions=tuple(suggest_fixes(plan, spec, replan)))
    return plan


def plan_terms(spec: RunSpec, layouts: dict[str, SampleLayout],
               devices: tuple[str, ...]) -> list[Term]:
    """Every line of the plan, from each input's sample sizes."""
    on_gpu = any(d.startswith("cuda") for d in devices)
    terms: list[Term] = []
    for inp in spec.inputs:
        layout = layouts[inp.name]
        terms.extend(input_terms(inp, layout, on_gpu))
        if layout.remote is not None:  # the disk cache and the download buffers
            from inputkit.planning.storage_plan import storage_terms

            terms.extend(storage_terms(inp, layout.remote, layout.chunk_samples,
                                       layout.sample_bytes, len(devices)))
    terms.extend(run_terms(spec.inputs))  # each kind's helpers, once per training process
    return terms


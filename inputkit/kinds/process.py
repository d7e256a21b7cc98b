"""Process workers: separate processes, chunks handed over in shared-memory slots."""

from __future__ import annotations

from collections.abc import Sequence
from typing import TYPE_CHECKING, Any

from inputkit.config.sizes import format_size
from inputkit.kinds import Kind, register
from inputkit.kinds.plan import chunk_queue_limit
from inputkit.planning.geometry import fits_in_slot, slot_count, slot_used_bytes
from inputkit.planning.plan_lines import HOST, SHARED, SampleLayout, Term

if TYPE_CHECKING:
    from inputkit.config.spec import InputSpec

# A worker process's own footprint before it holds any data (interpreter, numpy,
# inputkit's worker code), as proportional set size: forkserver children share
# most of their pages with the server.
WORKER_PROCESS_BYTES = 12 * 2**20
# multiprocessing's helper processes, started once per training process when any input
# uses process workers: the resource tracker (about 8 MB) and the forkserver (about 15 MB).
HELPER_PROCESSES_BYTES = 23 * 2**20


def make_pool(spec: Any, device: str, *, source: Any, processors: Any, **common: Any) -> Any:
    from inputkit.sources.loader import built_copy
    from inputkit.workers.processes import ProcessWorkerPool

    return ProcessWorkerPool(
        built=built_copy(source), source_config=spec.source,
        source_key=f"{spec.key_prefix}source",
        source_name=spec.source["_target_"], start_method=spec.start_method,
        slots=slot_count(spec, device), slot_bytes=spec.slot_bytes,
        processors=spec.processors, processors_seed=spec.epoch.seed,
        processors_key=f"{spec.key_prefix}processors", **common)


class ProcessPlan:
    """The memory terms of process workers: the shared-memory slots (or the chunk queue's byte
    limit), each worker's own chunk, source copy and process, and multiprocessing's helper
    processes once per training process."""

    in_consumer = False
    worker_processes = True

    def worker_terms(self, inp: InputSpec, layout: SampleLayout, on_gpu: bool) -> list[Term]:
        name, p, chunk, detail = inp.name, inp.key_prefix, layout.chunk_bytes, layout.chunk_detail
        fields = len(layout.fields)
        terms = []
        if inp.chunk_capacity_bytes is not None:
            terms.append(chunk_queue_limit(inp, layout, SHARED, inp.chunk_capacity_bytes))
        else:
            slot = slot_used_bytes(chunk, fields, inp.slot_bytes)
            terms.append(Term(name, "shared-memory slots", SHARED,
                              slot_count(inp, "cuda" if on_gpu else "cpu"), "slots", slot,
                              p + "queue.capacity", f"{format_size(slot)} used of "
                              f"{format_size(inp.slot_bytes)} reserved"))
        # (A chunk is written once: into the slot by the source, or copied there from a
        # worker's own arrays, which it then holds until it reads the next one.)
        if not (layout.in_place and fits_in_slot(chunk, fields, inp.slot_bytes)):
            terms.append(Term(name, "chunks in worker processes", HOST, inp.worker_count,
                              "chunks", chunk, p + "workers.count", detail))
        terms.append(Term(name, "source copies", HOST, inp.worker_count, "copies",
                          layout.source_bytes, p + "workers.count",
                          f"{format_size(layout.source_bytes)} (one per process)"))
        terms.append(Term(name, "worker processes", HOST, inp.worker_count, "processes",
                          WORKER_PROCESS_BYTES, p + "workers.count",
                          f"{format_size(WORKER_PROCESS_BYTES)} each"))
        return terms

    def run_terms(self, inputs: Sequence[InputSpec]) -> list[Term]:
        if not inputs:
            return []
        first = inputs[0]
        return [Term(first.name, "multiprocessing helpers", HOST, 1, "set",
                     HELPER_PROCESSES_BYTES, first.key_prefix + "workers.kind",
                     "resource tracker + forkserver", per_device=False)]


KIND = register(Kind(name="process", summary="worker processes, chunks in shared memory",
                     source_here=False, make_pool=make_pool, plan=ProcessPlan()))


def view() -> Any:
    """Its verdict rules (kinds/local_views.py), imported the first time a view asks."""
    from inputkit.kinds.local_views import PROCESS

    return PROCESS


KIND.view = view

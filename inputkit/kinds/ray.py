"""Ray actors, on this machine or a cluster (docs/ray.md)."""

from __future__ import annotations

from collections.abc import Sequence
from typing import TYPE_CHECKING, Any

from inputkit.config.sizes import format_size
from inputkit.kinds import Kind, register
from inputkit.planning.geometry import held_views
from inputkit.planning.plan_lines import BYTE_LIMIT, HOST, SHARED, SampleLayout, Term, limit_detail

if TYPE_CHECKING:
    from inputkit.config.spec import InputSpec

# A Ray actor's process (a Ray worker with numpy and inputkit's actor code, PSS), and a
# private local Ray's own processes (GCS, raylet, its agents), measured with Ray 2.60.
RAY_ACTOR_BYTES = 64 * 2**20
LOCAL_RAY_BYTES = 320 * 2**20


def make_pool(spec: Any, device: str, *, source: Any, processors: Any, **common: Any) -> Any:
    from inputkit.workers.ray_pool import RayWorkerPool

    chunks, limits = held_views(spec)  # the views its queues may hold: the default cap
    return RayWorkerPool(spec=spec, downstream=(chunks, sum(limits)), **common)


class RayPlan:
    """The memory terms of Ray actors: the object-store bytes this input may pin on the
    trainer's node (results in flight, and received chunks in the chunk queue and batcher,
    which stay views of their objects), the actors' own memory (on their nodes; here, with a
    local Ray), and a private local Ray once per training process."""

    in_consumer = False
    worker_processes = True

    def worker_terms(self, inp: InputSpec, layout: SampleLayout, on_gpu: bool) -> list[Term]:
        name, p, actors = inp.name, inp.key_prefix, inp.worker_count
        chunk_bytes, chunk_detail = layout.chunk_bytes, layout.chunk_detail
        held, limits = held_views(inp)
        chunks = actors * inp.ray.inflight + held
        queued_bytes = sum(max(size, chunk_bytes) for size in limits)  # one chunk always fits
        natural = chunks * chunk_bytes + queued_bytes
        if inp.ray.inflight_bytes is not None and inp.ray.inflight_bytes < natural:
            key = p + "workers.ray.inflight_bytes"
            store = Term(name, "Ray object store", SHARED, 1, BYTE_LIMIT,
                         max(inp.ray.inflight_bytes, chunk_bytes), key,
                         limit_detail(key, inp.ray.inflight_bytes, "chunk"))
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

    def run_terms(self, inputs: Sequence[InputSpec]) -> list[Term]:
        local = [inp for inp in inputs if inp.ray.address is None]
        if not local:  # one private local Ray per training process, whatever the inputs
            return []
        first = local[0]
        return [Term(first.name, "local Ray", HOST, 1, "set", LOCAL_RAY_BYTES,
                     first.key_prefix + "workers.ray.address",
                     "GCS, raylet and agents (address=null starts them here)", per_device=False)]


KIND = register(Kind(name="ray", summary="Ray actors, on this machine or a cluster",
                     source_here=False, make_pool=make_pool, plan=RayPlan()))


def view() -> Any:
    """Ray's observability (kinds/ray_view.py: its window, rules, rows and records), imported
    the first time a view asks, so that building a pool or a plan does not import it."""
    from inputkit.kinds.ray_view import VIEW

    return VIEW


KIND.view = view

"""Ray actors, on this machine or a cluster (docs/ray.md)."""

from __future__ import annotations

from typing import Any

from inputkit.kinds import Kind, register


def make_pool(spec: Any, device: str, *, source: Any, processors: Any, **common: Any) -> Any:
    from inputkit.memory_terms import held_views
    from inputkit.workers.ray_pool import RayWorkerPool

    chunks, limits = held_views(spec)  # the views its queues may hold: the default cap
    return RayWorkerPool(spec=spec, downstream=(chunks, sum(limits)), **common)


KIND = register(Kind(name="ray", summary="Ray actors, on this machine or a cluster",
                     source_here=False, make_pool=make_pool))

"""Where Ray actors can run and why they stopped: room checks, placement hints, death reasons.

Pure reading of Ray's resources and errors, kept apart from the pool (workers/ray_pool.py),
which owns the actors, their calls and the object ledger.
"""

from __future__ import annotations

from typing import Any

from inputkit.errors import ConfigError


def check_room(ray: Any, key: str, num_workers: int, cpus_per_actor: float) -> None:
    """A private local Ray too small for these actors fails now, not after start_timeout."""
    total = ray.cluster_resources().get("CPU", 0.0)
    needed = num_workers * cpus_per_actor
    if needed > total:
        raise ConfigError(f"{key}ray.num_cpus", f"the local Ray has {total:g} CPUs, but "
                          f"{num_workers} actors (workers.count on every device) x "
                          f"{cpus_per_actor:g} (workers.ray.cpus_per_actor) "
                          f"need {needed:g}; raise workers.ray.num_cpus or lower one of those")


def placement_hint(ray: Any, cpus_per_actor: float) -> str:
    """Why an actor may not have started: the cluster's free CPUs against what each asks."""
    try:
        free = ray.available_resources().get("CPU", 0.0)
        total = ray.cluster_resources().get("CPU", 0.0)
    except Exception:
        return "its source's constructor may be slow, or the cluster has no room for it"
    return (f"the cluster has {free:g} of {total:g} CPUs free and each actor asks for "
            f"{cpus_per_actor:g} (workers.ray.cpus_per_actor); lower "
            "workers.count or cpus_per_actor, add nodes, or the source's constructor is slow")


def death_reason(exc: BaseException) -> str:
    """Why an actor died, in one line, from Ray's error."""
    lines = [line.strip() for line in str(exc).splitlines() if line.strip()]
    for line in lines:
        if "because" in line or "died" in line.lower() and "unexpectedly" not in line:
            return line[:300]
    return f"{type(exc).__name__}: {lines[0] if lines else ''}"[:300]

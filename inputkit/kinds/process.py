"""Process workers: separate processes, chunks handed over in shared-memory slots."""

from __future__ import annotations

from typing import Any

from inputkit.kinds import Kind, register


def make_pool(spec: Any, device: str, *, source: Any, processors: Any, **common: Any) -> Any:
    from inputkit.sources.loader import built_copy
    from inputkit.workers import slot_count
    from inputkit.workers.processes import ProcessWorkerPool

    return ProcessWorkerPool(
        built=built_copy(source), source_config=spec.source,
        source_key=f"{spec.key_prefix}source",
        source_name=spec.source["_target_"], start_method=spec.start_method,
        slots=slot_count(spec, device), slot_bytes=spec.slot_bytes,
        processors=spec.processors, processors_seed=spec.epoch.seed,
        processors_key=f"{spec.key_prefix}processors", **common)


KIND = register(Kind(name="process", summary="worker processes, chunks in shared memory",
                     source_here=False, make_pool=make_pool))

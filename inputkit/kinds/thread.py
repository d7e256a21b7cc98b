"""Thread workers: a pool of threads in this process sharing one source (the default)."""

from __future__ import annotations

from typing import Any

from inputkit.kinds import Kind, register


def make_pool(spec: Any, device: str, *, source: Any, processors: Any, **common: Any) -> Any:
    from inputkit.workers.threads import ThreadWorkerPool

    return ThreadWorkerPool(source=source, processors=processors, **common)


KIND = register(Kind(name="thread", summary="threads in this process sharing one source",
                     source_here=True, make_pool=make_pool))

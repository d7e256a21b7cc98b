"""Inline: the consumer's own thread fetches when it asks for a batch (no threads, no queues)."""

from __future__ import annotations

from typing import Any

from inputkit.kinds import Kind, register


def make_pool(spec: Any, device: str, *, source: Any, processors: Any, **common: Any) -> Any:
    from inputkit.workers.inline_pool import InlineWorkerPool

    common.pop("out", None)  # no chunk queue: the pool is the stream the batcher pulls
    return InlineWorkerPool(source=source, processors=processors, **common)


KIND = register(Kind(name="inline", summary="the consumer's thread fetches; no queues",
                     source_here=True, make_pool=make_pool))

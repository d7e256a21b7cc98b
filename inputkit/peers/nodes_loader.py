"""The thread peer: the same fetch through ``torchdata.nodes`` with a thread ``ParallelMapper``.

One source object is shared by the mapper's threads (as inputkit's thread workers share
one), each map call fetches a whole batch and turns it into tensors, ``in_order=False``
(the batches are interchangeable, as they are for inputkit), and a ``Prefetcher`` of
``PREFETCH_FACTOR`` batches sits in front of the consumer, like DataLoader's.
"""

from __future__ import annotations

import itertools
from collections.abc import Callable, Iterator
from typing import Any

from torchdata.nodes import IterableWrapper, Loader, ParallelMapper, Prefetcher

from inputkit.config.spec import InputSpec
from inputkit.peers.torch_loader import PREFETCH_FACTOR, tensors
from inputkit.sources.loader import build_source


def open_nodes(spec: InputSpec) -> tuple[Iterator[dict[str, Any]], Callable[[], None]]:
    """An endless stream of batches for ``spec``, and the call that stops its threads."""
    source = build_source(spec.source)
    batch_size = spec.batch_size

    def fetch(_: int) -> dict[str, Any]:
        return tensors(source.fetch(0, batch_size))

    mapper = ParallelMapper(IterableWrapper(itertools.count()), fetch,
                            num_workers=spec.worker_count, in_order=False, method="thread")
    root = Prefetcher(mapper, prefetch_factor=PREFETCH_FACTOR)
    stream = iter(Loader(root))

    def close() -> None:
        _shutdown(root)

    return stream, close


def _shutdown(node: Any) -> None:
    """Stop the threads of every node in the chain now, not when the garbage collector
    gets to them: torchdata.nodes stops them in ``__del__`` only, and a measurement that
    follows must not share the cores with threads still prefetching."""
    seen: set[int] = set()
    todo = [node]
    while todo:
        item = todo.pop()
        if item is None or id(item) in seen:
            continue
        seen.add(id(item))
        stop = getattr(item, "_shutdown", None)
        if callable(stop):
            stop()
        todo.extend(getattr(item, name, None) for name in ("_it", "source"))

"""Worker kinds, registered rather than branched on.

A kind (thread, inline, process, ray, or one a test or plugin registers) is one module
here that owns what differs between kinds: how its pool is built, and (as the seam grows)
its memory terms (``plan``), its stats extension, verdict rules and dashboard rows
(``view``). The planner, diagnosis, dashboard, renderer, runner and coordinator ask
``kinds.get(name)`` instead of testing ``worker_kind == "ray"``.

This module imports nothing heavy: a kind's module imports its pool lazily, inside
``make_pool``, so ``inputkit plan`` and ``--help`` stay light.
"""

from __future__ import annotations

import importlib
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from inputkit.errors import ConfigError

__all__ = ["Kind", "get", "names", "register", "unregister"]

# The built-in kinds, in the order help texts list them.
_BUILTIN = ("thread", "inline", "process", "ray", "auto")


@dataclass
class Kind:
    """One worker kind.

    ``make_pool(spec, device, *, source, processors, **common)`` builds its pool (``common``:
    the keyword arguments every pool takes: schema, worker_ids, num_workers, batch_size_hint,
    out, label, thread_prefix, on_failure, policy, dispatcher). ``source_here``: the source is
    built in this process and shared by its workers (thread, inline); otherwise each worker
    builds its own or gets a pickled copy. ``plan`` and ``view`` are the kind's planner and
    observability hooks (None: it has nothing of its own to add there).
    """

    name: str
    summary: str
    source_here: bool
    make_pool: Callable[..., Any]
    plan: Any = None
    view: Any = None


_KINDS: dict[str, Kind] = {}
_loaded = False


def register(kind: Kind) -> Kind:
    """Add ``kind`` (a second kind of the same name is refused: it would shadow the first)."""
    if kind.name in _KINDS and _KINDS[kind.name] is not kind:
        raise ValueError(f"a worker kind named {kind.name!r} is registered already")
    _KINDS[kind.name] = kind
    return kind


def unregister(name: str) -> None:
    """Remove a kind registered by a test or plugin (the built-in ones stay)."""
    if name in _BUILTIN:
        raise ValueError(f"{name!r} is a built-in worker kind")
    _KINDS.pop(name, None)


def _load_builtin() -> None:
    global _loaded
    if not _loaded:
        _loaded = True
        for name in _BUILTIN:
            importlib.import_module(f"inputkit.kinds.{name}")


def names() -> tuple[str, ...]:
    """Every registered kind: the built-in ones first."""
    _load_builtin()
    return tuple(sorted(_KINDS, key=lambda n: (n not in _BUILTIN, _BUILTIN.index(n)
                                               if n in _BUILTIN else 0, n)))


def get(name: str, key: str = "workers.kind") -> Kind:
    """The kind called ``name``; an unknown name is an error naming ``key`` and the kinds."""
    _load_builtin()
    kind = _KINDS.get(name)
    if kind is None:
        raise ConfigError(key, f"unknown worker kind {name!r}; available: {', '.join(names())}")
    return kind

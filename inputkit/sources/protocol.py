"""The fetch-plugin protocol, after Caffe2's data_workers.

A source is anything with ``fetch(worker_id, batch_size_hint)`` returning one
*chunk*: a mapping of field name to numpy array (or a sequence of arrays,
whose fields are then named "0", "1", ...), every array with the same leading
length n >= 0. n may be anything: the batcher re-chunks into exact batches.

``worker_id`` is unique across all workers of an input, over every device, so a
source can shard its work by it. ``batch_size_hint`` is the input's batch size.
A finite source raises :class:`~inputkit.errors.SourceExhausted` (or
``StopIteration``) when its epoch is over.

An *indexable* source also has ``__len__()`` and ``read(indices)``, which returns
the chunk of exactly those samples (an int64 array of sample indices), in that
order (if ``read`` also takes an ``epoch`` keyword, it gets the epoch being read). The
pipeline then never calls fetch: it hands out index ranges itself, so
every sample of an epoch is delivered exactly once even when workers die and are
restarted, and it can shuffle per epoch and keep a deterministic order
(``epoch.*`` keys; see docs/reliability.md).

All workers of one input call the *same* source object, from several threads:
a source that keeps state (a cursor, a file handle) must guard it with a lock.

What a source may offer beyond this (``setup``, ``close``, ``fetch_into``, ``read_into``...)
is declared in :mod:`inputkit.sources.capabilities` and read from ``BoundSource.caps``.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any, Protocol, runtime_checkable

import numpy as np

FetchResult = Mapping[str, np.ndarray] | Sequence[np.ndarray]


@runtime_checkable
class Source(Protocol):
    def fetch(self, worker_id: int, batch_size_hint: int) -> FetchResult:
        """Return the next chunk of samples, or raise SourceExhausted at the end of the epoch."""
        ...


@runtime_checkable
class IndexableSource(Protocol):
    def __len__(self) -> int: ...

    def read(self, indices: np.ndarray) -> FetchResult:
        """Return the samples at ``indices`` (int64), one per index, in that order."""
        ...


def reads_epoch(read: object) -> bool:
    """Whether an indexable source's ``read`` takes an ``epoch`` keyword: the pipeline then
    passes each work item's epoch, so that per-sample augmentations can differ by epoch
    (``read(indices, epoch=e)``) while staying independent of the workers."""
    import inspect

    try:
        return "epoch" in inspect.signature(read).parameters  # type: ignore[arg-type]
    except (TypeError, ValueError):
        return False


def indexed_length(obj: object) -> int | None:
    """``len(obj)`` when ``obj`` is an indexable source (``read`` and a length); else None."""
    if not callable(getattr(obj, "read", None)):
        return None
    try:
        length = len(obj)  # type: ignore[arg-type]
    except TypeError:  # e.g. an endless source that can read but has no length
        return None
    if length < 0:
        raise ValueError(f"len() of the source is {length}; it must be >= 0")
    return int(length)


# Sources that store samples together in shards or files, and say which (``sample_groups``):
# named in the error for ``epoch.shuffle=shards`` on a source that does not.
SHARDED_SOURCES = ("image_shards", "tokens", "parquet")


def sample_groups(source: Any, length: int, key: str, target: str) -> np.ndarray:
    """The optional capability ``sample_groups() -> np.ndarray``: one group id (any integer)
    per sample, naming the shard or file that stores it (the tar shard of an image_shards
    sample, the file of a tokens or Parquet sample). ``epoch.shuffle=shards`` orders an epoch
    by these groups, so that reads stay within a window of shards (each fetched once per
    epoch into a bounded cache). ``key`` (``epoch.shuffle``) and ``target`` name the config
    at fault when the source (a BoundSource) has no such method or gives a wrong answer."""
    from inputkit.errors import ConfigError

    if not source.caps.sample_groups:
        raise ConfigError(key, f"shards needs a source that stores its samples in shards and "
                          f"says which (sample_groups()): {', '.join(SHARDED_SOURCES)}; "
                          f"'{target}' has none. Use epoch.shuffle=true for a global shuffle")
    groups = np.asarray(source.obj.sample_groups())
    if groups.shape != (length,) or not np.issubdtype(groups.dtype, np.integer):
        raise ConfigError(key, f"shards: '{target}'.sample_groups() must give one integer group "
                          f"id per sample ({length:,}), got dtype {groups.dtype} shape "
                          f"{groups.shape}")
    return groups


def ships_built(obj: object) -> bool:
    """Whether worker processes take a pickled copy of this source, built once in the parent,
    instead of each building its own (an image folder's index, built once per run). A source
    class says so with ``ship_built = True``; its pickled state must leave out what belongs to
    one process (open files, memory maps). Not assumed of others: pickling a memory-mapped
    array copies the whole file, and a constructor may do per-process work."""
    return bool(getattr(type(obj), "ship_built", False)) and not isinstance(obj, type)


def field_names(fields: Sequence[str] | str | None, what: str) -> list[str] | None:
    """A source's ``fields`` argument: None (every field), one name, or a list of distinct
    names; ``what`` says what a name is, for the error."""
    if fields is None:
        return None
    if isinstance(fields, str):
        fields = [fields]
    if not isinstance(fields, Sequence) or not fields \
            or not all(isinstance(f, str) and f for f in fields):
        raise ValueError(f"fields: expected a list of field names ({what}), or null for every "
                         f"field, got {fields!r}")
    if len(set(fields)) != len(fields):
        raise ValueError(f"fields: lists a field twice: {list(fields)}")
    return list(fields)

"""The optional capabilities of a source, declared once and read once per bound source.

A source needs only ``fetch(worker_id, batch_size_hint)``, or ``__len__`` and
``read(indices)`` (:mod:`inputkit.sources.protocol`). Everything else the pipeline
may use is listed here, in :data:`CAPABILITIES`: a typed Protocol per method, and
one frozen :class:`Capabilities` record that :func:`capabilities_of` computes when
the source is bound (:class:`~inputkit.sources.loader.BoundSource` carries it as
``caps``). The rest of the pipeline reads the record, never ``getattr`` on the
source, so a capability is spelt in one place and checked once: a method whose
name is a capability's written another way (``readInto``, ``set_up``) or whose
signature cannot take the pipeline's call is refused when the source is built,
naming the source and the method, rather than silently never called.

docs/plugins.md lists these capabilities; tests/test_capabilities.py checks that the
list and :data:`CAPABILITIES` agree.
"""

from __future__ import annotations

import inspect
from collections.abc import Callable, Mapping
from dataclasses import dataclass, fields
from typing import Any, Protocol, runtime_checkable

import numpy as np

from inputkit.errors import ConfigError

Allocator = Callable[[str, tuple[int, ...], Any], np.ndarray]


@runtime_checkable
class HasSetup(Protocol):
    def setup(self, worker_id: int, num_workers: int) -> None:
        """Called once per worker before its first fetch or read, with the worker's id and the
        input's worker count (e.g. to open files per worker, or shard a stream by worker)."""
        ...


@runtime_checkable
class HasClose(Protocol):
    def close(self) -> None:
        """Called once when the run ends (or the probe's copy is dropped): files, connections."""
        ...


@runtime_checkable
class FetchesInto(Protocol):
    def fetch_into(self, worker_id: int, batch_size_hint: int, allocate: Allocator) -> Any:
        """``fetch``, with the output arrays taken from ``allocate(name, shape, dtype)`` (a
        process worker's shared-memory slot): the chunk is written once, never copied."""
        ...


@runtime_checkable
class ReadsInto(Protocol):
    def read_into(self, indices: np.ndarray, allocate: Allocator) -> Any:
        """``read``, with the output arrays from ``allocate(name, shape, dtype)``; if ``read``
        takes ``epoch``, ``read_into`` must too. Used by process workers when no processors run."""
        ...


@runtime_checkable
class HasReadScratch(Protocol):
    def read_scratch(self) -> tuple[int, str]:
        """Bytes each worker keeps between reads (a decoded row group, a cache), and what they
        are: a line of the memory plan, asked of the probe's copy after its first read."""
        ...


@runtime_checkable
class HasMappedBytes(Protocol):
    def mapped_bytes(self) -> tuple[int, str]:
        """Bytes of the files the source memory-maps, and what they are: the plan shows them
        apart (page cache, shared by every worker), not as each worker's own."""
        ...


@runtime_checkable
class HasRunInfo(Protocol):
    def run_info(self) -> dict[str, Any]:
        """What the source says about itself for the run's summary (an image folder's classes,
        a mixture's components): JSON-able, asked once per run."""
        ...


@runtime_checkable
class HasSampleGroups(Protocol):
    def sample_groups(self) -> np.ndarray:
        """One integer group id per sample, naming the shard or file that stores it:
        ``epoch.shuffle=shards`` orders an epoch by these groups."""
        ...


@runtime_checkable
class HasRemoteShards(Protocol):
    def remote_shards(self) -> Any:
        """The source's shards in an object store (a RemoteShards), or None when local: a
        ShardPrefetcher then fills the disk cache ahead of the workers, in their order."""
        ...


@runtime_checkable
class ReportsComponents(Protocol):
    """A source made of named components (a mixture). Both are class methods, so the
    pipeline can ask them from the config and the run's record, without the source."""

    @classmethod
    def component_names(cls, config: Mapping[str, Any]) -> tuple[str | None, tuple[str, ...]]:
        """The field naming each sample's component (None: not delivered) and the components'
        names, from the source's config: the consumer counts the samples of each it receives."""
        ...

    @classmethod
    def component_positions(cls, info: Mapping[str, Any], epoch: int,
                            consumed: np.ndarray | None) -> dict[str, Any]:
        """Where each component stands once ``consumed`` (a bool mask over epoch ``epoch``) has
        been received; ``info`` is the source's ``run_info()``. Written into the runner's state."""
        ...


@dataclass(frozen=True)
class Capability:
    """One optional method: its name, the Protocol declaring it, arguments like the pipeline's
    that its signature must accept (checked when the source is bound), and what it does."""

    name: str
    call: str  # how the pipeline calls it, as docs/plugins.md writes it
    protocol: type
    args: tuple[Any, ...]
    summary: str


def _allocate(name: str, shape: tuple[int, ...], dtype: Any) -> np.ndarray:
    return np.empty(shape, dtype)


_INDICES = np.zeros(0, np.int64)

# Every optional capability, in the order docs/plugins.md lists them.
CAPABILITIES: tuple[Capability, ...] = (
    Capability("setup", "setup(worker_id, num_workers)", HasSetup, (0, 1),
               "per-worker set-up before the first fetch or read"),
    Capability("close", "close()", HasClose, (),
               "release files and connections when the run ends"),
    Capability("fetch_into", "fetch_into(worker_id, batch_size_hint, allocate)", FetchesInto,
               (0, 1, _allocate), "fetch straight into a process worker's shared-memory slot"),
    Capability("read_into", "read_into(indices, allocate)", ReadsInto, (_INDICES, _allocate),
               "read straight into a process worker's shared-memory slot"),
    Capability("read_scratch", "read_scratch()", HasReadScratch, (),
               "bytes each worker keeps between reads"),
    Capability("mapped_bytes", "mapped_bytes()", HasMappedBytes, (),
               "bytes of the files the source memory-maps"),
    Capability("run_info", "run_info()", HasRunInfo, (),
               "what the source says about itself in the summary"),
    Capability("sample_groups", "sample_groups()", HasSampleGroups, (),
               "each sample's shard, for epoch.shuffle=shards"),
    Capability("remote_shards", "remote_shards()", HasRemoteShards, (),
               "shards in an object store, prefetched"),
    Capability("component_names", "component_names(config)", ReportsComponents, ({},),
               "a composite source's component field and names (class method)"),
    Capability("component_positions", "component_positions(info, epoch, consumed)",
               ReportsComponents, ({}, 0, None),
               "where each component stands in the runner's state (class method)"),
)
# Not methods: ``read(indices, epoch=...)`` (an epoch keyword on read, see protocol.reads_epoch),
# ``ship_built = True`` (a class attribute, see protocol.ships_built) and ``_fields_`` (a
# config key declaring sample sizes for the planner, never passed to the source).
NAMES = tuple(c.name for c in CAPABILITIES)


@dataclass(frozen=True)
class Capabilities:
    """What one bound source can do beyond ``fetch``/``read``: computed once when it is bound
    (``BoundSource.caps``) and read by the workers, the planner, the runner and the peers."""

    setup: bool = False
    close: bool = False
    fetch_into: bool = False
    read_into: bool = False
    read_scratch: bool = False
    mapped_bytes: bool = False
    run_info: bool = False
    sample_groups: bool = False
    remote_shards: bool = False
    component_names: bool = False
    component_positions: bool = False
    reads: bool = False  # has read(indices) (an indexable source also has a length)
    takes_epoch: bool = False  # read (and read_into) take an ``epoch`` keyword
    ships_built: bool = False  # process workers take a pickled copy (class attribute ship_built)

    @property
    def components(self) -> bool:
        """A composite source (a mixture): it names its components and places them in the state."""
        return self.component_names and self.component_positions

    def names(self) -> tuple[str, ...]:
        """The capabilities this source has, by name (for messages and the docs' test)."""
        return tuple(f.name for f in fields(self) if getattr(self, f.name))


NONE = Capabilities()


def _normalised(name: str) -> str:
    return name.replace("_", "").lower()


_BY_SPELLING = {_normalised(n): n for n in NAMES}


def capabilities_of(obj: Any, name: str, key: str = "source._target_") -> Capabilities:
    """The capabilities of ``obj`` (a built source), checked: a method spelt like a capability
    but not as one, or one that cannot take the pipeline's call, is a ConfigError naming
    ``key``, the source ``name`` and the method."""
    from inputkit.sources.protocol import reads_epoch, ships_built

    if inspect.isclass(obj) or inspect.isfunction(obj) or inspect.ismethod(obj):
        return NONE  # a plain fetch function (or a class never instantiated) has none
    _refuse_misspelt(obj, name, key)
    found: dict[str, bool] = {}
    for cap in CAPABILITIES:
        method = getattr(obj, cap.name, None)
        if method is None:
            found[cap.name] = False
            continue
        if not callable(method):
            raise ConfigError(key, f"{name}.{cap.name} is a {type(method).__name__}, not a method; "
                              f"the pipeline calls it ({cap.summary}): make it a method or rename it")
        _check_signature(method, cap, name, key)
        found[cap.name] = True
    read = getattr(obj, "read", None)
    reads = callable(read)
    takes_epoch = reads and reads_epoch(read)
    if takes_epoch and found["read_into"] and not reads_epoch(obj.read_into):
        raise ConfigError(key, f"{name}.read takes epoch but {name}.read_into does not: process "
                          "workers would read every epoch the same; add an epoch keyword to "
                          "read_into")
    return Capabilities(**found, reads=reads, takes_epoch=takes_epoch, ships_built=ships_built(obj))


def _refuse_misspelt(obj: Any, name: str, key: str) -> None:
    for attr in dir(type(obj)):
        if attr.startswith("_") or attr in _BY_SPELLING.values():
            continue
        meant = _BY_SPELLING.get(_normalised(attr))
        if meant is None or not callable(getattr(type(obj), attr, None)):
            continue
        owner = next((c for c in type(obj).__mro__ if attr in vars(c)), None)
        if owner is None or owner.__module__ in ("builtins", "io", "_io"):
            continue  # a file object's readinto is not ours to judge
        raise ConfigError(key, f"{name} has a method '{attr}' but the pipeline calls "
                          f"'{meant}' ({_summary(meant)}); rename it to '{meant}'")


def _summary(name: str) -> str:
    return next(c.summary for c in CAPABILITIES if c.name == name)


def _check_signature(method: Any, cap: Capability, name: str, key: str) -> None:
    try:
        signature = inspect.signature(method)
    except (TypeError, ValueError):
        return  # builtins and extension types without a signature: trust them
    try:
        signature.bind(*cap.args)
    except TypeError as exc:
        raise ConfigError(key, f"{name}.{cap.name} cannot be called as {cap.call} ({cap.summary}, "
                          f"sources.capabilities.{cap.protocol.__name__}): {exc}; fix its "
                          "parameters or rename it") from exc

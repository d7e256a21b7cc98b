"""The search space of ``inputkit tune``: one point per setting of one input, and its grids.

A point is what the tuner may change for one named input: the worker kind and count,
the chunk and batch queue capacities and, on CUDA, ``device.prefetch``. Everything else
stays as the starting config says. Points apply to a plain copy of that config, at the
input's own keys (``workers.count`` for the single top-level input,
``inputs.<name>.workers.count`` for a named one), so each point is one ordinary config
that the planner can check and a Runner can run.
"""

from __future__ import annotations

import copy
from dataclasses import dataclass, field, replace
from typing import Any

from inputkit.config.spec import InputSpec
from inputkit.errors import ConfigError

INLINE = "inline"  # runs fetch in the consumer's thread: one worker, no queues to size


RAY = "ray"  # a deployment choice (a cluster), not a local one: searched only when started on it


AUTO = "auto"  # a choice made at start, not a setting: the search starts from what it chose


def worker_kinds() -> tuple[str, ...]:
    """Every concrete worker kind the schema knows (a kind added to WorkerKind is searched
    too); never ``auto``, which stands for one of them."""
    from inputkit.config.schema import WorkerKind

    return tuple(kind.value for kind in WorkerKind if kind.value != AUTO)


def default_kinds(start_kind: str) -> tuple[str, ...]:
    """The kinds searched without --kinds: this machine's (threads, processes, inline) from a
    local start; from Ray workers, Ray alone (how many actors, how much in flight), since a
    trainer on Ray wants its preprocessing kept on the cluster."""
    if start_kind == RAY:
        return (RAY,)
    return tuple(kind for kind in worker_kinds() if kind != RAY)


def default_counts(cpus: int) -> tuple[int, ...]:
    """1, 2, 4, ... up to twice the usable cores, and 2 x cores itself."""
    top = max(1, 2 * cpus)
    counts = {top}
    n = 1
    while n <= top:
        counts.add(n)
        n *= 2
    return tuple(sorted(counts))


@dataclass(frozen=True)
class Grids:
    """The values each dimension may take; None: the defaults (every kind; 1, 2, 4 ... 2 x cores)."""

    kinds: tuple[str, ...] | None = None
    counts: tuple[int, ...] | None = None
    capacities: tuple[int, ...] = (1, 2, 4, 8, 16)
    batch_capacities: tuple[int, ...] = (1, 2, 4)
    prefetch: tuple[int, ...] = (1, 2, 4)

    def checked(self) -> Grids:
        """Sorted, without repeats; a bad value is a ConfigError naming the option."""
        known = worker_kinds()
        kinds = self.kinds if self.kinds is not None else known
        unknown = [k for k in kinds if k not in known]
        if unknown or not kinds:
            why = " (auto is a choice made at start, not a point to measure: the search starts " \
                "from what it chooses)" if AUTO in unknown else ""
            raise ConfigError("--kinds", f"unknown worker kind(s) {', '.join(unknown) or '(none)'}"
                              f"{why}; choose from {', '.join(known)}")
        out = {}
        for name, values in (("--counts", self.counts), ("--capacities", self.capacities),
                             ("--batch-capacities", self.batch_capacities),
                             ("--prefetch", self.prefetch)):
            if values is None:
                continue
            bad = [v for v in values if isinstance(v, bool) or not isinstance(v, int) or v < 1]
            if bad or not values:
                raise ConfigError(name, f"expected whole numbers >= 1, got {list(values)}")
            out[name] = tuple(sorted(set(values)))
        return Grids(kinds=tuple(dict.fromkeys(kinds)) if self.kinds is not None else None,
                     counts=out.get("--counts"),
                     capacities=out["--capacities"], batch_capacities=out["--batch-capacities"],
                     prefetch=out["--prefetch"])


@dataclass(frozen=True)
class Point:
    """One setting of one input. ``capacity``/``batch_capacity``/``prefetch`` of None: as the
    starting config has it (a size such as 256MiB stays a size)."""

    input: str
    prefix: str  # where the input's keys live: "" or "inputs.<name>."
    kind: str
    count: int
    capacity: Any = None
    batch_capacity: Any = None
    prefetch: int | None = None

    @property
    def key(self) -> tuple[Any, ...]:
        return (self.input, self.kind, self.count, self.capacity, self.batch_capacity, self.prefetch)

    def settings(self) -> dict[str, Any]:
        """The keys this point sets, relative to the input (``workers.count``: 4, ...)."""
        values = {"workers.kind": self.kind, "workers.count": self.count,
                  "queue.capacity": self.capacity, "queue.batch_capacity": self.batch_capacity,
                  "device.prefetch": self.prefetch}
        return {k: v for k, v in values.items() if v is not None}

    def overrides(self) -> list[str]:
        """As Hydra overrides: ``workers.kind=thread workers.count=4 ...``."""
        return [f"{self.prefix}{key}={value}" for key, value in self.settings().items()]

    def label(self) -> str:
        """Short, for tables and plots: ``thread x4 q16 b4`` (``p2``: device.prefetch)."""
        text = f"{self.kind} x{self.count}"
        if self.kind != INLINE:
            text += f" q{self.capacity} b{self.batch_capacity}"
        if self.prefetch is not None:
            text += f" p{self.prefetch}"
        return text

    def apply(self, cfg: dict[str, Any]) -> dict[str, Any]:
        """A copy of the plain config ``cfg`` with this point's keys set."""
        out = copy.deepcopy(cfg)
        node = out
        if self.prefix:
            for part in self.prefix.rstrip(".").split("."):
                child = node.get(part)
                if not isinstance(child, dict):
                    child = node[part] = {}
                node = child
        for dotted, value in self.settings().items():
            group, key = dotted.split(".")
            section = node.get(group)
            if not isinstance(section, dict):
                section = node[group] = {}
            section[key] = value
        return out


@dataclass(frozen=True)
class InputSpace:
    """The grids of one input and the point the starting config is."""

    input: str
    prefix: str
    start: Point
    kinds: tuple[str, ...]
    counts: tuple[int, ...]
    capacities: tuple[int, ...]
    batch_capacities: tuple[int, ...]
    prefetch: tuple[int, ...] = field(default=())  # empty: not searched (no CUDA device)
    # The counts are the default grid (not --counts): a fetch that waits may grow past it.
    open_counts: bool = False

    def counts_of(self, kind: str) -> tuple[int, ...]:
        return (1,) if kind == INLINE else self.counts

    def point(self, kind: str, count: int, capacity: int, batch_capacity: int,
              prefetch: int | None) -> Point:
        if kind == INLINE:  # the queues are not used: the smallest valid values, so the plan
            capacity, batch_capacity = 1, 1  # does not count capacity that never fills
        return Point(self.input, self.prefix, kind, count, capacity, batch_capacity, prefetch)

    def grid_size(self) -> int:
        """Points of the full grid (the exhaustive sweep the strategy avoids)."""
        per_count = len(self.capacities) * len(self.batch_capacities)
        extra = max(1, len(self.prefetch))
        return sum(len(self.counts_of(k)) * (1 if k == INLINE else per_count) * extra
                   for k in self.kinds)

    def sweeps(self) -> list[list[str]]:
        """The full grid as ``inputkit bench -m`` override lists, one per worker kind (inline
        has one count and no queues, so it cannot share a cartesian sweep with the others)."""
        p = self.prefix
        out = []
        for kind in self.kinds:
            args = [f"{p}workers.kind={kind}",
                    f"{p}workers.count={','.join(map(str, self.counts_of(kind)))}"]
            if kind != INLINE:
                args += [f"{p}queue.capacity={','.join(map(str, self.capacities))}",
                         f"{p}queue.batch_capacity={','.join(map(str, self.batch_capacities))}"]
            else:
                args += [f"{p}queue.capacity=1", f"{p}queue.batch_capacity=1"]
            if self.prefetch:
                args.append(f"{p}device.prefetch={','.join(map(str, self.prefetch))}")
            out.append(args)
        return out


def start_point(spec: InputSpec, cfg: dict[str, Any]) -> Point:
    """The starting config's own setting of ``spec``, with its raw capacity values. An input
    still on ``workers.kind=auto`` (tune() resolves it first) starts as thread workers, as
    ``inputkit plan`` plans it with the probe off."""
    kind, count = spec.worker_kind, spec.worker_count
    if kind == AUTO:
        from inputkit.config.spec import DEFAULT_WORKER_COUNT

        kind, count = "thread", count or DEFAULT_WORKER_COUNT
    return Point(spec.name, spec.key_prefix, kind, count,
                 _raw(cfg, spec.key_prefix, "queue", "capacity", spec.chunk_capacity),
                 _raw(cfg, spec.key_prefix, "queue", "batch_capacity", spec.batch_capacity),
                 spec.device_prefetch)


def _raw(cfg: dict[str, Any], prefix: str, group: str, key: str, default: Any) -> Any:
    """The value as written (``256MiB`` stays a size): the input's own entry, then the top level."""
    nodes = [cfg]
    if prefix:
        entry = cfg
        for part in prefix.rstrip(".").split("."):
            entry = entry.get(part) or {} if isinstance(entry, dict) else {}
        nodes.insert(0, entry)
    for node in nodes:
        section = node.get(group) if isinstance(node, dict) else None
        if isinstance(section, dict) and section.get(key) is not None:
            return section[key]
    return default


def input_space(spec: InputSpec, cfg: dict[str, Any], grids: Grids, cpus: int,
                on_cuda: bool) -> InputSpace:
    """The grids for one input: the given ones, plus the starting values where they are counts."""
    start = start_point(spec, cfg)
    caps = set(grids.capacities)
    if spec.chunk_capacity_bytes is None:
        caps.add(spec.chunk_capacity)
    batch_caps = set(grids.batch_capacities)
    if spec.batch_capacity_bytes is None:
        batch_caps.add(spec.batch_capacity)
    prefetch: tuple[int, ...] = ()
    if on_cuda:
        prefetch = tuple(sorted(set(grids.prefetch) | {spec.device_prefetch}))
    else:
        start = replace(start, prefetch=None)  # on CPU nothing is prefetched to a device
    kinds = grids.kinds if grids.kinds is not None else default_kinds(spec.worker_kind)
    return InputSpace(input=spec.name, prefix=spec.key_prefix, start=start, kinds=kinds,
                      counts=grids.counts or default_counts(cpus), capacities=tuple(sorted(caps)),
                      batch_capacities=tuple(sorted(batch_caps)), prefetch=prefetch,
                      open_counts=grids.counts is None)

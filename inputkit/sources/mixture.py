"""A weighted mixture of indexable sources, as pretraining mixes its corpora.

``source=mixture`` is one indexable source made of several (``components``), each
with a ``weight``. Position ``g`` of the mixture's stream (epoch ``e``, index ``i``:
``g = e * length + i``) belongs to one component, drawn in proportion to the
weights, and is that component's ``k``-th sample; ``k`` counts on over the mixture's
epochs, so each component keeps its own epochs: a small corpus repeats while a
large one is read once. Everything is a pure function of ``(seed, g)``:

- the stream is cut into blocks of ``BLOCK`` positions; block ``b`` of mixture epoch
  ``e`` holds a multinomial draw of the weights (``counts``), in an order drawn from
  ``(seed, e, b)``: the proportions hold within sampling error over any span;
- a component's ``k``-th sample is sample ``order_c(k // len_c)[k % len_c]`` of it,
  where ``order_c`` is a permutation per component epoch (``shuffle``), so a
  component that repeats is read in a new order each time.

So the mixture is the same whatever the worker count or timing, and a resumed run
(Runner.state_dict: the mixture's epoch and the positions already delivered)
continues the exact sequence. The pipeline's own ``epoch.shuffle`` permutes the
positions of each mixture epoch on top, as for any indexable source.
"""

from __future__ import annotations

import threading
from collections import OrderedDict
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np

from inputkit.errors import ConfigError, SourceError
from inputkit.sources.protocol import indexed_length

BLOCK = 1024  # positions per block: a read touching a block draws its order (a few us)
_CACHED = 64  # blocks' orders and components' epoch orders kept per process


@dataclass(frozen=True)
class Component:
    """One built component: its name, weight (normalised), length and source."""

    name: str
    weight: float
    length: int
    source: Any  # a BoundSource
    by_epoch: bool  # its read takes the component's own epoch


class Schedule:
    """Which component each position of the mixture's stream belongs to, and which of its
    samples (its ordinal): pure arithmetic on the weights, the lengths and the seed, so that
    Runner.state_dict can place every component without building the sources."""

    def __init__(self, weights: Sequence[float], lengths: Sequence[int], length: int,
                 seed: int) -> None:
        self._p = np.asarray(weights, dtype=np.float64)
        self.lengths = np.asarray(lengths, dtype=np.int64)
        self.length = int(length)
        self.seed = int(seed)
        self._blocks = -(-self.length // BLOCK)
        self._sizes = np.full(self._blocks, BLOCK, dtype=np.int64)
        self._sizes[-1] = self.length - BLOCK * (self._blocks - 1)
        self._lock = threading.RLock()
        self._epoch_counts: dict[int, np.ndarray] = {}  # epoch -> per-block prefix counts
        self._bases: list[np.ndarray] = [np.zeros(len(self._p), dtype=np.int64)]  # per epoch
        self._orders: OrderedDict[tuple[int, int], np.ndarray] = OrderedDict()

    @classmethod
    def from_info(cls, info: Mapping[str, Any]) -> Schedule:
        """From a mixture's run_info() (kept in the runner's source_info)."""
        parts = info["components"]
        return cls([c["weight"] for c in parts], [c["samples"] for c in parts], info["length"],
                   info["seed"])

    def _prefix(self, epoch: int) -> np.ndarray:
        """Per block of ``epoch``, how many positions before it each component holds
        (shape ``blocks + 1, components``): a multinomial draw per block from (seed, epoch)."""
        with self._lock:
            prefix = self._epoch_counts.get(epoch)
            if prefix is None:
                rng = np.random.default_rng((self.seed, 0, epoch))
                counts = rng.multinomial(self._sizes, self._p)
                prefix = np.zeros((self._blocks + 1, len(self._p)), dtype=np.int64)
                np.cumsum(counts, axis=0, out=prefix[1:])
                self._epoch_counts[epoch] = prefix
                if len(self._epoch_counts) > 4:
                    self._epoch_counts.pop(min(self._epoch_counts))
            return prefix

    def _base(self, epoch: int) -> np.ndarray:
        """How many samples of each component the epochs before ``epoch`` took."""
        with self._lock:
            while len(self._bases) <= epoch:
                e = len(self._bases) - 1
                self._bases.append(self._bases[e] + self._prefix(e)[-1])
            return self._bases[epoch]

    def _block_order(self, epoch: int, block: int) -> tuple[np.ndarray, np.ndarray]:
        """Block ``block`` of ``epoch``: each position's component, and its rank among that
        component's positions in the block."""
        key = (epoch, block)
        with self._lock:
            cached = self._orders.get(key)
        if cached is None:
            counts = np.diff(self._prefix(epoch)[block:block + 2], axis=0)[0]
            which = np.repeat(np.arange(len(counts), dtype=np.int64), counts)
            which = np.random.default_rng((self.seed, 1, epoch, block)).permutation(which)
            rank = np.empty_like(which)
            for c in range(len(counts)):
                mine = which == c
                rank[mine] = np.arange(int(mine.sum()))
            cached = np.stack([which, rank])
            with self._lock:
                self._orders[key] = cached
                if len(self._orders) > _CACHED:
                    self._orders.popitem(last=False)
        return cached[0], cached[1]

    def locate(self, indices: np.ndarray, epoch: int = 0) -> tuple[np.ndarray, np.ndarray]:
        """For each position of mixture epoch ``epoch``: its component, and that component's
        ordinal (its k-th sample over every epoch, counting on from earlier mixture epochs)."""
        indices = np.asarray(indices, dtype=np.int64)
        if len(indices) and (indices.min() < 0 or indices.max() >= self.length):
            raise IndexError(f"mixture positions must lie in [0, {self.length}), got "
                             f"{indices.min()}..{indices.max()}")
        prefix, base = self._prefix(epoch), self._base(epoch)
        blocks, offsets = np.divmod(indices, BLOCK)
        which = np.empty(len(indices), dtype=np.int64)
        ordinal = np.empty(len(indices), dtype=np.int64)
        for block in np.unique(blocks):
            at = blocks == block
            order, rank = self._block_order(epoch, int(block))
            comp = order[offsets[at]]
            which[at] = comp
            ordinal[at] = base[comp] + prefix[block, comp] + rank[offsets[at]]
        return which, ordinal

    def positions(self, epoch: int, consumed: np.ndarray | None,
                  names: Sequence[str]) -> dict[str, dict[str, int]]:
        """Where each component stands in mixture epoch ``epoch`` once the positions in
        ``consumed`` (a bool mask, or None: none) were delivered: its own epoch, the position
        in it, and the samples of it read over the run."""
        taken = self._base(epoch).copy()
        if consumed is not None and consumed.any():
            which, _ = self.locate(np.flatnonzero(consumed), epoch)
            taken += np.bincount(which, minlength=len(self._p))
        return {name: {"epoch": int(k // n), "position": int(k % n), "samples_read": int(k)}
                for name, k, n in zip(names, taken, self.lengths, strict=True)}


class Mixture:
    """Components read in proportion to their weights; indexable by position (docs/sources.md)."""

    def __init__(self, components: Sequence[Mapping[str, Any]], length: int | None = None,
                 seed: int = 0, shuffle: bool = True, component_field: str | None = "component",
                 ) -> None:
        from inputkit.sources.loader import build_source

        if not isinstance(components, Sequence) or isinstance(components, (str, bytes)) \
                or not components:
            raise ConfigError("source.components", "expected a list of {source: {...}, weight: w} "
                              f"entries, got {components!r}")
        self.seed = int(seed)
        self.shuffle = bool(shuffle)
        self.component_field = component_field
        weights = [_weight(entry, i) for i, entry in enumerate(components)]
        total = sum(weights)
        if total <= 0:
            raise ConfigError("source.components", f"the weights sum to {total:g}; at least one "
                              "component needs a positive weight")
        built: list[Component] = []
        try:
            for i, (entry, weight) in enumerate(zip(components, weights, strict=True)):
                key = f"source.components[{i}]"
                config = entry.get("source")
                if not isinstance(config, Mapping):
                    raise ConfigError(f"{key}.source", "expected the component's source config, "
                                      "e.g. {_target_: inputkit.sources.tokens.TokenSource, ...}")
                name = str(entry.get("name") or f"component {i}")
                source = build_source(config, key=f"{key}.source")
                n = indexed_length(source.obj)
                if n is None:
                    source.close()
                    raise ConfigError(f"{key}.source", f"{source.name} is read by fetch; a mixture "
                                      "reads its components by index (__len__ and read(indices))")
                built.append(Component(name, weight / total, n, source, source.caps.takes_epoch))
                if n == 0:
                    raise SourceError(source.name, f"{key} ({name}) is empty: it has no samples; "
                                      "remove it from source.components or give it data")
        except BaseException:
            for component in built:
                component.source.close()
            raise
        self.components = tuple(built)
        self.names = tuple(c.name for c in built)
        if len(set(self.names)) != len(self.names):
            raise ConfigError("source.components", f"two components share a name: {self.names}")
        self._p = np.array([c.weight for c in built])
        if length is None:  # the component furthest from its share is read once an epoch
            length = max(int(np.ceil(c.length / c.weight)) for c in built if c.weight > 0)
        if int(length) < 1:
            raise ConfigError("source.length", f"must be at least 1 (or null), got {length}")
        self.length = int(length)
        self.schedule = Schedule(self._p, [c.length for c in built], self.length, self.seed)
        self._lock = threading.Lock()
        self._component_orders: OrderedDict[tuple[int, int], np.ndarray] = OrderedDict()
        self._check_fields()

    def __len__(self) -> int:
        return self.length

    def setup(self, worker_id: int, num_workers: int) -> None:
        """Each worker's setup, passed on to every component that has one."""
        for component in self.components:
            component.source.setup(worker_id, num_workers)

    @classmethod
    def component_names(cls, config: Mapping[str, Any]) -> tuple[str | None, tuple[str, ...]]:
        """The field naming each sample's component (None when ``component_field`` is null) and
        the components' names, from the mixture's config (capabilities.ReportsComponents)."""
        field = config.get("component_field", "component")
        parts = config.get("components") or []
        names = tuple(str(p.get("name") or f"component {i}") if isinstance(p, Mapping)
                      else f"component {i}" for i, p in enumerate(parts))
        return (field or None), names

    @classmethod
    def component_positions(cls, info: Mapping[str, Any], epoch: int,
                            consumed: np.ndarray | None) -> dict[str, Any]:
        """Where each component stands once ``consumed`` of mixture epoch ``epoch`` was
        received, from the mixture's ``run_info()`` (no source needed)."""
        return Schedule.from_info(info).positions(epoch, consumed,
                                                  [c["name"] for c in info["components"]])

    def _component_order(self, c: int, epoch: int) -> np.ndarray | None:
        if not self.shuffle:
            return None
        key = (c, epoch)
        with self._lock:
            order = self._component_orders.get(key)
        if order is None:
            order = np.random.default_rng((self.seed, 2, c, epoch)).permutation(
                self.components[c].length)
            with self._lock:
                self._component_orders[key] = order
                if len(self._component_orders) > 8:
                    self._component_orders.popitem(last=False)
        return order

    def read(self, indices: np.ndarray, epoch: int = 0) -> dict[str, np.ndarray]:
        """The samples at ``indices`` of mixture epoch ``epoch``, one per index, in order."""
        which, ordinal = self.schedule.locate(indices, epoch)
        out: dict[str, np.ndarray] | None = None
        for c in np.unique(which):
            at = np.flatnonzero(which == c)
            component = self.components[c]
            rounds, positions = np.divmod(ordinal[at], component.length)
            samples = positions.copy()
            for r in np.unique(rounds):  # the component's own epochs
                here = rounds == r
                order = self._component_order(int(c), int(r))
                if order is not None:
                    samples[here] = order[positions[here]]
            chunk = self._read_component(int(c), samples, rounds)
            if out is None:
                out = {name: np.empty((len(indices), *a.shape[1:]), dtype=a.dtype)
                       for name, a in chunk.items()}
            for name, array in chunk.items():
                out[name][at] = array
        if out is None:  # no index
            out = {name: np.empty((0, *shape), dtype=dtype)
                   for name, (shape, dtype) in self._fields.items()}
        if self.component_field:
            out[self.component_field] = which
        return out

    def _read_component(self, c: int, samples: np.ndarray, rounds: np.ndarray,
                        ) -> dict[str, np.ndarray]:
        """One component's samples, read where its own epoch is the same in one call each."""
        component = self.components[c]
        read = component.source.obj.read
        pieces = []
        for r in np.unique(rounds):
            here = np.flatnonzero(rounds == r)
            raw = read(samples[here], epoch=int(r)) if component.by_epoch else read(samples[here])
            pieces.append((here, _fields_of(raw, component)))
        if len(pieces) == 1:
            return pieces[0][1]
        first = pieces[0][1]
        merged = {name: np.empty((len(samples), *a.shape[1:]), dtype=a.dtype)
                  for name, a in first.items()}
        for here, fields in pieces:
            for name, array in fields.items():
                merged[name][here] = array
        return merged

    def _check_fields(self) -> None:
        """Every component must give the same fields (names, sample shapes, dtypes): one
        sample of each, read now, says so before any worker runs."""
        expected: dict[str, tuple[tuple[int, ...], np.dtype]] | None = None
        first = ""
        for i, component in enumerate(self.components):
            fields = _fields_of(component.source.obj.read(np.zeros(1, dtype=np.int64)),
                                component)
            found = {name: (a.shape[1:], a.dtype) for name, a in fields.items()}
            if expected is None:
                expected, first = found, component.name
                continue
            if found != expected:
                raise SourceError(component.source.name, f"source.components[{i}] ({component.name}) "
                                  f"gives fields {_describe(found)}, but {first} gives "
                                  f"{_describe(expected)}; every component must give the same "
                                  "fields (names, shapes and dtypes)")
        assert expected is not None
        if self.component_field and self.component_field in expected:
            raise ConfigError("source.component_field", f"'{self.component_field}' is also a "
                              "field of the components; pick another name (or null)")
        self._fields = expected

    # for the run's summary and the planner ---------------------------------------------------

    def run_info(self) -> dict[str, Any]:
        """The components, their weights and lengths, and how many times an epoch reads each."""
        return {"components": [
            {"name": c.name, "weight": c.weight, "samples": c.length,
             "source": c.source.name, "reads_per_epoch": round(self.length * c.weight / c.length, 4)}
            for c in self.components], "length": self.length, "seed": self.seed, "mixture": True}

    def close(self) -> None:
        for component in self.components:
            component.source.close()


def _weight(entry: Any, i: int) -> float:
    key = f"source.components[{i}]"
    if not isinstance(entry, Mapping):
        raise ConfigError(key, f"expected {{source: {{...}}, weight: w}}, got {entry!r}")
    weight = entry.get("weight", 1.0)
    if isinstance(weight, bool) or not isinstance(weight, (int, float)) or not np.isfinite(weight):
        raise ConfigError(f"{key}.weight", f"must be a number, got {weight!r}")
    if weight < 0:
        raise ConfigError(f"{key}.weight", f"must be 0 or more, got {weight:g}")
    return float(weight)


def _fields_of(raw: Any, component: Component) -> dict[str, np.ndarray]:
    if isinstance(raw, Mapping):
        return {str(k): np.asarray(v) for k, v in raw.items()}
    if isinstance(raw, Sequence):
        return {str(i): np.asarray(v) for i, v in enumerate(raw)}
    raise SourceError(component.source.name, f"{component.name}'s read returned {type(raw).__name__}; "
                      "expected a mapping of field name to array")


def _describe(fields: Mapping[str, tuple[tuple[int, ...], np.dtype]]) -> str:
    return "{" + ", ".join(f"{n}: {list(s)} {d}" for n, (s, d) in sorted(fields.items())) + "}"

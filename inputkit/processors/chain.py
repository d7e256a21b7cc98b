"""ProcessorChain: a chunk's processors, run in order inside a worker, each step timed.

Seeding: each step of each chunk gets its own ``np.random.Generator``, seeded from

- ``(seed, step, 0, worker_id, counter)`` by default, where ``counter`` counts the
  chunks this chain has processed for ``worker_id``: reproducible for one worker
  and its sequence of chunks, so a run repeats itself only if each worker gets the
  same chunks in the same order (same worker count, ordered index-range epochs);
- ``(seed, step, 1, key)`` when the caller passes ``key`` (e.g. the first sample
  index of an index-range chunk): the same chunk gets the same augmentation
  whichever worker runs it and however many workers there are.

Each step has its own stream, seeded by its position in the chain, so what a step
draws does not depend on how many numbers the steps before it drew. A step with
``uses_rng = False`` (a class attribute, or an attribute of a function) is passed
``rng=None`` and costs no generator.
"""

from __future__ import annotations

import functools
import threading
import time
from collections.abc import Callable, Mapping, Sequence
from typing import Any

import numpy as np

from inputkit.errors import ConfigError, SourceError, SourceExhausted
from inputkit.processors.loader import build_processor
from inputkit.processors.stats import ProcessorStats, Snapshot, stats_from_snapshot

Fields = dict[str, np.ndarray]
Processor = Callable[[Fields, "np.random.Generator | None"], Mapping[str, np.ndarray]]


class ProcessorChain:
    """Steps applied in order to each chunk's fields; thread-safe (thread workers share one).

    ``key`` is the config path of the list (``processors``, or ``inputs.train.processors``),
    used in error messages. An empty chain is falsy and ``apply`` returns its input at once.
    Pickling a chain (to a worker process) keeps its steps and seed and starts its
    counters and statistics from zero.
    """

    def __init__(self, steps: Sequence[Processor], seed: int = 0, key: str = "processors") -> None:
        if isinstance(seed, bool) or not isinstance(seed, (int, np.integer)) or seed < 0:
            raise ConfigError(f"{key}.seed" if key else "seed",
                              f"must be a non-negative integer, got {seed!r}")
        for i, step in enumerate(steps):
            if not callable(step):
                raise ConfigError(f"{key}[{i}]", f"{step!r} is not callable; a processor is "
                                  "proc(fields, rng) -> fields")
        self._steps = tuple(steps)
        self._seed = int(seed)
        self._key = key
        self._names = _unique_names(self._steps)
        self._random = tuple(_uses_rng(step) for step in self._steps)
        self._setup()

    def _setup(self) -> None:
        self._lock = threading.Lock()
        self._counters: dict[int, int] = {}
        self._counts = [[0, 0, 0.0, 0.0] for _ in self._steps]  # calls, samples, wall, cpu

    @classmethod
    def from_config(cls, configs: Sequence[Mapping[str, Any]] | None, key: str = "processors",
                    seed: int = 0) -> ProcessorChain:
        """Build each step of ``configs`` (``[{_target_: ..., **keys}, ...]``; None is empty).

        Any failure is a ConfigError naming ``{key}[i]`` (or ``{key}[i]._target_``).
        """
        if configs is None:
            configs = []
        if isinstance(configs, (str, bytes, Mapping)) or not isinstance(configs, Sequence):
            raise ConfigError(key, f"must be a list of processor configs, got "
                              f"{type(configs).__name__}; write e.g. [{{_target_: "
                              "inputkit.processors.Cast, field: x, dtype: float32}]")
        steps = [build_processor(config, f"{key}[{i}]") for i, config in enumerate(configs)]
        return cls(steps, seed=seed, key=key)

    def __len__(self) -> int:
        return len(self._steps)

    def __bool__(self) -> bool:
        return bool(self._steps)

    def __repr__(self) -> str:
        return f"ProcessorChain([{', '.join(self._names)}], seed={self._seed})"

    def __getstate__(self) -> dict[str, Any]:
        return {"steps": self._steps, "seed": self._seed, "key": self._key, "names": self._names,
                "random": self._random}

    def __setstate__(self, state: dict[str, Any]) -> None:
        self._steps, self._seed, self._key = state["steps"], state["seed"], state["key"]
        self._names, self._random = state["names"], state["random"]
        self._setup()

    @property
    def names(self) -> tuple[str, ...]:
        """Each step's name: its class or function name, ``#2``, ``#3``... for repeats."""
        return self._names

    @property
    def seed(self) -> int:
        return self._seed

    def apply(self, fields: Mapping[str, np.ndarray], worker_id: int,
              key: int | tuple[int, ...] | None = None) -> Fields:
        """Run every step on ``fields`` (one chunk, all with one leading length) and return the result.

        ``key`` (non-negative ints; a tuple key should keep one length) seeds the steps
        instead of ``(worker_id, chunk counter)``; see the module docstring. A step that
        raises lets its exception through with a note naming the step; a step that
        returns something other than fields with one leading length raises SourceError.
        """
        if not self._steps:
            return fields if isinstance(fields, dict) else dict(fields)
        tail = self._seed_tail(worker_id, key)
        current: Fields = dict(fields)
        n = _leading(current)
        for i, step in enumerate(self._steps):
            rng = np.random.default_rng((self._seed, i, *tail)) if self._random[i] else None
            wall0, cpu0 = time.perf_counter(), time.thread_time()
            try:
                out = step(current, rng)
            except (SourceExhausted, StopIteration) as exc:
                raise RuntimeError(f"{self._where(i)} raised {type(exc).__name__}; a processor "
                                   "cannot end the epoch (only the source's fetch can)") from exc
            except Exception as exc:
                _add_note(exc, f"[inputkit] raised in {self._where(i)}, step {i + 1} of "
                               f"{len(self._steps)} of the processor chain")
                raise
            wall, cpu = time.perf_counter() - wall0, time.thread_time() - cpu0
            with self._lock:
                counts = self._counts[i]
                counts[0] += 1
                counts[1] += n
                counts[2] += wall
                counts[3] += cpu
            current, n = self._checked(i, out, n)
        return current

    def stats(self) -> tuple[ProcessorStats, ...]:
        """Per-step totals since this chain was built (or unpickled), in step order."""
        return stats_from_snapshot(self.snapshot())

    def snapshot(self) -> Snapshot:
        """``{step name: (calls, samples, wall_s, cpu_s)}``, cumulative: for ProcessorTotals.add."""
        with self._lock:
            return {name: (int(c), int(s), float(w), float(u))
                    for name, (c, s, w, u) in zip(self._names, self._counts, strict=True)}

    def _seed_tail(self, worker_id: int, key: int | tuple[int, ...] | None) -> tuple[int, ...]:
        if key is None:
            with self._lock:
                counter = self._counters.get(worker_id, 0)
                self._counters[worker_id] = counter + 1
            return (0, int(worker_id), counter)
        parts = tuple(key) if isinstance(key, tuple) else (key,)
        if not parts or any(isinstance(p, bool) or not isinstance(p, (int, np.integer)) or p < 0
                            for p in parts):
            raise ValueError(f"processor chain key must be a non-negative int or a tuple of them, "
                             f"got {key!r}")
        return (1, *(int(p) for p in parts))

    def _where(self, i: int) -> str:
        return f"{self._key}[{i}] ({self._names[i]})"

    def _checked(self, i: int, out: Any, n_in: int) -> tuple[Fields, int]:
        """``out`` as a dict and its leading length, or a SourceError naming the step and field."""
        where = self._where(i)
        if not isinstance(out, Mapping):
            hint = " (did it forget `return fields`?)" if out is None else ""
            raise SourceError(where, f"returned {type(out).__name__}{hint}; a processor returns the "
                              "chunk's fields as a dict of numpy arrays")
        if not out:
            raise SourceError(where, "returned no fields; a processor returns every field the "
                              "chunk keeps")
        lengths: dict[str, int] = {}
        for name, arr in out.items():
            if not isinstance(arr, np.ndarray):
                raise SourceError(where, f"returned a {type(arr).__name__}, not a numpy array",
                                  field=str(name))
            if arr.ndim == 0:
                raise SourceError(where, "returned a scalar; every field keeps its leading sample "
                                  "dimension", field=str(name))
            lengths[name] = arr.shape[0]
        values = set(lengths.values())
        if len(values) > 1:
            ref = n_in if n_in in values else next(iter(lengths.values()))
            odd = next(name for name, length in lengths.items() if length != ref)
            found = ", ".join(f"{k}={v}" for k, v in lengths.items())
            raise SourceError(where, f"returned fields with different leading lengths ({found}; "
                              f"{n_in} samples came in); a processor may change the number of "
                              "samples only by changing every field alike", field=str(odd))
        return (out if isinstance(out, dict) else dict(out)), values.pop()


def _leading(fields: Fields) -> int:
    for arr in fields.values():
        shape = getattr(arr, "shape", ())
        return int(shape[0]) if shape else 0
    return 0


def _uses_rng(step: Any) -> bool:
    while isinstance(step, functools.partial):
        if hasattr(step, "uses_rng"):
            break
        step = step.func
    return bool(getattr(step, "uses_rng", True))


def _step_name(step: Any) -> str:
    while isinstance(step, functools.partial):
        step = step.func
    name = getattr(step, "__name__", None)
    return name if isinstance(name, str) else type(step).__name__


def _unique_names(steps: Sequence[Any]) -> tuple[str, ...]:
    seen: dict[str, int] = {}
    names = []
    for step in steps:
        base = _step_name(step)
        seen[base] = seen.get(base, 0) + 1
        names.append(base if seen[base] == 1 else f"{base}#{seen[base]}")
    return tuple(names)


def _add_note(exc: BaseException, note: str) -> None:
    if hasattr(exc, "add_note") and note not in getattr(exc, "__notes__", []):
        exc.add_note(note)

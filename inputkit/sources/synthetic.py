"""A synthetic source: declared fields, optional latency and CPU cost, optional finite epoch.

It lets ``inputkit bench`` run with no data, and it models the two costs real
sources have: waiting (``latency_ms``, released GIL, like I/O) and computing
(``cpu_ms``, a pure-Python loop that holds the GIL, like Python-level decoding).
"""

from __future__ import annotations

import math
import numbers
import threading
import time
from collections.abc import Callable, Mapping
from typing import Any

import numpy as np

from inputkit.errors import SourceExhausted

Allocate = Callable[[str, tuple[int, ...], np.dtype], np.ndarray]

_BLOCK = 1024  # chunk sizes are drawn in blocks of this many chunks


class SyntheticSource:
    """Generates chunks of ``fields`` ({name: {shape, dtype}}).

    Chunks have ``chunk_size`` samples, or a size drawn uniformly from
    ``[chunk_size, chunk_size_max]`` (seeded per chunk index, so reproducible).
    ``chunk_size=None`` uses the fetch's ``batch_size_hint``. With ``length`` the
    source is finite: samples ``0 .. length-1`` are handed out exactly once across
    all workers, then ``fetch`` raises :class:`SourceExhausted`. ``id_field`` adds an
    int64 field holding each sample's index.

    Sharding: after ``setup(worker_id, num_workers)`` (the pipeline calls it in
    every worker), worker ``w`` takes chunks ``w, w + num_workers, ...``: no shared
    state, so it works the same in threads and in separate processes. Without
    setup (calling ``fetch`` by hand), chunks come from one locked counter.

    A finite source (``length``) is also *indexable*: ``len()`` and
    ``read(indices)``. The pipeline then reads it by index range, with chunk sizes
    from ``epoch.chunk_size`` (``chunk_size``/``chunk_size_max`` only shape the
    endless fetch path), exactly once per epoch even across worker restarts.
    """

    def __init__(
        self,
        fields: Mapping[str, Mapping[str, Any]],
        chunk_size: int | None = 64,
        chunk_size_max: int | None = None,
        latency_ms: float = 0.0,
        cpu_ms: float = 0.0,
        length: int | None = None,
        id_field: str | None = None,
        seed: int = 0,
        fft_repeats: int = 0,
    ) -> None:
        # Counts must be whole numbers and times finite: 1.5 samples or a NaN length would
        # otherwise pass the range checks below and fail (or stream forever) once data flows.
        for name, value, optional in (("chunk_size", chunk_size, True),
                                      ("chunk_size_max", chunk_size_max, True),
                                      ("length", length, True), ("seed", seed, False),
                                      ("fft_repeats", fft_repeats, False)):
            if (value is None and optional) or (isinstance(value, numbers.Integral)
                                                and not isinstance(value, bool)):
                continue
            null = {"chunk_size": " or null (the batch size)", "chunk_size_max": " or null",
                    "length": " or null (endless)"}.get(name, "")
            raise ValueError(f"{name}: expected a whole number{null}, got {value!r}")
        for name, value in (("latency_ms", latency_ms), ("cpu_ms", cpu_ms)):
            if isinstance(value, bool) or not isinstance(value, numbers.Real) \
                    or not math.isfinite(value) or value < 0:
                raise ValueError(f"{name}: expected a finite number of milliseconds >= 0, "
                                 f"got {value!r}")
        chunk_size = None if chunk_size is None else int(chunk_size)
        chunk_size_max = None if chunk_size_max is None else int(chunk_size_max)
        length = None if length is None else int(length)
        seed, fft_repeats = int(seed), int(fft_repeats)
        latency_ms, cpu_ms = float(latency_ms), float(cpu_ms)
        self.fields = _parse_fields(fields)
        if id_field is not None:
            if id_field in self.fields:
                raise ValueError(f"id_field '{id_field}' is also declared in fields; pick another name")
            self.fields[id_field] = ((), np.dtype(np.int64))
        if not self.fields:
            raise ValueError("fields: declare at least one field, e.g. fields.x={shape:[8],dtype:float32}")
        if chunk_size is not None and chunk_size < 0:
            raise ValueError(f"chunk_size: must be >= 0 or null (the batch size), got {chunk_size}")
        if chunk_size_max is not None:
            if chunk_size is None or chunk_size_max < chunk_size:
                raise ValueError(f"chunk_size_max ({chunk_size_max}) needs chunk_size set and "
                                 f"<= chunk_size_max (chunk_size={chunk_size})")
            if chunk_size_max == 0:
                raise ValueError("chunk_size_max: must be positive, or every chunk would be empty")
        elif chunk_size == 0:
            raise ValueError("chunk_size: 0 makes every chunk empty; set chunk_size_max for "
                             "random sizes that include empty chunks")
        if length is not None and length < 0:
            raise ValueError(f"length: must be >= 0 or null (endless), got {length}")
        if fft_repeats < 0:
            raise ValueError(f"fft_repeats: must be >= 0, got {fft_repeats}")
        if seed < 0:
            raise ValueError(f"seed: must be >= 0, got {seed}")
        self.fft_field = None
        if fft_repeats:
            floats = [name for name, (shape, dtype) in self.fields.items()
                      if dtype.kind == "f" and len(shape) >= 2]
            if not floats:
                raise ValueError("fft_repeats: needs a float field with at least 2 dimensions per "
                                 "sample, e.g. fields.x={shape:[32,32],dtype:float32}")
            self.fft_field = floats[0]
        self.fft_repeats = fft_repeats
        self.chunk_size = chunk_size
        self.chunk_size_max = chunk_size_max
        self.latency_s = latency_ms / 1000.0
        self.cpu_s = cpu_ms / 1000.0
        self.length = length
        self.id_field = id_field
        self.seed = seed
        self._lock = threading.Lock()
        self._next_chunk = 0  # the shared counter, used without setup()
        self._num_workers: int | None = None
        self._taken: dict[int, int] = {}  # chunks taken per worker, after setup()
        self._starts: list[np.ndarray] = []  # cumulative chunk starts, in blocks
        self._pools: dict[str, np.ndarray] = {}

    def setup(self, worker_id: int, num_workers: int) -> None:
        """Shard by worker: worker ``w`` of ``num_workers`` takes every num_workers-th chunk."""
        if num_workers < 1 or not 0 <= worker_id < num_workers:
            raise ValueError(f"setup: worker_id {worker_id} is not in 0..{num_workers - 1}")
        self._num_workers = num_workers

    def fetch(self, worker_id: int, batch_size_hint: int) -> dict[str, np.ndarray]:
        return self.fetch_into(worker_id, batch_size_hint, _allocate_private)

    def fetch_into(self, worker_id: int, batch_size_hint: int,
                   allocate: Allocate) -> dict[str, np.ndarray]:
        """``fetch`` writing straight into arrays from ``allocate(name, shape, dtype)``.

        Process workers pass an allocator that hands out shared memory, which saves the
        copy of every chunk into its slot; see docs/plugins.md.
        """
        if self._num_workers is None:
            with self._lock:
                index = self._next_chunk
                self._next_chunk += 1
        else:  # each worker id is used by one thread or process at a time
            taken = self._taken.get(worker_id, 0)
            self._taken[worker_id] = taken + 1
            index = worker_id + self._num_workers * taken
        start, size = self._span(index, batch_size_hint)
        if self.length is not None:
            if start >= self.length:
                raise SourceExhausted
            size = min(size, self.length - start)
        if self.latency_s:
            time.sleep(self.latency_s)
        if self.cpu_s:
            _spin(self.cpu_s)
        chunk = self._make_chunk(start, size, allocate)
        if self.fft_field is not None:
            _fft_work(chunk[self.fft_field], self.fft_repeats)
        return chunk

    def __len__(self) -> int:
        if self.length is None:
            raise TypeError("an endless SyntheticSource has no length; set length= to read "
                            "it by index")
        return self.length

    def read(self, indices: np.ndarray) -> dict[str, np.ndarray]:
        """The samples at ``indices``: the id field holds the indices, other fields pool data."""
        indices = np.asarray(indices, dtype=np.int64)
        if self.length is not None and len(indices) and \
                (indices.min() < 0 or indices.max() >= self.length):
            raise IndexError(f"read: indices must lie in 0..{self.length - 1}")
        if self.latency_s:
            time.sleep(self.latency_s)
        if self.cpu_s:
            _spin(self.cpu_s)
        chunk = self._make_chunk(0, len(indices), _allocate_private)
        if self.id_field is not None:
            chunk[self.id_field][...] = indices
        if self.fft_field is not None:
            _fft_work(chunk[self.fft_field], self.fft_repeats)
        return chunk

    def _span(self, index: int, hint: int) -> tuple[int, int]:
        """First sample and size of chunk ``index``: a pure function of the index."""
        if self.chunk_size_max is None:
            size = hint if self.chunk_size is None else self.chunk_size
            return index * size, size
        block, offset = divmod(index, _BLOCK)
        with self._lock:
            while len(self._starts) <= block:
                self._starts.append(self._start_block(len(self._starts)))
            starts = self._starts[block]
        return int(starts[offset]), int(starts[offset + 1] - starts[offset])

    def _start_block(self, block: int) -> np.ndarray:
        """Starts of chunks ``block*_BLOCK .. (block+1)*_BLOCK`` (one past the end included)."""
        rng = np.random.default_rng((self.seed, block))
        sizes = rng.integers(self.chunk_size, self.chunk_size_max + 1, size=_BLOCK)  # type: ignore[arg-type]
        first = 0 if block == 0 else int(self._starts[block - 1][-1])
        return first + np.concatenate(([0], np.cumsum(sizes)))

    def _make_chunk(self, start: int, size: int, allocate: Allocate) -> dict[str, np.ndarray]:
        chunk: dict[str, np.ndarray] = {}
        for name, (shape, dtype) in self.fields.items():
            out = allocate(name, (size, *shape), dtype)
            if name == self.id_field:
                out[...] = np.arange(start, start + size, dtype=np.int64)
            else:
                # A fresh array per chunk, filled from a random pool: one memcpy, like a
                # real source copying out of a file or a decoder, not a reused view.
                np.copyto(out, self._pool(name, shape, dtype, size)[:size])
            chunk[name] = out
        return chunk

    def _pool(self, name: str, shape: tuple[int, ...], dtype: np.dtype, size: int) -> np.ndarray:
        pool = self._pools.get(name)
        if pool is None or len(pool) < size:
            rng = np.random.default_rng((self.seed, len(self._pools), size))
            full = (max(size, 1), *shape)
            if dtype.kind == "f":
                pool = rng.random(full, dtype=np.float32).astype(dtype)
            else:  # small non-negative values fit every integer dtype; bool takes 0/1
                pool = rng.integers(0, 2 if dtype.kind == "b" else 100, size=full, dtype=np.uint8)
                pool = pool.astype(dtype)
            self._pools[name] = pool  # a racing thread may build one too: both are valid
        return pool


def _parse_fields(fields: Mapping[str, Mapping[str, Any]]) -> dict[str, tuple[tuple[int, ...], np.dtype]]:
    if not isinstance(fields, Mapping):
        raise ValueError(f"fields: expected a mapping of name -> {{shape, dtype}}, got {fields!r}")
    parsed = {}
    for name, spec in fields.items():
        if not isinstance(spec, Mapping):
            raise ValueError(f"fields.{name}: expected {{shape: [...], dtype: ...}}, got {spec!r}")
        unknown = set(spec) - {"shape", "dtype"}
        if unknown:
            raise ValueError(f"fields.{name}: unknown keys {sorted(unknown)}; use shape and dtype")
        shape = spec.get("shape", ())
        if isinstance(shape, int):
            shape = (shape,)
        try:
            shape = tuple(int(d) for d in shape)
        except (TypeError, ValueError):
            raise ValueError(f"fields.{name}.shape: expected a list of ints, got {shape!r}") from None
        if any(d < 0 for d in shape):
            raise ValueError(f"fields.{name}.shape: dimensions must be >= 0, got {list(shape)}")
        try:
            dtype = np.dtype(spec.get("dtype", "float32"))
        except TypeError:
            raise ValueError(f"fields.{name}.dtype: {spec.get('dtype')!r} is not a numpy dtype "
                             "(e.g. float32, uint8, int64)") from None
        if dtype.kind not in "biuf":
            raise ValueError(f"fields.{name}.dtype: {dtype} is not supported; use a bool, "
                             "integer or floating dtype")
        parsed[str(name)] = (shape, dtype)
    return parsed


def _spin(seconds: float) -> None:
    """Spend ``seconds`` of this thread's CPU time in Python bytecode, like pure-Python work.

    Counted in thread CPU time, not wall time: threads that share the GIL take turns,
    so N threads doing this get no more done than one.
    """
    end = time.thread_time() + seconds
    while time.thread_time() < end:
        pass


def _fft_work(samples: np.ndarray, repeats: int) -> None:
    """Real numpy work per sample, in place: ``repeats`` 2-D FFT round trips (GIL-bound in threads)."""
    for i in range(len(samples)):
        sample = samples[i]
        for _ in range(repeats):
            sample = np.fft.irfft2(np.fft.rfft2(sample), s=sample.shape[-2:])
        samples[i] = sample


def _allocate_private(name: str, shape: tuple[int, ...], dtype: np.dtype) -> np.ndarray:
    return np.empty(shape, dtype)

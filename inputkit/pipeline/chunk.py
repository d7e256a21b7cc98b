"""Chunks: what one fetch returns, checked and normalised before it enters a queue.

The first chunk of an input fixes its *schema* (field names, dtypes, trailing
shapes); every later chunk, from any worker or device, must match it. Checks run
in the workers, off the consumer's path, and fail with a SourceError naming the
source, the field and what was expected.
"""

from __future__ import annotations

import threading
from collections.abc import Mapping, Sequence
from dataclasses import dataclass

import numpy as np

from inputkit.errors import SourceError

FieldSpec = tuple[np.dtype, tuple[int, ...]]
_TENSOR_KINDS = "biufc"  # numpy kinds torch.from_numpy accepts


@dataclass(slots=True)
class Chunk:
    """A checked fetch result: ``n`` samples in each of ``fields``. Not changed once made
    (not frozen: a frozen dataclass takes 1.3 us to make against 0.5, paid on every chunk)."""

    fields: dict[str, np.ndarray]
    n: int
    nbytes: int
    worker_id: int
    # Views into a process worker's shared-memory slot: they must not reach the consumer
    # (who may keep them and so hold the slot forever) unless the device stage copies them.
    borrowed: bool = False


class ChunkSchema:
    """Checks fetch results of one input; shared by all its workers (thread-safe)."""

    def __init__(self, source_name: str) -> None:
        self.source_name = source_name
        self._lock = threading.Lock()
        self._fields: dict[str, FieldSpec] | None = None

    @property
    def fields(self) -> dict[str, FieldSpec] | None:
        """Field name -> (dtype, trailing shape), once the first chunk has arrived."""
        return self._fields

    def check(self, raw: object, worker_id: int) -> Chunk:
        """Normalise ``raw`` to a Chunk, or raise a SourceError saying what is wrong."""
        fast = self._check_fast(raw, worker_id)
        if fast is not None:
            return fast
        arrays = self._as_mapping(raw, worker_id)
        lengths = {name: arr.shape[0] for name, arr in arrays.items()}
        if len(set(lengths.values())) > 1:
            found = ", ".join(f"{k}={v}" for k, v in lengths.items())
            raise SourceError(self.source_name, f"fields have different leading lengths ({found}) "
                              f"in one chunk from worker {worker_id}; every field needs one entry "
                              "per sample")
        spec = {name: (arr.dtype, arr.shape[1:]) for name, arr in arrays.items()}
        expected = self._fields
        if expected is None:
            with self._lock:
                if self._fields is None:
                    self._fields = spec
                expected = self._fields
        if spec != expected:
            self._explain_mismatch(expected, spec, worker_id)
        n = next(iter(lengths.values()))
        nbytes = sum(arr.nbytes for arr in arrays.values())
        return Chunk(fields=arrays, n=n, nbytes=nbytes, worker_id=worker_id)

    def _check_fast(self, raw: object, worker_id: int) -> Chunk | None:
        """The common case in one pass: a dict with exactly the known fields, all well-formed.

        Anything unusual returns None, and the full check explains what is wrong.
        """
        expected = self._fields
        if expected is None or type(raw) is not dict or len(raw) != len(expected):
            return None
        n = -1
        nbytes = 0
        for name, (dtype, trailing) in expected.items():
            arr = raw.get(name)
            if type(arr) is not np.ndarray or arr.dtype != dtype or arr.shape[1:] != trailing \
                    or arr.ndim == 0 or (n >= 0 and arr.shape[0] != n):
                return None
            n = arr.shape[0]
            nbytes += arr.nbytes
        return Chunk(fields=raw, n=n, nbytes=nbytes, worker_id=worker_id)

    def _as_mapping(self, raw: object, worker_id: int) -> dict[str, np.ndarray]:
        if isinstance(raw, Mapping):
            items = list(raw.items())
        elif isinstance(raw, np.ndarray):
            raise SourceError(self.source_name, f"fetch returned a bare array of shape {raw.shape} "
                              f"(worker {worker_id}); return a dict like {{'x': array}} or a list "
                              "of arrays")
        elif isinstance(raw, Sequence) and not isinstance(raw, (str, bytes)):
            items = [(str(i), value) for i, value in enumerate(raw)]
        else:
            what = "None" if raw is None else type(raw).__name__
            raise SourceError(self.source_name, f"fetch returned {what} (worker {worker_id}); it "
                              "must return a dict of numpy arrays (or a list of them), or raise "
                              "inputkit.SourceExhausted at the end of the epoch")
        if not items:
            raise SourceError(self.source_name, f"fetch returned no fields (worker {worker_id}); "
                              "return at least one array, even with zero samples")
        arrays: dict[str, np.ndarray] = {}
        for name, value in items:
            if not isinstance(name, str):
                raise SourceError(self.source_name, f"field names must be strings, got {name!r}")
            if isinstance(value, np.generic) or (isinstance(value, np.ndarray) and value.ndim == 0):
                raise SourceError(self.source_name, f"is a scalar ({value!r}); every field needs a "
                                  "leading sample dimension, e.g. np.array([label])", field=name)
            if not isinstance(value, np.ndarray):
                raise SourceError(self.source_name, f"expected a numpy array, got "
                                  f"{type(value).__name__}; convert it with np.asarray in fetch",
                                  field=name)
            if value.dtype.hasobject:
                raise SourceError(self.source_name, f"has dtype {value.dtype}, which holds Python "
                                  "objects; use a numeric dtype", field=name)
            if value.dtype.kind not in _TENSOR_KINDS:
                raise SourceError(self.source_name, f"has dtype {value.dtype}, which cannot become a "
                                  "tensor; use bool, integer, float or complex (encode strings as "
                                  "integer ids or uint8 bytes)", field=name)
            arrays[name] = value
        return arrays

    def _explain_mismatch(self, expected: dict[str, FieldSpec], got: dict[str, FieldSpec],
                          worker_id: int) -> None:
        missing = [k for k in expected if k not in got]
        if missing:
            raise SourceError(self.source_name, f"missing from a chunk of worker {worker_id}; "
                              f"earlier chunks had fields {sorted(expected)}", field=missing[0])
        extra = [k for k in got if k not in expected]
        if extra:
            raise SourceError(self.source_name, f"appeared in a chunk of worker {worker_id} but not "
                              f"in earlier chunks (fields {sorted(expected)})", field=extra[0])
        for name, (dtype, shape) in got.items():
            want_dtype, want_shape = expected[name]
            if dtype != want_dtype:
                raise SourceError(self.source_name, f"dtype changed from {want_dtype} to {dtype} "
                                  f"(worker {worker_id}); a field keeps one dtype", field=name)
            if shape != want_shape:
                raise SourceError(self.source_name, f"per-sample shape changed from "
                                  f"{list(want_shape)} to {list(shape)} (worker {worker_id}); "
                                  "a field keeps one shape per sample", field=name)


def check_read(chunk: Chunk, expect: int | None, source: str) -> Chunk:
    """``chunk`` if it holds the ``expect`` samples a ``read(indices)`` was asked for."""
    if expect is not None and chunk.n != expect:
        raise SourceError(source, f"read(indices) returned {chunk.n} samples for {expect} "
                          "indices; it must return exactly one sample per index, in order")
    return chunk


def with_field(chunk: Chunk, name: str, values: np.ndarray) -> Chunk:
    """``chunk`` with one more field (one value per sample)."""
    fields = dict(chunk.fields)
    fields[name] = values
    return Chunk(fields=fields, n=chunk.n, nbytes=chunk.nbytes + values.nbytes,
                 worker_id=chunk.worker_id, borrowed=chunk.borrowed)


def private_copy(chunk: Chunk) -> Chunk:
    """A chunk that holds no worker's memory (a shared-memory slot, a Ray object): for the
    reorder buffer, where chunks may wait long."""
    if not chunk.borrowed:
        return chunk
    return Chunk(fields={k: v.copy() for k, v in chunk.fields.items()}, n=chunk.n,
                 nbytes=chunk.nbytes, worker_id=chunk.worker_id)

"""Read an existing ``torch.utils.data.Dataset`` through inputkit's workers.

::

    source:
      _target_: inputkit.sources.torch_dataset.TorchDatasetSource
      dataset: {_target_: mypkg.MyDataset, root: /data}    # built with hydra's instantiate
    # or: dataset: mypkg.MyDataset  with  dataset_args: {root: /data}

A *map-style* dataset (``__len__`` and ``__getitem__``) makes an indexable source:
the pipeline hands out index ranges (exactly-once epochs, ``epoch.shuffle``, worker
restarts), and ``read(indices)`` calls ``dataset[i]`` for each index and copies each
sample into arrays allocated once per chunk. An ``IterableDataset`` makes a plain
fetch source: every worker runs its own iterator, and sharding is the dataset's
(:func:`worker_info`) or, with ``shard=True``, the source's. See docs/torch.md.

This module imports torch; inputkit imports it only when a config names it.
"""

from __future__ import annotations

import numbers
import threading
from collections.abc import Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import torch
from torch.utils.data import IterableDataset

from inputkit.errors import SourceError, SourceExhausted

_TENSOR_KINDS = "biufc"  # what torch.from_numpy accepts, as in inputkit.pipeline.chunk
_local = threading.local()  # the _WorkerState of the worker running in this thread


@dataclass
class _WorkerState:
    """One worker's view of the source: its id, its share and (iterable datasets) its iterator."""

    worker_id: int
    num_workers: int
    iterator: Iterator[Any] | None = None
    items: int = 0  # items drawn from the iterator, kept or skipped
    skip: bool | None = None  # shard=True and the dataset does not shard itself (decided once)
    consulted: bool = False  # the dataset called worker_info() in this worker
    done: bool = False


def worker_info() -> tuple[int, int]:
    """``(worker_id, num_workers)`` of the inputkit worker that runs the calling code.

    The counterpart of ``torch.utils.data.get_worker_info()`` for datasets read by
    :class:`TorchDatasetSource`: an ``IterableDataset`` calls it in ``__iter__`` to
    take its share (``range(worker_id, n, num_workers)``). ``num_workers`` counts the
    input's workers on every device; ids are unique across them. Outside an inputkit
    worker (your own loop, torch's DataLoader) it returns ``(0, 1)``: the whole dataset.

    An ``IterableDataset`` that calls it before yielding its first item is trusted to
    shard itself, so ``shard=True`` leaves its items alone.
    """
    state: _WorkerState | None = getattr(_local, "state", None)
    if state is None:
        return 0, 1
    state.consulted = True
    return state.worker_id, state.num_workers


@dataclass(frozen=True)
class _Field:
    name: str
    key: Any  # the dict key or tuple position of the field in a sample; None: the sample itself
    shape: tuple[int, ...]
    dtype: np.dtype
    kind: type  # the type of the value in the first sample: the bulk copy expects it throughout
    torch_dtype: Any = None  # for tensor fields


@dataclass
class _Layout:
    """What the first sample looked like: every later sample must match it."""

    structure: str  # "dict", "sequence" or "single"
    fields: list[_Field]
    first: str  # which sample defined it, for messages ("index 0")
    keys: set[Any] = field(default_factory=set)  # dict samples without fields=: the exact keys
    width: int = 0  # tuple samples: how many values each has (fields may drop some)

    def allocate(self, n: int) -> dict[str, np.ndarray]:
        return {f.name: np.empty((n, *f.shape), f.dtype) for f in self.fields}


class _Unsupported(Exception):  # noqa: N818 - internal: a value that cannot become an array
    pass


class TorchDatasetSource:
    """An inputkit source over a torch ``Dataset``: map-style (indexable) or iterable.

    ``dataset``: the dataset object (a nested ``{_target_: ...}`` config is built
    before it gets here), or the dotted name of a dataset class or factory, called
    with ``dataset_args``. ``fields``: names for the fields of tuple (or single-value)
    samples, in order, where ``None`` drops the value at that position (a file name in
    ``(image, label, path)``); for dict samples, the keys to keep (others, e.g. strings,
    are ignored). As a mapping ``{name: {shape, dtype}}`` it also declares each field's
    per-sample shape and dtype (``name: None`` drops that position): the first sample is
    checked against them, and the memory planner takes its sizes from them instead of
    probing.

    ``shard`` (iterable datasets only): unless the dataset takes its share with
    :func:`worker_info`, worker ``w`` of ``n`` keeps items ``w, w + n, ...`` of its own
    iterator, so each item arrives once (every worker still iterates every item).
    """

    def __init__(self, dataset: Any, fields: Sequence[str] | Mapping[str, Any] | None = None,
                 shard: bool = True, dataset_args: Mapping[str, Any] | None = None) -> None:
        self.declared: dict[str, tuple[tuple[int, ...], np.dtype]] = {}
        if isinstance(fields, Mapping):  # {name: {shape, dtype}}: names, checked, and sizes to plan
            from inputkit.sources.synthetic import _parse_fields

            if not fields:
                raise ValueError("fields: declare at least one field, or leave fields out")
            # name: null drops that value (a tuple sample's position); the name only labels it
            self.declared = _parse_fields({k: v for k, v in fields.items() if v is not None})
            names: list[str | None] = [str(k) if v is not None else None for k, v in fields.items()]
        elif fields is not None:
            if isinstance(fields, str) or not isinstance(fields, Sequence) or not fields:
                raise ValueError(f"fields: expected a non-empty list of field names, got {fields!r}")
            if not all(name is None or (isinstance(name, str) and name) for name in fields):
                raise ValueError(f"fields: every name must be a non-empty string (or null to drop "
                                 f"that value of a tuple sample), got {list(fields)!r}")
            names = [None if name is None else str(name) for name in fields]
        if fields is not None:
            kept = [name for name in names if name is not None]
            if not kept:
                raise ValueError(f"fields: every value is dropped (null); keep at least one, got "
                                 f"{list(fields)!r}")
            if len(set(kept)) != len(kept):
                raise ValueError(f"fields: names must be unique, got {list(fields)!r}")
            fields = names
        if not isinstance(shard, bool):
            raise ValueError(f"shard: expected true or false, got {shard!r}")
        if dataset_args is not None and not isinstance(dataset_args, Mapping):
            raise ValueError(f"dataset_args: expected a mapping of keyword arguments, got {dataset_args!r}")
        if isinstance(dataset, str):
            dataset = _build_named(dataset, dict(dataset_args or {}))
        elif dataset_args is not None:
            raise ValueError("dataset_args: only goes with a dotted-name dataset (dataset: "
                             "mypkg.MyDataset); a nested {_target_: ...} dataset takes its "
                             "arguments next to its _target_")
        if isinstance(dataset, (Mapping, type, numbers.Number, str, bytes)) or dataset is None:
            raise TypeError(f"dataset: expected a torch Dataset object (a nested {{_target_: "
                            f"mypkg.MyDataset, ...}} config, or a dotted name with dataset_args), "
                            f"got {_describe_value(dataset)}")
        if isinstance(dataset, IterableDataset) or (
                callable(getattr(dataset, "__iter__", None))
                and not callable(getattr(dataset, "__getitem__", None))):
            self.iterable = True
        elif callable(getattr(dataset, "__getitem__", None)) and callable(getattr(dataset, "__len__", None)):
            self.iterable = False
            length = len(dataset)
            if not isinstance(length, numbers.Integral) or length < 0:
                raise ValueError(f"dataset: len() of {_describe_type(dataset)} is {length!r}; "
                                 "expected a whole number >= 0")
        elif callable(getattr(dataset, "__getitem__", None)):
            raise TypeError(f"dataset: {_describe_type(dataset)} has __getitem__ but no __len__; "
                            "a map-style dataset needs both (or derive it from "
                            "torch.utils.data.IterableDataset)")
        else:
            raise TypeError(f"dataset: {_describe_value(dataset)} is not a dataset: it needs "
                            "__getitem__ and __len__ (map-style) or __iter__ (iterable)")
        self.dataset = dataset
        self.fields = fields
        self.shard = shard
        self.name = _describe_type(dataset)  # the source named in SourceErrors
        self._getitems = getattr(dataset, "__getitems__", None) if not self.iterable else None
        self._layout: _Layout | None = None
        self._lock = threading.Lock()
        self._num_workers: int | None = None
        self._workers: dict[int, _WorkerState] = {}  # per worker id: thread workers share us
        self._by_thread: dict[int, _WorkerState] = {}  # per thread ident, for read()

    def __repr__(self) -> str:
        kind = "iterable" if self.iterable else f"map-style, {len(self.dataset)} samples"
        return f"TorchDatasetSource({self.name}, {kind})"

    # the worker hooks -------------------------------------------------------------------------

    def setup(self, worker_id: int, num_workers: int) -> None:
        """Record this worker's share, which :func:`worker_info` returns inside read and fetch."""
        if num_workers < 1 or not 0 <= worker_id < num_workers:
            raise ValueError(f"setup: worker_id {worker_id} is not in 0..{num_workers - 1}")
        self._num_workers = num_workers
        state = _WorkerState(worker_id, num_workers)
        self._workers[worker_id] = state  # one thread (or process) per worker id
        self._by_thread[threading.get_ident()] = state

    def close(self) -> None:
        """Close the iterators the workers opened (generators release their files)."""
        workers, self._workers = self._workers, {}
        self._by_thread = {}
        for state in workers.values():
            close = getattr(state.iterator, "close", None)
            if callable(close):
                close()

    # map-style: indexable ----------------------------------------------------------------------

    def __len__(self) -> int:
        if self.iterable:
            raise TypeError(f"{self.name} is an IterableDataset: it has no length, inputkit "
                            "reads it with fetch")
        return len(self.dataset)

    def read(self, indices: np.ndarray) -> dict[str, np.ndarray]:
        """``dataset[i]`` for each index, in order, collated into one array per field."""
        if self.iterable:
            raise TypeError(f"{self.name} is an IterableDataset; it cannot be read by index")
        positions = np.asarray(indices, dtype=np.int64).tolist()
        previous = getattr(_local, "state", None)
        _local.state = self._by_thread.get(threading.get_ident())  # for worker_info()
        try:
            return self._read(positions)
        finally:
            _local.state = previous

    def _read(self, positions: list[int]) -> dict[str, np.ndarray]:
        if not positions:
            layout = self._layout or self._learn(self._get(0), "index 0")
            return layout.allocate(0)
        if self._getitems is not None:
            samples = self._get_many(positions)
            if len(samples) != len(positions):
                raise SourceError(self.name, f"__getitems__ returned {len(samples)} samples for "
                                  f"{len(positions)} indices; it must return one per index")
        else:
            get = self._get
            samples = [get(index) for index in positions]
        return self._collate(samples, positions, "index {}")

    def _get(self, index: int) -> Any:
        try:
            return self.dataset[index]
        except Exception as exc:
            _note(exc, f"[inputkit] raised by {self.name}.__getitem__({index}), called by "
                  "TorchDatasetSource.read")
            raise

    def _get_many(self, positions: list[int]) -> list[Any]:
        try:
            return list(self._getitems(positions))  # type: ignore[misc]
        except Exception as exc:
            _note(exc, f"[inputkit] raised by {self.name}.__getitems__ for {len(positions)} "
                  f"indices from {positions[0]}, called by TorchDatasetSource.read")
            raise

    # iterable: fetch ----------------------------------------------------------------------------

    def fetch(self, worker_id: int, batch_size_hint: int) -> dict[str, np.ndarray]:
        """Up to ``batch_size_hint`` items of this worker's iterator, collated; then SourceExhausted."""
        if not self.iterable:
            raise TypeError(f"{self.name} is a map-style dataset: the pipeline reads it with "
                            "read(indices), not fetch")
        state = self._workers.get(worker_id)
        if state is None:  # fetch without setup (by hand): this worker id reads everything
            state = self._workers[worker_id] = _WorkerState(0, 1)
        if state.done:
            raise SourceExhausted
        wanted = max(1, int(batch_size_hint))
        previous = getattr(_local, "state", None)
        _local.state = state  # worker_info() in the dataset's code answers for this worker
        try:
            out = self._collect(state, worker_id, wanted)
        finally:
            _local.state = previous
        if out is None:
            raise SourceExhausted
        return out

    def _collect(self, state: _WorkerState, worker_id: int,
                 wanted: int) -> dict[str, np.ndarray] | None:
        if state.iterator is None:
            try:
                state.iterator = iter(self.dataset)
            except Exception as exc:
                _note(exc, f"[inputkit] raised by iter() of {self.name} in worker {worker_id}")
                raise
            if state.iterator is self.dataset:
                raise SourceError(self.name, "__iter__ returned the dataset itself; every worker "
                                  "needs its own iterator: make __iter__ a generator (or return a "
                                  "new iterator on each call)")
        iterator = state.iterator
        samples: list[Any] = []
        items: list[int] = []
        while len(samples) < wanted:
            try:
                sample = next(iterator)
            except StopIteration:
                state.done = True
                break
            except Exception as exc:
                _note(exc, f"[inputkit] raised by the iterator of {self.name} in worker "
                      f"{worker_id}, after {state.items} items")
                raise
            item = state.items
            state.items += 1
            if state.skip is None:  # decided once: did the dataset take its share itself?
                state.skip = self.shard and state.num_workers > 1 and not state.consulted
            if state.skip and item % state.num_workers != state.worker_id:
                continue
            samples.append(sample)
            items.append(item)
        if not samples:
            return None
        return self._collate(samples, items, f"item {{}} of worker {worker_id}'s iterator")

    # the layout and collation ------------------------------------------------------------------

    def _collate(self, samples: list[Any], labels: list[int], template: str) -> dict[str, np.ndarray]:
        """One array per field, allocated once, each sample copied in; ``template.format(label)``
        names a sample in errors ("index 5")."""
        layout = self._layout or self._learn(samples[0], template.format(labels[0]))
        out = layout.allocate(len(samples))
        if not _fill_bulk(layout, out, samples):  # something is unusual: sample by sample
            for j, sample in enumerate(samples):
                _put(layout, out, j, sample, template, labels[j], self.name)
        return out

    def _learn(self, sample: Any, where: str) -> _Layout:
        """The layout of the first sample (the first one wins when threads race)."""
        layout = _layout_of(sample, self.fields, where, self.name)
        for f in layout.fields:
            if f.name in self.declared and self.declared[f.name] != (f.shape, f.dtype):
                shape, dtype = self.declared[f.name]
                raise SourceError(self.name, f"{where}: has shape {list(f.shape)} and dtype "
                                  f"{f.dtype}; fields declares shape {list(shape)} and dtype "
                                  f"{dtype}", field=f.name)
        with self._lock:
            if self._layout is None:
                self._layout = layout
            return self._layout


def _layout_of(sample: Any, fields: list[str | None] | None, where: str, source: str) -> _Layout:
    """The layout of ``sample``; ``fields`` names its values (None: drop the value there)."""
    if fields is not None and None in fields and not isinstance(sample, (tuple, list)):
        kind = "a dict" if isinstance(sample, Mapping) else "a single-value"
        raise SourceError(source, f"{where}: fields {fields} has null, but the sample is {kind} "
                          "sample: null drops a value of a tuple sample; a dict sample keeps "
                          "only the keys listed (leave the others out)")
    width = len(sample) if isinstance(sample, (tuple, list)) else 0
    if isinstance(sample, Mapping):
        if fields is None:
            keys = list(sample.keys())
            for key in keys:
                if not isinstance(key, str):
                    raise SourceError(source, f"{where}: a dict sample has the key {key!r}; field "
                                      "names must be strings")
            pairs = [(key, key) for key in keys]
        else:
            listed = [name for name in fields if name is not None]
            missing = [name for name in listed if name not in sample]
            if missing:
                raise SourceError(source, f"{where}: the sample has no key {missing[0]!r} (it has "
                                  f"{sorted(map(str, sample))}); fields lists the keys to keep",
                                  field=missing[0])
            pairs = [(name, name) for name in listed]
        structure = "dict"
    elif isinstance(sample, (tuple, list)):
        names = fields if fields is not None else [str(i) for i in range(len(sample))]
        if len(names) != len(sample):
            raise SourceError(source, f"{where}: the sample has {len(sample)} values and fields "
                              f"names {len(names)} ({names}); name every value, in order (null "
                              "drops a value)")
        if not names:
            raise SourceError(source, f"{where}: the sample is an empty {type(sample).__name__}")
        pairs = [(name, i) for i, name in enumerate(names) if name is not None]
        structure = "sequence"
    else:
        if fields is not None and len(fields) != 1:
            raise SourceError(source, f"{where}: the sample is a single value, and fields names "
                              f"{len(fields)} ({fields}); give one name")
        pairs = [(fields[0] if fields else "0", None)]
        structure = "single"
    out = []
    for name, key in pairs:
        value = sample if key is None else sample[key]
        try:
            arr = _as_array(value)
        except _Unsupported as exc:
            hint = " (or list the numeric fields to keep in fields=[...])" if structure == "dict" else ""
            raise SourceError(source, f"{where}: {exc}{hint}", field=name) from None
        if arr.dtype.kind not in _TENSOR_KINDS:
            raise SourceError(source, f"{where}: has dtype {arr.dtype}, which cannot become a "
                              "tensor; use bool, integer, float or complex", field=name)
        kind = torch.Tensor if isinstance(value, torch.Tensor) else type(value)
        out.append(_Field(name, key, tuple(arr.shape), arr.dtype, kind,
                          value.dtype if kind is torch.Tensor else None))
    keys = set(sample.keys()) if structure == "dict" and fields is None else set()
    return _Layout(structure, out, where, keys, width)


def _fill_bulk(layout: _Layout, out: dict[str, np.ndarray], samples: list[Any]) -> bool:
    """Copy every sample into ``out`` a field at a time (torch.stack / np.stack straight into
    the output, or one conversion of a list of numbers) when every sample has the first one's
    structure and types. False when anything differs: the caller then goes sample by sample,
    which accepts compatible mixes (an int where a 0-d int64 tensor was) and names the culprit."""
    try:
        structure = layout.structure
        if structure == "dict":
            keys = layout.keys
            if keys:
                if not all(type(s) is dict and s.keys() == keys for s in samples):
                    return False
            elif not all(type(s) is dict for s in samples):
                return False
        elif structure == "sequence":
            size = layout.width
            if not all(type(s) in (tuple, list) and len(s) == size for s in samples):
                return False
        for f in layout.fields:
            key = f.key
            values = samples if key is None else [s[key] for s in samples]
            if not _fill_field(f, out[f.name], values):
                return False
    except Exception:  # the sample-by-sample path explains it
        return False
    return True


def _fill_field(f: _Field, out: np.ndarray, values: list[Any]) -> bool:
    kind = f.kind
    if kind is torch.Tensor:
        dtype, shape = f.torch_dtype, f.shape
        if not all(isinstance(v, torch.Tensor) and v.dtype is dtype and v.shape == shape
                   and not v.requires_grad for v in values):
            return False
        torch.stack(values, out=torch.from_numpy(out))  # fails on other devices
        return True
    if kind is np.ndarray:
        dtype, shape = f.dtype, f.shape
        if not all(type(v) is np.ndarray and v.dtype == dtype and v.shape == shape for v in values):
            return False
        np.stack(values, out=out)
        return True
    if kind in (int, float, bool) or issubclass(kind, np.generic):
        if set(map(type, values)) != {kind}:
            return False
        out[...] = values
        return True
    return False


def _put(layout: _Layout, out: dict[str, np.ndarray], j: int, sample: Any, template: str,
         label: int, source: str) -> None:
    """Copy one sample into row ``j`` of ``out``, checking it against the layout.

    ``template.format(label)`` names the sample in errors ("index 5"), formatted only then.
    """
    try:
        _put_checked(layout, out, j, sample)
    except _Mismatch as exc:
        raise SourceError(source, f"{template.format(label)}: {exc.message}", field=exc.field) \
            from None


class _Mismatch(Exception):  # noqa: N818 - internal: a sample that does not fit the layout
    def __init__(self, message: str, field: str | None = None) -> None:
        super().__init__(message)
        self.message = message
        self.field = field


def _put_checked(layout: _Layout, out: dict[str, np.ndarray], j: int, sample: Any) -> None:
    structure = layout.structure
    if structure == "dict":
        if not isinstance(sample, Mapping):
            raise _structure_changed(layout, sample)
        if layout.keys and (len(sample) != len(layout.keys) or sample.keys() != layout.keys):
            extra = sorted(map(str, set(sample.keys()) - layout.keys))
            missing = sorted(map(str, layout.keys - set(sample.keys())))
            if missing:
                raise _Mismatch(f"the key is missing; the first sample ({layout.first}) had keys "
                                f"{sorted(map(str, layout.keys))}", missing[0])
            raise _Mismatch(f"a key the first sample ({layout.first}) did not have; list the "
                            "keys to keep in fields=[...]", extra[0])
    elif structure == "sequence":
        if not isinstance(sample, (tuple, list)):
            raise _structure_changed(layout, sample)
        if len(sample) != layout.width:
            raise _Mismatch(f"the sample has {len(sample)} values; the first sample "
                            f"({layout.first}) had {layout.width}")
    for f in layout.fields:
        if f.key is None:
            value = sample
        else:
            try:
                value = sample[f.key]
            except KeyError:
                raise _Mismatch(f"the sample has no key {f.key!r}", f.name) from None
        try:
            arr = _as_array(value)
        except _Unsupported as exc:
            raise _Mismatch(str(exc), f.name) from None
        if arr.shape != f.shape:
            raise _Mismatch(f"per-sample shape {list(arr.shape)} differs from {list(f.shape)}, "
                            f"the shape of the first sample ({layout.first}); a field keeps one "
                            "shape (pad or crop in the dataset)", f.name)
        if arr.dtype != f.dtype:
            raise _Mismatch(f"dtype {arr.dtype} differs from {f.dtype}, the dtype of the first "
                            f"sample ({layout.first}); a field keeps one dtype", f.name)
        out[f.name][j] = arr


def _structure_changed(layout: _Layout, sample: Any) -> _Mismatch:
    return _Mismatch(f"the sample is a {type(sample).__name__}; the first sample "
                     f"({layout.first}) was a {layout.structure} sample")


def _as_array(value: Any) -> np.ndarray | np.generic:
    """A numpy view of one field of one sample: no copy for tensors and arrays."""
    kind = type(value)
    if kind is np.ndarray:
        return value
    if isinstance(value, torch.Tensor):
        if not value.is_cpu:
            raise _Unsupported(f"is a tensor on {value.device}; return CPU tensors from the "
                               "dataset (inputkit moves whole batches to the device)")
        if value.requires_grad:
            value = value.detach()
        try:
            return value.numpy()
        except (TypeError, RuntimeError) as exc:
            raise _Unsupported(f"is a {value.dtype} tensor that numpy cannot hold ({exc}); "
                               "convert it in the dataset, e.g. .float()") from None
    if kind is bool or isinstance(value, np.bool_):
        return np.bool_(value)
    if kind is int:
        try:
            return np.int64(value)
        except OverflowError:
            raise _Unsupported(f"is the int {value}, which does not fit in int64") from None
    if kind is float:
        return np.float32(value)
    if isinstance(value, (np.generic, np.ndarray)):
        return value
    if isinstance(value, bool):
        return np.bool_(value)
    if isinstance(value, numbers.Integral):
        return np.int64(int(value))
    if isinstance(value, numbers.Real):
        return np.float32(float(value))
    raise _Unsupported(f"is {_describe_value(value)}, which inputkit cannot collate: samples hold "
                       "tensors, numpy arrays or numbers (convert it in the dataset, e.g. with a "
                       "transform)")


def _build_named(name: str, args: dict[str, Any]) -> Any:
    from inputkit.sources.loader import import_target

    target = import_target(name, key="source.dataset")
    args = {key: _instantiate(value) for key, value in args.items()}
    if not isinstance(target, type) and (callable(getattr(target, "__getitem__", None))
                                         or callable(getattr(target, "__iter__", None))):
        if args:  # a ready dataset object, e.g. a module-level instance
            raise ValueError(f"dataset_args: {name} is an existing {_describe_type(target)} object; "
                             f"it takes no arguments (got {', '.join(sorted(args))})")
        return target
    if not callable(target):
        raise TypeError(f"dataset: {name} is {_describe_value(target)}, not a dataset class, "
                        "factory or object")
    try:
        return target(**args)
    except TypeError as exc:
        raise TypeError(f"dataset: {name}(**dataset_args) failed: {exc}") from exc


def _instantiate(value: Any) -> Any:
    if isinstance(value, Mapping) and "_target_" in value:
        from hydra.utils import instantiate

        return instantiate(dict(value))
    return value


def dataset_kind(source: Mapping[str, Any]) -> str | None:
    """"map" or "iterable" for a TorchDatasetSource config whose dataset is a class, found
    without building it; None when that takes building it (a factory, an object)."""
    dataset = source.get("dataset")
    if isinstance(dataset, Mapping):
        dataset = dataset.get("_target_")
    if not isinstance(dataset, str):
        return None
    from inputkit.sources.loader import import_target

    try:
        target = import_target(dataset, key="source.dataset")
    except Exception:
        return None  # building the source reports it
    if not isinstance(target, type):
        return None
    if issubclass(target, IterableDataset):
        return "iterable"
    if callable(getattr(target, "__getitem__", None)) and callable(getattr(target, "__len__", None)):
        return "map"
    return None


def _note(exc: BaseException, text: str) -> None:
    if hasattr(exc, "add_note"):  # Python >= 3.11
        exc.add_note(text)


def _describe_type(obj: Any) -> str:
    cls = obj if isinstance(obj, type) else type(obj)
    module = cls.__module__
    return cls.__qualname__ if module in ("builtins", "__main__") else f"{module}.{cls.__qualname__}"


def _describe_value(value: Any) -> str:
    if value is None:
        return "None"
    if isinstance(value, type):
        return f"the class {_describe_type(value)} (an instance is needed)"
    text = repr(value)
    if len(text) > 60:
        text = text[:57] + "..."
    return f"a {_describe_type(value)} ({text})"

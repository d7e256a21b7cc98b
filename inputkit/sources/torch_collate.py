"""How the torch-dataset source turns samples into arrays: the layout, then one copy each.

Its own module because collation is the one job every read and fetch shares and the one
place samples are checked: the first sample fixes a layout (dict, tuple or single value;
each field's shape and dtype, checked against ``fields``' declarations), and every chunk is
then allocated once and filled a field at a time (``torch.stack`` / ``np.stack`` straight
into the output) or, when anything is unusual, sample by sample, which names the culprit.
"""

from __future__ import annotations

import numbers
import threading
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import torch

from inputkit.errors import SourceError
from inputkit.sources.torch_describe import describe_value

_TENSOR_KINDS = "biufc"  # what torch.from_numpy accepts, as in inputkit.pipeline.chunk


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


class Collator:
    """The layout of one source's samples, learnt from the first, and the chunks built by it.

    ``fields``: names by position (None drops that value) or None; ``declared``: per-sample
    shape and dtype a field must have; ``source``: the name errors give. Thread workers share
    one: the first layout learnt wins.
    """

    def __init__(self, fields: list[str | None] | None,
                 declared: Mapping[str, tuple[tuple[int, ...], np.dtype]], source: str) -> None:
        self.fields = fields
        self.declared = declared
        self.source = source
        self._layout: _Layout | None = None
        self._lock = threading.Lock()

    def collate(self, samples: list[Any], labels: list[int], template: str) -> dict[str, np.ndarray]:
        """One array per field, allocated once, each sample copied in; ``template.format(label)``
        names a sample in errors ("index 5")."""
        layout = self._layout or self._learn(samples[0], template.format(labels[0]))
        out = layout.allocate(len(samples))
        if not _fill_bulk(layout, out, samples):  # something is unusual: sample by sample
            for j, sample in enumerate(samples):
                _put(layout, out, j, sample, template, labels[j], self.source)
        return out

    def empty(self, first: Callable[[], Any], where: str) -> dict[str, np.ndarray]:
        """Zero-row arrays of every field; the layout is learnt from ``first()`` (the sample
        ``where`` names) when no chunk has fixed it yet."""
        layout = self._layout or self._learn(first(), where)
        return layout.allocate(0)

    def _learn(self, sample: Any, where: str) -> _Layout:
        """The layout of the first sample (the first one wins when threads race)."""
        layout = _layout_of(sample, self.fields, where, self.source)
        for f in layout.fields:
            if f.name in self.declared and self.declared[f.name] != (f.shape, f.dtype):
                shape, dtype = self.declared[f.name]
                raise SourceError(self.source, f"{where}: has shape {list(f.shape)} and dtype "
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
    raise _Unsupported(f"is {describe_value(value)}, which inputkit cannot collate: samples hold "
                       "tensors, numpy arrays or numbers (convert it in the dataset, e.g. with a "
                       "transform)")

"""The torch-dataset source's config: its ``fields`` and the dataset it names, checked.

Its own module because this is the config side, done once when the source is built (and by
``torch_adapter`` without building anything, :func:`dataset_kind`): a ``fields`` list or
mapping becomes field names and declared sizes; a dotted name plus ``dataset_args`` becomes
a dataset object; and the object is told map-style from iterable, or refused with a message
that says what it lacks. Reading and collating samples are ``torch_dataset.py``'s and
``torch_collate.py``'s.
"""

from __future__ import annotations

import numbers
from collections.abc import Mapping, Sequence
from typing import Any

import numpy as np
from torch.utils.data import IterableDataset

from inputkit.sources.loader import import_target
from inputkit.sources.torch_describe import describe_type, describe_value

Declared = dict[str, tuple[tuple[int, ...], np.dtype]]


def parse_fields(fields: Sequence[str] | Mapping[str, Any] | None
                 ) -> tuple[list[str | None] | None, Declared]:
    """``fields`` as names by position (None drops that value) and, from a mapping
    ``{name: {shape, dtype}}``, each field's declared per-sample shape and dtype."""
    declared: Declared = {}
    if isinstance(fields, Mapping):  # {name: {shape, dtype}}: names, checked, and sizes to plan
        from inputkit.sources.synthetic import _parse_fields

        if not fields:
            raise ValueError("fields: declare at least one field, or leave fields out")
        # name: null drops that value (a tuple sample's position); the name only labels it
        declared = _parse_fields({k: v for k, v in fields.items() if v is not None})
        names: list[str | None] = [str(k) if v is not None else None for k, v in fields.items()]
    elif fields is not None:
        if isinstance(fields, str) or not isinstance(fields, Sequence) or not fields:
            raise ValueError(f"fields: expected a non-empty list of field names, got {fields!r}")
        if not all(name is None or (isinstance(name, str) and name) for name in fields):
            raise ValueError(f"fields: every name must be a non-empty string (or null to drop "
                             f"that value of a tuple sample), got {list(fields)!r}")
        names = [None if name is None else str(name) for name in fields]
    else:
        return None, declared
    kept = [name for name in names if name is not None]
    if not kept:
        raise ValueError(f"fields: every value is dropped (null); keep at least one, got "
                         f"{list(fields)!r}")
    if len(set(kept)) != len(kept):
        raise ValueError(f"fields: names must be unique, got {list(fields)!r}")
    return names, declared


def dataset_of(dataset: Any, dataset_args: Mapping[str, Any] | None) -> tuple[Any, bool]:
    """The dataset object (built from a dotted name with ``dataset_args``) and whether it is
    iterable (else map-style, with a whole-number length)."""
    if dataset_args is not None and not isinstance(dataset_args, Mapping):
        raise ValueError(f"dataset_args: expected a mapping of keyword arguments, got {dataset_args!r}")
    if isinstance(dataset, str):
        dataset = build_named(dataset, dict(dataset_args or {}))
    elif dataset_args is not None:
        raise ValueError("dataset_args: only goes with a dotted-name dataset (dataset: "
                         "mypkg.MyDataset); a nested {_target_: ...} dataset takes its "
                         "arguments next to its _target_")
    if isinstance(dataset, (Mapping, type, numbers.Number, str, bytes)) or dataset is None:
        raise TypeError(f"dataset: expected a torch Dataset object (a nested {{_target_: "
                        f"mypkg.MyDataset, ...}} config, or a dotted name with dataset_args), "
                        f"got {describe_value(dataset)}")
    if isinstance(dataset, IterableDataset) or (
            callable(getattr(dataset, "__iter__", None))
            and not callable(getattr(dataset, "__getitem__", None))):
        return dataset, True
    if callable(getattr(dataset, "__getitem__", None)) and callable(getattr(dataset, "__len__", None)):
        length = len(dataset)
        if not isinstance(length, numbers.Integral) or length < 0:
            raise ValueError(f"dataset: len() of {describe_type(dataset)} is {length!r}; "
                             "expected a whole number >= 0")
        return dataset, False
    if callable(getattr(dataset, "__getitem__", None)):
        raise TypeError(f"dataset: {describe_type(dataset)} has __getitem__ but no __len__; "
                        "a map-style dataset needs both (or derive it from "
                        "torch.utils.data.IterableDataset)")
    raise TypeError(f"dataset: {describe_value(dataset)} is not a dataset: it needs "
                    "__getitem__ and __len__ (map-style) or __iter__ (iterable)")


def build_named(name: str, args: dict[str, Any]) -> Any:
    """The dataset a dotted name gives: a class or factory called with ``args``, or a ready
    object (which takes no arguments)."""
    target = import_target(name, key="source.dataset")
    args = {key: _instantiate(value) for key, value in args.items()}
    if not isinstance(target, type) and (callable(getattr(target, "__getitem__", None))
                                         or callable(getattr(target, "__iter__", None))):
        if args:  # a ready dataset object, e.g. a module-level instance
            raise ValueError(f"dataset_args: {name} is an existing {describe_type(target)} object; "
                             f"it takes no arguments (got {', '.join(sorted(args))})")
        return target
    if not callable(target):
        raise TypeError(f"dataset: {name} is {describe_value(target)}, not a dataset class, "
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

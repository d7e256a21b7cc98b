"""Which Parquet (Arrow) column types become fields, and how one row group's column turns into
one numpy array: numbers as they are, fixed-size lists as 2-D (or deeper) arrays, lists of any
length padded or cut to a declared length. Used by :mod:`inputkit.sources.parquet`.

Conversion makes no copy where Arrow's buffer is already the numpy layout (numbers other than
bool, fixed-size lists of them) and one copy otherwise (bool is bit-packed; padding writes a
new array)."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import numpy as np


@dataclass(frozen=True)
class Column:
    """One selected column: how it is read (``plain``, ``fixed`` or ``padded``) and the field it
    becomes (per-row ``shape`` and ``dtype``); ``pad_value`` fills the rows of a padded list."""

    name: str
    kind: str
    dtype: np.dtype
    shape: tuple[int, ...]
    arrow_type: str
    pad_value: Any = 0

    @property
    def row_bytes(self) -> int:
        return int(np.prod(self.shape, dtype=np.int64)) * self.dtype.itemsize


def _numeric(typ: Any) -> bool:
    import pyarrow as pa

    return bool(pa.types.is_integer(typ) or pa.types.is_floating(typ) or pa.types.is_boolean(typ))


def _stringy(typ: Any) -> bool:
    import pyarrow as pa

    t = pa.types
    return bool(t.is_string(typ) or t.is_large_string(typ) or t.is_binary(typ)
                or t.is_large_binary(typ) or t.is_fixed_size_binary(typ)
                or getattr(t, "is_string_view", lambda _: False)(typ)
                or getattr(t, "is_binary_view", lambda _: False)(typ)
                or (t.is_dictionary(typ) and _stringy(typ.value_type)))


def _var_list(typ: Any) -> bool:
    import pyarrow as pa

    return bool(pa.types.is_list(typ) or pa.types.is_large_list(typ))


def column_spec(name: str, typ: Any, pad: int | None, pad_value: Any, where: str) -> Column:
    """The field that column ``name`` (Arrow type ``typ``, in file ``where``) becomes; a
    ValueError naming the column and what to do when it cannot become one."""
    import pyarrow as pa

    if _numeric(typ):
        if pad is not None:
            raise ValueError(f"pad.{name}: column '{name}' holds single numbers ({typ}), not "
                             "lists; remove it from source.pad")
        return Column(name, "plain", np.dtype(typ.to_pandas_dtype()), (), str(typ))
    if pa.types.is_fixed_size_list(typ):
        if pad is not None:
            raise ValueError(f"pad.{name}: column '{name}' holds lists of a fixed size ({typ}), "
                             "which need no padding; remove it from source.pad")
        shape: list[int] = []
        inner = typ
        while pa.types.is_fixed_size_list(inner):
            shape.append(inner.list_size)
            inner = inner.value_type
        if not _numeric(inner):
            raise ValueError(f"column '{name}' in '{where}' is a fixed-size list of {inner}; only "
                             "lists of numbers (integers, floats, bool) become fields: leave it out "
                             "with source.columns")
        return Column(name, "fixed", np.dtype(inner.to_pandas_dtype()), tuple(shape), str(typ))
    if _var_list(typ):
        if not _numeric(typ.value_type):
            raise ValueError(f"column '{name}' in '{where}' is a list of {typ.value_type}; only "
                             "lists of numbers (integers, floats, bool) become fields: leave it out "
                             "with source.columns")
        if pad is None:
            raise ValueError(f"column '{name}' in '{where}' holds lists of varying length ({typ}); "
                             f"set source.pad={{{name}: LENGTH}} to pad (with source.pad_value) or "
                             "cut every list to LENGTH, or leave it out with source.columns")
        dtype = np.dtype(typ.value_type.to_pandas_dtype())
        return Column(name, "padded", dtype, (pad,), str(typ), _pad_value(name, pad_value, dtype))
    if _stringy(typ):
        raise ValueError(f"column '{name}' in '{where}' holds strings or bytes ({typ}), which "
                         "cannot become a tensor; leave it out with source.columns=[...] (the "
                         "columns to read), or store it as integer ids")
    raise ValueError(f"column '{name}' in '{where}' has the type {typ}, which inputkit does not "
                     "read; fields come from integer, float and bool columns, fixed-size lists of "
                     "them, and lists of them with source.pad: leave it out with source.columns")


def _pad_value(name: str, value: Any, dtype: np.dtype) -> Any:
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        raise ValueError(f"pad_value: expected a number, got {value!r}")
    cast = np.array(value).astype(dtype)
    if cast.item() != value:
        raise ValueError(f"pad_value: {value!r} does not fit column '{name}' ({dtype}); choose a "
                         f"value {dtype} can hold")
    return cast.item()


def to_numpy(column: Column, array: Any, where: str) -> np.ndarray:
    """One row group's ``array`` (an Arrow Array) as ``len(array) x column.shape`` numpy; a
    ValueError naming the column and ``where`` for nulls."""
    n = len(array)
    if column.kind == "padded":
        return _padded(column, array, where)
    if array.null_count:
        raise ValueError(_nulls(column.name, array.null_count, where))
    if column.kind == "plain":
        return array.to_numpy(zero_copy_only=False)
    values = array
    for _ in column.shape:
        values = values.flatten()
    if values.null_count:
        raise ValueError(_nulls(column.name, values.null_count, where, "list items"))
    return values.to_numpy(zero_copy_only=False).reshape(n, *column.shape)


def _padded(column: Column, array: Any, where: str) -> np.ndarray:
    """Each list cut to ``column.shape[0]`` items, the rest filled with the pad value; a null
    list is an empty one."""
    length = column.shape[0]
    n = len(array)
    child = array.values
    if child.null_count:
        raise ValueError(_nulls(column.name, child.null_count, where, "list items"))
    values = child.to_numpy(zero_copy_only=False)
    offsets = array.offsets.to_numpy()
    starts = offsets[:-1].astype(np.int64, copy=False)
    lengths = np.minimum(np.diff(offsets), length)
    if array.null_count:
        lengths[~array.is_valid().to_numpy(zero_copy_only=False)] = 0
    if n and bool(np.all(lengths == length)) and bool(np.all(np.diff(starts) == length)):
        first = int(starts[0])  # every list is exactly as long: one slice
        return values[first:first + n * length].reshape(n, length)
    out = np.full((n, length), column.pad_value, dtype=column.dtype)
    for j in range(min(length, int(lengths.max(initial=0)))):  # one vectorised step per position
        rows = np.flatnonzero(lengths > j)
        out[rows, j] = values[starts[rows] + j]
    return out


def _nulls(name: str, count: int, where: str, what: str = "rows") -> str:
    return (f"column '{name}' has {count:,} null {what} in {where}; a tensor has no nulls: fill "
            "them when the file is written, or leave the column out with source.columns")


def decoded_bytes(columns: list[Column], rows: int, leaf_values: dict[str, int]) -> int:
    """What one row group of ``rows`` rows holds once decoded and converted (from the footer):
    the fields, plus a padded list's Arrow values and offsets while it is converted."""
    total = 0
    for c in columns:
        total += rows * c.row_bytes
        if c.kind == "padded":
            total += leaf_values.get(c.name, 0) * c.dtype.itemsize + (rows + 1) * 8
    return total

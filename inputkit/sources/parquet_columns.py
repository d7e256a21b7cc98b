"""Which Parquet (Arrow) column types become fields, and how one row group's column turns into
one numpy array: numbers as they are, fixed-size lists as 2-D (or deeper) arrays, lists of any
length padded or cut to a declared length. Used by :mod:`inputkit.sources.parquet`.

Conversion makes no copy where Arrow's buffer is already the numpy layout (numbers other than
bool, fixed-size lists of them) and one copy otherwise (bool is bit-packed; padding writes a
new array).

Nulls: a column's ``fill_null`` value replaces them; without one, the rows holding a null are
returned beside the array (they hold a placeholder), so that a read fails only when it
reaches one of them and ``failures.on_error=skip`` drops those rows alone, not the row group.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any

import numpy as np


@dataclass(frozen=True)
class Column:
    """One selected column: how it is read (``plain``, ``fixed`` or ``padded``) and the field it
    becomes (per-row ``shape`` and ``dtype``); ``pad_value`` fills the rows of a padded list,
    ``fill_null`` (``None``: refuse them) replaces its nulls."""

    name: str
    kind: str
    dtype: np.dtype
    shape: tuple[int, ...]
    arrow_type: str
    pad_value: Any = 0
    fill_null: Any = None

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
    return _column(name, typ, pad, pad_value, where)


def with_fill(column: Column, key: str, value: Any) -> Column:
    """``column`` with its nulls replaced by ``value``, set by config key ``key``
    (``fill_null`` or ``fill_null.NAME``); a ValueError naming the key when it does not fit."""
    return Column(column.name, column.kind, column.dtype, column.shape, column.arrow_type,
                  column.pad_value, _fill_value(column.name, key, value, column.dtype))


def _column(name: str, typ: Any, pad: int | None, pad_value: Any, where: str) -> Column:
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


def _fill_value(name: str, key: str, value: Any, dtype: np.dtype) -> Any:
    """``value`` as column ``name`` holds it; a ValueError naming ``key`` when it does not fit."""
    if dtype.kind == "b":
        if isinstance(value, bool) or (isinstance(value, (int, float)) and value in (0, 1)):
            return bool(value)
        raise ValueError(f"{key}: column '{name}' holds bool; fill its nulls with true, false, 0 "
                         f"or 1, not {value!r}")
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        raise ValueError(f"{key}: expected a number to fill the nulls of column '{name}', got "
                         f"{value!r}")
    if isinstance(value, float) and math.isnan(value) and dtype.kind == "f":
        return np.array(value, dtype).item()
    cast = np.array(value).astype(dtype)
    if cast.item() != value:
        other = "give that column its own: source.fill_null={" + name + ": VALUE, ...}" \
            if key == "fill_null" else f"choose a value {dtype} can hold"
        raise ValueError(f"{key}: {value!r} does not fit column '{name}' ({dtype}); {other}")
    return cast.item()


def to_numpy(column: Column, array: Any) -> tuple[np.ndarray, np.ndarray]:
    """One row group's ``array`` (an Arrow Array) as ``len(array) x column.shape`` numpy, and
    the sorted rows that hold a null (empty when none, or when ``fill_null`` replaced them)."""
    if column.kind == "padded":
        return _padded(column, array)
    n = len(array)
    if column.kind == "plain":
        if not array.null_count:
            return array.to_numpy(zero_copy_only=False), _NONE
        return _filled(column, array), _rows(column, ~_valid(array), 1)
    levels, per = [], 1  # each level's entries that are null, as a mask of leaf items
    values = array
    for size in column.shape:
        if values.null_count:
            levels.append((~_valid(values), int(np.prod(column.shape, dtype=np.int64)) // per))
        per *= size
        values = values.values.slice(values.offset * size, len(values) * size)
    if values.null_count:
        levels.append((~_valid(values), 1))
    if not levels:
        return values.to_numpy(zero_copy_only=False).reshape(n, *column.shape), _NONE
    covered = np.zeros(n * per, dtype=bool)  # leaf items under a null, at any level
    for null, span in levels:
        covered |= np.repeat(null, span)
    leaf = _filled(column, values, writable=column.fill_null is not None)
    if column.fill_null is not None:
        leaf[covered] = column.fill_null
    return leaf.reshape(n, *column.shape), _rows(column, covered, per)


def _padded(column: Column, array: Any) -> tuple[np.ndarray, np.ndarray]:
    """Each list cut to ``column.shape[0]`` items, the rest filled with the pad value; a null
    list is an empty one. A null item that is kept is filled or reported."""
    length = column.shape[0]
    n = len(array)
    child = array.values
    offsets = array.offsets.to_numpy()
    starts = offsets[:-1].astype(np.int64, copy=False)
    lengths = np.minimum(np.diff(offsets), length)
    if array.null_count:
        lengths[~_valid(array)] = 0
    bad = _NONE
    if child.null_count:
        values = _filled(column, child)
        if column.fill_null is None:  # the kept null items: which row, which position
            items = np.flatnonzero(~_valid(child))
            row = np.searchsorted(offsets, items, side="right") - 1
            inside = (row >= 0) & (row < n)
            row, items = row[inside], items[inside]
            bad = np.unique(row[items - starts[row] < lengths[row]])
    else:
        values = child.to_numpy(zero_copy_only=False)
    if n and bool(np.all(lengths == length)) and bool(np.all(np.diff(starts) == length)):
        first = int(starts[0])  # every list is exactly as long: one slice
        return values[first:first + n * length].reshape(n, length), bad
    out = np.full((n, length), column.pad_value, dtype=column.dtype)
    for j in range(min(length, int(lengths.max(initial=0)))):  # one vectorised step per position
        rows = np.flatnonzero(lengths > j)
        out[rows, j] = values[starts[rows] + j]
    return out, bad


_NONE = np.empty(0, dtype=np.int64)


def _valid(array: Any) -> np.ndarray:
    return array.is_valid().to_numpy(zero_copy_only=False)


def _filled(column: Column, array: Any, writable: bool = False) -> np.ndarray:
    """``array`` (of numbers) as numpy, its nulls replaced by the column's ``fill_null`` (a
    placeholder of 0 when it has none: those rows are reported, never delivered)."""
    import pyarrow as pa

    value = column.fill_null if column.fill_null is not None else np.zeros((), column.dtype).item()
    return array.fill_null(pa.scalar(value, array.type)).to_numpy(zero_copy_only=False,
                                                                   writable=writable)


def _rows(column: Column, null: np.ndarray, per: int) -> np.ndarray:
    """The rows with a null among their ``per`` items (none once ``fill_null`` filled them)."""
    if column.fill_null is not None:
        return _NONE
    return np.unique(np.flatnonzero(null) // per)


def decoded_bytes(columns: list[Column], rows: int, leaf_values: dict[str, int]) -> int:
    """What one row group of ``rows`` rows holds once decoded and converted (from the footer):
    the fields, plus a padded list's Arrow values and offsets while it is converted."""
    total = 0
    for c in columns:
        total += rows * c.row_bytes
        if c.kind == "padded":
            total += leaf_values.get(c.name, 0) * c.dtype.itemsize + (rows + 1) * 8
    return total

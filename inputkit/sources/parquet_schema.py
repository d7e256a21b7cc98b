"""Which columns a Parquet source reads, checked against every file's schema when the source is
built, and the keys that shape them (``pad``, ``fill_null``): a bad column or key fails with a
config error naming it. Used by :mod:`inputkit.sources.parquet`."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from inputkit.sources.parquet_columns import Column, column_spec, with_fill


def select_columns(footers: list[Any], files: list[str], columns_arg: list[str] | None,
                   pad: Mapping[str, int], pad_value: int | float,
                   fill_null: Mapping[str | None, Any]) -> list[Column]:
    """The columns to read (``columns_arg``; ``None``: all), checked against every file's
    schema (``footers``, one per file), each with its ``pad`` and ``fill_null``."""
    first = footers[0].schema.to_arrow_schema()
    present = list(first.names)
    wanted = columns_arg if columns_arg is not None else present
    missing = [name for name in wanted if name not in present]
    if missing:
        raise ValueError(f"columns: '{files[0]}' has no column '{missing[0]}'; its "
                         f"columns are: {', '.join(present)}")
    columns, refused = [], []
    for name in wanted:
        try:
            columns.append(column_spec(name, first.field(name).type, pad.get(name),
                                       pad_value, files[0]))
        except ValueError as exc:
            refused.append((name, str(exc)))
    if refused:
        raise ValueError(refusal(refused, first, [c.name for c in columns],
                                 every_column=columns_arg is None))
    for path, meta in zip(files[1:], footers[1:], strict=True):
        schema = meta.schema.to_arrow_schema()
        for c in columns:
            if c.name not in schema.names:
                raise ValueError(f"'{path}' has no column '{c.name}', which "
                                 f"'{files[0]}' has; every file needs the columns read "
                                 f"(its columns: {', '.join(schema.names)})")
            typ = schema.field(c.name).type
            if str(typ) != c.arrow_type:
                raise ValueError(f"column '{c.name}' is {typ} in '{path}' but {c.arrow_type} "
                                 f"in '{files[0]}'; every file needs the same type per "
                                 "column (rewrite one, or leave the column out with "
                                 "source.columns)")
        if columns_arg is None:
            extra = [name for name in schema.names if name not in present]
            if extra:
                raise ValueError(f"'{path}' has a column '{extra[0]}' that '{files[0]}' "
                                 "lacks; every file needs the same columns, or list the "
                                 "columns to read in source.columns")
    for k, c in enumerate(columns):
        if c.name in fill_null:
            columns[k] = with_fill(c, f"fill_null.{c.name}", fill_null[c.name])
        elif None in fill_null:
            columns[k] = with_fill(c, "fill_null", fill_null[None])
    return columns


def pad_lengths(pad: Mapping[str, int] | None) -> dict[str, int]:
    """``pad`` checked: ``{column: length >= 1}``."""
    if pad is None:
        return {}
    if not isinstance(pad, Mapping):
        raise ValueError(f"pad: expected {{column: length, ...}}, got {pad!r}")
    lengths = {}
    for name, length in pad.items():
        if isinstance(length, bool) or not isinstance(length, int) or length < 1:
            raise ValueError(f"pad.{name}: expected a whole number of list items >= 1, got "
                             f"{length!r}")
        lengths[str(name)] = int(length)
    return lengths


def fill_values(fill: Any) -> dict[str | None, Any]:
    """``fill_null`` as ``{column: value}``; one value for every column is under ``None``."""
    if fill is None:
        return {}
    if isinstance(fill, Mapping):
        return {str(name): value for name, value in fill.items()}
    if isinstance(fill, (bool, int, float)):
        return {None: fill}
    raise ValueError(f"fill_null: expected a number (for every column) or {{column: number, "
                     f"...}}, got {fill!r}")


def leaf_values(group: Any, pad: Mapping[str, int]) -> dict[str, int]:
    """Leaf values per padded column in one row group (the footer's column-chunk counts)."""
    counts: dict[str, int] = {}
    for j in range(group.num_columns):
        chunk = group.column(j)
        top = chunk.path_in_schema.split(".", 1)[0]
        if top in pad:
            counts[top] = counts.get(top, 0) + chunk.num_values
    return counts


def refusal(refused: list[tuple[str, str]], schema: Any, readable: list[str], *,
            every_column: bool) -> str:
    """One message for the columns that cannot become fields: the first one's reason, the
    others with their types, and (when every column was asked for) the setting that reads
    the rest."""
    message = refused[0][1]
    if len(refused) > 1:
        others = ", ".join(f"'{name}' ({schema.field(name).type})" for name, _ in refused[1:])
        message += f"; nor can {others} become fields"
    if every_column and readable:
        message += f"; to read the others: source.columns=[{','.join(readable)}]"
    return message

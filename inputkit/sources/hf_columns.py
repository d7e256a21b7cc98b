"""Which columns of a Hugging Face dataset become fields, and how: checked against every file's
schema when the source is built. Numbers and lists go through ``source=parquet``'s rules
(:func:`inputkit.sources.parquet_columns.column_spec`); columns of the ``Image`` feature are
kept apart for decoding; audio, video, strings and the rest are refused naming the column.
Used by :mod:`inputkit.sources.hf`."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from inputkit.sources.hf_layout import hf_features
from inputkit.sources.parquet_columns import Column, column_spec, with_fill
from inputkit.sources.parquet_schema import refusal

_ENCODED = ("Audio", "Video", "Pdf")  # struct features inputkit does not decode


def choose_columns(schemas: list[Any], files: list[str], columns_arg: list[str] | None,
                   pad: Mapping[str, int], pad_value: int | float,
                   fill_null: Mapping[str | None, Any]) -> tuple[list[Column], list[str]]:
    """``(number and list columns, image columns)`` to read (``columns_arg``; ``None``: all),
    each file's schema (``schemas``) checked to match the first's; a ValueError naming the
    column or key and what to do otherwise."""
    first = schemas[0]
    present = list(first.names)
    features = hf_features(first)
    wanted = columns_arg if columns_arg is not None else present
    missing = [name for name in wanted if name not in present]
    if missing:
        raise ValueError(f"columns: the dataset has no column '{missing[0]}'; its columns are: "
                         f"{', '.join(present)}")
    columns: list[Column] = []
    images: list[str] = []
    refused: list[tuple[str, str]] = []
    for name in wanted:
        typ = first.field(name).type
        feature = features.get(name)
        kind = feature.get("_type") if isinstance(feature, dict) else None
        try:
            if kind == "Image" or (kind is None and not features and _image_struct(typ)):
                if not _image_struct(typ):
                    raise ValueError(f"column '{name}' is an Image feature stored as {typ}, not "
                                     "struct<bytes: binary, path: string>; save it again with "
                                     "datasets")
                for key, given in (("pad", pad), ("fill_null", fill_null)):
                    if name in given:
                        raise ValueError(f"{key}.{name}: column '{name}' holds images; remove it "
                                         f"from source.{key}")
                images.append(name)
                continue
            if kind in _ENCODED:
                raise ValueError(f"column '{name}' is a {kind} feature, which inputkit does not "
                                 "decode; leave it out with source.columns=[...] (the columns to "
                                 "read)")
            columns.append(column_spec(name, typ, pad.get(name), pad_value, files[0]))
        except ValueError as exc:
            refused.append((name, str(exc)))
    if refused:
        raise ValueError(refusal(refused, first, [c.name for c in columns] + images,
                                 every_column=columns_arg is None))
    read = [c.name for c in columns] + images
    for key, given in (("pad", pad), ("fill_null", fill_null)):
        unused = [name for name in given if name is not None and name not in read]
        if unused:
            raise ValueError(f"{key}.{unused[0]}: no column '{unused[0]}' is read (the columns "
                             f"are {', '.join(read)}); remove it from source.{key}")
    for path, schema in zip(files[1:], schemas[1:], strict=True):
        for name in read:
            if name not in schema.names:
                raise ValueError(f"'{path}' has no column '{name}', which '{files[0]}' has; "
                                 "every file of the split needs the columns read")
            if schema.field(name).type != first.field(name).type:
                raise ValueError(f"column '{name}' is {schema.field(name).type} in '{path}' but "
                                 f"{first.field(name).type} in '{files[0]}'; every file of the "
                                 "split needs the same type per column")
    for k, c in enumerate(columns):
        if c.name in fill_null:
            columns[k] = with_fill(c, f"fill_null.{c.name}", fill_null[c.name])
        elif None in fill_null:
            columns[k] = with_fill(c, "fill_null", fill_null[None])
    return columns, images


def _image_struct(typ: Any) -> bool:
    """Whether ``typ`` is how ``datasets`` stores an Image: struct<bytes: binary, path: string>."""
    import pyarrow as pa

    if not pa.types.is_struct(typ):
        return False
    names = {typ.field(k).name: typ.field(k).type for k in range(typ.num_fields)}
    return set(names) == {"bytes", "path"} and (pa.types.is_binary(names["bytes"])
                                                or pa.types.is_large_binary(names["bytes"]))

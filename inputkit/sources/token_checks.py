"""The checks a token source makes when it is built: its keys (``seq_len``, ``stride``,
``dtype``, ``fields``) and each file's size and ``.npy`` header against them, so that a bad
file or key fails with a config error naming it, before any worker starts. Used by
:mod:`inputkit.sources.tokens`."""

from __future__ import annotations

import os
from collections.abc import Sequence
from typing import Any

import numpy as np

from inputkit.sources.arrays import _read_header
from inputkit.sources.remote_files import npy_header
from inputkit.sources.token_files import dtype_name

NAME = "inputkit.sources.tokens.TokenSource"
FIELDS = ("input_ids", "labels", "tokens", "id")  # what `fields` may list


def positive(value: Any, key: str) -> int:
    """``value`` as an int >= 1, or a ValueError naming ``key``."""
    if isinstance(value, bool) or not isinstance(value, (int, np.integer)) or value < 1:
        raise ValueError(f"{key}: expected a whole number >= 1, got {value!r}")
    return int(value)


def token_dtype(value: Any, key: str) -> np.dtype:
    """``value`` as an integer numpy dtype, or a ValueError naming ``key``."""
    try:
        dtype = np.dtype(value)
    except TypeError:
        raise ValueError(f"{key}: {value!r} is not a numpy dtype; use e.g. uint16, uint32 or "
                         "int32") from None
    if dtype.kind not in "iu":
        raise ValueError(f"{key}: token ids are integers; got {dtype.name} (use e.g. uint16, "
                         "uint32, int32 or int64)")
    return dtype


def window_fields(fields: Sequence[str] | str) -> list[str]:
    """``fields`` as a list of known window fields, each once."""
    names = [fields] if isinstance(fields, str) else list(fields) if isinstance(
        fields, Sequence) else None
    if not names or not all(isinstance(f, str) for f in names):
        raise ValueError(f"fields: expected a list of {', '.join(FIELDS)}, got {fields!r}")
    unknown = [f for f in names if f not in FIELDS]
    if unknown:
        raise ValueError(f"fields: '{unknown[0]}' is not a field of token windows; choose from "
                         f"{', '.join(FIELDS)} (e.g. source.fields=[input_ids])")
    if len(set(names)) != len(names):
        raise ValueError(f"fields: lists a field twice: {names}")
    return names


def inspect_file(path: str, declared: np.dtype | None,
             remote_size: int | None = None) -> tuple[int, np.dtype, int]:
    """(tokens, dtype, header bytes) of one file, from its size and ``.npy`` header (for an
    object in a store, ``remote_size`` from its listing and the header by one ranged read)."""
    if remote_size is not None:
        size = remote_size
        try:
            header = npy_header(path, size)[:3] if path.endswith(".npy") else None
        except (ValueError, EOFError) as exc:
            raise ValueError(f"cannot read '{path}' as a .npy file: "
                             f"{type(exc).__name__}: {exc}") from None
        return checked_file(path, declared, size, header)
    try:
        with open(path, "rb") as f:
            size = os.fstat(f.fileno()).st_size
            if not path.endswith(".npy"):
                header = None
            else:
                try:
                    header = _read_header(f)
                except (ValueError, EOFError) as exc:
                    raise ValueError(f"cannot read '{path}' as a .npy file: "
                                     f"{type(exc).__name__}: {exc}") from None
    except OSError as exc:
        raise ValueError(f"cannot read '{path}': {type(exc).__name__}: {exc}; check that the "
                         "file exists and is readable") from None
    return checked_file(path, declared, size, header)


def checked_file(path: str, declared: np.dtype | None, size: int,
             header: tuple[tuple[int, ...], np.dtype, int] | None) -> tuple[int, np.dtype, int]:
    """(tokens, dtype, header bytes) of a file of ``size`` bytes, checked against the keys."""
    if header is None:
        if declared is None:
            raise ValueError(f"dtype: required for the raw token file '{path}' (only .npy files "
                             "carry their dtype); set e.g. source.dtype=uint16")
        if size % declared.itemsize:
            raise ValueError(f"'{path}' holds {size:,} bytes, not a multiple of {declared.name}'s "
                             f"{declared.itemsize}; check source.dtype (a uint32 file read as "
                             "uint16?) or whether the file was cut short while written")
        return size // declared.itemsize, declared, 0
    shape, dtype, offset = header
    if declared is not None and dtype != declared:
        fix = "source.dtype=null" if dtype.name == declared.name else \
            f"source.dtype={dtype.name} or null"
        raise ValueError(f"dtype: '{path}' holds {dtype_name(dtype)} tokens but source.dtype is "
                         f"{dtype_name(declared)}; set {fix} (a .npy file carries its dtype)")
    if dtype.kind not in "iu":
        raise ValueError(f"'{path}' holds {dtype.name}; token ids are integers (save e.g. "
                         "np.uint16 or np.uint32 tokens)")
    if len(shape) != 1:
        raise ValueError(f"'{path}' holds an array of shape {shape}; a token file is flat: "
                         "np.save(path, tokens.ravel())")
    expected = offset + shape[0] * dtype.itemsize
    if size < expected:
        raise ValueError(f"'{path}' is truncated: its header promises {expected:,} bytes "
                         f"({shape[0]:,} {dtype.name} tokens) but the file holds {size:,}")
    return int(shape[0]), dtype, offset

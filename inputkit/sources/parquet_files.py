"""Where a Parquet source's files are: globs, directories, paths and object-store URLs expanded
to a list of files, and each file's footer read once. Used by
:mod:`inputkit.sources.parquet`."""

from __future__ import annotations

import glob
import os
from collections.abc import Sequence
from typing import Any

from inputkit.errors import SourceError
from inputkit.sources.remote_files import RangeFile, is_url, list_prefix
from inputkit.sources.remote_files import expand as remote_expand

_GLOB = ("*", "?", "[")


def expand_files(files: str | Sequence[str]) -> list[str]:
    """The Parquet files named by ``files``: each entry a glob (sorted), a directory (its
    ``*.parquet`` files, recursively, sorted) or a path; each file once."""
    entries = [files] if isinstance(files, (str, os.PathLike)) else files
    if not isinstance(entries, Sequence) or not entries \
            or not all(isinstance(e, (str, os.PathLike)) and str(e) for e in entries):
        raise ValueError(f"files: expected a glob pattern, a directory, a path or a list of them, "
                         f"got {files!r}")
    found: list[str] = []
    for entry in map(os.fspath, entries):
        if is_url(entry):
            found += _remote_files(entry)
            continue
        if any(ch in entry for ch in _GLOB):
            matched = sorted(p for p in glob.glob(entry, recursive=True) if os.path.isfile(p))
            if not matched:
                raise ValueError(f"files: no files match '{entry}'{_resolved(entry)}")
        elif os.path.isdir(entry):
            matched = sorted(glob.glob(os.path.join(glob.escape(entry), "**", "*.parquet"),
                                       recursive=True))
            if not matched:
                raise ValueError(f"files: the directory '{entry}' holds no .parquet files")
        elif os.path.isfile(entry):
            matched = [entry]
        else:
            raise ValueError(f"files: no such file or directory: '{entry}'{_resolved(entry)}")
        found += matched
    seen: set[str] = set()
    for path in found:
        if path in seen:
            raise ValueError(f"files: '{path}' is listed twice; each file is read once per epoch")
        seen.add(path)
    return found


def _remote_files(entry: str) -> list[str]:
    """The objects of one URL: a pattern (braces, globs), a ``.parquet`` object, or a prefix
    (a URL ending in ``/`` or without ``.parquet``: its ``*.parquet`` objects, sorted)."""
    if any(ch in entry for ch in (*_GLOB, "{")) or entry.endswith(".parquet"):
        return remote_expand(entry, "files")
    matched = [info.url for info in list_prefix(entry) if info.url.endswith(".parquet")]
    if not matched:
        raise ValueError(f"files: no .parquet objects under '{entry.rstrip('/')}/'; name the "
                         "objects (e.g. 'files=s3://bucket/data/*.parquet') or check the prefix")
    return matched


def pyarrow_parquet() -> Any:
    """``pyarrow.parquet``, imported when a source is built (not with inputkit)."""
    try:
        import pyarrow.parquet as pq
    except ImportError as exc:
        raise ValueError("source=parquet needs pyarrow: pip install 'inputkit-ml[parquet]' (or "
                         f"pip install pyarrow) ({exc})") from None
    return pq


def footer(pq: Any, path: str, remote_size: int | None = None) -> Any:
    """The metadata of one file (or object: ``remote_size`` from its listing)."""
    try:
        if remote_size is not None:  # the last 64 KiB in one ranged read (and more if needed)
            return pq.read_metadata(RangeFile(path, remote_size, block=1 << 16))
        return pq.read_metadata(path)
    except SourceError:  # the store's own error names the URL and what to do
        raise
    except Exception as exc:  # ArrowInvalid for a bad footer, OSError for a short file
        raise ValueError(f"'{path}' is not a Parquet file, or is corrupt or truncated: "
                         f"{type(exc).__name__}: {exc}") from None


def _resolved(path: str) -> str:
    return "" if os.path.isabs(path) else f" (resolved to '{os.path.abspath(path)}')"

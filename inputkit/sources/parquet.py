"""Parquet files read by row: tabular and recommendation data, columns as fields.

``ParquetSource(files="data/clicks-*.parquet", columns=["dense", "sparse_ids", "label"])``
treats the files, in order, as one table of rows. The source is *indexable*: global row ``i``
is found through the row counts in the files' footers (read once, when the source is built),
so shuffling, exactly-once epochs, ``epoch.*`` and ``state_dict()`` resume come from the
pipeline.

Parquet's unit of decoding is the row group. ``read(indices)`` decodes only the row groups
the indices touch, projected to the selected columns, never whole files. Each worker
keeps its last ``cache_row_groups`` decoded row groups (converted to numpy); the thread
workers of one process pool theirs into one cache of ``threads x cache_row_groups``, so the
consecutive chunks of one row group, the usual unshuffled case, decode it once per process,
and two threads wanting the same row group wait for one decode (the waiting thread decodes
the next row group meanwhile, so a process's threads decode side by side).
Shuffled indices are grouped by row group, so a read decodes each row group it touches
once. The memory plan counts the cache per worker (``read_scratch``).

Fields: integer, float and bool columns become fields of their dtype; fixed-size lists of
them become ``n x size`` (or deeper) fields; lists of varying length are padded or cut to
``pad[column]`` items. Strings and other types are refused with an error naming the column
(see :mod:`inputkit.sources.parquet_columns`). A null is replaced by ``fill_null`` (one value,
or ``{column: value}``); without one, a read that reaches a row holding a null fails naming
the column and the row, and only such reads: under ``failures.on_error=skip`` the pipeline
drops those rows alone, not their row group. pyarrow is needed (``pip install
'inputkit-ml[parquet]'``); it is imported when the source is built.
"""

from __future__ import annotations

import threading
from collections.abc import Callable, Mapping, Sequence
from typing import Any

import numpy as np

from inputkit.errors import SourceError
from inputkit.sources.parquet_cache import OpenFiles, RowGroup, RowGroupCache
from inputkit.sources.parquet_columns import decoded_bytes, to_numpy
from inputkit.sources.parquet_files import expand_files, footer, pyarrow_parquet
from inputkit.sources.parquet_schema import fill_values, leaf_values, pad_lengths, select_columns
from inputkit.sources.protocol import field_names
from inputkit.sources.remote_files import RangeFile, is_url
from inputkit.sources.remote_files import sizes as object_sizes

__all__ = ["NAME", "ParquetSource", "expand_files"]
NAME = "inputkit.sources.parquet.ParquetSource"
Allocator = Callable[[str, tuple[int, ...], np.dtype], np.ndarray]
_OPEN_FILES = 4  # Parquet files each worker keeps open (the most recently read)


class ParquetSource:
    """Rows of the Parquet ``files``: a glob pattern, a directory, a path or a list of them.

    ``columns``: the columns to read (the others are never decoded); ``None`` reads every
    column, and then every column must be one that becomes a field. ``pad``: ``{column:
    length}`` for columns of variable-length lists, padded with ``pad_value`` or cut to that
    length. ``cache_row_groups``: decoded row groups kept per worker, pooled by the threads
    of a process (2 serve unshuffled reads, where workers cross a row group's end at
    different times; shuffled reads want every row group kept). ``fill_null``: what replaces
    a null, one number for every column or ``{column: number}``; ``None`` refuses the rows
    that hold one (each read that reaches one fails, naming the column and the row).
    """

    def __init__(self, files: str | Sequence[str], columns: Sequence[str] | str | None = None,
                 pad: Mapping[str, int] | None = None, pad_value: int | float = 0,
                 cache_row_groups: int = 2,
                 fill_null: int | float | Mapping[str, int | float] | None = None) -> None:
        pq = pyarrow_parquet()
        if isinstance(cache_row_groups, bool) or not isinstance(cache_row_groups, int) \
                or cache_row_groups < 1:
            raise ValueError(f"cache_row_groups: expected a whole number >= 1, got "
                             f"{cache_row_groups!r}")
        self.files_arg = files
        self.files = expand_files(files)
        self.columns_arg = field_names(columns, "Parquet column names")
        self.pad = pad_lengths(pad)
        self.pad_value = pad_value
        self.fill_null = fill_values(fill_null)
        self.cache_row_groups = cache_row_groups
        # an object in a store: its size from one head, its footer from one or two ranged
        # reads, once; a worker's handle then reads only the column chunks a row group needs
        remote = [path for path in self.files if is_url(path)]
        self.remote_sizes = dict(zip(remote, object_sizes(remote), strict=True))
        footers = [footer(pq, path, self.remote_sizes.get(path)) for path in self.files]
        self.footers = footers if remote else None  # kept (and pickled) for remote handles
        self.columns = select_columns(footers, self.files, self.columns_arg, self.pad,
                                      self.pad_value, self.fill_null)
        names = [c.name for c in self.columns]
        for key, given in (("pad", self.pad), ("fill_null", self.fill_null)):
            unused = [name for name in given if name is not None and name not in names]
            if unused:
                raise ValueError(f"{key}.{unused[0]}: no column '{unused[0]}' is read (the "
                                 f"columns are {', '.join(names)}); remove it from source.{key}")
        # Row groups with rows, in order: global rows starts[g] .. starts[g + 1] - 1 are
        # row group groups[g][1] of file groups[g][0].
        groups: list[tuple[int, int]] = []
        counts: list[int] = []
        largest = 0
        for f, meta in enumerate(footers):
            for r in range(meta.num_row_groups):
                group = meta.row_group(r)
                if group.num_rows:
                    groups.append((f, r))
                    counts.append(group.num_rows)
                    largest = max(largest, decoded_bytes(self.columns, group.num_rows,
                                                         leaf_values(group, self.pad)))
        self.length = int(sum(counts))
        if self.length == 0:
            raise ValueError(f"files: the {len(self.files)} file(s) from {files!r} hold no rows")
        self.groups = groups
        self.starts = np.concatenate([[0], np.cumsum(counts, dtype=np.int64)])
        self.group_bytes = largest  # the largest row group, decoded and converted
        self._init_state()

    def _init_state(self) -> None:
        self._lock = threading.Lock()
        self._local = threading.local()  # this thread's open files
        self._states: list[OpenFiles] = []  # every thread's, for close()
        self._cache = RowGroupCache(self.cache_row_groups)

    # the indexable protocol ------------------------------------------------------------------

    def __len__(self) -> int:
        return self.length

    def read(self, indices: np.ndarray) -> dict[str, np.ndarray]:
        """A fresh array per column holding the rows at ``indices``, in that order."""
        return self.read_into(indices, _fresh)

    def read_into(self, indices: np.ndarray, allocate: Allocator) -> dict[str, np.ndarray]:
        """``read``, with the output arrays from ``allocate(name, shape, dtype)`` (a process
        worker's shared-memory slot): each value is copied once, from the decoded row group
        to where the batch reads it."""
        indices = np.asarray(indices, dtype=np.int64).reshape(-1)
        n = len(indices)
        if n and (indices.min() < 0 or indices.max() >= self.length):
            raise IndexError(f"read: indices must lie in 0..{self.length - 1}, got "
                             f"{int(indices.min())}..{int(indices.max())}")
        out = {c.name: allocate(c.name, (n, *c.shape), c.dtype) for c in self.columns}
        if n == 0:
            return out
        starts = self.starts
        if n == 1 or bool(np.all(np.diff(indices) == 1)):  # a range: slices of its row groups
            first, stop = int(indices[0]), int(indices[-1]) + 1
            g = int(np.searchsorted(starts, first, side="right")) - 1
            pos = 0
            while pos < n:
                base = int(starts[g])
                lo, hi = first + pos - base, min(stop, int(starts[g + 1])) - base
                group = self._group(g, ahead=True)
                if group.nulls:
                    self._refuse_nulls(g, group, np.arange(lo, hi))
                for name, arr in group.arrays.items():
                    out[name][pos:pos + hi - lo] = arr[lo:hi]
                pos += hi - lo
                g += 1
            return out
        where = np.searchsorted(starts, indices, side="right") - 1
        order = np.argsort(where, kind="stable")
        touched, begins = np.unique(where[order], return_index=True)
        ends = np.append(begins[1:], n)
        # the row groups in the cache first, so that they are used before they are evicted
        visit = sorted(range(len(touched)), key=lambda k: int(touched[k]) not in self._cache)
        for k in visit:
            g = int(touched[k])
            rows = order[begins[k]:ends[k]]
            local = indices[rows] - starts[g]
            group = self._group(g)
            if group.nulls:
                self._refuse_nulls(g, group, local)
            for name, arr in group.arrays.items():
                out[name][rows] = arr[local]
        return out

    def sample_groups(self) -> np.ndarray:
        """The file of each row: for a shuffle that keeps reads within a few files at a time."""
        files = np.array([f for f, _ in self.groups], dtype=np.int64)
        return np.repeat(files, np.diff(self.starts))

    def read_scratch(self) -> tuple[int, str]:
        """For the memory plan: the decoded row groups one worker keeps (from the footers)."""
        total = self.cache_row_groups * self.group_bytes
        return (total, f"{self.cache_row_groups} x {self.group_bytes:,} B: the largest row group "
                       "decoded (source.cache_row_groups)")

    def run_info(self) -> dict[str, Any]:
        """What the run's summary.json records about this source."""
        return {"files": len(self.files), "rows": self.length, "row_groups": len(self.groups),
                "columns": {c.name: {"type": c.arrow_type, "shape": list(c.shape),
                                     "dtype": c.dtype.name} for c in self.columns},
                "pad": dict(self.pad),
                "fill_null": {c.name: c.fill_null for c in self.columns
                              if c.fill_null is not None}}

    def close(self) -> None:
        """Close every worker's files and drop the decoded row groups."""
        with self._lock:
            states, self._states = self._states, []
            self._local = threading.local()
        self._cache.clear()
        for state in states:
            state.close()

    # pickling: open files and caches stay behind ---------------------------------------------

    def __getstate__(self) -> dict[str, Any]:
        state = self.__dict__.copy()
        for key in ("_lock", "_local", "_states", "_cache"):
            del state[key]
        return state

    def __setstate__(self, state: dict[str, Any]) -> None:
        self.__dict__.update(state)
        self._init_state()

    def __repr__(self) -> str:
        return (f"ParquetSource({len(self.files)} files from {self.files_arg!r}, "
                f"columns={[c.name for c in self.columns]}, rows={self.length})")

    # internals -------------------------------------------------------------------------------

    def _state(self) -> OpenFiles:
        state = getattr(self._local, "state", None)
        if state is None:
            state = self._local.state = OpenFiles()
            with self._lock:
                self._states.append(state)
                # each thread worker brings its share of the pooled cache
                self._cache.capacity = self.cache_row_groups * len(self._states)
        return state

    def _group(self, g: int, ahead: bool = False) -> RowGroup:
        """Row group ``g`` decoded, from this process's cache or from its file. ``ahead`` (a
        read of consecutive rows): when another thread is decoding ``g``, decode the next row
        group meanwhile, which the reads after this one want; so the thread workers of a
        process decode row groups side by side (pyarrow releases the GIL) instead of one
        decoding while the others wait."""
        self._state()  # counts this thread's share of the cache
        if ahead and g + 1 < len(self.groups) and self._cache.busy(g):
            self._cache.ahead(g + 1, self._decode_row_group)
        return self._cache.get(g, self._decode_row_group)

    def _refuse_nulls(self, g: int, group: RowGroup, local: np.ndarray) -> None:
        """A SourceError naming the column and the rows when rows ``local`` of row group ``g``
        hold a null (rows are then read one by one under skip: only those are dropped)."""
        for name, null in group.nulls.items():
            hit = np.unique(local[np.isin(local, null)])
            if not len(hit):
                continue
            f, r = self.groups[g]
            rows = ", ".join(f"{int(i):,}" for i in hit[:3] + self.starts[g])
            rows = f"row {rows} holds" if len(hit) == 1 else f"rows {rows}" + (
                f" and {len(hit) - 3:,} more" if len(hit) > 3 else "") + " hold"
            raise SourceError(NAME, f"column '{name}' has {len(null):,} null rows in "
                              f"'{self.files[f]}' (row group {r}); of the rows read, {rows} "
                              f"one. A tensor has no nulls: set "
                              f"source.fill_null={{{name}: VALUE}} (or one value for every "
                              "column), fill them when the file is written, or leave the column "
                              "out with source.columns; failures.on_error=skip drops only those "
                              "rows", field=name)

    def _decode_row_group(self, g: int) -> RowGroup:
        """Decode row group ``g`` (selected columns only) and convert it to numpy."""
        f, r = self.groups[g]
        path = self.files[f]
        rows = int(self.starts[g + 1] - self.starts[g])
        where = f"'{path}' (row group {r})"
        handle = self._file(f)
        try:
            table = handle.read_row_group(r, columns=[c.name for c in self.columns],
                                          use_threads=False)
        except SourceError as exc:  # the store's answer (missing object, unreachable...)
            raise SourceError(NAME, f"{where} cannot be read: {exc.message}") from exc
        except Exception as exc:  # pyarrow raises ArrowInvalid, OSError, ...: damaged data
            raise SourceError(NAME, f"{where} cannot be read; the file is corrupt or truncated: "
                              f"{type(exc).__name__}: {exc}") from exc
        if table.num_rows != rows:
            raise SourceError(NAME, f"{where} holds {table.num_rows:,} rows, but {rows:,} when "
                              "the source was built; the file changed: build the source again")
        decoded = RowGroup({})
        for c in self.columns:
            chunked = table.column(c.name)
            array = chunked.chunk(0) if chunked.num_chunks == 1 else chunked.combine_chunks()
            decoded.arrays[c.name], null = to_numpy(c, array)
            if len(null):
                decoded.nulls[c.name] = null
        return decoded

    def _file(self, f: int) -> Any:
        """This worker's open handle on file ``f`` (a few stay open, the last used)."""
        files = self._state().files
        handle = files.get(f)
        if handle is not None:
            files.move_to_end(f)
            return handle
        pq = pyarrow_parquet()
        path = self.files[f]
        try:
            if path in self.remote_sizes:  # the footer read when the source was built; each
                # read is the exact range pyarrow asks for (a column chunk): no read-ahead
                assert self.footers is not None
                handle = pq.ParquetFile(RangeFile(path, self.remote_sizes[path], block=0),
                                        metadata=self.footers[f])
            else:
                handle = pq.ParquetFile(path)
        except Exception as exc:
            raise SourceError(NAME, f"cannot open '{path}' as a Parquet file (it changed since the "
                              f"source was built?): {type(exc).__name__}: {exc}") from exc
        files[f] = handle
        while len(files) > _OPEN_FILES:
            files.popitem(last=False)[1].close()
        return handle


def _fresh(name: str, shape: tuple[int, ...], dtype: np.dtype) -> np.ndarray:
    return np.empty(shape, dtype)

"""Hugging Face datasets read by index from disk, with pyarrow alone (no ``datasets`` at run time).

``HFSource(path="data/cifar10", split="train", columns=["img", "label"], transforms=[...])``
reads a dataset saved with ``save_to_disk`` (memory-mapped Arrow files), one split of a saved
``DatasetDict``, or a folder of ``.parquet``/``.arrow`` files as the Hub's cache lays them out
(see :mod:`inputkit.sources.hf_layout`). Nothing is downloaded. The source is *indexable*:
row ``i`` is found through the record batches' (or row groups') row counts, so shuffling,
exactly-once epochs, ``epoch.*`` and ``state_dict()`` resume come from the pipeline.

Columns become fields as ``source=parquet`` makes them (:mod:`inputkit.sources.parquet_columns`):
numbers, fixed-size lists as ``n x size`` arrays, variable-length lists padded or cut to
``pad[column]``, nulls replaced by ``fill_null`` or refused by the read that reaches one.
Columns of the ``Image`` feature (encoded bytes, or a path when the bytes were not embedded)
are decoded and transformed as ``image_folder`` does (:mod:`inputkit.images`) into
``n x 3 x H x W`` uint8, so ``transforms`` must give them one size. Strings, audio and other
types are refused naming the column. Arrow files are memory-mapped (the plan counts them as
page cache); Parquet row groups are decoded whole and the last ``cache_row_groups`` of them
kept per worker.
"""

from __future__ import annotations

import os
import threading
from collections.abc import Callable, Mapping, Sequence
from typing import Any

import numpy as np

from inputkit.errors import SourceError
from inputkit.images.decode import Decoder, ImageError
from inputkit.images.transforms import Transforms, bad_key
from inputkit.sources.hf_columns import choose_columns
from inputkit.sources.hf_layout import find_dataset
from inputkit.sources.hf_tables import (
    EncodedImages,
    Segment,
    one_array,
    open_arrow,
    parquet_footer,
    segment_of,
    taken,
)
from inputkit.sources.parquet_cache import OpenFiles, RowGroupCache
from inputkit.sources.parquet_schema import fill_values, pad_lengths
from inputkit.sources.protocol import field_names

__all__ = ["NAME", "HFSource"]
NAME = "inputkit.sources.hf.HFSource"
Allocator = Callable[[str, tuple[int, ...], np.dtype], np.ndarray]


class HFSource:
    """Rows of the Hugging Face dataset at ``path`` (``split``: one of a DatasetDict's or a
    cache folder's splits).

    ``columns``: the columns to read (``None``: every column, each of which must become a
    field). ``pad``/``pad_value``/``fill_null``: as ``source=parquet``. ``transforms``,
    ``decode``, ``seed``: as ``image_folder``, for the image columns (required when one is
    read). ``cache_row_groups``: decoded Parquet row groups kept per worker thread.
    """

    def __init__(self, path: str, split: str | None = None,
                 columns: Sequence[str] | str | None = None,
                 pad: Mapping[str, int] | None = None, pad_value: int | float = 0,
                 fill_null: int | float | Mapping[str, int | float] | None = None,
                 transforms: Any = None, decode: Mapping[str, Any] | None = None,
                 seed: int = 0, cache_row_groups: int = 2) -> None:
        try:
            import pyarrow  # noqa: F401
        except ImportError as exc:
            raise ValueError("source=hf needs pyarrow: pip install 'inputkit-ml[parquet]' (or pip "
                             f"install pyarrow) ({exc})") from None
        if isinstance(cache_row_groups, bool) or not isinstance(cache_row_groups, int) \
                or cache_row_groups < 1:
            raise ValueError(f"cache_row_groups: expected a whole number >= 1, got "
                             f"{cache_row_groups!r}")
        if isinstance(seed, bool) or not isinstance(seed, int):
            raise bad_key("seed", f"expected a whole number, got {seed!r}")
        self.path = os.fspath(path) if isinstance(path, os.PathLike) else path
        self.layout = find_dataset(self.path, split)
        self.files = list(self.layout.files)
        self.pad = pad_lengths(pad)
        self.fill_null = fill_values(fill_null)
        self.seed = seed
        self.cache_row_groups = cache_row_groups
        self._init_state()
        counts: list[int] = []
        self.groups: list[tuple[int, int]] = []  # segment -> (file, record batch or row group)
        schemas = []
        largest = 0
        for f, path_f in enumerate(self.files):
            if self.layout.format == "arrow":
                opened = open_arrow(path_f)
                self._maps.append(opened[0])
                batches, schema = opened[1], opened[2]
                rows = [b.num_rows for b in batches]
                self._batches += [b for b in batches if b.num_rows]
            else:
                meta = parquet_footer(path_f)
                schema = meta.schema.to_arrow_schema()
                rows = [meta.row_group(r).num_rows for r in range(meta.num_row_groups)]
                largest = max([largest] + [meta.row_group(r).total_byte_size
                                           for r in range(meta.num_row_groups)])
            schemas.append(schema)
            for r, n in enumerate(rows):
                if n:
                    self.groups.append((f, r))
                    counts.append(n)
        self.columns, self.images = choose_columns(
            schemas, self.files, field_names(columns, "column names"), self.pad, pad_value,
            self.fill_null)
        if self.images:
            if transforms is None:
                raise bad_key("transforms", f"column '{self.images[0]}' holds images (the Image "
                              "feature), which need one size: set source.transforms, e.g. "
                              "[{resize: [32, 32]}] or transforms=val_224, or leave the column "
                              "out with source.columns")
            self.transforms = Transforms.parse(transforms)
            self.decoder = Decoder(**_decode_keys(decode))
        elif transforms is not None or decode:
            key = "transforms" if transforms is not None else "decode"
            raise bad_key(key, "no image column is read (no column has the Image feature); "
                          f"remove source.{key}")
        self.length = int(sum(counts))
        if self.length == 0:
            raise ValueError(f"path: the dataset at '{self.path}' has no rows")
        self.starts = np.concatenate([[0], np.cumsum(counts, dtype=np.int64)])
        self.group_bytes = largest
        self.largest_image = (0, 0)  # the largest encoded image (bytes) and image (pixels) read

    def _init_state(self) -> None:
        self._lock = threading.Lock()
        self._maps: list[Any] = []  # this process's memory maps of the Arrow files
        self._batches: list[Any] = []  # their record batches with rows, in segment order
        self._segments: dict[int, Segment] = {}  # Arrow segments converted, kept (views)
        self._local = threading.local()  # this thread's open Parquet files
        self._states: list[OpenFiles] = []
        self._cache = RowGroupCache(self.cache_row_groups)

    # the indexable protocol ------------------------------------------------------------------

    def __len__(self) -> int:
        return self.length

    def read(self, indices: np.ndarray, epoch: int = 0) -> dict[str, np.ndarray]:
        """The rows at ``indices``, in that order: a fresh array per column."""
        return self.read_into(indices, _fresh, epoch)

    def read_into(self, indices: np.ndarray, allocate: Allocator,
                  epoch: int = 0) -> dict[str, np.ndarray]:
        """``read``, with the output arrays from ``allocate(name, shape, dtype)`` (a process
        worker's shared-memory slot): each value is written once, where the batch reads it."""
        indices = np.asarray(indices, dtype=np.int64).reshape(-1)
        n = len(indices)
        if n and (indices.min() < 0 or indices.max() >= self.length):
            raise IndexError(f"read: indices must lie in 0..{self.length - 1}, got "
                             f"{int(indices.min())}..{int(indices.max())}")
        out = {c.name: allocate(c.name, (n, *c.shape), c.dtype) for c in self.columns}
        for name in self.images:
            out[name] = allocate(name, (n, 3, *self.transforms.out_size), np.dtype(np.uint8))
        if n == 0:
            return out
        where = np.searchsorted(self.starts, indices, side="right") - 1
        if bool(np.all(where[1:] >= where[:-1])):  # in order (a range): no sort
            order = np.arange(n)
            touched, begins = np.unique(where, return_index=True)
        else:
            order = np.argsort(where, kind="stable")
            touched, begins = np.unique(where[order], return_index=True)
        ends = np.append(begins[1:], n)
        for k in range(len(touched)):
            g = int(touched[k])
            rows = order[begins[k]:ends[k]]
            local = indices[rows] - self.starts[g]
            self._fill(g, self._segment(g), rows, local, out, epoch)
        return out

    def _fill(self, g: int, segment: Segment, rows: np.ndarray, local: np.ndarray,
              out: dict[str, np.ndarray], epoch: int) -> None:
        """Write rows ``local`` of segment ``g`` into ``out`` at ``rows``."""
        span = len(rows)
        ranged = span > 1 and int(rows[-1] - rows[0]) == span - 1 \
            and int(local[-1] - local[0]) == span - 1
        for name, null in segment.nulls.items():
            hit = local[np.isin(local, null)]
            if len(hit):
                self._refuse_null(g, name, int(hit[0]))
        for c in self.columns:
            if c.name in segment.arrays:
                values = segment.arrays[c.name]
                if ranged:
                    lo, r0 = int(local[0]), int(rows[0])
                    out[c.name][r0:r0 + span] = values[lo:lo + span]
                else:
                    out[c.name][rows] = values[local]
                continue
            values, bad = taken(c, segment.arrow[c.name], local)
            if len(bad):
                self._refuse_null(g, c.name, int(local[bad[0]]))
            out[c.name][rows] = values
        for name in self.images:
            self._decode(g, name, segment.images[name], rows, local, out[name], epoch)

    def _decode(self, g: int, name: str, images: EncodedImages, rows: np.ndarray,
                local: np.ndarray, out: np.ndarray, epoch: int) -> None:
        """Decode and transform the images at rows ``local`` of segment ``g`` into ``out``.
        Each row's bytes are sliced from the segment's buffer (no pyarrow scalar per row)."""
        base = int(self.starts[g])
        decode, transforms, seed = self.decoder.decode_into, self.transforms, self.seed
        data = images.data
        begins, ends = images.spans(local)
        missing = images.missing[local].tolist() if images.missing is not None else None
        most_bytes, most_pixels = self.largest_image
        for k, (row, i) in enumerate(zip(rows.tolist(), local.tolist(), strict=True)):
            if missing is not None and missing[k]:
                encoded = self._image_file(g, name, i, images.paths[i].as_py())
            else:
                encoded = bytes(data[begins[k]:ends[k]])
            try:
                geometry = decode(encoded, out[row], transforms, seed, epoch, base + i)
            except (ImageError, ValueError) as exc:
                raise SourceError(NAME, f"{self._where(g, i)}, column '{name}': {exc}",
                                  field=name) from exc
            width, height = geometry.size
            most_bytes = max(most_bytes, len(encoded))
            most_pixels = max(most_pixels, width * height)
        self.largest_image = (most_bytes, most_pixels)

    def _image_file(self, g: int, name: str, i: int, path: str | None) -> bytes:
        """An image stored as a path only (its bytes not embedded): the file's bytes."""
        if path is None:
            raise SourceError(NAME, f"{self._where(g, i)}: column '{name}' is null (no image); "
                              "failures.on_error=skip drops such rows", field=name)
        if not os.path.isabs(path):
            path = os.path.join(os.path.dirname(self.files[self.groups[g][0]]), path)
        try:
            with open(path, "rb") as fh:
                return fh.read()
        except OSError as exc:
            raise SourceError(NAME, f"{self._where(g, i)}: column '{name}' names the image file "
                              f"'{path}' (its bytes are not in the dataset), which cannot be read: "
                              f"{type(exc).__name__}: {exc}. Embed the images (e.g. "
                              "dataset.cast_column(name, Image()) then save_to_disk from bytes)",
                              field=name) from exc

    def _where(self, g: int, i: int) -> str:
        f, r = self.groups[g]
        unit = "record batch" if self.layout.format == "arrow" else "row group"
        return f"row {int(self.starts[g]) + i:,} ('{self.files[f]}', {unit} {r})"

    def _refuse_null(self, g: int, name: str, i: int) -> None:
        raise SourceError(NAME, f"{self._where(g, i)}: column '{name}' holds a null. A tensor has "
                          f"no nulls: set source.fill_null={{{name}: VALUE}} (or one value for "
                          "every column), or leave the column out with source.columns; "
                          "failures.on_error=skip drops only those rows", field=name)

    # segments ----------------------------------------------------------------------------------

    def _segment(self, g: int) -> Segment:
        if self.layout.format == "arrow":
            segment = self._segments.get(g)
            if segment is None:
                batch = self._arrow_batches()[g]
                names = [c.name for c in self.columns] + self.images
                segment = segment_of(self.columns, self.images,
                                     {n: batch.column(n) for n in names})
                self._segments[g] = segment  # views of the map: kept for the process's life
            return segment
        self._thread_files()
        return self._cache.get(g, self._decode_row_group)  # type: ignore[return-value]

    def _arrow_batches(self) -> list[Any]:
        """This process's record batches (the files mapped once per process)."""
        if not self._batches:
            with self._lock:
                if not self._batches:
                    maps, batches = [], []
                    for path in self.files:
                        source, found, _ = open_arrow(path)
                        maps.append(source)
                        batches += [b for b in found if b.num_rows]
                    self._maps, self._batches = maps, batches
        return self._batches

    def _thread_files(self) -> OpenFiles:
        state = getattr(self._local, "state", None)
        if state is None:
            state = self._local.state = OpenFiles()
            with self._lock:
                self._states.append(state)
                self._cache.capacity = self.cache_row_groups * len(self._states)
        return state

    def _decode_row_group(self, g: int) -> Segment:
        import pyarrow.parquet as pq

        f, r = self.groups[g]
        files = self._thread_files().files
        handle = files.get(f)
        if handle is None:
            handle = files[f] = pq.ParquetFile(self.files[f])
            while len(files) > 4:
                files.popitem(last=False)[1].close()
        names = [c.name for c in self.columns] + self.images
        try:
            table = handle.read_row_group(r, columns=names, use_threads=False)
        except Exception as exc:  # ArrowInvalid, OSError: a damaged file
            raise SourceError(NAME, f"'{self.files[f]}' (row group {r}) cannot be decoded: "
                              f"{type(exc).__name__}: {exc}") from exc
        return segment_of(self.columns, self.images, {n: one_array(table.column(n)) for n in names})

    # what the plan and the summary read --------------------------------------------------------

    def mapped_bytes(self) -> tuple[int, str]:
        """The memory-mapped Arrow files: page cache shared by every worker, not buffers."""
        if self.layout.format != "arrow":
            return 0, ""
        size = sum(os.path.getsize(path) for path in self.files)
        return size, f"{len(self.files)} Arrow file(s) of '{self.path}'"

    def read_scratch(self) -> tuple[int, str]:
        """What one worker keeps between reads: decoded Parquet row groups (their uncompressed
        size from the footers) and the largest image decoded so far."""
        encoded, pixels = self.largest_image
        images = encoded + pixels * self.decoder.bytes_per_pixel if self.images else 0
        groups = self.cache_row_groups * self.group_bytes
        what = []
        if groups:
            what.append(f"{self.cache_row_groups} x {self.group_bytes:,} B: the largest row group "
                        "(source.cache_row_groups)")
        if self.images:
            what.append(f"{images:,} B: the largest image read, encoded and decoded")
        return groups + images, "; ".join(what)

    def run_info(self) -> dict[str, Any]:
        """What the run's summary.json records about this source."""
        info: dict[str, Any] = {
            "path": self.path, "layout": self.layout.kind, "format": self.layout.format,
            "split": self.layout.split, "files": len(self.files), "rows": self.length,
            "columns": {c.name: {"type": c.arrow_type, "shape": list(c.shape),
                                 "dtype": c.dtype.name} for c in self.columns}}
        if self.images:
            info["images"] = {name: [3, *self.transforms.out_size] for name in self.images}
            info["transforms"] = self.transforms.describe()
            info["decoder"] = self.decoder.name
        return info

    def close(self) -> None:
        """Close the Parquet files and memory maps; drop converted segments."""
        with self._lock:
            states, self._states = self._states, []
            maps, self._maps = self._maps, []
            self._batches, self._segments = [], {}
            self._local = threading.local()
        self._cache.clear()
        for state in states:
            state.close()
        for source in maps:
            source.close()

    # pickling: maps, files and caches stay behind -----------------------------------------------

    def __getstate__(self) -> dict[str, Any]:
        state = self.__dict__.copy()
        for key in ("_lock", "_maps", "_batches", "_segments", "_local", "_states", "_cache"):
            del state[key]
        return state

    def __setstate__(self, state: dict[str, Any]) -> None:
        self.__dict__.update(state)
        self._init_state()

    def __repr__(self) -> str:
        return (f"HFSource('{self.path}', split={self.layout.split!r}, "
                f"columns={[c.name for c in self.columns] + self.images}, rows={self.length})")


def _decode_keys(decode: Mapping[str, Any] | None) -> dict[str, Any]:
    decode = dict(decode or {})
    unknown = sorted(set(decode) - {"backend", "exact", "max_pixels"})
    if unknown:
        raise bad_key(f"decode.{unknown[0]}", "decode takes backend (auto|pillow|opencv), exact "
                      "(true|false) and max_pixels")
    return decode


def _fresh(name: str, shape: tuple[int, ...], dtype: np.dtype) -> np.ndarray:
    return np.empty(shape, dtype=dtype)

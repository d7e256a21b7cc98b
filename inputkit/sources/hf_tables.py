"""The record batches of a Hugging Face dataset's files, read with pyarrow alone: Arrow files
memory-mapped (``datasets`` writes the IPC stream format; the file format is read too), Parquet
files by row group. A *segment* is one record batch or one row group; what a read needs of one
is a :class:`Segment`. Used by :mod:`inputkit.sources.hf`."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

import numpy as np

from inputkit.sources.parquet_cache import RowGroup
from inputkit.sources.parquet_columns import Column, to_numpy

_ARROW_FILE_MAGIC = b"ARROW1"


@dataclass
class Segment(RowGroup):
    """One record batch or row group: ``arrays`` holds the columns converted whole (numbers and
    fixed-size lists: views of the mapped file where Arrow allows, with ``nulls`` their rows that
    hold a null), ``arrow`` the padded lists taken at read time, ``images`` the image columns."""

    arrow: dict[str, Any] = field(default_factory=dict)
    images: dict[str, EncodedImages] = field(default_factory=dict)


@dataclass
class EncodedImages:
    """One segment's image column (``datasets``' struct of ``bytes`` and ``path``) laid out for
    reading row by row without a pyarrow scalar per row: the bytes' offsets as a numpy array and
    their data as a memoryview (both views of the mapped file or the decoded row group), which
    rows have no bytes (``missing``: an image stored as a path, or a null), and the paths."""

    offsets: np.ndarray
    data: memoryview
    missing: np.ndarray | None  # bool per row; None when every row has its bytes
    paths: Any

    @classmethod
    def of(cls, array: Any) -> EncodedImages:
        import pyarrow as pa

        # flatten: the struct's fields with its own nulls (and offset) merged into each
        fields = dict(zip([f.name for f in array.type], array.flatten(), strict=True))
        encoded = fields["bytes"]
        width = 8 if pa.types.is_large_binary(encoded.type) else 4
        _, offsets, data = encoded.buffers()
        offsets = np.frombuffer(offsets, dtype=np.int64 if width == 8 else np.int32,
                                count=len(encoded) + 1, offset=encoded.offset * width)
        missing = None
        if encoded.null_count:
            missing = encoded.is_null().to_numpy(zero_copy_only=False)
        return cls(offsets, memoryview(data if data is not None else b""), missing,
                   fields["path"])

    def spans(self, local: np.ndarray) -> tuple[list[int], list[int]]:
        """Where rows ``local``'s bytes begin and end in ``data``."""
        return self.offsets[local].tolist(), self.offsets[local + 1].tolist()


def open_arrow(path: str) -> tuple[Any, list[Any], Any]:
    """``(memory map, record batches, schema)`` of one Arrow file; the batches are views of
    the map (nothing is read until a page is touched). A ValueError names a file that is not
    Arrow."""
    import pyarrow as pa

    try:
        source = pa.memory_map(path)
        if source.read(len(_ARROW_FILE_MAGIC)) == _ARROW_FILE_MAGIC:
            source.seek(0)
            file_reader = pa.ipc.open_file(source)
            batches = [file_reader.get_batch(i) for i in range(file_reader.num_record_batches)]
            schema = file_reader.schema
        else:
            source.seek(0)
            stream = pa.ipc.open_stream(source)
            batches = list(stream)
            schema = stream.schema
    except (OSError, pa.ArrowInvalid) as exc:
        raise ValueError(f"path: '{path}' is not an Arrow file, or is corrupt or truncated: "
                         f"{type(exc).__name__}: {exc}") from None
    return source, batches, schema


def parquet_footer(path: str) -> Any:
    """The footer of one Parquet file; a ValueError names a file that is not Parquet."""
    import pyarrow.parquet as pq

    try:
        return pq.read_metadata(path)
    except Exception as exc:  # ArrowInvalid for a bad footer, OSError for a short file
        raise ValueError(f"path: '{path}' is not a Parquet file, or is corrupt or truncated: "
                         f"{type(exc).__name__}: {exc}") from None


def segment_of(columns: list[Column], images: list[str], arrays: dict[str, Any]) -> Segment:
    """A segment from its Arrow arrays (one per column read): numbers and fixed-size lists
    converted once (zero-copy without nulls), padded lists and images kept for ``take``."""
    segment = Segment(arrays={})
    for c in columns:
        array = arrays[c.name]
        if c.kind == "padded":
            segment.arrow[c.name] = array
            continue
        values, bad = to_numpy(c, array)
        segment.arrays[c.name] = values
        if len(bad):
            segment.nulls[c.name] = bad
    for name in images:
        segment.images[name] = EncodedImages.of(arrays[name])
    return segment


def one_array(column: Any) -> Any:
    """A ChunkedArray (a Parquet row group's column) as one Array; no copy when one chunk."""
    return column.chunk(0) if column.num_chunks == 1 else column.combine_chunks()


def taken(column: Column, array: Any, local: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Rows ``local`` of a padded column's Arrow ``array``, padded (and the taken rows, as
    positions in ``local``, that hold a kept null)."""
    import pyarrow as pa

    return to_numpy(column, array.take(pa.array(local, pa.int64())))

"""Pre-tokenized token files for language-model pretraining, read as fixed-length windows.

``TokenSource(files="data/*.bin", dtype="uint16", seq_len=2048)`` memory-maps flat token
files (raw binary of a declared dtype, as nanoGPT and Megatron write them, or ``.npy``) and
cuts them into windows of ``seq_len + 1`` tokens: ``input_ids = w[:-1]``, ``labels = w[1:]``.
Window ``k`` starts at token ``k * stride`` (``stride`` defaults to ``seq_len``: the
``input_ids`` of consecutive windows tile the tokens exactly, each window sharing its last
label with the next window's first input). ``mode="stream"`` treats the files as one
concatenated stream, in order (a window may span two files); ``mode="per_file"`` cuts each
file on its own, so no window crosses a file boundary.

The source is indexable by window, so shuffling, exactly-once epochs, ``epoch.*`` keys and
``state_dict()`` resume come from the pipeline. The constructor reads sizes, ``.npy``
headers and a sample of the raw files' ids (:mod:`inputkit.sources.token_files`), so bad
files and a ``dtype`` or ``output_dtype`` that does not fit them fail when the source is
built (a config error naming ``source`` and the keys); the maps are opened on the first
read, once per process, and their pages are shared through the page cache (the memory plan
shows them as page cache, not as buffers).
"""

from __future__ import annotations

import os
import threading
from collections.abc import Callable, Sequence
from typing import Any

import numpy as np

from inputkit.errors import SourceError
from inputkit.sources.remote_files import is_url
from inputkit.sources.remote_files import sizes as object_sizes
from inputkit.sources.token_checks import (
    FIELDS,
    NAME,
    inspect_file,
    positive,
    token_dtype,
    window_fields,
)
from inputkit.sources.token_files import dtype_name, expand, output_range, sample_ids
from inputkit.sources.token_windows import WindowCopy

__all__ = ["FIELDS", "MODES", "NAME", "TokenSource"]
MODES = ("stream", "per_file")
Allocator = Callable[[str, tuple[int, ...], np.dtype], np.ndarray]


class TokenSource(WindowCopy):
    """Windows of ``seq_len + 1`` tokens from flat token files (raw binary or ``.npy``).

    ``files``: a path, a glob pattern or a list of either, read in the order given (each
    pattern's matches sorted by name). ``dtype``: the token dtype of raw files (required for
    them); a ``.npy`` file carries its own, which must match it when both are given.
    ``seq_len``, ``stride`` (``None``: ``seq_len``, non-overlapping), ``mode`` (``stream`` or
    ``per_file``). ``vocab_size``: when set, every token read is checked to be below it.
    ``fields``: any of ``input_ids``, ``labels`` (shifted by one), ``tokens`` (the whole
    ``seq_len + 1`` window) and ``id`` (the window's index). ``output_dtype``: the dtype of
    the token fields (``int64``, as torch's cross-entropy expects; ``None`` keeps the file's);
    it must hold every id (below ``vocab_size``, else every value of ``dtype``).
    """

    def __init__(self, files: str | Sequence[str], seq_len: int, dtype: str | None = None,
                 stride: int | None = None, mode: str = "stream", vocab_size: int | None = None,
                 fields: Sequence[str] | str = ("input_ids", "labels"),
                 output_dtype: str | None = "int64") -> None:
        self.seq_len = positive(seq_len, "seq_len")
        self.stride = self.seq_len if stride is None else positive(stride, "stride")
        if mode not in MODES:
            raise ValueError(f"mode: expected stream (one stream over all files, in order) or "
                             f"per_file (windows never cross a file), got {mode!r}")
        self.mode = mode
        self.vocab_size = None if vocab_size is None else positive(vocab_size, "vocab_size")
        self.fields = window_fields(fields)
        self.declared = token_dtype(dtype, "dtype") if dtype is not None else None
        self.paths = expand(files)
        # objects in a store are read by byte ranges (their sizes from one head each), never mapped
        self.remote = [is_url(path) for path in self.paths]
        remote_sizes = dict(zip((p for p, r in zip(self.paths, self.remote, strict=True) if r),
                                object_sizes([p for p, r in zip(self.paths, self.remote,
                                                                 strict=True) if r]), strict=True))
        sizes = [inspect_file(path, self.declared, remote_sizes.get(path)) for path in self.paths]
        self.dtype = sizes[0][1]  # expand never returns an empty list
        for path, (_, file_dtype, _) in zip(self.paths, sizes, strict=True):
            if file_dtype != self.dtype:
                raise ValueError(f"files: '{path}' holds {dtype_name(file_dtype)} tokens but "
                                 f"'{self.paths[0]}' holds {dtype_name(self.dtype)}; every file "
                                 "needs the same dtype (set source.dtype to check it)")
        self.output_dtype = self.dtype if output_dtype is None else token_dtype(output_dtype,
                                                                           "output_dtype")
        output_range(self.dtype, self.output_dtype, self.vocab_size)
        # a cast that could change a value (a wider or signed file into a narrower or unsigned
        # output, the ids checked to fit by vocab_size): the ids are checked before the cast
        self.narrow = not np.can_cast(self.dtype, self.output_dtype, "safe")
        self.file_tokens = np.array([n for n, _, _ in sizes], dtype=np.int64)
        self.offsets = [off for _, _, off in sizes]  # header bytes before the tokens (.npy)
        sample_ids(self.paths, self.file_tokens.tolist(), self.offsets,
                   [not p.endswith(".npy") for p in self.paths], self.dtype, self.vocab_size)
        # token k of the stream is token k - file_start[f] of file f
        self.file_start = np.concatenate([[0], np.cumsum(self.file_tokens)]).astype(np.int64)
        self.total_tokens = int(self.file_start[-1])
        self._count_windows()
        self._lock = threading.Lock()
        self._maps: list[np.ndarray] | None = None

    # the indexable protocol ------------------------------------------------------------------

    def __len__(self) -> int:
        return self.length

    def setup(self, worker_id: int, num_workers: int) -> None:
        """Map the files in this process (the pipeline calls it in every worker)."""
        self._open()

    def read(self, indices: np.ndarray) -> dict[str, np.ndarray]:
        """Fresh arrays holding windows ``indices``, in that order."""
        return self.read_into(indices, _fresh)

    def read_into(self, indices: np.ndarray, allocate: Allocator) -> dict[str, np.ndarray]:
        """``read``, with the output arrays from ``allocate(name, shape, dtype)`` (a process
        worker's shared-memory slot): each token is copied once, from the map to the slot.

        Consecutive windows (an unshuffled chunk) are one slice of the map, viewed as
        overlapping rows; shuffled windows are one slice each."""
        indices = np.asarray(indices, dtype=np.int64).reshape(-1)
        n = len(indices)
        if n and (indices.min() < 0 or indices.max() >= self.length):
            raise IndexError(f"read: indices must lie in 0..{self.length - 1}, got "
                             f"{int(indices.min())}..{int(indices.max())}")
        width = {"input_ids": self.seq_len, "labels": self.seq_len, "tokens": self.seq_len + 1}
        out = {name: allocate(name, (n, width[name]), self.output_dtype)
               for name in self.fields if name != "id"}
        if "id" in self.fields:
            out["id"] = allocate("id", (n,), np.dtype(np.int64))
            out["id"][:] = indices
        if not n or not width.keys() & out.keys():
            return out
        starts = self._starts(indices)
        self._copy_windows(starts, out.get("input_ids"), out.get("labels"), out.get("tokens"))
        if not self.narrow and (self.vocab_size is not None or self.dtype.kind == "i"):
            self._check_ids(out, starts)
        return out

    def close(self) -> None:
        """Drop the memory maps (they are unmapped once no array refers to them)."""
        with self._lock:
            self._maps = None

    # what the run and the memory plan learn ----------------------------------------------------

    def run_info(self) -> dict[str, Any]:
        """What the run's summary.json records about this source."""
        return {"files": len(self.paths), "tokens": self.total_tokens, "windows": self.length,
                "seq_len": self.seq_len, "stride": self.stride, "mode": self.mode,
                "dtype": self.dtype.name, "tokens_left_out": self.left_out}

    def mapped_bytes(self) -> tuple[int, str]:
        """For the memory plan: the bytes of the mapped files. They are page cache, which the
        operating system shares between processes and evicts under pressure, not buffers.
        Objects in a store are not mapped (0): the ranges a read fetches are as large as the
        windows it returns, held while the chunk is filled (the probe measures them)."""
        local = [i for i, r in enumerate(self.remote) if not r]
        tokens = int(self.file_tokens[local].sum()) if local else 0
        if not tokens:
            return 0, ""
        return tokens * self.dtype.itemsize, (
            f"{len(local):,} token file(s), {tokens:,} tokens x {self.dtype.itemsize} B "
            f"({self.dtype.name})")

    def sample_groups(self) -> np.ndarray:
        """The file of each window (of its first token, in stream mode): for a shuffle that
        keeps reads within a few files at a time."""
        return (np.searchsorted(self.file_start, self._starts(np.arange(self.length,
                                                                        dtype=np.int64)),
                                side="right") - 1).astype(np.int64)

    # pickling: the maps are per process ------------------------------------------------------

    def __getstate__(self) -> dict[str, Any]:
        state = self.__dict__.copy()
        state["_maps"] = None
        del state["_lock"]
        return state

    def __setstate__(self, state: dict[str, Any]) -> None:
        self.__dict__.update(state)
        self._lock = threading.Lock()

    def __repr__(self) -> str:
        return (f"TokenSource(files={len(self.paths)}, tokens={self.total_tokens:,}, "
                f"seq_len={self.seq_len}, stride={self.stride}, mode={self.mode!r}, "
                f"windows={self.length:,})")

    # internals -------------------------------------------------------------------------------

    def _count_windows(self) -> None:
        """Windows per file (per_file) or in the stream, and the tokens no window reaches."""
        need = self.seq_len + 1
        if self.mode == "per_file":
            short = np.flatnonzero(self.file_tokens < need)
            if len(short):
                f = int(short[0])
                raise ValueError(f"seq_len: {self.seq_len} + 1 tokens do not fit in "
                                 f"'{self.paths[f]}', which holds {int(self.file_tokens[f]):,} "
                                 f"tokens ({len(short)} file(s) are that short); with "
                                 "mode=per_file no window crosses a file, so lower seq_len, "
                                 "leave the short files out, or use mode=stream")
            per_file = (self.file_tokens - need) // self.stride + 1
            self.first_window = np.concatenate([[0], np.cumsum(per_file)]).astype(np.int64)
            self.length = int(self.first_window[-1])
            used = (per_file - 1) * self.stride + need
            self.left_out = int((self.file_tokens - used).sum())
        else:
            if self.total_tokens < need:
                raise ValueError(f"seq_len: {self.seq_len} + 1 tokens do not fit in the "
                                 f"{self.total_tokens:,} tokens of all {len(self.paths)} "
                                 f"file(s) ('{self.paths[0]}', ...); lower seq_len or add files")
            self.length = (self.total_tokens - need) // self.stride + 1
            self.left_out = self.total_tokens - ((self.length - 1) * self.stride + need)

    def _starts(self, indices: np.ndarray) -> np.ndarray:
        """The stream position of each window's first token."""
        if self.mode == "stream":
            return indices * self.stride
        f = np.searchsorted(self.first_window, indices, side="right") - 1
        return self.file_start[f] + (indices - self.first_window[f]) * self.stride

    def _open(self) -> list[np.ndarray]:
        maps = self._maps
        if maps is not None:
            return maps
        with self._lock:  # thread workers share this object: map the files once
            if self._maps is None:
                self._maps = [self._map(i) for i in range(len(self.paths))]
            return self._maps

    def _map(self, i: int) -> np.ndarray:
        path, count = self.paths[i], int(self.file_tokens[i])
        if count == 0 or self.remote[i]:  # an object in a store is read by ranges, not mapped
            return np.empty(0, self.dtype)
        try:
            size = os.path.getsize(path)
            mapped = np.memmap(path, dtype=self.dtype, mode="r", offset=self.offsets[i],
                               shape=(count,))
        except (OSError, ValueError) as exc:
            raise SourceError(NAME, f"cannot map '{path}': {type(exc).__name__}: {exc}") from exc
        if size != self.offsets[i] + count * self.dtype.itemsize:
            raise SourceError(NAME, f"'{path}' changed since the source was built: it held "
                              f"{count:,} tokens, now {size:,} bytes")
        return mapped.view(np.ndarray)  # a plain view: slicing a memmap object costs more


def _fresh(name: str, shape: tuple[int, ...], dtype: np.dtype) -> np.ndarray:
    return np.empty(shape, dtype)


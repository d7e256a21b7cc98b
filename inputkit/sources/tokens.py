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
from inputkit.sources.arrays import _read_header
from inputkit.sources.remote_files import is_url, npy_header, read_spans
from inputkit.sources.remote_files import sizes as object_sizes
from inputkit.sources.token_files import dtype_name, expand, output_range, sample_ids

NAME = "inputkit.sources.tokens.TokenSource"
FIELDS = ("input_ids", "labels", "tokens", "id")  # what `fields` may list
MODES = ("stream", "per_file")
Allocator = Callable[[str, tuple[int, ...], np.dtype], np.ndarray]


class TokenSource:
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
        self.seq_len = _positive(seq_len, "seq_len")
        self.stride = self.seq_len if stride is None else _positive(stride, "stride")
        if mode not in MODES:
            raise ValueError(f"mode: expected stream (one stream over all files, in order) or "
                             f"per_file (windows never cross a file), got {mode!r}")
        self.mode = mode
        self.vocab_size = None if vocab_size is None else _positive(vocab_size, "vocab_size")
        self.fields = _fields(fields)
        self.declared = _dtype(dtype, "dtype") if dtype is not None else None
        self.paths = expand(files)
        # objects in a store are read by byte ranges (their sizes from one head each), never mapped
        self.remote = [is_url(path) for path in self.paths]
        remote_sizes = dict(zip((p for p, r in zip(self.paths, self.remote, strict=True) if r),
                                object_sizes([p for p, r in zip(self.paths, self.remote,
                                                                 strict=True) if r]), strict=True))
        sizes = [_inspect(path, self.declared, remote_sizes.get(path)) for path in self.paths]
        self.dtype = sizes[0][1]  # expand never returns an empty list
        for path, (_, file_dtype, _) in zip(self.paths, sizes, strict=True):
            if file_dtype != self.dtype:
                raise ValueError(f"files: '{path}' holds {dtype_name(file_dtype)} tokens but "
                                 f"'{self.paths[0]}' holds {dtype_name(self.dtype)}; every file "
                                 "needs the same dtype (set source.dtype to check it)")
        self.output_dtype = self.dtype if output_dtype is None else _dtype(output_dtype,
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

    def _copy_windows(self, starts: np.ndarray, inputs: np.ndarray | None,
                      labels: np.ndarray | None, tokens: np.ndarray | None) -> None:
        """Windows at stream positions ``starts`` into the output rows, cast on the way.

        Windows that follow each other in the stream (a run) are one slice of the map viewed
        as overlapping rows, so an unshuffled chunk is one copy per field; in a shuffled chunk
        each window is its own run, one slice each. The per-run work is bookkeeping only:
        which file, where in it, found for all runs at once."""
        n, width, step = len(starts), self.seq_len + 1, self.stride
        cut = np.flatnonzero(np.diff(starts) != step) + 1
        heads = np.concatenate([[0], cut]).astype(np.int64)
        lens = np.diff(np.concatenate([heads, [n]]))
        firsts = starts[heads]
        stops = firsts + (lens - 1) * step + width
        files = np.searchsorted(self.file_start, firsts, side="right") - 1
        inside = stops <= self.file_start[files + 1]  # the run lies in one file
        local = firsts - self.file_start[files]
        maps = self._open()
        fetched = self._fetch_spans(maps, firsts.tolist(), stops.tolist()) \
            if any(self.remote) else None
        for k, (a, count, f, lo, one_file, first, stop) in enumerate(zip(
                heads.tolist(), lens.tolist(), files.tolist(), local.tolist(), inside.tolist(),
                firsts.tolist(), stops.tolist(), strict=True)):
            if fetched is not None:
                span = fetched[k]
            else:
                span = maps[f][lo:lo + stop - first] if one_file else \
                    self._span(maps, first, stop)
            if self.narrow:  # checked as the file holds them: the cast could hide a bad id
                self._check_span(span, first)
            if count == 1:
                if inputs is not None:
                    inputs[a] = span[:-1]
                if labels is not None:
                    labels[a] = span[1:]
                if tokens is not None:
                    tokens[a] = span
                continue
            rows = np.lib.stride_tricks.as_strided(
                span, shape=(count, width), strides=(step * span.itemsize, span.itemsize),
                writeable=False)
            b = a + count
            if inputs is not None:
                inputs[a:b] = rows[:, :-1]
            if labels is not None:
                labels[a:b] = rows[:, 1:]
            if tokens is not None:
                tokens[a:b] = rows

    def _fetch_spans(self, maps: list[np.ndarray], firsts: list[int],
                     stops: list[int]) -> list[np.ndarray]:
        """Stream tokens ``firsts[k]:stops[k]`` of each run, where some files are objects in a
        store: every remote piece one byte range, all of a chunk's ranges fetched together
        (``Store.read_ranges``); local pieces are slices of their maps."""
        itemsize = self.dtype.itemsize
        pieces: list[list[tuple[int, int, int]]] = []  # per run: (file, lo, hi) in file tokens
        requests: list[tuple[str, int, int]] = []
        for start, stop in zip(firsts, stops, strict=True):
            run = []
            f = int(np.searchsorted(self.file_start, start, side="right")) - 1
            while start < stop:
                base, end = int(self.file_start[f]), int(self.file_start[f + 1])
                if end > start:
                    hi = min(stop, end)
                    run.append((f, start - base, hi - base))
                    if self.remote[f]:
                        requests.append((self.paths[f], self.offsets[f] + (start - base) * itemsize,
                                         (hi - start) * itemsize))
                    start = hi
                f += 1
            pieces.append(run)
        try:
            got = iter(read_spans(requests))
        except SourceError as exc:
            raise SourceError(NAME, f"cannot read token windows: {exc}") from exc
        spans = []
        for run in pieces:
            parts = [np.frombuffer(next(got), dtype=self.dtype) if self.remote[f]
                     else maps[f][lo:hi] for f, lo, hi in run]
            spans.append(parts[0] if len(parts) == 1 else np.concatenate(parts))
        return spans

    def _span(self, maps: list[np.ndarray], start: int, stop: int) -> np.ndarray:
        """Stream tokens ``start:stop``: a view of one map, or the pieces of several joined."""
        first = int(np.searchsorted(self.file_start, start, side="right")) - 1
        base = int(self.file_start[first])
        if stop <= self.file_start[first + 1]:
            return maps[first][start - base:stop - base]
        pieces = []
        f = first
        while start < stop:
            base, end = int(self.file_start[f]), int(self.file_start[f + 1])
            if end > start:
                pieces.append(maps[f][start - base:min(stop, end) - base])
                start = min(stop, end)
            f += 1
        return np.concatenate(pieces)

    def _check_ids(self, out: dict[str, np.ndarray], starts: np.ndarray) -> None:
        """Every token read lies in 0..vocab_size-1: one vectorised pass over the output."""
        for name, shift in (("tokens", 0), ("input_ids", 0), ("labels", 1)):
            arr = out.get(name)
            if arr is None or not arr.size:
                continue
            if name == "labels" and "input_ids" in out:  # all but its last column checked
                arr, shift = arr[:, -1:], self.seq_len
            too_big = self.vocab_size is not None and int(arr.max()) >= self.vocab_size
            if too_big or (self.dtype.kind == "i" and int(arr.min()) < 0):
                bad = (arr < 0) | (arr >= self.vocab_size) if self.vocab_size is not None \
                    else arr < 0
                row, col = np.unravel_index(int(np.argmax(bad)), arr.shape)
                self._bad_id(int(arr[row, col]), int(starts[row]) + int(col) + shift, name)

    def _check_span(self, span: np.ndarray, first: int) -> None:
        """The tokens of one run, stream positions ``first`` on, before a narrowing cast."""
        low = self.dtype.kind == "i" and int(span.min()) < 0
        if low or (self.vocab_size is not None and int(span.max()) >= self.vocab_size):
            bad = span < 0
            if self.vocab_size is not None:
                bad |= span >= self.vocab_size
            k = int(np.argmax(bad))
            self._bad_id(int(span[k]), first + k, next(f for f in self.fields if f != "id"))

    def _bad_id(self, value: int, position: int, name: str) -> None:
        f = int(np.searchsorted(self.file_start, position, side="right")) - 1
        offset = position - int(self.file_start[f])
        byte = self.offsets[f] + offset * self.dtype.itemsize
        limit = f">= vocab_size={self.vocab_size}" if value >= 0 else "negative"
        raise SourceError(NAME, f"'{self.paths[f]}': token id {value} at token offset "
                          f"{offset:,} (byte {byte:,}) is {limit}; check source.vocab_size and "
                          "source.dtype against the tokenizer that wrote the file", field=name)

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


def _positive(value: Any, key: str) -> int:
    if isinstance(value, bool) or not isinstance(value, (int, np.integer)) or value < 1:
        raise ValueError(f"{key}: expected a whole number >= 1, got {value!r}")
    return int(value)


def _dtype(value: Any, key: str) -> np.dtype:
    try:
        dtype = np.dtype(value)
    except TypeError:
        raise ValueError(f"{key}: {value!r} is not a numpy dtype; use e.g. uint16, uint32 or "
                         "int32") from None
    if dtype.kind not in "iu":
        raise ValueError(f"{key}: token ids are integers; got {dtype.name} (use e.g. uint16, "
                         "uint32, int32 or int64)")
    return dtype


def _fields(fields: Sequence[str] | str) -> list[str]:
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


def _inspect(path: str, declared: np.dtype | None,
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
        return _checked(path, declared, size, header)
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
    return _checked(path, declared, size, header)


def _checked(path: str, declared: np.dtype | None, size: int,
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


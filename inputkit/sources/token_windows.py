"""How a token source copies windows out of its files: gathered per chunk from memory maps,
run by run from maps or ranged reads of objects in a store, with the ids checked on the way.
A mixin of :class:`inputkit.sources.tokens.TokenSource`, which holds the index it reads
(``file_start``, ``paths``, ``offsets``, ``remote``) and opens the maps."""

from __future__ import annotations

from collections.abc import Callable

import numpy as np

from inputkit.errors import SourceError
from inputkit.sources.remote_files import read_spans
from inputkit.sources.token_checks import NAME

_GATHER_RUNS = 4  # a chunk of at least this many runs is gathered, fewer are copied run by run


class WindowCopy:
    """The window copying half of a token source (see the module's docstring)."""

    seq_len: int
    stride: int
    dtype: np.dtype
    vocab_size: int | None
    narrow: bool
    fields: list[str]
    paths: list[str]
    offsets: list[int]
    remote: list[bool]
    file_start: np.ndarray
    file_tokens: np.ndarray

    _open: Callable[[], list[np.ndarray]]  # the source's: its maps, opened once per process

    def _copy_windows(self, starts: np.ndarray, inputs: np.ndarray | None,
                      labels: np.ndarray | None, tokens: np.ndarray | None) -> None:
        """Windows at stream positions ``starts`` into the output rows, cast on the way.

        A chunk of few runs (unshuffled: one) is copied run by run, one slice of the map per
        run; a shuffled chunk (a run per window) is gathered per file in one indexing of the
        map viewed as overlapping windows, then cast in one copy per field: a few numpy calls
        per chunk instead of a few per window, so a thread worker holds the GIL for little
        of its read and a second worker's copies overlap the first's."""
        if len(_run_heads(starts, self.stride)) < _GATHER_RUNS or any(self.remote) \
                or not self._gather(starts, inputs, labels, tokens):
            self._copy_runs(starts, inputs, labels, tokens)

    def _gather(self, starts: np.ndarray, inputs: np.ndarray | None,
                labels: np.ndarray | None, tokens: np.ndarray | None) -> bool:
        """Copy every window by gathering; False (nothing to trust in the output) when a
        narrowing cast meets a bad id, so that :meth:`_copy_runs` raises naming the first one
        in the order it has always named it."""
        width = self.seq_len + 1
        maps = self._open()
        files = np.searchsorted(self.file_start, starts, side="right") - 1
        local = starts - self.file_start[files]
        inside = local + width <= self.file_tokens[files]  # crossing windows: stream mode only
        outputs = [(out, cols) for out, cols in ((inputs, slice(None, -1)),
                                                 (labels, slice(1, None)),
                                                 (tokens, slice(None))) if out is not None]
        touched = np.unique(files[inside]).tolist()
        whole = len(touched) == 1 and bool(inside.all())  # every window from one file
        for f in touched:
            rows = slice(None) if whole else np.flatnonzero(inside & (files == f))
            m = maps[f]
            windows = np.lib.stride_tricks.as_strided(
                m, shape=(len(m) - width + 1, width), strides=(m.strides[0], m.strides[0]),
                writeable=False)
            got = windows[local[rows]]  # (k, width) in the file's dtype: one gather
            if self.narrow and self._holds_bad(got):
                return False
            for out, cols in outputs:
                out[rows] = got[:, cols]
        for a in np.flatnonzero(~inside).tolist():
            start = int(starts[a])
            span = self._span(maps, start, start + width)
            if self.narrow and self._holds_bad(span):
                return False
            for out, cols in outputs:
                out[a] = span[cols]
        return True

    def _holds_bad(self, arr: np.ndarray) -> bool:
        """Whether ``arr`` (ids as the file holds them) has one that is negative or not below
        ``vocab_size``."""
        return bool((self.dtype.kind == "i" and int(arr.min()) < 0)
                    or (self.vocab_size is not None and int(arr.max()) >= self.vocab_size))

    def _copy_runs(self, starts: np.ndarray, inputs: np.ndarray | None,
                   labels: np.ndarray | None, tokens: np.ndarray | None) -> None:
        """Windows at stream positions ``starts`` into the output rows, run by run.

        Windows that follow each other in the stream (a run) are one slice of the map viewed
        as overlapping rows, so an unshuffled chunk is one copy per field; in a shuffled chunk
        each window is its own run, one slice each. The per-run work is bookkeeping only:
        which file, where in it, found for all runs at once."""
        n, width, step = len(starts), self.seq_len + 1, self.stride
        heads = _run_heads(starts, step)
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


def _run_heads(starts: np.ndarray, step: int) -> np.ndarray:
    """The first window of each run: windows that follow each other in the stream."""
    return np.concatenate([[0], np.flatnonzero(np.diff(starts) != step) + 1]).astype(np.int64)

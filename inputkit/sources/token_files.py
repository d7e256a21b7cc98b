"""The token files a config names, and whether what they hold fits the declared keys.

Used by :mod:`inputkit.sources.tokens` while the source is built, so that a wrong
``source.dtype`` or ``source.output_dtype`` is a config error before any worker starts,
not batches of silently wrong ids:

- ``output_range``: an ``output_dtype`` that cannot hold every id (``0 .. vocab_size - 1``
  when ``vocab_size`` is set, else every value of the file's dtype) would wrap ids in the
  cast (uint16 44725 as int16 is -20811);
- ``sample_ids``: a few blocks of each of a few raw files are read. Ids of ``SUSPECT_ID``
  (2**24) or more with no ``vocab_size`` are a narrower file read as a wider dtype (uint16
  pairs read as uint32 give ids like 1,550,495,413); a zero at every other position is a
  wider file read as a narrower dtype (uint32 ids below 65,536 read as uint16 give
  ``id, 0, id, 0, ...``), when most even positions hold an id.
"""

from __future__ import annotations

import glob
import os
import re
from collections.abc import Sequence

import numpy as np

from inputkit.sources.remote_files import expand as remote_expand
from inputkit.sources.remote_files import is_url, read_spans

_GLOB = re.compile(r"[*?[]")
# Ids at or past this, with no vocab_size, are refused: the largest tokenizer vocabularies in
# use hold about 256K ids (2**18), so 2**24 leaves 64x room, while a uint16 file read as uint32
# gives ids of 65,536 x its odd tokens: past 2**24 as soon as one odd token is 256 or more.
SUSPECT_ID = 2 ** 24
SAMPLE_FILES = 4  # files sampled: the first, the last and evenly between
SAMPLE_BLOCKS = 8  # blocks per sampled file: its first, its last and evenly between
BLOCK_TOKENS = 4096  # tokens per block (even, so that blocks start on a pair)
MIN_PAIRS = 512  # the zero-halves check needs this many token pairs of a file


def output_range(dtype: np.dtype, output: np.dtype, vocab_size: int | None) -> None:
    """A ValueError naming ``output_dtype`` and ``vocab_size`` (or ``dtype``) when ``output``
    cannot hold every id the file may hold."""
    if output == dtype:
        return
    top = vocab_size - 1 if vocab_size is not None else int(np.iinfo(dtype).max)
    holds = int(np.iinfo(output).max)
    if top <= holds:
        return
    wrapped = int(np.array(top, dtype=np.uint64).astype(output))
    keep = f"null to keep {dtype_name(dtype)}"
    if vocab_size is not None:
        raise ValueError(f"output_dtype: {output.name} holds ids up to {holds:,}, but "
                         f"source.vocab_size={vocab_size} means ids up to {top:,}, and a cast "
                         f"would wrap them (id {top:,} becomes {wrapped:,}); set "
                         f"source.output_dtype to int64, int32 or {keep}")
    raise ValueError(f"output_dtype: {output.name} holds ids up to {holds:,}, but the file's "
                     f"source.dtype={dtype_name(dtype)} holds ids up to {top:,} and "
                     f"source.vocab_size is not set, so a cast could wrap them (id {top:,} "
                     f"becomes {wrapped:,}); set source.vocab_size to the tokenizer's vocabulary "
                     f"(when it fits {output.name}: then every id is checked) or "
                     f"source.output_dtype to int64 or {keep}")


def sample_ids(paths: Sequence[str], counts: Sequence[int], offsets: Sequence[int],
               raw: Sequence[bool], dtype: np.dtype, vocab_size: int | None) -> None:
    """Read ``SAMPLE_BLOCKS`` blocks of each of ``SAMPLE_FILES`` raw files (``raw[i]``: no
    ``.npy`` header vouches for the dtype) and refuse ids that say ``source.dtype`` is wrong:
    ``SUSPECT_ID`` or more with no ``vocab_size``, or a zero at every odd position."""
    chosen = [i for i in range(len(paths)) if raw[i] and counts[i]]
    if len(chosen) > SAMPLE_FILES:
        chosen = [chosen[k] for k in np.linspace(0, len(chosen) - 1, SAMPLE_FILES).round()
                  .astype(int).tolist()]
    for i in chosen:
        positions, sample = _blocks(paths[i], int(counts[i]), int(offsets[i]), dtype)
        if vocab_size is None and dtype.itemsize >= 4:
            top = int(sample.max())
            if top >= SUSPECT_ID:
                at = int(positions[int(np.argmax(sample))])
                raise ValueError(
                    f"dtype: '{paths[i]}' read as source.dtype={dtype_name(dtype)} holds token id "
                    f"{top:,} (token offset {at:,}), and no tokenizer has that many ids (this "
                    f"check refuses ids of {SUSPECT_ID:,} = 2**24 or more when "
                    f"source.vocab_size is not set); is the file of a narrower dtype (uint16 "
                    f"ids read as uint32 pair up into ids like this one)? Check source.dtype, "
                    f"or set source.vocab_size to the tokenizer's vocabulary (every id read is "
                    f"then checked against it, and this check is off)")
        _zero_halves(paths[i], sample, dtype)


def _blocks(path: str, count: int, offset: int, dtype: np.dtype) -> tuple[np.ndarray, np.ndarray]:
    """Token offsets and values of SAMPLE_BLOCKS blocks of BLOCK_TOKENS tokens, each starting
    at an even token offset, the first and the last block of the file among them; a file of
    no more tokens than that is read whole."""
    if count <= SAMPLE_BLOCKS * BLOCK_TOKENS:  # a small file is read whole
        size, starts = count, [0]
    else:  # blocks at least BLOCK_TOKENS apart: none overlaps the next
        size = BLOCK_TOKENS
        last = (count - size) // 2 * 2
        starts = (np.linspace(0, last, SAMPLE_BLOCKS) // 2 * 2).astype(np.int64).tolist()
    values, positions = [], []
    if is_url(path):  # the blocks as byte ranges of the object, fetched together
        nbytes = size * dtype.itemsize
        got = read_spans([(path, offset + start * dtype.itemsize, nbytes) for start in starts])
        for start, data in zip(starts, got, strict=True):
            values.append(np.frombuffer(data, dtype=dtype))
            positions.append(np.arange(start, start + size))
        return np.concatenate(positions), np.concatenate(values)
    try:
        with open(path, "rb") as f:
            for start in starts:
                f.seek(offset + start * dtype.itemsize)
                block = np.frombuffer(f.read(size * dtype.itemsize), dtype=dtype)
                values.append(block)
                positions.append(np.arange(start, start + len(block)))
    except OSError as exc:
        raise ValueError(f"cannot read '{path}': {type(exc).__name__}: {exc}; check that the "
                         "file exists and is readable") from None
    return np.concatenate(positions), np.concatenate(values)


def _zero_halves(path: str, sample: np.ndarray, dtype: np.dtype) -> None:
    """Refuse a sample whose every odd token is 0 while most even ones are not: the low and
    high halves of ids of a dtype twice as wide (blocks start on even offsets, so the pairs
    line up). Real tokens put ids at odd positions too; zero padding zeroes both."""
    pairs = len(sample) // 2
    if dtype.itemsize > 4 or pairs < MIN_PAIRS:
        return
    even, odd = sample[0:2 * pairs:2], sample[1:2 * pairs:2]
    if odd.any() or np.count_nonzero(even) < pairs // 2:  # zeros in runs: padding, not halves
        return
    wider = np.dtype(f"{dtype.kind}{dtype.itemsize * 2}")
    raise ValueError(f"dtype: '{path}' read as source.dtype={dtype_name(dtype)} holds 0 at every "
                     f"odd position of the {2 * pairs:,} tokens sampled, and ids at most even ones: "
                     f"the file looks like {wider.name} tokens read as {dtype.name} (each id "
                     f"split into itself and a 0); check source.dtype (e.g. "
                     f"source.dtype={wider.name})")


def dtype_name(dtype: np.dtype) -> str:
    """The dtype's name, saying its byte order where it is not this machine's."""
    if dtype.isnative:
        return dtype.name
    order = "big" if dtype.byteorder == ">" else "little"
    return f"{dtype.name} ({order}-endian, '{dtype.str}')"


def expand(files: str | Sequence[str]) -> list[str]:
    """The files named by ``files`` (a path, a glob or a list of either), in order; each
    pattern's matches sorted by name; each file once."""
    entries = [files] if isinstance(files, (str, os.PathLike)) else files
    if not isinstance(entries, Sequence) or not entries or \
            not all(isinstance(e, (str, os.PathLike)) and str(e) for e in entries):
        raise ValueError(f"files: expected a path, a glob pattern ('data/*.bin') or a list of "
                         f"them, got {files!r}")
    paths: list[str] = []
    for entry in map(os.fspath, entries):
        if is_url(entry):  # a bucket's objects: braces and globs (listing the store)
            paths += remote_expand(entry, "files")
        elif _GLOB.search(entry):
            found = sorted(p for p in glob.glob(entry) if not os.path.isdir(p))
            if not found:
                raise ValueError(f"files: no files match '{entry}'{_resolved(entry)}; check the "
                                 "pattern (quote it in the shell: 'source.files=/data/*.bin')")
            paths += found
        elif os.path.isdir(entry):
            raise ValueError(f"files: '{entry}' is a directory; name its files, e.g. "
                             f"'{os.path.join(entry, '*.bin')}'")
        elif not os.path.exists(entry):
            raise ValueError(f"files: no such file: '{entry}'{_resolved(entry)}")
        else:
            paths.append(entry)
    if len(set(paths)) != len(paths):
        twice = next(p for p in paths if paths.count(p) > 1)
        raise ValueError(f"files: '{twice}' is listed twice; each file is read once per epoch")
    return paths


def _resolved(path: str) -> str:
    return "" if os.path.isabs(path) else f" (resolved to '{os.path.abspath(path)}')"

"""Tar shards in WebDataset layout, streamed member by member.

A shard is a tar file whose members are named ``<key>.<field>.<ext>``
(``000017.image.png``, ``000017.label.cls``); consecutive members with the same
key form one sample. A member named ``<key>.<ext>`` (``000017.cls``) is the
field ``<ext>``. Extensions:

- ``.npy``: a numpy array (no pickles; parsed by ``npy_bytes``, safe across threads);
- ``.png``, ``.jpg``, ``.jpeg``: an image, decoded with Pillow to a uint8
  ``H x W x C`` array (grey images get ``C = 1``);
- ``.txt``, ``.cls``, ``.json``: a whole number, e.g. a class label, as int64.

This is a *streaming* source (``fetch``, not indexable): worker ``w`` of ``n``
reads shards ``w, w + n, ...`` in order, each from start to end, with
``tarfile`` in stream mode (nothing is extracted to disk), and raises
:class:`~inputkit.errors.SourceExhausted` when its shards are done. A worker
with no shard (fewer shards than workers) stops at once.

This module is the source: its config, the fetch protocol, and the check that every sample
has the first one's fields, shapes and dtypes. One worker's stream through its shards is
``shard_stream.py``; what a member's name means and how it is decoded, ``shard_members.py``.
"""

from __future__ import annotations

import threading
import weakref
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np

from inputkit.errors import SourceError, SourceExhausted
from inputkit.sources.protocol import field_names
from inputkit.sources.remote_files import expand as remote_expand
from inputkit.sources.remote_files import is_url
from inputkit.sources.shard_members import IMAGE_EXTS, NAME, Member, decode_member
from inputkit.sources.shard_stream import ShardStream, close_streams
from inputkit.storage.locations import _expand_local


class ShardSource:
    """Samples from the tar shards ``urls``: a glob pattern, a brace pattern or a list of paths.

    ``urls="data/train-*.tar"``, ``urls="data/train-{000..009}.tar"`` or
    ``urls=[a.tar, b.tar]`` (each entry may itself be a pattern; shards of a
    glob are taken in sorted order). ``.tar.gz``, ``.tar.bz2`` and ``.tar.xz``
    shards are decompressed as they stream. ``fields`` keeps only those fields
    (others are skipped unread); ``None`` keeps every field of the first
    sample. ``decode_images=False`` leaves image members out, so a shard's
    other fields can be read without paying for decoding, or without Pillow.
    """

    def __init__(self, urls: str | Sequence[str], fields: Sequence[str] | str | None = None,
                 decode_images: bool = True) -> None:
        if not isinstance(decode_images, bool):
            raise ValueError(f"decode_images: expected true or false, got {decode_images!r}")
        self.urls = urls
        self.shards = _expand_urls(urls)
        self.fields = _field_list(fields)
        self.decode_images = decode_images
        if self.fields is not None and not decode_images:
            images = [f for f in self.fields if f in IMAGE_EXTS]
            if images:
                raise ValueError(f"fields lists '{images[0]}', an image field, but decode_images "
                                 "is false; drop one or the other")
        self._init_state()

    def _init_state(self) -> None:
        self._lock = threading.Lock()
        self._num_workers: int | None = None
        self._workers: dict[int, ShardStream] = {}  # worker id -> its stream; one thread per id
        self._reference: _Reference | None = None  # the first sample's fields, shapes and dtypes
        # A source dropped without close() (a failed memory probe's private copy, say)
        # still closes its files, so that no ResourceWarning fires from the garbage collector.
        self._finalizer = weakref.finalize(self, close_streams, self._workers)

    # the fetch protocol ----------------------------------------------------------------------

    def setup(self, worker_id: int, num_workers: int) -> None:
        """Worker ``worker_id`` of ``num_workers`` takes shards worker_id, worker_id + num_workers, ..."""
        if num_workers < 1 or not 0 <= worker_id < num_workers:
            raise ValueError(f"setup: worker_id {worker_id} is not in 0..{num_workers - 1}")
        with self._lock:
            self._num_workers = num_workers
            old = self._workers.pop(worker_id, None)  # a restarted worker starts over
            self._workers[worker_id] = ShardStream(self.shards[worker_id::num_workers], self.fields,
                                                  self.decode_images)
        if old is not None:
            old.close()

    def fetch(self, worker_id: int, batch_size_hint: int) -> dict[str, np.ndarray]:
        """The next samples (up to ``batch_size_hint``) of this worker's shards, stacked per field."""
        worker = self._worker(worker_id)
        if worker.errors:  # found while the previous chunk was filled
            raise worker.errors.pop(0)
        if worker.exhausted:
            raise SourceExhausted
        samples: list[_Sample] = []
        wanted = max(1, int(batch_size_hint))
        try:
            while len(samples) < wanted:
                group = worker.next_group()
                if group is None:
                    worker.exhausted = True
                    worker.close()
                    break
                samples.append(self._decode(*group))
                if worker.errors:  # the shard broke right after this sample
                    break
        except SourceError as exc:
            if not samples:
                raise
            worker.errors.append(exc)  # deliver the good samples first; the next call raises it
        if not samples:
            raise SourceExhausted
        return {name: np.stack([s.values[name] for s in samples]) for name in samples[0].values}

    def close(self) -> None:
        """Close every open shard."""
        close_streams(self._workers)

    # pickling: open files stay behind ------------------------------------------------------

    def __getstate__(self) -> dict[str, Any]:
        return {k: self.__dict__[k] for k in ("urls", "shards", "fields", "decode_images")}

    def __setstate__(self, state: dict[str, Any]) -> None:
        self.__dict__.update(state)
        self._init_state()

    def __repr__(self) -> str:
        return f"ShardSource({len(self.shards)} shards from {self.urls!r}, fields={self.fields})"

    # streaming -------------------------------------------------------------------------------

    def _worker(self, worker_id: int) -> ShardStream:
        worker = self._workers.get(worker_id)
        if worker is None:  # fetch without setup: as the only worker
            with self._lock:
                worker = self._workers.get(worker_id)
                if worker is None:
                    n = self._num_workers or 1
                    worker = self._workers[worker_id] = ShardStream(
                        self.shards[worker_id % n::n], self.fields, self.decode_images)
        return worker

    def _decode(self, path: str, members: list[Member]) -> _Sample:
        values: dict[str, np.ndarray] = {}
        names: dict[str, str] = {}
        for m in members:
            if m.field in values:
                raise SourceError(NAME, f"shard '{path}': sample '{m.key}' has the field "
                                  f"'{m.field}' twice ('{names[m.field]}' and '{m.name}')", m.field)
            values[m.field] = decode_member(path, m)
            names[m.field] = m.name
        sample = _Sample(path, members[0].key, values, names)
        reference = self._reference
        if reference is None:
            with self._lock:
                if self._reference is None:
                    order = self.fields if self.fields is not None else list(values)
                    self._reference = _Reference(path, sample.key, order, {
                        f: (v.shape, v.dtype, names[f]) for f, v in values.items()})
                reference = self._reference
        reference.check(sample)
        return _Sample(path, sample.key, {f: values[f] for f in reference.order}, names)


@dataclass(frozen=True)
class _Sample:
    path: str
    key: str
    values: dict[str, np.ndarray]
    names: dict[str, str]  # field -> member name


@dataclass(frozen=True)
class _Reference:
    """The first sample: every later sample needs its fields, shapes and dtypes."""

    path: str
    key: str
    order: list[str]
    specs: dict[str, tuple[tuple[int, ...], np.dtype, str]]  # field -> shape, dtype, member

    def check(self, sample: _Sample) -> None:
        first = f"the first sample ('{self.key}' in '{self.path}')"
        where = f"shard '{sample.path}': sample '{sample.key}'"
        for field in self.order:
            if field not in sample.values:
                has = ", ".join(sample.values) or "nothing"
                raise SourceError(NAME, f"{where} has no '{field}' field (it has {has}); "
                                  f"{first} has one, and every sample needs the same fields", field)
        for field, value in sample.values.items():
            spec = self.specs.get(field)
            if spec is None:
                raise SourceError(NAME, f"{where} has a '{field}' field ('{sample.names[field]}') "
                                  f"that {first} lacks; every sample needs the same fields "
                                  "(or list the fields to read in source.fields)", field)
            shape, dtype, member = spec
            if value.shape != shape or value.dtype != dtype:
                raise SourceError(NAME, f"shard '{sample.path}', member '{sample.names[field]}': "
                                  f"shape {value.shape} {value.dtype} differs from {shape} {dtype} "
                                  f"of '{member}' in '{self.path}'; every sample needs the same "
                                  "shape and dtype per field", field)


# urls ----------------------------------------------------------------------------------------

def _expand_urls(urls: str | Sequence[str]) -> list[str]:
    entries = [urls] if isinstance(urls, str) else urls
    if not isinstance(entries, Sequence) or not entries or \
            not all(isinstance(u, str) and u for u in entries):
        raise ValueError(f"urls: expected a path, a glob pattern ('data/train-*.tar') or a list of "
                         f"paths, got {urls!r}")
    shards: list[str] = []
    for entry in entries:
        if is_url(entry):  # objects in a store: braces and globs (a glob lists the store)
            shards += remote_expand(entry, "urls")
            continue
        if "://" in entry or entry.startswith("pipe:"):
            raise ValueError(f"urls: '{entry}' is neither a local path nor an s3://, gs://, "
                             "az:// or http(s):// URL; name the shards by one of those")
        shards += _expand_local(entry, "urls")  # braces and globs, as every source reads them
    seen: set[str] = set()
    for path in shards:
        if path in seen:
            raise ValueError(f"urls: the shard '{path}' is listed twice; each shard is read once "
                             "per epoch")
        seen.add(path)
    return shards


def _field_list(fields: Sequence[str] | str | None) -> list[str] | None:
    return field_names(fields, "the <field> of <key>.<field>.<ext>")

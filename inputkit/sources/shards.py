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
"""

from __future__ import annotations

import bz2
import gzip
import io
import json
import lzma
import os
import tarfile
import threading
import weakref
import zlib
from collections import deque
from collections.abc import Sequence
from dataclasses import dataclass
from typing import IO, Any

import numpy as np

from inputkit.errors import SourceError, SourceExhausted
from inputkit.sources.npy_bytes import load_npy_bytes
from inputkit.sources.protocol import field_names
from inputkit.sources.remote_files import RangeFile, is_url
from inputkit.sources.remote_files import expand as remote_expand
from inputkit.sources.remote_files import store as remote_store
from inputkit.storage.locations import _expand_local

NAME = "inputkit.sources.shards.ShardSource"
IMAGE_EXTS = frozenset({"png", "jpg", "jpeg"})
INT_EXTS = frozenset({"txt", "cls", "json"})
SUPPORTED = ".npy, .png, .jpg, .jpeg, .txt, .cls, .json"
_BLOCK = tarfile.BLOCKSIZE
_KEEP = 4 * tarfile.RECORDSIZE  # bytes of the stream kept to look at the block the archive ended on
_REMOTE_BLOCK = 4 << 20  # a remote shard streams in ranged reads of this many bytes, one held
_READ_ERRORS = (tarfile.TarError, EOFError, OSError, zlib.error, lzma.LZMAError)


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
        self._workers: dict[int, _Worker] = {}  # worker id -> its stream; one thread per id
        self._reference: _Reference | None = None  # the first sample's fields, shapes and dtypes
        # A source dropped without close() (a failed memory probe's private copy, say)
        # still closes its files, so that no ResourceWarning fires from the garbage collector.
        self._finalizer = weakref.finalize(self, _close_workers, self._workers)

    # the fetch protocol ----------------------------------------------------------------------

    def setup(self, worker_id: int, num_workers: int) -> None:
        """Worker ``worker_id`` of ``num_workers`` takes shards worker_id, worker_id + num_workers, ..."""
        if num_workers < 1 or not 0 <= worker_id < num_workers:
            raise ValueError(f"setup: worker_id {worker_id} is not in 0..{num_workers - 1}")
        with self._lock:
            self._num_workers = num_workers
            old = self._workers.pop(worker_id, None)  # a restarted worker starts over
            self._workers[worker_id] = _Worker(self.shards[worker_id::num_workers])
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
                group = self._next_group(worker)
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
        _close_workers(self._workers)

    # pickling: open files stay behind ------------------------------------------------------

    def __getstate__(self) -> dict[str, Any]:
        return {k: self.__dict__[k] for k in ("urls", "shards", "fields", "decode_images")}

    def __setstate__(self, state: dict[str, Any]) -> None:
        self.__dict__.update(state)
        self._init_state()

    def __repr__(self) -> str:
        return f"ShardSource({len(self.shards)} shards from {self.urls!r}, fields={self.fields})"

    # streaming -------------------------------------------------------------------------------

    def _worker(self, worker_id: int) -> _Worker:
        worker = self._workers.get(worker_id)
        if worker is None:  # fetch without setup: as the only worker
            with self._lock:
                worker = self._workers.get(worker_id)
                if worker is None:
                    n = self._num_workers or 1
                    worker = self._workers[worker_id] = _Worker(self.shards[worker_id % n::n])
        return worker

    def _next_group(self, worker: _Worker) -> tuple[str, list[_Member]] | None:
        """The members of this worker's next sample, with its shard; None when all are read."""
        while True:
            if worker.tar is None:
                if worker.next_shard >= len(worker.shards):
                    return None
                worker.next_shard += 1  # first: a shard that cannot be opened is not retried
                worker.open(worker.shards[worker.next_shard - 1])
            path = worker.path
            group, worker.pending = worker.pending, None
            while True:
                try:
                    member = self._next_member(worker)
                except SourceError as exc:
                    if group and worker.failed_key not in (None, group[0].key):
                        # the damage is in the next sample's member: this one is whole
                        worker.errors.append(exc)
                        return path, group
                    raise
                if member is None:  # the shard is done (and closed)
                    break
                if group is None:
                    group = [member]
                elif member.key == group[0].key:
                    group.append(member)
                else:
                    worker.pending = [member]
                    return path, group
            if group:
                return path, group

    def _next_member(self, worker: _Worker) -> _Member | None:
        """The next wanted member of the open shard, read; None at its (checked) end."""
        tar = worker.tar
        assert tar is not None
        try:
            while True:
                info = tar.next()
                if info is None:
                    worker.check_end()
                    worker.close()
                    return None
                if not info.isfile():
                    continue
                parsed = _split_name(info.name)
                if parsed is None:
                    continue
                key, field, ext = parsed
                if (ext in IMAGE_EXTS and not self.decode_images) or \
                        (self.fields is not None and field not in self.fields):
                    continue  # skipped unread: the stream seeks past it
                worker.reading = (key, info.name)
                data = tar.extractfile(info).read()  # type: ignore[union-attr]
                worker.reading = None
                worker.last_member = info.name
                return _Member(key, field, ext, info.name, data)
        except SourceError as exc:
            path, last, reading = worker.path, worker.last_member, worker.reading
            worker.failed_key = None
            worker.close()
            if exc.source == NAME:
                raise
            # the store's error (the object went away, the endpoint stopped answering...)
            after = f" (in member '{reading[1]}')" if reading else \
                f" (after member '{last}')" if last else ""
            raise SourceError(NAME, f"shard '{path}' could not be read{after}: {exc}") from exc
        except _READ_ERRORS as exc:
            path, last, reading = worker.path, worker.last_member, worker.reading
            worker.failed_key = reading[0] if reading else None
            worker.close()
            after = f" (in member '{reading[1]}')" if reading else \
                f" (after member '{last}')" if last else ""
            raise SourceError(NAME, f"shard '{path}' is corrupt or truncated{after}: "
                              f"{type(exc).__name__}: {exc}") from exc

    def _decode(self, path: str, members: list[_Member]) -> _Sample:
        values: dict[str, np.ndarray] = {}
        names: dict[str, str] = {}
        for m in members:
            if m.field in values:
                raise SourceError(NAME, f"shard '{path}': sample '{m.key}' has the field "
                                  f"'{m.field}' twice ('{names[m.field]}' and '{m.name}')", m.field)
            values[m.field] = _decode_member(path, m)
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
class _Member:
    key: str
    field: str
    ext: str
    name: str
    data: bytes


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


class _Worker:
    """One worker's stream: its shards, the open one and the member read ahead."""

    def __init__(self, shards: list[str]) -> None:
        self.shards = shards
        self.next_shard = 0
        self.path: str | None = None
        self.raw: IO[bytes] | None = None
        self.stream: _Tracked | None = None
        self.tar: tarfile.TarFile | None = None
        self.pending: list[_Member] | None = None  # first member of the next sample
        self.last_member: str | None = None
        self.reading: tuple[str, str] | None = None  # key and name of the member being read
        self.failed_key: str | None = None  # the key of the member whose read failed
        self.errors: list[SourceError] = []  # to raise on the next fetch, after good samples
        self.exhausted = False
        self.compressed = False

    def open(self, path: str) -> None:
        self.path, self.last_member, self.pending, self.reading = path, None, None, None
        try:
            if is_url(path):  # streamed by ranged reads, one block held at a time
                size = remote_store(path).head(path).size
                self.raw = RangeFile(path, size, block=_REMOTE_BLOCK)  # type: ignore[assignment]
            else:
                self.raw = open(path, "rb")
            magic = self.raw.read(6)
            self.raw.seek(0)
            if magic.startswith(b"\x1f\x8b"):
                inner: IO[bytes] = gzip.GzipFile(fileobj=self.raw, mode="rb")
            elif magic.startswith(b"BZh"):
                inner = bz2.BZ2File(self.raw, mode="rb")
            elif magic.startswith(b"\xfd7zXZ\x00"):
                inner = lzma.LZMAFile(self.raw, mode="rb")
            else:
                inner = self.raw
            self.compressed = inner is not self.raw
            self.stream = _Tracked(inner)
            self.tar = tarfile.open(fileobj=self.stream, mode="r|")  # type: ignore[call-overload]
        except SourceError as exc:  # the store's error names the URL and the cause
            self.close()
            raise SourceError(NAME, f"shard '{path}' cannot be read: {exc}") from exc
        except _READ_ERRORS as exc:
            self.close()
            raise SourceError(NAME, f"shard '{path}' is not a tar file, or is corrupt or truncated: "
                              f"{type(exc).__name__}: {exc}") from exc

    def check_end(self) -> None:
        """tarfile ends a stream quietly at a truncated or invalid header; only an all-zero
        block is a real end of archive."""
        assert self.tar is not None and self.stream is not None
        offset = self.tar.offset
        block = self.stream.block(offset)
        if len(block) == _BLOCK and not block.strip(b"\0"):
            if self.compressed:  # read to the end: a damaged trailer or checksum fails here
                while self.stream.read(tarfile.RECORDSIZE):
                    pass
            return
        after = f"after member '{self.last_member}'" if self.last_member else "at its start"
        if len(block) < _BLOCK:
            problem = (f"it ends {after} (byte {offset:,}) without the tar end-of-archive marker"
                       if not block else f"it ends inside the tar header {after} (byte {offset:,})")
        else:
            problem = f"it has an invalid tar header {after} (byte {offset:,})"
        raise SourceError(NAME, f"shard '{self.path}' is corrupt or truncated: {problem}")

    def close(self) -> None:
        for handle in (self.tar, self.stream, self.raw):
            if handle is not None:
                try:
                    handle.close()
                except Exception:  # noqa: BLE001 - closing a broken stream must not mask its error
                    pass
        self.tar = self.stream = self.raw = None


class _Tracked:
    """A read-only stream that keeps its last bytes, to look at where tarfile stopped."""

    def __init__(self, inner: IO[bytes]) -> None:
        self.inner = inner
        self.pos = 0
        self.kept: deque[tuple[int, bytes]] = deque()
        self.kept_bytes = 0

    def read(self, size: int = -1) -> bytes:
        data = self.inner.read(size)
        if data:
            self.kept.append((self.pos, data))
            self.pos += len(data)
            self.kept_bytes += len(data)
            while self.kept_bytes - len(self.kept[0][1]) >= _KEEP:
                self.kept_bytes -= len(self.kept.popleft()[1])
        return data

    def block(self, offset: int, size: int = _BLOCK) -> bytes:
        """The stream's bytes [offset, offset + size), as far as they were read and kept."""
        out = bytearray()
        for start, data in self.kept:
            lo, hi = max(offset - start, 0), min(offset + size - start, len(data))
            if lo < hi:
                out += data[lo:hi]
        if len(out) < size:  # tarfile may have stopped short of a whole block: read the rest
            while len(out) < size:
                more = self.read(size - len(out))
                if not more:
                    break
                out += more
        return bytes(out)

    def close(self) -> None:
        if self.inner is not None:
            self.inner.close()


def _close_workers(workers: dict[int, _Worker]) -> None:
    for worker in list(workers.values()):
        worker.close()


# decoding ------------------------------------------------------------------------------------

def _decode_member(path: str, m: _Member) -> np.ndarray:
    where = f"shard '{path}', member '{m.name}'"
    if m.ext == "npy":
        try:
            return load_npy_bytes(m.data)
        except Exception as exc:
            raise SourceError(NAME, f"{where}: cannot read it as a .npy array: "
                              f"{type(exc).__name__}: {exc}", m.field) from exc
    if m.ext in INT_EXTS:
        text = m.data.decode("utf-8", errors="replace").strip()
        try:
            value = json.loads(text) if m.ext == "json" else int(text)
        except ValueError:
            value = None
        if not isinstance(value, int) or isinstance(value, bool):
            shown = text if len(text) <= 40 else text[:37] + "..."
            raise SourceError(NAME, f"{where}: expected a whole number (e.g. a class label), got "
                              f"{shown!r}", m.field)
        return np.asarray(value, dtype=np.int64)
    if m.ext in IMAGE_EXTS:
        return _decode_image(where, m)
    raise SourceError(NAME, f"{where}: unsupported extension '.{m.ext}'; supported: {SUPPORTED} "
                      "(list the fields to read in source.fields to leave it out)", m.field)


def _decode_image(where: str, m: _Member) -> np.ndarray:
    try:
        from PIL import Image
    except ImportError:
        raise SourceError(NAME, f"{where}: decoding .{m.ext} images needs Pillow, which is not "
                          "installed: pip install pillow (or set source.decode_images=false to "
                          "leave image members out)", m.field) from None
    try:
        with Image.open(io.BytesIO(m.data)) as img:
            mode = img.mode
            if mode == "1":
                img = img.convert("L")
            elif mode in ("P", "PA"):
                img = img.convert("RGBA" if mode == "PA" or "transparency" in img.info else "RGB")
            elif mode in ("CMYK", "YCbCr", "LAB", "HSV"):
                img = img.convert("RGB")
            elif mode not in ("L", "LA", "RGB", "RGBA"):
                raise SourceError(NAME, f"{where}: image mode {mode} (16-bit or float pixels) is "
                                  "not supported; store such images as .npy", m.field)
            array = np.asarray(img, dtype=np.uint8)
    except SourceError:
        raise
    except Exception as exc:
        raise SourceError(NAME, f"{where}: cannot decode the image: {type(exc).__name__}: {exc}",
                          m.field) from exc
    return array[:, :, None] if array.ndim == 2 else array


def _split_name(name: str) -> tuple[str, str, str] | None:
    """``dir/000017.image.png`` -> (``dir/000017``, ``image``, ``png``); ``000017.cls`` ->
    (``000017``, ``cls``, ``cls``); None for a member with no extension or a hidden one."""
    folder, _, base = name.rpartition("/")
    if base.startswith(".") or "." not in base:
        return None
    stem, _, suffix = base.partition(".")
    key = f"{folder}/{stem}" if folder else stem
    field, _, ext = suffix.rpartition(".")
    return key, field or suffix, ext.lower()


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


def _resolved(path: str) -> str:
    return "" if os.path.isabs(path) else f" (resolved to '{os.path.abspath(path)}')"

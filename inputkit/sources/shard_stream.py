"""One worker's stream through its tar shards, member by member.

Its own module because this is the per-worker state and the tar reading, apart from what a
source does with the samples: a worker owns its shards (``w, w + n, ...``), opens each in
turn (a local file, or a store's object in ranged reads; gzip, bzip2 and xz decompressed as
they stream), reads it with ``tarfile`` in stream mode, skips unwanted members unread,
groups consecutive members by key into samples, and checks that a shard really ended
(tarfile stops quietly at a truncated header; ``_Tracked`` keeps the last bytes to look).
"""

from __future__ import annotations

import bz2
import gzip
import lzma
import tarfile
import zlib
from collections import deque
from typing import IO

from inputkit.errors import SourceError
from inputkit.sources.remote_files import RangeFile, is_url
from inputkit.sources.remote_files import store as remote_store
from inputkit.sources.shard_members import IMAGE_EXTS, NAME, Member, split_name

_BLOCK = tarfile.BLOCKSIZE
_KEEP = 4 * tarfile.RECORDSIZE  # bytes of the stream kept to look at the block the archive ended on
_REMOTE_BLOCK = 4 << 20  # a remote shard streams in ranged reads of this many bytes, one held
READ_ERRORS = (tarfile.TarError, EOFError, OSError, zlib.error, lzma.LZMAError)


class ShardStream:
    """One worker's stream: its shards, the open one and the member read ahead."""

    def __init__(self, shards: list[str], fields: list[str] | None, decode_images: bool) -> None:
        self.shards = shards
        self.fields = fields  # the fields to read (None: all); others are skipped unread
        self.decode_images = decode_images
        self.next_shard = 0
        self.path: str | None = None
        self.raw: IO[bytes] | None = None
        self.stream: _Tracked | None = None
        self.tar: tarfile.TarFile | None = None
        self.pending: list[Member] | None = None  # first member of the next sample
        self.last_member: str | None = None
        self.reading: tuple[str, str] | None = None  # key and name of the member being read
        self.failed_key: str | None = None  # the key of the member whose read failed
        self.errors: list[SourceError] = []  # to raise on the next fetch, after good samples
        self.exhausted = False
        self.compressed = False

    def next_group(self) -> tuple[str, list[Member]] | None:
        """The members of this worker's next sample, with its shard; None when all are read."""
        while True:
            if self.tar is None:
                if self.next_shard >= len(self.shards):
                    return None
                self.next_shard += 1  # first: a shard that cannot be opened is not retried
                self.open(self.shards[self.next_shard - 1])
            path = self.path
            group, self.pending = self.pending, None
            while True:
                try:
                    member = self._next_member()
                except SourceError as exc:
                    if group and self.failed_key not in (None, group[0].key):
                        # the damage is in the next sample's member: this one is whole
                        self.errors.append(exc)
                        return path, group
                    raise
                if member is None:  # the shard is done (and closed)
                    break
                if group is None:
                    group = [member]
                elif member.key == group[0].key:
                    group.append(member)
                else:
                    self.pending = [member]
                    return path, group
            if group:
                return path, group

    def _next_member(self) -> Member | None:
        """The next wanted member of the open shard, read; None at its (checked) end."""
        tar = self.tar
        assert tar is not None
        try:
            while True:
                info = tar.next()
                if info is None:
                    self.check_end()
                    self.close()
                    return None
                if not info.isfile():
                    continue
                parsed = split_name(info.name)
                if parsed is None:
                    continue
                key, field, ext = parsed
                if (ext in IMAGE_EXTS and not self.decode_images) or \
                        (self.fields is not None and field not in self.fields):
                    continue  # skipped unread: the stream seeks past it
                self.reading = (key, info.name)
                data = tar.extractfile(info).read()  # type: ignore[union-attr]
                self.reading = None
                self.last_member = info.name
                return Member(key, field, ext, info.name, data)
        except SourceError as exc:
            path, last, reading = self.path, self.last_member, self.reading
            self.failed_key = None
            self.close()
            if exc.source == NAME:
                raise
            # the store's error (the object went away, the endpoint stopped answering...)
            after = f" (in member '{reading[1]}')" if reading else \
                f" (after member '{last}')" if last else ""
            raise SourceError(NAME, f"shard '{path}' could not be read{after}: {exc}") from exc
        except READ_ERRORS as exc:
            path, last, reading = self.path, self.last_member, self.reading
            self.failed_key = reading[0] if reading else None
            self.close()
            after = f" (in member '{reading[1]}')" if reading else \
                f" (after member '{last}')" if last else ""
            raise SourceError(NAME, f"shard '{path}' is corrupt or truncated{after}: "
                              f"{type(exc).__name__}: {exc}") from exc

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
        except READ_ERRORS as exc:
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


def close_streams(workers: dict[int, ShardStream]) -> None:
    """Close every worker's open shard (also run by a source's finalizer)."""
    for worker in list(workers.values()):
        worker.close()

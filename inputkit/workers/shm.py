"""Shared-memory slots: how process workers hand arrays to the parent without pickling them.

The parent creates one segment of ``slots x slot_bytes`` bytes and owns it. It
unlinks the segment's name from ``/dev/shm`` the moment it has opened it, and
keeps the file descriptor: workers get that descriptor (inherited with ``fork``,
passed through the process start-up with ``forkserver`` and ``spawn``), never the
name. The memory is freed by the kernel when the last process that maps it
closes it, however that process ends (``close()``, SIGTERM, SIGKILL, a crash),
so nothing can be left in ``/dev/shm`` and Python's resource tracker is not
involved (it warned about "leaked" segments when a parent was killed, and on
Python < 3.13 an attach through ``multiprocessing.shared_memory`` registered the
worker as an owner that unlinked the segment when it exited).

A worker writes a chunk's arrays once into a free slot and sends only the
slot number and a small layout (field, dtype, shape, offset); the parent maps
numpy views onto the slot without copying. A chunk larger than a slot is split
by samples into several slot-sized pieces; a single sample larger than a slot
is an error that names ``workers.slot_bytes``.
"""

from __future__ import annotations

import contextlib
import mmap
import os
import secrets
from dataclasses import dataclass
from typing import Any

import numpy as np

from inputkit.errors import ConfigError
from inputkit.planning.geometry import ALIGN  # every field starts on a cache line (the plan reads it too)

FieldLayout = tuple[str, str, tuple[int, ...], int]  # name, dtype.str, shape (with n), offset


def _aligned(size: int) -> int:
    return (size + ALIGN - 1) // ALIGN * ALIGN


@dataclass(frozen=True)
class Piece:
    """Samples ``start:stop`` of a chunk: what fits in one slot."""

    start: int
    stop: int


def plan_pieces(fields: dict[str, np.ndarray], n: int, slot_bytes: int) -> list[Piece]:
    """Split ``n`` samples into runs that each fit a slot (fields aligned)."""
    per_sample = sum(arr.dtype.itemsize * int(np.prod(arr.shape[1:], dtype=np.int64))
                     for arr in fields.values())
    room = slot_bytes - ALIGN * len(fields)
    if per_sample * n <= room:
        return [Piece(0, n)]
    per_slot = room // per_sample if per_sample else n
    if per_slot < 1:
        raise ConfigError("workers.slot_bytes", f"one sample needs {per_sample:,} bytes of shared "
                          f"memory but a slot holds {slot_bytes:,}; raise workers.slot_bytes")
    return [Piece(i, min(i + per_slot, n)) for i in range(0, n, per_slot)]


@dataclass(frozen=True)
class ArenaHandle:
    """What a worker needs to map the parent's segment: its descriptor (and name, for messages).

    Pickled for a ``forkserver`` or ``spawn`` worker, the descriptor travels with the
    process's start-up like multiprocessing's own pipes do; a ``fork`` worker inherits it.
    """

    fd: int
    name: str

    def __reduce__(self) -> tuple[Any, ...]:
        from multiprocessing import reduction

        return _rebuild_handle, (reduction.DupFd(self.fd), self.name)


def _rebuild_handle(dup: Any, name: str) -> ArenaHandle:
    return ArenaHandle(dup.detach(), name)


class SlotArena:
    """One shared-memory segment cut into equal slots."""

    def __init__(self, name: str, slots: int, slot_bytes: int, buffer: mmap.mmap,
                 fd: int | None = None) -> None:
        self.name = name
        self.slots = slots
        self.slot_bytes = slot_bytes
        self._buffer: Any = buffer  # None once closed
        self._fd = fd  # the parent's descriptor, which keeps the segment for new workers

    @classmethod
    def create(cls, slots: int, slot_bytes: int) -> SlotArena:
        """Create a fresh segment (parent side); its name is unlinked at once."""
        import _posixshmem

        name = f"inputkit_{os.getpid()}_{secrets.token_hex(4)}"
        size = slots * slot_bytes
        fd = _posixshmem.shm_open("/" + name, os.O_CREAT | os.O_EXCL | os.O_RDWR, mode=0o600)
        try:
            # Nameless from here on: whoever dies, and however, nothing is left to unlink.
            _posixshmem.shm_unlink("/" + name)
            os.ftruncate(fd, size)
            buffer = mmap.mmap(fd, size)
        except BaseException:
            os.close(fd)
            raise
        return cls(name, slots, slot_bytes, buffer, fd)

    def handle(self) -> ArenaHandle:
        """For a worker process: the segment's descriptor (parent side, until close())."""
        if self._fd is None:
            raise ValueError(f"shared-memory segment {self.name}: closed, or not the parent's")
        return ArenaHandle(self._fd, self.name)

    @classmethod
    def attach(cls, handle: ArenaHandle, slots: int, slot_bytes: int) -> SlotArena:
        """Map the parent's segment (worker side); takes over ``handle.fd`` and closes it."""
        try:
            buffer = mmap.mmap(handle.fd, slots * slot_bytes)
        finally:
            os.close(handle.fd)
        return cls(handle.name, slots, slot_bytes, buffer)

    def write(self, slot: int, fields: dict[str, np.ndarray], piece: Piece) -> list[FieldLayout]:
        """Copy samples ``piece`` of every field into ``slot`` (the one copy); return the layout."""
        base = slot * self.slot_bytes
        offset = 0
        layout: list[FieldLayout] = []
        for name, arr in fields.items():
            part = arr[piece.start:piece.stop]
            dest = np.frombuffer(self._buffer, dtype=part.dtype, count=part.size,
                                 offset=base + offset).reshape(part.shape)
            np.copyto(dest, part)
            del dest
            layout.append((name, part.dtype.str, part.shape, offset))
            offset = _aligned(offset + part.nbytes)
        return layout

    def view(self, slot: int, layout: list[FieldLayout]) -> tuple[np.ndarray, dict[str, np.ndarray]]:
        """Numpy views of ``slot`` (no copy); they all keep the returned holder alive."""
        holder = np.frombuffer(self._buffer, dtype=np.uint8, count=self.slot_bytes,
                               offset=slot * self.slot_bytes)
        fields = {}
        for name, dtype, shape, offset in layout:
            dt = np.dtype(dtype)
            count = int(np.prod(shape, dtype=np.int64))
            fields[name] = holder[offset:offset + count * dt.itemsize].view(dt).reshape(shape)
        return holder, fields

    def close(self) -> None:
        """Unmap this process's view and close the parent's descriptor.

        The kernel frees the memory once no process maps it. Unmapping waits for the
        garbage collector when a consumer still holds tensors that view a slot (the
        memory stays valid until then).
        """
        fd, self._fd = self._fd, None
        if fd is not None:
            os.close(fd)
        # A consumer may still hold views: then the mapping goes when the last one is freed
        # (they keep the buffer alive; the arena no longer does).
        buffer, self._buffer = self._buffer, None
        if buffer is not None:
            with contextlib.suppress(BufferError):
                buffer.close()


class SlotAllocator:
    """Hands out arrays inside one slot, for a source's ``fetch_into``: no copy afterwards.

    A request that does not fit in what is left of the slot gets private memory
    instead; ``layout_of`` then returns None and the chunk takes the copy path.
    """

    def __init__(self, arena: SlotArena, slot: int) -> None:
        self._arena = arena
        self._base = slot * arena.slot_bytes
        self._used = 0
        start = np.frombuffer(arena._buffer, dtype=np.uint8, count=1, offset=self._base)
        self._address = start.ctypes.data

    def __call__(self, name: str, shape: tuple[int, ...], dtype: np.dtype) -> np.ndarray:
        dtype = np.dtype(dtype)
        count = int(np.prod(shape, dtype=np.int64))
        if self._used + count * dtype.itemsize > self._arena.slot_bytes:
            return np.empty(shape, dtype)
        out = np.frombuffer(self._arena._buffer, dtype=dtype, count=count,
                            offset=self._base + self._used).reshape(shape)
        self._used = _aligned(self._used + count * dtype.itemsize)
        return out

    def layout_of(self, fields: dict[str, np.ndarray]) -> list[FieldLayout] | None:
        """The layout of ``fields`` if every one lies, contiguous, inside this slot."""
        layout: list[FieldLayout] = []
        for name, arr in fields.items():
            offset = arr.ctypes.data - self._address
            if not arr.flags.c_contiguous or offset < 0 \
                    or offset + arr.nbytes > self._arena.slot_bytes:
                return None
            layout.append((name, arr.dtype.str, arr.shape, offset))
        return layout

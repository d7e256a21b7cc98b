"""Shared-memory slots: how process workers hand arrays to the parent without pickling them.

The parent creates one segment of ``slots x slot_bytes`` bytes and owns it:
it unlinks it on close, and Python's resource tracker removes it if the parent
dies without closing. Workers attach to it by name with ``shm_open`` + ``mmap``,
*not* through ``multiprocessing.shared_memory`` (on Python < 3.13 an attach
registers with the resource tracker, which may unlink the segment when the
worker exits and warns about "leaked" segments).

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

import numpy as np

from inputkit.errors import ConfigError

ALIGN = 64  # every field starts on a cache line

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


class SlotArena:
    """One shared-memory segment cut into equal slots."""

    def __init__(self, name: str, slots: int, slot_bytes: int, buffer: mmap.mmap,
                 owner: object | None = None) -> None:
        self.name = name
        self.slots = slots
        self.slot_bytes = slot_bytes
        self._buffer = buffer
        self._owner = owner  # the parent's SharedMemory, which it unlinks

    @classmethod
    def create(cls, slots: int, slot_bytes: int) -> SlotArena:
        """Create a fresh segment (parent side)."""
        from multiprocessing.shared_memory import SharedMemory

        name = f"inputkit_{os.getpid()}_{secrets.token_hex(4)}"
        # Created through SharedMemory so the resource tracker unlinks it if this process
        # dies without closing; mapped through our own mmap so that views still held by a
        # consumer at close never make SharedMemory.close() fail.
        shm = SharedMemory(name=name, create=True, size=slots * slot_bytes)
        shm.close()
        arena = cls.attach(name, slots, slot_bytes)
        arena._owner = shm
        return arena

    @classmethod
    def attach(cls, name: str, slots: int, slot_bytes: int) -> SlotArena:
        """Map an existing segment (worker side) without involving the resource tracker."""
        import _posixshmem

        fd = _posixshmem.shm_open("/" + name, os.O_RDWR, mode=0o600)
        try:
            buffer = mmap.mmap(fd, slots * slot_bytes)
        finally:
            os.close(fd)
        return cls(name, slots, slot_bytes, buffer)

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
        """Unmap this process's view; the owner also unlinks the segment from /dev/shm.

        Unlinking always happens; unmapping waits for the garbage collector when a
        consumer still holds tensors that view a slot (the memory stays valid).
        """
        owner, self._owner = self._owner, None
        if owner is not None:
            owner.unlink()  # type: ignore[attr-defined]
        # A consumer may still hold views: then the mapping goes when they are freed.
        with contextlib.suppress(BufferError):
            self._buffer.close()


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

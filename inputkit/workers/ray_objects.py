"""What a Ray pool pins in the object store: results on their way, and chunks still referenced.

Results arrive zero-copy: on the trainer's node a chunk's arrays are views of their
object, which stays pinned while any view lives. The ledger counts an answer's bytes
from the call that asks for it (an estimate, from the largest bytes per sample seen)
until the last array of the object it arrived in is freed (a weak reference to each
array tells it, from a C callback, so a Ctrl-C in the consumer's thread never lands in
Python code of ours). The pool hands out a call only while the ledger has room under
its cap, and the batcher copies batches out once the room runs short, so that a
consumer keeping batches does not keep objects pinned (as with the process pool's slots).
"""

from __future__ import annotations

import contextlib
import glob
import os
import queue
import threading
import weakref
from collections.abc import Callable
from typing import Any

import numpy as np


class _Object:
    """One received answer's object: its bytes stay pinned until every field's array is gone
    (a view of one small field, an id kept by the consumer, pins the whole object)."""

    __slots__ = ("nbytes", "arrays")

    def __init__(self, nbytes: int, arrays: int) -> None:
        self.nbytes = nbytes
        self.arrays = arrays


class _HeldRef(weakref.ref):  # type: ignore[type-arg]
    """A weak reference to one array of a received object, and that object."""

    __slots__ = ("object",)

    def __init__(self, array: Any, callback: Callable[[Any], None], obj: _Object) -> None:
        super().__init__(array, callback)
        self.object = obj

    def __new__(cls, array: Any, callback: Callable[[Any], None], obj: _Object) -> _HeldRef:
        return super().__new__(cls, array, callback)


class ObjectLedger:
    """Object-store bytes of one pool: in flight (asked for) and held (received). Thread-safe.

    ``cap`` is ``workers.ray.inflight_bytes``, or (None) what the pipeline can hold anyway:
    ``calls`` answers in flight plus ``downstream`` (chunks, bytes) in its queues and batcher.
    ``chunk_samples``: samples per work item (None for a fetch source, whose chunks are sized
    by the largest seen).
    """

    def __init__(self, cap: int | None, calls: int, downstream: tuple[int, int],
                 chunk_samples: int | None, workers: int) -> None:
        self._cap = cap
        self._calls = calls
        self._downstream = downstream
        self._chunk_samples = chunk_samples
        self._workers = workers
        self._lock = threading.Lock()
        self.inflight = 0
        self.held = 0
        self._refs: dict[int, _HeldRef] = {}  # by id: a weak reference hashes as its array
        self._freed: queue.SimpleQueue[_HeldRef] = queue.SimpleQueue()
        self._per_sample = 0  # the most bytes per sample seen (index-range estimates)
        self._largest = 0  # the largest chunk seen (fetch estimates)

    @property
    def sized(self) -> bool:
        """Whether an answer has told how large a chunk is (until then: one call an actor)."""
        return bool(self._per_sample or self._largest)

    def estimate(self, samples: int | None = None) -> int:
        """The bytes an answer of ``samples`` (default: a whole chunk) is expected to pin."""
        if self._chunk_samples is None:
            return self._largest
        return self._per_sample * (self._chunk_samples if samples is None else samples)

    def cap(self) -> int | None:
        """The most bytes this pool may pin (None until an answer sized a chunk)."""
        if self._cap is not None:
            return self._cap
        chunk = self.estimate()
        if not chunk:
            return None
        chunks, nbytes = self._downstream
        return chunk * (self._calls + chunks) + nbytes

    def pinned(self) -> int:
        self.drain()
        with self._lock:
            return self.inflight + self.held

    def room_for(self, estimate: int) -> bool:
        """Whether a call expected to pin ``estimate`` bytes may go out (always, when nothing is
        pinned: the pipeline must move)."""
        cap = self.cap()
        if cap is None:
            return True
        pinned = self.pinned()
        return pinned + estimate <= cap or pinned == 0

    def scarce(self) -> bool:
        """Too little room left to lend views: batches must be copied out."""
        cap = self.cap()
        return cap is not None and cap - self.pinned() < (self._workers + 2) * self.estimate()

    def asked(self, estimate: int) -> None:
        with self._lock:
            self.inflight += estimate

    def answered(self, estimate: int) -> None:
        """A call's answer arrived (or will never): its estimate is no longer in flight."""
        with self._lock:
            self.inflight -= estimate

    def received(self, fields: dict[str, np.ndarray], n: int, nbytes: int) -> None:
        """Watch the arrays of one received object (its ``nbytes`` are pinned until the last
        is freed; numpy views keep alive the array whose memory they use)."""
        if n:
            self._per_sample = max(self._per_sample, -(-nbytes // n))
        self._largest = max(self._largest, nbytes)
        roots: dict[int, np.ndarray] = {}
        for array in fields.values():
            root = array
            while isinstance(root.base, np.ndarray):
                root = root.base
            roots[id(root)] = root
        obj = _Object(nbytes, len(roots))
        with self._lock:
            for root in roots.values():
                ref = _HeldRef(root, self._freed.put, obj)
                self._refs[id(ref)] = ref
            self.held += nbytes

    def drain(self) -> None:
        """Count the objects whose last array was freed (any thread)."""
        while True:
            try:
                ref = self._freed.get_nowait()
            except queue.Empty:
                return
            with self._lock:
                self._refs.pop(id(ref), None)
                ref.object.arrays -= 1
                if not ref.object.arrays:  # its last array is gone: the object is let go
                    self.held -= ref.object.nbytes

    def snapshot(self) -> tuple[int, int]:
        """(in flight, held) bytes now."""
        self.drain()
        with self._lock:
            return max(0, self.inflight), max(0, self.held)


class _Pinned:
    """A writeable window on a read-only object-store array, keeping the array (and so its
    object) alive: ``np.asarray`` of it views the same memory."""

    def __init__(self, array: np.ndarray) -> None:
        self._array = array
        self.__array_interface__ = {**array.__array_interface__,
                                    "data": (array.__array_interface__["data"][0], False)}


def writable(array: np.ndarray) -> np.ndarray:
    """``array`` (a zero-copy view of a Ray object) as a writeable array over the same memory.

    Ray lends objects read-only, so torch would copy every batch that lies in one chunk. The
    object holds one actor's answer to this pool and nothing else reads it (the ObjectRef is
    dropped once the answer is taken in), so writing to it can only change this pipeline's
    own samples, as with a shared-memory slot. The memory stays mapped while any view lives.
    """
    if array.flags.writeable or array.size == 0:
        return array
    return np.asarray(_Pinned(array))


def spilled_bytes(ray: Any) -> int | None:
    """Bytes Ray spilled to disk on this machine's node: the files in its session's spill
    folders (``ray_spilled_objects_<node id>``, Ray's default place for them)."""
    if ray is None or not ray.is_initialized():
        return None
    try:
        from ray._private import worker

        node = worker.global_worker.node
        session = node.get_session_dir_path() if node is not None else None
    except Exception:
        return None
    if session is None:
        return None
    total = 0
    for folder in glob.glob(os.path.join(glob.escape(session), "ray_spilled_objects*")):
        for entry in os.scandir(folder):
            with contextlib.suppress(OSError):
                total += entry.stat().st_size
    return total

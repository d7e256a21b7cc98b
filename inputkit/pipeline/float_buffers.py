"""Reused float32 output buffers for ``device.normalize`` on a CPU device.

A fresh 38.5 MB float batch (64 x 3 x 224 x 224) is fresh memory from the
operating system each time: the conversion then spends about as long faulting
its pages in as computing (measured on 2 cores: 30 ms a batch into new memory,
17 ms into a reused buffer; ``python tools/cpu_normalize.py``). So the CPU
device stage writes into buffers it takes back once the consumer has let go of
every tensor made from them.

How a buffer comes back: the consumer's tensor is ``torch.from_numpy`` of a
*view* of the pooled array, and the view holds the array. When the last tensor
(or view of one) is freed, the view dies and a ``weakref.finalize`` puts the
array back in the pool. A consumer that keeps its batches never gets a buffer
reused under it; the pool then simply allocates, as before.
"""

from __future__ import annotations

import threading
import weakref
from collections import deque

import numpy as np

# Free buffers kept for reuse per shape; a returning buffer beyond this is freed.
KEEP_FREE = 2


class FloatBuffers:
    """Float32 arrays of one shape at a time, handed out as views and taken back when freed."""

    def __init__(self, keep_free: int = KEEP_FREE) -> None:
        self._keep_free = keep_free
        self._free: deque[np.ndarray] = deque()
        self._lock = threading.Lock()
        self.reused = 0  # buffers handed out again (for tests and the docs' figures)
        self.allocated = 0

    def take(self, shape: tuple[int, ...]) -> np.ndarray:
        """A writable float32 array of ``shape`` whose memory is not in use by any tensor."""
        base = None
        with self._lock:
            while self._free:
                candidate = self._free.pop()
                if candidate.shape == shape:
                    base = candidate
                    break  # (a buffer of another shape, from a partial batch, is dropped)
        if base is None:
            base = np.empty(shape, dtype=np.float32)
            self.allocated += 1
        else:
            self.reused += 1
        view = base.view()
        weakref.finalize(view, self._give_back, base)
        return view

    def _give_back(self, base: np.ndarray) -> None:
        with self._lock:
            if len(self._free) < self._keep_free:
                self._free.append(base)

    @property
    def free(self) -> int:
        return len(self._free)

"""The soak test's source: indexable, with injected read errors (importable by worker processes)."""

from __future__ import annotations

import time
import zlib

import numpy as np


class FaultySamples:
    """``length`` samples (an id and a payload row that repeats it), read by index.

    Each read fails with an OSError with probability ``error_rate``, decided by a hash of
    (the first index, the process's attempt number at it), so a retried read of the same
    samples may succeed. ``sleep_ms`` per read keeps workers busy (kills land mid-read).
    """

    def __init__(self, length: int = 50_000, dim: int = 16, error_rate: float = 0.02,
                 sleep_ms: float = 2.0, seed: int = 0) -> None:
        self.length = length
        self.dim = dim
        self.error_rate = error_rate
        self.sleep_s = sleep_ms / 1000.0
        self.seed = seed
        self._attempts: dict[int, int] = {}

    def __len__(self) -> int:
        return self.length

    def read(self, indices: np.ndarray) -> dict[str, np.ndarray]:
        if self.sleep_s:
            time.sleep(self.sleep_s)
        first = int(indices[0]) if len(indices) else -1
        attempt = self._attempts.get(first, 0)
        self._attempts[first] = attempt + 1
        roll = zlib.crc32(f"{self.seed}:{first}:{attempt}:{time.monotonic_ns()}".encode()) / 2**32
        if roll < self.error_rate:
            raise OSError(f"injected read error at sample {first} (attempt {attempt + 1})")
        ids = np.asarray(indices, dtype=np.int64)
        return {"id": ids, "payload": np.repeat(ids[:, None], self.dim, axis=1).astype(np.float32)}

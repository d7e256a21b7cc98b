"""Sources for the diagnosis scenarios (tests/test_diagnosis.py)."""

from __future__ import annotations

import hashlib
import os

import numpy as np


class Hashing:
    """CPU work in C that releases the GIL, like Pillow decoding: ``rounds`` SHA-256 passes
    over a 1 MiB buffer per chunk of ``chunk_size`` samples."""

    def __init__(self, rounds: int = 4, chunk_size: int = 64) -> None:
        self.rounds = rounds
        self.chunk_size = chunk_size
        self._buffer = os.urandom(1 << 20)

    def fetch(self, worker_id: int, batch_size_hint: int) -> dict[str, np.ndarray]:
        digest = b""
        for _ in range(self.rounds):
            digest = hashlib.sha256(self._buffer).digest()
        return {"x": np.full((self.chunk_size, 4), digest[0], np.float32)}

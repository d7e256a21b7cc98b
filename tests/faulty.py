"""Sources for the reliability tests: indexable ones, and ones that fail, stall or die on purpose.

Importable as ``faulty:...`` in threads and in worker processes.
"""

from __future__ import annotations

import os
import signal
import threading
import time

import numpy as np

from inputkit.errors import SourceError


def _chunk(indices: np.ndarray, dim: int) -> dict[str, np.ndarray]:
    ids = np.asarray(indices, dtype=np.int64)
    return {"id": ids, "x": np.repeat(ids[:, None].astype(np.float32), dim, axis=1)}


class Indexed:
    """``length`` samples read by index; ``x`` rows repeat the id. Optional failures and delays.

    ``bad``: sample ids whose read always fails (ValueError naming the id).
    ``flaky``: each read fails this many times (per process) before it succeeds.
    ``sleep_ms``: time per read. ``die_every``: a worker process SIGKILLs itself on every
    n-th read of its own (for restart tests).
    """

    def __init__(self, length: int = 1000, dim: int = 3, bad: list[int] | None = None,
                 flaky: int = 0, sleep_ms: float = 0.0) -> None:
        self.length = length
        self.dim = dim
        self.bad = set(bad or [])
        self.flaky = flaky
        self.sleep_s = sleep_ms / 1000.0
        self.attempts: dict[tuple[int, int], int] = {}
        self.lock = threading.Lock()

    def __len__(self) -> int:
        return self.length

    def read(self, indices: np.ndarray) -> dict[str, np.ndarray]:
        if self.sleep_s:
            time.sleep(self.sleep_s)
        hit = self.bad.intersection(indices.tolist())
        if hit:
            raise ValueError(f"sample {min(hit)} is corrupt")
        if self.flaky:
            key = (int(indices[0]), len(indices))
            with self.lock:
                self.attempts[key] = self.attempts.get(key, 0) + 1
                attempt = self.attempts[key]
            if attempt <= self.flaky:
                raise ConnectionError(f"attempt {attempt} at samples from {indices[0]} timed out")
        return _chunk(indices, self.dim)


class BadFiles(Indexed):
    """Like Indexed, but a read fails as a file source's does: whenever its indices include a
    ``bad`` one, with a SourceError naming that sample's file (``<root>/<id>.jpg``).

    ``fail_batches``: every read of more than one index fails too (OSError), so that only
    one-by-one reads succeed. ``die_at``: a worker process SIGKILLs itself when it reads that
    index on its own, once (it leaves the file ``marker`` so that the next one goes on).
    """

    def __init__(self, length: int = 1000, dim: int = 3, bad: list[int] | None = None,
                 root: str = "/data/train", fail_batches: bool = False, die_at: int | None = None,
                 marker: str | None = None) -> None:
        super().__init__(length=length, dim=dim, bad=bad)
        self.root = root
        self.fail_batches = fail_batches
        self.die_at = die_at
        self.marker = marker

    def read(self, indices: np.ndarray) -> dict[str, np.ndarray]:
        wanted = indices.tolist()
        if self.die_at is not None and wanted == [self.die_at] and self.marker is not None \
                and not os.path.exists(self.marker):
            with open(self.marker, "w"):
                pass
            os.kill(os.getpid(), signal.SIGKILL)
        hit = sorted(self.bad.intersection(wanted))
        if hit:
            raise SourceError("faulty.BadFiles", f"{self.root}/{hit[0]:05d}.jpg: cannot identify "
                              "image file (truncated or not an image)")
        if self.fail_batches and len(wanted) > 1:
            raise OSError(f"reads of {len(wanted)} files at once time out")
        return _chunk(indices, self.dim)


class ShortReads(Indexed):
    """Returns one sample fewer than asked for."""

    def read(self, indices: np.ndarray) -> dict[str, np.ndarray]:
        return _chunk(indices[:-1], self.dim)


class FlakyFetch:
    """Endless plain fetch; every ``every``-th call (per process) raises OSError."""

    def __init__(self, every: int = 3) -> None:
        self.every = every
        self.calls = 0
        self.lock = threading.Lock()

    def fetch(self, worker_id: int, batch_size_hint: int) -> dict[str, np.ndarray]:
        with self.lock:
            self.calls += 1
            calls = self.calls
        if calls % self.every == 0:
            raise OSError(f"read {calls} failed: connection reset")
        return _chunk(np.arange(8), 2)


class LateFirstFetch:
    """Endless fetch of 64-sample chunks of ``dim`` float32 columns; worker ``late``'s first
    call takes ``seconds`` (one actor's first answer arriving well after the others')."""

    def __init__(self, dim: int = 4096, late: int = 1, seconds: float = 1.5) -> None:
        self.dim = dim
        self.late = late
        self.seconds = seconds
        self.calls = 0

    def fetch(self, worker_id: int, batch_size_hint: int) -> dict[str, np.ndarray]:
        self.calls += 1
        if worker_id == self.late and self.calls == 1:
            time.sleep(self.seconds)
        return _chunk(np.arange(64), self.dim)


class Hangs:
    """Endless fetch; after ``after`` good calls (per process), one call sleeps ``seconds``."""

    def __init__(self, after: int = 2, seconds: float = 30.0) -> None:
        self.after = after
        self.seconds = seconds
        self.calls = 0

    def fetch(self, worker_id: int, batch_size_hint: int) -> dict[str, np.ndarray]:
        self.calls += 1
        if self.calls > self.after:
            time.sleep(self.seconds)  # stuck_in_a_slow_fetch
        return _chunk(np.arange(8), 2)


def fetch_nothing_forever(worker_id: int, batch_size_hint: int) -> dict[str, np.ndarray]:
    time.sleep(0.001)
    return {"x": np.zeros((0, 2), np.float32)}


def worker_pid(worker_id: int, batch_size_hint: int) -> dict[str, np.ndarray]:
    """Each chunk says which process made it (for restart tests)."""
    time.sleep(0.002)
    return {"pid": np.full(4, os.getpid(), dtype=np.int64)}

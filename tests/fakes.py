"""Sources that misbehave on purpose, shared by the tests (importable as ``fakes:...``)."""

from __future__ import annotations

import os
import threading
import time

import numpy as np

from inputkit import SourceExhausted


class RandomChunks:
    """A finite source of ``length`` ids in chunks of random size (0 .. max_chunk), thread-safe."""

    def __init__(self, length: int = 1000, max_chunk: int = 50, seed: int = 0,
                 dim: int = 3) -> None:
        self.length = length
        self.max_chunk = max_chunk
        self.rng = np.random.default_rng(seed)
        self.next = 0
        self.dim = dim
        self.lock = threading.Lock()

    def fetch(self, worker_id: int, batch_size_hint: int) -> dict[str, np.ndarray]:
        with self.lock:
            if self.next >= self.length:
                raise SourceExhausted
            n = int(self.rng.integers(0, self.max_chunk + 1))
            start, self.next = self.next, min(self.length, self.next + n)
        ids = np.arange(start, self.next, dtype=np.int64)
        x = np.repeat(ids[:, None].astype(np.float32), self.dim, axis=1)
        return {"id": ids, "x": x}


class Raising:
    """Fails on the ``after``-th call with a distinctive exception type."""

    def __init__(self, after: int = 3) -> None:
        self.after = after
        self.calls = 0
        self.lock = threading.Lock()

    def fetch(self, worker_id: int, batch_size_hint: int) -> dict[str, np.ndarray]:
        with self.lock:
            self.calls += 1
            calls = self.calls
        if calls >= self.after:
            raise KeyError(f"record {calls} is corrupt")
        return {"x": np.zeros((4, 2), np.float32)}


class Returns:
    """Returns ``kind`` of bad output after one good chunk (see BAD_OUTPUTS)."""

    def __init__(self, kind: str) -> None:
        self.kind = kind
        self.calls = 0
        self.lock = threading.Lock()

    def fetch(self, worker_id: int, batch_size_hint: int) -> object:
        with self.lock:
            self.calls += 1
            first = self.calls == 1
        good = {"x": np.zeros((4, 2), np.float32), "y": np.zeros(4, np.int64)}
        if first:
            return good
        return BAD_OUTPUTS[self.kind]()


BAD_OUTPUTS = {
    "none": lambda: None,
    "scalar": lambda: {"x": np.float32(1.0), "y": np.zeros(4, np.int64)},
    "list_value": lambda: {"x": [[0.0, 0.0]] * 4, "y": np.zeros(4, np.int64)},
    "ragged": lambda: {"x": np.zeros((4, 2), np.float32), "y": np.zeros(3, np.int64)},
    "dtype_change": lambda: {"x": np.zeros((4, 2), np.float64), "y": np.zeros(4, np.int64)},
    "shape_change": lambda: {"x": np.zeros((4, 3), np.float32), "y": np.zeros(4, np.int64)},
    "missing_field": lambda: {"x": np.zeros((4, 2), np.float32)},
    "object_dtype": lambda: {"x": np.zeros((4, 2), np.float32),
                             "y": np.array([None] * 4, dtype=object)},
    "string_dtype": lambda: {"x": np.zeros((4, 2), np.float32), "y": np.array(["cat"] * 4)},
}


class Slow:
    """Every fetch sleeps ``seconds`` (a worker stuck in a slow remote call)."""

    def __init__(self, seconds: float = 0.5) -> None:
        self.seconds = seconds

    def fetch(self, worker_id: int, batch_size_hint: int) -> dict[str, np.ndarray]:
        time.sleep(self.seconds)
        return {"x": np.zeros((batch_size_hint, 2), np.float32)}


def fetch_ones(worker_id: int, batch_size_hint: int, width: int = 2) -> dict[str, np.ndarray]:
    """A plain fetch function; ``width`` comes from the config as a keyword argument."""
    return {"x": np.ones((batch_size_hint, width), np.float32),
            "w": np.full(batch_size_hint, worker_id, np.int64)}


def fetch_tuple(worker_id: int, batch_size_hint: int) -> tuple[np.ndarray, np.ndarray]:
    return np.zeros((5, 2), np.float32), np.ones(5, np.int64)


NOT_CALLABLE = 42


class ExitsOnCall:
    """Calls os._exit(code) on the ``on``-th fetch of worker 0 (a crash that skips cleanup)."""

    def __init__(self, on: int = 3, code: int = 3) -> None:
        self.on = on
        self.code = code
        self.calls = 0

    def fetch(self, worker_id: int, batch_size_hint: int) -> dict[str, np.ndarray]:
        import os

        self.calls += 1
        if worker_id == 0 and self.calls >= self.on:
            os._exit(self.code)
        return {"x": np.zeros((batch_size_hint, 2), np.float32)}


class Sharded:
    """A finite source sharded by setup(worker_id, num_workers): fine in separate processes."""

    def __init__(self, length: int = 1000, max_chunk: int = 50, seed: int = 0) -> None:
        self.length = length
        self.max_chunk = max_chunk
        self.seed = seed
        self.worker: int | None = None
        self.workers = 1
        self.cursor = 0

    def setup(self, worker_id: int, num_workers: int) -> None:
        self.worker, self.workers = worker_id, num_workers
        self.rng = np.random.default_rng((self.seed, worker_id))
        # Worker w owns ids w, w + W, w + 2W, ...
        self.mine = np.arange(worker_id, self.length, num_workers, dtype=np.int64)

    def fetch(self, worker_id: int, batch_size_hint: int) -> dict[str, np.ndarray]:
        if self.worker is None:
            raise RuntimeError("setup() was not called before fetch()")
        if self.cursor >= len(self.mine):
            raise SourceExhausted
        n = int(self.rng.integers(0, self.max_chunk + 1))
        ids = self.mine[self.cursor:self.cursor + n]
        self.cursor += len(ids)
        return {"id": ids, "x": np.repeat(ids[:, None].astype(np.float32), 3, axis=1)}


def fetch_empty(worker_id: int, batch_size_hint: int) -> dict[str, np.ndarray]:
    """Always zero samples (a source stuck on empty chunks)."""
    return {"x": np.zeros((0, 2), np.float32)}


# --- more misbehaviour, for the error catalogue (tests/test_error_catalogue.py) ---------------


def _torch_tensor() -> object:
    import torch

    return {"x": torch.zeros(4, 2), "y": np.zeros(4, np.int64)}


BAD_OUTPUTS.update({
    "bare_array": lambda: np.zeros((4, 2), np.float32),
    "string": lambda: "x=1,y=2",
    "no_fields": lambda: {},
    "int_keys": lambda: {0: np.zeros((4, 2), np.float32), 1: np.zeros(4, np.int64)},
    "zero_dim_array": lambda: {"x": np.zeros((4, 2), np.float32), "y": np.array(7)},
    "tensor": _torch_tensor,
    "datetime_dtype": lambda: {"x": np.zeros((4, 2), np.float32),
                               "y": np.array(["2024-01-01"] * 4, dtype="datetime64[D]")},
    "extra_field": lambda: {"x": np.zeros((4, 2), np.float32), "y": np.zeros(4, np.int64),
                            "z": np.zeros(4, np.int64)},
    "ragged_list": lambda: [np.zeros((4, 2), np.float32), np.zeros(3, np.int64)],
})


def fetch_none(worker_id: int, batch_size_hint: int) -> None:
    """Returns None from the very first call (a fetch that forgot its return statement)."""
    return None


class NeedsFiles:
    """A constructor that fails the way real ones do: its files are not there."""

    def __init__(self, pattern: str = "/no/such/shards/*.npz") -> None:
        raise FileNotFoundError(f"no files match {pattern!r}")

    def fetch(self, worker_id: int, batch_size_hint: int) -> dict[str, np.ndarray]:
        raise AssertionError("never constructed")


SHARED_INSTANCE = Slow(seconds=0.0)  # an existing object with fetch: takes no arguments


class KillsItself:
    """Worker 0 sends itself ``signal`` (a name, e.g. SIGKILL) on its ``on``-th fetch."""

    def __init__(self, on: int = 3, signal: str = "SIGKILL") -> None:
        self.on = on
        self.signal = signal
        self.calls = 0

    def fetch(self, worker_id: int, batch_size_hint: int) -> dict[str, np.ndarray]:
        import os
        import signal

        self.calls += 1
        if worker_id == 0 and self.calls >= self.on:
            os.kill(os.getpid(), getattr(signal, self.signal))
            time.sleep(5)
        return {"x": np.zeros((batch_size_hint, 2), np.float32)}


class HangsAfter:
    """Returns ``after`` chunks, then every fetch blocks for good on an Event nobody sets
    (a worker stuck in a remote call that never answers). ``marker``: a file created when
    the first fetch starts to block, so a test can act once a worker is surely stuck."""

    def __init__(self, after: int = 3, marker: str | None = None) -> None:
        self.after = after
        self.marker = marker
        self.calls = 0
        self.lock = threading.Lock()
        self.never = threading.Event()

    def fetch(self, worker_id: int, batch_size_hint: int) -> dict[str, np.ndarray]:
        with self.lock:
            self.calls += 1
            calls = self.calls
        if calls > self.after:
            if self.marker is not None:
                open(self.marker, "a").close()
            self.never.wait()
        return {"x": np.zeros((batch_size_hint, 2), np.float32)}


class FailsAndCountsCloses:
    """Every fetch raises; ``closed`` counts the copies closed (the probe's, the pipeline's)."""

    closed = 0

    def fetch(self, worker_id: int, batch_size_hint: int) -> dict:
        raise OSError("unreadable")

    def close(self) -> None:
        type(self).closed += 1


class EnvIndexed:
    """An indexable source whose ``env`` field is the integer in environment variable ``name``
    where it reads (-1 if unset): shows what a worker's environment holds."""

    def __init__(self, length: int = 100, name: str = "INPUTKIT_TEST_MARK") -> None:
        self.length = length
        self.name = name

    def __len__(self) -> int:
        return self.length

    def read(self, indices: np.ndarray) -> dict[str, np.ndarray]:
        value = int(os.environ.get(self.name, "-1"))
        return {"id": np.asarray(indices, dtype=np.int64),
                "env": np.full(len(indices), value, dtype=np.int64)}


class GroupedIndexed:
    """An indexable source stored in ``shards`` shards of uneven size, which says so
    (``sample_groups``): each sample's ``id`` and ``shard``, for ``epoch.shuffle=shards``."""

    def __init__(self, length: int = 600, shards: int = 12) -> None:
        self.length = length
        # uneven shards, not contiguous in index order: sample i is in shard (i * 7) % shards
        # for the first half and (i // 13) % shards after, so each shard has a mix of both
        index = np.arange(length, dtype=np.int64)
        self.groups = np.where(index < length // 2, (index * 7) % shards, (index // 13) % shards)

    def __len__(self) -> int:
        return self.length

    def sample_groups(self) -> np.ndarray:
        return self.groups

    def read(self, indices: np.ndarray) -> dict[str, np.ndarray]:
        indices = np.asarray(indices, dtype=np.int64)
        return {"id": indices, "shard": self.groups[indices]}

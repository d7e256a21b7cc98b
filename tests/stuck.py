"""Sources stuck before their first fetch: in the constructor (only in a worker process, so
that the runner can start), or in setup()."""

from __future__ import annotations

import multiprocessing
import time

import numpy as np


class HangsWhileBuilt:
    def __init__(self, seconds: float = 30.0) -> None:
        if multiprocessing.parent_process() is not None:
            time.sleep(seconds)  # stuck_while_built

    def fetch(self, worker_id: int, batch_size_hint: int) -> dict[str, np.ndarray]:
        return {"x": np.zeros((batch_size_hint, 2), np.float32)}


class HangsInSetup:
    def __init__(self, seconds: float = 30.0) -> None:
        self.seconds = seconds

    def setup(self, worker_id: int, num_workers: int) -> None:
        time.sleep(self.seconds)  # stuck_in_setup

    def fetch(self, worker_id: int, batch_size_hint: int) -> dict[str, np.ndarray]:
        return {"x": np.zeros((batch_size_hint, 2), np.float32)}

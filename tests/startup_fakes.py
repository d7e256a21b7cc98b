"""Sources that count how often they are built (each build leaves a file), for start-up tests.

Importable as ``startup_fakes.<Class>`` in threads and in worker processes.
"""

from __future__ import annotations

import os
import uuid

import numpy as np

from inputkit.startup import progress


class CountedBuilds:
    """``length`` samples read by index; every construction writes a file into ``builds`` named
    after the building process, so a test can count who built an index, and where.
    ``ship_built``: whether worker processes may take the parent's copy."""

    ship_built = True

    def __init__(self, builds: str, length: int = 64, dim: int = 4) -> None:
        self.length = length
        self.dim = dim
        self.index = np.arange(length, dtype=np.int64)  # the "index" a build makes
        for done in range(0, length + 1, max(1, length // 4)):
            progress(done, "entries", f"indexing {builds}")
        with open(os.path.join(builds, f"{os.getpid()}-{uuid.uuid4().hex}"), "w"):
            pass

    def __len__(self) -> int:
        return self.length

    def read(self, indices: np.ndarray) -> dict[str, np.ndarray]:
        ids = self.index[np.asarray(indices, dtype=np.int64)]
        return {"id": ids, "x": np.repeat(ids[:, None].astype(np.float32), self.dim, axis=1)}


class BuiltPerProcess(CountedBuilds):
    """The same, but every worker process builds its own (the default for sources)."""

    ship_built = False


def builds(folder: str) -> list[int]:
    """The pid of every build recorded in ``folder``."""
    return [int(name.split("-")[0]) for name in os.listdir(folder)]

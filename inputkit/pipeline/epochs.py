"""What an epoch is to the data path: its order, shared by an input's devices; the marker that
ends it; and how many samples and batches each device's share holds.

Apart from the Dispatcher (``dispatcher.py``), which hands work out and takes results back,
because these are read without one: the runner draws the orders once per input for all its
devices, the batcher passes the markers on, and the torch adapter counts an epoch's batches
(``len()``) from the same split the Dispatcher makes, without starting anything.
"""

from __future__ import annotations

import threading
from dataclasses import dataclass
from typing import TYPE_CHECKING

import numpy as np

if TYPE_CHECKING:
    from inputkit.config.records import EpochSpec


class EpochOrders:
    """Each epoch's order for every device of one input: drawn once per epoch and shared
    (read-only arrays); the last two epochs are kept, since devices may be one epoch apart.
    Thread-safe."""

    def __init__(self, length: int, spec: EpochSpec, groups: np.ndarray | None = None) -> None:
        from inputkit.pipeline.shuffle import ShardLayout

        self.length = length
        self.spec = spec
        self.mode = spec.shuffle_mode
        if self.mode == "shards" and groups is None:
            raise ValueError("epoch.shuffle=shards needs the source's sample_groups()")
        self.layout = ShardLayout.of(groups) if self.mode == "shards" and groups is not None \
            else None
        self._lock = threading.Lock()
        self._orders: dict[int, np.ndarray] = {}

    def get(self, epoch: int) -> np.ndarray | None:
        """Epoch ``epoch``'s order (read-only), or None for index order (never materialized)."""
        if self.mode == "none":
            return None
        with self._lock:
            order = self._orders.get(epoch)
            if order is None:
                from inputkit.pipeline.shuffle import epoch_order

                order = epoch_order(self.length, self.spec.seed, epoch, self.mode, self.layout,
                                    self.spec.shuffle_window)
                order.flags.writeable = False
                self._orders[epoch] = order
                for old in [e for e in self._orders if e < epoch - 1]:
                    del self._orders[old]
            return order


@dataclass(frozen=True)
class EpochEnd:
    """Control message: every sample of ``epoch`` has been delivered (or skipped)."""

    epoch: int


def epoch_share(length: int, chunk_size: int, slot: int, slots: int) -> int:
    """Samples of a whole epoch of ``length`` that device slot ``slot`` of ``slots`` reads.

    The same split as :class:`~inputkit.pipeline.dispatcher.Dispatcher`: chunks ``slot, slot + slots, ...`` of
    ``chunk_size`` samples, the epoch's last chunk holding the remainder. A resumed
    epoch gives a slot at most this many.
    """
    chunks = -(-length // chunk_size)
    if slot >= chunks:
        return 0
    mine = len(range(slot, chunks, slots))
    short = chunks * chunk_size - length  # what the epoch's last chunk lacks
    return mine * chunk_size - (short if (chunks - 1 - slot) % slots == 0 else 0)


def batches_in(samples: int, batch_size: int, drop_last: bool) -> int:
    """Batches the batcher makes of one epoch's ``samples``: whole ones, and the remainder as
    a partial last batch unless ``drop_last``."""
    whole, rest = divmod(samples, batch_size)
    return whole + (1 if rest and not drop_last else 0)

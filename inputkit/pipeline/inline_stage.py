"""The whole chain in the consumer's thread: ``workers.kind=inline``.

In place of the batcher thread and the device stage, :class:`InlineStage` answers the
coordinator's ``get()`` itself: the same :class:`~inputkit.pipeline.batcher.Batcher` pulls chunks
from the :class:`~inputkit.workers.inline_pool.InlineWorkerPool` (fetched there and then:
the pool is the chunk stream) and re-chunks them into exact batches, ending epochs as the
batcher thread does (it is the same code), and this stage makes tensors as the device
stage does. No queue, no thread, no wait for a wake-up: the cost of a batch is the fetch
and a few microseconds.
On CUDA the copy is made on the consumer's stream when the batch is taken (no prefetch).
"""

from __future__ import annotations

import threading
from typing import Any

from inputkit.pipeline.batcher import Batch, Batcher
from inputkit.pipeline.chunk_stream import ChunkStream
from inputkit.pipeline.device import CpuDeviceStage, DeviceTransform
from inputkit.pipeline.queues import BoundedQueue


class InlineStage:
    """Batches (and control messages) made on demand, in the calling thread."""

    prefetch = 0
    busy_s = 0.0  # no thread of its own: its work is the consumer's time inside next()

    def __init__(self, pool: ChunkStream, batcher: Batcher, device: str,
                 transform: DeviceTransform | None = None) -> None:
        self.device = device
        self._pool = pool
        self._batcher = batcher
        self._tensors = CpuDeviceStage(None).convert  # type: ignore[arg-type]
        self._to_device = None if device == "cpu" else _copier(device)
        # device.normalize / channels_last: after the copy, as the device stages do it.
        self._transform = transform if transform is not None and transform.active else None

    def start(self) -> None:
        """Nothing runs ahead of the consumer: batches are made when it asks."""

    def get(self, stop: threading.Event) -> Any:
        """The next ``(tensors, n, nbytes, indices)``, or END, an EpochEnd, a Failure; raises
        QueueClosed once the runner stopped."""
        item = self._batcher.pull(self._pool, stop)
        if not isinstance(item, Batch):
            return item
        if self._transform is not None:
            self._transform.check(item)
        tensors, n, nbytes, indices = self._tensors(item)
        if self._to_device is not None:
            tensors = self._to_device(tensors)
        if self._transform is not None:
            tensors = self._transform.apply(tensors)
        return tensors, n, nbytes, indices

    def join(self, deadline: float) -> list[str]:
        self._batcher.clear()
        return []

    def queue(self) -> BoundedQueue | None:
        return None


def _copier(device: str) -> Any:
    """Tensors to ``device``, copied on the current stream (the consumer's)."""
    import torch

    target = torch.device(device)

    def copy(tensors: dict[str, Any]) -> dict[str, Any]:
        return {name: t.to(target) for name, t in tensors.items()}

    return copy

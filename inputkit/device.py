"""The device stage: numpy batches in, dicts of torch tensors on the device out.

- CPU: ``torch.from_numpy`` shares the batch's memory; nothing is copied or
  pinned (CPU builds of torch refuse to pin).
- CUDA: a transfer thread copies each batch into a reused *pinned* staging
  buffer, then to the GPU with ``non_blocking=True`` on a dedicated stream and
  records an event; the consumer's stream waits on that event, so the copy of
  batch k+1 overlaps the compute on batch k. ``device.prefetch`` batches are
  kept on the GPU ahead of the consumer.

torch is imported here only, when a runner starts: ``inputkit --help`` and the
config tools stay fast.
"""

from __future__ import annotations

import threading
import time
from collections import deque
from typing import Any

import numpy as np

from inputkit.batcher import Batch
from inputkit.errors import ConfigError
from inputkit.messages import END, Failure
from inputkit.queues import BoundedQueue, QueueClosed


def resolve_devices(requested: tuple[str, ...], local_rank: int | None = None) -> list[str]:
    """Expand ``auto`` (every visible GPU, else cpu; under torchrun, the rank's own GPU
    ``cuda:LOCAL_RANK``) and check CUDA devices exist."""
    import torch

    if requested == ("auto",):
        count = torch.cuda.device_count() if torch.cuda.is_available() else 0
        if local_rank is not None and count:
            return [f"cuda:{local_rank % count}"]
        return [f"cuda:{i}" for i in range(count)] or ["cpu"]
    for device in requested:
        if device.startswith("cuda"):
            if not torch.cuda.is_available():
                raise ConfigError("devices", f"{device} requested, but torch.cuda.is_available() is "
                                  "False (a CPU build of torch, or no visible GPU); use devices=cpu "
                                  "or devices=auto")
            index = int(device.split(":")[1])
            if index >= torch.cuda.device_count():
                raise ConfigError("devices", f"{device} requested, but only "
                                  f"{torch.cuda.device_count()} GPU(s) are visible")
    return list(requested)


def _tensor(array: np.ndarray) -> Any:
    import torch

    # torch.from_numpy needs a writeable array with non-negative strides; views of a
    # read-only or reversed source array get one contiguous copy instead.
    if not array.flags.writeable or any(s < 0 for s in array.strides):
        array = np.array(array, copy=True, order="C")
    return torch.from_numpy(array)


class CpuDeviceStage:
    """Batches become CPU tensors sharing their memory; no thread, no copy."""

    device = "cpu"
    prefetch = 0

    def __init__(self, batches: BoundedQueue) -> None:
        self._batches = batches

    def start(self) -> None:
        pass

    def get(self, stop: threading.Event) -> Any:
        """The next item: ``(tensors, n, nbytes, indices)``, or a control message (END, a Failure)."""
        item = self._batches.get(stop)
        if isinstance(item, Batch):
            tensors = {name: _tensor(arr) for name, arr in item.fields.items()}
            return tensors, item.n, item.nbytes, item.indices
        return item

    def join(self, deadline: float) -> list[str]:
        return []

    def queue(self) -> BoundedQueue | None:
        return None


class CudaDeviceStage:
    """Pinned staging, non_blocking copies on a side stream, ``prefetch`` batches ahead."""

    def __init__(self, device: str, prefetch: int, batches: BoundedQueue,
                 stop: threading.Event, name: str, where: str) -> None:
        import torch

        self.device = device
        self.prefetch = prefetch
        self._torch = torch
        self._device = torch.device(device)
        self._batches = batches
        self._stop = stop
        self._where = where
        self._stream = torch.cuda.Stream(device=self._device)
        self._ready = BoundedQueue(f"{name}/device", prefetch)
        # Staging sets in flight; a set is reused once the event of its copy has completed.
        self._staging: deque[tuple[dict[str, Any], Any]] = deque()
        self._free: list[dict[str, Any]] = []
        self.thread = threading.Thread(target=self._run, name=f"inputkit-{name}-h2d", daemon=True)

    def start(self) -> None:
        self.thread.start()

    def queue(self) -> BoundedQueue:
        return self._ready

    def get(self, stop: threading.Event) -> Any:
        item = self._ready.get(stop)
        if isinstance(item, tuple):
            tensors, event, n, nbytes, indices = item
            consumer = self._torch.cuda.current_stream(self._device)
            consumer.wait_event(event)
            for tensor in tensors.values():
                # Tell the caching allocator the consumer's stream uses this memory too.
                tensor.record_stream(consumer)
            return tensors, n, nbytes, indices
        return item

    def join(self, deadline: float) -> list[str]:
        self._ready.close()
        self.thread.join(max(0.0, deadline - time.monotonic()))
        return [self.thread.name] if self.thread.is_alive() else []

    def _run(self) -> None:
        torch = self._torch
        try:
            # This thread's current device: events and allocations go to our GPU, not cuda:0.
            torch.cuda.set_device(self._device)
            while not self._stop.is_set():
                try:
                    item = self._batches.get(self._stop)
                except QueueClosed:
                    return
                if not isinstance(item, Batch):
                    self._ready.put_control(item)
                    if item is END or isinstance(item, Failure):
                        return
                    continue
                staging = self._acquire_staging(item)
                with torch.cuda.stream(self._stream):
                    tensors = {}
                    for name, arr in item.fields.items():
                        host = staging[name][: item.n]
                        host.numpy()[...] = arr  # the one host copy, into pinned memory
                        tensors[name] = host.to(self._device, non_blocking=True)
                    event = torch.cuda.Event()
                    event.record(self._stream)
                self._staging.append((staging, event))
                # The numpy batch is not kept: its bytes now live in the staging set.
                if not self._ready.put((tensors, event, item.n, item.nbytes, item.indices),
                                       item.nbytes, self._stop):
                    return
        except BaseException as exc:
            self._ready.put_control(Failure.capture(exc, self._where))

    def _acquire_staging(self, batch: Batch) -> dict[str, Any]:
        """A pinned buffer set big enough for ``batch``, reusing sets whose copy finished."""
        torch = self._torch
        while self._staging and (len(self._staging) > self.prefetch or self._staging[0][1].query()):
            staging, event = self._staging.popleft()
            event.synchronize()
            self._free.append(staging)
        while self._free:
            staging = self._free.pop()
            if all(name in staging and staging[name].shape[0] >= batch.n
                   and staging[name].shape[1:] == arr.shape[1:]
                   for name, arr in batch.fields.items()):
                return staging
        return {
            name: torch.empty(arr.shape, dtype=torch.from_numpy(arr[:0].copy()).dtype,
                              pin_memory=True)
            for name, arr in batch.fields.items()
        }


def make_device_stage(device: str, prefetch: int, batches: BoundedQueue, stop: threading.Event,
                      name: str, where: str) -> CpuDeviceStage | CudaDeviceStage:
    if device == "cpu":
        return CpuDeviceStage(batches)
    return CudaDeviceStage(device, prefetch, batches, stop, name, where)

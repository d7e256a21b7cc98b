"""Measured memory of the pipeline's process tree: this process, its workers, shared memory."""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass, field


@dataclass(frozen=True)
class ProcessMemory:
    """Resident bytes now. ``shared_bytes``: chunk bytes sitting in shared-memory slots (they
    also count in the RSS of the processes that touched them)."""

    main_rss: int
    workers_rss: int
    shared_bytes: int
    gpu_bytes: dict[str, int] = field(default_factory=dict)  # CUDA device -> bytes allocated

    @property
    def total_rss(self) -> int:
        return self.main_rss + self.workers_rss


def read_process_memory(worker_pids: Iterable[int], shared_bytes: int,
                        cuda_devices: Iterable[str] = ()) -> ProcessMemory:
    """RSS of this process and of the given workers (gone ones count as 0), and what torch's
    allocator holds on each CUDA device."""
    import psutil

    gpu: dict[str, int] = {}
    for device in cuda_devices:
        import torch

        gpu[device] = int(torch.cuda.memory_allocated(device))

    workers = 0
    for pid in worker_pids:
        try:
            workers += psutil.Process(pid).memory_info().rss
        except (psutil.NoSuchProcess, psutil.AccessDenied):
            continue
    return ProcessMemory(main_rss=psutil.Process().memory_info().rss, workers_rss=workers,
                         shared_bytes=shared_bytes, gpu_bytes=gpu)

"""Ranks of a multi-process job (``torchrun``): which share of every epoch this process reads.

Under ``torchrun`` (or any launcher that sets ``RANK``, ``WORLD_SIZE`` and
``LOCAL_RANK``), each process runs its own Runner. Rank ``r`` of ``W``, feeding
``D`` devices, takes the device slots ``r*D .. r*D + D - 1`` of ``W*D``: index-range
items and worker ids are split over all of them, so every sample of an epoch goes to
exactly one device of one rank. ``devices=auto`` picks the rank's own GPU
(``cuda:LOCAL_RANK``) when there is one. ``distributed=off`` ignores the environment.
"""

from __future__ import annotations

import os
import sys
from dataclasses import dataclass

from inputkit.errors import ConfigError


@dataclass(frozen=True)
class RankInfo:
    rank: int = 0
    world_size: int = 1
    local_rank: int = 0

    def device_slots(self, devices: int) -> tuple[int, int]:
        """(first global device slot of this rank, device slots over every rank)."""
        return self.rank * devices, self.world_size * devices


def rank_info(mode: str = "auto") -> RankInfo:
    """This process's rank from the environment (``mode=auto``), or a single process (``off``)."""
    if mode == "off" or "WORLD_SIZE" not in os.environ:
        return RankInfo()
    values = {}
    for name in ("RANK", "WORLD_SIZE", "LOCAL_RANK"):
        raw = os.environ.get(name, "0")
        try:
            values[name] = int(raw)
        except ValueError:
            raise ConfigError("distributed", f"environment variable {name}={raw!r} is not a whole "
                              "number; check the launcher, or set distributed=off") from None
    if "RANK" not in os.environ and values["WORLD_SIZE"] > 1:  # Lightning's DDP sets no RANK
        return _from_process_group()
    info = RankInfo(values["RANK"], values["WORLD_SIZE"], values["LOCAL_RANK"])
    if info.world_size < 1 or not 0 <= info.rank < info.world_size:
        raise ConfigError("distributed", f"RANK={info.rank} is not in 0..WORLD_SIZE-1 "
                          f"(WORLD_SIZE={info.world_size}); check the launcher, or set distributed=off")
    return info


def _from_process_group() -> RankInfo:
    """The rank from torch.distributed's process group (never imported here: only read when
    the training script has started it), for launchers that do not set ``RANK``."""
    dist = sys.modules.get("torch.distributed")
    if dist is not None and dist.is_available() and dist.is_initialized():
        return RankInfo(dist.get_rank(), dist.get_world_size(),
                        int(os.environ.get("LOCAL_RANK", "0") or 0))
    raise ConfigError("distributed", f"WORLD_SIZE={os.environ['WORLD_SIZE']} is set but RANK is "
                      "not, and no torch.distributed process group is running to ask; start "
                      "the input after the process group (under Lightning: in train_dataloader, "
                      "as inputkit.lightning does), set RANK, or set distributed=off")

"""What device.normalize costs a CPU device per batch: into fresh memory vs a reused buffer.

    python tools/cpu_normalize.py [--batch 64] [--repeats 15]

Converts one uint8 batch (N x 3 x 224 x 224) to float32 with ImageNet's mean and std the way
the device stage does (inputkit.pipeline.device.DeviceTransform), first into fresh memory each time (the
stage before reused buffers), then through the stage's FloatBuffers (each batch let go before
the next, as a training loop does). Prints the best and median ms a batch of each.
"""

from __future__ import annotations

import argparse
import statistics
import time

import numpy as np
import torch

from inputkit.config.normalize import NormalizeSpec
from inputkit.pipeline.device import DeviceTransform

MEAN, STD = (0.485, 0.456, 0.406), (0.229, 0.224, 0.225)


def timed(convert, batch: torch.Tensor, repeats: int) -> list[float]:
    times = []
    for _ in range(repeats):
        began = time.perf_counter()
        out = convert(batch)
        times.append(time.perf_counter() - began)
        del out  # let go, as a training step does
    return times


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--batch", type=int, default=64)
    parser.add_argument("--repeats", type=int, default=15)
    args = parser.parse_args(argv)
    batch = torch.from_numpy(np.random.default_rng(0).integers(
        0, 256, size=(args.batch, 3, 224, 224), dtype=np.uint8))
    transform = DeviceTransform(NormalizeSpec(mean=MEAN, std=STD), channels_last=False)
    scale, offset = transform._per_channel(batch, transform.normalize)  # noqa: SLF001

    def fresh(x: torch.Tensor) -> torch.Tensor:
        return x.to(torch.float32, copy=True).mul_(scale).add_(offset)

    def reused(x: torch.Tensor) -> torch.Tensor:
        return transform.apply({"image": x})["image"]

    print(f"torch threads: {torch.get_num_threads()}; batch {args.batch} x 3 x 224 x 224 uint8")
    for name, convert in (("fresh memory", fresh), ("reused buffer", reused)):
        times = timed(convert, batch, args.repeats)
        print(f"{name:14s} best {min(times) * 1e3:6.1f} ms  median "
              f"{statistics.median(times) * 1e3:6.1f} ms a batch")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())

"""Host-to-device transfer: inputkit's CUDA device stage against a plain torch pinned copy.

The peer, measured in the same run: the same bytes per batch copied from one reused
pinned buffer with ``tensor.to(device, non_blocking=True)``, synchronized once at the
end. That is the fastest a loop can move those bytes. inputkit does more per batch:
it fills a pinned staging set from the batch, copies on a side stream, and hands the
tensors over with an event the consumer's stream waits on. The figure of merit is
inputkit's GB/s as a share of the peer's.

    python tools/h2d.py                       # 64 x 3x224x224 uint8 batches, cuda:0
    python tools/h2d.py --batch 256 --seconds 5

Needs a CUDA GPU; prints why and exits 2 without one.
"""

from __future__ import annotations

import argparse
import sys
import time

import torch

import inputkit


def peer_gbps(nbytes: int, device: str, seconds: float) -> float:
    host = torch.empty(nbytes, dtype=torch.uint8, pin_memory=True)
    host.fill_(1)
    torch.cuda.synchronize(device)
    copies, began = 0, time.perf_counter()
    while time.perf_counter() - began < seconds:
        for _ in range(16):
            host.to(device, non_blocking=True)
        copies += 16
    torch.cuda.synchronize(device)
    return copies * nbytes / (time.perf_counter() - began) / 1e9


def inputkit_gbps(batch: int, shape: list[int], device: str, seconds: float, prefetch: int) -> float:
    cfg = {
        "source": {"_target_": "inputkit.sources.synthetic.SyntheticSource",
                   "fields": {"x": {"shape": shape, "dtype": "uint8"}}, "chunk_size": batch},
        "batch_size": batch, "devices": device, "workers": {"count": 2},
        "device": {"prefetch": prefetch},
    }
    moved = 0
    with inputkit.Runner(cfg) as runner:
        stream = runner.device(0)
        for _ in range(10):  # warm up: staging sets allocated, workers running
            next(stream)
        torch.cuda.synchronize(device)
        began = time.perf_counter()
        while time.perf_counter() - began < seconds:
            batch_tensors = next(stream)
            moved += batch_tensors["x"].numel()
        torch.cuda.synchronize(device)
        elapsed = time.perf_counter() - began
    return moved / elapsed / 1e9


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--batch", type=int, default=64)
    parser.add_argument("--shape", type=int, nargs="+", default=[3, 224, 224])
    parser.add_argument("--device", default="cuda:0")
    parser.add_argument("--seconds", type=float, default=3.0)
    parser.add_argument("--prefetch", type=int, default=2)
    args = parser.parse_args()
    if not torch.cuda.is_available():
        print("tools/h2d.py needs a CUDA GPU (torch.cuda.is_available() is False)", file=sys.stderr)
        return 2
    nbytes = args.batch
    for d in args.shape:
        nbytes *= d
    peer = peer_gbps(nbytes, args.device, args.seconds)
    ours = inputkit_gbps(args.batch, args.shape, args.device, args.seconds, args.prefetch)
    print(f"batch: {args.batch} x {args.shape} uint8 = {nbytes / 1e6:.1f} MB, {args.device} "
          f"({torch.cuda.get_device_name(args.device)})")
    print(f"torch pinned copy (peer):     {peer:7.2f} GB/s")
    print(f"inputkit CUDA device stage:   {ours:7.2f} GB/s   ({ours / peer:.2f} of the peer)")
    return 0


if __name__ == "__main__":
    sys.exit(main())

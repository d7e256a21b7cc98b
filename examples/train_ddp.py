"""Train a small model with DistributedDataParallel on CPU (gloo), fed by inputkit.

    torchrun --standalone --nproc_per_node=2 examples/train_ddp.py --out /tmp/ddp

Each rank runs its own inputkit Runner. inputkit reads RANK, WORLD_SIZE and
LOCAL_RANK from the environment torchrun sets, so rank r reads only its share of
every epoch: the ranks' shares are disjoint and together cover every sample. Each
rank saves the sample ids it trained on (``ids_rank<r>_epoch<e>.npy`` in ``--out``)
so the split can be checked (tests/test_distributed.py does).
"""

from __future__ import annotations

import argparse
import time
from pathlib import Path

import numpy as np
import torch
import torch.distributed as dist
from torch.nn.parallel import DistributedDataParallel

import inputkit


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", type=Path, required=True, help="where each rank saves its ids")
    parser.add_argument("--length", type=int, default=4096, help="samples per epoch")
    parser.add_argument("--epochs", type=int, default=2)
    parser.add_argument("--batch-size", type=int, default=64)
    args = parser.parse_args()

    dist.init_process_group("gloo")  # on GPUs: "nccl", and devices=auto picks cuda:LOCAL_RANK
    rank = dist.get_rank()
    torch.manual_seed(0)
    cfg = {
        "source": {"_target_": "inputkit.sources.synthetic.SyntheticSource",
                   "fields": {"x": {"shape": [16], "dtype": "float32"},
                              "y": {"shape": [], "dtype": "float32"}},
                   "length": args.length, "id_field": "id"},
        "batch_size": args.batch_size,
        "devices": "cpu",
        "workers": {"count": 2},
        "epoch": {"count": args.epochs, "shuffle": True, "seed": 1},
    }
    model = DistributedDataParallel(torch.nn.Linear(16, 1))
    optimizer = torch.optim.SGD(model.parameters(), lr=0.01)
    args.out.mkdir(parents=True, exist_ok=True)
    began = time.perf_counter()
    with inputkit.Runner(cfg) as runner:
        stream = runner.device(0)
        for epoch in range(args.epochs):
            ids, losses = [], []
            with model.join():  # ranks may get a different number of batches per epoch
                for batch in stream:
                    loss = ((model(batch["x"]).squeeze(1) - batch["y"]) ** 2).mean()
                    optimizer.zero_grad()
                    loss.backward()
                    optimizer.step()
                    ids.append(batch["id"].numpy().copy())
                    losses.append(loss.item())
            np.save(args.out / f"ids_rank{rank}_epoch{epoch}.npy", np.concatenate(ids))
            print(f"rank {rank}/{runner.rank.world_size} epoch {epoch}: {len(ids)} batches, "
                  f"{sum(map(len, ids))} samples, mean loss {np.mean(losses):.4f}", flush=True)
    print(f"rank {rank}: done in {time.perf_counter() - began:.1f} s", flush=True)
    dist.destroy_process_group()


if __name__ == "__main__":
    main()

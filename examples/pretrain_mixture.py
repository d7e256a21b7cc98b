"""Pretrain a tiny causal language model on a mixture of token files, checkpoint, and resume.

    python examples/pretrain_mixture.py --data /tmp/tok --out /tmp/run --steps 40 --stop-at 25
    python examples/pretrain_mixture.py --data /tmp/tok --out /tmp/run --steps 40   # resumes

Two corpora (``web``, 70%, and ``code``, 30%) of uint16 token files are written to
``--data`` if missing. inputkit reads them as windows of ``seq_len + 1`` tokens
(``input_ids`` and ``labels``, shifted by one), mixed in those proportions. Every
``--save-every`` steps the script saves the model, the optimizer and
``runner.state_dict()`` together; ``--stop-at`` stops early, as a crash would. Run
again with the same ``--out`` and it resumes from the checkpoint: the input goes
on with exactly the windows an uninterrupted run would have read (each step's
window ids are appended to ``steps.txt``, so tests/test_mixture.py can compare).
"""

from __future__ import annotations

import argparse
from pathlib import Path

import numpy as np
import torch

import inputkit

VOCAB = 512


def write_corpora(data: Path) -> None:
    """Two small corpora of random tokens (several files each) if they are not there."""
    rng = np.random.default_rng(0)
    for name, files, tokens in (("web", 3, 60_000), ("code", 2, 20_000)):
        folder = data / name
        if folder.exists():
            continue
        folder.mkdir(parents=True)
        for i in range(files):
            rng.integers(0, VOCAB, tokens, dtype=np.uint16).tofile(folder / f"{i:03d}.bin")


def tokens(files: str, seq_len: int) -> dict:
    return {"_target_": "inputkit.sources.tokens.TokenSource", "files": files, "dtype": "uint16",
            "seq_len": seq_len, "vocab_size": VOCAB, "fields": ["input_ids", "labels", "id"]}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--data", type=Path, required=True)
    parser.add_argument("--out", type=Path, required=True)
    parser.add_argument("--steps", type=int, default=40)
    parser.add_argument("--stop-at", type=int, default=None, help="stop after this step (a crash)")
    parser.add_argument("--save-every", type=int, default=5)
    parser.add_argument("--seq-len", type=int, default=64)
    args = parser.parse_args()
    write_corpora(args.data)
    args.out.mkdir(parents=True, exist_ok=True)
    cfg = {
        "source": {"_target_": "inputkit.sources.mixture.Mixture", "seed": 7, "components": [
            {"name": "web", "weight": 0.7, "source": tokens(str(args.data / "web" / "*.bin"),
                                                           args.seq_len)},
            {"name": "code", "weight": 0.3, "source": tokens(str(args.data / "code" / "*.bin"),
                                                            args.seq_len)},
        ]},
        "batch_size": 8, "devices": "cpu", "workers": {"kind": "thread", "count": 2},
        "epoch": {"count": None, "shuffle": True, "ordered": True, "seed": 1},
    }
    torch.manual_seed(0)
    model = torch.nn.Sequential(torch.nn.Embedding(VOCAB, 32), torch.nn.Linear(32, VOCAB))
    optimizer = torch.optim.AdamW(model.parameters(), lr=1e-3)
    runner = inputkit.Runner(cfg)
    checkpoint = args.out / "checkpoint.pt"
    step = 0
    if checkpoint.exists():  # resume: the model, the optimizer and the input, together
        saved = torch.load(checkpoint, weights_only=False)
        model.load_state_dict(saved["model"])
        optimizer.load_state_dict(saved["optimizer"])
        runner.load_state_dict(saved["input"])
        step = saved["step"]
        print(f"resumed at step {step}; components: {saved['input']['inputs']['main']['components']}")
    log = (args.out / "steps.txt").open("a")
    with runner:
        batches = runner.device(0)
        while step < args.steps:
            try:
                batch = next(batches)
            except StopIteration:  # an epoch of the mixture ended: go on with the next
                batches = runner.device(0)
                continue
            logits = model(batch["input_ids"])
            loss = torch.nn.functional.cross_entropy(logits.reshape(-1, VOCAB),
                                                     batch["labels"].reshape(-1))
            optimizer.zero_grad()
            loss.backward()
            optimizer.step()
            step += 1
            log.write(f"{step} {' '.join(map(str, batch['component'].tolist()))} | "
                      f"{' '.join(map(str, batch['id'].tolist()))}\n")
            log.flush()
            if step % args.save_every == 0:
                torch.save({"model": model.state_dict(), "optimizer": optimizer.state_dict(),
                            "input": runner.state_dict(), "step": step}, checkpoint)
            if args.stop_at is not None and step >= args.stop_at:
                print(f"stopped at step {step} (last checkpoint: step "
                      f"{step - step % args.save_every})")
                return
        counts = runner.stats().coordinators[0].components
    print(f"done: {step} steps, loss {loss.item():.3f}, samples per component {counts}")


if __name__ == "__main__":
    main()

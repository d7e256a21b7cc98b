"""Token windows for pretraining: inputkit's tokens source against DataLoader and the limit.

One flat uint16 token file (written to ``--path`` if missing: ``--tokens`` random ids,
200M by default, 400 MB), read as shuffled windows of ``seq_len + 1`` tokens (2048 + 1),
batch 8, each batch ``input_ids`` and ``labels`` in int64, side by side in one run:

- **the limit**: one thread slicing the memory map in a loop, nanoGPT's ``get_batch``: 8
  random window starts, ``np.stack`` of 8 slices, one cast to int64, ``torch.from_numpy``
  of the shifted views. No queues, no checks: what one core can do;
- **DataLoader** over a map-style Dataset whose ``__getitem__`` slices one window of an
  ``np.memmap`` (``shuffle=True``, ``batch_size=8``, default collate), with
  ``num_workers`` 0 and 2 (persistent workers, prefetch 4);
- **inputkit** ``source=tokens`` with ``epoch.shuffle=true``, endless epochs, inline and
  with thread and process workers, chunks of 8 and 64 windows (the batcher re-chunks).

The goals (issue 16): the best inputkit shape >= 5x the best DataLoader and >= 0.5 of the
limit. The clock starts after each loader's first batch.

    python tools/tokens_bench.py                     # 3 s per loader
    python tools/tokens_bench.py --seconds 1 --tokens 20000000 --path /tmp/tok20M.bin
"""

from __future__ import annotations

import argparse
import itertools
import os
from collections.abc import Callable, Iterator
from typing import Any

import numpy as np
import torch
from rich.console import Console
from rich.table import Table

import inputkit
from inputkit.peers.compare import drain

SEQ_LEN, BATCH = 2048, 8


def ensure_file(path: str, tokens: int) -> None:
    """Random uint16 token ids (below 50,257, GPT-2's vocabulary), written in 16M-token blocks."""
    if os.path.exists(path) and os.path.getsize(path) == 2 * tokens:
        return
    rng = np.random.default_rng(0)
    tmp = path + ".part"
    with open(tmp, "wb") as f:
        for start in range(0, tokens, 1 << 24):
            rng.integers(0, 50_257, min(1 << 24, tokens - start), dtype=np.uint16).tofile(f)
    os.replace(tmp, path)


def limit(path: str) -> Iterator[dict[str, torch.Tensor]]:
    """One thread, nanoGPT's get_batch: 8 random slices of the map, stacked, cast once."""
    data = np.memmap(path, dtype=np.uint16, mode="r")
    windows = (len(data) - SEQ_LEN - 1) // SEQ_LEN + 1
    rng = np.random.default_rng(1)
    while True:
        starts = rng.integers(0, windows, BATCH) * SEQ_LEN
        w = np.stack([data[s:s + SEQ_LEN + 1] for s in starts]).astype(np.int64)
        yield {"input_ids": torch.from_numpy(w[:, :-1]), "labels": torch.from_numpy(w[:, 1:])}


class WindowDataset(torch.utils.data.Dataset):  # type: ignore[type-arg]
    """Map-style: window ``i`` is one slice of an ``np.memmap`` (opened once per process)."""

    def __init__(self, path: str) -> None:
        self.path = path
        self.windows = (os.path.getsize(path) // 2 - SEQ_LEN - 1) // SEQ_LEN + 1
        self.data: np.ndarray | None = None

    def __len__(self) -> int:
        return self.windows

    def __getitem__(self, i: int) -> dict[str, torch.Tensor]:
        if self.data is None:
            self.data = np.memmap(self.path, dtype=np.uint16, mode="r")
        w = torch.from_numpy(self.data[i * SEQ_LEN:i * SEQ_LEN + SEQ_LEN + 1].astype(np.int64))
        return {"input_ids": w[:-1], "labels": w[1:]}


def dataloader(path: str, workers: int) -> Iterator[dict[str, torch.Tensor]]:
    extra: dict[str, Any] = {"persistent_workers": True, "prefetch_factor": 4} if workers else {}
    loader = torch.utils.data.DataLoader(WindowDataset(path), batch_size=BATCH, shuffle=True,
                                         num_workers=workers, **extra)
    while True:
        yield from loader


def with_inputkit(path: str, kind: str, workers: int, chunk: int,
                  seconds: float) -> tuple[int, float]:
    cfg = {"source": {"_target_": "tokens", "files": path, "dtype": "uint16", "seq_len": SEQ_LEN},
           "batch_size": BATCH, "devices": "cpu", "workers": {"kind": kind, "count": workers},
           "epoch": {"shuffle": True, "count": None, "chunk_size": chunk}}
    with inputkit.Runner(cfg) as runner:
        stream = runner.device(0)

        def batches() -> Iterator[Any]:
            while not stream.finished:
                yield from stream

        return timed(batches(), seconds)


def timed(stream: Iterator[Any], seconds: float) -> tuple[int, float]:
    """``drain`` (batches in ``seconds`` after the first), with the first batch's shape checked."""
    first = next(stream)
    if tuple(first["input_ids"].shape) != (BATCH, SEQ_LEN):
        raise RuntimeError(f"a batch of shape {tuple(first['input_ids'].shape)}")
    return drain(itertools.chain([first], stream), seconds)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--seconds", type=float, default=3.0)
    parser.add_argument("--tokens", type=int, default=200_000_000)
    parser.add_argument("--path", default="/tmp/inputkit_tokens_200M.bin")
    parser.add_argument("--repeat", type=int, default=1, help="run the inputkit shapes this many "
                        "times, interleaved (1 vs 2 thread workers side by side under one load)")
    args = parser.parse_args()
    ensure_file(args.path, args.tokens)
    rows: list[tuple[str, str, float]] = []
    peers: list[tuple[str, str, Callable[[], tuple[int, float]]]] = [
        ("limit", "one thread slicing the map", lambda: timed(limit(args.path), args.seconds)),
        ("DataLoader", "num_workers=0", lambda: timed(dataloader(args.path, 0), args.seconds)),
        ("DataLoader", "num_workers=2", lambda: timed(dataloader(args.path, 2), args.seconds)),
    ]
    shapes = [("inline", 1, 8), ("inline", 1, 64), ("thread", 1, 64), ("thread", 2, 64),
              ("process", 2, 64)]
    for kind, workers, chunk in shapes * args.repeat:  # each repetition runs every shape
        shape = f"{kind}" + (f" x{workers}" if kind != "inline" else "") + f", chunks of {chunk}"
        peers.append(("inputkit", shape, lambda k=kind, w=workers, c=chunk:
                      with_inputkit(args.path, k, w, c, args.seconds)))
    for loader, shape, run in peers:
        batches, elapsed = run()
        rows.append((loader, shape, batches / elapsed))
    best = {name: max(r for n, _, r in rows if n == name) for name in ("limit", "DataLoader",
                                                                       "inputkit")}
    mb = BATCH * SEQ_LEN * 2 * 8 / 1e6  # input_ids + labels, int64
    table = Table(title=f"token windows: seq_len {SEQ_LEN}, batch {BATCH}, shuffled, "
                        f"{args.tokens:,} uint16 tokens ({args.seconds:g} s each)")
    for column in ["loader", "shape", "batches/s", "MB/s", "vs limit", "vs best DataLoader"]:
        table.add_column(column, justify="left" if column in ("loader", "shape") else "right")
    for loader, shape, rate in rows:
        table.add_row(loader, shape, f"{rate:,.0f}", f"{rate * mb:,.0f}",
                      f"{rate / best['limit']:.2f}", f"{rate / best['DataLoader']:.1f}x")
    console = Console(width=130)
    console.print(table)
    ratio_dl, ratio_limit = best["inputkit"] / best["DataLoader"], best["inputkit"] / best["limit"]
    console.print(f"best inputkit: {ratio_dl:.1f}x the best DataLoader (goal >= 5x: "
                  f"{'met' if ratio_dl >= 5 else 'missed'}), {ratio_limit:.2f} of the limit "
                  f"(goal >= 0.5: {'met' if ratio_limit >= 0.5 else 'missed'})")


if __name__ == "__main__":
    main()

"""source=hf against `datasets`' own torch path over the same saved dataset, in one run.

Builds two datasets with `datasets` and ``save_to_disk`` (numbers: float32 feature rows and an
int label; images: same-size JPEGs and a label), then times one shuffled epoch of each, rounds
interleaved so that the shared machine's load falls on every contender alike:

- ``inputkit``: ``Runner`` over ``source=hf`` (thread workers), batches as torch tensors;
- ``datasets w0`` / ``datasets w2``: ``ds.with_format("torch")`` in a torch ``DataLoader``
  (``batch_size``, ``shuffle=True``, ``num_workers`` 0 and 2), the shape a user would write.

Each epoch is timed from the start (the Runner's start, the DataLoader's worker start) to its
last batch. Prints samples/s per contender (median of the rounds) and inputkit's ratio to the
faster DataLoader. One untimed round first (imports, first use). Run:
``python tools/hf_compare.py [--rows 50000] [--images 1000] [--rounds 3]``.
"""

from __future__ import annotations

import argparse
import io
import statistics
import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path

import numpy as np


def build_numbers(folder: Path, rows: int, width: int) -> Path:
    import datasets

    rng = np.random.default_rng(0)
    ds = datasets.Dataset.from_dict(
        {"x": rng.standard_normal((rows, width), dtype=np.float32),
         "label": rng.integers(0, 10, rows)},
        features=datasets.Features({"x": datasets.List(datasets.Value("float32"), length=width),
                                    "label": datasets.Value("int64")}))
    ds.save_to_disk(str(folder / "numbers"))
    return folder / "numbers"


def build_images(folder: Path, count: int, side: int) -> Path:
    import datasets
    from PIL import Image

    rng = np.random.default_rng(1)
    base = rng.integers(0, 256, (side // 4, side // 4, 3), dtype=np.uint8)
    encoded = []
    for i in range(count):  # smooth pictures (upsampled noise), as photos compress
        picture = np.roll(base, i, axis=0).repeat(4, 0).repeat(4, 1)
        buf = io.BytesIO()
        Image.fromarray(picture).save(buf, format="JPEG", quality=90)
        encoded.append({"bytes": buf.getvalue(), "path": None})
    ds = datasets.Dataset.from_dict(
        {"img": encoded, "label": (np.arange(count) % 10).tolist()},
        features=datasets.Features({"img": datasets.Image(), "label": datasets.Value("int64")}))
    ds.save_to_disk(str(folder / "images"))
    return folder / "images"


def inputkit_epoch(path: Path, batch: int, threads: int, image_side: int | None) -> int:
    from inputkit import Runner

    source: dict = {"_target_": "hf", "path": str(path)}
    if image_side is not None:
        source["transforms"] = [{"resize": [image_side, image_side]}]
    cfg = {"source": source, "devices": "cpu", "batch_size": batch,
           "workers": {"kind": "thread", "count": threads},
           "epoch": {"shuffle": True, "seed": 0, "count": 1}}
    n = 0
    with Runner(cfg) as runner:
        for b in runner.device(0):
            n += len(b["label"])
    return n


def datasets_epoch(path: Path, batch: int, workers: int) -> int:
    import datasets
    import torch

    ds = datasets.load_from_disk(str(path)).with_format("torch")
    loader = torch.utils.data.DataLoader(ds, batch_size=batch, shuffle=True, num_workers=workers)
    n = 0
    for b in loader:
        n += len(b["label"])
    return n


def timed(run: Callable[[], int], expected: int) -> float:
    start = time.perf_counter()
    n = run()
    elapsed = time.perf_counter() - start
    if n != expected:
        raise SystemExit(f"a contender delivered {n} samples of {expected}")
    return n / elapsed


def compare(name: str, path: Path, rows: int, batch: int, rounds: int,
            image_side: int | None, threads: int) -> None:
    contenders = {
        f"inputkit (threads x{threads})": lambda: inputkit_epoch(path, batch, threads, image_side),
        "datasets w0": lambda: datasets_epoch(path, batch, 0),
        "datasets w2": lambda: datasets_epoch(path, batch, 2),
    }
    rates: dict[str, list[float]] = {k: [] for k in contenders}
    for run in contenders.values():  # one untimed round: imports and first-use costs
        timed(run, rows)
    for _ in range(rounds):
        for label, run in contenders.items():
            rates[label].append(timed(run, rows))
    medians = {k: statistics.median(v) for k, v in rates.items()}
    print(f"\n{name}: {rows:,} rows, batch {batch}, one shuffled epoch from start, "
          f"median of {rounds} interleaved rounds after one untimed")
    for label, rate in medians.items():
        every = ", ".join(f"{r:,.0f}" for r in rates[label])
        print(f"  {label:<22} {rate:>12,.0f} samples/s   (rounds: {every})")
    ours = medians[next(iter(contenders))]
    best = max(medians["datasets w0"], medians["datasets w2"])
    print(f"  inputkit / best datasets DataLoader: {ours / best:.2f}x")


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--rows", type=int, default=50_000, help="numbers dataset rows")
    parser.add_argument("--width", type=int, default=32, help="float32 features per row")
    parser.add_argument("--images", type=int, default=1000, help="image dataset rows")
    parser.add_argument("--side", type=int, default=64, help="image side in pixels")
    parser.add_argument("--batch", type=int, default=256)
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--rounds", type=int, default=3)
    args = parser.parse_args(argv)
    try:
        import datasets
    except ImportError:
        print("tools/hf_compare.py needs `datasets` (pip install datasets)", file=sys.stderr)
        return 2
    datasets.disable_progress_bars()
    with tempfile.TemporaryDirectory(prefix="hf-compare-") as tmp:
        folder = Path(tmp)
        numbers = build_numbers(folder, args.rows, args.width)
        images = build_images(folder, args.images, args.side)
        compare(f"numbers (x: {args.width} float32, label)", numbers, args.rows, args.batch,
                args.rounds, None, args.threads)
        compare(f"images ({args.side}x{args.side} JPEG, label)", images, args.images, args.batch,
                args.rounds, args.side, args.threads)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())

"""source=hf against `datasets`' own torch path over the same saved dataset, in one run.

Builds datasets with `datasets` and ``save_to_disk`` (numbers: float32 feature rows and an int
label; images: same-size JPEGs and a label, at two sizes), then streams several shuffled epochs
through each contender, rounds interleaved so that the shared machine's load falls on every
contender alike:

- ``inputkit``: one ``Runner`` over ``source=hf`` (``workers.kind`` and count as given), batches
  as torch tensors (images uint8 3 x H x W, through a ``resize`` to their own size: no pixel
  changes), decoded by ``decode.backend=auto`` (OpenCV when installed) and, in a second
  row, by ``pillow``, the peers' decoder;
- ``datasets torch wN``: ``ds.with_format("torch")`` in a torch ``DataLoader`` (``batch_size``,
  ``shuffle=True``, ``num_workers`` N, ``persistent_workers`` when N > 0): the shape the
  ``datasets`` docs show; images decoded by Pillow, uint8 H x W x 3;
- ``datasets set_transform wN`` (images): ``ds.set_transform`` with Pillow's image made a
  tensor (``torch.from_numpy(np.array(img.convert("RGB")))``, as ``PILToTensor`` does) in the
  same DataLoader: the fastest shape we found a user would write (``with_format("torch")``
  converts through its formatter, and in the main process torch's intra-op threads fight
  for the cores).

Each contender streams ``--epochs`` epochs from one start (the Runner's or the DataLoader's
construction). Two figures per contender: the *first epoch*, timed from the start (what a
short job pays: imports are warm, start-up is not), and the *steady state*, the later epochs'
samples over their time (what a long job gets). Printed: the median of the rounds, the rounds
themselves, and inputkit's ratio to the best DataLoader on each figure. One untimed round
first (imports, first use). Run:
``python tools/hf_compare.py [--rows 50000] [--images 5000] [--big-images 1000] [--rounds 3]``.
"""

from __future__ import annotations

import argparse
import io
import os
import statistics
import sys
import tempfile
import time
from collections.abc import Callable, Iterable
from pathlib import Path

import numpy as np

Epochs = Callable[[int], Iterable[int]]  # epochs -> samples per epoch, as they end


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
    name = f"images{side}"
    ds.save_to_disk(str(folder / name))
    return folder / name


def inputkit_epochs(path: Path, batch: int, kind: str, count: int,
                    image_side: int | None, backend: str = "auto") -> Epochs:
    def run(epochs: int) -> Iterable[int]:
        from inputkit import Runner

        source: dict = {"_target_": "hf", "path": str(path)}
        if image_side is not None:
            source["transforms"] = [{"resize": [image_side, image_side]}]
            source["decode"] = {"backend": backend}
        cfg = {"source": source, "devices": "cpu", "batch_size": batch,
               "workers": {"kind": kind, "count": count},
               "epoch": {"shuffle": True, "seed": 0, "count": epochs}}
        with Runner(cfg) as runner:
            for _ in range(epochs):
                n = 0
                for b in runner.device(0):
                    n += len(b["label"])
                yield n
    return run


def _to_tensors(batch: dict) -> dict:
    import torch

    batch["img"] = [torch.from_numpy(np.array(img.convert("RGB"))) for img in batch["img"]]
    batch["label"] = torch.as_tensor(batch["label"])
    return batch


def datasets_epochs(path: Path, batch: int, workers: int, shape: str) -> Epochs:
    def run(epochs: int) -> Iterable[int]:
        import datasets
        import torch

        ds = datasets.load_from_disk(str(path))
        if shape == "torch":
            ds = ds.with_format("torch")
        else:
            ds.set_transform(_to_tensors)
        loader = torch.utils.data.DataLoader(ds, batch_size=batch, shuffle=True,
                                             num_workers=workers,
                                             persistent_workers=workers > 0)
        for _ in range(epochs):
            n = 0
            for b in loader:
                n += len(b["label"])
            yield n
    return run


def timed(run: Epochs, epochs: int, expected: int) -> tuple[float, float]:
    """(first epoch's samples/s from the start, later epochs' samples/s)."""
    start = time.perf_counter()
    ends = []
    for n in run(epochs):
        if n != expected:
            raise SystemExit(f"a contender delivered {n} samples of {expected} in an epoch")
        ends.append(time.perf_counter())
    first = expected / (ends[0] - start)
    steady = expected * (len(ends) - 1) / (ends[-1] - ends[0]) if len(ends) > 1 else first
    return first, steady


def compare(name: str, rows: int, epochs: int, rounds: int,
            contenders: dict[str, Epochs]) -> None:
    rates: dict[str, list[tuple[float, float]]] = {k: [] for k in contenders}
    for run in contenders.values():  # one untimed round: imports and first-use costs
        timed(run, 1, rows)
    for _ in range(rounds):
        for label, run in contenders.items():
            rates[label].append(timed(run, epochs, rows))
    load = os.getloadavg()[0]
    print(f"\n{name}: {rows:,} rows, {epochs} shuffled epochs per start, median of {rounds} "
          f"interleaved rounds after one untimed (load average {load:.1f})")
    print(f"  {'':<30} {'first epoch':>12} {'steady':>12}   (rounds: first / steady)")
    medians = {}
    for label, pairs in rates.items():
        first = statistics.median(p[0] for p in pairs)
        steady = statistics.median(p[1] for p in pairs)
        medians[label] = (first, steady)
        every = ", ".join(f"{a:,.0f} / {b:,.0f}" for a, b in pairs)
        print(f"  {label:<30} {first:>12,.0f} {steady:>12,.0f}   ({every})")
    ours = [v for k, v in medians.items() if k.startswith("inputkit")]
    peers = [v for k, v in medians.items() if not k.startswith("inputkit")]
    for what, i in (("first epoch", 0), ("steady", 1)):
        best_ours = max(v[i] for v in ours)
        best_peer = max(v[i] for v in peers)
        print(f"  {what}: best inputkit / best datasets DataLoader: {best_ours / best_peer:.2f}x")


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--rows", type=int, default=50_000, help="numbers dataset rows")
    parser.add_argument("--width", type=int, default=32, help="float32 features per row")
    parser.add_argument("--images", type=int, default=5000, help="small image dataset rows")
    parser.add_argument("--side", type=int, default=64, help="small image side in pixels")
    parser.add_argument("--big-images", type=int, default=1000,
                        help="large image dataset rows (0: skip)")
    parser.add_argument("--big-side", type=int, default=224, help="large image side in pixels")
    parser.add_argument("--batch", type=int, default=256)
    parser.add_argument("--threads", type=int, default=2, help="inputkit's thread workers")
    parser.add_argument("--processes", type=int, default=0,
                        help="also inputkit with this many process workers (0: not)")
    parser.add_argument("--epochs", type=int, default=3, help="epochs per start (>= 2)")
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--only", choices=["numbers", "images", "big"], action="append",
                        help="run only these datasets (repeatable)")
    args = parser.parse_args(argv)
    if args.epochs < 2:
        parser.error("--epochs: at least 2 (the first epoch, then the steady state)")
    try:
        import datasets
    except ImportError:
        print("tools/hf_compare.py needs `datasets` (pip install datasets)", file=sys.stderr)
        return 2
    datasets.disable_progress_bars()
    only = set(args.only or ["numbers", "images", "big"])

    def contenders(path: Path, side: int | None) -> dict[str, Epochs]:
        found = {f"inputkit threads x{args.threads}":
                 inputkit_epochs(path, args.batch, "thread", args.threads, side)}
        if side is not None:  # the peers' decoder, to tell the decoder's share from ours
            found[f"inputkit threads x{args.threads} pillow"] = inputkit_epochs(
                path, args.batch, "thread", args.threads, side, "pillow")
        if args.processes:
            found[f"inputkit processes x{args.processes}"] = inputkit_epochs(
                path, args.batch, "process", args.processes, side)
        shapes = ["torch"] if side is None else ["torch", "set_transform"]
        for shape in shapes:
            for workers in (0, 2):
                found[f"datasets {shape} w{workers}"] = datasets_epochs(path, args.batch,
                                                                        workers, shape)
        return found

    with tempfile.TemporaryDirectory(prefix="hf-compare-") as tmp:
        folder = Path(tmp)
        if "numbers" in only:
            numbers = build_numbers(folder, args.rows, args.width)
            compare(f"numbers (x: {args.width} float32, label)", args.rows, args.epochs,
                    args.rounds, contenders(numbers, None))
        sets = [("images", args.images, args.side), ("big", args.big_images, args.big_side)]
        for key, count, side in sets:
            if key in only and count:
                images = build_images(folder, count, side)
                compare(f"images ({side}x{side} JPEG, label)", count, args.epochs, args.rounds,
                        contenders(images, side))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())

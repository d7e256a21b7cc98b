"""What ``epoch.ordered`` costs the evaluation recipe: images/s and CPU per image, with and
without it, in alternating runs (so a machine's changing load falls on both alike).

    python tools/make_images.py /tmp/inputkit-images --count 500
    python tools/ordered_cost.py /tmp/inputkit-images/train --runs 5 --workers 2

Each run is one epoch of ``experiment=imagenet_val`` over the folder, timed from the
started runner to its last batch (device.normalize off: the input pipeline alone).
"""

from __future__ import annotations

import argparse
import statistics
import time

import inputkit


def one_run(folder: str, workers: int, ordered: bool) -> tuple[float, float]:
    """(images/s, CPU ms per image) of one epoch."""
    cfg = inputkit.compose(["experiment=imagenet_val", f"source.path={folder}", "devices=cpu",
                            f"workers.count={workers}", "device.normalize=null",
                            f"epoch.ordered={str(ordered).lower()}"])
    with inputkit.Runner(cfg) as runner:
        wall, cpu = time.perf_counter(), time.process_time()
        images = sum(len(batch["label"]) for batch in runner.device(0))
        wall, cpu = time.perf_counter() - wall, time.process_time() - cpu
    return images / wall, cpu / images * 1e3


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("folder", help="an ImageFolder tree (path/<class>/<file>)")
    parser.add_argument("--runs", type=int, default=5, help="runs of each setting")
    parser.add_argument("--workers", type=int, default=2, help="thread workers")
    args = parser.parse_args(argv)
    results: dict[bool, list[tuple[float, float]]] = {False: [], True: []}
    for _ in range(args.runs):
        for ordered in (False, True):
            results[ordered].append(one_run(args.folder, args.workers, ordered))
    for ordered, runs in results.items():
        rates = ", ".join(f"{rate:,.0f}" for rate, _ in runs)
        print(f"epoch.ordered={str(ordered).lower():5}  images/s median "
              f"{statistics.median(r for r, _ in runs):,.0f} (runs: {rates}), CPU ms/image "
              f"{statistics.median(c for _, c in runs):.2f}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())

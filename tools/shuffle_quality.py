"""How random is epoch.shuffle=shards next to a global shuffle? Prints the figures in
docs/storage.md (## Shuffling shards).

    python tools/shuffle_quality.py                      # 128 shards x 10,000, batch 256
    python tools/shuffle_quality.py --shards 1024 --per-shard 1250 --windows 8 32

For a dataset of ``shards`` contiguous shards (samples of shard s are indices s*per_shard ..),
one epoch's order per mode, and:

- reach: the share of the epoch over which one shard's samples are spread (its last position
  minus its first, over the epoch): how much of the epoch a sample could land in, given the
  shard order;
- neighbour distance: mean |position(i+1) - position(i)| for samples next to each other in
  storage, over the epoch length (a global shuffle: about 1/3);
- same-shard pairs: the chance that two samples of one batch come from the same shard
  (a global shuffle: about 1/shards);
- shards per batch and held: distinct shards in a batch, and the most shards a cache holds at
  once while ``span`` (a batch, times the reads in flight) positions are read
  (inputkit.pipeline.shuffle.shards_in_flight);
- labels per batch: distinct classes in a batch, and its largest class's share, for 1,000
  classes written in class order (ImageNet written class by class: the worst case) and for
  shards whose samples are already class-mixed;
- the seconds to draw one epoch's order.
"""

from __future__ import annotations

import argparse
import time

import numpy as np

from inputkit.pipeline.shuffle import ShardLayout, epoch_order, shards_in_flight


def batch_labels(labels: np.ndarray, batch: int) -> tuple[float, float]:
    """Mean distinct labels per whole batch, and the mean share of a batch's commonest label."""
    whole = len(labels) // batch * batch
    rows = np.sort(labels[:whole].reshape(-1, batch), axis=1)
    distinct = (np.diff(rows, axis=1) != 0).sum(axis=1) + 1
    # the longest run of one value in each sorted row: its commonest label
    starts = np.concatenate([np.ones((len(rows), 1), bool), np.diff(rows, axis=1) != 0], axis=1)
    run_id = np.cumsum(starts.ravel())
    counts = np.bincount(run_id)
    row_of_run = np.repeat(np.arange(len(rows)), starts.sum(axis=1))
    commonest = np.zeros(len(rows), dtype=np.int64)
    np.maximum.at(commonest, row_of_run, counts[1:])
    return float(distinct.mean()), float(commonest.mean() / batch)


def measure(mode: str, window: int, layout: ShardLayout, groups: np.ndarray,
            labels_sorted: np.ndarray, labels_mixed: np.ndarray, batch: int, span: int,
            seed: int) -> dict[str, float]:
    length = len(groups)
    started = time.perf_counter()
    order = epoch_order(length, seed, 0, mode, layout, window)
    seconds = time.perf_counter() - started
    position = np.empty(length, dtype=np.int64)
    position[order] = np.arange(length)
    spans = shards_in_flight(order, layout, span)
    reach = float(((spans.last - spans.first + 1) / length).mean())
    same = groups[1:] == groups[:-1]
    neighbour = float(np.abs(position[1:] - position[:-1])[same].mean() / length)
    whole = length // batch * batch
    in_batch = np.sort(groups[order][:whole].reshape(-1, batch), axis=1)
    # pairs of one batch in one shard: sum over shards of c*(c-1)/2, over batch*(batch-1)/2
    starts = np.concatenate([np.ones((len(in_batch), 1), bool), np.diff(in_batch, axis=1) != 0],
                            axis=1)
    run = np.bincount(np.cumsum(starts.ravel()))[1:]
    same_pairs = float((run * (run - 1) / 2).sum() / (len(in_batch) * batch * (batch - 1) / 2))
    shards_per_batch = float(starts.sum(axis=1).mean())
    sorted_distinct, sorted_top = batch_labels(labels_sorted[order], batch)
    mixed_distinct, mixed_top = batch_labels(labels_mixed[order], batch)
    return {"reach": reach, "neighbour": neighbour, "same_pairs": same_pairs,
            "shards_per_batch": shards_per_batch, "held": spans.max_in_flight,
            "sorted_distinct": sorted_distinct, "sorted_top": sorted_top,
            "mixed_distinct": mixed_distinct, "mixed_top": mixed_top, "seconds": seconds}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--shards", type=int, default=128)
    parser.add_argument("--per-shard", type=int, default=10_000)
    parser.add_argument("--classes", type=int, default=1000)
    parser.add_argument("--batch", type=int, default=256)
    parser.add_argument("--span", type=int, default=None,
                        help="positions read at once for 'held' (default: 4 batches)")
    parser.add_argument("--windows", type=int, nargs="+", default=[1, 8, 32])
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args()
    length = args.shards * args.per_shard
    span = args.span or 4 * args.batch
    groups = np.repeat(np.arange(args.shards, dtype=np.int64), args.per_shard)
    layout = ShardLayout.of(groups)
    labels_sorted = np.arange(length, dtype=np.int64) * args.classes // length
    labels_mixed = np.random.default_rng(args.seed + 1).permutation(labels_sorted)
    print(f"{args.shards} shards x {args.per_shard:,} samples ({length:,}), batch {args.batch}, "
          f"{args.classes} classes, held over {span} positions, seed {args.seed}")
    header = (f"{'order':<12} {'reach':>7} {'neighbour':>9} {'same-shard':>10} "
              f"{'shards/batch':>12} {'held':>5} {'labels/batch':>23} {'top label':>17} "
              f"{'draw s':>7}")
    print(header)
    print(f"{'':<12} {'':>7} {'distance':>9} {'pairs':>10} {'':>12} {'':>5} "
          f"{'class-sorted / mixed':>23} {'sorted / mixed':>17}")
    rows = [("global", 0)] + [("shards", w) for w in args.windows]
    for mode, window in rows:
        m = measure(mode, max(window, 1), layout, groups, labels_sorted, labels_mixed,
                    args.batch, span, args.seed)
        name = "global" if mode == "global" else f"shards w={window}"
        print(f"{name:<12} {m['reach']:>7.2%} {m['neighbour']:>9.4f} {m['same_pairs']:>10.2%} "
              f"{m['shards_per_batch']:>12.1f} {m['held']:>5} "
              f"{m['sorted_distinct']:>11.1f} / {m['mixed_distinct']:<9.1f} "
              f"{m['sorted_top']:>7.1%} / {m['mixed_top']:<7.1%} {m['seconds']:>7.3f}")


if __name__ == "__main__":
    main()

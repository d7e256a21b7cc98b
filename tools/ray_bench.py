"""Ray workers against local process workers with the same CPUs, side by side in one run.

    python tools/ray_bench.py                                   # W4 (CPU-bound), 3 rounds
    python tools/ray_bench.py --images /data/train              # and the ImageNet train recipe
    python tools/ray_bench.py --seconds 2 --rounds 1 --no-cluster   # a smoke test

It prints, for each workload, both loaders' steady-state rates (median of interleaved
rounds: the two take turns, so the machine's drift hits both) and their ratio (the goal:
Ray >= 0.8x processes); the Ray path's cost per chunk (a no-op read of a tiny chunk, one
worker each); the object store's bandwidth (large chunks, no compute); the time to the
first batch from a cold start (a private local Ray included); and a two-node run (a head
and a worker node on this machine, ray.cluster_utils.Cluster): every sample once, and
how many each node read.

Processes and actors get the same CPUs: ``--workers`` of each (default: the usable cores).
Every Ray run starts its own private local Ray, as ``workers=ray`` does by default (its
start-up is outside the steady state, and in the cold-start figure).
"""

from __future__ import annotations

import argparse
import os
import statistics
import sys
import time
from pathlib import Path
from typing import Any

import numpy as np
from rich.console import Console
from rich.table import Table

import inputkit
from inputkit.config.overrides import layered
from inputkit.config.schema import usable_cpus

TOOLS = Path(__file__).resolve().parent


def compose(overrides: list[str]) -> Any:
    return inputkit.compose(layered(["devices=cpu"], overrides))


def steady_rate(cfg: Any, seconds: float, warmup: float) -> tuple[float, float, float]:
    """(batches/s, samples/s, MB/s) after ``warmup`` seconds of batches."""
    with inputkit.Runner(cfg) as runner:
        stream = runner.device(0)
        next(stream)
        end_warmup = time.perf_counter() + warmup
        for _ in stream:
            if time.perf_counter() >= end_warmup:
                break
        batches = samples = nbytes = 0
        began = time.perf_counter()
        for batch in stream:
            batches += 1
            samples += len(next(iter(batch.values())))
            nbytes += sum(t.element_size() * t.nelement() for t in batch.values())
            if time.perf_counter() - began >= seconds:
                break
        spent = time.perf_counter() - began
    return batches / spent, samples / spent, nbytes / spent / 1e6


def first_batch(cfg: Any) -> float:
    """Seconds from Runner start to the first batch."""
    began = time.perf_counter()
    with inputkit.Runner(cfg) as runner:
        next(runner.device(0))
        return time.perf_counter() - began


def workloads(images: str | None, workers: int) -> dict[str, list[str]]:
    out = {"W4 CPU-bound (FFT per 3x64x64)": ["experiment=cpu", f"workers.count={workers}"]}
    if images:
        out["real images (imagenet_train)"] = ["experiment=imagenet_train", f"source.path={images}",
                                               f"workers.count={workers}"]
    return out


def pair(base: list[str], workers: int) -> dict[str, list[str]]:
    """Process workers, and Ray actors of one CPU each on a private local Ray of the cores."""
    return {"processes": [*base, "workers=processes"],
            "ray": [*base, "workers=ray", "workers.ray.cpus_per_actor=1",
                    f"workers.ray.num_cpus={max(usable_cpus(), workers)}"]}


def compare(console: Console, args: argparse.Namespace, workers: int) -> None:
    table = Table(title=f"steady state: {workers} processes vs {workers} Ray actors "
                        f"(median of {args.rounds} interleaved rounds of {args.seconds:g} s)")
    for column in ("workload", "loader", "batches/s", "samples/s", "MB/s", "rounds", "ray/processes"):
        table.add_column(column, justify="right" if column not in ("workload", "loader") else "left")
    for title, base in workloads(args.images, workers).items():
        shapes = pair(base, workers)
        readings: dict[str, list[tuple[float, float, float]]] = {k: [] for k in shapes}
        for _ in range(args.rounds):
            for name, overrides in shapes.items():
                readings[name].append(steady_rate(compose(overrides), args.seconds, args.warmup))
        medians = {k: tuple(statistics.median(r[i] for r in v) for i in range(3))
                   for k, v in readings.items()}
        ratio = medians["ray"][0] / medians["processes"][0]
        for name, (rate, samples, mb) in medians.items():
            spread = ", ".join(f"{r[0]:,.1f}" for r in readings[name])
            table.add_row(title, name, f"{rate:,.1f}", f"{samples:,.0f}", f"{mb:,.0f}", spread,
                          f"{ratio:.2f}x {'met' if ratio >= 0.8 else 'MISSED'}"
                          if name == "ray" else "")
    console.print(table)


def per_chunk(console: Console, args: argparse.Namespace, workers: int) -> None:
    """A no-op read of 64 tiny samples, one worker each: each loader's time per chunk."""
    base = ["source=tiny", "source.fields.x.shape=[4]", "source.chunk_size=64", "batch_size=64",
            "workers.count=1"]
    table = Table(title="per chunk (no-op read of 64 x 16 B, 1 worker)")
    for column in ("loader", "chunks/s", "us per chunk"):
        table.add_column(column, justify="right" if column != "loader" else "left")
    times = {}
    for name, overrides in pair(base, workers).items():
        rate = statistics.median(steady_rate(compose(overrides), args.seconds, args.warmup)[0]
                                 for _ in range(args.rounds))
        times[name] = 1e6 / rate
        table.add_row(name, f"{rate:,.0f}", f"{times[name]:,.0f}")
    table.add_row("Ray path's extra cost", "", f"{times['ray'] - times['processes']:,.0f}")
    console.print(table)


def bandwidth(console: Console, args: argparse.Namespace, workers: int) -> None:
    """W2's chunks (64 x 3x224x224 uint8, 9.6 MB), no compute: bytes/s delivered."""
    base = ["experiment=images", f"workers.count={workers}"]
    table = Table(title=f"bandwidth to the consumer (9.6 MB chunks, {workers} workers)")
    for column in ("loader", "MB/s", "path"):
        table.add_column(column, justify="right" if column == "MB/s" else "left")
    paths = {"processes": "shared-memory slots", "ray": "object store, zero-copy views"}
    for name, overrides in pair(base, workers).items():
        mb = statistics.median(steady_rate(compose(overrides), args.seconds, args.warmup)[2]
                               for _ in range(args.rounds))
        table.add_row(name, f"{mb:,.0f}", paths[name])
    console.print(table)


def cold_starts(console: Console, args: argparse.Namespace, workers: int) -> None:
    base = workloads(args.images, workers)
    table = Table(title="time to the first batch from a cold start (median of 3)")
    for column in ("workload", "processes", "ray (a private local Ray started)"):
        table.add_column(column, justify="right" if column != "workload" else "left")
    for title, overrides in base.items():
        shapes = pair(overrides, workers)
        firsts = {k: statistics.median(first_batch(compose(v)) for _ in range(3))
                  for k, v in shapes.items()}
        table.add_row(title, f"{firsts['processes']:.2f} s", f"{firsts['ray']:.2f} s")
    console.print(table)


def two_nodes(console: Console, ray: Any) -> None:
    """A head and a worker node (1 CPU each) on this machine; one finite epoch of W4."""
    from ray.cluster_utils import Cluster

    cluster = Cluster(initialize_head=True, head_node_args={"num_cpus": 1,
                                                            "include_dashboard": False})
    cluster.add_node(num_cpus=1)
    cluster.wait_for_nodes()
    ray.init(address=cluster.address, log_to_driver=False, configure_logging=False)
    try:
        length = 64 * 200
        cfg = compose(["experiment=cpu", "workers=ray", "workers.count=2",
                       f"+source.length={length}", "+source.id_field=id",
                       "workers.ray.cpus_per_actor=1"])
        began = time.perf_counter()
        with inputkit.Runner(cfg) as runner:
            ids = np.concatenate([b["id"].numpy() for b in runner.device(0)])
            stats = runner.stats().coordinators[0].workers.ray
        spent = time.perf_counter() - began
    finally:
        ray.shutdown()
        cluster.shutdown()
    table = Table(title=f"two nodes on this machine: one epoch of {length:,} W4 samples "
                        f"in {spent:.1f} s")
    for column in ("node", "actors", "samples read"):
        table.add_column(column)
    for node, actors in stats.nodes.items():
        table.add_row(node, str(len(actors)), f"{sum(a.samples for a in actors):,}")
    console.print(table)
    once = len(ids) == length and len(np.unique(ids)) == length
    console.print(f"every sample once: {once}; nodes busy: "
                  f"{sum(1 for a in stats.nodes.values() if sum(x.samples for x in a))} of 2")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--images", help="an ImageFolder tree for the real-image workload")
    parser.add_argument("--seconds", type=float, default=5.0)
    parser.add_argument("--warmup", type=float, default=1.0)
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--workers", type=int, default=usable_cpus())
    parser.add_argument("--no-cluster", action="store_true", help="skip the two-node run")
    args = parser.parse_args()
    try:
        import ray
    except ImportError:
        raise SystemExit("Ray is not installed: pip install 'inputkit-ml[ray]'") from None
    console = Console(width=int(os.environ.get("COLUMNS", "160")))
    workers = args.workers
    cold_starts(console, args, workers)
    compare(console, args, workers)
    per_chunk(console, args, workers)
    bandwidth(console, args, workers)
    if not args.no_cluster:
        two_nodes(console, ray)


if __name__ == "__main__":
    sys.path.insert(0, str(TOOLS))
    main()

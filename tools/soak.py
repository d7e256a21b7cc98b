"""Soak: stream for a long time while killing random workers and injecting read errors.

A process-worker pipeline (``workers.count`` x ``devices``) reads an indexable source
epoch after epoch (shuffled), with ``failures.on_worker_death=restart`` and
``failures.on_error=retry``. A killer thread SIGKILLs a random worker every
``--kill-every`` seconds and times how long the pool takes to notice (its restart
count goes up). The consumer checks every epoch: each sample exactly once, and every
payload row equal to its id. At the end it checks for leaks: child processes,
``/dev/shm`` segments and pipeline threads left behind.

    python tools/soak.py --minutes 10            # the goal: >= 100 kills, 0 lost, 0 duplicated, 0 leaks
    python tools/soak.py --minutes 1 --kill-every 0.5

Exit status 0 when every goal is met, 1 otherwise.
"""

from __future__ import annotations

import argparse
import itertools
import os
import random
import signal
import sys
import threading
import time
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import psutil
from rich.console import Console
from rich.table import Table

sys.path.insert(0, str(Path(__file__).resolve().parent))  # soak_source, for the workers too

import inputkit  # noqa: E402


@dataclass
class Tally:
    epochs: int = 0
    samples: int = 0
    batches: int = 0
    duplicated: int = 0
    lost: int = 0
    corrupt: int = 0
    kills: int = 0
    detect_s: list[float] = field(default_factory=list)
    undetected: int = 0


def segments() -> set[str]:
    return {n for n in os.listdir("/dev/shm") if n.startswith(f"inputkit_{os.getpid()}_")}


def children() -> set[int]:
    return {p.pid for p in psutil.Process().children(recursive=True)
            if p.status() != psutil.STATUS_ZOMBIE}


def pipeline_threads() -> list[str]:
    return [t.name for t in threading.enumerate() if t.name.startswith("inputkit-")]


def killer(runner: inputkit.Runner, tally: Tally, every: float, stop: threading.Event,
           rng: random.Random) -> None:
    """Kill a random worker every ``every`` seconds; time until its pool has restarted it."""
    while not stop.wait(every):
        pools = [c.workers for c in runner.coordinators()]
        pool = rng.choice(pools)
        before = pool.stats()
        if not before.pids:
            continue
        victim = rng.choice(before.pids)
        try:
            os.kill(victim, signal.SIGKILL)
        except ProcessLookupError:
            continue
        killed_at = time.monotonic()
        tally.kills += 1
        while time.monotonic() - killed_at < 5.0 and not stop.is_set():
            if pool.stats().restarts > before.restarts:
                tally.detect_s.append(time.monotonic() - killed_at)
                break
            time.sleep(0.002)
        else:
            if not stop.is_set():
                tally.undetected += 1


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--minutes", type=float, default=10.0)
    parser.add_argument("--kill-every", type=float, default=2.0, help="seconds between kills")
    parser.add_argument("--error-rate", type=float, default=0.02, help="share of reads that fail")
    parser.add_argument("--workers", type=int, default=3, help="worker processes per device")
    parser.add_argument("--devices", type=int, default=2, help="CPU 'devices' (one coordinator each)")
    parser.add_argument("--length", type=int, default=50_000, help="samples per epoch")
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args()
    console = Console()

    cfg = {
        "source": {"_target_": "soak_source.FaultySamples", "length": args.length,
                   "error_rate": args.error_rate, "seed": args.seed},
        "batch_size": 128,
        "devices": ["cpu"] * args.devices,
        "workers": {"kind": "process", "count": args.workers},
        "failures": {"on_worker_death": "restart", "max_restarts": None, "on_error": "retry",
                     "retries": 8, "retry_backoff": 0.001},
        "epoch": {"count": None, "shuffle": True, "seed": args.seed, "chunk_size": 100},
    }
    # Warm up once so the forkserver (a long-lived helper, not a leak) exists before "before".
    with inputkit.Runner(cfg) as warm:
        next(iter(warm.device(0)))
    before_children, before_segments = children(), segments()

    tally = Tally()
    stop = threading.Event()
    deadline = time.monotonic() + args.minutes * 60
    began = time.monotonic()
    with inputkit.Runner(cfg) as runner:
        thread = threading.Thread(target=killer, name="soak-killer", daemon=True,
                                  args=(runner, tally, args.kill_every, stop, random.Random(args.seed)))
        thread.start()
        streams = [runner.device(i) for i in range(args.devices)]
        last_print = began
        for _epoch in itertools.count():
            # Devices share the epoch's samples: check the union, one epoch at a time.
            seen_before = tally.samples
            seen = np.zeros(args.length, dtype=np.int32)
            for stream in streams:
                for batch in stream:
                    ids = batch["id"].numpy()
                    np.add.at(seen, ids, 1)
                    if not np.array_equal(batch["payload"][:, 0].numpy(), ids.astype(np.float32)):
                        tally.corrupt += 1
                    tally.batches += 1
                    tally.samples += len(ids)
            tally.duplicated += int((seen[seen > 1] - 1).sum())
            tally.lost += int((seen == 0).sum())
            tally.epochs += 1
            now = time.monotonic()
            if now - last_print > 15 or now > deadline:
                last_print = now
                console.print(f"{now - began:6.0f}s  epoch {tally.epochs}  samples {tally.samples:,} "
                              f"(+{tally.samples - seen_before:,})  kills {tally.kills}  "
                              f"lost {tally.lost}  duplicated {tally.duplicated}")
            if now > deadline:
                break
        stop.set()
        thread.join()
        stats = runner.stats()
    elapsed = time.monotonic() - began
    time.sleep(0.5)
    leaked_children = children() - before_children
    leaked_segments = segments() - before_segments
    leaked_threads = pipeline_threads()
    pools = [c.workers for c in stats.coordinators]

    table = Table(title=f"soak: {elapsed / 60:.1f} min, {args.workers} workers x {args.devices} devices")
    table.add_column("measure")
    table.add_column("value", justify="right")
    table.add_column("goal", justify="right")
    detect = tally.detect_s
    rows = [
        ("epochs checked", f"{tally.epochs}", ""),
        ("samples delivered", f"{tally.samples:,}", ""),
        ("throughput", f"{tally.samples / elapsed:,.0f} samples/s", ""),
        ("lost", f"{tally.lost}", "0"),
        ("duplicated", f"{tally.duplicated}", "0"),
        ("corrupt batches", f"{tally.corrupt}", "0"),
        ("workers killed", f"{tally.kills}", ">= 100 in 10 min"),
        ("restarts", f"{sum(p.restarts for p in pools)}", "= kills (no death restarted twice)"),
        ("kills not restarted within 5 s", f"{tally.undetected}", "0"),
        ("detection + restart, max", f"{max(detect) * 1000:.0f} ms" if detect else "-", "< 1000 ms"),
        ("detection + restart, median", f"{np.median(detect) * 1000:.0f} ms" if detect else "-", ""),
        ("read errors retried", f"{sum(p.retries for p in pools)}", ""),
        ("chunks skipped", f"{sum(p.skipped_chunks for p in pools)}", "0"),
        ("leaked processes", f"{len(leaked_children)}", "0"),
        ("leaked /dev/shm segments", f"{len(leaked_segments)}", "0"),
        ("leaked threads", f"{len(leaked_threads)}", "0"),
    ]
    for row in rows:
        table.add_row(*row)
    console.print(table)
    restarts = sum(p.restarts for p in pools)
    ok = (tally.lost == tally.duplicated == tally.corrupt == tally.undetected == 0
          and restarts == tally.kills
          and not leaked_children and not leaked_segments and not leaked_threads
          and (not detect or max(detect) < 1.0)
          and sum(p.skipped_chunks for p in pools) == 0)
    if args.minutes >= 10:
        ok = ok and tally.kills >= 100
    console.print("[green]every goal met[/]" if ok else "[red]a goal was missed[/]")
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main())

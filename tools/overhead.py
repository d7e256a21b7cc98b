"""Framework overhead: inputkit against a hand-rolled loop and the seed's design, in one run.

Three peers over the same source:

- the hand-rolled loop, what users write without a loader: one thread calling
  ``fetch`` and concatenating chunks into batches, then ``torch.from_numpy``.
  It has no queues, no threads and no checks, so on a cheap fetch it is the
  ceiling;
- a plain-Python port of the design inputkit started from (Caffe2's
  ``data_workers``): fetcher threads put chunks into a bounded ``queue.Queue``,
  one enqueuer thread builds exact batches (carrying leftovers) into a second
  bounded queue, and the consumer takes them. It has threads and queues like
  inputkit, and none of its checks, statistics or failure handling, so the
  ratio to it is what those cost;
- ``DataLoader(batch_size=None, num_workers=0)`` over the same fetch, the fastest
  DataLoader on a trivial fetch (where chunks are batches: it does not re-chunk).

inputkit runs inline (``workers.kind=inline``: the consumer's thread fetches) and with
1, 2 and 4 thread workers. "vs best peer" is against the faster of the seed's design
and DataLoader.

With a fetch that waits (latency), worker threads overlap the waits and both
threaded loaders should beat the loop by about the worker count.

    python tools/overhead.py                 # every workload, 3 s each
    python tools/overhead.py --seconds 5 --workload tiny

"CPU us/batch" is the process's CPU time over the measured span per batch (every thread):
what the hand-over costs in work, a steadier figure than the rate on a loaded machine.
"""

from __future__ import annotations

import argparse
import time
from collections.abc import Iterator
from typing import Any

import numpy as np
import torch
from rich.console import Console
from rich.table import Table

import inputkit
from inputkit.sources.synthetic import SyntheticSource

WORKLOADS: dict[str, dict[str, Any]] = {
    # 256 x 64 float32 per batch: per-batch framework cost dominates.
    "tiny": {"fields": {"x": {"shape": [64], "dtype": "float32"}}, "chunk_size": 64,
             "batch_size": 256},
    # W1 of inputkit compare: the same, with chunk = batch (no concatenation at all).
    "w1": {"fields": {"x": {"shape": [64], "dtype": "float32"}}, "chunk_size": 256,
           "batch_size": 256},
    # 64 x 3 x 224 x 224 uint8 per batch: moving bytes dominates.
    "images": {"fields": {"image": {"shape": [3, 224, 224], "dtype": "uint8"}},
               "chunk_size": 16, "batch_size": 64},
    # Every fetch waits 5 ms (a remote store): threads overlap the waits.
    "latency": {"fields": {"x": {"shape": [64], "dtype": "float32"}}, "chunk_size": 64,
                "batch_size": 256, "latency_ms": 5.0},
}


Run = tuple[int, float, float]  # batches, seconds, CPU seconds of the process over them


def hand_rolled(workload: dict[str, Any], seconds: float) -> Run:
    """Batches per second of a single-thread fetch + concatenate loop."""
    source = SyntheticSource(**{k: v for k, v in workload.items() if k != "batch_size"})
    batch_size = workload["batch_size"]
    pending: list[dict[str, np.ndarray]] = []
    count = 0
    batches = 0
    end = time.perf_counter() + seconds
    began, cpu0 = time.perf_counter(), time.process_time()
    while time.perf_counter() < end:
        chunk = source.fetch(0, batch_size)
        pending.append(chunk)
        count += len(next(iter(chunk.values())))
        while count >= batch_size:
            merged = {k: np.concatenate([c[k] for c in pending]) for k in chunk}
            batch = {k: torch.from_numpy(v[:batch_size]) for k, v in merged.items()}
            assert len(next(iter(batch.values()))) == batch_size
            rest = {k: v[batch_size:] for k, v in merged.items()}
            count -= batch_size
            pending = [rest] if count else []
            batches += 1
    return batches, time.perf_counter() - began, time.process_time() - cpu0


def seed_design(workload: dict[str, Any], seconds: float, workers: int) -> Run:
    """Batches per second of the seed's design in plain Python: fetcher threads ->
    queue.Queue -> one thread building exact batches -> queue.Queue -> the consumer."""
    import queue
    import threading

    source = SyntheticSource(**{k: v for k, v in workload.items() if k != "batch_size"})
    batch_size = workload["batch_size"]
    chunks: queue.Queue[dict[str, np.ndarray]] = queue.Queue(maxsize=16)
    batches_q: queue.Queue[dict[str, Any]] = queue.Queue(maxsize=4)
    stop = threading.Event()

    def put(into: queue.Queue[Any], item: Any) -> None:
        """Wait for room, giving up once stopped."""
        while not stop.is_set():
            try:
                into.put(item, timeout=0.1)
                return
            except queue.Full:
                continue

    def fetcher(worker_id: int) -> None:
        while not stop.is_set():
            put(chunks, source.fetch(worker_id, batch_size))

    def enqueuer() -> None:
        pending: list[dict[str, np.ndarray]] = []
        count = 0
        while not stop.is_set():
            try:
                chunk = chunks.get(timeout=0.1)
            except queue.Empty:
                continue
            pending.append(chunk)
            count += len(next(iter(chunk.values())))
            while count >= batch_size:
                if len(pending) == 1 and count == batch_size:
                    merged, rest = pending[0], None
                else:
                    joined = {k: np.concatenate([c[k] for c in pending]) for k in chunk}
                    merged = {k: v[:batch_size] for k, v in joined.items()}
                    rest = {k: v[batch_size:] for k, v in joined.items()}
                count -= batch_size
                pending = [rest] if count and rest is not None else []
                put(batches_q, {k: torch.from_numpy(v) for k, v in merged.items()})

    threads = [threading.Thread(target=fetcher, args=(i,), daemon=True) for i in range(workers)]
    threads.append(threading.Thread(target=enqueuer, daemon=True))
    for thread in threads:
        thread.start()
    batches_q.get()  # start-up is not what this measures
    batches = 0
    began, cpu0 = time.perf_counter(), time.process_time()
    end = began + seconds
    while True:
        batch = batches_q.get()
        assert len(next(iter(batch.values()))) == batch_size
        batches += 1
        if time.perf_counter() >= end:
            break
    elapsed, cpu = time.perf_counter() - began, time.process_time() - cpu0
    stop.set()
    for thread in threads:
        thread.join(timeout=2.0)
    return batches, elapsed, cpu


def dataloader_in_process(workload: dict[str, Any], seconds: float) -> Run | None:
    """Batches per second of ``DataLoader(batch_size=None, num_workers=0)`` over the same fetch
    (the fastest DataLoader on a trivial fetch); None where chunks are not batches (it would
    need re-chunking this loader does not do)."""
    from inputkit.peers.torch_loader import ChunkDataset

    if workload["chunk_size"] != workload["batch_size"]:
        return None
    loader = torch.utils.data.DataLoader(ChunkDataset(_source(workload), workload["batch_size"]),
                                         batch_size=None, num_workers=0)
    return drain(iter(loader), seconds)


def with_inputkit(workload: dict[str, Any], seconds: float, workers: int,
                  kind: str = "thread") -> Run:
    cfg = {"source": _source(workload), "batch_size": workload["batch_size"], "devices": "cpu",
           "workers": {"kind": kind, "count": workers}}
    with inputkit.Runner(cfg) as runner:
        return drain(runner.device(0), seconds)


def drain(stream: Iterator[Any], seconds: float) -> Run:
    """inputkit.peers.compare.drain (batches in ``seconds`` after the first), with the
    process's CPU seconds over the same span."""
    next(stream)
    count = 0
    began, cpu0 = time.perf_counter(), time.process_time()
    end = began + seconds
    for _ in stream:
        count += 1
        if time.perf_counter() >= end:
            break
    return count, time.perf_counter() - began, time.process_time() - cpu0


def _source(workload: dict[str, Any]) -> dict[str, Any]:
    return {"_target_": "inputkit.sources.synthetic.SyntheticSource",
            **{k: v for k, v in workload.items() if k != "batch_size"}}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--seconds", type=float, default=3.0)
    parser.add_argument("--workload", choices=sorted(WORKLOADS), action="append")
    args = parser.parse_args()
    console = Console(width=max(Console().width, 150))  # a pipe gets 80 columns: rows wrapped
    table = Table(title=f"inputkit vs a hand-rolled loop, the seed's design and DataLoader "
                        f"in-process ({args.seconds:g} s each)")
    for column in ["workload", "loader", "batches/s", "MB/s", "CPU us/batch", "vs loop",
                   "vs seed design", "vs best peer"]:
        table.add_column(column, justify="left" if column in ("workload", "loader") else "right")
    for name in args.workload or sorted(WORKLOADS):
        workload = WORKLOADS[name]
        sample_bytes = sum(int(np.prod(f["shape"])) * np.dtype(f["dtype"]).itemsize
                           for f in workload["fields"].values())
        batch_mb = sample_bytes * workload["batch_size"] / 1e6
        runs = [("hand-rolled loop", hand_rolled(workload, args.seconds))]
        for workers in (1, 2):
            runs.append((f"seed design, {workers} fetcher thread(s)",
                         seed_design(workload, args.seconds, workers)))
        loader = dataloader_in_process(workload, args.seconds)
        if loader is not None:
            runs.append(("DataLoader in-process (num_workers=0)", loader))
        runs.append(("inputkit, inline (workers.kind=inline)",
                     with_inputkit(workload, args.seconds, 1, kind="inline")))
        for workers in (1, 2, 4):
            runs.append((f"inputkit, {workers} thread(s)",
                         with_inputkit(workload, args.seconds, workers)))
        base = runs[0][1][0] / runs[0][1][1]
        seed = max(b / e for label, (b, e, _) in runs if label.startswith("seed design"))
        # The peers a user would pick instead: the seed's design and DataLoader (not the loop,
        # which has no checks, statistics or failure handling at all).
        best = max(b / e for label, (b, e, _) in runs if label.startswith(("seed", "DataLoader")))
        for label, (batches, elapsed, cpu) in runs:
            rate = batches / elapsed
            table.add_row(name, label, f"{rate:,.0f}", f"{rate * batch_mb:,.0f}",
                          f"{cpu / max(batches, 1) * 1e6:,.0f}",
                          f"{rate / base:.2f}x", f"{rate / seed:.2f}x", f"{rate / best:.2f}x")
        console.print(f"measured {name}", style="dim")
    console.print(table)


if __name__ == "__main__":
    main()

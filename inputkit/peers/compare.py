"""``inputkit compare``: the same fetch work through inputkit and its peers, in one run.

For each workload (a shipped experiment config) it measures, on this machine and
in this run: the physical limit of the work, inputkit with the workers the
config picks, and every peer in ``inputkit.peers.catalog.PEERS`` (DataLoader
in-process and with worker processes, torchdata.nodes with threads); the
fastest peer is the one inputkit is compared with.
Throughput is steady state (after the first batch, for ``seconds``); time to
first batch is counted from start; peak memory is the process tree's
proportional set size (PSS: shared memory counted once), sampled every 0.5 s
(reading PSS costs about 1 ms per process, which CPU-bound workloads would feel
at a faster rate).
"""

from __future__ import annotations

import os
import threading
import time
import warnings
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import psutil

import inputkit
from inputkit.config.overrides import layered
from inputkit.config.spec import InputSpec, RunSpec
from inputkit.peers.catalog import PEERS, Peer, best_peer
from inputkit.sources.loader import build_source


@dataclass(frozen=True)
class Workload:
    key: str
    experiment: str
    title: str
    limit_name: str
    # inputkit's other shapes worth measuring here, as overrides of the experiment: where the
    # fetch is cheap, the consumer's own thread (workers.kind=inline) may beat any pool.
    shapes: tuple[str, ...] = ()


WORKLOADS = {
    "w1": Workload("w1", "tiny", "W1 tiny samples (256 x 64 float32)", "fetch loop, 1 thread",
                   ("workers=inline",)),
    "w2": Workload("w2", "images", "W2 image-sized (64 x 3x224x224 uint8)", "memcpy bandwidth",
                   ("workers=inline",)),
    "w3": Workload("w3", "remote", "W3 latency-bound (20 ms per fetch)", "workers / latency"),
    "w4": Workload("w4", "cpu", "W4 CPU-bound (an FFT per 3x64x64 sample)", "cores x 1 worker"),
}


@dataclass
class Measurement:
    loader: str
    batches_per_s: float
    mb_per_s: float
    first_batch_s: float | None
    peak_mb: float | None
    notes: dict[str, Any] = field(default_factory=dict)
    # W5 counts samples (images) and the process tree's CPU time per sample.
    samples_per_s: float | None = None
    cpu_ms_per_sample: float | None = None


class TreeMemory:
    """Peak PSS of this process and all its descendants, sampled in a background thread."""

    def __init__(self, interval: float = 0.5) -> None:
        self.interval = interval
        self.peak = 0
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, name="compare-memory", daemon=True)

    def __enter__(self) -> TreeMemory:
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        self._thread.join(2.0)

    def sample(self) -> None:
        """Read the tree's PSS now (also called by a measurement right before it closes the
        loader, so a run shorter than ``interval`` has a peak too)."""
        me = psutil.Process()
        total = 0
        for proc in [me, *me.children(recursive=True)]:
            try:
                total += proc.memory_full_info().pss
            except (psutil.NoSuchProcess, psutil.AccessDenied, AttributeError):
                continue
        self.peak = max(self.peak, total)

    def _run(self) -> None:
        while not self._stop.wait(self.interval):
            self.sample()


def tree_cpu() -> dict[int, float]:
    """CPU seconds (user + system) used so far by this process and each live descendant."""
    me = psutil.Process()
    seconds = {}
    for proc in [me, *me.children(recursive=True)]:
        try:
            times = proc.cpu_times()
        except (psutil.NoSuchProcess, psutil.AccessDenied):
            continue
        seconds[proc.pid] = times.user + times.system
    return seconds


def cpu_since(before: dict[int, float]) -> float:
    """CPU seconds the process tree used since ``before`` (``tree_cpu()``): a process born
    since then counts from its start; one that ended in between is not counted."""
    return sum(now - before.get(pid, 0.0) for pid, now in tree_cpu().items())


def drain(stream: Iterator[Any], seconds: float) -> tuple[int, float]:
    """Batches taken in ``seconds`` of steady state (the clock starts after the first, so
    start-up is not what it measures); the benchmarks in tools/ time their loaders with it."""
    next(stream)
    count = 0
    began = time.perf_counter()
    end = began + seconds
    for _ in stream:
        count += 1
        if time.perf_counter() >= end:
            break
    return count, time.perf_counter() - began


def measure_inputkit(spec: RunSpec, seconds: float, batch_bytes: int) -> Measurement:
    with TreeMemory() as memory:
        began = time.perf_counter()
        with inputkit.Runner(spec) as runner:
            stream = runner.device(0)
            first = next(stream)
            first_s = time.perf_counter() - began
            del first
            count, elapsed = drain(stream, seconds)
    kind = spec.inputs[0].worker_kind
    label = "inputkit (inline: the consumer's thread fetches)" if kind == "inline" else \
        f"inputkit ({spec.inputs[0].worker_count} {kind} workers)"
    return Measurement(label, count / elapsed,
                       count * batch_bytes / elapsed / 1e6, first_s, memory.peak / 1e6)


def measure_peer(peer: Peer, spec: InputSpec, seconds: float, batch_bytes: int) -> Measurement:
    with TreeMemory() as memory, warnings.catch_warnings():
        # DataLoader warns when workers outnumber cores; W3 does that on purpose (it waits).
        warnings.filterwarnings("ignore", message="This DataLoader will create")
        began = time.perf_counter()
        stream, close = peer.open(spec)
        try:
            first = next(stream)
            first_s = time.perf_counter() - began
            del first
            count, elapsed = drain(stream, seconds)
        finally:
            close()
    return Measurement(peer.label(spec), count / elapsed, count * batch_bytes / elapsed / 1e6,
                       first_s, memory.peak / 1e6)


def _fetch_rate(spec: InputSpec, seconds: float) -> float:
    source = build_source(spec.source)
    warm_until = time.perf_counter() + min(0.3, seconds / 4)
    while time.perf_counter() < warm_until:  # page in the source's pools, warm caches
        source.fetch(0, spec.batch_size)
    count, began = 0, time.perf_counter()
    while time.perf_counter() - began < seconds:
        source.fetch(0, spec.batch_size)
        count += 1
    return count / (time.perf_counter() - began)


def _memcpy_rate(batch_bytes: int, seconds: float, threads: int) -> float:
    """Batch-sized copies per second, summed over ``threads`` copying at once (numpy's copy
    releases the GIL), i.e. the machine's memory bandwidth for producing batches."""
    counts = [0] * threads
    began = time.perf_counter()

    def copy(index: int) -> None:
        src = np.ones(batch_bytes, np.uint8)
        dst = np.empty_like(src)
        while time.perf_counter() - began < seconds:
            np.copyto(dst, src)
            counts[index] += 1

    workers = [threading.Thread(target=copy, args=(i,)) for i in range(threads)]
    for worker in workers:
        worker.start()
    for worker in workers:
        worker.join()
    return sum(counts) / (time.perf_counter() - began)


def physical_limit(workload: Workload, spec: InputSpec, batch_bytes: int,
                   seconds: float) -> tuple[float, str]:
    """Batches/s the work itself allows on this machine, and how it was obtained."""
    if workload.key == "w1":
        rate = _fetch_rate(spec, seconds)
        return rate, f"fetch alone in one thread: {rate:,.0f}/s"
    if workload.key == "w2":
        threads = min(spec.worker_count, os.cpu_count() or 1)
        rate = _memcpy_rate(batch_bytes, seconds, threads)
        return rate, (f"one memcpy per batch: {rate * batch_bytes / 1e9:.1f} GB/s "
                      f"({threads} threads copying)")
    if workload.key == "w3":
        latency = float(spec.source.get("latency_ms", 0.0)) / 1000.0
        chunk = spec.source.get("chunk_size") or spec.batch_size
        rate = spec.worker_count * chunk / spec.batch_size / latency
        return rate, f"{spec.worker_count} workers x {chunk} samples / {latency * 1000:g} ms"
    single = _fetch_rate(spec, seconds)
    cores = os.cpu_count() or 1
    return cores * single, f"{cores} cores x {single:,.1f}/s for one worker"


def sample_bytes(spec: InputSpec) -> int:
    source = build_source(spec.source)
    chunk = source.fetch(0, spec.batch_size)
    return int(sum(arr[:1].nbytes for arr in chunk.values()))


def _median(runs: list[Measurement]) -> Measurement:
    """The run with the median throughput (first-batch time and memory from the same run)."""
    ordered = sorted(runs, key=lambda m: m.batches_per_s)
    return ordered[len(ordered) // 2]


def run_workload(workload: Workload, overrides: list[str], seconds: float,
                 say: Callable[[str], None], repeats: int = 1) -> dict[str, Any]:
    """inputkit, every peer that can run here, and the limit, for one workload.

    The result's ``best_peer`` is the fastest of all peers (median runs), and ``skipped``
    lists ``(peer, reason)`` for the peers whose package is missing.
    """
    base = [f"experiment={workload.experiment}", "devices=cpu"]
    cfg = inputkit.compose(layered(base, overrides))
    spec = inputkit.load_spec(cfg)
    input_spec = spec.inputs[0]
    batch_bytes = sample_bytes(input_spec) * input_spec.batch_size
    reasons = {peer.key: peer.missing() for peer in PEERS}
    runnable = [peer for peer in PEERS if reasons[peer.key] is None]
    skipped = [(peer, reasons[peer.key]) for peer in PEERS if reasons[peer.key] is not None]
    say(f"{workload.title}: physical limit")
    limits = [physical_limit(workload, input_spec, batch_bytes, min(seconds, 2.0))]
    shapes = {"inputkit": spec, **{
        shape: inputkit.load_spec(inputkit.compose(layered(base, overrides, [shape])))
        for shape in workload.shapes}}
    runs: dict[str, list[Measurement]] = {**{k: [] for k in shapes}, **{p.key: [] for p in runnable}}
    for repeat in range(repeats):  # interleaved, so slow phases of a noisy machine hit all
        suffix = f" (run {repeat + 1} of {repeats})" if repeats > 1 else ""
        for key, shape_spec in shapes.items():
            say(f"{workload.title}: inputkit{'' if key == 'inputkit' else ', ' + key}{suffix}")
            runs[key].append(measure_inputkit(shape_spec, seconds, batch_bytes))
        for peer in runnable:
            say(f"{workload.title}: {peer.label(input_spec)}{suffix}")
            runs[peer.key].append(measure_peer(peer, input_spec, seconds, batch_bytes))
    rows = [_median(runs[key]) for key in shapes]
    ours = max(rows, key=lambda m: m.batches_per_s)  # inputkit's fastest shape here
    peers = [_median(runs[peer.key]) for peer in runnable]
    say(f"{workload.title}: physical limit, again")
    # Measured before and after the loaders; the higher one is kept, so noise on a shared
    # machine can only make the ratios to the limit look worse, not better.
    limits.append(physical_limit(workload, input_spec, batch_bytes, min(seconds, 2.0)))
    limit, how = max(limits)
    return {"workload": workload, "limit": limit, "limit_how": how, "inputkit": ours,
            "inputkit_rows": rows,
            "peers": peers, "best_peer": best_peer(peers), "skipped": skipped,
            "batch_bytes": batch_bytes, "workers": input_spec.worker_count, "spec": input_spec}


def first_batch_latency(overrides: list[str], workers: int = 4, devices: int = 2) -> float:
    """Seconds from Runner.start() to a first batch on every device, with process workers.

    torch is imported first: a training script has always done that already.
    """
    import torch  # noqa: F401

    cfg = inputkit.compose(layered(["experiment=cpu", f"workers.count={workers}",
                                    f"devices=[{','.join(['cpu'] * devices)}]"], overrides))
    began = time.perf_counter()
    with inputkit.Runner(cfg) as runner:
        for index in range(devices):
            next(runner.device(index))
        return time.perf_counter() - began

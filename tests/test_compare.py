"""``inputkit compare``: which peers run, which one is "best", and what the report prints.

Measurements are faked where the test is about selection or rendering, so nothing here
depends on how fast this machine is; the peers themselves are run for a few batches to
check that each one really delivers the workload's batches.
"""

from __future__ import annotations

import sys
import threading
import time

import psutil
import pytest
from rich.console import Console

import inputkit
from inputkit.cli.compare import print_report
from inputkit.peers import compare
from inputkit.peers.catalog import PEERS, Peer, best_peer

SHAPES = {"in-process", "threads", "processes"}


def _spec(workload: str, *overrides: str):
    cfg = inputkit.compose([f"experiment={compare.WORKLOADS[workload].experiment}", "devices=cpu",
                            *overrides])
    return inputkit.load_spec(cfg)


def test_the_peers_include_in_process_thread_and_process_shapes():
    """Every workload is compared with DataLoader(num_workers=0), a torchdata.nodes thread
    ParallelMapper and the worker-process DataLoaders: the in-process one is what wins
    on a cheap fetch, so leaving it out overstates inputkit."""
    keys = [peer.key for peer in PEERS]
    assert keys == ["dataloader-in-process", "dataloader-per-item", "dataloader-chunks",
                    "nodes-threads"]
    assert {peer.shape for peer in PEERS} == SHAPES
    for workload in compare.WORKLOADS:
        spec = _spec(workload).inputs[0]
        labels = [peer.label(spec) for peer in PEERS]
        n = spec.worker_count
        assert labels == ["DataLoader in-process (num_workers=0)",
                          f"DataLoader per-item ({n} procs)", f"DataLoader chunks ({n} procs)",
                          f"torchdata.nodes ({n} threads)"], workload


@pytest.mark.parametrize("peer", PEERS, ids=lambda p: p.key)
def test_each_peer_delivers_the_workloads_batches(peer: Peer):
    """Each peer runs the same fetch and yields whole batches of the workload's shape,
    and closing it leaves no thread of its own behind."""
    if reason := peer.missing():
        pytest.skip(reason)
    import torch

    spec = _spec("w1").inputs[0]
    before = set(threading.enumerate())
    before_pids = {child.pid for child in psutil.Process().children(recursive=True)}
    stream, close = peer.open(spec)
    try:
        for _ in range(3):
            batch = next(stream)
            assert isinstance(batch["x"], torch.Tensor)
            assert tuple(batch["x"].shape) == (spec.batch_size, 64)
    finally:
        close()
    deadline = time.monotonic() + 20  # multiprocessing's queue feeders end just after close
    while True:
        threads = [t for t in threading.enumerate() if t not in before and t.is_alive()]
        children = [child for child in psutil.Process().children(recursive=True)
                    if child.pid not in before_pids]
        if not (threads or children) or time.monotonic() > deadline:
            break
        time.sleep(0.05)
    assert not threads, f"{peer.key} left threads running: {threads}"
    assert not children, f"{peer.key} left processes running: {children}"


def _fake(monkeypatch: pytest.MonkeyPatch, rates: dict[str, float]) -> None:
    """Replace every measurement with fixed rates (batches/s) per peer key."""
    monkeypatch.setattr(compare, "physical_limit", lambda *a, **k: (1e6, "fake limit"))
    monkeypatch.setattr(compare, "sample_bytes", lambda spec: 256)

    def ours(spec, seconds, batch_bytes):
        return compare.Measurement("inputkit (fake)", rates["inputkit"], 1.0, 0.01, 100.0)

    def peer_run(peer, spec, seconds, batch_bytes):
        return compare.Measurement(peer.label(spec), rates[peer.key], 1.0, 0.01, 100.0)

    monkeypatch.setattr(compare, "measure_inputkit", ours)
    monkeypatch.setattr(compare, "measure_peer", peer_run)


@pytest.mark.parametrize("fastest", [peer.key for peer in PEERS])
def test_the_best_peer_is_the_fastest_of_all_peers(monkeypatch, fastest):
    """Whichever peer is fastest, in-process and thread peers included, is the one
    inputkit's ratio is taken against."""
    rates = {peer.key: 100.0 for peer in PEERS}
    rates[fastest] = 500.0
    rates["inputkit"] = 250.0
    _fake(monkeypatch, rates)
    monkeypatch.setattr("inputkit.peers.catalog.Peer.missing", lambda self: None)
    result = compare.run_workload(compare.WORKLOADS["w1"], [], 0.1, lambda text: None)
    spec = _spec("w1").inputs[0]
    best = next(p for p in PEERS if p.key == fastest)
    assert result["best_peer"].loader == best.label(spec)
    assert [m.loader for m in result["peers"]] == [p.label(spec) for p in PEERS]
    assert best_peer(result["peers"]).batches_per_s == 500.0

    console = Console(record=True, width=240)
    print_report(console, [result], None)
    text = console.export_text()
    assert "vs best peer" in text
    ours_row = next(line for line in text.splitlines() if "inputkit (fake)" in line)
    assert "0.50x" in ours_row, ours_row


def test_a_missing_torchdata_skips_its_peer_with_the_reason(monkeypatch):
    """Without torchdata the thread peer is skipped, the table says why and how to get it,
    and the best peer is taken among the peers that ran."""
    monkeypatch.setitem(sys.modules, "torchdata", None)  # import torchdata -> ImportError
    monkeypatch.setitem(sys.modules, "torchdata.nodes", None)
    nodes = next(p for p in PEERS if p.key == "nodes-threads")
    reason = nodes.missing()
    assert reason is not None and "pip install torchdata" in reason
    rates = {peer.key: 100.0 for peer in PEERS}
    rates["dataloader-in-process"] = 300.0
    rates["nodes-threads"] = 900.0  # would win, but cannot run here
    rates["inputkit"] = 150.0
    _fake(monkeypatch, rates)
    result = compare.run_workload(compare.WORKLOADS["w1"], [], 0.1, lambda text: None)
    assert result["best_peer"].loader == "DataLoader in-process (num_workers=0)"
    assert [(peer.key, why) for peer, why in result["skipped"]] == [("nodes-threads", reason)]

    console = Console(record=True, width=240)
    print_report(console, [result], None)
    text = console.export_text()
    assert "torchdata.nodes (2 threads): skipped" in text
    assert "pip install torchdata" in text


def test_the_report_prints_figures_not_internal_goals(monkeypatch):
    """The command's output has the table and the cold-start figure; the project's own
    goals (">= 10x", "MISSED") live in docs/benchmarks.md, not in a user's terminal."""
    _fake(monkeypatch, {**{peer.key: 100.0 for peer in PEERS}, "inputkit": 50.0})
    monkeypatch.setattr("inputkit.peers.catalog.Peer.missing", lambda self: None)
    result = compare.run_workload(compare.WORKLOADS["w4"], [], 0.1, lambda text: None)
    console = Console(record=True, width=240)
    print_report(console, [result], 0.412)
    text = console.export_text()
    assert "first batch on 2 devices x 4 process workers: 412 ms" in text
    for word in ("goal", "MISSED", ": met"):
        assert word not in text, word

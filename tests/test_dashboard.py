"""The dashboard, its warnings and the diagnosis, for pipelines in known states."""

from __future__ import annotations

import io
import json
import os
import re
import subprocess
import sys
import threading
import time
from pathlib import Path

from conftest import make_cfg
from rich.console import Console

from inputkit import Runner
from inputkit.dashboard import Dashboard, plain_lines, render
from inputkit.diagnosis import diagnose, live_warnings
from inputkit.metrics import MovingWindow

SYN = "inputkit.sources.synthetic.SyntheticSource"
TESTS = Path(__file__).resolve().parent


def recorded(renderable) -> str:
    console = Console(record=True, width=160, file=io.StringIO())
    console.print(renderable)
    return console.export_text()


def consume(runner, seconds: float, pause: float = 0.0) -> None:
    stream = runner.device(0)
    end = time.monotonic() + seconds
    while time.monotonic() < end:
        next(stream)
        if pause:
            time.sleep(pause)


def test_a_sleeping_consumer_fills_the_queues_and_raises_the_over_buffering_warning():
    cfg = make_cfg({"_target_": SYN, "fields": {"x": {"shape": [256]}}, "chunk_size": 64},
                   batch_size=64, queue={"capacity": 16, "batch_capacity": 4})
    window = MovingWindow(5.0)
    with Runner(cfg) as runner:
        window.update(runner.stats())
        consume(runner, 1.6, pause=0.2)  # the training step is the slow side
        view = window.update(runner.stats())
        warnings = live_warnings(view)
        text = recorded(render(view, warnings))
        final = runner.stats()
    assert any(w.startswith("over-buffering: input 'main' on 0:cpu: the chunk queue") for w in warnings)
    assert "queue.capacity=4 would keep the throughput and save" in " ".join(warnings)
    assert "warnings" in text and "over-buffering" in text
    assert "chunk queue" in text and "16/16" in text and re.search(r"full +(9\d|100)%", text)
    assert any("consumer-bound" in line for line in diagnose(final))


def test_a_slow_fetch_empties_the_queues_and_raises_the_starvation_warning():
    cfg = make_cfg({"_target_": SYN, "fields": {"x": {"shape": [16]}}, "chunk_size": 64,
                    "latency_ms": 40}, batch_size=64, workers={"count": 1})
    window = MovingWindow(5.0)
    with Runner(cfg) as runner:
        window.update(runner.stats())
        consume(runner, 1.5)  # a consumer that is always waiting
        view = window.update(runner.stats())
        warnings = live_warnings(view)
        text = recorded(render(view, warnings))
        final = runner.stats()
    starving = [w for w in warnings if w.startswith("starvation:")]
    assert starving and "add workers (workers.count=2)" in starving[0]
    assert "starvation" in text and "empty" in text
    [line] = diagnose(final)
    assert "fetch-bound" in line and "workers.count=2" in line


def test_cpu_bound_thread_workers_are_diagnosed_as_gil_bound():
    cfg = make_cfg({"_target_": SYN, "fields": {"x": {"shape": [4]}}, "chunk_size": 64,
                    "cpu_ms": 15}, batch_size=64, workers={"count": 2})
    with Runner(cfg) as runner:
        consume(runner, 1.5)
        final = runner.stats()
    [line] = diagnose(final)
    assert "GIL-bound" in line and "workers.kind=process" in line


def test_plain_lines_carry_the_same_numbers():
    cfg = make_cfg({"_target_": SYN, "fields": {"x": {"shape": [8]}}, "chunk_size": 32},
                   batch_size=32, devices=["cpu", "cpu"])
    window = MovingWindow(5.0)
    with Runner(cfg) as runner:
        window.update(runner.stats())
        consume(runner, 0.3)
        lines = plain_lines(window.update(runner.stats()))
    assert lines[0].startswith("t=") and "samples/s" in lines[0]
    assert lines[1].strip().startswith("main@0:cpu") and lines[2].strip().startswith("main@1:cpu")
    assert "chunk_queue=" in lines[1] and "workers fetching=" in lines[1]


def test_an_embedded_runner_gets_plain_dashboard_lines_off_a_terminal():
    out = io.StringIO()
    console = Console(file=out, width=200, force_terminal=False)
    cfg = make_cfg({"_target_": SYN, "fields": {"x": {"shape": [8]}}, "chunk_size": 32},
                   batch_size=32)
    with Runner(cfg) as runner, Dashboard(runner, console=console, refresh_hz=20,
                                          plain_every=0.2):
        consume(runner, 0.8)
    text = out.getvalue()
    assert "samples/s" in text and "main@0:cpu" in text
    assert not [t for t in threading.enumerate() if t.name == "inputkit-dashboard"]


def test_an_embedded_runner_gets_the_live_view_on_a_terminal():
    out = io.StringIO()
    console = Console(file=out, width=160, force_terminal=True)
    cfg = make_cfg({"_target_": SYN, "fields": {"x": {"shape": [8]}}, "chunk_size": 32},
                   batch_size=32)
    with Runner(cfg) as runner, Dashboard(runner, console=console, refresh_hz=10):
        consume(runner, 0.5)
    assert "chunk queue" in out.getvalue() and "batch queue" in out.getvalue()


def test_bench_json_lines_parse_and_the_summary_has_a_diagnosis(tmp_path):
    env = {**os.environ, "PYTHONPATH": str(TESTS), "COLUMNS": "200"}
    out = subprocess.run([sys.executable, "-m", "inputkit", "bench", "--json", "bench.seconds=2",
                          "devices=cpu"], cwd=tmp_path, env=env, capture_output=True, text=True,
                         timeout=120, stdin=subprocess.DEVNULL)
    assert out.returncode == 0, out.stderr
    assert "diagnosis:" in out.stdout
    [jsonl] = list((tmp_path / "outputs").rglob("metrics.jsonl"))
    records = [json.loads(line) for line in jsonl.read_text().splitlines()]
    assert len(records) >= 4
    assert {"t", "samples_per_s", "buffered_bytes", "coordinators", "warnings"} <= set(records[-1])
    assert records[-1]["coordinators"][0]["queues"][0]["stage"] == "chunk queue"
    summary = json.loads(next((tmp_path / "outputs").rglob("summary.json")).read_text())
    assert summary["diagnosis"] and summary["peak_buffered_bytes"] > 0
    assert list((tmp_path / "outputs").rglob("metrics.png"))


def test_a_sweep_marks_the_cheapest_point_and_plots_it(tmp_path):
    env = {**os.environ, "PYTHONPATH": str(TESTS), "COLUMNS": "220"}
    out = subprocess.run([sys.executable, "-m", "inputkit", "bench", "-m", "queue.capacity=2,16",
                          "bench.seconds=1.5", "devices=cpu", "bench.plot=false"], cwd=tmp_path,
                         env=env, capture_output=True, text=True, timeout=120,
                         stdin=subprocess.DEVNULL)
    assert out.returncode == 0, out.stderr
    table = out.stdout[out.stdout.index("inputkit bench sweep"):]
    assert "cheapest within 5% of best" in table and "peak buffered" in table
    assert list((tmp_path / "multirun").rglob("sweep.png"))


def test_the_bench_recorder_keeps_each_warning_once_per_queue_and_writes_json(tmp_path):
    from inputkit.cli.bench import Recorder

    cfg = make_cfg({"_target_": SYN, "fields": {"x": {"shape": [256]}}, "chunk_size": 64},
                   batch_size=64, queue={"capacity": 16, "batch_capacity": 4})
    recorder = Recorder(None, tmp_path / "metrics.jsonl")
    with Runner(cfg) as runner:
        recorder.update(runner.stats())
        stream = runner.device(0)
        for _ in range(4):
            next(stream)
            time.sleep(0.4)  # a slow consumer: both queues stay full
            recorder.update(runner.stats())
    recorder.close()
    seen = list(recorder.seen_warnings.values())
    assert sum("the chunk queue was full" in w for w in seen) == 1
    assert sum("the batch queue was full" in w for w in seen) == 1
    lines = (tmp_path / "metrics.jsonl").read_text().splitlines()
    assert len(lines) == 5 and json.loads(lines[-1])["warnings"]
    assert recorder.peak_buffered_bytes > 0

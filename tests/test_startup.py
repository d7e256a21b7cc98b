"""Start-up (issue item 14): the index is built once per command, slow steps are shown, and the
first batch is timed from the command's start with its steps beside it.

Indexing a 200,000-file folder used to happen in the CLI's config check (under
tracemalloc), again in the runner's probe, and again in every worker process, in
silence; then "first batch 110 ms" counted from after all of it.
"""

from __future__ import annotations

import io
import json
import os
import threading
import time
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from conftest import assert_nothing_leaked, children, consume_within, make_cfg, segments
from rich.console import Console
from startup_fakes import builds

import inputkit
from inputkit import Runner, startup
from inputkit.planning.footprint import object_bytes
from inputkit.planning.memory import plan_memory
from inputkit.startup import Prepared, StartupClock

TESTS = Path(__file__).resolve().parent


@pytest.fixture()
def no_leaks(caplog):
    before_segments, before_children = segments(), children()
    yield
    assert_nothing_leaked(before_segments, before_children, caplog)


def counted(folder: Path, cls: str = "CountedBuilds", **extra: Any) -> dict[str, Any]:
    return {"_target_": f"startup_fakes.{cls}", "builds": str(folder), "length": 64, **extra}


def drain(runner: Runner) -> list[int]:
    ids: list[int] = []

    def loop() -> None:
        for batch in runner.device(0):
            ids.extend(batch["id"].tolist())

    error = consume_within(runner, loop, 45)
    assert error is None, error
    return ids


@pytest.mark.timeout(120)
@pytest.mark.parametrize("cls, builds_in_workers", [("CountedBuilds", 0), ("BuiltPerProcess", 2)])
def test_process_workers_take_the_parents_index_when_the_source_ships_built(
        tmp_path, no_leaks, cls, builds_in_workers):
    """The probe's copy (built in this process) goes to both workers pickled; a source that
    does not say ship_built is built by each worker, as before."""
    cfg = make_cfg(counted(tmp_path, cls), batch_size=8,
                   workers={"kind": "process", "count": 2, "start_method": "forkserver"})
    runner = Runner(cfg).start()
    ids = drain(runner)
    assert sorted(ids) == list(range(64))
    pids = builds(str(tmp_path))
    assert pids.count(os.getpid()) == 1, "the parent builds it once (the probe's copy, reused)"
    assert len(pids) - 1 == builds_in_workers


def bench_cli(args: list[str]) -> Any:
    from typer.testing import CliRunner

    from inputkit.cli import app

    return CliRunner().invoke(app, ["bench", *args], env={"COLUMNS": "200"},
                              prog_name="inputkit")


@pytest.mark.timeout(120)
def test_bench_builds_the_index_once_and_times_the_first_batch_from_the_command_start(
        tmp_path, monkeypatch):
    """One build per `inputkit bench` (its config check's probe; the runner reuses it), and
    the summary's first batch is the whole wait, broken down into its steps."""
    monkeypatch.chdir(tmp_path)
    monkeypatch.syspath_prepend(str(TESTS))
    folder = tmp_path / "builds"
    folder.mkdir()
    called = time.monotonic()
    # workers.kind=auto (the default): its probe's copy is the memory probe's and the runner's
    result = bench_cli(["~source", "+source._target_=startup_fakes.CountedBuilds",
                        f"+source.builds={folder}", "+source.length=640", "devices=cpu",
                        "batch_size=16", "bench.steps=5", "bench.plot=false",
                        "workers.kind=auto"])
    took = time.monotonic() - called
    assert result.exit_code == 0, result.output
    assert "workers.kind=auto for input main: " in result.output, result.output
    assert len(builds(str(folder))) == 1, result.output
    line = next(x for x in result.output.splitlines()
                if x.startswith("first batch ") and "after the command started" in x)
    for step in ("config ", "index ", "probe/plan ", "devices ", "workers start ",
                 "first batch "):
        assert step in line.split(": ", 1)[1], line
    summary = json.loads(next(tmp_path.glob("outputs/*/*/summary.json")).read_text())
    record = summary["startup"]
    steps = {k: v for k, v in record.items() if k != "to_first_batch_s"}
    assert set(steps) >= {"config_s", "index_s", "probe_plan_s", "devices_s", "workers_start_s",
                          "first_batch_s"}
    assert all(v >= 0 for v in steps.values())
    total = record["to_first_batch_s"]
    assert sum(steps.values()) <= total + 0.01, "the steps are parts of the wait"
    assert f"first batch {total:.2f} s after the command started" in line
    assert total <= took, "in-process, the command starts when it is called, not the process"
    assert total > summary["stats"]["coordinators"][0]["first_batch_s"], \
        "counted from the command's start, not the pipeline's"


def test_off_a_terminal_the_first_slow_counted_step_is_the_one_line():
    out = io.StringIO()
    clock = StartupClock(console=Console(file=out, force_terminal=False, width=200), after_s=0.0)
    with clock.current(), startup.step("index", "building source"):
        startup.progress(120_000, "files", "indexing /data/train")
    with clock.current(), startup.step("index", "building source"):
        startup.progress(7, "files", "indexing /data/val")
    with clock.current(), startup.step("devices", "importing torch"):
        pass
    lines = out.getvalue().splitlines()
    assert len(lines) == 1, "off a terminal, one line in all"
    assert lines[0].startswith("start-up: indexing /data/train: 120,000 files in ")
    uncounted = io.StringIO()
    clock = StartupClock(console=Console(file=uncounted, force_terminal=False), after_s=0.0)
    with clock.current(), startup.step("devices", "importing torch"):
        pass
    assert uncounted.getvalue() == "", "a slow step that counts nothing prints nothing"
    quiet = io.StringIO()
    clock = StartupClock(console=Console(file=quiet, force_terminal=False), after_s=60.0)
    with clock.current(), startup.step("index", "building source"):
        startup.progress(5, "files")
    assert quiet.getvalue() == "", "a quick step shows nothing"


@pytest.mark.timeout(30)
def test_on_a_terminal_a_slow_step_is_a_status_line_that_goes_away():
    out = io.StringIO()
    clock = StartupClock(console=Console(file=out, force_terminal=True, width=120), after_s=0.0)
    with clock.current(), startup.step("index", "building source"):
        startup.progress(120_000, "files", "indexing /data/train")
        deadline = time.monotonic() + 20
        while "indexing /data/train ... 120,000 files" not in out.getvalue():
            assert time.monotonic() < deadline, f"no status line: {out.getvalue()!r}"
            time.sleep(0.01)
    assert not [t for t in threading.enumerate() if t.name == "inputkit-startup-status"]


def test_progress_and_steps_cost_nothing_without_a_clock():
    assert startup.current() is None
    with startup.step("index", "building"):
        startup.progress(3, "files")


def test_nested_steps_count_their_own_time(monkeypatch):
    """config: up to the first step; a step's own time leaves out the steps inside it."""
    now = [0.0]
    monkeypatch.setattr(startup.time, "monotonic", lambda: now[0])
    clock = StartupClock(began=-1.0)
    with clock.step("probe/plan", "planning"):
        now[0] = 1.0
        with clock.step("index", "building"):
            now[0] = 4.0
        now[0] = 4.5
    clock.record("first batch", 2.0)
    assert clock.seconds == {"config": 1.0, "probe/plan": 1.5, "index": 3.0, "first batch": 2.0}
    assert clock.breakdown(total=8.0) == ("config 1.00 s, index 3.00 s, probe/plan 1.50 s, "
                                          "first batch 2.00 s, other 500 ms")


class _Closable:
    def __init__(self) -> None:
        self.closed = False

    def close(self) -> None:
        self.closed = True


def test_prepared_sources_go_only_to_the_same_inputs():
    spec = inputkit.load_spec(make_cfg({"_target_": "fakes:fetch_ones"}))
    other = inputkit.load_spec(make_cfg({"_target_": "fakes:fetch_ones", "width": 9}))
    prepared, source = Prepared(), _Closable()
    prepared.keep(spec, {"main": "layout"}, {"main": source})
    assert prepared.take(other) == ({}, {}) and source.closed
    prepared, source = Prepared(), _Closable()
    prepared.keep(spec, {"main": "layout"}, {"main": source})
    assert prepared.take(spec) == ({"main": "layout"}, {"main": source}) and not source.closed
    prepared.close()
    assert not source.closed, "taken: the runner owns it now"


def test_the_probe_measures_the_built_index_without_tracing_its_construction(tmp_path):
    """The source's own bytes (its index) are in the plan, measured by walking it."""
    spec = inputkit.load_spec(make_cfg(counted(tmp_path, length=100_000), batch_size=8))
    layout = plan_memory(spec, devices=("cpu",)).layouts["main"]
    assert layout.source_bytes >= 100_000 * 8
    index = np.zeros(1000)
    assert object_bytes([index, index[10:], {"again": index}]) < 2 * index.nbytes
    path = tmp_path / "mapped.npy"
    np.save(path, np.zeros(100_000))
    assert object_bytes(np.load(path, mmap_mode="r")) < 10_000, "mapped files are page cache"

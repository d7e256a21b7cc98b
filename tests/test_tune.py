"""inputkit tune. The search logic runs on a deterministic stand-in for the trial runner
(``tune(measure=...)``: figures injected, a fake clock for the budget), so no test depends on
how loaded the machine is; one real end-to-end run asserts only facts that hold under any
load (a config that composes back and plans within memory.budget, a row per trial), and the
Ctrl-C tests check clean stops through the API and the real CLI."""

from __future__ import annotations

import _thread
import os
import signal
import subprocess
import sys
import threading
import time
from pathlib import Path

import pytest
from conftest import children
from rich.console import Console

import inputkit
from inputkit.config.spec import load_spec
from inputkit.planning.memory import plan_memory
from inputkit.tuning import Budget, Grids, Point, plain_config, tune
from inputkit.tuning.budget import format_duration, parse_duration
from inputkit.tuning.ledger import MEASURED, OVER_BUDGET, SKIPPED, Trial
from inputkit.tuning.report import WITHIN_NOISE, answer_lines, trials_table
from inputkit.tuning.search import choose
from inputkit.tuning.space import INLINE, default_counts, input_space
from inputkit.tuning.trial import MIN_SLICE_BATCHES, Measurement, Run, Settings, longer

TESTS = Path(__file__).resolve().parent
LATENCY = ["source=tiny", "source.latency_ms=20", "source.chunk_size=null", "devices=cpu"]
THREADS = {"kinds": ("thread",), "capacities": (16,), "batch_capacities": (4,)}
START = [*LATENCY, "workers.kind=thread", "queue.capacity=16", "queue.batch_capacity=4"]


class Clock:
    """A clock the test moves: the budget's bookkeeping without waiting."""

    def __init__(self) -> None:
        self.now = 0.0

    def __call__(self) -> float:
        return self.now


class Fake:
    """A deterministic trial runner: ``rate(count)`` gives batches/s (or ``(rate, spread)``),
    ``script`` per count a list of ``(rate, spread)`` readings taken in order (then ``rate``).
    Every call records the spec it got (what would have started) and, given a clock, moves it
    by what the runs would take: each run ``overhead + warmup + span``. ``worst``: every trial
    uses all the repeats and lengthening its settings allow, as a very noisy one would."""

    def __init__(self, rate, *, script=None, cpu=0.5, verdict=lambda count: "fetch-bound",
                 clock=None, overhead=0.5, worst=False):
        self.rate, self.script = rate, {k: list(v) for k, v in (script or {}).items()}
        self.cpu, self.verdict, self.clock = cpu, verdict, clock
        self.overhead, self.worst = overhead, worst
        self.specs, self.settings = [], []

    def __call__(self, spec, name, settings):
        self.specs.append(spec)
        self.settings.append(settings)
        count = spec.input(name).worker_count
        found = self.script[count].pop(0) if self.script.get(count) else self.rate(count)
        rate, spread = found if isinstance(found, tuple) else (found, 0.01)
        runs, length = (settings.repeats, settings.lengthen) if self.worst else (1, 1)
        if self.clock is not None:
            self.clock.now += runs * (self.overhead + settings.warmup + length * settings.seconds)
        run = Run(rate=rate, samples_per_s=rate * spec.input(name).batch_size,
                  slices=(rate * (1 - spread / 2), rate, rate, rate * (1 + spread / 2)),
                  slice_batches=100, verdict=self.verdict(count), verdict_text="",
                  span_s=length * settings.seconds, length=length, fetch_cpu_share=self.cpu)
        return Measurement((run,) * runs)

    def counts(self):
        return [s.inputs[0].worker_count for s in self.specs]


def _render(table) -> str:
    console = Console(record=True, width=220)
    console.print(table)
    return console.export_text()


# The search, on figures injected: the answers it must find.

def test_finds_the_worker_count_that_saturates_the_consumer(tmp_path):
    """Each worker gives 50 batches/s; the step takes at most 143: 4 workers feed it, 8 only
    cost memory. The search starts from 8, and says 8 were as fast, only dearer."""
    fake = Fake(lambda c: min(50.0 * c, 143.0),
                verdict=lambda c: "consumer-bound" if c >= 4 else "fetch-bound")
    cfg = inputkit.compose([*START, "workers.count=8"])
    result = tune(cfg, measure=fake, output_dir=tmp_path, grids=Grids(counts=(1, 2, 4, 8), **THREADS))
    [answer] = result.answers
    assert (answer.point.kind, answer.point.count) == ("thread", 4)
    assert fake.counts() == [8, 1, 2, 4, 4, 8]  # start, grow to the consumer, both finals
    assert answer.final.point.count == 4 and answer.final_start.point.count == 8
    assert answer.final.planned_bytes < answer.final_start.planned_bytes
    assert answer.start_within and answer.doubts == ()  # clean readings: nothing to doubt
    assert result.overrides() == ["workers.kind=thread", "workers.count=4", "queue.capacity=16",
                                  "queue.batch_capacity=4"]
    assert WITHIN_NOISE not in (tmp_path / "tuned" / "experiment" / "tuned.yaml").read_text()


def test_target_stops_at_the_cheapest_count_reaching_it():
    fake = Fake(lambda c: 50.0 * c)
    cfg = inputkit.compose([*START, "workers.count=1"])
    result = tune(cfg, measure=fake, target=120, grids=Grids(counts=(1, 2, 4, 8), **THREADS))
    [answer] = result.answers
    assert answer.point.count == 4 and answer.target_reached
    assert 8 not in fake.counts(), "reaching the target ends the climb"


def test_points_over_budget_are_planned_but_never_started():
    """64 KiB samples in 64-sample chunks (4 MiB each): each worker and queued chunk adds 4 MiB
    to the plan. The budget admits 2 workers and refuses 4; the search starts from 8."""
    overrides = ["source=tiny", "source.fields.x.shape=[16384]", "source.chunk_size=null",
                 "batch_size=64", "devices=cpu", "queue.capacity=2", "queue.batch_capacity=1",
                 "workers.kind=thread"]

    def planned(count: int) -> int:
        cfg = inputkit.compose([*overrides, f"workers.count={count}"])
        return plan_memory(load_spec(cfg), devices=("cpu",)).host_bytes

    budget = (planned(2) + planned(4)) // 2
    cfg = inputkit.compose([*overrides, "workers.count=8", f"memory.budget={budget}B",
                            "memory.allow_over_budget=true"])  # the tuner refuses all the same
    fake = Fake(lambda c: 50.0 * c)
    result = tune(cfg, measure=fake, grids=Grids(kinds=("thread",), counts=(1, 2, 4, 8),
                                                 capacities=(2,), batch_capacities=(1,)))
    assert sorted(set(fake.counts())) == [1, 2]
    for spec in fake.specs:
        assert not spec.allow_over_budget
        plan = plan_memory(spec, devices=("cpu",))
        assert plan.host_bytes <= budget and not plan.over_budget
    refused = [t for t in result.trials if t.status == OVER_BUDGET]
    assert {t.point.count for t in refused} == {4, 8}  # 8 is the start, 4 the growth it stopped
    assert all(t.planned_bytes > budget and t.runs == 0 for t in refused)
    assert result.answers[0].point.count == 2


# Item 13: a fetch that waits grows past twice the cores.

def test_a_fetch_that_waits_keeps_growing_past_twice_the_cores(monkeypatch):
    """The remote recipe on 2 cores: 20 ms per fetch, no CPU. Counts end at 4 by default; the
    trials' evidence says fetch waits (2% of its time on a CPU), so the climb doubles on while
    each doubling pays: 8, 16, 32, 64 (each twice as fast), 128 gains nothing."""
    monkeypatch.setattr("inputkit.config.schema.usable_cpus", lambda: 2)
    fake = Fake(lambda c: 49.5 * min(c, 64), cpu=0.02)
    result = tune(inputkit.compose([*START, "workers.count=1"]), measure=fake,
                  grids=Grids(**THREADS))
    grown = [t.point.count for t in result.trials if t.phase == "grow"]
    assert grown == [2, 4, 8, 16, 32, 64, 128]
    [answer] = result.answers
    assert answer.point.count == 64
    assert any("grew past the default counts (which end at 4" in n for n in answer.notes)
    assert any("grew past the default counts" in line for line in answer_lines(result))


@pytest.mark.parametrize(("cpu", "counts", "most"), [
    (0.9, None, 4),  # fetch computes: the default counts end at twice the cores
    (0.02, (1, 2, 4), 4),  # --counts given: the grid is the user's, not grown
])
def test_a_fetch_that_computes_or_a_given_grid_stops_at_the_grid_end(monkeypatch, cpu, counts,
                                                                    most):
    monkeypatch.setattr("inputkit.config.schema.usable_cpus", lambda: 2)
    fake = Fake(lambda c: 49.5 * c, cpu=cpu)
    result = tune(inputkit.compose([*START, "workers.count=1"]), measure=fake,
                  grids=Grids(counts=counts, **THREADS))
    assert max(fake.counts()) == most and result.answers[0].point.count == most
    assert result.answers[0].notes == ()


def test_growth_past_the_grid_stops_where_memory_budget_ends(monkeypatch):
    monkeypatch.setattr("inputkit.config.schema.usable_cpus", lambda: 2)
    overrides = [*LATENCY, "source.fields.x.shape=[16384]", "batch_size=64",
                 "queue.capacity=2", "queue.batch_capacity=1"]

    def planned(count: int) -> int:
        cfg = inputkit.compose([*overrides, f"workers.count={count}"])
        return plan_memory(load_spec(cfg), devices=("cpu",)).host_bytes

    budget = (planned(16) + planned(32)) // 2
    fake = Fake(lambda c: 49.5 * c, cpu=0.02)
    result = tune(inputkit.compose([*overrides, "workers.count=1", f"memory.budget={budget}B"]),
                  measure=fake, grids=Grids(kinds=("thread",), capacities=(2,),
                                            batch_capacities=(1,)))
    assert max(fake.counts()) == 16 and result.answers[0].point.count == 16
    assert [t.point.count for t in result.trials if t.status == OVER_BUDGET] == [32]


# Item 13: noise. Runs too short to count are lengthened and repeated; a ranking within the
# noise is measured again and, where it stays so, said.

def test_a_run_whose_slices_count_too_few_batches_is_lengthened():
    assert longer([2, 3, 2, 2], 1, 4)  # 2 batches a slice: double the span
    assert longer([2, 3, 2, 2, 3, 2, 2, 3], 2, 4)  # 5 a slice: again
    assert not longer([2] * 16, 4, 4), "never past lengthen x --seconds"
    assert not longer([MIN_SLICE_BATCHES] * 4, 1, 4)  # enough to count: as it is
    assert not longer([2, 3, 2, 2], 1, 1)


def test_a_run_too_short_to_count_is_repeated_not_excused(monkeypatch):
    """The images recipe with --seconds 1: about one batch a slice, slices spread 100%. The
    old rule excused any spread under 2 / (batches a slice) = 200%, so --repeats never ran."""
    from inputkit.tuning import trial

    coarse = [Run(rate=r, samples_per_s=64 * r, slices=(4.0, 4.0, 8.0, 4.0), slice_batches=1,
                  verdict="fetch-bound", verdict_text="", span_s=4.0, length=4)
              for r in (7.8, 4.8, 6.0)]
    monkeypatch.setattr(trial, "run_once", lambda *args: coarse.pop(0))
    found = trial.measure(None, "main", Settings(seconds=1.0, repeats=3))
    assert len(found.runs) == 3 and found.rate == 6.0 and found.too_short
    assert found.spread == pytest.approx((7.8 - 4.8) / 6.0)


def _noisy_vs_clean(spread):
    """x1 reads 80, x2 100 (their spread given): a 25% gain, 16% below the bar for x1."""
    fake = Fake(lambda c: (80.0 if c == 1 else 100.0, spread))
    result = tune(inputkit.compose([*START, "workers.count=2"]), measure=fake,
                  grids=Grids(counts=(1, 2), **THREADS))
    return result, fake


def test_a_step_within_the_noise_is_measured_again_and_the_doubt_is_said(tmp_path):
    result, fake = _noisy_vs_clean(0.4)
    phases = [(t.phase, t.point.count) for t in result.trials]
    assert ("recheck", 1) in phases and ("recheck", 2) in phases  # read again, back to back
    [answer] = result.answers
    assert answer.point.count == 2
    assert any("the climb of thread workers stopped at x2" in d and "(+25%)" in d
               for d in answer.doubts), answer.doubts
    assert any("thread x1 q16 b4 plans less and read 16% below the bar" in d
               for d in answer.doubts), answer.doubts
    lines = answer_lines(result)
    assert any(WITHIN_NOISE in line for line in lines)
    assert WITHIN_NOISE in _render(trials_table(result))
    from inputkit.tuning.report import write_config

    class NoLedger:
        devices = ("cpu",)

    text = write_config(result, tmp_path / "tuned", NoLedger()).read_text()
    assert "# Written by inputkit tune" in text and f"WARNING: {WITHIN_NOISE}" in text
    assert "#     - the climb of thread workers stopped at x2" in text

    clean, fake = _noisy_vs_clean(0.01)  # the same figures, read precisely: no doubt
    assert clean.answers[0].doubts == () and "recheck" not in {t.phase for t in clean.trials}
    assert not any(WITHIN_NOISE in line for line in answer_lines(clean))


def test_a_recheck_that_settles_the_gain_lets_the_climb_go_on():
    """x2 first reads 60 (40% spread) against x1's 50: within the noise, so both are read
    again; 50 and 100 this time: the medians (50, 80) gain 60%, more than the noise (50%)."""
    fake = Fake(lambda c: 50.0 * c, script={1: [(50.0, 0.4), (50.0, 0.04)],
                                            2: [(60.0, 0.4), (100.0, 0.04)]})
    result = tune(inputkit.compose([*START, "workers.count=1"]), measure=fake,
                  grids=Grids(counts=(1, 2, 4), **THREADS))
    assert [(t.phase, t.point.count) for t in result.trials if t.phase != "final"] == [
        ("start", 1), ("grow", 2), ("recheck", 1), ("recheck", 2), ("grow", 4)]
    assert result.answers[0].point.count == 4


# Item 13: --budget.

def test_parse_duration():
    assert [parse_duration(v) for v in ("5m", "90s", "1h30m", "2.5m", "45", 30)] == [
        300.0, 90.0, 5400.0, 150.0, 45.0, 30.0]
    for bad in ("5 parsecs", "", "m", "-5m", "0"):
        with pytest.raises(inputkit.ConfigError, match="--budget"):
            parse_duration(bad)
    assert format_duration(292) == "4m 52s" and format_duration(12.34) == "12.3 s"


def test_budget_bookkeeping_on_an_injected_clock():
    clock = Clock()
    settings = Settings(seconds=2.0, warmup=1.0, repeats=3, lengthen=4)
    budget = Budget(40.0, clock=clock)
    assert budget.run_cost(settings) == 4.0  # 1 s start-up guessed, 1 s warm-up, 2 s measured
    assert budget.allows(settings, reserve_runs=0) == settings  # 3 runs of 8 s spans fit
    # Two runs of 4 s spans, 1 s warm-up each, took 13 s: 1.5 s each to start and close.
    budget.record(wall_s=13.0, runs=2, measured_s=8.0, settings=settings)
    assert budget.run_cost(settings) == 4.5
    clock.now = 25.0  # 15 s left, 9 of them kept for two final runs: one plain run fits
    assert budget.allows(settings, reserve_runs=2) == Settings(seconds=2.0, warmup=1.0,
                                                               repeats=1, lengthen=1)
    clock.now = 28.0  # 3 s beyond what is kept: skipped
    assert budget.allows(settings, reserve_runs=2) is None and budget.exhausted
    clock.now = 0.0  # once skipped, always skipped: the table's rows stay in order
    assert budget.allows(settings, reserve_runs=0) is None
    clock.now = 28.0  # ... but the re-measurements draw on what was kept for them
    assert budget.allows(settings, reserve_runs=1, final=True) == Settings(
        seconds=2.0, warmup=1.0, repeats=1, lengthen=2)
    assert Budget(None).allows(settings, reserve_runs=5) == settings


def test_the_budget_costs_each_worker_kind_by_its_own_runs():
    """Process workers start slower than threads: a thread trial is costed by thread runs,
    the runs kept for the re-measurements by the dearest kind's."""
    settings = Settings(seconds=1.0, warmup=0.0)
    budget = Budget(60.0, clock=Clock())
    budget.record(wall_s=1.5, runs=1, measured_s=1.0, settings=settings, kind="thread")
    budget.record(wall_s=6.0, runs=1, measured_s=1.0, settings=settings, kind="process")
    assert budget.run_cost(settings, kind="thread") == 1.5
    assert budget.run_cost(settings, kind="process") == 6.0
    assert budget.run_cost(settings) == 6.0  # what is kept aside: the dearest
    assert budget.run_cost(settings, kind="inline") == pytest.approx(1.0 + 2.75)  # not run yet


def test_the_search_keeps_its_budget_and_lists_what_it_skipped(tmp_path):
    """Every trial as noisy as can be (all repeats, lengthened 4x): on the injected clock the
    search, re-measurements included, ends within its 60 s, and says what it left out."""
    clock = Clock()
    fake = Fake(lambda c: 50.0 * c, clock=clock, worst=True)
    result = tune(inputkit.compose([*START, "workers.count=1"]), seconds=1.0, warmup=0.5,
                  measure=fake, budget=Budget(60.0, clock=clock), output_dir=tmp_path,
                  grids=Grids(counts=(1, 2, 4, 8, 16, 32), **THREADS))
    assert clock.now <= 60.0
    skipped = result.skipped
    assert skipped and all(t.runs == 0 and t.planned_bytes is None for t in skipped)
    assert [t.status for t in result.trials[-2:]] == [MEASURED, MEASURED]  # kept aside: ran
    assert {t.phase for t in result.trials[-2:]} == {"final"}
    lines = answer_lines(result)
    assert any(line.startswith(f"skipped for lack of --budget ({len(skipped)} trial(s)")
               for line in lines), lines
    assert any("(--budget 1m 00s, spent 1m 00s)" in line for line in lines), lines
    assert "skipped for lack of --budget" in (tmp_path / "tuned" / "experiment" /
                                              "tuned.yaml").read_text()
    assert SKIPPED in _render(trials_table(result))
    assert all(s.lengthen in (1, 2, 4) and s.repeats >= 1 for s in fake.settings)


def test_a_budget_too_small_for_one_run_starts_nothing():
    fake = Fake(lambda c: 50.0 * c)
    result = tune(inputkit.compose([*START, "workers.count=1"]), measure=fake, budget=0.5,
                  grids=Grids(counts=(1, 2), **THREADS))
    assert fake.specs == [] and result.answers[0].chosen is None
    assert result.trials and all(t.status == SKIPPED for t in result.trials)


def test_the_cli_refuses_a_budget_it_cannot_read():
    from typer.testing import CliRunner

    from inputkit.cli import app

    out = CliRunner().invoke(app, ["tune", *LATENCY, "--budget", "5parsecs"],
                             env={"COLUMNS": "200"}, prog_name="inputkit")
    assert out.exit_code == 2, out.output
    assert "--budget" in out.output and "5parsecs" in out.output


# One real end-to-end run: only what holds however loaded the machine is.

@pytest.fixture(scope="module")
def real_run(tmp_path_factory):
    out = tmp_path_factory.mktemp("tuned")
    cfg = inputkit.compose([*LATENCY, "workers.count=2", "queue.capacity=4",
                            "queue.batch_capacity=2"])
    result = tune(cfg, seconds=0.4, warmup=0.1, repeats=2, budget="3m", output_dir=out,
                  grids=Grids(kinds=("thread",), counts=(1, 2, 4), capacities=(2, 4),
                              batch_capacities=(2,)))
    return result, out


@pytest.mark.timeout(240)
def test_a_real_run_writes_a_config_that_composes_back_and_plans_within_budget(real_run):
    result, out = real_run
    [answer] = result.answers
    assert answer.chosen is not None and answer.chosen.measured
    text = (out / "tuned" / "experiment" / "tuned.yaml").read_text()
    assert text.startswith("# @package _global_\n")
    assert "batches/s" in text and "memory plan" in text and "chunk queue" in text
    composed = inputkit.compose(["experiment=tuned"], config_dir=out / "tuned")
    assert plain_config(composed) == result.config  # every key: the start's and the tuned ones
    spec = load_spec(composed)
    assert not plan_memory(spec, devices=("cpu",)).over_budget
    tuned = spec.inputs[0]
    assert (tuned.worker_kind, tuned.worker_count, tuned.chunk_capacity) == (
        "thread", answer.point.count, answer.point.capacity)
    assert tuned.source["latency_ms"] == 20 and "image" not in tuned.source["fields"]
    # The doubts, when the machine was noisy enough to have any, are in the file too.
    assert (WITHIN_NOISE in text) == bool(answer.doubts)
    if plots_available():
        assert (out / "tune.png").stat().st_size > 10_000


@pytest.mark.timeout(240)
def test_a_real_run_lists_every_trial_once_in_the_table_and_the_csv(real_run):
    result, out = real_run
    rows = (out / "trials.csv").read_text().splitlines()
    assert rows[0].startswith("trial,input,phase,status") and len(rows) == len(result.trials) + 1
    assert [int(r.split(",")[0]) for r in rows[1:]] == [t.number for t in result.trials]
    shown = _render(trials_table(result))
    for t in result.trials:
        assert t.point.label() in shown
    searched = [t.point.key for t in result.trials if t.phase not in ("recheck", "final")]
    assert len(searched) == len(set(searched))  # no point searched twice but to recheck it
    assert {t.point.count for t in result.trials} <= {1, 2, 4}  # a given grid is not grown
    assert {t.phase for t in result.trials if t.phase != "start"} <= {
        "grow", "recheck", "final", "shrink queue.capacity", "shrink queue.batch_capacity"}
    measured = [t for t in result.trials if t.measured]
    assert all(t.seconds is not None and t.seconds >= 0.4 * 0.9 for t in measured)
    assert any("(--budget 3m 00s, spent" in line for line in answer_lines(result))


def plots_available() -> bool:
    from inputkit.observe import plots

    return plots.matplotlib_available()


def _trial(number, count, rate, planned, status=MEASURED, phase="grow"):
    return Trial(number, Point("main", "", "thread", count, 4, 2), phase, status, planned,
                 10**9, rate=rate if status == MEASURED else None)


def test_choose_takes_the_least_memory_within_5_percent_then_the_fewest_workers():
    trials = [_trial(1, 1, 50.0, 100), _trial(2, 2, 96.0, 300), _trial(3, 4, 100.0, 200),
              _trial(4, 8, 99.0, 200), _trial(5, 16, 0.0, 5, status=OVER_BUDGET),
              _trial(6, 2, 200.0, 1, phase="final")]  # re-measurements are not candidates
    chosen, reached = choose(trials, "main", None)
    assert chosen.number == 3 and reached
    chosen, reached = choose(trials, "main", 60.0)  # the cheapest reaching the target
    assert chosen.number == 3 and reached
    chosen, reached = choose(trials, "main", 1000.0)  # unreachable: within 5% of the best
    assert chosen.number == 3 and not reached


class _ScriptedLedger:
    """Readings per queue capacity, in order: what a noisy machine measured (no runs)."""

    def __init__(self, readings):
        self.readings = {cap: list(values) for cap, values in readings.items()}
        self.trials, self.seen = [], {}

    def evaluate(self, point, phase, fresh=False):
        if not fresh and point.key in self.seen:
            return self.seen[point.key]
        rate = self.readings[point.capacity].pop(0)
        trial = Trial(len(self.trials) + 1, point, phase, MEASURED, point.capacity * 10, 10**9,
                      rate=rate, spread=0.2, runs=1)
        self.trials.append(trial)
        self.seen[point.key] = trial
        return trial


def test_a_smaller_queue_within_the_noise_is_measured_again_beside_its_reference():
    from inputkit.tuning.search import _shrink

    space = input_space(load_spec(plain_config(inputkit.compose(["devices=cpu"]))).input("main"),
                        plain_config(inputkit.compose(["devices=cpu"])),
                        Grids(kinds=("thread",), capacities=(4, 8, 16), batch_capacities=(4,)).checked(),
                        cpus=2, on_cuda=False)
    start = Point("main", "", "thread", 2, 16, 4)
    # q16 read 100 once (lucky), q8 read 88: below 95% of it, within the 20% spread; again
    # beside q16 (90 this time), q8 reads 94: the medians 95 and 91 keep q8. q4 reads 50:
    # clearly slower, not measured again.
    ledger = _ScriptedLedger({16: [100.0, 90.0], 8: [88.0, 94.0], 4: [50.0]})
    ledger.evaluate(start, "grow")
    _shrink(space, ledger, start, None)
    assert [(t.point.capacity, t.phase, t.rate) for t in ledger.trials] == [
        (16, "grow", 100.0), (8, "shrink queue.capacity", 88.0), (16, "recheck", 90.0),
        (8, "recheck", 94.0), (4, "shrink queue.capacity", 50.0)]
    chosen, _ = choose(ledger.trials, "main", None)
    assert chosen.point.capacity == 8  # as fast within 5% (by medians), and less memory
    # A reference already read twice is not read again: only the next candidate is.
    ledger = _ScriptedLedger({16: [100.0, 90.0], 8: [88.0, 94.0], 4: [85.0, 92.0]})
    ledger.evaluate(start, "grow")
    _shrink(space, ledger, start, None)
    assert [(t.point.capacity, t.phase) for t in ledger.trials][-2:] == [
        (4, "shrink queue.capacity"), (4, "recheck")]
    assert choose(ledger.trials, "main", None)[0].point.capacity == 8  # q4's median: 88.5
    # Where the pair confirms the drop, the smaller queue is not kept.
    ledger = _ScriptedLedger({16: [100.0, 100.0], 8: [88.0, 80.0], 4: []})
    ledger.evaluate(start, "grow")
    _shrink(space, ledger, start, None)
    assert choose(ledger.trials, "main", None)[0].point.capacity == 16


def test_a_start_as_fast_side_by_side_and_cheaper_is_kept_over_a_lucky_pick():
    from types import SimpleNamespace

    from inputkit.tuning import InputAnswer, _remeasure

    start = Point("main", "", "process", 2, 16, 4)
    pick = Point("main", "", "process", 4, 16, 4)

    def trial(point, phase, rate):
        return Trial(0, point, phase, MEASURED, 100 * point.count, 10**9, rate=rate, runs=1)

    finals = {start.key: 213.0, pick.key: 215.0}  # W4 here: the pick's 260 was a lucky run
    ledger = SimpleNamespace(base=None, evaluate=lambda p, phase, fresh=False:
                             trial(p, phase, finals[p.key]))
    answer = InputAnswer("main", trial(pick, "grow", 260.0), trial(start, "start", 210.0))
    [kept] = _remeasure([answer], [SimpleNamespace(start=start)], ledger, {}, {})
    assert kept.kept_start and kept.chosen.point == start and kept.displaced.point == pick
    finals[start.key] = 180.0  # slower side by side: the pick stands
    [stands] = _remeasure([answer], [SimpleNamespace(start=start)], ledger, {}, {})
    assert not stands.kept_start and stands.chosen.point == pick and stands.start_within is False


def test_the_space_covers_every_worker_kind_and_named_inputs():
    cfg = plain_config(inputkit.compose(["devices=cpu", "experiment=train_val"]))
    spec = load_spec(cfg)
    space = input_space(spec.input("val"), cfg, Grids().checked(), cpus=2, on_cuda=False)
    assert space.kinds == ("thread", "process", "inline") and default_counts(2) == (1, 2, 4)
    assert space.start == Point("val", "inputs.val.", "thread", 1, 16, 4)
    for kind in space.kinds:
        assert space.counts_of(kind) == ((1,) if kind == INLINE else (1, 2, 4))
    point = Point("val", "inputs.val.", "process", 2, 8, 1)
    moved = load_spec(point.apply(cfg))
    val, train = moved.input("val"), moved.input("train")
    assert (val.worker_kind, val.worker_count, val.chunk_capacity, val.batch_capacity) == \
        ("process", 2, 8, 1)
    assert (train.worker_kind, train.worker_count) == (spec.input("train").worker_kind,
                                                       spec.input("train").worker_count)
    assert point.overrides()[0] == "inputs.val.workers.kind=process"
    with pytest.raises(inputkit.ConfigError, match="--kinds.*unknown worker kind"):
        Grids(kinds=("fibers",)).checked()
    on_ray = load_spec(inputkit.compose(["devices=cpu", "workers=ray"]))
    ray_space = input_space(on_ray.input("main"), cfg, Grids().checked(), cpus=2, on_cuda=False)
    assert ray_space.kinds == ("ray",), "a run on Ray is tuned on Ray; a local one never starts it"


@pytest.mark.timeout(120)
def test_ctrl_c_mid_trial_closes_the_runner_and_returns_the_best_so_far(tmp_path):
    """Process workers: Ctrl-C lands in the second trial; its workers are gone, no thread is
    left (the autouse fixture checks), and the first trial's point is written as the answer."""
    before = children()

    class Interrupting:
        def started(self, k, n, point, phase, best):
            if k == 2:
                threading.Timer(0.5, _thread.interrupt_main).start()  # the trial takes > 1 s

        def finished(self, trial, best):
            pass

    cfg = inputkit.compose([*LATENCY, "workers=processes", "workers.count=1"])
    result = tune(cfg, seconds=1.0, warmup=0.2, progress=Interrupting(), output_dir=tmp_path,
                  grids=Grids(kinds=("process",), counts=(1, 2), capacities=(4,),
                              batch_capacities=(2,)))
    assert result.interrupted
    assert [t.status for t in result.trials] == [MEASURED]  # the interrupted one is no row
    assert result.answers[0].chosen is result.trials[0] and result.answers[0].final is None
    assert (tmp_path / "tuned" / "experiment" / "tuned.yaml").exists()
    deadline = time.monotonic() + 10
    while children() - before and time.monotonic() < deadline:
        time.sleep(0.05)
    assert children() - before == set(), "worker processes left running"


@pytest.mark.timeout(120)
def test_ctrl_c_through_the_cli_writes_the_best_so_far_and_exits_130(tmp_path):
    env = {**os.environ, "PYTHONPATH": str(TESTS), "PYTHONUNBUFFERED": "1", "COLUMNS": "200"}
    env.pop("HYDRA_FULL_ERROR", None)
    proc = subprocess.Popen(
        [sys.executable, "-m", "inputkit", "tune", *LATENCY, "workers.kind=thread",
         "workers.count=4", "--kinds", "thread", "--counts",
         "1,2,4,8", "--capacities", "4", "--batch-capacities", "2", "--seconds", "1",
         "--warmup", "0.2"], cwd=tmp_path, env=env, stdout=subprocess.PIPE,
        stderr=subprocess.PIPE, text=True, stdin=subprocess.DEVNULL)
    try:
        assert proc.stdout is not None
        seen = []
        for line in proc.stdout:
            seen.append(line)
            if line.startswith("trial 2 of"):  # the first is reported, the second is running
                break
        assert any(line.startswith("trial 1 done") for line in seen), seen
        time.sleep(0.3)  # trial 2 takes over a second: the signal lands inside it
        proc.send_signal(signal.SIGINT)
        stdout, stderr = proc.communicate(timeout=30)
    finally:
        proc.kill()
    assert proc.returncode == 130, stderr
    assert "interrupted: the search was stopped cleanly" in stderr and "Traceback" not in stderr
    assert "not re-measured" in stdout
    [written] = list((tmp_path / "outputs").rglob("tuned/experiment/tuned.yaml"))
    spec = load_spec(inputkit.compose(["experiment=tuned"], config_dir=written.parent.parent))
    assert (spec.inputs[0].worker_kind, spec.inputs[0].worker_count) == ("thread", 4)


def test_an_auto_start_is_searched_from_the_kind_auto_chooses_never_as_auto():
    """workers.kind=auto is a choice made at start, not a point: the tuner starts from what
    auto chooses (a fetch that sleeps: thread workers, workers.count kept), says so, writes a
    concrete kind, and refuses --kinds auto."""
    fake = Fake(lambda c: 50.0 * c)
    result = tune(inputkit.compose([*LATENCY, "workers.kind=auto", "workers.count=2",
                                    "queue.capacity=16", "queue.batch_capacity=4"]),
                  measure=fake, grids=Grids(counts=(1, 2, 4), **THREADS))
    start = next(t for t in result.trials if t.phase == "start")
    assert (start.point.kind, start.point.count) == ("thread", 2)
    assert all(t.point.kind != "auto" for t in result.trials)
    assert result.start_config["workers"]["kind"] == "thread"
    assert any("workers.kind=auto for input main: thread x2" in n and "the search starts there"
               in n for n in result.answers[0].notes), result.answers[0].notes
    with pytest.raises(inputkit.ConfigError, match=r"--kinds.*auto is a choice made at start"):
        Grids(kinds=("auto",)).checked()

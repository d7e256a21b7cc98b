"""Every point the tuner considers goes through the ledger: planned first, then measured or not.

The memory planner sees each point before anything starts. A point over
``memory.budget`` (or ``memory.gpu_budget``) is recorded as *over budget* with its planned
bytes and is never started, whatever ``memory.allow_over_budget`` says: the tuner must not
be the thing that runs a machine out of memory. A point that fits is measured
(:mod:`inputkit.tuning.trial`) and recorded with its figures. The ledger also keeps the
count of measured trials against ``max_trials`` and the wall clock against ``--budget``
(:mod:`inputkit.tuning.budget`: a trial that does not fit is recorded as *skipped
(budget)* and not started), tells the progress display, and keeps the search's notes
(what it decided within the noise, where it grew past the grid) for the report.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, replace
from typing import Any, Protocol

from inputkit.config.spec import RunSpec, load_spec
from inputkit.errors import ConfigError
from inputkit.planning.memory import MemoryPlan, plan_memory
from inputkit.runner import Runner
from inputkit.tuning.budget import Budget
from inputkit.tuning.space import Point
from inputkit.tuning.trial import Measurement, Settings, measure

MEASURED, OVER_BUDGET, FAILED, INVALID = "measured", "over budget", "failed", "invalid"
SKIPPED = "skipped (budget)"  # not started: what is left of --budget does not cover one run

Measure = Callable[[RunSpec, str, Settings], Measurement]
"""What measures a trial: ``(spec, input name, settings) -> Measurement`` (the real one
runs the pipeline; a test or a simulation may pass its own to ``tune(measure=...)``)."""


@dataclass(frozen=True)
class Trial:
    """One row of the table: a point, why it was tried, and what happened."""

    number: int  # in the order considered, from 1
    point: Point
    phase: str  # start, grow, shrink queue.capacity, ..., final
    status: str  # measured, over budget (never started), failed, invalid (the config refused
    # it), skipped (budget): not started, the --budget left did not cover it
    planned_bytes: int | None  # the plan's host total for the whole config at this point
    budget_bytes: int | None
    rate: float | None = None  # batches/s, the slowest device's (median of the runs)
    samples_per_s: float | None = None
    spread: float | None = None  # relative range of the runs (or of one run's slices)
    runs: int = 0
    verdict: str | None = None  # the diagnosis of the measured span (its kind)
    verdict_text: str = ""
    error: str = ""
    gpu_bytes: int = 0  # planned GPU bytes per device
    seconds: float | None = None  # measured seconds per run (over --seconds where lengthened)
    too_short: bool = False  # a slice counted too few batches to rank 5% apart, even lengthened
    fetch_cpu_share: float | None = None  # CPU over wall time inside fetch (near 0: it waits)

    @property
    def measured(self) -> bool:
        return self.status == MEASURED and self.rate is not None


class Progress(Protocol):
    """What the CLI's display is told (the API's default tells nobody)."""

    def started(self, k: int, n: int, point: Point, phase: str, best: Trial | None) -> None: ...

    def finished(self, trial: Trial, best: Trial | None) -> None: ...


class NoProgress:
    """The API's default: progress goes nowhere."""

    def started(self, k: int, n: int, point: Point, phase: str, best: Trial | None) -> None:
        """Nobody to tell."""

    def finished(self, trial: Trial, best: Trial | None) -> None:
        """Nobody to tell."""


class TrialLimit(Exception):
    """``max_trials`` trials were measured: the search stops where it is."""


class Ledger:
    """Plans, gates, measures and records points of one starting config."""

    def __init__(self, base: dict[str, Any], devices: tuple[str, ...], settings: Settings,
                 max_trials: int | None, progress: Progress | None = None,
                 runner_class: type[Runner] = Runner, budget: Budget | None = None,
                 measure_fn: Measure | None = None) -> None:
        self._base = base  # the plain config points apply to (each input's answer goes in)
        self._version = 0
        self.devices = devices
        self.settings = settings
        self.max_trials = max_trials
        self.progress = progress or NoProgress()
        self.runner_class = runner_class
        self.trials: list[Trial] = []
        self.expected = 0  # the most trials the search may still measure (for "k of n")
        self.budget = budget or Budget(None)
        self.finals_left = 0  # re-measurements still to come: their runs are kept aside
        self.notes: list[tuple[str, str]] = []  # (input, text): steps the report should name
        self.doubts: list[tuple[str, str]] = []  # (input, text): decisions within the noise
        self._measure: Measure = measure_fn or (
            lambda spec, name, settings: measure(spec, name, settings, runner_class))
        self._seen: dict[tuple[Any, ...], Trial] = {}
        self._plans: dict[tuple[Any, ...], tuple[RunSpec, MemoryPlan]] = {}

    @property
    def base(self) -> dict[str, Any]:
        return self._base

    @base.setter
    def base(self, cfg: dict[str, Any]) -> None:
        self._base = cfg
        self._version += 1  # plans made against the old base no longer apply

    @property
    def measured_count(self) -> int:
        return sum(1 for t in self.trials if t.runs)

    def best(self, input_name: str) -> Trial | None:
        found = [t for t in self.trials if t.point.input == input_name and t.measured]
        return max(found, key=lambda t: t.rate or 0.0) if found else None

    def plan(self, point: Point) -> tuple[RunSpec, MemoryPlan]:
        """The point's checked spec and memory plan (the planner probes the source if needed)."""
        key = (point.key, self._version)
        if key not in self._plans:
            spec = load_spec(point.apply(self.base))
            self._plans[key] = (spec, plan_memory(spec, devices=self.devices))
        return self._plans[key]

    def note(self, input_name: str, text: str) -> None:
        if (input_name, text) not in self.notes:
            self.notes.append((input_name, text))

    def doubt(self, input_name: str, text: str) -> None:
        if (input_name, text) not in self.doubts:
            self.doubts.append((input_name, text))

    def fits(self, point: Point) -> bool | None:
        """Whether the point's plan fits the budget; None when the config refuses the point.
        Once --budget is spent nothing is planned any more (the point is skipped anyway)."""
        if self.budget.exhausted:
            return True
        try:
            return not self.plan(point)[1].over_budget
        except ConfigError:
            return None

    def evaluate(self, point: Point, phase: str, fresh: bool = False) -> Trial:
        """The point's trial: planned, then measured if it fits. A point seen before is not
        measured again unless ``fresh`` (the final re-measurement)."""
        if not fresh and point.key in self._seen:
            return self._seen[point.key]
        number = len(self.trials) + 1
        if phase == "final":
            self.finals_left = max(0, self.finals_left - 1)
        settings = self.budget.allows(self.settings, self.finals_left, final=phase == "final",
                                      kind=point.kind)
        if settings is None:  # not planned either: planning may probe the source
            return self._record(Trial(number, point, phase, SKIPPED, None, None,
                                      error="what is left of --budget does not cover a run"))
        try:
            spec, plan = self.plan(point)
        except ConfigError as exc:
            return self._record(Trial(number, point, phase, INVALID, None, None, error=str(exc)))
        figures = {"planned_bytes": plan.host_bytes, "budget_bytes": plan.budget_bytes,
                   "gpu_bytes": plan.gpu_bytes_per_device}
        if plan.over_budget:  # never started
            return self._record(Trial(number, point, phase, OVER_BUDGET, **figures))
        if phase != "final" and self.max_trials is not None and \
                self.measured_count >= self.max_trials:
            raise TrialLimit
        k = self.measured_count + 1
        n = max(k, min(self.expected, self.max_trials) if self.max_trials else self.expected)
        self.progress.started(k, n, point, phase, self.best(point.input))
        began = self.budget.clock()
        try:
            result: Measurement = self._measure(replace(spec, allow_over_budget=False),
                                                point.input, settings)
        except (KeyboardInterrupt, TrialLimit):
            raise
        except Exception as exc:  # noqa: BLE001 - a point that fails is a row, not the end
            text = (f"{type(exc).__name__}: {exc}".strip().splitlines() or ["?"])[0]
            return self._record(Trial(number, point, phase, FAILED, runs=1, error=text,
                                      **figures))
        self.budget.record(self.budget.clock() - began, len(result.runs),
                           sum(r.span_s for r in result.runs), settings, point.kind)
        median = result.verdict
        return self._record(Trial(number, point, phase, MEASURED, rate=result.rate,
                                  samples_per_s=result.samples_per_s, spread=result.spread,
                                  runs=len(result.runs), verdict=median.verdict,
                                  verdict_text=median.verdict_text, seconds=result.span_s,
                                  too_short=result.too_short,
                                  fetch_cpu_share=result.fetch_cpu_share, **figures))

    def _record(self, trial: Trial) -> Trial:
        self.trials.append(trial)
        if trial.phase != "final":
            self._seen[trial.point.key] = trial
        self.progress.finished(trial, self.best(trial.point.input))
        return trial


Evaluate = Callable[[Point, str], Trial]

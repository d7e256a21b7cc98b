"""One measured trial: a short run of the real pipeline through ``Runner``, warm-up excluded.

The trial starts a Runner for one input, lets one consumer thread per device take
batches as fast as they come (or through the caller's ``step``, a stand-in for the
training step), waits for every device's first batch, then ``warmup`` seconds, then
measures ``seconds`` in a few slices. The rate is the slowest device's batches per
second, which is what a data-parallel step gets.

A run too short to count (a slice with fewer than ``MIN_SLICE_BATCHES`` batches: one
batch more or less moves such a slice by over 10%) is lengthened while it runs, its span
doubled up to ``lengthen`` times ``seconds``. A run whose slices still disagree by more
than the noise is repeated (up to ``repeats`` runs) and the median kept; the spread of
several runs is that of their rates, each counted over its whole span. Counting coarse
slices no longer excuses a spread: a trial that stays too short is flagged
(``Measurement.too_short``) and the tuner says its ranking is within the noise.
"""

from __future__ import annotations

import statistics
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, replace
from typing import Any

from inputkit.config.spec import RunSpec
from inputkit.errors import InputkitError
from inputkit.observe.diagnosis import judge
from inputkit.observe.evidence import evidence
from inputkit.observe.stats import RunnerStats
from inputkit.runner import Runner

SLICES = 4  # measurement slices per run: their spread says how noisy the machine is
NOISY = 0.10  # a run whose slices spread more than this (relative range) is repeated
MIN_SLICE_BATCHES = 10  # fewer batches in a slice: the run is lengthened (too short to count)
FIRST_BATCH_S = 120.0  # the most a trial waits for every device's first batch
_TICK_S = 0.05

Step = Callable[[Any], None]


class TrialError(InputkitError):
    """A trial that could not be measured (no batch in time, a consumer that failed)."""


@dataclass(frozen=True)
class Settings:
    """How long each trial runs and how often a noisy one is repeated."""

    seconds: float = 2.0
    warmup: float = 1.0
    repeats: int = 3
    step: Step | None = None  # called on every batch, like a training step; None: free-running
    lengthen: int = 4  # a run too short to count may measure up to this many times seconds

    def check(self) -> Settings:
        from inputkit.errors import ConfigError

        if not self.seconds > 0:
            raise ConfigError("--seconds", f"must be positive, got {self.seconds:g}")
        if self.warmup < 0:
            raise ConfigError("--warmup", f"must be >= 0 seconds, got {self.warmup:g}")
        if self.repeats < 1:
            raise ConfigError("--repeats", f"must be at least 1, got {self.repeats}")
        if self.lengthen < 1:
            raise ConfigError("lengthen", f"must be at least 1, got {self.lengthen}")
        return self


@dataclass(frozen=True)
class Run:
    """One run of a trial: batches/s (slowest device), samples/s, per-slice rates, verdict."""

    rate: float
    samples_per_s: float
    slices: tuple[float, ...]
    slice_batches: int  # the fewest batches any slice counted (its counting noise: 1 / this)
    verdict: str | None  # inputkit.observe.diagnosis.judge over the measured span: its kind
    verdict_text: str
    span_s: float = 0.0  # the measured seconds (``seconds`` times ``length``)
    length: int = 1  # how many times ``seconds`` the run measured (lengthened: > 1)
    fetch_cpu_share: float | None = None  # CPU over wall time inside fetch (near 0: it waits)


@dataclass(frozen=True)
class Measurement:
    """A trial's runs, their median and spread."""

    runs: tuple[Run, ...]

    @property
    def rate(self) -> float:
        return statistics.median(r.rate for r in self.runs)

    @property
    def samples_per_s(self) -> float:
        return statistics.median(r.samples_per_s for r in self.runs)

    @property
    def spread(self) -> float:
        """Relative range (max - min) / median: of the runs' rates when there are several, of
        one run's slices otherwise."""
        rates = [r.rate for r in self.runs] if len(self.runs) > 1 else list(self.runs[0].slices)
        mid = statistics.median(rates)
        return (max(rates) - min(rates)) / mid if mid > 0 else 0.0

    @property
    def verdict(self) -> Run:
        """The run whose rate is the median's (or nearest it): its verdict is the trial's."""
        return min(self.runs, key=lambda r: abs(r.rate - self.rate))

    @property
    def span_s(self) -> float:
        """Measured seconds per run (the median; more than ``seconds`` where lengthened)."""
        return statistics.median(r.span_s for r in self.runs)

    @property
    def fetch_cpu_share(self) -> float | None:
        shares = [r.fetch_cpu_share for r in self.runs if r.fetch_cpu_share is not None]
        return statistics.median(shares) if shares else None

    @property
    def too_short(self) -> bool:
        """A run's slice counted too few batches to rank points 5% apart, even lengthened."""
        return min(r.slice_batches for r in self.runs) < MIN_SLICE_BATCHES

    def noisy(self) -> bool:
        """Spread beyond the noise. Coarse slices do not excuse it: a run too short to
        count reads as noisy, and another run (counted over its whole span) says more."""
        return self.spread > NOISY


class _Consumer:
    """Takes batches from one coordinator until stopped (epoch after epoch)."""

    def __init__(self, coordinator: Any, stop: threading.Event, step: Step | None) -> None:
        self.coordinator = coordinator
        self.stop = stop
        self.step = step
        self.error: BaseException | None = None
        self.thread = threading.Thread(target=self._run, daemon=True,
                                       name=f"inputkit-tune-{coordinator.spec.name}-"
                                            f"{coordinator.device_index}")

    def _run(self) -> None:
        try:
            while not self.coordinator.finished and not self.stop.is_set():
                for batch in self.coordinator:
                    if self.step is not None:
                        self.step(batch)
                    if self.stop.is_set():
                        return
        except BaseException as exc:  # noqa: BLE001 - re-raised in the trial's thread
            if not self.stop.is_set():
                self.error = exc


def measure(spec: RunSpec, input_name: str, settings: Settings,
            runner_class: type[Runner] = Runner) -> Measurement:
    """Run the trial once, then again while its spread is beyond the noise (up to repeats)."""
    runs = [run_once(spec, input_name, settings, runner_class)]
    while len(runs) < settings.repeats and Measurement(tuple(runs)).noisy():
        runs.append(run_once(spec, input_name, settings, runner_class))
    return Measurement(tuple(runs))


def run_once(spec: RunSpec, input_name: str, settings: Settings,
             runner_class: type[Runner] = Runner) -> Run:
    """One run: start, first batches, warm-up, ``SLICES`` measured slices, close. Ctrl-C
    (KeyboardInterrupt) closes the runner and joins the consumers before it goes on up."""
    stop = threading.Event()
    consumers: list[_Consumer] = []
    spec = replace(spec, metrics={})  # metrics.tensorboard/wandb watch a run, never a trial
    try:
        with runner_class(spec, inputs=[input_name]) as runner:
            try:  # the consumers are told to stop before the runner closes under them
                consumers = [_Consumer(c, stop, settings.step) for c in runner.coordinators()]
                for consumer in consumers:
                    consumer.thread.start()
                _wait_for_first_batches(runner, consumers)
                _wait(settings.warmup, consumers)
                snapshots = [runner.stats()]
                length = 1
                while True:  # SLICES x length intervals, each a SLICES-th of seconds
                    while len(snapshots) <= SLICES * length:
                        _wait(settings.seconds / SLICES, consumers)
                        snapshots.append(runner.stats())
                    if not longer(_interval_batches(snapshots), length, settings.lengthen):
                        break
                    length *= 2
            finally:
                stop.set()
    finally:
        stop.set()
        for consumer in consumers:
            consumer.thread.join(timeout=5.0)
    _raise_consumer_error(consumers)
    return _run_from(snapshots[::length], length)


def longer(interval_batches: list[int], length: int, most: int) -> bool:
    """Whether a run of ``length`` times seconds, which counted ``interval_batches`` (the
    slowest device's batches per SLICES-th of seconds), should double its span: one of its
    SLICES slices (``length`` intervals each) counted fewer than MIN_SLICE_BATCHES batches,
    and doubling stays within ``most`` times seconds."""
    if length * 2 > most:
        return False
    slices = [sum(interval_batches[i:i + length]) for i in range(0, len(interval_batches), length)]
    return bool(slices) and min(slices) < MIN_SLICE_BATCHES


def _interval_batches(snapshots: list[RunnerStats]) -> list[int]:
    return [_slowest(before, now)[1] for before, now in zip(snapshots, snapshots[1:], strict=False)]


def _raise_consumer_error(consumers: list[_Consumer]) -> None:
    for consumer in consumers:
        if consumer.error is not None:
            raise consumer.error


def _wait_for_first_batches(runner: Runner, consumers: list[_Consumer]) -> None:
    deadline = time.monotonic() + FIRST_BATCH_S
    while not all(c.batches for c in runner.stats().coordinators):
        _raise_consumer_error(consumers)
        if not any(c.thread.is_alive() for c in consumers):
            raise TrialError("the input ended before every device had a batch (a finite "
                             "source: use epoch.count=null to tune it)")
        if time.monotonic() > deadline:
            raise TrialError(f"no batch on every device within {FIRST_BATCH_S:g} s")
        time.sleep(_TICK_S)


def _wait(seconds: float, consumers: list[_Consumer]) -> None:
    """Sleep in short ticks (Ctrl-C lands promptly); stop early if every consumer ended."""
    end = time.monotonic() + seconds
    while (left := end - time.monotonic()) > 0:
        _raise_consumer_error(consumers)
        if not any(c.thread.is_alive() for c in consumers):
            return
        time.sleep(min(_TICK_S, left))


def _run_from(snapshots: list[RunnerStats], length: int = 1) -> Run:
    """Rates between consecutive snapshots (slices) and over the whole span."""
    first, last = snapshots[0], snapshots[-1]
    slices, counted = [], []
    for before, now in zip(snapshots, snapshots[1:], strict=False):
        rate, batches = _slowest(before, now)
        slices.append(rate)
        counted.append(batches)
    rate, _ = _slowest(first, last)
    span = last.elapsed_s - first.elapsed_s
    samples = (last.samples - first.samples) / span if span > 0 else 0.0
    seen = [evidence(now, before, over="the trial")
            for before, now in zip(first.coordinators, last.coordinators, strict=True)]
    verdicts = [judge(e) for e in seen]
    found = next((v for v in verdicts if v is not None and v.starved), None) or \
        next((v for v in verdicts if v is not None), None)
    # The input waits only where every device's fetch waits: the one that computes the most.
    shares = [e.fetch_cpu_share for e in seen if e.chunks > 0]
    return Run(rate=rate, samples_per_s=samples, slices=tuple(slices),
               slice_batches=min(counted) if counted else 0,
               verdict=found.kind if found else None, verdict_text=found.text if found else "",
               span_s=span, length=length, fetch_cpu_share=max(shares) if shares else None)


def _slowest(before: RunnerStats, now: RunnerStats) -> tuple[float, int]:
    """The slowest device's batches/s between two snapshots, and its batch count."""
    span = now.elapsed_s - before.elapsed_s
    if span <= 0:
        return 0.0, 0
    counts = [n.batches - b.batches for b, n in zip(before.coordinators, now.coordinators,
                                                     strict=True)]
    fewest = min(counts) if counts else 0
    return fewest / span, fewest

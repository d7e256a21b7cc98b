"""The strategy: coordinate descent on one input, guided by the noise and the diagnosis.

1. **Grow** the worker count, per worker kind, with generous queues (the largest grid
   capacities that fit the budget): 1, 2, 4, ... while each step adds more throughput than
   the noise (5%, or the trials' measured spread if larger). A step whose gain is within
   a noise larger than 5% is measured again (both points, back to back) and judged on the
   medians; a climb that still stops within the noise is one of the answer's doubts. It
   stops early when the next step cannot help: the count is over budget (more workers
   only hold more), ``--target`` is reached (more workers only cost memory), or the
   diagnosis of the trial says more workers would not help (the consumer sets the pace;
   or, after a step that gained less than half, the CPUs, the GIL, the batcher or the
   hand-over from processes). The default counts end at twice the cores, which is right
   for a fetch that computes; for a fetch that waits (on a CPU less than
   ``FETCH_WAITS`` of its time, from the trial's evidence) the climb goes on doubling
   past them while each doubling gains at least half (up to ``WAITING_MAX`` workers, and
   as far as memory.budget allows).
2. **Shrink** the queues of each kind that came within 5% of the best (or reached the
   target), from its cheapest such count: the chunk queue capacity down the grid while
   throughput stays within 5% of the best measured (or at the target), then the batch
   queue, then ``device.prefetch`` on CUDA. A smaller queue that reads below that but
   within the run-to-run noise (20% here, or the trials' spread if larger) is measured
   again right after the point it shrinks from (if that was read only once), and
   judged on the medians of both points' readings: on a noisy machine (10-30% between
   runs here) one reading cannot tell 5% apart.

A point measured more than once counts the median of its readings, in the search and in
the answer, so one lucky reading neither sets the bar nor wins.

Throughput rises with workers until one resource saturates and falls with queue size
only once a queue is too short to absorb jitter, so each dimension has one knee, and
walking each to its knee costs a handful of trials instead of the product of the
grids. The per-stage diagnosis is used where it is reliable: to stop climbing early.

The answer (:func:`choose`): the least planned memory, then the fewest workers, among
the points within 5% of the best measured; with a target, the cheapest point that
reaches it.
"""

from __future__ import annotations

import statistics
from dataclasses import replace
from typing import Any

from inputkit.observe.diagnosis import FETCH_WAITS
from inputkit.tuning.ledger import OVER_BUDGET, Ledger, Trial
from inputkit.tuning.noise import TOLERANCE, pair_noise, search_readings
from inputkit.tuning.space import INLINE, InputSpace, Point

WAITING_MAX = 1024  # the most workers a climb past the default counts goes to
# Verdicts after which a larger worker count is not tried (the next step is not worth it):
CONSUMER_SETS_PACE = "consumer-bound"
SATURATED = ("CPU-bound", "GIL-bound", "batcher-bound", "copy-bound", "transport-bound",
             "hand-over-bound")
SMALL_GAIN = 0.5  # ... for SATURATED, only after a step that gained less than this
# How far apart two runs of one point read here (10-30%, up to 50% on W2): a shrunk point
# below the bar by less than this (or its trials' spread, if larger) is measured again.
# A run's own spread (its slices) understates it: the slices share the run's luck.
RUN_TO_RUN = 0.2


def upper_bound(space: InputSpace) -> int:
    """The most trials :func:`search_input` can measure for ``space`` (start and final included)."""
    shrink = 2 * (len(space.capacities) + len(space.batch_capacities) + len(space.prefetch)) + 1
    per_kind = sum(len(space.counts_of(k)) + (0 if k == INLINE else shrink) for k in space.kinds)
    return 1 + per_kind + 2


def search_input(space: InputSpace, ledger: Ledger, target: float | None) -> None:
    """Measure the start, grow each kind's count, shrink the queues of the kinds that matter."""
    ledger.evaluate(space.start, "start")
    grown: dict[str, list[Trial]] = {}
    for kind in space.kinds:
        first = _generous(space, ledger, kind)
        if first is not None:
            grown[kind] = _grow(space, ledger, first, target)
    for trials in grown.values():
        goal = _goal(ledger, space.input, target)
        good = [t for t in trials if t.measured and rate_of(ledger.trials, t.point) >= goal]
        if not good:
            continue
        cheapest = min(good, key=_cost)
        _shrink(space, ledger, cheapest.point, target)


def _generous(space: InputSpace, ledger: Ledger, kind: str) -> Point | None:
    """The first count's point with the largest queues that fit the budget (None: none fit)."""
    count = space.counts_of(kind)[0]
    prefetch = max(space.prefetch) if space.prefetch else None
    if kind == INLINE:
        return space.point(kind, count, 1, 1, prefetch)
    for capacity in sorted(space.capacities, reverse=True):
        for batch_capacity in sorted(space.batch_capacities, reverse=True):
            point = space.point(kind, count, capacity, batch_capacity, prefetch)
            fits = ledger.fits(point)
            if fits is None:  # the config refuses this kind: one row says why
                ledger.evaluate(point, "grow")
                return None
            if fits:
                return point
    ledger.evaluate(space.point(kind, count, min(space.capacities), min(space.batch_capacities),
                                min(space.prefetch) if space.prefetch else None), "grow")
    return None


def _grow(space: InputSpace, ledger: Ledger, first: Point, target: float | None) -> list[Trial]:
    trials: list[Trial] = []
    previous: Trial | None = None
    counts = list(space.counts_of(first.kind))
    grid_end = counts[-1]
    for count in counts:  # grows while it runs, for a fetch that waits
        trial = ledger.evaluate(replace(first, count=count), "grow")
        trials.append(trial)
        if not trial.measured:
            break  # over budget (more workers hold more), failed, refused or out of --budget
        if target is not None and rate_of(ledger.trials, trial.point) >= target:
            break
        if trial.verdict == CONSUMER_SETS_PACE:
            break
        if previous is not None:
            gain, noise = _step(ledger, previous.point, trial.point)
            if gain <= noise:
                if noise > TOLERANCE and gain > TOLERANCE:
                    ledger.doubt(space.input, f"the climb of {first.kind} workers stopped at "
                                 f"x{count}: its gain over x{previous.point.count} ({gain:+.0%}) "
                                 f"was within the noise of the readings ({noise:.0%}), so more "
                                 "workers were not tried")
                break
            if trial.verdict in SATURATED and gain < SMALL_GAIN:
                break
            if count >= grid_end and count == counts[-1] and _waits(space, trial, gain):
                counts.append(count * 2)
                ledger.expected += 1
        previous = trial
    if counts[-1] > grid_end:
        shares = [t.fetch_cpu_share for t in trials if t.fetch_cpu_share is not None]
        ledger.note(space.input, f"{first.kind} workers grew past the default counts (which "
                    f"end at {grid_end}, twice the cores), up to x{trials[-1].point.count}: fetch "
                    f"waits (on a CPU at most {max(shares):.0%} of its time) and each doubling "
                    "gained at least half")
    return trials


def _step(ledger: Ledger, before: Point, after: Point) -> tuple[float, float]:
    """The gain from ``before`` to ``after`` (medians of their readings) and the noise it is
    judged under. A gain within a noise over 5% is read again: both points, back to back
    (each at most twice), and judged on the medians."""
    gain, noise = _gain(ledger, before, after), pair_noise(ledger.trials, before, after)
    if noise > TOLERANCE and -noise < gain <= noise:
        again = [p for p in (before, after) if readings(ledger.trials, p) < 2]
        for point in again:
            if not ledger.evaluate(point, "recheck", fresh=True).measured:
                return gain, noise
        if again:
            gain, noise = _gain(ledger, before, after), pair_noise(ledger.trials, before, after)
    return gain, noise


def _gain(ledger: Ledger, before: Point, after: Point) -> float:
    was, now = rate_of(ledger.trials, before), rate_of(ledger.trials, after)
    return now / was - 1.0 if was > 0 else float("inf")


def _waits(space: InputSpace, trial: Trial, gain: float) -> bool:
    """Grow past the default counts: they are the defaults, fetch waits rather than
    computes, the doubling gained at least half, and the cap is not reached."""
    share = trial.fetch_cpu_share
    return space.open_counts and trial.point.kind != INLINE and share is not None and \
        share < FETCH_WAITS and gain >= SMALL_GAIN and trial.point.count * 2 <= WAITING_MAX


def _shrink(space: InputSpace, ledger: Ledger, point: Point, target: float | None) -> None:
    """Walk each queue dimension down its grid while the point stays good enough."""
    dims: list[tuple[str, tuple[int, ...]]] = [("prefetch", space.prefetch)]
    if point.kind != INLINE:
        dims = [("capacity", space.capacities), ("batch_capacity", space.batch_capacities), *dims]
    for attr, grid in dims:
        current = getattr(point, attr)
        for value in sorted((v for v in grid if current is not None and v < current),
                            reverse=True):
            trial = ledger.evaluate(replace(point, **{attr: value}), f"shrink {_key(attr)}")
            if not trial.measured:
                break
            if rate_of(ledger.trials, trial.point) < _goal(ledger, space.input, target) and \
                    not _holds_up(ledger, point, trial, target):
                break
            point = trial.point


def _holds_up(ledger: Ledger, reference: Point, trial: Trial, target: float | None) -> bool:
    """A shrunk point that read below the goal but within the noise: measure the point it
    shrinks from and it again, back to back, and judge it on the medians of their readings
    (the bar falls too where the reference's first reading was a lucky one)."""
    goal = _goal(ledger, trial.point.input, target)
    ref = ledger.evaluate(reference, "shrink")  # measured before: its trial, not a new run
    noise = max(RUN_TO_RUN, trial.spread or 0.0, ref.spread or 0.0)
    floor = goal / (1.0 - TOLERANCE) * (1.0 - noise)  # the best (or target), less the noise
    if goal <= 0 or (trial.rate or 0.0) < floor:
        return False  # below by more than the noise: it is slower
    if readings(ledger.trials, reference) < 2:  # a reference read twice is not read again
        again_ref = ledger.evaluate(reference, "recheck", fresh=True)
        if not again_ref.measured:
            return False
    again = ledger.evaluate(trial.point, "recheck", fresh=True)
    return again.measured and \
        rate_of(ledger.trials, trial.point) >= _goal(ledger, trial.point.input, target)


def _key(attr: str) -> str:
    return {"capacity": "queue.capacity", "batch_capacity": "queue.batch_capacity",
            "prefetch": "device.prefetch"}[attr]


def _goal(ledger: Ledger, input_name: str, target: float | None) -> float:
    """The rate a point must reach to be an answer: the target when one was measured to be
    reachable, else 95% of the best measured so far."""
    top = max(pooled(ledger.trials, input_name).values(), default=0.0)
    if target is not None and top >= target:
        return target
    return (1.0 - TOLERANCE) * top


def _cost(trial: Trial) -> tuple[float, int, float]:
    """Least planned memory, then fewest workers, then the faster."""
    planned = trial.planned_bytes if trial.planned_bytes is not None else float("inf")
    return (planned, trial.point.count, -(trial.rate or 0.0))


def choose(trials: list[Trial], input_name: str, target: float | None) -> tuple[Trial | None, bool]:
    """The answer among the measured search trials of one input, and whether it reaches the
    target (True without one). None when nothing was measured."""
    rates = pooled(trials, input_name)
    # One candidate per point: its latest search trial, judged by the median of its readings.
    found = list({t.point.key: t for t in trials if t.point.input == input_name and t.measured
                  and t.phase != "final"}.values())
    if not found:
        return None, False
    if target is not None:
        reaching = [t for t in found if rates[t.point.key] >= target]
        if reaching:
            return min(reaching, key=_cost), True
    best = max(rates.values())
    near = [t for t in found if rates[t.point.key] >= (1.0 - TOLERANCE) * best - 1e-9 * best]
    return min(near, key=_cost), target is None


def pooled(trials: list[Trial], input_name: str) -> dict[Any, float]:
    """Each measured point's batches/s: the median of its search readings (not the final
    re-measurements, which are reported beside the answer, not searched on)."""
    return {key: statistics.median(values)
            for key, values in search_readings(trials, input_name).items()}


def readings(trials: list[Trial], point: Point) -> int:
    return sum(1 for t in trials if t.point.key == point.key and t.measured and t.phase != "final")


def rate_of(trials: list[Trial], point: Point) -> float:
    return pooled(trials, point.input).get(point.key, 0.0)


def over_budget(trials: list[Trial]) -> list[Trial]:
    return [t for t in trials if t.status == OVER_BUDGET]

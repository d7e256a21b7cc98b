"""How far the tuner's readings can be trusted: the noise of a point, and the answer's doubts.

The tuner ranks points by differences of a few percent (5% decides the answer), while
one point's rate moves by 10-30% between runs on a busy machine. So every ranking is
checked against the noise of the readings it rests on: a point's noise is the larger of
its trials' own spread (slices of one run, or the range of several runs) and the range
of its separate readings. :func:`doubts` lists, for the answer, every place where the
noise is larger than the difference that decided; the report prints them under
"the ranking is within the noise", and the written config carries them as comments.
"""

from __future__ import annotations

import statistics
from collections.abc import Iterable
from typing import Any

from inputkit.tuning.ledger import Trial
from inputkit.tuning.space import Point
from inputkit.tuning.trial import MIN_SLICE_BATCHES, SLICES

TOLERANCE = 0.05  # within this share of the best measured is as good as the best
_LISTED = 3  # rivals named in the doubts at most (the count says how many more)


def search_readings(trials: Iterable[Trial], input_name: str) -> dict[Any, list[float]]:
    """Each measured point's search readings (the final re-measurements are not searched on)."""
    readings: dict[Any, list[float]] = {}
    for t in trials:
        if t.point.input == input_name and t.measured and t.phase != "final":
            readings.setdefault(t.point.key, []).append(t.rate or 0.0)
    return readings


def relative_range(values: list[float]) -> float:
    """(max - min) / median; 0 for fewer than two values."""
    mid = statistics.median(values) if values else 0.0
    return (max(values) - min(values)) / mid if len(values) > 1 and mid > 0 else 0.0


def point_noise(trials: list[Trial], point: Point) -> float:
    """The larger of the point's trials' own spread (their median) and the range of its
    separate search readings: how far apart two readings of it may fall."""
    mine = [t for t in trials if t.point.key == point.key and t.measured and t.phase != "final"]
    own = statistics.median(t.spread or 0.0 for t in mine) if mine else 0.0
    return max(own, relative_range([t.rate or 0.0 for t in mine]))


def pair_noise(trials: list[Trial], a: Point, b: Point) -> float:
    """The noise two points are compared under: the tolerance at least."""
    return max(TOLERANCE, point_noise(trials, a), point_noise(trials, b))


def doubts(trials: list[Trial], chosen: Trial | None, final: Trial | None,
           target: float | None, search_doubts: Iterable[str] = ()) -> tuple[str, ...]:
    """Where the answer's ranking is within the noise, one line each (empty: it is not)."""
    if chosen is None:
        return tuple(search_doubts)
    name = chosen.point.input
    rates = {k: statistics.median(v) for k, v in search_readings(trials, name).items()}
    out = list(search_doubts)
    short = [t for t in trials if t.point.input == name and t.measured and t.too_short]
    if short:
        slowest = min(t.rate or 0.0 for t in short)
        need = SLICES * MIN_SLICE_BATCHES / slowest if slowest > 0 else float("inf")
        longest = max(t.seconds or 0.0 for t in short)
        out.append(f"{len(short)} trial(s) counted fewer than {MIN_SLICE_BATCHES} batches in a "
                   f"measurement slice even over {longest:.3g} s (the slowest read "
                   f"{slowest:,.1f} batches/s): too short to rank points 5% apart; give "
                   f"--seconds {need:.0f} or more")
    answer_rate = rates.get(chosen.point.key, chosen.rate or 0.0)
    moved = 0.0
    if final is not None and final.measured and answer_rate > 0:
        moved = abs((final.rate or 0.0) - answer_rate) / answer_rate
    best_key = max(rates, key=rates.__getitem__, default=None)
    top = rates.get(best_key, 0.0) if best_key is not None else 0.0
    bar = target if target is not None and top >= target else (1.0 - TOLERANCE) * top
    answer_noise = max(point_noise(trials, chosen.point), moved)
    if best_key is not None and best_key != chosen.point.key:
        answer_noise = max(answer_noise, _noise_of_key(trials, best_key))
        # The answer itself cleared the bar by some margin: within the noise, a dearer
        # point may be the faster one.
        above = answer_rate / bar - 1.0 if bar > 0 else 0.0
        if above < answer_noise and answer_noise > TOLERANCE:
            out.append(f"the answer read {above:.0%} above the bar ({_bar_text(target, bar)}): "
                       f"within the noise of the readings ({answer_noise:.0%})")
    # The cheaper points the answer was preferred to: each was slower by some margin. Where
    # the noise of the readings is larger than that margin, the order is luck.
    rivals = []
    seen = set()
    for t in trials:
        if t.point.input != name or not t.measured or t.phase == "final" or \
                t.point.key in seen or t.point.key == chosen.point.key:
            continue
        seen.add(t.point.key)
        if _cost(t) >= _cost(chosen) or bar <= 0 or rates[t.point.key] >= bar:
            continue
        margin = 1.0 - rates[t.point.key] / bar
        noise = max(point_noise(trials, t.point), answer_noise)
        if margin < noise and noise > TOLERANCE:
            rivals.append((margin, noise, t))
    for margin, noise, t in sorted(rivals, key=lambda r: r[0])[:_LISTED]:
        out.append(f"{t.point.label()} plans less and read {margin:.0%} below the bar "
                   f"({_bar_text(target, bar)}): within the noise of the readings ({noise:.0%})")
    if len(rivals) > _LISTED:
        out.append(f"... and {len(rivals) - _LISTED} more cheaper point(s) within the noise")
    if moved > TOLERANCE and out:
        out.append(f"re-measured, the answer read {final.rate or 0.0:,.1f} batches/s against "
                   f"{answer_rate:,.1f} in the search ({moved:.0%} apart)")
    return tuple(out)


def _noise_of_key(trials: list[Trial], key: Any) -> float:
    point = next(t.point for t in trials if t.point.key == key)
    return point_noise(trials, point)


def _bar_text(target: float | None, bar: float) -> str:
    if target is not None and bar == target:
        return f"--target {target:g}"
    return f"95% of the best, {bar:,.1f} batches/s"


def _cost(trial: Trial) -> tuple[float, int]:
    planned = trial.planned_bytes if trial.planned_bytes is not None else float("inf")
    return (planned, trial.point.count)

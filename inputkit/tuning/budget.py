"""``--budget 5m``: the wall-clock time a search may take, and the bookkeeping that keeps it.

People size a search by the time they can give it, not by a trial count. The budget
plans each trial before it starts: a run costs its start-up and close (measured on the
runs so far of the same worker kind, since processes start slower than threads; a guess
of ``STARTUP_S`` before the first), its warm-up and its measured span, and the
re-measurements at the end are kept aside from the start, at the dearest kind's cost. A trial that
does not fit what is left is not started: it is recorded as *skipped (budget)*, and so is
every later one, so the table says what the budget left out. A trial that fits may
repeat and lengthen only as far as what is left allows, so the search ends at most one
run's estimate error past the budget, never a whole search past it.
"""

from __future__ import annotations

import re
import statistics
import time
from collections.abc import Callable
from dataclasses import replace
from typing import TYPE_CHECKING

from inputkit.errors import ConfigError

if TYPE_CHECKING:
    from inputkit.tuning.trial import Settings

STARTUP_S = 1.0  # a run's start-up and close before one was measured (a Runner, its workers)
_UNIT_S = {"": 1.0, "s": 1.0, "sec": 1.0, "m": 60.0, "min": 60.0, "h": 3600.0}
_PART = re.compile(r"(\d+(?:\.\d+)?)\s*(h|min|m|sec|s)?", re.IGNORECASE)


def parse_duration(value: object, key: str = "--budget") -> float:
    """Seconds in ``5m``, ``90s``, ``1h30m``, ``2.5m`` or a bare number of seconds."""
    if isinstance(value, bool):
        raise ConfigError(key, f"expected a duration such as 5m, got {value!r}")
    if isinstance(value, int | float):
        seconds = float(value)
    else:
        text = str(value).strip().replace(" ", "")
        parts = list(_PART.finditer(text))
        if not text or not parts or "".join(p.group(0) for p in parts) != text:
            raise ConfigError(key, f"cannot read {value!r} as a duration; write e.g. 300, 90s, "
                              "5m, 1h30m (units: s, m, h)")
        seconds = sum(float(p.group(1)) * _UNIT_S[(p.group(2) or "").lower()] for p in parts)
    if not seconds > 0:
        raise ConfigError(key, f"must be a positive duration, got {value!r}")
    return seconds


def format_duration(seconds: float) -> str:
    """``4m 52s``-style, for the summary line and the written config's comment."""
    if seconds < 60:
        return f"{seconds:.1f} s"
    minutes, rest = divmod(round(seconds), 60)
    return f"{minutes}m {rest:02d}s" if minutes < 60 else f"{minutes // 60}h {minutes % 60:02d}m"


class Budget:
    """The search's wall-clock allowance (``seconds`` None: unlimited) on ``clock``.

    Runs are costed as ``overhead + warmup + measured span``; the overhead (start-up and
    close) is the median of what the runs so far of that worker kind took beyond their
    warm-up and span (of every kind's, for a kind not run yet).
    """

    def __init__(self, seconds: float | None, clock: Callable[[], float] = time.monotonic) -> None:
        if seconds is not None and not seconds > 0:
            raise ConfigError("--budget", f"must be a positive duration, got {seconds:g}")
        self.seconds = seconds
        self.clock = clock
        self.began = clock()
        self.exhausted = False  # once a trial was skipped, every later one is
        self._overheads: dict[str, list[float]] = {}

    def spent(self) -> float:
        return self.clock() - self.began

    def left(self) -> float:
        return float("inf") if self.seconds is None else self.seconds - self.spent()

    def record(self, wall_s: float, runs: int, measured_s: float, settings: Settings,
               kind: str = "") -> None:
        """A trial of ``runs`` runs of ``kind`` workers took ``wall_s`` in all, ``measured_s``
        of it measured."""
        if runs > 0:
            self._overheads.setdefault(kind, []).append(
                max(0.0, wall_s - measured_s - runs * settings.warmup) / runs)

    def _overhead(self, kind: str | None) -> float:
        if kind is not None and kind in self._overheads:
            return statistics.median(self._overheads[kind])
        every = [v for values in self._overheads.values() for v in values]
        if kind is None and self._overheads:  # the dearest kind's: for what is kept aside
            return max(statistics.median(values) for values in self._overheads.values())
        return statistics.median(every) if every else STARTUP_S

    def run_cost(self, settings: Settings, length: int = 1, kind: str | None = None) -> float:
        """One run's expected wall time, its span ``length`` times ``--seconds``, with
        ``kind`` workers (None: the dearest kind run so far)."""
        return self._overhead(kind) + settings.warmup + length * settings.seconds

    def allows(self, settings: Settings, reserve_runs: int, final: bool = False,
               kind: str | None = None) -> Settings | None:
        """The settings of a trial of ``kind`` workers cut to what is left (less
        ``reserve_runs`` runs kept for the re-measurements at the end); None: not even one
        plain run fits, so it is skipped. A ``final`` re-measurement draws on the runs kept
        aside for it, so it may run after the search ran out."""
        if self.seconds is None:
            return settings
        if self.exhausted and not final:
            return None
        left = self.left() - reserve_runs * self.run_cost(settings)
        if left < self.run_cost(settings, kind=kind):
            self.exhausted = True
            return None
        length = 1
        while length * 2 <= settings.lengthen and \
                self.run_cost(settings, length * 2, kind) <= left:
            length *= 2
        repeats = max(1, min(settings.repeats, int(left // self.run_cost(settings, length, kind))))
        return replace(settings, repeats=repeats, lengthen=length)

    def describe(self) -> str:
        """``budget 5m 00s, spent 4m 52s``."""
        if self.seconds is None:
            return ""
        return f"--budget {format_duration(self.seconds)}, spent {format_duration(self.spent())}"

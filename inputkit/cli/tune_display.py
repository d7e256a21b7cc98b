"""The progress of ``inputkit tune``: a live view on a terminal, plain lines elsewhere.

The live view shows the trial running (k of at most n, the point, why it was chosen,
seconds so far), the best so far and the last trials; off a terminal (a pipe, a log
file, ``CI=true``) each trial prints one line when it starts and one when it ends.
"""

from __future__ import annotations

import os
import time
from collections import deque
from typing import Any

from rich.console import Console, ConsoleOptions, Group, RenderResult
from rich.table import Table
from rich.text import Text

from inputkit.config.sizes import format_size
from inputkit.tuning.ledger import MEASURED, Trial
from inputkit.tuning.space import Point

_RECENT = 8


def _plain_wanted(console: Console) -> bool:
    return not console.is_terminal or os.environ.get("CI", "").lower() in ("1", "true", "yes")


def _best(best: Trial | None) -> str:
    if best is None or best.rate is None:
        return "best so far: none yet"
    return f"best so far: {best.point.label()} at {best.rate:,.1f} batches/s"


def outcome(trial: Trial) -> str:
    """One trial's result in words: its rate and verdict, or why it did not run."""
    planned = format_size(trial.planned_bytes) if trial.planned_bytes is not None else "?"
    if trial.status == MEASURED:
        runs = f", {trial.runs} runs" if trial.runs > 1 else ""
        span = f" of {trial.seconds:.2g} s" if trial.seconds else ""
        short = ", too short to rank" if trial.too_short else ""
        return (f"{trial.rate:,.1f} batches/s (spread {trial.spread or 0:.0%}{runs}{span}"
                f"{short}, {trial.verdict or 'no verdict'}), planned {planned}")
    if trial.status == "over budget":
        return (f"over budget: planned {planned} > memory.budget "
                f"{format_size(trial.budget_bytes or 0)}, not started")
    return f"{trial.status}: {trial.error}"


class _Live:
    """The live view's renderable: computed at each refresh, so the seconds tick."""

    def __init__(self) -> None:
        self.head = "inputkit tune: starting"
        self.since = time.monotonic()
        self.best = _best(None)
        self.recent: deque[Trial] = deque(maxlen=_RECENT)

    def __rich_console__(self, console: Console, options: ConsoleOptions) -> RenderResult:
        table = Table(show_header=True, header_style="bold", box=None, pad_edge=False)
        for name in ("#", "phase", "point", "result"):
            table.add_column(name)
        for t in self.recent:
            table.add_row(str(t.number), t.phase, t.point.label(), outcome(t))
        yield Group(Text(f"{self.head}  ({time.monotonic() - self.since:.0f} s)", style="bold"),
                    Text(self.best), table)


class Display:
    """Implements the tuner's Progress protocol for the command line."""

    def __init__(self, console: Console) -> None:
        self.console = console
        self.plain = _plain_wanted(console)
        self._view = _Live()
        self._live: Any = None

    def __enter__(self) -> Display:
        if not self.plain:
            from rich.live import Live

            self._live = Live(self._view, console=self.console, refresh_per_second=4)
            self._live.start()
        return self

    def __exit__(self, *exc: object) -> None:
        if self._live is not None:
            self._live.stop()

    def _say(self, text: str) -> None:
        self.console.print(text, markup=False, highlight=False, soft_wrap=True)

    def started(self, k: int, n: int, point: Point, phase: str, best: Trial | None) -> None:
        head = f"trial {k} of at most {n} ({phase}): input '{point.input}' {point.label()}"
        if self.plain:
            self._say(head)
        else:
            self._view.head, self._view.since = head, time.monotonic()

    def finished(self, trial: Trial, best: Trial | None) -> None:
        if self.plain:
            self._say(f"trial {trial.number} done ({trial.point.label()}): {outcome(trial)}; "
                      f"{_best(best)}")
        else:
            self._view.recent.append(trial)
            self._view.best = _best(best)

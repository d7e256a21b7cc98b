"""Rate-limited logging for messages a pipeline can repeat thousands of times a second.

A source that fails on every fetch under ``failures.on_error=skip`` (or ``retry``)
would otherwise write one line per fetch. The first message of each kind is logged
in full; repeats are counted, and one summary per period says how many there were
and shows the latest. The exact counts live in the pool's stats either way.
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass


@dataclass
class _Repeats:
    since: float  # when this window began: the first message, or the last summary
    count: int = 0
    latest: str = ""


class RepeatedLog:
    """Log the first message of a kind in full; count repeats and summarise them each ``period``.

    A kind is ``(level, what, error_type)``, not the text: the text of a failed fetch
    often names an index or a file, so no two would ever match. ``label`` names the
    pool in summaries. Summaries are written when a repeat arrives after ``period``
    seconds, and by ``flush()`` (a pool flushes when it stops). Thread-safe.
    """

    def __init__(self, logger: logging.Logger, label: str, period: float = 10.0,
                 clock: Callable[[], float] = time.monotonic) -> None:
        self._logger = logger
        self._label = label
        self._period = period
        self._clock = clock
        self._lock = threading.Lock()
        self._kinds: dict[tuple[int, str, str], _Repeats] = {}  # (level, what, error type)

    def log(self, level: int, what: str, error_type: str, message: str) -> None:
        """``message`` in full if its kind is new, else counted (and perhaps summarised)."""
        now = self._clock()
        key = (level, what, error_type)
        summary = None
        with self._lock:
            repeats = self._kinds.get(key)
            if repeats is None:
                self._kinds[key] = _Repeats(since=now)
            else:
                repeats.count += 1
                repeats.latest = message
                if now - repeats.since >= self._period:
                    summary = self._summary(key, repeats, now)
        if repeats is None:
            self._logger.log(level, "%s (repeats are counted, with a summary every %g s)",
                             message, self._period)
        elif summary is not None:
            self._logger.log(level, "%s", summary)

    def flush(self) -> None:
        """Summarise every kind with repeats not yet reported."""
        now = self._clock()
        with self._lock:
            summaries = [(key[0], self._summary(key, repeats, now))
                         for key, repeats in self._kinds.items() if repeats.count]
        for level, summary in summaries:
            self._logger.log(level, "%s", summary)

    def _summary(self, key: tuple[int, str, str], repeats: _Repeats, now: float) -> str:
        """The summary of ``repeats`` (lock held); starts the next window."""
        _, what, error_type = key
        count = repeats.count
        text = (f"{self._label}: {what}: {error_type} repeated {count:,} time"
                f"{'' if count == 1 else 's'} in the last {now - repeats.since:.1f} s "
                f"(counted in stats()); the latest: {repeats.latest}")
        repeats.since, repeats.count, repeats.latest = now, 0, ""
        return text

"""An embedded runner's metric sinks: its records written from a thread of its own.

``Runner.start()`` starts a :class:`MetricsReporter` when ``metrics.tensorboard`` or
``metrics.wandb`` is set (``inputkit bench`` writes the same records from its watch loop
instead). Every ``metrics.interval`` seconds (default: ``bench.progress_interval``, the
dashboard's rate) it takes ``runner.stats()``, the window over the last 5 seconds and the
record ``metrics.jsonl`` would hold (:func:`inputkit.observe.records.snapshot_record`), and
hands it to the sinks: no work in a worker or in the training loop's ``next()``. The last
record is written when the runner closes. The reporter holds the runner weakly, so a runner
dropped without ``close()`` is still collected (its cleanup then stops this thread too).
"""

from __future__ import annotations

import logging
import threading
import time
import weakref
from typing import TYPE_CHECKING

from inputkit.observe.metrics import MovingWindow
from inputkit.observe.records import snapshot_record
from inputkit.observe.sinks import Sink, close_sinks, open_sinks

if TYPE_CHECKING:
    from inputkit.runner import Runner

log = logging.getLogger(__name__)


class MetricsReporter:
    """Writes a runner's records to ``sinks`` every ``interval`` seconds until stopped.

    A stage of the runner's shutdown: ``stop()`` then ``join(deadline)`` (names the thread if
    it is still writing at the deadline). A sink that fails is logged once, with its error,
    and the reporter stops writing: the training run goes on."""

    def __init__(self, runner: Runner, sinks: list[Sink], interval: float,
                 budget_bytes: int | None) -> None:
        self._runner = weakref.ref(runner)
        self.sinks = sinks
        self.interval = interval
        self.budget_bytes = budget_bytes
        self.written = 0
        self._window = MovingWindow(5.0)
        self._stop = threading.Event()
        self.thread = threading.Thread(target=self._run, daemon=True, name="inputkit-metrics")

    @classmethod
    def start_for(cls, runner: Runner) -> MetricsReporter:
        """Open the sinks ``runner.spec.metrics`` asks for (a W&B run must be active) and start
        writing; a missing package is a ConfigError naming the key and the extra."""
        from inputkit.planning.memory import parse_budget

        spec = runner.spec
        interval = spec.metrics.get("interval") or spec.progress_interval
        budget = parse_budget(spec.memory_budget, "memory.budget") if runner.plan else None
        reporter = cls(runner, open_sinks(spec.metrics), float(interval), budget)
        reporter.thread.start()
        return reporter

    def stop(self) -> None:
        self._stop.set()

    def join(self, deadline: float) -> list[str]:
        if self.thread.ident is not None and self.thread is not threading.current_thread():
            self.thread.join(max(0.0, deadline - time.monotonic()))
        return [self.thread.name] if self.thread.is_alive() and \
            self.thread is not threading.current_thread() else []

    def _run(self) -> None:
        try:
            while not self._stop.wait(self.interval):
                if not self._write():
                    return
            self._write()  # the figures at close
        finally:
            close_sinks(self.sinks)

    def _write(self) -> bool:
        """One record to every sink; False once the runner is gone or a sink failed."""
        runner = self._runner()
        if runner is None:
            return False
        try:
            stats = runner.stats()
            del runner
            record, _ = snapshot_record(self._window.update(stats), self.budget_bytes)
            for sink in self.sinks:
                sink.write(record)
        except Exception:
            log.exception("writing the input's metrics (metrics.tensorboard / metrics.wandb) "
                          "failed; no more will be written in this run")
            return False
        self.written += 1
        return True

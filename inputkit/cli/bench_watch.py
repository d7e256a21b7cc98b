"""The measuring loop of ``inputkit bench``: a consumer thread per coordinator, watched.

Each :class:`Consumer` pulls batches as fast as its coordinator gives them (a training loop
that costs nothing); :func:`watch`, on the main thread, takes a snapshot every
``progress_interval``, feeds the recorder and shows the dashboard or plain lines until every
consumer is done or the time limit is reached. What is said after the run is bench_report's.
"""

from __future__ import annotations

import threading
import time
from typing import TYPE_CHECKING, Any

from rich.console import Console

from inputkit.cli.render import progress_line
from inputkit.observe.dashboard import plain_lines, render
from inputkit.observe.stats import RunnerStats
from inputkit.pipeline.coordinator import Coordinator

if TYPE_CHECKING:
    from inputkit.cli.bench import Recorder


class Consumer:
    """Pulls batches from one coordinator until the step limit, the end, or stop.

    Iterating a coordinator yields one epoch of an indexable source; the consumer
    iterates again until the last epoch (``epoch.count``) has ended, so a small
    dataset is measured over as many epochs as the time or step limit allows.
    """

    def __init__(self, coordinator: Coordinator, steps: int | None, stop: threading.Event) -> None:
        self.coordinator = coordinator
        self.steps = steps
        self.stop = stop
        self.error: BaseException | None = None
        self.ended: str | None = None  # "steps" (bench.steps), "end" (the input's last epoch)
        self.thread = threading.Thread(target=self._run, daemon=True,
                                       name=f"inputkit-bench-{coordinator.spec.name}-"
                                            f"{coordinator.device_index}")

    def _run(self) -> None:
        count = 0
        try:
            while not self.coordinator.finished:  # one pass per epoch
                for _batch in self.coordinator:
                    count += 1
                    if self.stop.is_set():
                        return
                    if self.steps is not None and count >= self.steps:
                        self.ended = "steps"
                        return
                if self.stop.is_set():
                    return
            self.ended = "end"
        except BaseException as exc:
            if not self.stop.is_set():
                self.error = exc


def watch(runner: Any, consumers: list[Consumer], console: Console, started: float,
           limit: float | None, interval: float, recorder: Recorder, dashboard: bool) -> None:
    """Show the dashboard (or plain lines) until every consumer is done or time is up."""
    previous: RunnerStats | None = None
    live = None
    if console.is_terminal:
        from rich.live import Live

        live = Live(console=console, refresh_per_second=max(1, int(1 / interval)),
                    transient=not dashboard)
        live.start()
    plain_every = max(1.0, interval)
    last_plain = last_detail = started
    try:
        while any(c.thread.is_alive() for c in consumers):
            now = time.monotonic()
            if limit is not None and now - started >= limit:
                return
            for c in consumers:
                c.thread.join(timeout=interval / max(1, len(consumers)))
            snapshot = runner.stats()
            window, warnings, new = recorder.update(snapshot)
            if live is not None:
                if dashboard:
                    live.update(render(window, warnings, recorder.budget_bytes,
                                       title=_title(limit)))
                else:
                    live.update(progress_line(snapshot, previous, now - started, limit))
            else:
                if time.monotonic() - last_plain >= plain_every:
                    last_plain = time.monotonic()
                    console.print(progress_line(snapshot, previous, now - started, limit).plain,
                                  highlight=False, markup=False, soft_wrap=True)
                if time.monotonic() - last_detail >= 5 * plain_every:
                    last_detail = time.monotonic()
                    for line in plain_lines(window)[1:]:
                        console.print(line, highlight=False, markup=False, soft_wrap=True)
                for text in new:
                    console.print(f"warning: {text}", highlight=False, markup=False,
                                  soft_wrap=True)
            previous = snapshot
    finally:
        if live is not None:
            live.stop()


def _title(limit: float | None) -> str:
    return "inputkit bench" + (f"  (limit {limit:g} s)" if limit is not None else "")

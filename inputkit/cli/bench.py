"""``inputkit bench``: stream batches for a bounded time or number of steps, then summarise.

One consumer thread per coordinator pulls batches as fast as the pipeline gives
them (like one training loop per GPU that costs nothing), so the figures are the
input pipeline's own ceiling. The main thread shows progress and, at the end,
a summary table; the summary is also written as ``summary.json`` in the run
directory.
"""

from __future__ import annotations

import json
import re
import threading
import time
from collections import deque
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from omegaconf import DictConfig, OmegaConf
from rich.console import Console

from inputkit import startup
from inputkit.cli.bench_html import write_bench_report
from inputkit.cli.bench_report import banner, duration, ended_by, report
from inputkit.cli.bench_watch import Consumer, watch
from inputkit.config.spec import RunSpec, load_spec
from inputkit.observe.metrics import MovingWindow, Window
from inputkit.observe.records import snapshot_record
from inputkit.observe.sinks import Sink, close_sinks, open_sinks, per_sweep_point
from inputkit.observe.sinks import check as check_sinks
from inputkit.observe.stats import RunnerStats
from inputkit.planning.memory import parse_budget


def run_bench(spec: RunSpec, console: Console, output_dir: Path | None = None,
              extra: dict[str, Any] | None = None,
              prepared: startup.Prepared | None = None) -> dict[str, Any]:
    """Run the bench for ``spec``; print progress and the summary; return the summary dict.

    ``prepared``: what the command's config check built (sizes, the probe's sources), used
    instead of building them again. Start-up is timed on the command's clock when there is one
    (inputkit.startup), else from this call."""
    from inputkit.runner import Runner

    names = [spec.bench_input] if spec.bench_input else [s.name for s in spec.inputs]
    runner = Runner(spec, inputs=names, prepared=prepared)
    runner.report_metrics = False  # the Recorder writes the sinks, from the watch loop
    stop = threading.Event()
    clock = startup.current() or startup.StartupClock()
    interrupted = False
    with clock.current(), clock.step("workers start", "starting the workers"):
        runner.start()
    running_at = time.monotonic()
    with runner:
        budget = parse_budget(spec.memory_budget, "memory.budget") if runner.plan else None
        jsonl = output_dir / "metrics.jsonl" if output_dir is not None and spec.bench_json \
            else None
        if jsonl is not None:
            jsonl.parent.mkdir(parents=True, exist_ok=True)
        recorder = Recorder(budget, jsonl, open_sinks(
            per_sweep_point(spec.metrics), start_wandb=True, run_dir=output_dir,
            config=(extra or {}).get("config")))
        started = time.monotonic()  # the time limit counts from here, after start-up
        startup_s = clock.elapsed(started)  # from the command's start
        consumers = [Consumer(c, spec.bench_steps, stop) for c in runner.coordinators()]
        limit = spec.bench_seconds
        try:  # from the first consumer on, Ctrl-C ends in the summary of what was measured
            for consumer in consumers:
                consumer.thread.start()
            console.print(banner(runner, spec, startup_s))
            watch(runner, consumers, console, started, limit, spec.progress_interval, recorder,
                  spec.bench_dashboard)
        except KeyboardInterrupt:
            interrupted = True  # still stop cleanly and show what was measured
        finally:
            stop.set()
            recorder.close()
        final = runner.stats()
        elapsed = time.monotonic() - started
        if interrupted:
            left_running = _close_after_interrupt(runner, console)
    for consumer in consumers:
        consumer.thread.join(timeout=2.0)
    errors = [c.error for c in consumers if c.error is not None]
    if errors:
        raise errors[0]
    title = f"inputkit bench interrupted after {duration(elapsed)}" if interrupted else \
        f"inputkit bench ran {duration(elapsed)}: {ended_by(consumers, spec)}"
    summary = report(console, runner, final, recorder, clock, spec=spec, title=title,
                     running_at=running_at, startup_s=startup_s, elapsed=elapsed,
                     output_dir=output_dir, extra=extra)
    write_bench_report(console, spec, output_dir, summary, list(recorder.records), runner.plan)
    if interrupted:
        raise KeyboardInterrupt(*left_running)  # the CLI's last line names what did not stop
    return summary


def _close_after_interrupt(runner: Any, console: Console) -> list[str]:
    """Close the runner after Ctrl-C. A thread that will not stop (stuck inside fetch) is
    named in a warning: the interrupt, its summary and exit 130 stay what the user gets, and
    the thread, a daemon, ends with the process. Returns the names of those threads."""
    from inputkit.errors import ShutdownError

    try:
        runner.close()
    except ShutdownError as exc:
        header, *rest = str(exc).splitlines()
        threads = [line.rstrip(":") for line in rest if line and not line[0].isspace()]
        console.print(f"warning: {header.rstrip(':')}: {'; '.join(threads)}; left to end "
                      "with the process", markup=False, highlight=False, soft_wrap=True)
        return threads
    return []


class Recorder:
    """The run's moving window, its verdicts and warnings, and every snapshot as a JSON record.

    Records feed ``metrics.jsonl`` (with ``bench.json=true``) and the end-of-run plot.
    ``streaming`` is the first snapshot in which every input had delivered a batch: the
    diagnosis judges the run from there, past the start-up.
    """

    def __init__(self, budget_bytes: int | None, jsonl: Path | None,
                 sinks: Sequence[Sink] = ()) -> None:
        self.window = MovingWindow(5.0)
        self.sinks = tuple(sinks)
        self.budget_bytes = budget_bytes
        self.records: deque[dict[str, Any]] = deque(maxlen=20_000)
        self.seen_warnings: dict[str, str] = {}  # first words (kind and place) -> latest text
        self.first_seen: dict[str, float] = {}  # the same key -> seconds into the run
        self.streaming: RunnerStats | None = None
        self._jsonl = jsonl.open("w") if jsonl is not None else None

    def update(self, stats: RunnerStats) -> tuple[Window, list[str], list[str]]:
        """The window, its warnings, and the warnings not seen before (to print once)."""
        if self.streaming is None and stats.coordinators and \
                all(c.batches for c in stats.coordinators):
            self.streaming = stats
        window = self.window.update(stats)
        record, warnings = snapshot_record(window, self.budget_bytes)
        new = []
        for text in warnings:
            key = _warning_key(text)
            if key not in self.seen_warnings:
                new.append(text)
                self.first_seen[key] = window.elapsed_s
            self.seen_warnings[key] = text
        self.records.append(record)
        if self._jsonl is not None:
            self._jsonl.write(json.dumps(record) + "\n")
        for sink in self.sinks:  # TensorBoard, W&B (metrics.*): the same record
            sink.write(record)
        return window, warnings, new

    @property
    def peak_buffered_bytes(self) -> int:
        return max((r["buffered_bytes"] for r in self.records), default=0)

    def close(self) -> None:
        if self._jsonl is not None:
            self._jsonl.close()
        close_sinks(self.sinks)


def _warning_key(text: str) -> str:
    """The same warning with other figures: its kind and place kept, the figures after them
    replaced (``starvation: input 'main' on 1:cpu: ...``), so each device keeps its own."""
    parts = text.split(": ", 2)
    head, rest = (": ".join(parts[:2]), parts[2]) if len(parts) == 3 else (parts[0], parts[-1])
    return f"{head}: {re.sub(r'[0-9.,]+', '#', rest)}"


def make_console() -> Console:
    """stdout console; when it is not a terminal (CI, logs), wide enough for the tables."""
    console = Console(highlight=False)
    if not console.is_terminal:
        console = Console(highlight=False, width=max(console.width, 150))
    return console


def check_config(cfg: DictConfig, prepared: startup.Prepared | None = None) -> None:
    """Fail fast on bad values and unimportable sources, before any job starts. ``prepared``
    keeps the sizes and the sources the plan's probe built, for the run's runner."""
    from inputkit.planning.memory import MemoryBudgetError, UnknownSampleSizes, plan_memory
    from inputkit.sources.loader import import_target

    spec = load_spec(cfg)
    check_sinks(spec.metrics)  # a missing tensorboard or wandb package, before any start
    for input_spec in spec.inputs:
        import_target(input_spec.source["_target_"], key=f"{input_spec.key_prefix}source._target_")
    from inputkit.kinds.auto_probe import resolve

    unresolved = {inp.name: inp for inp in spec.inputs}
    built: dict[str, Any] = {}  # the probes' copies: auto's, read again by the memory probe
    try:
        with startup.step("probe/plan", "probing fetch for workers.kind=auto"):
            # the plan is the chosen kind's; the runner reuses the choice and the copy
            spec, choices = resolve(spec, keep=built)
        if prepared is not None:
            prepared.auto = {name: (unresolved[name], choice) for name, choice in choices.items()}
        with startup.step("probe/plan", "planning memory"):
            plan = plan_memory(spec, keep=built)
    except BaseException as exc:
        for source in built.values():
            source.close()
        if isinstance(exc, UnknownSampleSizes):
            return  # the runner says so when it starts
        raise
    if prepared is not None:
        prepared.keep(spec, plan.layouts, built)
    else:
        for source in built.values():
            source.close()
    if plan.over_budget and not spec.allow_over_budget:
        raise MemoryBudgetError(plan)


def bench_task(cfg: DictConfig, prepared: startup.Prepared | None = None) -> dict[str, Any]:
    """The Hydra task behind ``inputkit bench``: one run (or one sweep point); ``prepared``:
    what check_config built for it."""
    from hydra.core.hydra_config import HydraConfig

    output_dir = None
    extra: dict[str, Any] = {"config": OmegaConf.to_container(cfg, resolve=True)}
    if HydraConfig.initialized():
        hydra_cfg = HydraConfig.get()
        output_dir = Path(hydra_cfg.runtime.output_dir)
        extra["overrides"] = list(hydra_cfg.overrides.task)
    console = make_console()
    try:
        spec = load_spec(cfg)
        return run_bench(spec, console, output_dir, extra, prepared)
    except Exception as exc:
        # Returned, not raised: Hydra would print its own "Error executing job" line, and a
        # sweep goes on to its other points. The CLI raises it (single run) or lists it (sweep).
        return {"error": exc, **extra}

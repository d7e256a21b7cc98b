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
from inputkit.cli.render import (
    kind_records,
    kind_summary_lines,
    progress_line,
    skipped_lines,
    skipped_record,
    summary_table,
)
from inputkit.config.spec import RunSpec, load_spec
from inputkit.observe.dashboard import components_text, plain_lines, render
from inputkit.observe.diagnosis import diagnose
from inputkit.observe.metrics import MovingWindow, Window
from inputkit.observe.records import snapshot_record
from inputkit.observe.sinks import Sink, close_sinks, open_sinks, per_sweep_point
from inputkit.observe.sinks import check as check_sinks
from inputkit.observe.stats import RunnerStats
from inputkit.pipeline.coordinator import Coordinator
from inputkit.planning.memory import parse_budget


class _Consumer:
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
        consumers = [_Consumer(c, spec.bench_steps, stop) for c in runner.coordinators()]
        limit = spec.bench_seconds
        try:  # from the first consumer on, Ctrl-C ends in the summary of what was measured
            for consumer in consumers:
                consumer.thread.start()
            console.print(_banner(runner, spec, startup_s))
            _watch(runner, consumers, console, started, limit, spec.progress_interval, recorder,
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
    title = f"inputkit bench interrupted after {_duration(elapsed)}" if interrupted else \
        f"inputkit bench ran {_duration(elapsed)}: {_ended_by(consumers, spec)}"
    # First batches count from the command's start: what the user waited.
    firsts = [c.first_batch_at for c in runner.coordinators()]
    console.print(summary_table(final, title=title, first_batch_s=[
        clock.elapsed(at) if at is not None else None for at in firsts]))
    last = max((at for at in firsts if at is not None), default=None)
    total = clock.elapsed(last) if last is not None else None
    if last is not None:  # (the last device to get one: they all had one by then)
        clock.record("first batch", last - running_at)
        console.print(f"first batch {total:.2f} s after the command started: "
                      f"{clock.breakdown(total)}", markup=False, highlight=False, soft_wrap=True)
    for c in final.coordinators:
        if c.workers.processors:  # which step is slow, measured inside the workers
            steps = ", ".join(f"{p.name} {p.ms_per_chunk:.2f} ms ({p.calls:,} chunks)"
                              for p in c.workers.processors)
            console.print(f"processors of {c.input} on {c.device_index}:{c.device}, per chunk: "
                          f"{steps}", markup=False, highlight=False)
    for c in final.coordinators:  # a mixture: the proportions the consumer received
        if c.components:
            console.print(f"components of {c.input} on {c.device_index}:{c.device}: "
                          f"{components_text(c.components)}", markup=False, highlight=False)
    for line in kind_summary_lines(final):  # the kinds' own (Ray: where the actors ran)
        console.print(line, markup=False, highlight=False, soft_wrap=True)
    for line in skipped_lines(final, "see summary.json" if output_dir is not None else ""):
        console.print(line, markup=False, highlight=False, soft_wrap=True)
    # The same judgement as the live verdict, over the run once batches flowed.
    diagnosis = diagnose(final, recorder.budget_bytes, since=recorder.streaming,
                         sources=runner.source_info)
    console.print("diagnosis:", style="bold")
    for line in diagnosis:
        console.print(f"  {line}", markup=False, highlight=False)
    if recorder.seen_warnings:
        # Each warning judged the window before it: when it first appeared says which.
        console.print("warnings during the run (first seen at):", style="bold")
        for key, text in recorder.seen_warnings.items():
            console.print(f"  {recorder.first_seen[key]:.1f} s: {text}", markup=False,
                          highlight=False)
    peak = max(recorder.peak_buffered_bytes,
               sum(q.peak_bytes for c in final.coordinators for q in c.queues[:1]))
    startup_record = {**clock.record_dict(),
                      "to_first_batch_s": round(total, 4) if total is not None else None}
    summary = {"stats": final.to_dict(), "wall_s": elapsed, "startup_s": startup_s,
               "startup": startup_record,
               "diagnosis": diagnosis, "warnings": list(recorder.seen_warnings.values()),
               "peak_buffered_bytes": peak, "skipped_samples": skipped_record(final),
               **kind_records(final),  # a kind's own entries (Ray's "ray")
               "sources": runner.source_info, **(extra or {})}
    if runner.auto:  # what workers.kind=auto chose per input, and why
        summary["workers"] = {"auto": {n: c.record() for n, c in runner.auto.items()}}
    if output_dir is not None:
        output_dir.mkdir(parents=True, exist_ok=True)
        summary["run_dir"] = str(output_dir)
        (output_dir / "summary.json").write_text(json.dumps(summary, indent=2, default=str))
        _plot(console, list(recorder.records), output_dir, spec)
        console.print(f"run directory: {output_dir}", highlight=False)
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


def _plot(console: Console, records: list[dict[str, Any]], output_dir: Path, spec: RunSpec) -> None:
    """metrics.png in the run directory when matplotlib is there; otherwise how to get it."""
    if not spec.bench_plot or len(records) < 2:
        return
    from inputkit.observe import plots

    if not plots.matplotlib_available():
        console.print(f"no plot: matplotlib is not installed ({plots.INSTALL_HINT})",
                      highlight=False, markup=False)
        return
    path = plots.plot_run(records, output_dir / "metrics.png", title="inputkit bench")
    console.print(f"plot: {path}", highlight=False, markup=False)


def _duration(seconds: float) -> str:
    """2.0 s, or 40 ms under a tenth of a second (a small finite input), never '0.0 s'."""
    return f"{seconds:.1f} s" if seconds >= 0.095 else f"{seconds * 1000:.0f} ms"


def _epochs(runner: Any) -> str | None:
    """The end of every input that has one (an indexable source with epoch.count set):
    'the end of its 1 epoch of 781 samples (epoch.count=1)'; None when any input is endless
    or read by fetch (which ends only when the source says so)."""
    ends = set()
    for c in runner.coordinators():
        count = c.spec.epoch.count
        if c.dispatcher is None or count is None:
            return None
        ends.add((count, c.length))
    if len(ends) != 1:
        return "the end of each input's epochs (epoch.count)"
    [(count, length)] = ends
    return (f"the end of its {count} epoch{'s' if count != 1 else ''} of {length:,} samples "
            f"(epoch.count={count})")


def _ended_by(consumers: list[_Consumer], spec: RunSpec) -> str:
    """What ended the run: the time limit, the step limit, or the input itself."""
    ends = {c.ended for c in consumers}
    if None in ends and spec.bench_seconds is not None:  # stopped by the watch: time is up
        return f"bench.seconds={spec.bench_seconds:g} reached"
    if ends == {"steps"}:
        return f"bench.steps={spec.bench_steps} reached"
    counts = sorted({c.coordinator.spec.epoch.count for c in consumers
                     if c.ended == "end" and c.coordinator.dispatcher is not None}, key=str)
    epochs = f" (epoch.count={counts[0]})" if len(counts) == 1 and counts[0] is not None else ""
    what = f"the input ended{epochs}" if ends == {"end"} else \
        f"each input ended or reached bench.steps={spec.bench_steps}"
    return what + (f", before bench.seconds={spec.bench_seconds:g}"
                   if spec.bench_seconds is not None else "")


def _banner(runner: Any, spec: RunSpec, startup_s: float) -> str:
    limits = []
    if spec.bench_seconds is not None:
        limits.append(f"{spec.bench_seconds:g} s")
    if spec.bench_steps is not None:
        limits.append(f"{spec.bench_steps} steps per device")
    epochs = _epochs(runner)
    if limits and epochs is not None:
        limits.append(epochs)
    limit = " or ".join(limits) if limits else "the end of the input (its last epoch)"
    inputs = ", ".join(runner.input_names)
    chosen = "".join(f"\nworkers.kind=auto for input {name}: {choice.text()}"
                     for name, choice in runner.auto.items())
    return (f"inputkit bench: input(s) {inputs} on {', '.join(runner.devices)}, "
            f"until {limit} (start-up took {startup_s:.2f} s){chosen}")


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


def _watch(runner: Any, consumers: list[_Consumer], console: Console, started: float,
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

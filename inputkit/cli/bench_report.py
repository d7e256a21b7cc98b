"""What ``inputkit bench`` says about its run: the banner before it, the report after it.

The run itself (bench.py, bench_watch.py) only measures; the words and files that come of it
live here: the banner's limits, what ended the run, the summary table and the lines under it,
the diagnosis over the run, ``summary.json`` and the plot in the run directory.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import TYPE_CHECKING, Any

from rich.console import Console

from inputkit import startup
from inputkit.cli.render import (
    kind_records,
    kind_summary_lines,
    skipped_lines,
    skipped_record,
    summary_table,
)
from inputkit.config.spec import RunSpec
from inputkit.observe.dashboard import components_text
from inputkit.observe.diagnosis import diagnose
from inputkit.observe.stats import RunnerStats

if TYPE_CHECKING:
    from inputkit.cli.bench import Recorder
    from inputkit.cli.bench_watch import Consumer


def report(console: Console, runner: Any, final: RunnerStats, recorder: Recorder,
           clock: startup.StartupClock, *, spec: RunSpec, title: str, running_at: float,
           startup_s: float, elapsed: float, output_dir: Path | None,
           extra: dict[str, Any] | None) -> dict[str, Any]:
    """Print the end of the run (the summary table, first batch, processors, components, the
    kinds' lines, skipped samples, the diagnosis, the warnings seen) and return the summary,
    written as ``summary.json`` (and ``metrics.png``) in ``output_dir`` when there is one."""
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
    return summary


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


def duration(seconds: float) -> str:
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


def ended_by(consumers: list[Consumer], spec: RunSpec) -> str:
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


def banner(runner: Any, spec: RunSpec, startup_s: float) -> str:
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

"""What ``inputkit tune`` writes and prints: the tuned config, the table of trials, the answer.

The run directory gets ``tuned/experiment/tuned.yaml`` (the whole starting config with
the tuned settings, as an experiment: ``inputkit bench --config-dir <run>/tuned
experiment=tuned``), ``tuned/source/tuned.yaml`` (the source node, so that composing it
does not merge the default source's keys into it), ``trials.csv`` and ``tune.png``.
"""

from __future__ import annotations

import csv
from dataclasses import replace
from pathlib import Path
from typing import TYPE_CHECKING, Any

from omegaconf import OmegaConf
from rich.table import Table

from inputkit.config.sizes import format_size
from inputkit.tuning.ledger import MEASURED, Trial

if TYPE_CHECKING:
    from inputkit.tuning import InputAnswer, TuneResult
    from inputkit.tuning.ledger import Ledger

CSV_FIELDS = ("trial", "input", "phase", "status", "kind", "workers", "queue_capacity",
              "batch_capacity", "prefetch", "planned_bytes", "budget_bytes", "batches_per_s",
              "samples_per_s", "spread", "runs", "verdict", "chosen", "error", "seconds",
              "too_short", "fetch_cpu_share")
WITHIN_NOISE = "the ranking is within the noise"


def bench_command(run_dir: Path) -> str:
    return f"inputkit bench --config-dir {run_dir / 'tuned'} experiment=tuned"


def _rate(trial: Trial | None) -> str:
    if trial is None:
        return "not measured"
    if not trial.measured:
        return trial.status + (f" ({trial.error})" if trial.error else "")
    return f"{trial.rate:,.1f} batches/s ({trial.samples_per_s or 0:,.0f} samples/s)"


def _planned(trial: Trial | None) -> str:
    return format_size(trial.planned_bytes) if trial is not None and \
        trial.planned_bytes is not None else "unknown"


def answer_lines(result: TuneResult) -> list[str]:
    """The answer per input, the start beside it, and what the comparison says."""
    lines = []
    for a in result.answers:
        lines += _answer_lines(a, result.interrupted)
    measured = sum(1 for t in result.trials if t.runs and t.phase != "final")
    skipped = sum(1 for t in result.trials if t.status == "over budget")
    lines.append(f"{measured} trial(s) measured of a {result.grid_points}-point grid"
                 + (f", {skipped} point(s) over memory.budget never started" if skipped else "")
                 + f", in {result.wall_s:.1f} s"
                 + (f" ({result.budget})" if result.budget else "")
                 + ("; stopped at --max-trials" if result.trial_limit_reached else "")
                 + ("; interrupted (Ctrl-C): the best answer so far, not re-measured"
                    if result.interrupted else ""))
    if result.skipped:
        lines.append(f"skipped for lack of --budget ({len(result.skipped)} trial(s), never "
                     "started): " + "; ".join(f"{t.phase} {t.point.label()}"
                                               for t in result.skipped))
    return lines


def _answer_lines(a: InputAnswer, interrupted: bool) -> list[str]:
    if a.chosen is None:
        return [f"input '{a.input}': no trial was measured, so there is no answer "
                "(the starting config is kept)"]
    settings = " ".join(a.chosen.point.overrides())
    lines = [f"input '{a.input}': {settings}"]
    if a.kept_start and a.displaced is not None and a.final is not None:
        lines.append(f"  the starting config is the answer: re-measured side by side it gave "
                     f"{_rate(a.final)}, planned {_planned(a.final)}, within 5% of the "
                     f"search's pick ({a.displaced.point.label()}: {_rate(a.displaced)}, "
                     f"planned {_planned(a.displaced)}) and cheaper")
    elif a.final is not None and a.chosen.phase == "start":
        lines.append(f"  the starting config is the answer (nothing to change); re-measured: "
                     f"{_rate(a.final)}")
    elif a.final is not None:
        lines.append(f"  answer re-measured: {_rate(a.final)}, planned {_planned(a.final)}")
        lines.append(f"  starting config re-measured: {_rate(a.final_start)}, planned "
                     f"{_planned(a.final_start)}")
        if a.start_within:
            lines.append("  the starting config was already within 5% of the answer: the answer "
                         "saves memory (or workers), not time")
    else:
        lines.append(f"  measured in the search: {_rate(a.chosen)}, planned {_planned(a.chosen)}"
                     + (" (not re-measured: interrupted)" if interrupted else ""))
        if a.start is not None:
            lines.append(f"  starting config in the search: {_rate(a.start)}, planned "
                         f"{_planned(a.start)}")
    if a.target is not None:
        lines.append(f"  --target {a.target:g} batches/s: " + (
            "reached" if a.target_reached else "not reached by any point; the answer is the "
            "cheapest within 5% of the best"))
    lines += [f"  {note}" for note in a.notes]
    if a.doubts:
        lines.append(f"  WARNING: {WITHIN_NOISE} (give longer --seconds, more --repeats, or "
                     "more --budget):")
        lines += [f"    - {doubt}" for doubt in a.doubts]
    return lines


def trials_table(result: TuneResult) -> Table:
    """Every trial, the chosen ones marked: for the terminal."""
    chosen = {id(a.chosen) for a in result.answers if a.chosen is not None}
    doubtful = [a.input for a in result.answers if a.doubts]
    caption = (f"WARNING: for input(s) {', '.join(doubtful)}, {WITHIN_NOISE}: see below"
               if doubtful else None)
    table = Table(title="inputkit tune: trials", title_justify="left", header_style="bold",
                  caption=caption, caption_justify="left")
    for name in ("#", "input", "phase", "point", "planned", "batches/s", "spread", "runs x s",
                 "verdict / status"):
        table.add_column(name, justify="right" if name in ("#", "planned", "batches/s", "spread",
                                                            "runs x s") else "left")
    for t in result.trials:
        status = (t.verdict or "") if t.status == MEASURED else \
            t.status + (f": {t.error}" if t.error else "")
        if t.too_short:
            status += " (too short)"
        if id(t) in chosen:
            status = f"ANSWER {status}"
        runs = f"{t.runs}x{t.seconds:.2g}s" if t.seconds else str(t.runs)
        table.add_row(str(t.number), t.point.input, t.phase, t.point.label(), _planned(t),
                      f"{t.rate:,.1f}" if t.rate is not None else "-",
                      f"{t.spread:.0%}" if t.spread is not None else "-", runs, status,
                      style="bold green" if id(t) in chosen else
                      ("dim" if t.status != MEASURED else None))
    return table


def write_csv(result: TuneResult, path: Path) -> Path:
    chosen = {id(a.chosen) for a in result.answers if a.chosen is not None}
    with path.open("w", newline="") as f:
        writer = csv.DictWriter(f, fieldnames=CSV_FIELDS)
        writer.writeheader()
        for t in result.trials:
            p = t.point
            writer.writerow({
                "trial": t.number, "input": p.input, "phase": t.phase, "status": t.status,
                "kind": p.kind, "workers": p.count, "queue_capacity": p.capacity,
                "batch_capacity": p.batch_capacity, "prefetch": p.prefetch,
                "planned_bytes": t.planned_bytes, "budget_bytes": t.budget_bytes,
                "batches_per_s": None if t.rate is None else round(t.rate, 3),
                "samples_per_s": None if t.samples_per_s is None else round(t.samples_per_s, 1),
                "spread": None if t.spread is None else round(t.spread, 4), "runs": t.runs,
                "verdict": t.verdict, "chosen": id(t) in chosen, "error": t.error,
                "seconds": None if t.seconds is None else round(t.seconds, 3),
                "too_short": t.too_short,
                "fetch_cpu_share": None if t.fetch_cpu_share is None else
                round(t.fetch_cpu_share, 4)})
    return path


def write_config(result: TuneResult, tuned_dir: Path, ledger: Ledger) -> Path:
    """``tuned/experiment/tuned.yaml`` (and ``tuned/source/tuned.yaml``)."""
    config = dict(result.config)
    source = config.pop("source", None)
    header = ["@package _global_",
              f"Written by inputkit tune; run it with: {bench_command(tuned_dir.parent)}",
              f"Started from: {result.command}"]
    for line in answer_lines(result):
        header.append(line)
    header += _plan_comments(result, ledger)
    body: dict[str, Any] = {}
    if isinstance(source, dict):
        (tuned_dir / "source").mkdir(parents=True, exist_ok=True)
        (tuned_dir / "source" / "tuned.yaml").write_text(
            "# The source of the config inputkit tune started from (experiment/tuned.yaml).\n"
            + OmegaConf.to_yaml(OmegaConf.create(source)))
        body["defaults"] = [{"override /source": "tuned"}]
    elif source is not None:
        config["source"] = source
    body.update(config)
    path = tuned_dir / "experiment" / "tuned.yaml"
    path.parent.mkdir(parents=True, exist_ok=True)
    text = "".join(f"# {line}\n" for line in header) + OmegaConf.to_yaml(OmegaConf.create(body))
    path.write_text(text)
    return path


def _plan_comments(result: TuneResult, ledger: Ledger) -> list[str]:
    """The memory plan of the tuned config, one term a line."""
    from inputkit.config.spec import load_spec
    from inputkit.planning.memory import plan_memory

    try:
        plan = plan_memory(load_spec(result.config), devices=ledger.devices)
    except Exception as exc:  # noqa: BLE001 - the comment says why there is no plan
        return [f"memory plan: unavailable ({type(exc).__name__}: {exc})"]
    n = plan.device_count
    lines = [f"memory plan on {n} device(s) ({', '.join(plan.devices)}): "
             f"{format_size(plan.host_bytes)} host of memory.budget {plan.budget_text} = "
             f"{format_size(plan.budget_bytes)}"]
    for term in plan.terms:
        lines.append(f"  {term.input} {term.stage}: {term.formula()}"
                     + (f" (x {n} devices)" if term.per_device and n > 1 else ""))
    return lines


def write_outputs(result: TuneResult, run_dir: Path, ledger: Ledger) -> TuneResult:
    """Everything into ``run_dir``; the result with ``files`` filled in."""
    from inputkit.observe import plots
    from inputkit.tuning.plot import plot_trials

    run_dir.mkdir(parents=True, exist_ok=True)
    files = {"config": write_config(result, run_dir / "tuned", ledger),
             "table": write_csv(result, run_dir / "trials.csv")}
    if plots.matplotlib_available() and any(t.measured for t in result.trials):
        files["plot"] = plot_trials(result, run_dir / "tune.png")
    return replace(result, files=files)

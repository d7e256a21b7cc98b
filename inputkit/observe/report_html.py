"""``report.html``: one self-contained page about a bench run, beside ``summary.json``.

A terminal summary scrolls away and ``summary.json`` is for programs; this page is what a
person opens (or attaches to an issue): the verdict with the figures behind it, throughput
and queue fill over time, per input and device, the workers (and Ray's nodes), skipped
samples, the start-up steps, the memory plan and the config. It only reads what bench
already has: the summary dict (the same as ``summary.json``), metrics.jsonl's records and
the memory plan. No script, no network: inline CSS and SVG (report_template.py,
report_charts.py).
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any

from inputkit.config.sizes import format_size
from inputkit.observe.report_charts import run_charts
from inputkit.observe.report_template import empty, esc, page, section, table
from inputkit.startup import STEPS

if TYPE_CHECKING:
    from inputkit.planning.plan_lines import MemoryPlan

FILE_NAME = "report.html"
SKIPPED_ROWS = 200  # the page lists this many skipped samples per device; summary.json 1,000


def write_report(output_dir: Path, summary: dict[str, Any], records: Sequence[dict[str, Any]],
                 plan: MemoryPlan | None = None, plan_verdict: str = "") -> Path:
    """Write ``report.html`` into ``output_dir`` and return its path."""
    path = output_dir / FILE_NAME
    path.write_text(render_report(summary, records, plan, plan_verdict), encoding="utf-8")
    return path


def render_report(summary: dict[str, Any], records: Sequence[dict[str, Any]],
                  plan: MemoryPlan | None = None, plan_verdict: str = "") -> str:
    """The page as a string: ``summary`` as bench writes it to summary.json."""
    stats = summary.get("stats", {})
    coordinators = stats.get("coordinators", [])
    inputs = sorted({c.get("input", "?") for c in coordinators})
    devices = sorted({f"{c.get('device_index')}:{c.get('device')}" for c in coordinators})
    subtitle = (f"input(s) {', '.join(inputs) or '-'} on {', '.join(devices) or '-'}; "
                f"ran {summary.get('wall_s', 0.0):.1f} s"
                + (f"; run directory {summary['run_dir']}" if summary.get("run_dir") else ""))
    return page("inputkit bench report", subtitle, [
        _overview(summary), _verdict(summary), _charts(records), _coordinators(coordinators),
        _workers(summary), _skipped(summary), _startup(summary), _plan(plan, plan_verdict),
        _config(summary)])


def _figure(value: str, label: str) -> str:
    return f'<div class="figure"><b>{esc(value)}</b><span>{esc(label)}</span></div>'


def _overview(summary: dict[str, Any]) -> str:
    s = summary.get("stats", {})
    first = summary.get("startup", {}).get("to_first_batch_s")
    figures = [_figure(f"{s.get('samples_per_s', 0):,.0f}", "samples/s"),
               _figure(f"{s.get('batches_per_s', 0):,.1f}", "batches/s"),
               _figure(f"{s.get('mb_per_s', 0):,.1f}", "MB/s"),
               _figure(f"{s.get('samples', 0):,}", "samples"),
               _figure(f"{s.get('batches', 0):,}", "batches"),
               _figure(f"{summary.get('wall_s', 0):.1f} s", "streamed"),
               _figure(f"{first:.2f} s" if first is not None else "-",
                       "command start to first batch"),
               _figure(format_size(summary.get("peak_buffered_bytes", 0)), "peak buffered")]
    overrides = summary.get("overrides") or []
    line = (f"<p>overrides: <code>{esc(' '.join(overrides))}</code></p>" if overrides
            else "<p>overrides: none (the config's defaults)</p>")
    return section("overview", "Overview", f'<div class="figures">{"".join(figures)}</div>{line}')


def _verdict(summary: dict[str, Any]) -> str:
    parts = [f'<div class="verdict">{esc(line)}</div>' for line in summary.get("diagnosis", [])]
    if not parts:
        parts.append(empty("no verdict: no input delivered a batch"))
    warnings = summary.get("warnings", [])
    if warnings:
        parts.append("<h3>Warnings during the run</h3>")
        parts += [f'<div class="warning">{esc(text)}</div>' for text in warnings]
    rows = []
    for c in summary.get("stats", {}).get("coordinators", []):
        for q in c.get("queues", []):
            span = q.get("elapsed_s") or 0.0
            rows.append([c.get("input"), _device(c), q.get("stage"),
                         f"{q.get('items', 0)}/{q.get('capacity', 0)}",
                         _share(q.get("time_full_s"), span), _share(q.get("time_empty_s"), span),
                         f"{q.get('put_wait_s', 0.0):.2f}", f"{q.get('get_wait_s', 0.0):.2f}",
                         format_size(q.get("peak_bytes", 0))])
    parts.append("<h3>Evidence: each queue over the whole run</h3>"
                 "<p>A queue empty most of the time starves what reads it; full most of the "
                 "time, what fills it waits on what reads it.</p>")
    parts.append(table(["input", "device", "queue", "items now", "full", "empty",
                        "put wait (s)", "get wait (s)", "peak bytes"], rows,
                       numeric=(3, 4, 5, 6, 7, 8)) if rows else empty(
        "no queues: every input ran inline (workers.kind=inline), its whole chain in the "
        "training loop's thread; the verdict reads the time spent inside fetch"))
    return section("verdict", "Verdict", "\n".join(parts))


def _share(part: float | None, whole: float) -> str:
    return f"{100 * (part or 0.0) / whole:.0f}%" if whole else "-"


def _device(c: dict[str, Any]) -> str:
    return f"{c.get('device_index')}:{c.get('device')}"


def _charts(records: Sequence[dict[str, Any]]) -> str:
    charts = run_charts(records)
    body = "\n".join(charts) if charts else empty("no records: bench.json=false, or the run "
                                                 "ended before the first snapshot")
    return section("charts", "Over time", body)


def _ms(value: float | None) -> str:
    return "-" if value is None else f"{value:.1f}"


def _coordinators(coordinators: Sequence[dict[str, Any]]) -> str:
    rows = []
    for c in coordinators:
        queues = {q.get("stage"): q for q in c.get("queues", [])}
        w = c.get("workers", {})
        rows.append([c.get("input"), _device(c), c.get("batch_size"), f"{c.get('batches', 0):,}",
                     f"{c.get('samples', 0):,}", f"{c.get('samples_per_s', 0):,.0f}",
                     f"{c.get('batches_per_s', 0):,.1f}", f"{c.get('mb_per_s', 0):,.1f}",
                     f"{c['first_batch_s']:.2f} s" if c.get("first_batch_s") is not None else "-",
                     *(_full_empty(queues.get(stage)) for stage in ("chunk queue", "batch queue")),
                     f"{_ms(w.get('fetch_p50_ms'))} / {_ms(w.get('fetch_p95_ms'))}",
                     c.get("source", "")])
    body = table(["input", "device", "batch size", "batches", "samples", "samples/s",
                  "batches/s", "MB/s", "first batch after start()", "chunk q full/empty",
                  "batch q full/empty", "fetch p50/p95 (ms)", "source"], rows,
                 numeric=tuple(range(2, 12))) if rows else empty("no input ran")
    return section("inputs", "Per input and device", body)


def _full_empty(q: dict[str, Any] | None) -> str:
    if q is None:
        return "-"
    span = q.get("elapsed_s") or 0.0
    return f"{_share(q.get('time_full_s'), span)} / {_share(q.get('time_empty_s'), span)}"


def _workers(summary: dict[str, Any]) -> str:
    rows = []
    for c in summary.get("stats", {}).get("coordinators", []):
        w = c.get("workers", {})
        rows.append([c.get("input"), _device(c), w.get("kind"), w.get("workers"),
                     ", ".join(str(p) for p in w.get("pids", [])) or "-",
                     f"{w.get('chunks', 0):,}", f"{w.get('samples', 0):,}",
                     f"{w.get('fetch_wall_s', 0.0):.2f}", f"{w.get('fetch_cpu_s', 0.0):.2f}",
                     w.get("retries", 0), w.get("restarts", 0), w.get("skipped_samples", 0),
                     w.get("last_error") or ""])
    parts = [table(["input", "device", "kind", "workers", "pids", "chunks", "samples",
                    "fetch wall s", "fetch CPU s", "retries", "restarts",
                    "skipped samples", "last error"], rows, numeric=(3, 5, 6, 7, 8, 9, 10, 11))
             if rows else empty("no workers ran")]
    auto = summary.get("workers", {}).get("auto", {})
    if auto:
        parts.append("<h3>What workers.kind=auto chose</h3>")
        parts.append(table(["input", "kind", "count", "why", "measured"], [
            [name, choice.get("kind"), choice.get("count"), choice.get("reason", ""),
             ", ".join(f"{k} {v}" for k, v in (choice.get("measured") or {}).items())]
            for name, choice in auto.items() if isinstance(choice, dict)], numeric=(2,)))
    nodes = [[entry.get("input"), _device(entry), n.get("node"), n.get("actors"),
              ", ".join(f"{k} {v}" for k, v in (n.get("states") or {}).items()),
              f"{n.get('chunks', 0):,}", f"{n.get('samples', 0):,}"]
             for entry in summary.get("ray", []) for n in entry.get("nodes", [])]
    if nodes:
        parts.append("<h3>Per node (Ray)</h3>")
        parts.append(table(["input", "device", "node", "actors", "states", "chunks", "samples"],
                           nodes, numeric=(3, 5, 6)))
    return section("workers", "Workers", "\n".join(parts))


def _skipped(summary: dict[str, Any]) -> str:
    entries = summary.get("skipped_samples", [])
    if not entries:
        return section("skipped", "Skipped samples", empty("none: every sample was delivered"))
    parts = []
    for entry in entries:
        rows = skipped_rows(entry.get("samples", []))
        parts.append(f"<p>input {esc(entry.get('input'))} on {esc(_device(entry))}: "
                     f"{entry.get('count', 0):,} skipped"
                     + (f"; the first {SKIPPED_ROWS} by index (all of them in summary.json)"
                        if len(rows) > SKIPPED_ROWS else "") + "</p>")
        parts.append(table(["index", "times", "error"], rows[:SKIPPED_ROWS], numeric=(0, 1)))
    return section("skipped", "Skipped samples", "\n".join(parts))


def skipped_rows(samples: Sequence[dict[str, Any]]) -> list[list[Any]]:
    """[index, times, error]: a sample skipped in each of several epochs is one row."""
    counts: dict[tuple[Any, Any], int] = {}
    for s in samples:
        key = (s.get("index"), s.get("error"))
        counts[key] = counts.get(key, 0) + 1
    return [[index, times, error] for (index, error), times in counts.items()]


def _startup(summary: dict[str, Any]) -> str:
    record = dict(summary.get("startup", {}))
    total = record.pop("to_first_batch_s", None)
    names = {name.replace("/", "_").replace(" ", "_") + "_s": name for name in STEPS}
    rows = [[names.get(key, key.removesuffix("_s").replace("_", " ")), f"{seconds:.3f}",
             _share(seconds, total) if total else "-"] for key, seconds in record.items()]
    if total is not None:
        rows.append(["the command's start to the first batch", f"{total:.3f}", "100%"])
    body = table(["step", "seconds", "of the time to the first batch"], rows, numeric=(1, 2)) \
        if rows else empty("not recorded")
    return section("startup", "Start-up steps", body)


def _plan(plan: MemoryPlan | None, plan_verdict: str) -> str:
    if plan is None:
        return section("plan", "Memory plan", empty(
            "no plan: the sample sizes were unknown before the run (see the bench output)"))
    n = plan.device_count
    rows = [[t.input, t.stage, t.memory, t.holds(),
             format_size(t.bytes) if t.per_device else "-",
             format_size(t.bytes * (n if t.per_device else 1))] for t in plan.terms]
    rows.append(["", "host memory (RAM + shared + pinned)", "", "", "",
                 format_size(plan.host_bytes)])
    lines = "".join(f'<div class="{"bad" if plan.over_budget else "verdict"}">{esc(line)}</div>'
                    for line in plan_verdict.splitlines())
    body = (f"<p>worst case per stage on {n} device(s) ({esc(', '.join(plan.devices))})</p>"
            + table(["input", "stage", "memory", "what it holds", "per device", "in all"], rows,
                    numeric=(4, 5)) + lines)
    return section("plan", "Memory plan", body)


def _config(summary: dict[str, Any]) -> str:
    config = summary.get("config")
    parts = [f"<pre>{esc(_yaml(config))}</pre>" if config is not None else empty("not recorded")]
    sources = summary.get("sources")
    if sources:
        parts.append("<h3>Sources</h3>")
        parts.append(f"<pre>{esc(json.dumps(sources, indent=2, default=str))}</pre>")
    return section("config", "Config", "\n".join(parts))


def _yaml(config: Any) -> str:
    """The composed config as YAML, as Hydra writes it to .hydra/config.yaml."""
    from omegaconf import OmegaConf
    from omegaconf.errors import OmegaConfBaseException

    try:
        return OmegaConf.to_yaml(OmegaConf.create(config))
    except (OmegaConfBaseException, ValueError):  # a value it cannot hold: show the JSON
        return json.dumps(config, indent=2, default=str)

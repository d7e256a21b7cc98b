"""Renderables for the CLI: the progress line, the per-device summary, the sweep table, and
the list of sources.

They only read statistics snapshots; they never touch the pipeline.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import TYPE_CHECKING, Any

from rich.table import Table
from rich.text import Text

from inputkit.kinds.view import view_of
from inputkit.observe.stats import CoordinatorStats, RunnerStats

if TYPE_CHECKING:
    from inputkit.sources.registry import SourceInfo


def _rate(now: float, before: float, dt: float) -> float:
    return (now - before) / dt if dt > 0 else 0.0


def progress_line(snapshot: RunnerStats, previous: RunnerStats | None, elapsed: float,
                  limit: float | None) -> Text:
    """One line: rates over the last interval (or since start), queue fill, elapsed time."""
    if previous is not None and snapshot.elapsed_s > previous.elapsed_s:
        dt = snapshot.elapsed_s - previous.elapsed_s
        samples = _rate(snapshot.samples, previous.samples, dt)
        batches = _rate(snapshot.batches, previous.batches, dt)
        mbs = _rate(snapshot.bytes, previous.bytes, dt) / 1e6
    else:
        samples, batches, mbs = snapshot.samples_per_s, snapshot.batches_per_s, snapshot.mb_per_s
    text = Text()
    text.append(f"{samples:>12,.0f} samples/s", style="bold green")
    text.append(f"  {batches:>9,.1f} batches/s", style="cyan")
    text.append(f"  {mbs:>9,.1f} MB/s", style="magenta")
    for c in snapshot.coordinators:
        fills = " ".join(f"{q.stage.short} {q.items}/{q.capacity}" for q in c.queues)
        fills += view_of(c.workers.kind).progress(c)  # Ray: actors, nodes, in flight
        text.append(f"  [{c.input}@{c.device_index}:{c.device} {fills}]", style="dim")
    clock = f"{elapsed:.1f}s" + (f" of {limit:g}s" if limit is not None else "")
    text.append(f"  {clock}  batches {snapshot.batches:,}")
    return text


def _seconds(value: float | None) -> str:
    return "-" if value is None else f"{value * 1000:.0f} ms" if value < 1 else f"{value:.2f} s"


def _queue_cell(c: CoordinatorStats, index: int) -> str:
    if index >= len(c.queues):
        return "-"
    q = c.queues[index]
    return f"{q.full_fraction:.0%} / {q.empty_fraction:.0%}"


def summary_table(stats: RunnerStats, title: str,
                  first_batch_s: Sequence[float | None] | None = None) -> Table:
    """Per input and device: totals, rates, first-batch latency, queue full/empty shares.

    ``first_batch_s``: each coordinator's first batch as the table shows it (bench: from the
    command's start, what the user waited); default: from the coordinator's start."""
    firsts = list(first_batch_s) if first_batch_s is not None else \
        [c.first_batch_s for c in stats.coordinators]
    table = Table(title=title, title_justify="left", header_style="bold")
    for name, justify in [("input", "left"), ("device", "left"), ("batches", "right"),
                          ("samples", "right"), ("samples/s", "right"), ("batches/s", "right"),
                          ("MB/s", "right"), ("first batch", "right"),
                          ("chunk q full/empty", "right"), ("batch q full/empty", "right"),
                          ("fetch p50/p95", "right")]:
        table.add_column(name, justify=justify)  # type: ignore[arg-type]
    for c, first in zip(stats.coordinators, firsts, strict=True):
        table.add_row(
            c.input, f"{c.device_index}:{c.device}", f"{c.batches:,}", f"{c.samples:,}",
            f"{c.samples_per_s:,.0f}", f"{c.batches_per_s:,.1f}", f"{c.mb_per_s:,.1f}",
            _seconds(first),
            _queue_cell(c, 0), _queue_cell(c, 1),
            f"{c.workers.fetch_p50_ms:.1f} / {c.workers.fetch_p95_ms:.1f} ms",
        )
    if len(stats.coordinators) > 1:
        table.add_row("all", "", f"{stats.batches:,}", f"{stats.samples:,}",
                      f"{stats.samples_per_s:,.0f}", f"{stats.batches_per_s:,.1f}",
                      f"{stats.mb_per_s:,.1f}", "", "", "", "", style="bold")
    return table


def skipped_lines(stats: RunnerStats, more: str = "see summary.json") -> list[str]:
    """One line per input and device that skipped samples (``failures.on_error=skip``):
    ``input 'main' on 0:cpu: 3 samples skipped (indices 5, 123, 777; see summary.json)``."""
    from inputkit.observe.dashboard import skipped_text

    lines = []
    for c in stats.coordinators:
        text = skipped_text(c.workers, more)
        if text is not None:
            lines.append(f"input '{c.input}' on {c.device_index}:{c.device}: {text}")
    return lines


def skipped_record(stats: RunnerStats) -> list[dict[str, Any]]:
    """summary.json's ``skipped_samples``: per input and device that skipped any, the count
    and the first 1,000 skipped, sorted by index, each with its error (which names the file,
    for file sources)."""
    return [{"input": c.input, "device_index": c.device_index, "device": c.device,
             "count": c.workers.skipped_samples,
             "samples": [{"index": i, "error": e} for i, e in
                         sorted(zip(c.workers.skipped_indices, c.workers.skipped_errors,
                                    strict=True))]}
            for c in stats.coordinators if c.workers.skipped_samples]


def kind_records(stats: RunnerStats) -> dict[str, list[dict[str, Any]]]:
    """summary.json's entries of the worker kinds that have their own (its view's ``key``:
    ``ray``, where the actors ran and what each node did), one per input and device."""
    found: dict[str, list[dict[str, Any]]] = {}
    for c in stats.coordinators:
        view = view_of(c.workers.kind)
        entry = view.summary(c) if view.key else None
        if entry is not None:
            found.setdefault(view.key, []).append(entry)  # type: ignore[arg-type]
    return found


def ray_record(stats: RunnerStats) -> list[dict[str, Any]]:
    """summary.json's ``ray``: per input and device with Ray workers (kinds/ray_view.py)."""
    return kind_records(stats).get("ray", [])


def kind_summary_lines(stats: RunnerStats) -> list[str]:
    """The end-of-run lines of each input whose worker kind has its own (Ray: where the
    actors ran, start-up, one line a node, duplicates and spill)."""
    return [line for c in stats.coordinators for line in view_of(c.workers.kind).summary_lines(c)]


ray_summary_lines = kind_summary_lines  # (its old name)


def sweep_table(points: Sequence[tuple[Sequence[str], dict[str, Any]]]) -> Table:
    """One row per sweep point: overrides, totals, peak buffered bytes; the best in bold and the
    cheapest point within 5% of the best throughput marked."""
    from inputkit.config.sizes import format_size
    from inputkit.observe.plots import cheapest_within

    table = Table(title="inputkit bench sweep", title_justify="left", header_style="bold")
    for name in ["#", "overrides", "samples/s", "batches/s", "MB/s", "first batch",
                 "peak buffered", "vs best", ""]:
        table.add_column(name, justify="left" if name in ("overrides", "") else "right")
    done = [summary for _, summary in points if "stats" in summary]
    rates = [s["stats"]["samples_per_s"] for s in done]
    best = max(rates, default=0.0)
    cheapest = cheapest_within([{"samples_per_s": s["stats"]["samples_per_s"],
                                 "peak_buffered_bytes": s.get("peak_buffered_bytes", 0),
                                 "index": i} for i, s in enumerate(done)]) if done else None
    done_index = 0
    for index, (overrides, summary) in enumerate(points):
        if "stats" not in summary:
            error = summary.get("error")
            table.add_row(str(index), " ".join(overrides), f"failed: {type(error).__name__}",
                          "", "", "", "", "", "", style="red")
            continue
        totals = summary["stats"]
        firsts = [c["first_batch_s"] for c in totals["coordinators"] if c["first_batch_s"] is not None]
        share = totals["samples_per_s"] / best if best > 0 else 0.0
        mark = "cheapest within 5% of best" if cheapest is not None \
            and cheapest["index"] == done_index else ""
        done_index += 1
        table.add_row(
            str(index), " ".join(overrides) or "(defaults)", f"{totals['samples_per_s']:,.0f}",
            f"{totals['batches_per_s']:,.1f}", f"{totals['mb_per_s']:,.1f}",
            _seconds(max(firsts) if firsts else None),
            format_size(summary.get("peak_buffered_bytes", 0)), f"{share:.0%}", mark,
            style="bold" if best > 0 and totals["samples_per_s"] == best else None,
        )
    return table


# How a source is read, by SourceInfo.kind: its own fetch(), or by index (len() and
# read(indices): an indexable source), or read(indices) with no len().
_READS = {"fetch": "fetch()", "indexable": "index", "read": "read(indices), with no len()"}


def reads_by(kind: str) -> str:
    """``fetch, indexable`` as ``fetch() or by index``: the words that follow 'reads by'."""
    return " or by ".join(_READS.get(k.strip(), k.strip()) for k in kind.split(",") if k.strip())


def sources_table(found: Sequence[SourceInfo]) -> Table:
    """``inputkit sources`` on a terminal: one row per source, long cells folded."""
    table = Table(title="inputkit sources", show_lines=True)
    for column in ("name", "_target_", "from", "reads by", "config keys", "what it is"):
        table.add_column(column, overflow="fold")
    for info in found:
        keys = "\n".join(f"{k}={v}" if v else k for k, v in info.keys)
        what = Text(info.summary) if info.error is None else \
            Text(f"cannot import: {info.error}", style="red")
        table.add_row(info.name, info.target, info.origin, reads_by(info.kind), keys, what)
    return table


def sources_lines(found: Sequence[SourceInfo]) -> list[str]:
    """``inputkit sources`` off a terminal: plain lines that keep every name whole."""
    lines: list[str] = []
    for info in found:
        if lines:
            lines.append("")
        how = f"; reads by {reads_by(info.kind)}" if info.kind else ""
        lines.append(f"{info.name}: {info.target} ({info.origin}{how})")
        if info.error is not None:
            lines.append(f"    cannot import: {info.error}")
            continue
        if info.summary:
            lines.append(f"    {info.summary}")
        if info.keys:
            lines.append("    keys: " + ", ".join(f"{k}={v}" if v else k for k, v in info.keys))
    return lines

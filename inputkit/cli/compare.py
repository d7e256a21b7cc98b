"""Rendering for ``inputkit compare``: one table of every loader per workload, then the goals."""

from __future__ import annotations

from typing import Any

from rich.console import Console
from rich.table import Table

GOALS = {  # workload: (what, threshold) -- figures to print, not assertions
    "w1": [("inputkit / best DataLoader", "torch", 10.0)],
    "w2": [("inputkit / best DataLoader", "torch", 3.0)],
    "w3": [("inputkit / ideal", "limit", 0.97)],
    "w4": [("inputkit / cores x 1 worker", "limit", 0.9), ("inputkit / best DataLoader", "torch", 1.25)],
}


def _ms(seconds: float | None) -> str:
    return "-" if seconds is None else f"{seconds * 1000:,.0f} ms"


def compare_table(results: list[dict[str, Any]]) -> Table:
    table = Table(title="inputkit compare", title_justify="left", header_style="bold")
    for name in ["workload", "loader", "batches/s", "MB/s", "first batch", "peak PSS",
                 "vs DataLoader", "vs limit"]:
        table.add_column(name, justify="left" if name in ("workload", "loader") else "right")
    for result in results:
        workload = result["workload"]
        best = result["best_torch"].batches_per_s
        limit = result["limit"]
        rows = [result["inputkit"], *result["torch"]]
        for index, m in enumerate(rows):
            table.add_row(
                workload.title if index == 0 else "", m.loader, f"{m.batches_per_s:,.1f}",
                f"{m.mb_per_s:,.0f}", _ms(m.first_batch_s),
                "-" if m.peak_mb is None else f"{m.peak_mb:,.0f} MB",
                f"{m.batches_per_s / best:.2f}x" if best else "-",
                f"{m.batches_per_s / limit:.2f}" if limit else "-",
                style="bold" if index == 0 else None,
            )
        table.add_row("", f"limit: {result['limit_how']}", f"{limit:,.1f}",
                      f"{limit * result['batch_bytes'] / 1e6:,.0f}", "", "", "", "1.00",
                      style="dim", end_section=True)
    return table


def goal_lines(results: list[dict[str, Any]], startup_s: float | None) -> list[str]:
    lines = []
    for result in results:
        key = result["workload"].key
        ours = result["inputkit"].batches_per_s
        for what, against, threshold in GOALS.get(key, []):
            base = result["best_torch"].batches_per_s if against == "torch" else result["limit"]
            ratio = ours / base if base else 0.0
            mark = "met" if ratio >= threshold else "MISSED"
            lines.append(f"{key.upper()}: {what} = {ratio:.2f} (goal >= {threshold:g}): {mark}")
    if startup_s is not None:
        mark = "met" if startup_s <= 0.3 else "MISSED"
        lines.append(f"first batch on 2 devices x 4 process workers: {startup_s * 1000:.0f} ms "
                     f"(goal <= 300 ms): {mark}")
    return lines


def print_report(console: Console, results: list[dict[str, Any]], startup_s: float | None) -> None:
    console.print(compare_table(results))
    for line in goal_lines(results, startup_s):
        console.print(line, highlight=False, markup=False)

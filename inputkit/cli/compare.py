"""Rendering for ``inputkit compare``: one table of inputkit and every peer per workload.

Figures only: the project's own targets for these ratios are in docs/benchmarks.md,
not in the command's output.
"""

from __future__ import annotations

from typing import Any

from rich.console import Console
from rich.table import Table


def _ms(seconds: float | None) -> str:
    return "-" if seconds is None else f"{seconds * 1000:,.0f} ms"


def compare_table(results: list[dict[str, Any]]) -> Table:
    table = Table(title="inputkit compare", title_justify="left", header_style="bold")
    for name in ["workload", "loader", "batches/s", "MB/s", "first batch", "peak PSS",
                 "vs best peer", "vs limit"]:
        table.add_column(name, justify="left" if name in ("workload", "loader") else "right")
    for result in results:
        workload = result["workload"]
        best = result["best_peer"].batches_per_s
        limit = result["limit"]
        rows = [result["inputkit"], *result["peers"]]
        for index, m in enumerate(rows):
            table.add_row(
                workload.title if index == 0 else "", m.loader, f"{m.batches_per_s:,.1f}",
                f"{m.mb_per_s:,.0f}", _ms(m.first_batch_s),
                "-" if m.peak_mb is None else f"{m.peak_mb:,.0f} MB",
                f"{m.batches_per_s / best:.2f}x" if best else "-",
                f"{m.batches_per_s / limit:.2f}" if limit else "-",
                style="bold" if index == 0 else None,
            )
        for peer, reason in result["skipped"]:
            table.add_row("", f"{peer.label(result['spec'])}: skipped, {reason}",
                          "-", "-", "-", "-", "-", "-", style="dim")
        table.add_row("", f"limit: {result['limit_how']}", f"{limit:,.1f}",
                      f"{limit * result['batch_bytes'] / 1e6:,.0f}", "", "", "", "1.00",
                      style="dim", end_section=True)
    return table


def print_report(console: Console, results: list[dict[str, Any]], startup_s: float | None) -> None:
    console.print(compare_table(results))
    if startup_s is not None:
        console.print(f"first batch on 2 devices x 4 process workers: {startup_s * 1000:.0f} ms "
                      "(cold start)", highlight=False, markup=False)

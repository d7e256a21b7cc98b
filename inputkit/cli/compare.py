"""Rendering for ``inputkit compare``: one table of inputkit and every peer per workload
(W1-W4), and W5's own table in images (its peers and ratios differ).

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
        ours = result.get("inputkit_rows") or [result["inputkit"]]
        rows = [*ours, *result["peers"]]
        for index, m in enumerate(rows):
            table.add_row(
                workload.title if index == 0 else "", m.loader, f"{m.batches_per_s:,.1f}",
                f"{m.mb_per_s:,.0f}", _ms(m.first_batch_s),
                "-" if m.peak_mb is None else f"{m.peak_mb:,.0f} MB",
                f"{m.batches_per_s / best:.2f}x" if best else "-",
                f"{m.batches_per_s / limit:.2f}" if limit else "-",
                style="bold" if m is result["inputkit"] else None,
            )
        for peer, reason in result["skipped"]:
            table.add_row("", f"{peer.label(result['spec'])}: skipped, {reason}",
                          "-", "-", "-", "-", "-", "-", style="dim")
        table.add_row("", f"limit: {result['limit_how']}", f"{limit:,.1f}",
                      f"{limit * result['batch_bytes'] / 1e6:,.0f}", "", "", "", "1.00",
                      style="dim", end_section=True)
    return table


def _ratio(value: float, to: Any) -> str:
    return f"{value / to.samples_per_s:.2f}x" if to is not None and to.samples_per_s else "-"


def images_table(result: dict[str, Any]) -> Table:
    """W5: images/s, CPU-ms per image, first batch, peak PSS, and the ratios to the faster
    DataLoader, to SPDL and to the limit, for both of inputkit's worker kinds and every peer."""
    workload = result["workload"]
    table = Table(title=f"{workload.title}: {result['about']}", title_justify="left",
                  header_style="bold")
    for name in ["loader", "images/s", "CPU-ms/image", "first batch", "peak PSS",
                 "vs best DataLoader", "vs SPDL", "vs limit"]:
        table.add_column(name, justify="left" if name == "loader" else "right")
    best, spdl, limit = result["best_dataloader"], result["spdl"], result["limit_images"]
    headline = result["inputkit"]
    for m in [*result["inputkit_rows"], *result["peers"]]:
        rate = m.samples_per_s or 0.0
        table.add_row(
            m.loader, f"{rate:,.0f}",
            "-" if m.cpu_ms_per_sample is None else f"{m.cpu_ms_per_sample:.2f}",
            _ms(m.first_batch_s), "-" if m.peak_mb is None else f"{m.peak_mb:,.0f} MB",
            _ratio(rate, best), _ratio(rate, spdl), f"{rate / limit:.2f}" if limit else "-",
            style="bold" if m is headline else None)
    for peer, reason in result["skipped"]:
        table.add_row(f"{peer.label(result['spec'])}: skipped, {reason}",
                      "-", "-", "-", "-", "-", "-", "-", style="dim")
    table.add_row(f"limit: {result['limit_how']}", f"{limit:,.0f}", "", "", "", "", "", "1.00",
                  style="dim")
    return table


def print_report(console: Console, results: list[dict[str, Any]], startup_s: float | None) -> None:
    batches = [r for r in results if not r.get("images")]
    if batches:
        console.print(compare_table(batches))
    for result in results:
        if not result.get("images"):
            continue
        if "skipped_reason" in result:
            console.print(f"{result['workload'].title}: skipped, {result['skipped_reason']}",
                          highlight=False, markup=False)
        else:
            console.print(images_table(result))
    if startup_s is not None:
        console.print(f"first batch on 2 devices x 4 process workers: {startup_s * 1000:.0f} ms "
                      "(cold start)", highlight=False, markup=False)

"""Rendering for ``inputkit compare``: one table of inputkit and every peer per workload
(W1-W4), and W5's own table in images (its peers and ratios differ).

Figures only: the project's own targets for these ratios are in docs/benchmarks.md,
not in the command's output.
"""

from __future__ import annotations

from typing import Any

from rich.console import Console
from rich.markup import escape
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
            table.add_row("", escape(f"{peer.label(result['spec'])}: skipped, {reason}"),
                          "-", "-", "-", "-", "-", "-", style="dim")
        table.add_row("", f"limit: {result['limit_how']}", f"{limit:,.1f}",
                      f"{limit * result['batch_bytes'] / 1e6:,.0f}", "", "", "", "1.00",
                      style="dim", end_section=True)
    return table


def _ratio(value: float, to: Any) -> str:
    return f"{value / to.samples_per_s:.2f}x" if to is not None and to.samples_per_s else "-"


def _fastest_by_decoder(peers: list[Any]) -> dict[str | None, Any]:
    fastest: dict[str | None, Any] = {}
    for m in peers:
        decoder = m.notes.get("decoder")
        if decoder not in fastest or m.batches_per_s > fastest[decoder].batches_per_s:
            fastest[decoder] = m
    return fastest


def images_table(result: dict[str, Any]) -> Table:
    """W5: images/s, CPU-ms per image, first batch, peak PSS, and the ratios to the fastest
    peer, to the fastest peer with the row's own decoder, to the fastest Pillow peer and to
    the limit, for inputkit's rows and every peer."""
    workload = result["workload"]
    table = Table(title=f"{workload.title}: {result['about']}", title_justify="left",
                  header_style="bold")
    for name in ["loader", "images/s", "CPU-ms/image", "first batch", "peak PSS",
                 "vs best peer", "vs same decoder", "vs Pillow peer", "vs limit"]:
        table.add_column(name, justify="left" if name == "loader" else "right")
    best, pillow, limit = result["best_peer"], result["best_pillow"], result["limit_images"]
    same = _fastest_by_decoder(result["peers"])
    headline = result["inputkit"]
    for m in [*result["inputkit_rows"], *result["peers"]]:
        rate = m.samples_per_s or 0.0
        table.add_row(
            m.loader, f"{rate:,.0f}",
            "-" if m.cpu_ms_per_sample is None else f"{m.cpu_ms_per_sample:.2f}",
            _ms(m.first_batch_s), "-" if m.peak_mb is None else f"{m.peak_mb:,.0f} MB",
            _ratio(rate, best), _ratio(rate, same.get(m.notes.get("decoder"))),
            _ratio(rate, pillow), f"{rate / limit:.2f}" if limit else "-",
            style="bold" if m is headline else None)
    for peer, reason in result["skipped"]:
        # escaped: an install hint such as 'inputkit-ml[peers]' is not rich markup
        table.add_row(escape(f"{peer.label(result['spec'])}: skipped, {reason}"),
                      "-", "-", "-", "-", "-", "-", "-", "-", style="dim")
    table.add_row(f"limit: {result['limit_how']}", f"{limit:,.0f}", "", "", "", "", "", "",
                  "1.00", style="dim")
    return table


def _times(a: Any, b: Any) -> str:
    return f"{a.samples_per_s / b.samples_per_s:.2f}x"


def lead_lines(result: dict[str, Any]) -> list[str]:
    """How much of inputkit's lead over the fastest Pillow peer is the loader's and how much
    the decoder's: the lead is (inputkit / same-decoder peer) x (that peer / Pillow peer)."""
    ours, same, pillow = result["inputkit"], result["same_decoder"], result["best_pillow"]
    best = result["best_peer"]
    lines = []
    if best is not None:
        lines.append(f"{ours.loader} against the fastest peer, {best.loader}: {_times(ours, best)}")
    if pillow is not None:
        lines.append(f"lead over {pillow.loader}: {_times(ours, pillow)}")
        if same is not None and same is not pillow:
            lines.append(f"  = {_times(ours, same)} the loader ({ours.loader} against "
                         f"{same.loader}, the same decoder)")
            lines.append(f"  x {_times(same, pillow)} the decoder ({same.loader} against "
                         f"{pillow.loader})")
        if result["inputkit_pillow"] is not None:
            mine = result["inputkit_pillow"]
            lines.append(f"{mine.loader} against {pillow.loader}: {_times(mine, pillow)} (the "
                         "loader's share, both decoding with Pillow)")
    return lines


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
            for line in lead_lines(result):
                console.print(line, highlight=False, markup=False)
    if startup_s is not None:
        console.print(f"first batch on 2 devices x 4 process workers: {startup_s * 1000:.0f} ms "
                      "(cold start)", highlight=False, markup=False)

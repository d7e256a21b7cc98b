"""``bench.report=html``: bench's report.html, written beside summary.json (observe/report_html.py).

Kept apart from the run and the terminal report so that bench only calls one function; the
memory plan's verdict text is ``inputkit plan``'s own (cli/plan.py), so the page and the
command never word it differently.
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path
from typing import Any

from rich.console import Console

from inputkit.config.spec import RunSpec


def write_bench_report(console: Console, spec: RunSpec, output_dir: Path | None,
                       summary: dict[str, Any], records: Sequence[dict[str, Any]],
                       plan: Any) -> Path | None:
    """report.html in the run directory when ``bench.report=html`` and there is one; its path."""
    if output_dir is None or spec.bench_report != "html":
        return None
    from inputkit.cli.plan import verdict
    from inputkit.observe.report_html import write_report

    path = write_report(output_dir, summary, records, plan,
                        verdict(plan) if plan is not None else "")
    console.print(f"report: {path}", highlight=False, markup=False)
    return path

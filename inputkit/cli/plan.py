"""``inputkit plan``: the memory plan as a table, the verdict against the budget, and fixes."""

from __future__ import annotations

from rich.console import Console
from rich.table import Table

from inputkit.config.sizes import format_size
from inputkit.planning.memory import DISK, GPU, MemoryPlan
from inputkit.planning.memory_terms import BYTE_LIMIT

EXIT_OVER_BUDGET = 3


def plan_table(plan: MemoryPlan) -> Table:
    n = plan.device_count
    title = (f"inputkit plan: worst case per stage on {n} device(s) "
             f"({', '.join(plan.devices)})")
    table = Table(title=title, title_justify="left", header_style="bold")
    for name in ["input", "stage", "memory", "what it holds", "per device", "in all"]:
        table.add_column(name, justify="right" if name in ("per device", "in all") else "left")
    top = plan.dominating()
    for term in plan.terms:
        in_all = term.bytes * (n if term.per_device else 1)
        table.add_row(term.input, term.stage, term.memory,
                      term.holds(),
                      format_size(term.bytes) if term.per_device else "-",
                      format_size(in_all), style="bold red" if term is top and plan.over_budget
                      else None)
    table.add_section()
    table.add_row("", "host memory (RAM + shared + pinned)", "", "", "",
                  format_size(plan.host_bytes), style="bold")
    disk = [t for t in plan.terms if t.memory == DISK and t.unit != BYTE_LIMIT]
    if disk:  # the object-store cache: on disk, apart from the budget
        table.add_row("", "disk (object-store cache, not in the budget)", "", "", "",
                      format_size(sum(t.bytes for t in disk)) + " in use of "
                      + format_size(sum(t.bytes for t in plan.terms
                                        if t.memory == DISK and t.unit == BYTE_LIMIT)), style="bold")
    if any(t.memory == GPU for t in plan.terms):
        table.add_row("", "GPU memory", "", "", format_size(plan.gpu_bytes_per_device), "",
                      style="bold")
    return table


def verdict(plan: MemoryPlan) -> str:
    budget = f"{format_size(plan.budget_bytes)} (memory.budget={plan.budget_text})"
    if not plan.over_budget:
        headroom = plan.budget_bytes - plan.host_bytes
        return (f"fits: {format_size(plan.host_bytes)} of {budget}, "
                f"headroom {format_size(headroom)}")
    top = plan.dominating()
    n = plan.device_count if top.per_device else 1
    lines = [f"over budget: {format_size(plan.host_bytes)} > {budget}",
             f"largest term: input '{top.input}' {top.stage}: {top.formula()}"
             + (f" per device, x {n} devices = {format_size(top.bytes * n)}" if n > 1 else "")]
    lines += [f"fix: {tip}" for tip in plan.suggestions]
    lines.append("to run anyway: memory.allow_over_budget=true")
    return "\n".join(lines)


def print_plan(console: Console, plan: MemoryPlan) -> None:
    console.print(plan_table(plan))
    console.print(verdict(plan), markup=False, highlight=False)

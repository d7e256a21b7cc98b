"""``tune.png``: throughput against planned memory for every trial, the answer marked.

One panel per input. Each measured trial is a dot (colour: worker kind), the starting
config a diamond, the answer a star; points over ``memory.budget`` (never started) are
crosses on the floor at their planned memory, right of the budget line. Drawn on the Agg
canvas directly (no pyplot), like :mod:`inputkit.observe.plots`.
"""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING

from inputkit.tuning.ledger import OVER_BUDGET

if TYPE_CHECKING:
    from inputkit.tuning import TuneResult

_MB = 1e6


def plot_trials(result: TuneResult, path: Path) -> Path:
    from inputkit.observe.plots import import_quietly

    import_quietly()  # no "generated new fontManager" line in inputkit tune's output
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure

    answers = [a for a in result.answers if any(t.point.input == a.input for t in result.trials)]
    fig = Figure(figsize=(10.0, 4.5 * max(1, len(answers))), dpi=110)
    FigureCanvasAgg(fig)
    axes = fig.subplots(max(1, len(answers)), 1, squeeze=False)[:, 0]
    kinds = list(dict.fromkeys(t.point.kind for t in result.trials))
    for ax, answer in zip(axes, answers, strict=False):
        trials = [t for t in result.trials if t.point.input == answer.input]
        searched = [t for t in trials if t.measured and t.phase != "final"]
        for i, kind in enumerate(kinds):
            mine = [t for t in searched if t.point.kind == kind]
            if mine:
                ax.scatter([(t.planned_bytes or 0) / _MB for t in mine], [t.rate for t in mine],
                           s=36, color=f"C{i % 10}", zorder=3, label=f"{kind} workers")
        # Labels alternate above and below in memory order, so neighbours do not collide.
        for rank, t in enumerate(sorted(searched, key=lambda t: (t.planned_bytes or 0, t.rate))):
            ax.annotate(t.point.label(), ((t.planned_bytes or 0) / _MB, t.rate or 0.0),
                        fontsize=7, xytext=(6, 6 if rank % 2 == 0 else -10),
                        textcoords="offset points", color="dimgray")
        over = [t for t in trials if t.status == OVER_BUDGET]
        if over:
            ax.scatter([(t.planned_bytes or 0) / _MB for t in over], [0.0] * len(over), marker="x",
                       s=40, color="tab:gray", zorder=3, label="over budget (never started)")
            budget = next(t.budget_bytes for t in over if t.budget_bytes)
            ax.axvline(budget / _MB, color="tab:red", ls=":", lw=1.0, label="memory.budget")
        if searched:
            best = max(t.rate or 0.0 for t in searched)
            ax.axhline(0.95 * best, color="tab:gray", ls="--", lw=1.0, label="95% of the best")
        if answer.target is not None:
            ax.axhline(answer.target, color="tab:green", ls="-.", lw=1.0, label="--target")
        start = answer.start
        if start is not None and start.measured:
            ax.scatter([(start.planned_bytes or 0) / _MB], [start.rate], s=110, marker="D",
                       facecolor="none", edgecolor="black", zorder=4, label="starting config")
        chosen = answer.chosen
        if chosen is not None:
            ax.scatter([(chosen.planned_bytes or 0) / _MB], [chosen.rate], s=260, marker="*",
                       color="tab:red", edgecolor="black", zorder=5,
                       label=f"answer: {chosen.point.label()}")
        ax.set_title(f"inputkit tune, input '{answer.input}': throughput against planned memory",
                     fontsize=10, loc="left")
        ax.set_xlabel("planned host memory (MB, the memory plan's worst case)")
        ax.set_ylabel("batches/s (slowest device)")
        xs = [(t.planned_bytes or 0) / _MB for t in trials if t.planned_bytes]
        if xs and max(xs) > 10 * min(xs):  # plans an order of magnitude apart: a log axis
            ax.set_xscale("log")
            ax.set_xlabel("planned host memory (MB, log scale; the memory plan's worst case)")
        ax.margins(x=0.1, y=0.12)
        top = ax.get_ylim()[1]
        ax.set_ylim(-0.03 * top, top)  # crosses of over-budget points sit just above the floor
        if chosen is not None and chosen.rate is not None:
            ax.text(1.01, 0.35, f"answer: {chosen.point.label()}\n{chosen.rate:,.1f} batches/s\n"
                    f"planned {(chosen.planned_bytes or 0) / _MB:,.2f} MB", transform=ax.transAxes,
                    fontsize=8, va="top", ha="left",
                    bbox={"boxstyle": "round", "facecolor": "white", "edgecolor": "tab:red"})
        ax.grid(True, alpha=0.3)
        ax.legend(loc="upper left", bbox_to_anchor=(1.01, 1.0), fontsize=8, frameon=False,
                  borderaxespad=0.0)
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.tight_layout()
    fig.savefig(path, format="png", dpi=110)
    return path

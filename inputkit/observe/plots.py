"""Optional PNG plots of a run's ``metrics.jsonl`` and of a parameter sweep.

matplotlib is an optional extra (``inputkit-ml[plot]``): it is imported lazily, only
inside the functions that draw, so the rest of inputkit never pays for it or needs
it. Figures are drawn on the Agg canvas directly (no pyplot), so plotting leaves no
global figure state behind and works in headless processes and threads.
"""

from __future__ import annotations

import importlib.util
import json
import math
from pathlib import Path
from typing import Any

INSTALL_HINT = "pip install 'inputkit-ml[plot]'  (or: pip install matplotlib)"

_MB = 1e6
_SIZE_IN = (10.0, 7.0)
_RUN_SIZE_IN = (10.0, 9.0)  # four panels
_DPI = 110
_STAGE_STYLES = ("-", "-.", ":")  # chunk, batch, device prefetch (in the order they appear)


def matplotlib_available() -> bool:
    """Whether plots can be drawn, checked without importing matplotlib (it is slow to import)."""
    return importlib.util.find_spec("matplotlib") is not None


def load_records(path: Path) -> list[dict[str, Any]]:
    """Read ``metrics.jsonl``; a bad line is an error naming file and line, never silently dropped."""
    path = Path(path)
    records: list[dict[str, Any]] = []
    for lineno, line in enumerate(path.read_text(encoding="utf-8").splitlines(), start=1):
        if not line.strip():
            continue
        try:
            record = json.loads(line)
        except json.JSONDecodeError as exc:
            raise ValueError(f"{path}:{lineno}: not a JSON record ({exc.msg})") from exc
        if not isinstance(record, dict):
            raise ValueError(f"{path}:{lineno}: expected a JSON object, got {type(record).__name__}")
        records.append(record)
    return records


def cheapest_within(points: list[dict[str, Any]], tolerance: float = 0.05) -> dict[str, Any]:
    """The point with the least peak buffered memory among those within ``tolerance`` of the best.

    Throughput a few percent below the best is usually noise; memory is not, so this
    is the setting worth recommending. Ties on memory go to the faster point, then to
    the earlier one. Returns one of the given dicts (not a copy).
    """
    if not 0.0 <= tolerance < 1.0:
        raise ValueError(f"tolerance must be in [0, 1), got {tolerance}")
    valid = [p for p in points if not math.isnan(float(p["samples_per_s"]))]
    if not valid:
        raise ValueError("no sweep points with a throughput to compare")
    best = max(float(p["samples_per_s"]) for p in valid)
    # A hair of slack so that a point exactly at the threshold is not lost to rounding.
    threshold = best * (1.0 - tolerance) - 1e-9 * abs(best)
    near = [p for p in valid if float(p["samples_per_s"]) >= threshold]
    return min(near, key=lambda p: (int(p["peak_buffered_bytes"]), -float(p["samples_per_s"])))


def import_quietly() -> None:
    """Import matplotlib's font manager with its INFO records held back.

    On its first import in a fresh MPLCONFIGDIR, matplotlib builds its font cache and logs
    "generated new fontManager" at INFO; under Hydra's logging (INFO to the console) that
    line lands in the middle of a command's output. Warnings still show (a slow build says
    "Matplotlib is building the font cache"). Every drawing function calls this first.
    """
    import logging

    logger = logging.getLogger("matplotlib.font_manager")
    level = logger.level
    logger.setLevel(max(level, logging.WARNING))
    try:
        import matplotlib.font_manager  # noqa: F401  (builds or loads the font cache)
    finally:
        logger.setLevel(level)


def _figure(nrows: int, size_in: tuple[float, float] = _SIZE_IN) -> tuple[Any, Any]:
    """A pyplot-free Agg figure, so nothing is registered globally or left open."""
    try:
        import_quietly()
        from matplotlib.backends.backend_agg import FigureCanvasAgg
        from matplotlib.figure import Figure
    except ImportError as exc:  # pragma: no cover - depends on the environment
        raise ImportError(f"plots need matplotlib: {INSTALL_HINT}") from exc
    fig = Figure(figsize=size_in, dpi=_DPI)
    FigureCanvasAgg(fig)
    axes = fig.subplots(nrows, 1, sharex=True, squeeze=False)[:, 0]
    return fig, axes


def _save(fig: Any, path: Path) -> Path:
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.tight_layout()
    fig.savefig(path, format="png", dpi=_DPI)
    return path


def _legend(ax: Any, handles: list[Any]) -> None:
    """Legend outside the panel, on its right, so it never hides data."""
    ax.legend(handles=handles, loc="upper left", bbox_to_anchor=(1.01, 1.0), fontsize=8,
              frameon=False, borderaxespad=0.0)


def _coordinator_name(c: dict[str, Any]) -> str:
    return f"{c.get('input', '?')}@{c.get('device', c.get('device_index', '?'))}"


def _fill(q: dict[str, Any]) -> float:
    """Bytes against the byte cap when the queue has one (that is what blocks), else items."""
    if q.get("max_bytes"):
        return q.get("bytes", 0) / q["max_bytes"]
    return q.get("items", 0) / q["capacity"] if q.get("capacity") else math.nan


def _thousands() -> Any:
    from matplotlib.ticker import FuncFormatter

    return FuncFormatter(lambda value, _pos: f"{value:,.0f}")


def plot_run(records: list[dict[str, Any]], path: Path, title: str) -> Path:
    """Throughput and queue fill over time, to see whether the pipeline keeps up and where it stalls."""
    return _save(run_figure(records, title), path)


def _series(records: list[dict[str, Any]], key: str, scale: float = 1.0) -> list[float] | None:
    values = [r.get(key) for r in records]
    if all(v is None for v in values):
        return None
    return [math.nan if v is None else v / scale for v in values]


def run_figure(records: list[dict[str, Any]], title: str) -> Any:
    """The figure behind ``metrics.png``: four panels over time, one quantity each, so that
    no line hides another: samples/s, MB/s, each queue's fill, buffered bytes in MB."""
    if not records:
        raise ValueError("no metrics records to plot")
    fig, (rate, volume, fill, memory) = _figure(4, _RUN_SIZE_IN)
    t = [r["t"] for r in records]
    fig.suptitle(title)

    # samples/s: the total, and per coordinator when there are several.
    handles = rate.plot(t, [r["samples_per_s"] for r in records], color="black", lw=2,
                        label="total")
    names: dict[tuple[Any, Any], str] = {}
    for r in records:
        for c in r.get("coordinators", []):
            names.setdefault((c.get("input"), c.get("device_index")), _coordinator_name(c))
    if len(set(names.values())) < len(names):  # devices of one name (cpu, cpu): add the index
        names = {key: f"{key[0]}@{key[1]}:{name.split('@', 1)[1]}" for key, name in names.items()}
    colours = {key: f"C{i % 10}" for i, key in enumerate(names)}
    if len(names) > 1:
        for key, name in names.items():
            ys = [next((c["samples_per_s"] for c in r.get("coordinators", [])
                        if (c.get("input"), c.get("device_index")) == key), math.nan) for r in records]
            handles += rate.plot(t, ys, color=colours[key], lw=1.2, alpha=0.9, label=name)
    rate.set_ylabel("samples/s")
    rate.yaxis.set_major_formatter(_thousands())
    rate.set_title("throughput (samples per second, over the last 5 s)", fontsize=9, loc="left")
    _legend(rate, handles)

    # MB/s: the bytes the consumer received per second (a panel of its own: with samples of
    # one size it is samples/s times a constant, and would lie exactly on top of it).
    mb = _series(records, "mb_per_s")
    if mb is not None:
        volume.plot(t, mb, color="tab:purple", lw=1.6)
    else:
        volume.text(0.5, 0.5, "not recorded", transform=volume.transAxes, ha="center",
                    va="center", color="tab:gray")
    volume.set_ylabel("MB/s")
    volume.set_title("bytes delivered (MB per second)", fontsize=9, loc="left")

    # Queue fill as a fraction of its limit, one line per coordinator x stage. Several
    # coordinators: colour = coordinator (as above), line style = stage.
    series: dict[tuple[Any, str], list[float]] = {}
    for i, r in enumerate(records):
        for c in r.get("coordinators", []):
            for q in c.get("queues", []):
                key = ((c.get("input"), c.get("device_index")), q.get("stage", "?"))
                series.setdefault(key, [math.nan] * len(records))[i] = _fill(q)
    stages = list(dict.fromkeys(stage for _, stage in series))
    handles = []
    for (ckey, stage), ys in series.items():
        if len(names) > 1:
            style = {"color": colours[ckey], "ls": _STAGE_STYLES[stages.index(stage) % len(_STAGE_STYLES)],
                     "label": f"{names[ckey]} {stage}"}
        else:
            style = {"color": f"C{stages.index(stage) % 10}", "ls": "-", "label": stage}
        handles += fill.plot(t, ys, lw=1.5, **style)
    fill.set_ylabel("fill (0-1)")
    fill.set_title("queue fill (share of each queue's limit: 1 = full, 0 = empty)", fontsize=9,
                   loc="left")
    fill.set_ylim(-0.05, 1.1 * max([1.0, *(y for ys in series.values() for y in ys if not math.isnan(y))]))
    if handles:
        _legend(fill, handles)

    # What the queues hold against the memory plan's worst case for them, in MB. (The process
    # tree's RSS is in metrics.jsonl; it is usually far larger and would flatten these lines.)
    handles = []
    for key, label, style in (("buffered_bytes", "buffered in queues", {"color": "tab:blue", "lw": 1.6}),
                              ("planned_host_bytes", "planned worst case",
                               {"color": "black", "ls": "--", "lw": 1.0})):
        ys = _series(records, key, _MB)
        if ys is not None:
            handles += memory.plot(t, ys, label=label, **style)
    memory.set_ylabel("MB")
    memory.set_title("bytes buffered in the queues against the plan (MB)", fontsize=9, loc="left")
    memory.set_xlabel("time since start (s)")
    if handles:
        _legend(memory, handles)
    for ax in (rate, volume, memory):
        ax.set_ylim(bottom=0)
    for ax in (rate, volume, fill, memory):
        ax.grid(True, alpha=0.3)
    return fig


def plot_sweep(points: list[dict[str, Any]], path: Path) -> Path:
    """Throughput against memory per setting, to pick the cheapest one that is about as fast."""
    pick = cheapest_within(points)
    best = max(float(p["samples_per_s"]) for p in points)
    fig, (ax,) = _figure(1)
    xs = [p["peak_buffered_bytes"] / _MB for p in points]
    ys = [float(p["samples_per_s"]) for p in points]
    ax.scatter(xs, ys, s=36, color="tab:blue", zorder=3, label="sweep point")
    # Alternate labels above/below (in x order) and flip them left in the right half, so that
    # neighbours' labels do not collide and none runs off the axes.
    mid = (min(xs) + max(xs)) / 2
    for rank, i in enumerate(sorted(range(len(points)), key=lambda j: xs[j])):
        right = xs[i] > mid
        ax.annotate(str(points[i].get("label", "")), (xs[i], ys[i]), fontsize=8,
                    xytext=(-7 if right else 7, 7 if rank % 2 == 0 else -9), textcoords="offset points",
                    ha="right" if right else "left", va="bottom" if rank % 2 == 0 else "top",
                    bbox={"boxstyle": "round,pad=0.15", "facecolor": "white", "edgecolor": "none",
                          "alpha": 0.75}, zorder=2.5)  # under the markers
    ax.axhline(0.95 * best, color="tab:gray", ls="--", lw=1.0, label="95% of best")
    ax.scatter([pick["peak_buffered_bytes"] / _MB], [pick["samples_per_s"]], s=220, marker="*",
               color="tab:red", edgecolor="black", zorder=4, label="cheapest within 5% of best")
    ax.text(1.01, 0.80, f"cheapest within 5% of best:\n{pick.get('label', '')}\n"
            f"{pick['samples_per_s']:,.0f} samples/s\nat {pick['peak_buffered_bytes'] / _MB:,.1f} MB peak",
            transform=ax.transAxes, fontsize=8, va="top", ha="left", wrap=True,
            bbox={"boxstyle": "round", "facecolor": "white", "edgecolor": "tab:red", "alpha": 0.9})
    ax.margins(x=0.08, y=0.08)
    ax.set_xlabel("peak buffered memory (MB)")
    ax.set_ylabel("samples/s")
    ax.set_title("Sweep: throughput vs memory")
    ax.grid(True, alpha=0.3)
    ax.legend(loc="upper left", bbox_to_anchor=(1.01, 1.0), fontsize=8, frameon=False, borderaxespad=0.0)
    return _save(fig, path)

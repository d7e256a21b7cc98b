"""Plots of metrics.jsonl and of sweeps: files are real PNGs of the expected size, and the
"cheapest within 5% of best" pick is right, including ties."""

from __future__ import annotations

import json
import math
from pathlib import Path
from typing import Any

import pytest

from inputkit.observe import plots

PNG_MAGIC = b"\x89PNG\r\n\x1a\n"
WIDTH, HEIGHT = 1100, 770  # 10 x 7 in at 110 dpi (the sweep)
RUN_HEIGHT = 990  # the run's four panels: 10 x 9 in

needs_mpl = pytest.mark.skipif(not plots.matplotlib_available(), reason=plots.INSTALL_HINT)


def _queue(stage: str, items: int, capacity: int, nbytes: int, max_bytes: int | None) -> dict[str, Any]:
    return {"stage": stage, "items": items, "capacity": capacity, "bytes": nbytes, "max_bytes": max_bytes,
            "full": 1.0 if items >= capacity else 0.0, "empty": 1.0 if items == 0 else 0.0}


def synthetic_records(n: int = 20, span_s: float = 10.0) -> list[dict[str, Any]]:
    """A plausible two-GPU run: ramp-up, steady state, a stall on cuda:1 in the middle."""
    records = []
    for i in range(n):
        t = round((i + 1) * span_s / n, 3)
        coordinators = []
        for idx in (0, 1):
            ramp = min(1.0, t / 2.0)
            stall = 0.4 if idx == 1 and 4.0 <= t <= 6.0 else 1.0
            sps = 4000.0 * ramp * stall + 150.0 * math.sin(i + idx)
            chunk_items = int(8 * ramp * (0.5 + 0.5 * stall))
            batch_items = min(4, int(4 * ramp * stall) + (i % 2))
            coordinators.append({
                "input": "train", "device": f"cuda:{idx}", "device_index": idx,
                "samples_per_s": sps, "batches_per_s": sps / 64,
                "workers": {"fetching": 3, "blocked": 1, "idle": 0, "p50_ms": 12.0, "p95_ms": 30.0},
                "queues": [_queue("chunk queue", chunk_items, 8, chunk_items * 4_000_000, 48_000_000),
                           _queue("batch queue", batch_items, 4, batch_items * 2_000_000, None)],
            })
        total = sum(c["samples_per_s"] for c in coordinators)
        buffered = sum(q["bytes"] for c in coordinators for q in c["queues"])
        records.append({
            "t": t, "samples_per_s": total, "batches_per_s": total / 64, "mb_per_s": total * 0.012,
            "samples": int(total * t), "batches": int(total * t / 64), "buffered_bytes": buffered,
            "planned_host_bytes": 128_000_000, "rss_bytes": 2_000_000_000, "shared_bytes": 500_000_000,
            "coordinators": coordinators,
            "warnings": ["cuda:1 batch queue empty 60% of the window"] if 4.0 <= t <= 6.0 else [],
        })
    return records


def synthetic_sweep() -> list[dict[str, Any]]:
    rows = [("workers.count=2", 3100.0, 40), ("workers.count=4", 5900.0, 64),
            ("workers.count=8", 7800.0, 96), ("workers.count=8 chunk_size=128", 7900.0, 150),
            ("workers.count=16", 8000.0, 210), ("workers.count=16 prefetch=8", 8050.0, 380)]
    return [{"label": label, "samples_per_s": sps, "peak_buffered_bytes": mb * 1_000_000}
            for label, sps, mb in rows]


def _assert_png(path: Path, height: int = HEIGHT) -> None:
    from matplotlib.image import imread

    assert path.is_file()
    data = path.read_bytes()
    assert data[:8] == PNG_MAGIC
    assert len(data) > 10_000
    rows, columns = imread(str(path)).shape[:2]
    assert (columns, rows) == (WIDTH, height)


@needs_mpl
def test_plot_run_writes_png(tmp_path: Path) -> None:
    out = plots.plot_run(synthetic_records(), tmp_path / "sub" / "run.png", "train on 2 GPUs")
    assert out == tmp_path / "sub" / "run.png"
    _assert_png(out, RUN_HEIGHT)


@needs_mpl
def test_plot_run_shows_one_quantity_per_axis() -> None:
    # Seen: MB/s drawn on a twin axis lay exactly on top of samples/s, and the queues' fill
    # fractions shared a panel with planned MB.
    fig = plots.run_figure(synthetic_records(), "train on 2 GPUs")
    axes = fig.get_axes()
    positions = [tuple(round(v, 6) for v in ax.get_position().bounds) for ax in axes]
    assert len(set(positions)) == len(axes) == 4, "no twin axes: each quantity has its panel"
    assert [ax.get_ylabel() for ax in axes] == ["samples/s", "MB/s", "fill (0-1)", "MB"]
    titles = [ax.get_title(loc="left") for ax in axes]
    assert "throughput" in titles[0] and "MB per second" in titles[1]
    assert "queue fill" in titles[2] and "1 = full" in titles[2] and "plan" in titles[3]
    rate, volume, fill, memory = axes
    assert {line.get_label() for line in rate.get_lines()} == {"total", "train@cuda:0", "train@cuda:1"}
    assert len(volume.get_lines()) == 1
    assert {line.get_label() for line in fill.get_lines()} == {
        f"train@cuda:{i} {stage}" for i in (0, 1) for stage in ("chunk queue", "batch queue")}
    assert {line.get_label() for line in memory.get_lines()} == {"buffered in queues",
                                                                "planned worst case"}
    # Every value a panel shows is in its own unit: fill stays in 0..1, memory in MB.
    assert max(max(line.get_ydata()) for line in fill.get_lines()) <= 1.0
    assert max(memory.get_lines()[1].get_ydata()) == pytest.approx(128.0)


@needs_mpl
def test_plot_run_one_coordinator_and_missing_fields(tmp_path: Path) -> None:
    records = synthetic_records(5)
    for r in records:
        r["coordinators"] = r["coordinators"][:1]
        r["planned_host_bytes"] = None
        r["mb_per_s"] = None
    _assert_png(plots.plot_run(records, tmp_path / "run1.png", "one coordinator"), RUN_HEIGHT)


def test_plot_run_needs_records(tmp_path: Path) -> None:
    with pytest.raises(ValueError, match="no metrics records"):
        plots.plot_run([], tmp_path / "x.png", "empty")


@needs_mpl
def test_plot_sweep_writes_png(tmp_path: Path) -> None:
    _assert_png(plots.plot_sweep(synthetic_sweep(), tmp_path / "sweep.png"))


def _pt(label: str, sps: float, peak: int) -> dict[str, Any]:
    return {"label": label, "samples_per_s": sps, "peak_buffered_bytes": peak}


def test_cheapest_within_picks_lowest_memory_near_best() -> None:
    points = synthetic_sweep()
    # best is 8050; 95% is 7647.5: 7800 at 96 MB is the cheapest of those above it.
    assert plots.cheapest_within(points)["label"] == "workers.count=8"
    assert plots.cheapest_within(points, tolerance=0.0)["label"] == "workers.count=16 prefetch=8"
    assert plots.cheapest_within(points, tolerance=0.5)["label"] == "workers.count=4"


def test_cheapest_within_best_is_cheapest() -> None:
    points = [_pt("a", 100.0, 50), _pt("b", 99.0, 80), _pt("c", 60.0, 10)]
    assert plots.cheapest_within(points) is points[0]


def test_cheapest_within_exact_threshold_counts() -> None:
    points = [_pt("best", 100.0, 500), _pt("edge", 95.0, 100), _pt("below", 94.99, 1)]
    assert plots.cheapest_within(points)["label"] == "edge"


def test_cheapest_within_ties() -> None:
    # Same memory: the faster one wins; same memory and speed: the first one given.
    points = [_pt("slow", 96.0, 100), _pt("fast", 98.0, 100), _pt("best", 100.0, 300)]
    assert plots.cheapest_within(points)["label"] == "fast"
    twins = [_pt("first", 97.0, 100), _pt("second", 97.0, 100), _pt("best", 100.0, 300)]
    assert plots.cheapest_within(twins)["label"] == "first"


def test_cheapest_within_rejects_bad_input() -> None:
    with pytest.raises(ValueError, match="no sweep points"):
        plots.cheapest_within([])
    with pytest.raises(ValueError, match="tolerance"):
        plots.cheapest_within([_pt("a", 1.0, 1)], tolerance=1.5)


def test_load_records_round_trip(tmp_path: Path) -> None:
    records = synthetic_records(4)
    path = tmp_path / "metrics.jsonl"
    path.write_text("\n".join(json.dumps(r) for r in records[:2]) + "\n\n  \n"
                    + "\n".join(json.dumps(r) for r in records[2:]) + "\n", encoding="utf-8")
    assert plots.load_records(path) == records


def test_load_records_names_bad_line(tmp_path: Path) -> None:
    path = tmp_path / "metrics.jsonl"
    path.write_text(json.dumps({"t": 1.0}) + "\n\n{\"t\": 2.0, \"samples\n", encoding="utf-8")
    with pytest.raises(ValueError, match=r"metrics\.jsonl:3: not a JSON record"):
        plots.load_records(path)
    path.write_text("[1, 2]\n", encoding="utf-8")
    with pytest.raises(ValueError, match=r"metrics\.jsonl:1: expected a JSON object"):
        plots.load_records(path)


def test_matplotlib_available_and_hint() -> None:
    assert isinstance(plots.matplotlib_available(), bool)
    assert "inputkit-ml[plot]" in plots.INSTALL_HINT and "matplotlib" in plots.INSTALL_HINT


def test_plots_does_not_import_matplotlib_or_torch_eagerly() -> None:
    import subprocess
    import sys

    code = ("import sys, inputkit.observe.plots; "
            "print(any(m == 'matplotlib' or m.startswith(('matplotlib.', 'torch')) for m in sys.modules))")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=60)
    assert out.returncode == 0, out.stderr
    assert out.stdout.strip() == "False"


@needs_mpl
def test_plot_run_names_devices_of_one_name_apart() -> None:
    records = synthetic_records(4)
    for r in records:
        for c in r["coordinators"]:
            c["device"] = "cpu"
    rate = plots.run_figure(records, "two cpu devices").get_axes()[0]
    assert {line.get_label() for line in rate.get_lines()} == {"total", "train@0:cpu", "train@1:cpu"}

"""Line charts over time as inline SVG, for the HTML run report (report_html.py).

Pure Python, no matplotlib: the page must open anywhere, offline, and bench must write it
whether or not the plot extra is installed. Every label is escaped here, since input and
device names come from the config. Long runs are thinned to at most ``MAX_POINTS`` points
a line (a point per pixel column or so), keeping each stretch's extremes so a stall or a
spike still shows.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass
from html import escape
from typing import Any

MAX_POINTS = 800
WIDTH, HEIGHT = 960, 260
LEFT, RIGHT, TOP, BOTTOM = 70, 200, 14, 34  # the legend sits right of the plot area
COLOURS = ("#1f77b4", "#ff7f0e", "#2ca02c", "#d62728", "#9467bd", "#8c564b", "#e377c2",
           "#7f7f7f", "#bcbd22", "#17becf")


@dataclass(frozen=True)
class Line:
    """One series: its label (shown in the legend), y per x (NaN: not recorded then)."""

    label: str
    ys: Sequence[float]
    colour: str = "#000000"
    width: float = 1.6
    dashed: bool = False


def thin(xs: Sequence[float], ys: Sequence[float], limit: int = MAX_POINTS) -> list[tuple[float, float]]:
    """At most about ``limit`` (x, y) points: each bucket keeps its lowest and highest y in
    time order, so the shape (dips, spikes) survives. NaN points are dropped."""
    points = [(x, y) for x, y in zip(xs, ys, strict=True) if not math.isnan(y)]
    if len(points) <= limit:
        return points
    size = math.ceil(len(points) / (limit // 2))
    kept: list[tuple[float, float]] = []
    for start in range(0, len(points), size):
        bucket = points[start:start + size]
        low = min(range(len(bucket)), key=lambda i: bucket[i][1])
        high = max(range(len(bucket)), key=lambda i: bucket[i][1])
        kept.extend(bucket[i] for i in sorted({low, high}))
    return kept


def _ticks(top: float, count: int = 4) -> list[float]:
    """Round tick values from 0 to at least ``top``: steps of 1, 2 or 5 times a power of ten."""
    if top <= 0 or math.isnan(top):
        return [0.0, 1.0]
    raw = top / count
    power = 10 ** math.floor(math.log10(raw))
    step = next(m * power for m in (1, 2, 5, 10) if m * power >= raw)
    return [i * step for i in range(math.ceil(top / step - 1e-9) + 1)]


def _number(value: float) -> str:
    if value == 0:
        return "0"
    if abs(value) >= 1000:
        return f"{value:,.0f}"
    return f"{value:.3g}"


def line_chart(xs: Sequence[float], lines: Sequence[Line], *, title: str, y_label: str,
               y_max: float | None = None, x_label: str = "time since start (s)") -> str:
    """One chart as an ``<svg>`` element: axes from 0, round ticks, a legend on the right.

    ``y_max`` fixes the top (queue fill: 1.0); otherwise the highest value decides."""
    plot_w, plot_h = WIDTH - LEFT - RIGHT, HEIGHT - TOP - BOTTOM
    series = [(line, thin(xs, line.ys)) for line in lines]
    x_top = max(xs, default=0.0) or 1.0
    highest = max((y for _, pts in series for _, y in pts), default=0.0)
    y_ticks = _ticks(max(highest, y_max or 0.0))
    y_top = y_ticks[-1]
    x_ticks = _ticks(x_top, 6)
    x_top = x_ticks[-1]

    def px(x: float) -> float:
        return LEFT + plot_w * x / x_top

    def py(y: float) -> float:
        return TOP + plot_h * (1 - y / y_top)

    out = [f'<svg class="chart" xmlns="http://www.w3.org/2000/svg" width="{WIDTH}" '
           f'height="{HEIGHT}" viewBox="0 0 {WIDTH} {HEIGHT}" role="img" '
           f'aria-label="{escape(title)}">', f"<title>{escape(title)}</title>",
           f'<rect x="{LEFT}" y="{TOP}" width="{plot_w}" height="{plot_h}" fill="#ffffff" '
           'stroke="#999999"/>']
    for y in y_ticks:
        out.append(f'<line x1="{LEFT}" x2="{LEFT + plot_w}" y1="{py(y):.1f}" y2="{py(y):.1f}" '
                   'stroke="#e4e4e4"/>')
        out.append(f'<text x="{LEFT - 6}" y="{py(y) + 4:.1f}" text-anchor="end">'
                   f"{_number(y)}</text>")
    for x in x_ticks:
        out.append(f'<text x="{px(x):.1f}" y="{TOP + plot_h + 16}" text-anchor="middle">'
                   f"{_number(x)}</text>")
    out.append(f'<text x="{LEFT + plot_w / 2:.1f}" y="{HEIGHT - 3}" text-anchor="middle" '
               f'class="axis">{escape(x_label)}</text>')
    out.append(f'<text transform="translate(14 {TOP + plot_h / 2:.1f}) rotate(-90)" '
               f'text-anchor="middle" class="axis">{escape(y_label)}</text>')
    for i, (line, pts) in enumerate(series):
        if pts:
            path = " ".join(f"{px(x):.1f},{py(y):.1f}" for x, y in pts)
            dash = ' stroke-dasharray="6 4"' if line.dashed else ""
            out.append(f'<polyline fill="none" stroke="{escape(line.colour)}" '
                       f'stroke-width="{line.width}"{dash} points="{path}"/>')
        ly = TOP + 10 + 18 * i
        out.append(f'<line x1="{WIDTH - RIGHT + 12}" x2="{WIDTH - RIGHT + 34}" y1="{ly}" '
                   f'y2="{ly}" stroke="{escape(line.colour)}" stroke-width="3"/>')
        out.append(f'<text x="{WIDTH - RIGHT + 40}" y="{ly + 4}">{escape(line.label)}'
                   f"{'' if pts else ' (not recorded)'}</text>")
    out.append("</svg>")
    return f'<h4 class="chart-title">{escape(title)}</h4>\n' + "\n".join(out)


def _name(c: dict[str, Any]) -> str:
    return f"{c.get('input', '?')} @ {c.get('device_index', '?')}:{c.get('device', '?')}"


def _fill(q: dict[str, Any]) -> float:
    """Bytes against the byte limit when the queue has one (that is what blocks), else items."""
    if q.get("max_bytes"):
        return q.get("bytes", 0) / q["max_bytes"]
    return q.get("items", 0) / q["capacity"] if q.get("capacity") else math.nan


def run_charts(records: Sequence[dict[str, Any]]) -> list[str]:
    """The run's charts from metrics.jsonl's records (``t`` seconds since start): throughput
    (the total, and per input and device when there are several), each queue's fill against
    its limit, and the bytes buffered against the plan's worst case. Empty without records."""
    if not records:
        return []
    xs = [float(r.get("t", 0.0)) for r in records]
    keys: dict[tuple[Any, Any], str] = {}
    for r in records:
        for c in r.get("coordinators", []):
            keys.setdefault((c.get("input"), c.get("device_index")), _name(c))

    def per(key: tuple[Any, Any], r: dict[str, Any]) -> dict[str, Any] | None:
        return next((c for c in r.get("coordinators", [])
                     if (c.get("input"), c.get("device_index")) == key), None)

    rate = [Line("total", [float(r.get("samples_per_s", math.nan)) for r in records],
                 "#000000", 2.2)]
    if len(keys) > 1:
        for i, (key, name) in enumerate(keys.items()):
            rate.append(Line(name, [float((per(key, r) or {}).get("samples_per_s", math.nan))
                                    for r in records], COLOURS[i % len(COLOURS)], 1.3))
    fills: list[Line] = []
    for i, (key, name) in enumerate(keys.items()):
        stages = list(dict.fromkeys(q.get("stage", "?") for r in records
                                    for q in (per(key, r) or {}).get("queues", [])))
        for j, stage in enumerate(stages):
            ys = [next((_fill(q) for q in (per(key, r) or {}).get("queues", [])
                        if q.get("stage", "?") == stage), math.nan) for r in records]
            label = stage if len(keys) == 1 else f"{name} {stage}"
            colour = COLOURS[(j if len(keys) == 1 else i) % len(COLOURS)]
            fills.append(Line(label, ys, colour, 1.5, dashed=len(keys) > 1 and j % 2 == 1))
    memory = [Line("buffered in queues", [r.get("buffered_bytes", math.nan) / 1e6
                                          for r in records], COLOURS[0]),
              Line("planned worst case", [_mb(r.get("planned_host_bytes")) for r in records],
                   "#000000", 1.0, dashed=True)]
    charts = [line_chart(xs, rate, title="throughput (samples per second, over the last 5 s)",
                         y_label="samples/s")]
    if fills:  # none when every input ran inline (no queue between stages)
        charts.append(line_chart(xs, fills, y_label="fill (0-1)", y_max=1.0,
                                 title="queue fill (share of each queue's limit: 1 = full)"))
    charts.append(line_chart(xs, memory, title="bytes buffered in the queues against the plan "
                             "(MB)", y_label="MB"))
    return charts


def _mb(value: Any) -> float:
    return math.nan if value is None else value / 1e6

"""report.html: the bench run's self-contained page, read back as a browser and a person would.

(This commit: the page and the key; the real bench run, its browser screenshot and the
comparison with summary.json come with bench's call, next.)

One real ``inputkit bench`` over an image folder whose path holds ``<script>`` and one
corrupt image (skipped with ``failures.on_error=skip``), so the page has a skipped sample
whose error names that path. The page is parsed with ``html.parser`` and compared with the
run's summary.json and metrics.jsonl; a real headless Chromium (Debian's ``chromium``)
screenshots it when one is on PATH.
"""

from __future__ import annotations

import math
import shutil
from html.parser import HTMLParser
from pathlib import Path

import pytest

from inputkit import ConfigError, compose, load_spec
from inputkit.observe.report_charts import MAX_POINTS, thin
from inputkit.observe.report_html import render_report

TESTS = Path(__file__).resolve().parent
SECTIONS = ["overview", "verdict", "charts", "inputs", "workers", "skipped", "startup", "plan",
            "config"]
EVIL = "<script>alert"  # in the data folder's name: it must reach the page as text


class Page(HTMLParser):
    """The parts of the page the tests read: every start tag, each section's text, tables
    (rows of cell texts) and SVG polylines (point counts) per section, ``<pre>`` texts."""

    def __init__(self, text: str) -> None:
        super().__init__(convert_charrefs=True)
        self.tags: list[str] = []
        self.section: str | None = None
        self.texts: dict[str, list[str]] = {}
        self.tables: dict[str, list[list[list[str]]]] = {}
        self.lines: dict[str, list[int]] = {}
        self.pres: dict[str, list[str]] = {}
        self.verdicts: list[str] = []
        self._cell: list[str] | None = None
        self._pre: list[str] | None = None
        self._verdict: list[str] | None = None
        self.feed(text)
        self.close()

    def handle_starttag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        self.tags.append(tag)
        a = dict(attrs)
        if tag == "section":
            self.section = a["id"]
        elif tag == "table":
            self.tables.setdefault(self.section or "", []).append([])
        elif tag == "tr":
            self.tables[self.section or ""][-1].append([])
        elif tag in ("td", "th"):
            self._cell = []
        elif tag == "polyline":
            self.lines.setdefault(self.section or "", []).append(len((a["points"] or "").split()))
        elif tag == "pre":
            self._pre = []
        elif tag == "div" and a.get("class") == "verdict" and self.section == "verdict":
            self._verdict = []

    def handle_endtag(self, tag: str) -> None:
        if tag in ("td", "th") and self._cell is not None:
            self.tables[self.section or ""][-1][-1].append("".join(self._cell))
            self._cell = None
        elif tag == "pre" and self._pre is not None:
            self.pres.setdefault(self.section or "", []).append("".join(self._pre))
            self._pre = None
        elif tag == "div" and self._verdict is not None:
            self.verdicts.append("".join(self._verdict))
            self._verdict = None
        elif tag == "section":
            self.section = None

    def handle_data(self, data: str) -> None:
        self.texts.setdefault(self.section or "", []).append(data)
        for part in (self._cell, self._pre, self._verdict):
            if part is not None:
                part.append(data)

    def text(self, section: str) -> str:
        return "".join(self.texts.get(section, []))


def test_names_from_the_config_are_escaped_in_tables_and_chart_legends():
    """Input names, devices and sources go through escaping in tables and in the SVG legend
    (two inputs draw one throughput line each, labelled by name)."""
    evil = '<img src=x onerror="alert(1)">'
    queue = {"stage": "chunk queue", "items": 1, "capacity": 4, "bytes": 0, "max_bytes": None}
    coordinator = {"input": evil, "device": "cpu", "device_index": 0, "samples_per_s": 5.0,
                   "queues": [queue]}
    records = [{"t": t, "samples_per_s": 10.0, "buffered_bytes": 0, "planned_host_bytes": 1,
                "coordinators": [coordinator, {**coordinator, "input": "b"}]} for t in (0.5, 1.0)]
    summary = {"stats": {"coordinators": [{"input": evil, "device": "cpu", "device_index": 0,
                                           "source": evil, "queues": [], "workers": {}}]},
               "diagnosis": [evil], "config": {"source": {"path": evil}},
               "overrides": [f"source.path={evil}"],
               "skipped_samples": [{"input": evil, "device": "cpu", "device_index": 0,
                                    "count": 1, "samples": [{"index": 3, "error": evil}]}]}
    text = render_report(summary, records)
    page = Page(text)
    assert "img" not in page.tags and "<img" not in text
    for section in ("overview", "verdict", "charts", "inputs", "skipped", "config"):
        assert evil in page.text(section), section


def test_thinning_keeps_the_extremes():
    """A long run is drawn with at most about MAX_POINTS points a line, and a one-sample dip
    or spike still shows; NaN (not recorded) points are left out."""
    n = 20_000
    xs = [i / 10 for i in range(n)]
    ys = [100.0] * n
    ys[12_345] = 0.0
    ys[777] = 500.0
    ys[5] = math.nan
    kept = thin(xs, ys)
    assert len(kept) <= MAX_POINTS + 2
    assert (xs[12_345], 0.0) in kept and (xs[777], 500.0) in kept
    assert not any(math.isnan(y) for _, y in kept)
    assert [x for x, _ in kept] == sorted(x for x, _ in kept)
    assert thin([0.0, 1.0], [1.0, 2.0]) == [(0.0, 1.0), (1.0, 2.0)]


@pytest.mark.parametrize(("value", "expected"), [("html", "html"), ("null", None),
                                                 ("none", None)])
def test_bench_report_key(value, expected):
    assert load_spec(compose([f"bench.report={value}"])).bench_report == expected


def test_bench_report_refuses_another_format():
    with pytest.raises(ConfigError, match=r"bench\.report.*html or null.*'pdf'"):
        load_spec(compose(["bench.report=pdf"]))


def test_bench_writes_the_page_only_when_asked_and_only_into_a_run_directory(tmp_path):
    """bench.report=null: no page; no run directory (bench called as a function): no page;
    bench.report=html: report.html in the run directory, and a line saying where."""
    from rich.console import Console

    from inputkit.cli.bench_html import write_bench_report

    summary = {"stats": {"coordinators": []}, "diagnosis": [], "config": {"a": 1}}
    console = Console(record=True, width=200)
    off = load_spec(compose(["bench.report=null"]))
    assert write_bench_report(console, off, tmp_path, summary, [], None) is None
    assert not (tmp_path / "report.html").exists()
    on = load_spec(compose([]))
    assert write_bench_report(console, on, None, summary, [], None) is None
    path = write_bench_report(console, on, tmp_path, summary, [], None)
    assert path == tmp_path / "report.html" and path.exists()
    assert f"report: {path}" in console.export_text()
    page = Page(path.read_text(encoding="utf-8"))
    assert "no plan" in page.text("plan") and "no records" in page.text("charts")


def _chromium() -> str | None:
    return next((p for p in map(shutil.which, ("chromium", "chromium-browser")) if p), None)

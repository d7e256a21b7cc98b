"""report.html: the bench run's self-contained page, read back as a browser and a person would.

One real ``inputkit bench`` over an image folder whose path holds ``<script>`` and one
corrupt image (skipped with ``failures.on_error=skip``), so the page has a skipped sample
whose error names that path. The page is parsed with ``html.parser`` and compared with the
run's summary.json and metrics.jsonl; a real headless Chromium (Debian's ``chromium``)
screenshots it when one is on PATH.
"""

from __future__ import annotations

import json
import math
import os
import shutil
import subprocess
import sys
from collections import Counter
from html.parser import HTMLParser
from pathlib import Path
from typing import Any

import pytest
import yaml
from imagefiles import write_folder

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


@pytest.fixture(scope="module")
def bench_page(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Any]:
    """A real bench over images in ``.../<script>alert x/`` with one corrupt file: its run
    directory's report.html, summary.json and metrics.jsonl."""
    tmp = tmp_path_factory.mktemp("report")
    data = write_folder(tmp / f"{EVIL} x", classes=2, per_class=6)
    (data / "class_0" / "broken.jpg").write_bytes(b"not a jpeg at all")
    env = {**os.environ, "PYTHONPATH": str(TESTS), "COLUMNS": "200"}
    out = subprocess.run(
        [sys.executable, "-m", "inputkit", "bench", "--json", "bench.seconds=2", "devices=cpu",
         "workers=threads", "workers.count=2", "batch_size=4", "epoch.count=null",
         "source=image_folder", f"source.path='{data}'", "failures.on_error=skip",
         "hydra.run.dir=run"], cwd=tmp, env=env, capture_output=True, text=True, timeout=240,
        stdin=subprocess.DEVNULL)
    assert out.returncode == 0, out.stdout[-3000:] + out.stderr[-3000:]
    run = tmp / "run"
    assert f"report: {run / 'report.html'}" in out.stdout
    records = [json.loads(line) for line in (run / "metrics.jsonl").read_text().splitlines()]
    return {"dir": run, "html": (run / "report.html").read_text(encoding="utf-8"),
            "summary": json.loads((run / "summary.json").read_text()), "records": records,
            "data": data}


@pytest.mark.timeout(300)
def test_every_section_is_there_and_says_what_summary_json_says(bench_page):
    """Each part of the page holds the run's own figures: the verdict lines, one row per input
    and device, the workers, every skipped sample (with its error), each start-up step, the
    plan's lines and its verdict, and the config as YAML equal to summary.json's."""
    page, summary = Page(bench_page["html"]), bench_page["summary"]
    assert [s for s in SECTIONS if s in page.texts] == SECTIONS
    assert page.verdicts == summary["diagnosis"] and summary["diagnosis"]

    [inputs] = page.tables["inputs"]
    coordinators = summary["stats"]["coordinators"]
    assert [(r[0], r[1], r[3], r[4]) for r in inputs[1:]] == [
        (c["input"], f"{c['device_index']}:{c['device']}", f"{c['batches']:,}",
         f"{c['samples']:,}") for c in coordinators]

    workers = page.tables["workers"][0]
    assert [(r[2], r[3], r[5]) for r in workers[1:]] == [
        (c["workers"]["kind"], str(c["workers"]["workers"]), f"{c['workers']['chunks']:,}")
        for c in coordinators]

    [skipped_entry] = summary["skipped_samples"]
    [skipped] = page.tables["skipped"]
    listed = Counter((s["index"], s["error"]) for s in skipped_entry["samples"])
    assert {(int(r[0]), r[2]): int(r[1]) for r in skipped[1:]} == listed  # each epoch's skip
    assert len(skipped) - 1 == len(listed)  # one row per sample and error
    assert skipped_entry["count"] >= 1 and "broken.jpg" in skipped[1][2]

    steps = {r[0]: float(r[1]) for r in page.tables["startup"][0][1:]}
    record = summary["startup"]
    assert steps["the command's start to the first batch"] == pytest.approx(
        record["to_first_batch_s"], abs=1e-3)
    assert len(steps) == len(record)  # each step, and the total
    assert "probe/plan" in steps and "workers start" in steps

    plan_rows = page.tables["plan"][0][1:]
    assert {r[1] for r in plan_rows} >= {"chunk queue", "batch queue",
                                         "host memory (RAM + shared + pinned)"}
    assert "fits:" in page.text("plan") or "over budget:" in page.text("plan")

    [config_yaml, *_] = page.pres["config"]
    assert yaml.safe_load(config_yaml) == summary["config"]
    assert summary["config"]["bench"]["report"] == "html"


@pytest.mark.timeout(300)
def test_charts_draw_every_record(bench_page):
    """Three charts (throughput, queue fill, buffered bytes); the throughput line has one
    point per record of metrics.jsonl (fewer than MAX_POINTS here), each queue a line."""
    page, records = Page(bench_page["html"]), bench_page["records"]
    assert page.tags.count("svg") == 3
    assert len(records) >= 2
    lines = page.lines["charts"]
    assert lines[0] == len(records)  # total samples/s
    queues = len(records[-1]["coordinators"][0]["queues"])
    assert lines[1:1 + queues] == [len(records)] * queues
    assert "throughput" in page.text("charts") and "queue fill" in page.text("charts")


@pytest.mark.timeout(300)
def test_a_path_with_script_shows_as_text(bench_page):
    """The data folder's ``<script>`` reaches the page escaped: no script element anywhere,
    the text (config, skipped sample errors) shows the path as it is."""
    page = Page(bench_page["html"])
    assert "script" not in page.tags
    assert str(bench_page["data"]) in page.text("config")
    assert EVIL in page.text("skipped")
    assert "&lt;script&gt;alert" in bench_page["html"]
    assert "<script" not in bench_page["html"]
    assert not any(t in page.tags for t in ("link", "img", "iframe"))  # nothing fetched


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


def test_an_inline_run_says_why_it_has_no_queues_and_what_auto_chose():
    """The default often runs inline: no queue exists, so the page says so instead of an empty
    table and an empty fill chart, and auto's choice reads as a table row, reason and all."""
    coordinator = {"input": "main", "device": "cpu", "device_index": 0, "samples_per_s": 5.0,
                   "queues": []}
    records = [{"t": t, "samples_per_s": 10.0, "buffered_bytes": 0, "planned_host_bytes": 1,
                "coordinators": [coordinator]} for t in (0.5, 1.0)]
    reason = "fetch is cheap (32 fetches: 563 us each)"
    summary = {"stats": {"coordinators": [{**coordinator, "source": "s",
                                           "workers": {"kind": "inline", "workers": 1}}]},
               "diagnosis": ["input 'main' on 0:cpu: inline."],
               "workers": {"auto": {"main": {"kind": "inline", "count": 1, "reason": reason,
                                             "measured": {"fetches": 32}}}}}
    page = Page(render_report(summary, records))
    assert "no queues: every input ran inline" in page.text("verdict")
    assert "queue fill" not in page.text("charts") and "throughput" in page.text("charts")
    workers = page.text("workers")
    assert reason in workers and "fetches 32" in workers and "{" not in workers


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


@pytest.mark.timeout(300)
@pytest.mark.skipif(_chromium() is None, reason="no chromium on PATH (Debian: apt-get install "
                    "chromium); the page's browser check needs a real browser")
def test_chromium_renders_the_page_with_its_charts(bench_page, tmp_path):
    """Debian's Chromium, headless, screenshots the page as a person would open it: the PNG has
    the window's size, and the chart region (the rows where the charts' line colours are) is
    drawn: the blue and orange queue lines and the black throughput line are there, with
    many distinct colours (text, grid, anti-aliasing), not a blank or an error page."""
    import numpy as np
    from PIL import Image

    shot = tmp_path / "page.png"
    out = subprocess.run(
        [_chromium() or "", "--headless", "--no-sandbox", "--disable-gpu",
         f"--user-data-dir={tmp_path / 'profile'}", f"--screenshot={shot}",
         "--window-size=1280,2000", (bench_page["dir"] / "report.html").as_uri()],
        capture_output=True, text=True, timeout=120, stdin=subprocess.DEVNULL,
        env={**os.environ, "HOME": str(tmp_path)})
    assert shot.exists(), out.stderr[-2000:]
    image = Image.open(shot).convert("RGB")
    assert image.size == (1280, 2000)
    pixels = np.asarray(image).astype(np.int16)

    def near(colour: tuple[int, int, int]) -> list[int]:
        """The row of each pixel within 40 of ``colour`` on every channel."""
        close = (np.abs(pixels - np.array(colour, dtype=np.int16)) <= 40).all(axis=2)
        return np.nonzero(close)[0].tolist()

    # The legends' swatches always show (a line may lie under another, both at 0).
    blue = near((0x1F, 0x77, 0xB4))  # chunk queue and buffered bytes: lines and swatches
    orange = near((0xFF, 0x7F, 0x0E))  # the batch queue's line and swatch
    assert len(blue) > 30 and len(orange) > 30, (len(blue), len(orange))
    top, bottom = min(blue + orange), max(blue + orange)  # the charts, legends included
    assert bottom - top > 300, (top, bottom)  # the fill chart's legend down to the memory one
    region = image.crop((0, top, image.width, bottom + 1))
    colours = region.getcolors(maxcolors=1 << 20) or []
    assert len(colours) > 50, len(colours)
    white = sum(n for n, c in colours if min(c) >= 245)
    assert white < 0.97 * region.width * region.height  # lines and text, not a blank page

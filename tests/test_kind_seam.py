"""A worker kind registered from the tests is shown, recorded and judged without edits to the
dashboard, the diagnosis, metrics.jsonl or summary.json's code (issue 23: kinds are
registered, not branched on); and the dashboard and the diagnosis read one window.
"""

from __future__ import annotations

import io
import json
import threading
from dataclasses import dataclass, replace
from typing import Any

import pytest
from conftest import make_cfg
from rich.console import Console

from inputkit import Runner, kinds
from inputkit.cli.render import kind_records, kind_summary_lines
from inputkit.config.spec import load_spec
from inputkit.kinds import Kind
from inputkit.kinds.view import KindView
from inputkit.observe.dashboard import plain_lines, render
from inputkit.observe.diagnosis import diagnose, live_verdicts, window_evidence
from inputkit.observe.metrics import window
from inputkit.observe.stats import RunnerStats
from inputkit.observe.verdict import Verdict
from inputkit.pipeline.queues import Stage

SYN = "inputkit.sources.synthetic.SyntheticSource"


@dataclass(frozen=True)
class CountedStats:
    """The test kind's stats extension: how often its pool was asked for stats."""

    snapshots: int


class CountedPool:
    """Thread workers, wrapped: the same work, plus a stats extension of its own."""

    kind = "counted"

    def __init__(self, inner: Any) -> None:
        self._inner = inner
        self._lock = threading.Lock()
        self._snapshots = 0

    def __getattr__(self, name: str) -> Any:
        return getattr(self._inner, name)

    def stats(self) -> Any:
        with self._lock:
            self._snapshots += 1
            n = self._snapshots
        return replace(self._inner.stats(), kind="counted", ext=CountedStats(n))


def make_pool(spec: Any, device: str, **kw: Any) -> CountedPool:
    return CountedPool(kinds.get("thread").make_pool(spec, device, **kw))


class CountedView(KindView):
    key = "counted"

    def window(self, now: Any, before: Any, span: float) -> Any:
        if now.ext is None:
            return None
        then = before.ext.snapshots if before is not None and before.ext is not None else 0
        return {"snapshots": now.ext.snapshots, "new": now.ext.snapshots - then}

    def evidence(self, ext: Any) -> Any:
        return ext

    def first(self, e: Any) -> Verdict | None:
        if e.ext is None:
            return None
        return Verdict("counted", f"{e.ext['new']} new snapshots over {e.over}")

    def rows(self, c: Any) -> list[tuple[Any, ...]]:
        snapshots = c.ext["snapshots"] if c.ext is not None else 0
        return [("  counted pool", f"{c.stats.workers.workers} wrapped threads",
                 (f"snapshots {snapshots}", "cyan"), "", "")]

    def lines(self, c: Any, where: str) -> list[str]:
        return [f"  counted {where}: snapshots {c.ext['snapshots'] if c.ext else 0}"]

    def record(self, ext: Any) -> dict[str, Any]:
        return dict(ext)

    def summary(self, c: Any) -> dict[str, Any]:
        return {"input": c.input, "snapshots": c.workers.ext.snapshots}

    def summary_lines(self, c: Any) -> list[str]:
        return [f"counted pool of input '{c.input}': {c.workers.ext.snapshots} snapshots"]


@pytest.fixture
def counted_kind():
    kind = kinds.register(Kind(name="counted", summary="thread workers, counted (tests only)",
                               source_here=True, make_pool=make_pool, view=CountedView()))
    try:
        yield kind
    finally:
        kinds.unregister("counted")
    assert "counted" not in kinds.names()


def _recorded(renderable: Any) -> str:
    console = Console(record=True, width=160, file=io.StringIO())
    console.print(renderable)
    return console.export_text()


def _run_counted(batches: int) -> tuple[RunnerStats, RunnerStats]:
    spec = load_spec(make_cfg({"_target_": SYN, "fields": {"x": {"shape": [8]}},
                               "chunk_size": 32}, batch_size=32))
    spec = replace(spec, inputs=tuple(replace(i, worker_kind="counted") for i in spec.inputs))
    with Runner(spec) as runner:
        stream = runner.device(0)
        next(stream)
        first = runner.stats()
        for _ in range(batches):
            next(stream)
        return first, runner.stats()


def test_a_registered_kind_is_shown_recorded_and_judged_without_edits(counted_kind):
    """Its pool runs the pipeline; its rows, jsonl entry, summary fields, end-of-run lines and
    verdict rule come from its view alone."""
    before, now = _run_counted(20)
    c = now.coordinators[0]
    assert c.workers.kind == "counted" and c.batches >= 21
    assert isinstance(c.workers.ext, CountedStats) and c.workers.ext.snapshots >= 2
    w = window(now, before)
    text = _recorded(render(w, []))
    assert "counted pool" in text and f"snapshots {c.workers.ext.snapshots}" in text
    assert "fetch p50" not in text  # its rows replace the generic workers row
    assert any(line.startswith("  counted main@0:cpu: snapshots") for line in plain_lines(w))
    record = json.loads(json.dumps(w.record([])))  # metrics.jsonl
    assert record["coordinators"][0]["counted"]["snapshots"] == c.workers.ext.snapshots
    summary = json.loads(json.dumps({"stats": now.to_dict(), **kind_records(now)}))  # summary.json
    assert summary["stats"]["coordinators"][0]["workers"]["ext"] == \
        {"snapshots": c.workers.ext.snapshots}
    assert summary["counted"] == [{"input": "main", "snapshots": c.workers.ext.snapshots}]
    assert kind_summary_lines(now) == [
        f"counted pool of input 'main': {c.workers.ext.snapshots} snapshots"]
    lines = diagnose(now, since=before)
    new = c.workers.ext.snapshots - before.coordinators[0].workers.ext.snapshots
    assert lines[0] == f"input 'main' on 0:cpu: counted. {new} new snapshots over the run"
    (live,) = live_verdicts(replace(w, window_s=2.0))
    assert live is not None and live.kind == "counted"


def test_an_unregistered_kind_is_refused_by_name():
    with pytest.raises(ValueError, match="built-in"):
        kinds.unregister("thread")
    with pytest.raises(Exception, match="workers.kind.*unknown worker kind 'counted'"):
        kinds.get("counted")


def test_the_dashboard_and_the_diagnosis_read_one_window():
    """From one pair of snapshots of a real run: the queue shares and the workers' figures the
    dashboard shows are the ones the verdict was judged on, and the queues carry the stage
    they were made for."""
    spec = load_spec(make_cfg({"_target_": SYN, "fields": {"x": {"shape": [8]}},
                               "chunk_size": 32}, batch_size=32))
    with Runner(spec) as runner:
        stream = runner.device(0)
        next(stream)
        before = runner.stats()
        for _ in range(50):
            next(stream)
        now = runner.stats()
    assert [q.stage for q in now.coordinators[0].queues][:2] == [Stage.CHUNKS, Stage.BATCHES]
    w = window(now, before, window_s=2.0)
    (c,) = w.coordinators
    e = window_evidence(w, c)
    assert [(q.stage, q.full, q.empty) for q in e.queues] == \
        [(q.stage, q.full, q.empty) for q in c.queues]
    assert (e.span_s, e.batches, e.in_fetch, e.chunks, e.in_next) == \
        (c.span_s, c.batches, c.in_fetch, c.chunks, c.in_next)
    assert c.batches == now.coordinators[0].batches - before.coordinators[0].batches == 50
    line = next(line for line in plain_lines(w) if line.startswith("  main@0:cpu"))
    for q in c.queues:  # the numbers the plain view prints are the window's
        assert f"{q.stage.replace(' ', '_')}={q.items}/{q.capacity}" \
               f"(full {q.full:.0%} empty {q.empty:.0%})" in line
    record = w.record([])["coordinators"][0]["queues"]
    assert [(r["stage"], r["full"], r["empty"]) for r in record] == \
        [(q.stage, q.full, q.empty) for q in c.queues]

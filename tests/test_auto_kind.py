"""workers.kind=auto: the decision on measured figures, and the probe on sources whose
character is unmistakable (a sleep, a trivial fetch, a pure-Python loop)."""

from __future__ import annotations

import time

import numpy as np
import pytest

from inputkit.config.spec import load_spec
from inputkit.kinds.auto import Measured, decide
from inputkit.kinds.auto_probe import resolve
from inputkit.observe.probes import schedstat_available


def figures(**kw):
    base = dict(fetches=10, fetch_ms=0.02, cpu_share=1.0, gil_held=0.0, gil_wait_ms=0.1,
                views=True, cores=2)
    return Measured(**{**base, **kw})


def test_decide_on_figures():
    """Each rule on figures: the GIL -> processes, cheap -> inline, waits -> overlapping
    threads, C work -> a thread per core; workers.count given is kept; never Ray."""
    assert decide(figures(fetch_ms=5, gil_held=0.8, gil_wait_ms=4.0)).kind == "process"
    assert decide(figures(fetch_ms=0.01)).kind == "inline"
    waits = decide(figures(fetch_ms=20, cpu_share=0.01))
    assert waits.kind == "thread" and waits.count == 16
    assert decide(figures(fetch_ms=20, cpu_share=0.05)).count == 16  # ceil(1 / 0.05), capped
    assert decide(figures(fetch_ms=20, cpu_share=0.25)).count == 2  # computes: one per core
    c = decide(figures(fetch_ms=3, cpu_share=1.0, cores=6))
    assert (c.kind, c.count) == ("thread", 6)
    copied = decide(figures(fetch_ms=0.01, views=False))
    assert copied.kind == "thread", "batches copied from several chunks: not inline"
    kept = decide(figures(fetch_ms=20, cpu_share=0.01), count=3)
    assert (kept.kind, kept.count) == ("thread", 3) and "workers.count=3" in kept.reason
    unmeasured = decide(figures(fetch_ms=5, gil_held=None, gil_wait_ms=None))
    assert unmeasured.kind == "thread" and "GIL not measured" in unmeasured.reason


def sleepy(worker_id, n):
    time.sleep(0.005)
    return {"x": np.zeros((n, 2), np.float32)}


def trivial(worker_id, n):
    return {"x": np.zeros((n, 2), np.float32)}


def python_loop(worker_id, n):
    total, ends = 0, time.thread_time() + 0.01
    while time.thread_time() < ends:  # 10 ms of CPU in bytecode, holding the GIL
        total += 1
    return {"x": np.full((n, 2), total % 7, np.float32)}


def choose(fetch, **extra):
    spec = load_spec({"source": {"_target_": f"{__name__}:{fetch}"}, "batch_size": 8,
                      "workers": {"kind": "auto", "count": None, **extra}})
    resolved, choices = resolve(spec)
    inp = resolved.inputs[0]
    assert (inp.worker_kind, inp.worker_count) == (choices["main"].kind, choices["main"].count)
    return choices["main"]


def test_a_sleeping_fetch_gets_threads_that_overlap_the_waits():
    choice = choose("sleepy")
    assert choice.kind == "thread" and choice.count >= 2, choice.text()


def test_a_trivial_fetch_runs_inline():
    choice = choose("trivial")
    assert (choice.kind, choice.count) == ("inline", 1), choice.text()


@pytest.mark.skipif(not schedstat_available(), reason="the GIL probe needs schedstat")
def test_a_pure_python_fetch_gets_processes():
    choice = choose("python_loop")
    assert choice.kind == "process" and choice.count >= 2, choice.text()


def test_count_given_with_auto_is_kept():
    assert choose("sleepy", count=3).count == 3


def test_runner_runs_the_chosen_kind_and_says_why():
    import inputkit

    cfg = {"source": {"_target_": f"{__name__}:trivial"}, "batch_size": 8, "devices": ["cpu"],
           "workers": {"kind": "auto", "count": None}}
    with inputkit.Runner(cfg) as runner:
        batch = next(runner.device(0))
        assert batch["x"].shape[0] == 8
        assert runner.spec.inputs[0].worker_kind == "inline"
        assert runner.auto["main"].record()["kind"] == "inline"


def test_a_failing_fetch_falls_back_to_threads_and_leaves_the_error_to_the_pipeline():
    spec = load_spec({"source": {"_target_": f"{__name__}:broken"}, "workers": {"kind": "auto"}})
    _, choices = resolve(spec)
    assert choices["main"].kind == "thread" and "boom" in choices["main"].reason


def broken(worker_id, n):
    raise RuntimeError("boom")


def test_a_fetch_that_never_returns_stops_the_probe_with_an_error_naming_the_source(
        monkeypatch):
    """The probe waits a bounded time (PROBE_TIMEOUT_S, shortened here) and then says which
    source hung and how to skip the probe, instead of hanging the start."""
    import threading

    from inputkit.errors import SourceError
    from inputkit.kinds import auto_probe

    never = threading.Event()
    source = HangsOnSecond(never)
    monkeypatch.setattr(auto_probe, "PROBE_TIMEOUT_S", 0.5)
    monkeypatch.setitem(globals(), "hangs_on_second", source.fetch)
    spec = load_spec({"source": {"_target_": f"{__name__}:hangs_on_second"}, "batch_size": 8,
                      "workers": {"kind": "auto", "count": None}})
    try:
        with pytest.raises(SourceError, match=r"hangs_on_second.*did not return within 0\.5 s "
                           r"\(1 fetch\(es\) done before it\).*workers\.kind=thread"):
            resolve(spec)
    finally:
        never.set()  # the probe's thread ends with its fetch


class HangsOnSecond:
    def __init__(self, never):
        self.never = never
        self.calls = 0

    def fetch(self, worker_id, n):
        self.calls += 1
        if self.calls > 1:
            self.never.wait()
        return {"x": np.zeros((n, 2), np.float32)}

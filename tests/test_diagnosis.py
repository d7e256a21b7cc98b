"""The judgement behind the live verdict, the live warnings and the end-of-run diagnosis.

Two kinds of test. The judgement itself is tested on stated evidence (no timing
involved, so these are exact). Real pipelines check the evidence a run gathers, in
states that the machine's load cannot change: a consumer that takes nothing, a fetch
asleep far longer than anything else takes, copies counted. Whether following the
advice helps is a claim about speed: tools/diagnosis_bench.py measures it and prints
the ratios (docs/benchmarks.md).
"""

from __future__ import annotations

import itertools
import time
from dataclasses import replace

import pytest
from conftest import make_cfg, wait_until

from inputkit import Runner
from inputkit.observe.diagnosis import (
    OVERBUFFER_MIN_BYTES,
    Verdict,
    diagnose,
    judge,
    live_verdicts,
    live_warnings,
    over_buffering,
)
from inputkit.observe.evidence import Evidence, QueueEvidence, evidence
from inputkit.observe.metrics import Window, window
from inputkit.observe.probes import GilReading, parse_idle, parse_schedstat
from inputkit.observe.stats import CoordinatorStats, RunnerStats
from inputkit.pipeline.queues import QueueStats, Stage
from inputkit.workers.base import WorkerPoolStats

# Queue names as the coordinator makes them, and the stage each is made with.
STAGE_OF = {"chunks": Stage.CHUNKS, "batches": Stage.BATCHES, "device": Stage.DEVICE}

SYN = "inputkit.sources.synthetic.SyntheticSource"
WHERE = "input 'main' on 0:cpu"


def queue(stage: str, empty: float = 0.0, full: float = 0.0, capacity: int = 16, items: int = 0,
          nbytes: int = 0, max_bytes: int | None = None) -> QueueEvidence:
    return QueueEvidence(stage=stage, capacity=capacity, items=items, bytes=nbytes, full=full,
                         empty=empty, max_bytes=max_bytes)


def ev(batch_empty: float, chunk_empty: float, **kw) -> Evidence:
    """Evidence over a 10 s run of 2 thread workers on a 2-core machine with a free GIL."""
    queues = kw.pop("queues", None) or (queue("chunk queue", chunk_empty, kw.pop("chunk_full", 0.0)),
                                        queue("batch queue", batch_empty, kw.pop("batch_full", 0.0)))
    base = dict(where=WHERE, over="the run", span_s=10.0, batches=500, kind="thread", workers=2,
                queues=queues, in_fetch=0.95, fetch_cores=0.02, fetch_cpu_share=0.01,
                fetch_p50_ms=40.0, gil_wait_ms=0.1, gil_held=0.02, idle_cores=1.9, chunks=500, cores=2)
    base.update(kw)
    return Evidence(**base)


def verdict(e: Evidence) -> Verdict:
    v = judge(e)
    assert v is not None
    return v


# --- the judgement, on stated evidence -------------------------------------------------------

def test_a_consumer_that_seldom_waits_is_consumer_bound_and_nothing_is_advised():
    v = verdict(ev(batch_empty=0.05, chunk_empty=0.0, batch_full=0.9))
    assert v.kind == "consumer-bound" and not v.starved
    assert "empty only 5% of the run (full 90%)" in v.text and "Nothing in the input" in v.text


def test_balanced_is_said_only_of_a_consumer_that_waits_less_than_half_and_never_as_seldom():
    # Seen: "balanced. The consumer seldom waited (batch queue empty 48%)".
    v = verdict(ev(batch_empty=0.48, chunk_empty=0.3))
    assert v.kind == "balanced" and "48%" in v.text and "seldom" not in v.text
    assert verdict(ev(batch_empty=0.5, chunk_empty=0.9)).starved  # half the time: starved


def test_a_slow_fetch_that_waits_is_fetch_bound_and_more_workers_are_advised():
    v = verdict(ev(batch_empty=0.95, chunk_empty=0.97))
    assert v.kind == "fetch-bound" and v.starved
    assert "Add workers (workers.count=4)." in v.text and "process" not in v.text


def test_pure_python_fetch_in_threads_is_gil_bound_and_processes_are_advised_with_idle_cores():
    e = ev(batch_empty=0.9, chunk_empty=0.8, gil_wait_ms=8.0, gil_held=0.9, fetch_cores=0.9,
           fetch_cpu_share=0.45, idle_cores=1.0)
    v = verdict(e)
    assert v.kind == "GIL-bound"
    assert "found it held 90% of the time and waited 8.0 ms on average" in v.text
    assert "Use workers.kind=process (workers.count=2)" in v.text
    # With no idle core, processes would find no CPU either, and the probe's reading is not
    # clean (below): the CPUs are the limit, and no worker change is advised.
    busy = verdict(replace(e, idle_cores=0.1))
    assert busy.kind == "CPU-bound" and "workers.kind" not in busy.text and "GIL" not in busy.text
    assert "0.1 idle cores" in busy.text


def test_on_a_saturated_machine_the_gil_is_not_judged():
    # Beside busy processes a GIL-free fetch's threads are preempted while they hold the GIL
    # for a moment (SHA-256 in 4 threads beside 4 busy loops read 42%, 2.9 ms) and pure Python
    # reads lower (53%, 3.0 ms beside 2): the probe cannot tell them apart there.
    weak = ev(batch_empty=0.9, chunk_empty=0.9, gil_wait_ms=2.9, gil_held=0.42,
              fetch_cpu_share=0.17, fetch_cores=0.7, idle_cores=0.0)
    for e in (weak, replace(weak, gil_wait_ms=3.0, gil_held=0.53)):
        assert verdict(e).kind == "CPU-bound" and "GIL" not in verdict(e).text
    assert verdict(replace(weak, idle_cores=1.0)).kind == "GIL-bound"  # a clean reading


def test_cpu_work_that_releases_the_gil_is_never_called_gil_bound():
    # Seen: Pillow decoding in 4 threads "kept 1.25 of a core busy inside fetch ... that is the
    # GIL's ceiling ... try workers.kind=process"; processes were not faster. Busy cores are no
    # evidence of the GIL; the probe finds it free.
    e = ev(batch_empty=0.9, chunk_empty=0.9, workers=4, cores=4, fetch_cores=1.25,
           fetch_cpu_share=0.35, gil_wait_ms=0.1, idle_cores=2.0)
    v = verdict(e)
    assert v.kind == "fetch-bound" and "GIL" not in v.text and "process" not in v.text
    assert "workers.count=8" in v.text
    saturated = verdict(replace(e, idle_cores=0.2))  # every core busy: more workers cannot help
    assert saturated.kind == "CPU-bound" and "workers.count" not in saturated.text


def test_without_a_gil_probe_the_thread_advice_covers_both_cases():
    v = verdict(ev(batch_empty=0.9, chunk_empty=0.9, gil_wait_ms=None, fetch_cpu_share=0.9,
                   fetch_cores=0.9, idle_cores=1.0))
    assert v.kind == "fetch-bound" and "GIL-bound" not in v.text
    assert "If fetch runs Python code, more threads will not help: workers.kind=process." in v.text


def test_a_gil_held_elsewhere_while_fetch_waits_gets_no_advice():
    v = verdict(ev(batch_empty=0.9, chunk_empty=0.9, gil_wait_ms=9.0, gil_held=0.9,
                   fetch_cpu_share=0.01))
    assert v.kind == "fetch-bound" and "no change to suggest" in v.text and "workers." not in v.text


def test_a_gil_bound_verdict_needs_an_empty_chunk_queue():
    # Seen: "fetch-bound and GIL-bound. The chunk queue was empty 1%" with an oversized queue.
    v = verdict(ev(batch_empty=0.9, chunk_empty=0.01, chunk_full=0.95, gil_wait_ms=8.0,
                   gil_held=0.9, fetch_cpu_share=0.5, fetch_cores=0.9, copied_batches=40))
    assert v.kind == "batcher-bound" and "GIL-bound" not in v.text
    assert "empty only 1%" in v.text and "batch-sized" in v.text


def test_process_workers_outside_fetch_are_transport_bound():
    v = verdict(ev(batch_empty=0.95, chunk_empty=0.8, kind="process", in_fetch=0.3,
                   gil_wait_ms=None, fetch_cpu_share=0.9, fetch_cores=0.5))
    assert v.kind == "transport-bound" and "only 30% of their time" in v.text
    assert "workers." not in v.text  # threads were 0.5x to 2x as fast: no advice


def test_the_batcher_without_copies_gets_no_advice_and_a_copy_bound_device_stage_is_named():
    v = verdict(ev(batch_empty=0.9, chunk_empty=0.05))
    assert v.kind == "batcher-bound" and "no change to suggest" in v.text
    cuda = (queue("chunk queue", 0.05), queue("batch queue", 0.02), queue("device prefetch", 0.9))
    assert verdict(ev(0.0, 0.0, queues=cuda)).kind == "copy-bound"


def test_in_between_no_single_stage_is_named_and_nothing_is_advised():
    v = verdict(ev(batch_empty=0.9, chunk_empty=0.35))
    assert v.kind == "input-bound" and "no single change" in v.text and "workers." not in v.text


def test_in_between_a_gil_held_by_fetch_or_no_spare_cpu_is_named_as_the_shared_limit():
    # Seen in CI: pure-Python fetch in 2 threads, "input-bound ... the chunk queue 47%": the
    # batcher waited 10 to 30 ms for the GIL at each hand-over, so chunks sat in the queue.
    gil = ev(batch_empty=0.64, chunk_empty=0.47, gil_wait_ms=23.4, gil_held=1.0,
             fetch_cpu_share=0.45, fetch_cores=0.9, idle_cores=0.94)
    v = verdict(gil)
    assert v.kind == "GIL-bound" and "the chunk queue 47%" in v.text and "batcher needs" in v.text
    assert "Use workers.kind=process (workers.count=2)" in v.text
    busy = verdict(replace(gil, idle_cores=0.1))  # the GIL is not judged without idle cores
    assert busy.kind == "CPU-bound" and "GIL" not in busy.text and "workers." not in busy.text
    waits = verdict(replace(gil, fetch_cpu_share=0.01, idle_cores=0.1))  # fetch sleeps: no claim
    assert waits.kind == "input-bound"
    released = verdict(replace(gil, gil_wait_ms=0.1, gil_held=0.02))  # a free GIL, idle cores
    assert released.kind == "input-bound"


def test_a_fetch_cheaper_than_the_hand_over_is_hand_over_bound_and_inline_is_advised():
    v = verdict(ev(batch_empty=0.6, chunk_empty=0.0, fetch_p50_ms=0.009))
    assert v.kind == "hand-over-bound" and v.starved and "took only 9 us" in v.text
    assert "Use workers.kind=inline" in v.text and "between threads" in v.text
    procs = verdict(ev(batch_empty=0.3, chunk_empty=0.9, fetch_p50_ms=0.02, kind="process"))
    assert procs.kind == "hand-over-bound" and not procs.starved  # 30%: not starved, still slow
    assert "between processes and threads" in procs.text
    keeps_up = verdict(ev(batch_empty=0.1, chunk_empty=0.0, fetch_p50_ms=0.009))
    assert keeps_up.kind == "consumer-bound"  # the step sets the pace: nothing to change
    slower = verdict(ev(batch_empty=0.9, chunk_empty=0.9, fetch_p50_ms=0.2))
    assert slower.kind == "fetch-bound" and "inline" not in slower.text


def test_no_verdict_contradicts_its_evidence():
    """Every combination: the verdict's claims follow from the figures it quotes."""
    worker_side = {"fetch-bound", "transport-bound"}
    shared_limit = {"GIL-bound", "CPU-bound"}  # the workers', or also the batcher's, limit
    for batch_empty, chunk_empty, gil, kind, idle, share in itertools.product(
            (0.0, 0.15, 0.3, 0.6, 1.0), (0.0, 0.1, 0.3, 0.6, 1.0), (None, 0.1, 9.0),
            ("thread", "process"), (0.0, 1.5), (0.0, 0.3, 1.0)):
        e = ev(batch_empty, chunk_empty, gil_wait_ms=gil, gil_held=0.9 if gil == 9.0 else 0.02,
               kind=kind, idle_cores=idle,
               fetch_cpu_share=share, fetch_cores=share * 2, in_fetch=0.3 if share else 0.9)
        v = verdict(e)
        assert v.starved == (batch_empty >= 0.5), (e, v)
        if v.kind in worker_side:
            assert chunk_empty >= 0.5, (e, v)
        if v.kind in shared_limit:
            assert chunk_empty >= 0.2 and (chunk_empty >= 0.5 or "batcher" in v.text), (e, v)
        if v.kind == "consumer-bound":
            assert batch_empty < 0.2
        if "workers.kind=process" in v.text and "If fetch runs Python" not in v.text:
            assert kind == "thread" and gil == 9.0 and idle >= 0.5, (e, v)
        if v.kind == "GIL-bound":
            assert kind == "thread" and gil == 9.0 and idle >= 0.5
        assert "seldom" not in v.text


# --- over-buffering: only where the memory matters ------------------------------------------

def test_a_full_small_batch_queue_in_front_of_a_slow_consumer_is_not_a_warning():
    # Seen: a red over-buffering warning for a healthy loop, to save 787 kB.
    e = ev(0.0, 0.0, queues=(queue("chunk queue", full=0.97, capacity=16, items=16, nbytes=1_049_000),
                             queue("batch queue", full=0.97, capacity=4, items=4, nbytes=262_000)))
    assert verdict(e).kind == "consumer-bound"
    assert over_buffering(e, budget_bytes=8 * 2**30) == [] and over_buffering(e) == []


def test_over_buffering_warns_when_the_saving_is_a_real_share_of_the_budget():
    big = queue("chunk queue", full=0.95, capacity=32, items=32, nbytes=32 * 4 * 2**20)
    e = ev(0.0, 0.0, queues=(big, queue("batch queue", full=0.9)))
    [text] = over_buffering(e, budget_bytes=2**30)
    assert text.startswith("the chunk queue was full 95% of the run: the stage after it is the "
                           "slower side, so 32 items (134.2 MB) wait where 8 would keep it busy; "
                           "queue.capacity=8 would save 100.7 MB (9% of memory.budget)")
    assert over_buffering(e, budget_bytes=64 * 2**30) == []  # 0.1%: not worth a warning
    assert over_buffering(e) == []  # no budget known: below OVERBUFFER_MIN_BYTES
    huge = replace(big, bytes=32 * OVERBUFFER_MIN_BYTES // 16)
    assert over_buffering(replace(e, queues=(huge,) + e.queues[1:]))


def test_byte_limited_and_tiny_queues_never_warn():
    capped = queue("chunk queue", full=1.0, capacity=64, items=64, nbytes=2**31, max_bytes=2**31)
    tiny = queue("batch queue", full=1.0, capacity=2, items=2, nbytes=2**31)
    assert over_buffering(ev(0.0, 0.0, queues=(capped, tiny)), budget_bytes=2**32) == []


# --- one judgement for the live view and the end of the run ----------------------------------

def _qstats(name: str, elapsed: float, empty: float, full: float = 0.0, items: int = 0,
            nbytes: int = 0, capacity: int = 16) -> QueueStats:
    return QueueStats(name=name, capacity=capacity, max_bytes=None, items=items, bytes=nbytes,
                      peak_items=items, peak_bytes=nbytes, items_in=0, items_out=0, bytes_in=0,
                      bytes_out=0, time_full_s=full * elapsed, time_empty_s=empty * elapsed,
                      put_wait_s=0.0, get_wait_s=0.0, elapsed_s=elapsed,
                      stage=STAGE_OF[name.rsplit('/', 1)[-1]])


def coordinator(elapsed: float, batch_empty: float, chunk_empty: float, kind: str = "thread",
                gil: GilReading | None = None, idle: float | None = None, cpu: float = 0.0,
                wall: float | None = None, batches: int = 100) -> CoordinatorStats:
    workers = WorkerPoolStats(
        kind=kind, workers=2, fetching=2, blocked=0, idle=0, done=0, chunks=batches,
        samples=64 * batches, bytes=0, empty_chunks=0,
        fetch_wall_s=wall if wall is not None else 1.9 * elapsed, fetch_cpu_s=cpu,
        fetch_p50_ms=40.0, fetch_p95_ms=45.0, gil=gil, idle_cpu_s=idle)
    return CoordinatorStats(
        input="main", device="cpu", device_index=0, batch_size=64, batches=batches,
        samples=64 * batches, bytes=0, elapsed_s=elapsed, first_batch_s=0.0, finished=False,
        workers=workers, queues=(_qstats("main/0/chunks", elapsed, chunk_empty),
                                 _qstats("main/0/batches", elapsed, batch_empty)),
        copied_batches=0, view_batches=batches, dropped_samples=0)


def window_of(before: CoordinatorStats, now: CoordinatorStats) -> Window:
    return window(RunnerStats(elapsed_s=now.elapsed_s, coordinators=(now,)),
                  RunnerStats(elapsed_s=before.elapsed_s, coordinators=(before,)))


SCENARIOS = {  # (batch queue empty, chunk queue empty, pool extras) over a steady run
    "fetch-bound": (0.95, 0.97, dict(gil=None, cpu=0.01)),
    "GIL-bound": (0.9, 0.8, dict(cpu=9.0)),
    "batcher-bound": (0.9, 0.05, {}),
    "consumer-bound": (0.05, 0.0, {}),
    "transport-bound": (0.95, 0.8, dict(kind="process", wall=6.0, cpu=5.0)),
}


@pytest.mark.parametrize("kind", list(SCENARIOS))
def test_the_live_verdict_and_the_final_diagnosis_agree_on_the_same_run(kind):
    # Seen: with process workers, the live warning blamed the batcher while the final
    # diagnosis said to add workers (two judgements with different thresholds).
    batch_empty, chunk_empty, extra = SCENARIOS[kind]
    pool = dict(gil=GilReading(probes=500, wait_s=4.0, held=450), idle=20.0)
    pool.update(extra)
    scale = {k: v for k, v in pool.items() if k in ("cpu", "wall")}
    half = coordinator(10.0, batch_empty, chunk_empty, batches=100,
                       **{**pool, **{k: v / 2 for k, v in scale.items()},
                          "gil": GilReading(250, 2.0, 225) if pool["gil"] else None, "idle": 10.0})
    full = coordinator(20.0, batch_empty, chunk_empty, batches=200, **pool)
    window = window_of(half, full)
    [live] = live_verdicts(window)
    assert live is not None and live.kind == kind
    [line] = diagnose(RunnerStats(elapsed_s=20.0, coordinators=(full,)),
                      since=RunnerStats(elapsed_s=10.0, coordinators=(half,)))
    assert line == live.line(WHERE).replace("the last 10 s", "the run")
    starving = [w for w in live_warnings(window) if w.startswith("starvation:")]
    assert starving == ([f"starvation: {live.line(WHERE)}"] if live.starved else [])


def test_the_final_diagnosis_leaves_out_the_start_up():
    # 3 s of start-up (every queue empty while workers start), then 7 s where the consumer
    # seldom waits: the run is consumer-bound, not starved.
    c = coordinator(10.0, batch_empty=0.3 + 0.7 * 0.05, chunk_empty=0.3)
    c = replace(c, first_batch_s=3.0)
    [line] = diagnose(RunnerStats(elapsed_s=10.0, coordinators=(c,)))
    assert "consumer-bound" in line and "empty only 5%" in line


# --- the probes --------------------------------------------------------------------------------

def test_the_probe_readings_parse():
    assert parse_schedstat("319182991 39533239 50\n") == pytest.approx(0.039533239)
    with pytest.raises(ValueError, match="schedstat"):
        parse_schedstat("")
    stat = "cpu  129150 0 20925 55803 207 0 79 428 0 0\ncpu0 1 2 3 4 5 6 7\n"
    assert parse_idle(stat, 100.0) == pytest.approx(560.10)
    with pytest.raises(ValueError, match="no 'cpu' line"):
        parse_idle("intr 1 2\n", 100.0)


def test_too_few_gil_probes_say_nothing_about_the_gil():
    now = coordinator(2.0, 0.9, 0.9, gil=GilReading(probes=3, wait_s=0.03))
    assert evidence(now).gil_wait_ms is None
    e = evidence(replace(now, workers=replace(now.workers, gil=GilReading(50, 0.4, 40))))
    assert e.gil_wait_ms == pytest.approx(8.0) and e.gil_held == pytest.approx(0.8)


# --- real pipelines: the evidence a run gathers, in states its load cannot change ----------
# Whether following the advice helps is a speed claim: tools/diagnosis_bench.py measures it.

def run(cfg: dict, seconds: float = 1.5, consume: bool = True) -> tuple[Evidence, list[str]]:
    """The evidence over ``seconds`` after the first batch, and the diagnosis. Without
    ``consume`` the span starts once both queues are full, and the consumer takes one batch
    at its end (a span with no batch has nothing to judge): a slow training step, whatever
    the machine's load."""
    with Runner(cfg) as runner:
        stream = runner.device(0)
        next(stream)  # start-up is over
        if not consume:
            wait_until(lambda: all(q.items >= q.capacity
                                   for q in runner.stats().coordinators[0].queues[:2]),
                       "both queues to fill up")
        before = runner.stats()
        if consume:
            end = time.monotonic() + seconds
            while time.monotonic() < end:
                next(stream)
        else:
            time.sleep(seconds)  # the span itself: nothing is taken, so the queues stay full
            next(stream)
        after = runner.stats()
    e = evidence(after.coordinators[0], before.coordinators[0])
    return e, diagnose(after, 2**30, since=before)


def synthetic(**source) -> dict:
    return {"_target_": SYN, "fields": {"x": {"shape": [4]}}, "chunk_size": 64, **source}


def test_a_fetch_that_sleeps_far_longer_than_everything_else_is_fetch_bound():
    """200 ms asleep per chunk, against microseconds of batching: both queues are empty
    nearly all the time on any machine, and the sleep needs no CPU, so more workers help."""
    e, [line] = run(make_cfg(synthetic(latency_ms=200), batch_size=64, workers={"count": 1}))
    assert e.in_fetch > 0.5 and e.fetch_cpu_share < 0.5, e
    assert judge(e).kind == "fetch-bound", line
    assert "Add workers (workers.count=2)." in line


def test_batch_sized_chunks_pass_as_views_and_smaller_ones_are_copied():
    """The batcher-bound advice removes work, counted exactly: with batch-sized chunks every
    batch is a view of its chunk; with 8 chunks to a batch each batch is assembled."""
    for chunk_size, copied in ((8, True), (64, False)):
        source = synthetic(fields={"x": {"shape": [256]}}, chunk_size=chunk_size)
        with Runner(make_cfg(source, batch_size=64, workers={"count": 2})) as runner:
            stream = runner.device(0)
            for _ in range(20):
                next(stream)
            stats = runner.stats().coordinators[0]
        assert stats.copied_batches + stats.view_batches >= 20, stats
        assert (stats.view_batches == 0) if copied else (stats.copied_batches == 0), stats


def test_a_slow_consumer_is_consumer_bound_and_small_full_queues_raise_no_warning():
    cfg = make_cfg(synthetic(fields={"x": {"shape": [256]}}), batch_size=64,
                   queue={"capacity": 16, "batch_capacity": 4})
    e, lines = run(cfg, seconds=0.5, consume=False)
    assert e.queue("batch queue").empty == 0.0 and e.queue("batch queue").full > 0.99, e
    assert judge(e).kind == "consumer-bound"
    assert len(lines) == 1 and "over-buffered" not in lines[0], lines


def test_a_big_full_queue_is_over_buffered_and_the_advised_capacity_holds_a_quarter():
    sample = {"x": {"shape": [16384]}}  # 64 kB samples, 4 MiB chunks
    cfg = dict(batch_size=64, memory={"budget": "1GiB"}, workers={"count": 1})
    big = make_cfg(synthetic(fields=sample), queue={"capacity": 32, "batch_capacity": 2}, **cfg)
    e, lines = run(big, seconds=0.5, consume=False)
    over = [line for line in lines if "over-buffered" in line]
    assert judge(e).kind == "consumer-bound" and len(over) == 1, lines
    assert "queue.capacity=8 would save" in over[0]
    assert over_buffering(e, 2**30) and e.queue("chunk queue").bytes > 100e6
    small = make_cfg(synthetic(fields=sample), queue={"capacity": 8, "batch_capacity": 2}, **cfg)
    e_small, lines = run(small, seconds=0.5, consume=False)
    # 8 chunks against 32 (one fewer in either if the batcher took one for the last batch)
    assert e_small.queue("chunk queue").bytes * 3 < e.queue("chunk queue").bytes, (e, e_small)
    assert not [line for line in lines if "over-buffered" in line], lines

"""What a Ray run shows: the dashboard, the plain lines, summary.json and the diagnosis.

Every snapshot here is stated by hand (RayStats and ActorStats as the Ray pool reports
them), so none of these tests needs Ray installed or starts it.
"""

from __future__ import annotations

import io
import itertools
import json
from dataclasses import replace

import pytest
from rich.console import Console

from inputkit.cli.render import progress_line, ray_record, ray_summary_lines
from inputkit.kinds.ray_view import RayEvidence, ray_window
from inputkit.observe.dashboard import plain_lines, render
from inputkit.observe.diagnosis import diagnose, judge, live_verdicts, live_warnings
from inputkit.observe.evidence import Evidence, QueueEvidence, evidence
from inputkit.observe.metrics import MovingWindow, Window
from inputkit.observe.metrics import window as metrics_window
from inputkit.observe.stats import CoordinatorStats, RunnerStats
from inputkit.pipeline.queues import QueueStats, Stage
from inputkit.workers.base import ActorStats, RayStats, WorkerPoolStats

# Queue names as the coordinator makes them, and the stage each is made with.
STAGE_OF = {"chunks": Stage.CHUNKS, "batches": Stage.BATCHES, "device": Stage.DEVICE}

HEAD, WORKER = "10.0.0.1", "10.0.0.2"
MB = 10**6


def actor(i: int, node: str, chunks: int, state: str = "reading", wall: float = 0.0) -> ActorStats:
    return ActorStats(name=f"ray worker {i}", node=node, pid=1000 + i, state=state,
                      chunks=chunks, samples=64 * chunks, fetch_wall_s=wall)


def ray_stats(scale: int = 1, spilled: int | None = 0, busy_s: float = 1.0, wall_s: float = 10.0,
              **kw) -> RayStats:
    """Two nodes: three actors on the head (one still starting), two on the worker node."""
    actors = (actor(0, HEAD, 10 * scale), actor(1, HEAD, 10 * scale),
              actor(2, HEAD, 0, state="starting"),
              actor(3, WORKER, 30 * scale), actor(4, WORKER, 30 * scale, state="idle"))
    base = dict(address="10.0.0.1:6379", local=False, connect_s=0.4, ready_s=2.5, actors=actors,
                inflight_items=7, inflight_bytes=12 * MB, held_bytes=20 * MB, cap_bytes=64 * MB,
                receive_busy_s=busy_s, receive_wall_s=wall_s, duplicates=3, spilled_bytes=spilled)
    base.update(kw)
    return RayStats(**base)  # type: ignore[arg-type]


def qstats(name: str, elapsed: float, empty: float = 0.0, capacity: int = 16) -> QueueStats:
    return QueueStats(name=name, capacity=capacity, max_bytes=None, items=0, bytes=0, peak_items=0,
                      peak_bytes=0, items_in=0, items_out=0, bytes_in=0, bytes_out=0,
                      time_full_s=0.0, time_empty_s=empty * elapsed, put_wait_s=0.0,
                      get_wait_s=0.0, elapsed_s=elapsed,
                      stage=STAGE_OF[name.rsplit('/', 1)[-1]])


def coordinator(elapsed: float, ray: RayStats, batches: int = 100, fetch_wall: float = 0.0,
                batch_empty: float = 0.0, chunk_empty: float = 0.0,
                restarts: int = 0) -> CoordinatorStats:
    states = [a.state for a in ray.actors]
    workers = WorkerPoolStats(
        kind="ray", workers=len(states), fetching=states.count("reading"), blocked=0,
        idle=states.count("idle"), done=states.count("done"), chunks=batches,
        samples=64 * batches, bytes=batches * MB, empty_chunks=0, fetch_wall_s=fetch_wall,
        fetch_cpu_s=0.5 * fetch_wall, fetch_p50_ms=4.0, fetch_p95_ms=9.0, restarts=restarts,
        ray=ray)
    return CoordinatorStats(
        input="main", device="cpu", device_index=0, batch_size=64, batches=batches,
        samples=64 * batches, bytes=batches * MB, elapsed_s=elapsed, first_batch_s=0.0,
        finished=False, workers=workers,
        queues=(qstats("main/0/chunks", elapsed, chunk_empty),
                qstats("main/0/batches", elapsed, batch_empty)),
        copied_batches=0, view_batches=batches, dropped_samples=0)


def two_snapshots(**kw) -> Window:
    """A window of 5 s between two snapshots: the worker node's actors delivered 3x the
    head's."""
    window = MovingWindow(60.0)
    window.update(RunnerStats(elapsed_s=5.0, coordinators=(coordinator(5.0, ray_stats(1)),)))
    now = coordinator(10.0, ray_stats(2, **kw), batches=200)
    view = window.update(RunnerStats(elapsed_s=10.0, coordinators=(now,)))
    return replace(view, window_s=5.0)  # the window's span as stated, not this test's clock


def recorded(renderable) -> str:
    console = Console(record=True, width=200, file=io.StringIO())
    console.print(renderable)
    return console.export_text()


# --- the window's per-node figures ------------------------------------------------------------

def test_per_node_rates_are_taken_over_the_window_and_a_replacement_actor_counts_from_zero():
    before = ray_stats(1)
    now = ray_stats(2)
    # The pool replaces a dead actor under its name, in a new process: its 4 chunks are new.
    replaced = replace(actor(4, WORKER, 4), pid=2004)
    now = replace(now, actors=now.actors[:4] + (replaced, actor(5, WORKER, 5)))
    ray = ray_window(now, before, span=5.0)
    nodes = {n.node: n for n in ray.nodes}
    assert set(nodes) == {HEAD, WORKER}
    assert nodes[HEAD].chunks_per_s == 4.0  # (20 - 10) x 2 actors over 5 s
    assert nodes[WORKER].chunks_per_s == pytest.approx(6.0 + 0.8 + 1.0)  # 30 / 5, 4 / 5, 5 / 5
    assert nodes[WORKER].samples_per_s == pytest.approx(64 * 7.8)
    assert nodes[HEAD].states == {"reading": 2, "starting": 1}
    assert nodes[WORKER].chunks == 69 and len(nodes[WORKER].actors) == 3


# --- the live view and the plain lines --------------------------------------------------------

def test_the_dashboard_shows_each_node_its_counts_the_object_store_and_the_spill_warning():
    view = two_snapshots(spilled=48 * MB)
    warnings = live_warnings(view)
    text = recorded(render(view, warnings))
    assert "5 Ray actors on 2 nodes" in text
    assert f"node {HEAD}" in text and f"node {WORKER}" in text
    assert "3 actors (2 reading, 1 starting)" in text and "2 actors (1 reading, 1 idle)" in text
    assert "4.0 chunks/s" in text and "12.0 chunks/s" in text  # per node, over the window
    assert "worker 3 6.0/s" in text and "worker 4 6.0/s idle" in text
    assert "in flight 7 items 12.0 MB" in text and "held 20.0 MB of cap 64.0 MB" in text
    assert "duplicates dropped 3" in text and "SPILLED 48.0 MB" in text
    assert "Ray cluster 10.0.0.1:6379" in text and "connected in 0.4 s" in text
    assert "actors ready in 2.5 s" in text
    spill = "spill: 10.0.0.1:6379: Ray spilled 48.0 MB to disk: lower workers.ray.inflight_bytes " \
            "or the queues"
    assert warnings.count(spill) == 1
    assert "Ray spilled 48.0 MB to disk: lower workers.ray.inflight_bytes" in text  # its panel


def test_the_plain_lines_carry_the_same_ray_figures():
    view = two_snapshots(spilled=48 * MB)
    lines = plain_lines(view)
    text = "\n".join(lines)
    assert f"    node {HEAD}: 3 actors (2 reading, 1 starting) 4.0 chunks/s 256 samples/s" in text
    assert f"    node {WORKER}: 2 actors (1 reading, 1 idle) 12.0 chunks/s 768 samples/s" in text
    assert "in flight 7 items 12.0 MB; held 20.0 MB of cap 64.0 MB" in text
    assert "SPILLED 48.0 MB" in text
    progress = progress_line(view.stats, None, 10.0, None).plain
    assert "ray 5 actors/2 nodes in flight 12.0 MB" in progress


def test_many_actors_on_a_node_make_one_line_not_one_per_actor_and_no_spill_no_warning():
    actors = tuple(actor(i, HEAD, 10) for i in range(6))
    view = two_snapshots(actors=actors, spilled=0, duplicates=0)
    text = recorded(render(view, live_warnings(view)))
    assert f"node {HEAD}" in text and "6 actors (6 reading)" in text
    assert "worker 0" not in text  # 6 > 4 on one node: the node's line only
    assert "spill" not in text.lower() and "duplicates" not in text
    assert not [w for w in live_warnings(view) if w.startswith("spill")]


def test_actors_not_yet_placed_are_shown_as_such_not_as_a_node_called_question_mark():
    starting = tuple(replace(actor(i, "?", 0, state="starting"), pid=None) for i in range(2))
    view = two_snapshots(actors=starting, ready_s=None, cap_bytes=None, inflight_items=0)
    text = recorded(render(view, []))
    assert "node not known yet (actors starting)  2 actors (2 starting)" in text
    assert "actors starting" in text and "cap not sized yet" in text and "node ?" not in text


def test_a_restarted_actor_is_named_as_such_in_the_failure_warning():
    window = MovingWindow(60.0)
    window.update(RunnerStats(elapsed_s=5.0, coordinators=(coordinator(5.0, ray_stats(1)),)))
    now = coordinator(10.0, ray_stats(2), batches=200, restarts=1)
    view = replace(window.update(RunnerStats(elapsed_s=10.0, coordinators=(now,))), window_s=5.0)
    assert any("restarted 1 Ray actor (failures.on_worker_death=restart)" in w
               for w in live_warnings(view))
    assert "restarts 1" in recorded(render(view, []))


# --- metrics.jsonl and summary.json -----------------------------------------------------------

def test_a_ray_snapshot_serializes_into_metrics_jsonl_and_summary_json_and_back():
    view = two_snapshots(spilled=None)
    record = json.loads(json.dumps(view.record([])))
    ray = record["coordinators"][0]["ray"]
    assert [n["node"] for n in ray["nodes"]] == [HEAD, WORKER]
    assert ray["nodes"][1]["chunks_per_s"] == 12.0 and ray["nodes"][0]["actors"] == 3
    assert ray["spilled_bytes"] is None and ray["inflight_bytes"] == 12 * MB

    stats = view.stats
    summary = {"stats": stats.to_dict(), "ray": ray_record(stats)}
    back = json.loads(json.dumps(summary, indent=2, default=str))
    (entry,) = back["ray"]
    assert entry["input"] == "main" and entry["connect_s"] == 0.4 and entry["ready_s"] == 2.5
    assert entry["spilled_bytes"] is None and entry["duplicates"] == 3
    by_node = {n["node"]: n for n in entry["nodes"]}
    assert by_node[HEAD] == {"node": HEAD, "actors": 3, "states": {"reading": 2, "starting": 1},
                             "chunks": 40, "samples": 2560}
    assert by_node[WORKER]["chunks"] == 120
    # The raw actors are in the coordinator's statistics too, as plain data.
    actors = back["stats"]["coordinators"][0]["workers"]["ray"]["actors"]
    assert len(actors) == 5 and actors[3]["node"] == WORKER

    lines = ray_summary_lines(stats)
    assert lines[0].startswith("ray of input 'main' on 0:cpu: Ray cluster 10.0.0.1:6379, "
                               "connected in 0.4 s, actors ready in 2.5 s")
    assert f"node {HEAD}: 3 actors, 40 chunks, 2,560 samples" in lines[1]
    assert f"node {WORKER}: 2 actors, 120 chunks, 7,680 samples" in lines[2]


def test_runner_stats_without_ray_have_no_ray_entries():
    pool = replace(coordinator(10.0, ray_stats()).workers, kind="thread", ray=None)
    stats = RunnerStats(elapsed_s=10.0, coordinators=(replace(coordinator(10.0, ray_stats()),
                                                              workers=pool),))
    assert ray_record(stats) == [] and ray_summary_lines(stats) == []
    assert "ray" not in MovingWindow(5.0).update(stats).record([])["coordinators"][0]


# --- the diagnosis: receive-bound and the Ray advice -----------------------------------------

def ray_ev(**kw) -> Evidence:
    """4 live Ray actors over 10 s; the consumer starved and the chunk queue empty."""
    base = dict(where="input 'main' on 0:cpu", over="the last 10 s", span_s=10.0, batches=300,
                kind="ray", workers=4,
                queues=(QueueEvidence("chunk queue", 16, 0, 0, full=0.0, empty=0.9),
                        QueueEvidence("batch queue", 4, 0, 0, full=0.0, empty=0.85)),
                in_fetch=0.2, fetch_cores=0.4, fetch_p50_ms=3.0, fetch_cpu_share=0.5,
                idle_cores=1.0, chunks=300, cores=2)
    ray = dict(receive_busy=0.8, actors_reading=0.25, inflight_items=2, pinned_bytes=8 * MB,
               cap_bytes=64 * MB, nodes=2)
    ray.update({k: kw.pop(k) for k in list(kw) if k in ray or k == "ray_local"})
    base.update(kw)
    return Evidence(**base, ext=RayEvidence(**ray))  # type: ignore[arg-type]


def test_idle_actors_and_a_busy_receiver_are_receive_bound_with_larger_chunks_advised():
    v = judge(ray_ev())
    assert v is not None and v.kind == "receive-bound" and v.starved
    assert "inside fetch only 20% of their time" in v.text
    assert "busy taking results in 80%" in v.text and "not the actors" in v.text
    assert "epoch.chunk_size" in v.text and "workers.kind=process" in v.text
    # In between (the chunk queue empty 35%), the receiver holds the batcher back too.
    between = ray_ev(queues=(QueueEvidence("chunk queue", 16, 0, 0, 0.0, 0.35),
                             QueueEvidence("batch queue", 4, 0, 0, 0.0, 0.85)))
    assert judge(between).kind == "receive-bound"  # type: ignore[union-attr]


def test_busy_actors_a_quiet_receiver_or_a_full_cap_are_not_receive_bound():
    busy = judge(ray_ev(in_fetch=0.95, actors_reading=1.0))
    assert busy is not None and busy.kind == "fetch-bound"
    assert "Add actors or nodes (workers.count=8" in busy.text and "ray start" in busy.text
    assert "workers.kind=process" not in busy.text
    quiet = judge(ray_ev(receive_busy=0.1))
    assert quiet is not None and quiet.kind == "input-bound" and "no change" in quiet.text
    capped = judge(ray_ev(pinned_bytes=62 * MB))
    assert capped is not None and capped.kind == "in-flight-bound"
    assert "workers.ray.inflight_bytes" in capped.text
    fed = judge(ray_ev(queues=(QueueEvidence("chunk queue", 16, 0, 0, 0.0, 0.0),
                               QueueEvidence("batch queue", 4, 8, 0, 0.9, 0.05))))
    assert fed is not None and fed.kind == "consumer-bound"  # the input keeps up


def test_busy_actors_on_a_saturated_private_ray_are_told_to_add_nodes():
    v = judge(ray_ev(in_fetch=0.95, ray_local=True, idle_cores=0.1, fetch_cpu_share=0.9))
    assert v is not None and v.kind == "CPU-bound"
    assert "Add nodes (ray start on more machines" in v.text and "workers.kind" not in v.text
    cluster = judge(ray_ev(in_fetch=0.95, ray_local=False, idle_cores=0.1))  # actors elsewhere
    assert cluster is not None and cluster.kind == "fetch-bound"


def test_a_tiny_ray_fetch_is_judged_by_its_receive_path_not_called_hand_over_bound():
    v = judge(ray_ev(fetch_p50_ms=0.01))
    assert v is not None and v.kind == "receive-bound"


def test_no_ray_verdict_contradicts_its_evidence():
    """Every combination: receive-bound only with waiting actors and a busy receiver below
    the cap; more actors advised only for busy actors; processes never for busy actors."""
    for batch, chunk, in_fetch, busy, pinned, local, idle in itertools.product(
            (0.1, 0.3, 0.9), (0.0, 0.3, 0.9), (0.1, 0.45, 0.6, 1.0), (0.1, 0.5, 0.9),
            (8 * MB, 60 * MB), (False, True), (0.0, 1.5)):
        e = ray_ev(queues=(QueueEvidence("chunk queue", 16, 0, 0, 0.0, chunk),
                           QueueEvidence("batch queue", 4, 0, 0, 0.0, batch)),
                   in_fetch=in_fetch, receive_busy=busy, pinned_bytes=pinned, ray_local=local,
                   idle_cores=idle)
        v = judge(e)
        assert v is not None
        if v.kind == "receive-bound":
            assert batch >= 0.5 and chunk >= 0.2 and busy >= 0.5 and in_fetch < 0.5
            assert pinned < 0.9 * 64 * MB
        if "Add actors" in v.text or "Add nodes" in v.text:
            assert in_fetch >= 0.5 and chunk >= 0.5
        if in_fetch >= 0.5:
            assert "workers.kind=process" not in v.text and v.kind != "receive-bound"
        if v.kind == "hand-over-bound":
            raise AssertionError(f"Ray judged hand-over-bound: {v.text}")


def test_the_evidence_reads_the_receivers_busy_share_and_live_actors_over_the_window():
    before = coordinator(5.0, ray_stats(1, busy_s=1.0, wall_s=5.0), fetch_wall=2.0,
                         batch_empty=0.9, chunk_empty=0.9)
    now = coordinator(10.0, ray_stats(2, busy_s=4.5, wall_s=10.0), batches=200, fetch_wall=4.0,
                      batch_empty=0.9, chunk_empty=0.9)
    e = evidence(now, before, over="the last 5 s")
    assert e.ext.receive_busy == 0.7  # 3.5 s of 5
    assert e.workers == 4  # the starting actor cannot take calls
    assert e.in_fetch == 2.0 / (4 * 5.0)
    assert e.ext.actors_reading == 3 / 4 and e.ext.pinned_bytes == 32 * MB and e.ext.nodes == 2
    window = metrics_window(RunnerStats(elapsed_s=10.0, coordinators=(now,)),
                            RunnerStats(elapsed_s=5.0, coordinators=(before,)))
    (live,) = live_verdicts(window)
    assert live is not None and live.kind == "receive-bound"
    # The run as a whole (no window): the same judgement, from the first batch on.
    final = diagnose(RunnerStats(elapsed_s=10.0, coordinators=(now,)), since=RunnerStats(
        elapsed_s=5.0, coordinators=(before,)))
    assert final[0].startswith("input 'main' on 0:cpu: receive-bound.")
    # A quiet receiver over the same window: not receive-bound.
    quiet = replace(now, workers=replace(now.workers, ray=ray_stats(2, busy_s=1.5, wall_s=10.0)))
    assert evidence(quiet, before).ext.receive_busy == 0.1
    assert diagnose(RunnerStats(elapsed_s=10.0, coordinators=(quiet,)), since=RunnerStats(
        elapsed_s=5.0, coordinators=(before,)))[0].find("receive-bound") == -1


def test_the_final_diagnosis_says_when_ray_spilled():
    now = coordinator(10.0, ray_stats(2, spilled=300 * MB), batches=200)
    lines = diagnose(RunnerStats(elapsed_s=10.0, coordinators=(now,)))
    assert "input 'main' on 0:cpu: Ray spilled 300.0 MB to disk: lower " \
           "workers.ray.inflight_bytes or the queues." in lines

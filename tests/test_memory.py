"""The memory planner, byte-bounded queues and the budget guard."""

from __future__ import annotations

import os
import subprocess
import sys
import threading
from pathlib import Path

import pytest
from conftest import make_cfg, wait_until

import inputkit
from inputkit import ConfigError, Runner, SourceError
from inputkit.pipeline.queues import BoundedQueue
from inputkit.planning.memory import MemoryBudgetError, plan_memory

TESTS = Path(__file__).resolve().parent
SYN = "inputkit.sources.synthetic.SyntheticSource"
GB = 10**9


def cli(args, cwd, timeout=120):
    env = {**os.environ, "PYTHONPATH": str(TESTS), "COLUMNS": "200"}
    return subprocess.run([sys.executable, "-m", "inputkit", *args], cwd=cwd, env=env,
                          capture_output=True, text=True, timeout=timeout,
                          stdin=subprocess.DEVNULL)


def test_the_caffe2_incident_is_refused_with_the_term_and_a_fix(tmp_path):
    out = cli(["plan", "experiment=caffe2_oom"], tmp_path)
    assert out.returncode == 3, out.stderr
    assert "500 chunks x 128 samples x 618,348 B" in out.stdout
    assert "316.6 GB" in out.stdout and "x 8 devices = 316.6 GB" in out.stdout
    assert "fix: Set queue.capacity=" in out.stdout
    fixed = cli(["plan", "experiment=caffe2_oom_fixed"], tmp_path)
    assert fixed.returncode == 0, fixed.stdout + fixed.stderr
    assert "fits:" in fixed.stdout and "headroom" in fixed.stdout


def test_the_suggested_capacity_really_fits():
    spec = inputkit.load_spec(inputkit.compose(["experiment=caffe2_oom", "memory.budget=64GB"]))
    plan = plan_memory(spec)
    assert plan.over_budget and plan.dominating().stage == "chunk queue"
    suggested = int(plan.suggestions[0].split("queue.capacity=")[1].split()[0])
    spec = inputkit.load_spec(inputkit.compose(["experiment=caffe2_oom", "memory.budget=64GB",
                                                f"queue.capacity={suggested}"]))
    assert not plan_memory(spec).over_budget
    spec = inputkit.load_spec(inputkit.compose(["experiment=caffe2_oom", "memory.budget=64GB",
                                                f"queue.capacity={suggested + 1}"]))
    assert plan_memory(spec).over_budget, "the suggestion is the largest that fits"


def test_plan_terms_multiply_out_for_threads_processes_and_cuda():
    spec = inputkit.load_spec(make_cfg(
        {"_target_": SYN, "fields": {"x": {"shape": [100], "dtype": "float32"}}, "chunk_size": 10},
        batch_size=20, workers={"count": 3}, queue={"capacity": 5, "batch_capacity": 2}))
    plan = plan_memory(spec, devices=("cpu", "cpu"))
    assert plan.stage_bytes("main", "chunk queue") == 5 * 10 * 400
    assert plan.stage_bytes("main", "chunks held by workers") == 3 * 10 * 400
    assert plan.stage_bytes("main", "batch queue") == 2 * 20 * 400
    per_device = sum(t.bytes for t in plan.terms if t.per_device)
    shared = sum(t.bytes for t in plan.terms if not t.per_device)
    assert plan.host_bytes == 2 * per_device + shared
    gpu = plan_memory(spec, devices=("cuda:0",))
    assert gpu.stage_bytes("main", "device prefetch") == 3 * 20 * 400  # prefetch 2 + in use
    assert gpu.gpu_bytes_per_device == 3 * 20 * 400
    proc = inputkit.load_spec(make_cfg(
        {"_target_": SYN, "fields": {"x": {"shape": [100], "dtype": "float32"}}, "chunk_size": 10},
        batch_size=20, workers={"kind": "process", "count": 3}, queue={"capacity": 5}))
    terms = {t.stage for t in plan_memory(proc, devices=("cpu",)).terms}
    assert {"shared-memory slots", "source copies", "worker processes"} <= terms


def test_a_byte_capacity_bounds_the_chunk_queue_term():
    spec = inputkit.load_spec(make_cfg(
        {"_target_": SYN, "fields": {"x": {"shape": [1000], "dtype": "float64"}}, "chunk_size": 100},
        queue={"capacity": "2MiB"}))
    assert spec.inputs[0].chunk_capacity_bytes == 2 * 2**20
    assert plan_memory(spec, devices=("cpu",)).stage_bytes("main", "chunk queue") == 2 * 2**20


def test_sizes_come_from_a_probe_when_the_source_declares_none():
    spec = inputkit.load_spec(make_cfg({"_target_": "fakes:fetch_ones", "width": 5},
                                       batch_size=8))
    plan = plan_memory(spec, devices=("cpu",))
    layout = plan.layouts["main"]
    assert layout.source == "probe" and layout.sample_bytes == 5 * 4 + 8


@pytest.mark.parametrize("source, text", [
    ({"_target_": "fakes:Raising", "after": 1}, "probe fetch failed: KeyError"),
    ({"_target_": "fakes:Returns", "kind": "none"}, None),
])
def test_a_probe_that_fails_names_the_source(source, text):
    spec = inputkit.load_spec(make_cfg(source))
    if text is None:  # Returns gives a good chunk first: the probe succeeds
        assert plan_memory(spec, devices=("cpu",)).layouts["main"].source == "probe"
        return
    with pytest.raises(SourceError, match=text) as info:
        plan_memory(spec, devices=("cpu",))
    assert info.value.source == "fakes:Raising"


@pytest.mark.parametrize("source, text", [
    ({"_target_": "fakes:Sharded", "length": 0}, "probe found the source exhausted"),
    ({"_target_": "fakes:fetch_empty"}, "probe fetch returned no samples"),
])
def test_a_probe_that_returns_nothing_is_an_error(source, text):
    spec = inputkit.load_spec(make_cfg(source))
    with pytest.raises(SourceError, match=text):
        plan_memory(spec, devices=("cpu",))


def test_probe_off_and_no_declared_fields_is_a_config_error_naming_the_key():
    spec = inputkit.load_spec(make_cfg({"_target_": "fakes:fetch_ones"}, memory={"probe": False}))
    with pytest.raises(ConfigError, match="source._fields_: unknown sample sizes"):
        plan_memory(spec, devices=("cpu",))


@pytest.mark.parametrize("override, message", [
    ("queue.capacity=12XB", "error: queue.capacity: cannot read '12XB' as a size"),
    ("queue.batch_capacity=0", "error: queue.batch_capacity: must be at least 1, got 0"),
    ("memory.budget=0", "error: memory.budget: must be a positive size, got 0"),
    ("memory.budget=-5GB", "error: memory.budget: cannot read '-5GB' as a size"),
    ("memory.budget=150%", "error: memory.budget: must be a percentage in (0, 100]"),
    ("memory.gpu_budget=lots", "error: memory.gpu_budget: cannot read 'lots' as a size"),
    ("workers.slot_bytes=0", "error: workers.slot_bytes: must be a positive size, got 0"),
])
def test_bad_sizes_and_budgets_exit_2_naming_the_key(tmp_path, override, message):
    out = cli(["plan", override], tmp_path)
    assert out.returncode == 2, out.stdout
    assert out.stderr.strip().startswith(message), out.stderr
    assert len(out.stderr.strip().splitlines()) == 1


def test_plan_does_not_import_torch(tmp_path):
    env = {**os.environ, "PYTHONPATH": str(TESTS)}
    out = subprocess.run([sys.executable, "-X", "importtime", "-m", "inputkit", "plan"],
                         cwd=tmp_path, env=env, capture_output=True, text=True, timeout=60)
    assert out.returncode == 0, out.stderr
    imported = [line.rsplit("|", 1)[-1].strip() for line in out.stderr.splitlines() if "|" in line]
    assert "inputkit.planning.memory" in imported
    assert not [m for m in imported if m == "torch" or m.startswith("torch.")]


def test_runner_refuses_an_over_budget_plan_before_starting_anything():
    cfg = make_cfg({"_target_": SYN, "fields": {"x": {"shape": [1000]}}, "chunk_size": 1000},
                   queue={"capacity": 100}, memory={"budget": "100MB"})
    runner = Runner(cfg)
    with pytest.raises(MemoryBudgetError, match="memory.budget: the pipeline may hold") as info:
        runner.start()
    assert info.value.plan.dominating().key == "queue.capacity"
    assert not [t for t in threading.enumerate() if t.name.startswith("inputkit-")]
    allowed = make_cfg({"_target_": SYN, "fields": {"x": {"shape": [1000]}}, "chunk_size": 1000},
                       queue={"capacity": 100}, memory={"budget": "100MB",
                                                        "allow_over_budget": True})
    with Runner(allowed) as runner:
        next(runner.device(0))
        assert runner.plan is not None and runner.plan.over_budget


def test_bench_refuses_with_exit_3_and_the_table(tmp_path):
    out = cli(["bench", "workers=threads", "queue.capacity=100000", "memory.budget=1GB"], tmp_path)
    assert out.returncode == 3
    assert "chunk queue" in out.stdout and "over budget" in out.stdout
    assert out.stderr.strip().startswith("error: refused to start")
    assert not (tmp_path / "outputs").exists() or not list((tmp_path / "outputs").rglob("*.json"))


def test_byte_bounded_queue_applies_backpressure_but_admits_one_oversized_item():
    q = BoundedQueue("q", capacity=1000, max_bytes=100)
    assert q.put("a", 60) and q.stats().bytes == 60
    done = threading.Event()
    threading.Thread(target=lambda: (q.put("b", 60), done.set()), daemon=True).start()
    assert not done.wait(0.2), "60 + 60 > 100: the put waits"
    assert q.get() == "a"
    assert done.wait(2.0)
    assert q.get() == "b"
    assert q.put("huge", 500), "an item larger than the limit passes when the queue is empty"
    s = q.stats()
    assert s.max_bytes == 100 and s.bytes == 500 and s.peak_bytes == 500


def test_byte_capacity_keeps_the_bytes_buffered_within_the_plan():
    cfg = make_cfg({"_target_": SYN, "fields": {"x": {"shape": [1024], "dtype": "float32"}},
                    "chunk_size": 0, "chunk_size_max": 64}, batch_size=64,
                   queue={"capacity": "256KiB"}, workers={"count": 3})
    with Runner(cfg) as runner:
        stream = runner.device(0)
        next(stream)
        # Nobody consumes: the workers fill the chunk queue up to its byte limit, then block.
        wait_until(lambda: runner.stats().coordinators[0].workers.blocked == 3,
                   "the workers to block on the full chunk queue")
        stats = runner.stats()
    chunk_queue = stats.coordinators[0].queues[0]
    largest_chunk = 64 * 4096
    assert chunk_queue.max_bytes == 256 * 1024
    assert chunk_queue.peak_bytes <= 256 * 1024 + largest_chunk
    assert chunk_queue.peak_bytes <= stats.coordinators[0].planned["chunk queue"]


def test_stats_report_planned_buffered_and_measured_memory():
    cfg = make_cfg({"_target_": SYN, "fields": {"x": {"shape": [256]}}, "chunk_size": 64},
                   workers={"kind": "process", "count": 2})
    with Runner(cfg) as runner:
        next(runner.device(0))
        wait_until(lambda: runner.stats().memory.workers_rss > 0, "the workers' memory reading")
        stats = runner.stats()
    assert stats.planned_host_bytes == runner.plan.host_bytes > 0
    assert stats.buffered_bytes == sum(q.bytes for c in stats.coordinators for q in c.queues)
    assert stats.memory is not None
    assert stats.memory.main_rss > 0 and stats.memory.workers_rss > 0
    assert stats.coordinators[0].planned["shared-memory slots"] > 0
    assert stats.to_dict()["memory"]["workers_rss"] == stats.memory.workers_rss


def test_a_probe_that_fails_closes_its_copy_of_the_source():
    """The probe's private copy is closed when its fetch fails, not left to a finalizer."""
    from fakes import FailsAndCountsCloses

    from inputkit.errors import SourceError

    FailsAndCountsCloses.closed = 0
    with pytest.raises(SourceError, match="probe fetch failed"):
        plan_memory(inputkit.load_spec(make_cfg({"_target_": "fakes:FailsAndCountsCloses"})))
    assert FailsAndCountsCloses.closed == 1


def test_ray_workers_plan_the_object_store_the_actors_and_one_local_ray():
    from inputkit.config.spec import load_spec
    from inputkit.planning.memory import LOCAL_RAY_BYTES, RAY_ACTOR_BYTES

    source = {"_target_": SYN, "fields": {"x": {"shape": [1024], "dtype": "uint8"}},
              "chunk_size": 64}
    ray = {"kind": "ray", "count": 3, "ray": {"inflight": 2}}
    spec = load_spec(make_cfg(source, batch_size=64, workers=ray,
                              queue={"capacity": 5, "batch_capacity": 2}))
    plan = plan_memory(spec, devices=("cpu", "cpu"))
    store = next(t for t in plan.terms if t.stage == "Ray object store")
    # 3 actors x 2 in flight + 5 queued chunks + 2 queued batches + batcher and hand-over (4)
    assert (store.count, store.unit_bytes) == (3 * 2 + 5 + 2 + 4, 64 * 1024)
    assert plan.stage_bytes("main", "Ray actor processes") == 3 * RAY_ACTOR_BYTES
    local = [t for t in plan.terms if t.stage == "local Ray"]
    assert len(local) == 1 and local[0].bytes == LOCAL_RAY_BYTES and not local[0].per_device
    assert "chunk queue" not in {t.stage for t in plan.terms}, "the chunks are in the store"

    capped = load_spec(make_cfg(source, batch_size=64, workers={
        **ray, "ray": {"inflight_bytes": "256KiB", "address": "auto"}}))
    terms = plan_memory(capped, devices=("cpu",)).terms
    store = next(t for t in terms if t.stage == "Ray object store")
    assert (store.unit, store.bytes) == ("byte limit", 256 * 1024)
    assert "local Ray" not in {t.stage for t in terms}, "a cluster's Ray is not this process's"

"""Ray workers on a real local Ray (2 CPUs): exact batches, exactly once, failures, resume, cleanup.

One local Ray serves the whole module (started by the fixture, as a training script that
calls ``ray.init`` itself would): pools attach to it and leave it up. The tests of a Ray
that inputkit starts itself, of a two-node cluster and of addresses live in
tests/test_ray_cluster.py.
"""

from __future__ import annotations

import os
import signal
import threading
import time
from pathlib import Path
from typing import Any

import numpy as np
import psutil
import pytest
from conftest import alive, make_cfg, ray_processes

ray = pytest.importorskip("ray", reason="Ray is not installed: pip install 'inputkit-ml[ray]'")

from inputkit import Runner  # noqa: E402
from inputkit.errors import WorkerFailure  # noqa: E402

pytestmark = pytest.mark.timeout(120)

TESTS = str(Path(__file__).parent)
SYN = "inputkit.sources.synthetic.SyntheticSource"


@pytest.fixture(scope="module", autouse=True)
def local_ray() -> Any:
    """A local Ray with 2 CPUs whose workers can import the tests' sources (fakes, faulty)."""
    if ray.is_initialized():
        ray.shutdown()
    old = os.environ.get("PYTHONPATH")
    os.environ["PYTHONPATH"] = TESTS + (os.pathsep + old if old else "")
    try:
        ray.init(address="local", num_cpus=2, include_dashboard=False, log_to_driver=False,
                 configure_logging=False)
    finally:
        if old is None:
            os.environ.pop("PYTHONPATH", None)
        else:
            os.environ["PYTHONPATH"] = old
    yield
    started = ray_processes()
    ray.shutdown()
    wait_until(lambda: not alive(list(started)), 30, "Ray's processes left running after "
               "shutdown: " + "; ".join(map(str, alive(list(started)))))


def ray_cfg(source: dict[str, Any], actors: int = 2, **top: Any) -> dict[str, Any]:
    workers = {"kind": "ray", "count": actors,
               "ray": {"cpus_per_actor": top.pop("cpus_per_actor", 0.5)}}
    workers["ray"].update(top.pop("ray", {}))
    return make_cfg(source, workers=workers, **top)


def actor_processes() -> list[int]:
    """Live processes of inputkit's actors (Ray names them ray::FetchActor...)."""
    found = []
    for process in psutil.process_iter(["cmdline", "status"]):
        try:
            if process.info["status"] != psutil.STATUS_ZOMBIE and \
                    any("FetchActor" in part for part in process.info["cmdline"] or []):
                found.append(process.pid)
        except psutil.Error:
            continue
    return found


def wait_until(condition: Any, seconds: float, what: str) -> None:
    deadline = time.monotonic() + seconds
    while not condition():
        if time.monotonic() > deadline:
            raise AssertionError(f"still not true after {seconds:g}s: {what}")
        time.sleep(0.1)


def no_actors_left() -> None:
    wait_until(lambda: not actor_processes(), 20, f"actor processes left: {actor_processes()}")


def consume_all(runner: Runner, devices: int) -> list[np.ndarray]:
    """Every device's batches, read in threads (one per device); the ``id`` of each sample."""
    seen: list[list[np.ndarray]] = [[] for _ in range(devices)]
    errors: list[BaseException] = []

    def read(i: int) -> None:
        try:
            for batch in runner.device(i):
                seen[i].append(batch["id"].numpy().copy())
        except BaseException as exc:  # noqa: BLE001 - handed to the test
            errors.append(exc)

    threads = [threading.Thread(target=read, args=(i,)) for i in range(devices)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(90)
    assert not errors, errors
    return [np.concatenate(s) if s else np.zeros(0, np.int64) for s in seen]


def test_index_range_exactly_once_on_two_devices_with_shuffle():
    cfg = ray_cfg({"_target_": SYN, "fields": {"x": {"shape": [4], "dtype": "float32"}},
                   "length": 3001, "id_field": "id"}, batch_size=64, devices=["cpu", "cpu"],
                  epoch={"shuffle": True, "chunk_size": 37})
    with Runner(cfg) as runner:
        per_device = consume_all(runner, 2)

        def released() -> bool:  # every object let go once its batches are gone
            pools = [c.workers.ray for c in runner.stats().coordinators]
            return all(p.inflight_items == 0 and p.held_bytes == 0 for p in pools)

        wait_until(released, 10, "objects still pinned after the epoch")
        stats = runner.stats().coordinators
    ids = np.concatenate(per_device)
    assert sorted(ids.tolist()) == list(range(3001))
    assert not set(per_device[0].tolist()) & set(per_device[1].tolist())
    for coordinator in stats:
        workers = coordinator.workers
        assert workers.kind == "ray" and workers.ray is not None
        assert sum(a.samples for a in workers.ray.actors) == workers.samples
    no_actors_left()


def test_batches_that_are_views_of_their_chunk_pin_nothing_after_the_epoch():
    """Chunks of exactly a batch: every batch is a view of its object, and its index field too.
    Once the consumer drops them, nothing may keep one: the coordinator's record of the last
    batch's samples (read by inputkit.lightning) is a copy, not a view pinning its object."""
    cfg = ray_cfg({"_target_": SYN, "fields": {"x": {"shape": [4], "dtype": "float32"}},
                   "length": 640, "id_field": "id"}, batch_size=64, devices=["cpu"],
                  epoch={"shuffle": True, "chunk_size": 64})
    with Runner(cfg) as runner:
        [ids] = consume_all(runner, 1)

        def released() -> bool:
            [pool] = [c.workers.ray for c in runner.stats().coordinators]
            return pool.inflight_items == 0 and pool.held_bytes == 0

        wait_until(released, 10, "objects still pinned after the epoch")
    assert sorted(ids.tolist()) == list(range(640))


def test_fetch_source_with_random_chunk_sizes_exact_batches_on_two_devices():
    cfg = ray_cfg({"_target_": "fakes:Sharded", "length": 2000, "max_chunk": 90},
                  batch_size=50, devices=["cpu", "cpu"])
    with Runner(cfg) as runner:
        sizes: list[int] = []
        seen = []
        for i in range(2):
            for batch in runner.device(i):
                sizes.append(len(batch["id"]))
                seen.append(batch["id"].numpy().copy())
    ids = np.concatenate(seen)
    assert sorted(ids.tolist()) == list(range(2000))
    assert sizes.count(50) >= len(sizes) - 2  # exact batches; each device's last may be short
    no_actors_left()


def test_processors_run_in_the_actors():
    cfg = ray_cfg({"_target_": SYN, "fields": {"x": {"shape": [3], "dtype": "float32"}},
                   "length": 640, "id_field": "id"}, batch_size=64,
                  processors=[{"_target_": "inputkit.processors.Cast", "dtype": "float16",
                               "field": "x"}])
    with Runner(cfg) as runner:
        batches = list(runner.device(0))
        processors = runner.stats().coordinators[0].workers.processors
    assert all(str(b["x"].dtype) == "torch.float16" for b in batches)
    assert sum(len(b["id"]) for b in batches) == 640
    assert processors, "the actors' processor stats reached the trainer"


def test_a_fetch_error_reaches_the_consumer_with_its_type_and_traceback():
    cfg = ray_cfg({"_target_": "faulty:Indexed", "length": 400, "bad": [250]}, batch_size=50,
                  actors=1, epoch={"chunk_size": 50})
    with Runner(cfg) as runner, pytest.raises(ValueError, match="sample 250 is corrupt") as info:
        for _ in runner.device(0):
            pass
    text = "".join(getattr(info.value, "__notes__", [])) + str(info.value)
    assert "sample 250" in text
    failure = runner._abort.failure
    assert failure is not None and "Ray actor" in failure.where and "node" in failure.where
    assert "faulty.py" in failure.traceback_text and "in read" in failure.traceback_text
    no_actors_left()


def test_skip_policy_drops_only_the_bad_samples():
    cfg = ray_cfg({"_target_": "faulty:Indexed", "length": 500, "bad": [3, 260, 261]},
                  batch_size=50, failures={"on_error": "skip"}, epoch={"chunk_size": 50})
    with Runner(cfg) as runner:
        ids = np.concatenate([b["id"].numpy() for b in runner.device(0)])
        workers = runner.stats().coordinators[0].workers
    assert sorted(ids.tolist()) == sorted(set(range(500)) - {3, 260, 261})
    assert workers.skipped_samples == 3 and sorted(workers.skipped_indices) == [3, 260, 261]


def test_retries_are_counted_from_the_actors():
    cfg = ray_cfg({"_target_": "faulty:Indexed", "length": 200, "flaky": 1}, batch_size=50,
                  failures={"on_error": "retry", "retries": 2, "retry_backoff": 0.01},
                  epoch={"chunk_size": 50})
    with Runner(cfg) as runner:
        ids = np.concatenate([b["id"].numpy() for b in runner.device(0)])
        workers = runner.stats().coordinators[0].workers
    assert sorted(ids.tolist()) == list(range(200))
    assert workers.retries == 4  # each of the 4 items failed once


def test_a_killed_actor_is_replaced_and_every_sample_arrives_once():
    cfg = ray_cfg({"_target_": "faulty:Indexed", "length": 3000, "sleep_ms": 15}, batch_size=50,
                  failures={"on_worker_death": "restart"}, epoch={"chunk_size": 50},
                  queue={"capacity": 2, "batch_capacity": 1})
    seen = []
    with Runner(cfg) as runner:
        killed = None
        for batch in runner.device(0):
            seen.append(batch["id"].numpy().copy())
            if len(seen) == 5:
                actors = runner.stats().coordinators[0].workers.ray.actors
                killed = next(a.pid for a in actors if a.pid is not None and a.state != "dead")
                os.kill(killed, signal.SIGKILL)
        workers = runner.stats().coordinators[0].workers
    ids = np.concatenate(seen)
    assert killed is not None
    assert sorted(ids.tolist()) == list(range(3000)), "a sample was lost or repeated"
    assert workers.restarts == 1
    assert killed not in {a.pid for a in workers.ray.actors}
    no_actors_left()


def test_a_killed_actor_fails_the_run_naming_it_without_restart():
    cfg = ray_cfg({"_target_": "faulty:Indexed", "length": 100_000, "sleep_ms": 10},
                  batch_size=50, epoch={"chunk_size": 50})
    with Runner(cfg) as runner, pytest.raises(WorkerFailure) as info:
        for i, _ in enumerate(runner.device(0)):
            if i == 3:
                actors = runner.stats().coordinators[0].workers.ray.actors
                victim = next(a for a in actors if a.pid is not None)
                os.kill(victim.pid, signal.SIGKILL)
    message = str(info.value)
    assert f"pid {victim.pid}" in message and f"node {victim.node}" in message
    assert "died" in message and "Ray actor" in message
    no_actors_left()


def test_an_early_break_and_close_leave_no_actor():
    cfg = ray_cfg({"_target_": SYN, "fields": {"x": {"shape": [256], "dtype": "float32"}},
                   "chunk_size": 64}, batch_size=64)
    with Runner(cfg) as runner:
        for i, _ in enumerate(runner.device(0)):
            if i == 10:
                break
        assert actor_processes()
    no_actors_left()
    assert ray.is_initialized(), "the program's own Ray connection is left up"


def test_inflight_bytes_bound_what_the_pipeline_pins():
    chunk = 64 * 4096 * 4  # 1 MiB a chunk
    cfg = ray_cfg({"_target_": SYN, "fields": {"x": {"shape": [4096], "dtype": "float32"}},
                   "length": 64 * 150, "id_field": "id"}, batch_size=64,
                  ray={"inflight_bytes": 3 * chunk + 64 * 150}, epoch={"chunk_size": 64})
    peaks = []
    with Runner(cfg) as runner:
        for _ in runner.device(0):
            time.sleep(0.002)  # a consumer slower than the actors: the pipeline fills up
            stats = runner.stats().coordinators[0].workers.ray
            peaks.append(stats.inflight_bytes + stats.held_bytes)
            assert stats.cap_bytes == 3 * chunk + 64 * 150
    assert max(peaks) <= 3 * chunk + 64 * 150
    assert max(peaks) >= chunk  # it did pin something: the bound is what held it


def test_the_first_calls_count_against_the_cap_once_a_chunk_is_sized():
    """Each actor's first call goes out before any answer tells a chunk's size (estimated at
    0 bytes). A first answer arriving late must be counted once the size is known, or the
    calls handed out meanwhile fill the cap and it lands on top (a CI run saw 4 chunks
    pinned under a 3-chunk cap). A watcher samples the ledger every millisecond."""
    chunk = 64 * (4096 * 4 + 8)
    cap = 3 * chunk + 100
    cfg = ray_cfg({"_target_": "faulty:LateFirstFetch", "dim": 4096, "late": 1, "seconds": 1.5},
                  batch_size=64, ray={"inflight_bytes": cap})
    pinned, done = [], threading.Event()
    with Runner(cfg) as runner:
        def watch() -> None:
            while not done.is_set():
                stats = runner.stats().coordinators[0].workers.ray
                pinned.append(stats.inflight_bytes + stats.held_bytes)
                time.sleep(0.001)

        watcher = threading.Thread(target=watch, daemon=True)
        watcher.start()
        for i, _ in enumerate(runner.device(0)):
            time.sleep(0.2)  # far slower than the actors: the pipeline stays full to its cap
            if i == 15:
                break
        done.set()
        watcher.join(timeout=10)
    assert max(pinned) <= cap, f"pinned {max(pinned):,} bytes under a cap of {cap:,}"


def test_resume_from_process_workers_to_ray_and_back():
    source = {"_target_": SYN, "fields": {"x": {"shape": [2], "dtype": "float32"}},
              "length": 1000, "id_field": "id"}
    first = make_cfg(source, batch_size=50, workers={"kind": "process", "count": 2},
                     epoch={"shuffle": True, "chunk_size": 50})
    seen = []
    with Runner(first) as runner:
        for i, batch in enumerate(runner.device(0)):
            seen.append(batch["id"].numpy().copy())
            if i == 5:
                break
        state = runner.state_dict()
    second = ray_cfg(source, batch_size=50, epoch={"shuffle": True, "chunk_size": 50})
    resumed = Runner(second)
    resumed.load_state_dict(state)
    with resumed:
        for i, batch in enumerate(resumed.device(0)):
            seen.append(batch["id"].numpy().copy())
            if i == 5:
                break
        state = resumed.state_dict()
    third = make_cfg(source, batch_size=50, workers={"kind": "thread", "count": 2},
                     epoch={"shuffle": True, "chunk_size": 50})
    last = Runner(third)
    last.load_state_dict(state)
    with last:
        seen.extend(b["id"].numpy().copy() for b in last.device(0))
    ids = np.concatenate(seen)
    assert sorted(ids.tolist()) == list(range(1000))


def test_runtime_env_reaches_the_actors():
    cfg = ray_cfg({"_target_": "fakes:EnvIndexed", "length": 100, "name": "INPUTKIT_TEST_MARK"},
                  batch_size=50, actors=1, epoch={"chunk_size": 50},
                  ray={"runtime_env": {"env_vars": {"INPUTKIT_TEST_MARK": "42",
                                                    "PYTHONPATH": TESTS}}})
    with Runner(cfg) as runner:
        values = np.concatenate([b["env"].numpy() for b in runner.device(0)])
    assert len(values) == 100 and set(values.tolist()) == {42}


def test_a_consumer_keeping_one_small_field_of_every_batch_pins_no_more_than_the_cap():
    # Each kept id tensor views its batch's object, which stays pinned whole: the pool counts
    # the object, not the id's bytes, and once the room runs short batches are copies.
    chunk = 64 * (4096 * 4 + 8)
    cfg = ray_cfg({"_target_": SYN, "fields": {"x": {"shape": [4096], "dtype": "float32"}},
                   "length": 64 * 150, "id_field": "id"}, batch_size=64, epoch={"chunk_size": 64},
                  ray={"inflight_bytes": 24 * chunk})
    kept, pinned = [], []
    with Runner(cfg) as runner:
        for batch in runner.device(0):
            kept.append(batch["id"])
            stats = runner.stats().coordinators[0]
            pinned.append(stats.workers.ray.inflight_bytes + stats.workers.ray.held_bytes)
        copied = stats.copied_batches
    assert sorted(int(i) for ids in kept for i in ids) == list(range(64 * 150))
    assert max(pinned) <= 24 * chunk, "more objects pinned than workers.ray.inflight_bytes"
    assert copied >= 100, "batches past the cap were copies, so the kept ids pin nothing"


def test_an_actor_never_placed_fails_the_run_naming_workers_ray_start_timeout():
    """An actor asking for more CPUs than the Ray has is never placed: past start_timeout the
    run fails naming the actor, the key and why (workers/ray_lifecycle.py, RayActors.late)."""
    cfg = ray_cfg({"_target_": SYN, "fields": {"x": {"shape": [4]}}}, actors=1,
                  cpus_per_actor=4, ray={"start_timeout": 2})
    with Runner(cfg) as runner, pytest.raises(WorkerFailure) as info:
        next(runner.device(0))
    message = str(info.value)
    assert "ray worker 0 (Ray actor, not started yet)" in message
    assert "did not start within 2s (workers.ray.start_timeout)" in message
    no_actors_left()

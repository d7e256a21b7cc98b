"""Failure policies, worker restarts, the stall watchdog, and exactly-once index-range epochs."""

from __future__ import annotations

import logging
import os
import signal
import threading
import time

import numpy as np
import psutil
import pytest
from conftest import assert_nothing_leaked, children, make_cfg, segments, wait_until

from inputkit import ConfigError, Runner, WorkerFailure
from inputkit.pipeline.failures import FetchTimeout, StallError

F = "faulty"


@pytest.fixture(autouse=True)
def no_leaks(caplog):
    """Every test leaves no shared-memory segment and no worker process behind."""
    before_segments, before_children = segments(), children()
    yield
    assert_nothing_leaked(before_segments, before_children, caplog)


def proc(count: int = 2, **extra):
    return {"kind": "process", "count": count, "start_method": "forkserver", **extra}


def ids(batches) -> list[int]:
    return np.concatenate([b["id"].numpy() for b in batches]).tolist() if batches else []


def drain(stream) -> list[dict]:
    out = []
    for batch in stream:
        assert np.array_equal(batch["x"][:, 0].numpy(), batch["id"].numpy().astype(np.float32)), \
            "fields stay aligned"
        out.append(batch)
    return out


# on_error --------------------------------------------------------------------------------------

@pytest.mark.parametrize("workers", [{"count": 2}, proc()], ids=["threads", "processes"])
def test_on_error_skip_counts_skipped_chunks_and_goes_on(workers, caplog):
    cfg = make_cfg({"_target_": f"{F}.FlakyFetch", "every": 3}, batch_size=8, workers=workers,
                   failures={"on_error": "skip"})
    with caplog.at_level(logging.WARNING, logger="inputkit.pipeline.failures"), Runner(cfg) as runner:
        stream = runner.device(0)
        for _ in range(30):
            next(stream)
        pool = runner.stats().coordinators[0].workers
    assert pool.skipped_chunks >= 5
    assert "OSError" in pool.last_error and "connection reset" in pool.last_error
    if workers.get("kind") != "process":  # process workers log in their own process
        assert "skipped a chunk (failures.on_error=skip)" in caplog.text


@pytest.mark.parametrize("workers", [{"count": 1}, proc(1)], ids=["threads", "processes"])
def test_on_error_retry_recovers_from_transient_failures(workers):
    # no probe: with threads it reads chunk 0 (and its two failures) on the run's own source
    cfg = make_cfg({"_target_": f"{F}.Indexed", "length": 200, "flaky": 2}, batch_size=20,
                   workers=workers, failures={"on_error": "retry", "retries": 3,
                                              "retry_backoff": 0.001}, memory={"probe": False})
    with Runner(cfg) as runner:
        got = drain(runner.device(0))
        pool = runner.stats().coordinators[0].workers
    assert sorted(ids(got)) == list(range(200))
    assert pool.retries == 2 * 10  # two failed attempts for each of the 10 chunks
    assert "ConnectionError" in pool.last_error


def test_on_error_retry_gives_up_with_the_original_exception_after_the_retries():
    cfg = make_cfg({"_target_": f"{F}.Indexed", "length": 100, "flaky": 5}, batch_size=10,
                   workers={"count": 1}, memory={"probe": False},
                   failures={"on_error": "retry", "retries": 2, "retry_backoff": 0.001})
    with pytest.raises(ConnectionError, match="attempt 3 at samples from 0") as info:
        with Runner(cfg) as runner:
            drain(runner.device(0))
    notes = "\n".join(getattr(info.value, "__notes__", []))
    assert "raised again after 2 retries (failures.retries=2)" in notes
    assert "worker 0 of input 'main'" in notes


def test_on_error_raise_is_the_default_and_names_the_worker():
    cfg = make_cfg({"_target_": f"{F}.Indexed", "length": 100, "bad": [42]}, batch_size=10)
    with pytest.raises(ValueError, match="sample 42 is corrupt") as info:
        with Runner(cfg) as runner:
            drain(runner.device(0))
    assert "source 'faulty.Indexed'" in "\n".join(info.value.__notes__)


@pytest.mark.parametrize("workers", [{"count": 3}, proc(2)], ids=["threads", "processes"])
def test_skipped_samples_are_counted_and_everything_else_arrives_exactly_once(workers):
    """A bad sample costs only itself: its chunk is read again one index at a time."""
    bad = [5, 123, 124, 777]
    cfg = make_cfg({"_target_": f"{F}.Indexed", "length": 1000, "bad": bad}, batch_size=32,
                   workers=workers, failures={"on_error": "skip"}, epoch={"chunk_size": 10})
    with Runner(cfg) as runner:
        got = ids(drain(runner.device(0)))
        pool = runner.stats().coordinators[0].workers
    expected = [i for i in range(1000) if i not in bad]
    assert sorted(got) == expected, "no duplicates, nothing lost beyond the bad samples"
    assert pool.skipped_chunks == 0, "no chunk lost every sample"
    assert pool.skipped_samples == 4 and len(got) + pool.skipped_samples == 1000
    assert sorted(pool.skipped_indices) == bad


def test_a_read_that_returns_the_wrong_number_of_samples_names_the_source():
    cfg = make_cfg({"_target_": f"{F}.ShortReads", "length": 100}, batch_size=10)
    with pytest.raises(Exception, match=r"read\(indices\) returned 9 samples for 10 indices"):
        with Runner(cfg) as runner:
            drain(runner.device(0))


# epochs, order, shuffle -----------------------------------------------------------------------

def test_ordered_epochs_give_the_same_batches_whatever_the_workers():
    def run(workers):
        cfg = make_cfg({"_target_": f"{F}.Indexed", "length": 999, "sleep_ms": 1},
                       batch_size=64, workers=workers,
                       epoch={"ordered": True, "shuffle": True, "seed": 7, "chunk_size": 50})
        with Runner(cfg) as runner:
            return [b["id"].tolist() for b in drain(runner.device(0))]

    one = run({"count": 1})
    assert run({"count": 4}) == one
    assert run(proc(3)) == one
    flat = [i for batch in one for i in batch]
    assert sorted(flat) == list(range(999)) and flat != list(range(999)), "shuffled, exactly once"
    assert [len(b) for b in one] == [64] * 15 + [39]


def test_each_iteration_is_one_epoch_with_its_own_permutation():
    cfg = make_cfg({"_target_": f"{F}.Indexed", "length": 300}, batch_size=32, workers={"count": 2},
                   epoch={"count": 3, "shuffle": True, "seed": 1, "ordered": True})
    epochs = []
    with Runner(cfg) as runner:
        stream = runner.device(0)
        for epoch in range(3):
            assert stream.epoch == epoch
            epochs.append(ids(drain(stream)))
        assert list(stream) == [] and stream.finished
    for got in epochs:
        assert sorted(got) == list(range(300))
    assert epochs[0] != epochs[1] != epochs[2], "a new permutation each epoch"


def test_index_ranges_split_across_devices_without_overlap():
    cfg = make_cfg({"_target_": f"{F}.Indexed", "length": 1000}, batch_size=16,
                   devices=["cpu", "cpu", "cpu"], workers={"count": 2},
                   epoch={"chunk_size": 7, "shuffle": True})
    per_device = [[], [], []]
    with Runner(cfg) as runner:
        for step in runner.steps():
            for device, batch in enumerate(step):
                if batch is not None:
                    per_device[device].extend(batch["id"].tolist())
    assert all(per_device)
    assert sorted(sum(per_device, [])) == list(range(1000))


def test_epoch_keys_need_an_indexable_source():
    cfg = make_cfg({"_target_": "inputkit.sources.synthetic.SyntheticSource",
                    "fields": {"x": {"shape": [2]}}}, epoch={"shuffle": True})
    with pytest.raises(ConfigError, match=r"epoch.shuffle: needs an indexable source .*__len__ "
                                          r"and read\(indices\)"):
        Runner(cfg).start()


# worker death and restart ---------------------------------------------------------------------

def _kill_workers(runner, kills: int, every: float) -> list[int]:
    killed = []
    for _ in range(kills):
        time.sleep(every)
        pids = [pid for c in runner.coordinators() for pid in c.workers.stats().pids]
        victim = pids[len(killed) % len(pids)]
        try:
            os.kill(victim, signal.SIGKILL)
            killed.append(victim)
        except ProcessLookupError:
            pass
    return killed


def test_restarted_workers_lose_and_repeat_no_sample():
    cfg = make_cfg({"_target_": f"{F}.Indexed", "length": 3000, "sleep_ms": 4}, batch_size=25,
                   workers=proc(3), devices=["cpu", "cpu"],
                   failures={"on_worker_death": "restart", "max_restarts": None},
                   epoch={"chunk_size": 20})
    got: list[int] = []
    with Runner(cfg) as runner:
        killer = threading.Thread(target=lambda: killed.extend(_kill_workers(runner, 8, 0.08)))
        killed: list[int] = []
        killer.start()
        for step in runner.steps():
            for batch in step:
                if batch is not None:
                    got.extend(batch["id"].tolist())
        killer.join()
        stats = runner.stats()
        restarts = sum(c.workers.restarts for c in stats.coordinators)
        slots_free = all(c.workers.shm_slots_in_use <= c.workers.shm_slots for c in stats.coordinators)
    assert sorted(got) == list(range(3000)), "exactly once despite the kills"
    assert restarts >= 1 and restarts <= len(killed)
    assert slots_free
    assert not [p for p in killed if psutil.pid_exists(p) and
                psutil.Process(p).status() != psutil.STATUS_ZOMBIE]


def test_a_restarted_worker_takes_the_dead_ones_place_and_is_counted():
    cfg = make_cfg({"_target_": f"{F}:worker_pid"}, batch_size=4, workers=proc(1),
                   failures={"on_worker_death": "restart"})
    with Runner(cfg) as runner:
        stream = runner.device(0)
        first = int(next(stream)["pid"][0])
        os.kill(first, signal.SIGKILL)
        deadline = time.monotonic() + 10
        while int(next(stream)["pid"][0]) == first:
            assert time.monotonic() < deadline, "no new worker within 10 s"
        pool = runner.stats().coordinators[0].workers
    assert pool.restarts == 1 and "SIGKILL" in pool.last_error and str(first) in pool.last_error


def test_deaths_past_max_restarts_are_raised():
    cfg = make_cfg({"_target_": f"{F}:worker_pid"}, batch_size=4, workers=proc(1),
                   failures={"on_worker_death": "restart", "max_restarts": 1})
    with pytest.raises(WorkerFailure, match=r"SIGKILL.*max_restarts=1 reached"):
        with Runner(cfg) as runner:
            stream = runner.device(0)
            for _ in range(3):
                pid = int(next(stream)["pid"][0])
                os.kill(pid, signal.SIGKILL)
                deadline = time.monotonic() + 10
                while int(next(stream)["pid"][0]) == pid and time.monotonic() < deadline:
                    pass


# fetch_timeout and the stall watchdog ---------------------------------------------------------

@pytest.mark.parametrize("workers", [{"count": 1}, proc(1)], ids=["threads", "processes"])
def test_fetch_timeout_raises_naming_the_worker_and_where_it_is_stuck(workers):
    cfg = make_cfg({"_target_": f"{F}.Hangs", "after": 2, "seconds": 5}, batch_size=8,
                   workers=workers, failures={"fetch_timeout": 0.4})
    with pytest.raises(FetchTimeout) as info:
        with Runner(cfg) as runner:
            began = time.monotonic()  # start-up (a first torch import) and close() not counted
            try:
                drain(runner.device(0))
            finally:
                raised = time.monotonic()
    message = str(info.value)
    assert raised - began < 5.0, "it fires before the stuck 5 s fetch returns"
    assert "worker 0" in message and "failures.fetch_timeout=0.4" in message
    assert "faulty.py" in message and "fetch" in message, "the stack shows where it is stuck"


@pytest.mark.parametrize("source,workers,doing,marker", [
    ("stuck.HangsInSetup", {"count": 1}, "setup()", "in setup"),
    ("stuck.HangsInSetup", proc(1), "setup()", "in setup"),
    ("stuck.HangsWhileBuilt", proc(1), "the source's constructor", "in __init__"),
], ids=["setup-threads", "setup-processes", "constructor-processes"])
def test_fetch_timeout_covers_a_worker_stuck_building_its_source_or_in_setup(
        source, workers, doing, marker):
    """A worker's source is built and set up before its first fetch: stuck there, the run stops
    with the same FetchTimeout as a stuck fetch (a thread is left behind until it returns)."""
    seconds = 2.5 if workers.get("kind") != "process" else 10  # a process is killed
    cfg = make_cfg({"_target_": source, "seconds": seconds}, batch_size=8, workers=workers,
                   memory={"probe": False}, failures={"fetch_timeout": 0.4})
    with pytest.raises(FetchTimeout) as info:
        with Runner(cfg) as runner:
            next(runner.device(0))
    message = str(info.value)
    assert "worker 0 " in message and f"{doing} has not returned after" in message
    assert "failures.fetch_timeout=0.4" in message
    assert "stuck.py" in message and marker in message, "the stack shows where it is stuck"


def test_a_stalled_worker_is_reported_with_its_stack(caplog):
    cfg = make_cfg({"_target_": f"{F}.Hangs", "after": 1, "seconds": 1.5}, batch_size=8,
                   workers={"count": 1}, failures={"stall_timeout": 0.3})
    with caplog.at_level(logging.WARNING, logger="inputkit.pipeline.watchdog"), Runner(cfg) as runner:
        stream = runner.device(0)
        next(stream)
        seen: list[tuple[str, ...]] = []
        wait_until(lambda: seen.append(runner.stats().coordinators[0].workers.stalls) or seen[-1],
                   "the stall to show (the fetch hangs 1.5 s, stall_timeout is 0.3 s)")
        stalls = seen[-1]
        next(stream)  # it recovers: a stall is reported, not fatal
    assert stalls and "inside one fetch" in stalls[0]
    assert caplog.text.count("stall (failures.stall_timeout=0.3s)") == 1
    assert "time.sleep" in caplog.text or "Hangs" in caplog.text or "faulty.py" in caplog.text


def test_on_stall_raise_stops_the_run_with_a_stall_error_for_empty_chunks_forever():
    cfg = make_cfg({"_target_": f"{F}:fetch_nothing_forever"}, batch_size=8, workers={"count": 1},
                   memory={"probe": False},
                   failures={"stall_timeout": 0.3, "on_stall": "raise"})
    with pytest.raises(StallError, match=r"no samples for [\d.]+s \(only empty chunks"):
        with Runner(cfg) as runner:
            drain(runner.device(0))


@pytest.mark.parametrize("key,value,message", [
    ("on_error", "ignore", "failures.on_error: unknown policy 'ignore'; use one of: raise, skip, retry"),
    ("on_worker_death", "respawn", "failures.on_worker_death: unknown policy 'respawn'"),
    ("fetch_timeout", 0, "failures.fetch_timeout: must be a positive number of seconds"),
    ("retries", -1, "failures.retries: must be >= 0"),
])
def test_bad_failure_policies_name_the_key(key, value, message):
    cfg = make_cfg({"_target_": f"{F}.Indexed"}, failures={key: value})
    with pytest.raises(ConfigError, match=message.replace("(", r"\(")):
        Runner(cfg)

"""Process workers: real processes, real shared memory, real signals."""

from __future__ import annotations

import gc
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest
import torch
from conftest import (
    alive,
    assert_nothing_leaked,
    children,
    make_cfg,
    pipeline_threads,
    segments,
    wait_until,
)

from inputkit import ConfigError, Runner, SourceError, WorkerFailure
from inputkit.workers.shm import ArenaHandle, SlotArena, plan_pieces

SYN = "inputkit.sources.synthetic.SyntheticSource"
TESTS = Path(__file__).resolve().parent


def worker_pids(runner) -> list[int]:
    return [pid for c in runner.coordinators() for pid in c.workers.stats().pids]


def all_blocked(runner) -> bool:
    """Whether every worker of every device waits for a free slot (nobody consumes)."""
    return all(c.workers.stats().blocked == c.workers.stats().workers
               for c in runner.coordinators())


@pytest.fixture(autouse=True)
def no_leaks(caplog):
    """Every test leaves no shared-memory segment and no worker process behind."""
    before_segments, before_children = segments(), children()
    yield
    assert_nothing_leaked(before_segments, before_children, caplog)


def proc_cfg(source, **top):
    workers = {"kind": "process", "count": 2, "start_method": "forkserver"}
    workers.update(top.pop("workers", {}))
    return make_cfg(source, workers=workers, **top)


def ids_of(batches):
    return np.concatenate([b["id"].numpy() for b in batches]).tolist()


def test_exactly_once_across_process_workers_and_two_devices_with_random_chunks():
    cfg = proc_cfg({"_target_": SYN, "fields": {"x": {"shape": [3], "dtype": "float32"}},
                    "length": 4000, "id_field": "id", "chunk_size": 0, "chunk_size_max": 150},
                   batch_size=64, devices=["cpu", "cpu"])
    got = {0: [], 1: []}
    with Runner(cfg) as runner:
        pids = worker_pids(runner)
        assert len(pids) == 4 and os.getpid() not in pids
        for step in runner.steps():
            for device, batch in enumerate(step):
                if batch is not None:
                    got[device].append(batch)
        stats = runner.stats()
    assert sorted(ids_of(got[0] + got[1])) == list(range(4000))
    for batches in got.values():
        assert all(len(b["id"]) == 64 for b in batches[:-1])
    assert stats.samples == 4000
    assert not alive(pids), "worker processes are gone after close"


def test_an_endless_synthetic_source_writes_every_chunk_straight_into_its_slot():
    cfg = proc_cfg({"_target_": SYN, "fields": {"x": {"shape": [3], "dtype": "float32"}},
                    "chunk_size": 0, "chunk_size_max": 150}, batch_size=64)
    with Runner(cfg) as runner:
        for step, _batch in enumerate(runner.device(0)):
            if step == 50:
                break
        pool = runner.stats().coordinators[0].workers
    assert pool.chunks > 0
    assert pool.shm_chunks_in_place == pool.chunks, "fetch_into: no copy into the slot"


def test_a_users_sharded_source_gets_setup_in_each_process():
    cfg = proc_cfg({"_target_": "fakes:Sharded", "length": 3001, "max_chunk": 90},
                   batch_size=50, workers={"count": 3})
    with Runner(cfg) as runner:
        batches = list(runner.device(0))
    assert sorted(ids_of(batches)) == list(range(3001))
    for b in batches:
        assert torch.equal(b["x"][:, 2].long(), b["id"])


def test_exact_chunks_reach_the_consumer_as_views_of_shared_memory_without_a_copy():
    cfg = proc_cfg({"_target_": SYN, "fields": {"x": {"shape": [8]}}, "length": 3200,
                    "id_field": "id", "chunk_size": 32}, batch_size=32)
    with Runner(cfg) as runner:
        ids = []
        for batch in runner.device(0):  # each batch is dropped before the next
            ids.extend(batch["id"].tolist())
        stats = runner.stats().coordinators[0]
    assert sorted(ids) == list(range(3200))
    assert stats.view_batches > stats.copied_batches, "lent as views while slots are plentiful"


def test_a_consumer_that_keeps_every_batch_never_starves_the_workers_of_slots():
    cfg = proc_cfg({"_target_": SYN, "fields": {"x": {"shape": [8]}}, "chunk_size": 16},
                   batch_size=16, queue={"capacity": 2, "batch_capacity": 1})
    kept = []
    with Runner(cfg) as runner:
        for step, batch in enumerate(runner.device(0)):
            kept.append(batch)  # views lent to it never come back
            if step == 60:
                break
        pool = runner.coordinators()[0].workers.stats()
        stats = runner.stats().coordinators[0]
    assert pool.shm_slots == 2 + 2 + 2 + 1 + 2
    assert stats.view_batches <= pool.shm_slots - (2 + 2), "lending stops while slots are scarce"
    assert stats.copied_batches >= 61 - stats.view_batches
    assert len(kept) == 61


@pytest.mark.parametrize("method", ["fork", "spawn", "forkserver"])
def test_every_start_method_works(method):
    cfg = proc_cfg({"_target_": SYN, "fields": {}, "length": 500, "id_field": "id",
                    "chunk_size": 40}, batch_size=100, workers={"start_method": method})
    with Runner(cfg) as runner:
        assert sorted(ids_of(list(runner.device(0)))) == list(range(500))


LOKY_JOB = """
import multiprocessing, sys
from joblib import Parallel, delayed

def job():
    from inputkit import Runner
    cfg = {"source": {"_target_": "inputkit.sources.synthetic.SyntheticSource", "fields": {},
                      "length": 300, "id_field": "id", "chunk_size": 40},
           "devices": "cpu", "batch_size": 50, "workers": {"kind": "process", "count": 2}}
    with Runner(cfg) as runner:
        ids = sorted(i for b in runner.device(0) for i in b["id"].tolist())
    return multiprocessing.get_start_method(allow_none=True), ids

[(method, ids)] = Parallel(n_jobs=2, backend="loky")([delayed(job)()])
print(method, ids == list(range(300)))
"""


@pytest.mark.timeout(240)
def test_process_workers_start_inside_a_joblib_loky_job(tmp_path):
    """A Hydra sweep on joblib runs each job in a loky worker, whose default start method is
    'loky': a forkserver child used to inherit that name and die ("cannot find context for
    'loky'"). The workers start, deliver every sample, and leave the job's method as it was."""
    script = tmp_path / "loky_job.py"
    script.write_text(LOKY_JOB)
    out = subprocess.run([sys.executable, str(script)], capture_output=True, text=True,
                         timeout=220, cwd=tmp_path)
    assert out.returncode == 0, out.stderr[-3000:]
    assert out.stdout.split() == ["loky", "True"], out.stdout + out.stderr[-2000:]


def test_a_chunk_larger_than_a_slot_is_split_and_arrives_intact():
    cfg = proc_cfg({"_target_": SYN, "fields": {"x": {"shape": [100], "dtype": "float64"}},
                    "length": 1000, "id_field": "id", "chunk_size": 300},
                   batch_size=128, workers={"slot_bytes": "8KiB", "count": 1})
    with Runner(cfg) as runner:
        batches = list(runner.device(0))
        pool = runner.coordinators()[0].workers.stats()
    assert sorted(ids_of(batches)) == list(range(1000))
    assert pool.chunks > 1000 // 300 + 1, "chunks of 300 x 808 B were split into 8 KiB pieces"


def test_one_sample_larger_than_a_slot_names_workers_slot_bytes():
    cfg = proc_cfg({"_target_": SYN, "fields": {"x": {"shape": [4096]}}},
                   workers={"slot_bytes": "4KiB", "count": 1})
    with pytest.raises(ConfigError, match="workers.slot_bytes: one sample needs 16,384 bytes"):
        with Runner(cfg) as runner:
            next(runner.device(0))


def test_a_fetch_exception_in_a_process_keeps_its_type_message_and_traceback():
    cfg = proc_cfg({"_target_": "fakes:Raising", "after": 3}, batch_size=4)
    with pytest.raises(KeyError, match="is corrupt") as info:
        with Runner(cfg) as runner:
            pids = worker_pids(runner)
            for _ in runner.device(0):
                pass
    notes = "\n".join(info.value.__notes__)
    assert "pid" in notes and "fakes.py" in notes and "in fetch" in notes
    assert not alive(pids)


def test_a_bad_chunk_in_a_process_is_a_source_error_naming_the_field():
    cfg = proc_cfg({"_target_": "fakes:Returns", "kind": "object_dtype"}, batch_size=4,
                   workers={"count": 1})
    with pytest.raises(SourceError, match="holds Python objects") as info:
        with Runner(cfg) as runner:
            list(runner.device(0))
    assert info.value.field == "y" and info.value.source == "fakes:Returns"


def test_a_killed_worker_is_detected_within_a_second_and_named():
    cfg = proc_cfg({"_target_": "fakes:Slow", "seconds": 0.05}, batch_size=4,
                   memory={"probe": False})
    with Runner(cfg) as runner:
        stream = runner.device(0)
        next(stream)
        pids = worker_pids(runner)
        os.kill(pids[0], signal.SIGKILL)
        killed_at = time.monotonic()
        with pytest.raises(WorkerFailure, match=rf"pid {pids[0]}.*killed by signal SIGKILL"):
            for _ in stream:
                pass
        assert time.monotonic() - killed_at < 1.0
    assert not alive(pids)


def test_os_exit_in_fetch_reports_the_exit_code():
    cfg = proc_cfg({"_target_": "fakes:ExitsOnCall", "on": 3, "code": 7}, batch_size=4)
    with pytest.raises(WorkerFailure, match="worker 0 .* exited with code 7"):
        with Runner(cfg) as runner:
            for _ in runner.device(0):
                pass


def test_early_break_stops_processes_within_2s_and_frees_everything():
    cfg = proc_cfg({"_target_": SYN, "fields": {"x": {"shape": [1024]}}, "chunk_size": 32},
                   batch_size=64, devices=["cpu", "cpu"], queue={"capacity": 2})
    with Runner(cfg) as runner:
        for step, _ in enumerate(runner.device(0)):
            if step == 3:
                break
        wait_until(lambda: all_blocked(runner), "every worker to wait for a free slot")
        pids = worker_pids(runner)
        assert len(alive(pids)) == 4
    # Leaving the block closes with close()'s 2 s timeout, past which it terminates the
    # workers and raises ShutdownError naming what did not stop; none is left.
    assert not alive(pids)
    assert pipeline_threads() == []


def test_a_fetch_that_never_returns_is_terminated_on_close():
    cfg = proc_cfg({"_target_": "fakes:Slow", "seconds": 30}, batch_size=4,
                   memory={"probe": False})
    runner = Runner(cfg).start()
    wait_until(lambda: runner.coordinators()[0].workers.stats().fetching == 2,
               "both workers to be inside the endless fetch")
    pids = worker_pids(runner)
    runner.close(timeout=0.5)
    assert not alive(pids)


def test_stats_report_shared_memory_bounded_by_the_slots():
    cfg = proc_cfg({"_target_": SYN, "fields": {"x": {"shape": [256]}}, "chunk_size": 64},
                   batch_size=64, queue={"capacity": 4})
    with Runner(cfg) as runner:
        stream = runner.device(0)
        next(stream)
        wait_until(lambda: all_blocked(runner), "every slot to fill up (nobody consumes)")
        pool = runner.coordinators()[0].workers.stats()
    assert pool.kind == "process" and len(pool.pids) == 2
    assert pool.shm_slots == 4 + 2 + 2 + 4 + 2 and pool.shm_slot_bytes == 16 * 2**20
    assert 0 < pool.shm_slots_in_use <= pool.shm_slots
    assert pool.shm_bytes_in_use == pool.shm_slots_in_use * 64 * 256 * 4


def test_no_resource_tracker_warning_or_leak_at_interpreter_exit(tmp_path):
    code = (
        "import inputkit\n"
        "cfg = {'source': {'_target_': 'inputkit.sources.synthetic.SyntheticSource',"
        " 'fields': {'x': {'shape': [16]}}}, 'devices': 'cpu', 'batch_size': 32,"
        " 'workers': {'kind': 'process', 'count': 2}}\n"
        "with inputkit.Runner(cfg) as r:\n"
        "    kept = [b for _, b in zip(range(20), r.device(0))]\n"
        "print('ok', len(kept))\n"
    )
    out = subprocess.run([sys.executable, "-W", "error::UserWarning", "-c", code], cwd=tmp_path,
                         capture_output=True, text=True, timeout=60)
    assert out.returncode == 0, out.stderr
    assert out.stdout.strip() == "ok 20"
    assert "resource_tracker" not in out.stderr and "leaked" not in out.stderr, out.stderr
    assert out.stderr == ""


def test_the_segment_is_released_once_closed_and_the_last_view_is_freed():
    before = segments()
    cfg = proc_cfg({"_target_": SYN, "fields": {"x": {"shape": [8]}}, "chunk_size": 16},
                   batch_size=16)
    with Runner(cfg) as runner:
        kept = next(runner.device(0))  # a view of a slot
        assert segments() - before
    assert segments() - before, "a view held after close() keeps its memory valid"
    assert kept["x"].shape == (16, 8) and float(kept["x"].sum()) >= 0
    del kept
    gc.collect()
    assert segments() - before == set(), "no mapping and no descriptor is left"


def test_slot_arena_round_trip_and_piece_planning():
    arena = SlotArena.create(slots=2, slot_bytes=4096)
    try:
        assert arena.name not in os.listdir("/dev/shm"), "nameless from the start"
        worker_side = SlotArena.attach(ArenaHandle(os.dup(arena.handle().fd), arena.name),
                                       2, 4096)
        fields = {"a": np.arange(10, dtype=np.int16), "b": np.ones((10, 3), np.float32)[:, ::2]}
        layout = worker_side.write(1, fields, plan_pieces(fields, 10, 4096)[0])
        holder, views = arena.view(1, layout)
        assert np.array_equal(views["a"], fields["a"]) and np.array_equal(views["b"], fields["b"])
        assert all(offset % 64 == 0 for *_, offset in layout)
        assert np.shares_memory(views["a"], holder)
        worker_side.close()
        del holder, views
    finally:
        arena.close()
    big = {"x": np.zeros((100, 10), np.float64)}  # 80 B per sample
    pieces = plan_pieces(big, 100, 1024)
    assert [(p.start, p.stop) for p in pieces][:2] == [(0, 12), (12, 24)] and pieces[-1].stop == 100


SCRIPT = """
import sys
import numpy as np
import inputkit
print("main program ran", flush=True)

def fetch(worker_id, batch_size_hint):
    return {"x": np.full((batch_size_hint, 2), worker_id, np.float32)}

if __name__ == "__main__":
    target = sys.argv[1]
    cfg = {"source": {"_target_": target, "fields": {"x": {"shape": [2]}}} if "Synthetic" in target
           else {"_target_": target},
           "devices": "cpu", "batch_size": 8,
           "workers": {"kind": "process", "count": 2, "start_method": sys.argv[2]}}
    with inputkit.Runner(cfg) as runner:
        batch = next(runner.device(0))
    print("batch", tuple(batch["x"].shape), flush=True)
"""


@pytest.mark.parametrize("method", ["forkserver", "spawn"])
def test_workers_do_not_rerun_the_main_program_unless_the_source_lives_there(tmp_path, method):
    script = tmp_path / "train.py"
    script.write_text(SCRIPT)
    out = subprocess.run([sys.executable, str(script), SYN, method], capture_output=True,
                         text=True, timeout=60, cwd=tmp_path)
    assert out.returncode == 0, out.stderr
    assert out.stdout.count("main program ran") == 1, out.stdout
    out = subprocess.run([sys.executable, str(script), "__main__:fetch", method],
                         capture_output=True, text=True, timeout=60, cwd=tmp_path)
    assert out.returncode == 0, out.stderr
    assert out.stdout.count("main program ran") == 3, "each of 2 workers imports the script"
    assert "batch (8, 2)" in out.stdout


def test_a_worker_dying_while_nobody_consumes_is_still_detected():
    cfg = proc_cfg({"_target_": SYN, "fields": {"x": {"shape": [64]}}, "chunk_size": 16},
                   batch_size=16, queue={"capacity": 2, "batch_capacity": 1})
    with Runner(cfg) as runner:
        stream = runner.device(0)
        next(stream)
        wait_until(lambda: all_blocked(runner), "every queue to fill up")
        pid = worker_pids(runner)[0]
        os.kill(pid, signal.SIGKILL)
        wait_until(runner._abort.event.is_set, "the runner to notice the death")
        with pytest.raises(WorkerFailure, match=rf"pid {pid}.*SIGKILL"):
            next(stream)  # raised at once, not after the batches still buffered


KILL_PARENT = """
import os, signal, sys, time
import inputkit
cfg = {"source": {"_target_": "inputkit.sources.synthetic.SyntheticSource",
                  "fields": {"x": {"shape": [256]}}, "chunk_size": 64},
       "devices": "cpu", "batch_size": 64, "queue": {"capacity": 2, "batch_capacity": 1},
       "workers": {"kind": "process", "count": 2}}
if __name__ == "__main__":
    runner = inputkit.Runner(cfg).start()
    next(runner.device(0))
    deadline = time.monotonic() + 30
    while runner.coordinators()[0].workers.stats().blocked < 2:  # they wait for free slots
        assert time.monotonic() < deadline, "the workers never filled their slots"
        time.sleep(0.02)
    pids = runner.coordinators()[0].workers.stats().pids
    print(" ".join(map(str, pids)), flush=True)
    os.kill(os.getpid(), signal.SIGKILL)
"""


def test_workers_exit_and_the_segment_is_freed_when_the_parent_is_killed(tmp_path):
    script = tmp_path / "victim.py"
    script.write_text(KILL_PARENT)
    before = {n for n in os.listdir("/dev/shm") if n.startswith("inputkit_")}
    out = subprocess.run([sys.executable, str(script)], capture_output=True, text=True,
                         timeout=60, cwd=tmp_path)
    assert out.returncode == -signal.SIGKILL
    pids = [int(p) for p in out.stdout.split()]
    assert len(pids) == 2
    deadline = time.monotonic() + 30
    while (alive(pids) or ({n for n in os.listdir("/dev/shm") if n.startswith("inputkit_")}
                           - before)) and time.monotonic() < deadline:
        time.sleep(0.1)
    assert not alive(pids), "workers notice their parent is gone"
    left = {n for n in os.listdir("/dev/shm") if n.startswith("inputkit_")} - before
    assert not left, f"the resource tracker unlinked the segment: {left}"


def test_a_source_in_the_main_script_works_with_fork(tmp_path):
    script = tmp_path / "train.py"
    script.write_text(SCRIPT)
    out = subprocess.run([sys.executable, str(script), "__main__:fetch", "fork"],
                         capture_output=True, text=True, timeout=60, cwd=tmp_path)
    assert out.returncode == 0, out.stderr
    assert out.stdout.count("main program ran") == 1 and "batch (8, 2)" in out.stdout


TORCH_SCRIPT = """
import sys
import numpy as np
import inputkit

class ConvSource:
    def __init__(self, conv=False):
        if conv:  # a dataset that runs a small convolution while it is built
            import torch
            x, w = torch.randn(8, 16, 32, 32), torch.randn(16, 16, 3, 3)
            self.total = float(torch.nn.functional.conv2d(x, w).sum())

    def fetch(self, worker_id, batch_size_hint):
        torch = sys.modules.get("torch")
        threads = torch.get_num_threads() if torch is not None else 0
        return {"threads": np.full(batch_size_hint, threads, np.int64),
                "torch": np.full(batch_size_hint, torch is not None, np.int8)}

if __name__ == "__main__":
    import torch  # only the main program imports torch (workers re-import this module)
    torch.set_num_threads(2)
    torch.nn.functional.conv2d(torch.randn(8, 16, 64, 64), torch.randn(16, 16, 3, 3))  # warm
    method = sys.argv[1]
    cfg = {"source": {"_target_": "__main__.ConvSource", "conv": method == "fork"},
           "devices": "cpu", "batch_size": 8, "memory": {"probe": False},
           "workers": {"kind": "process", "count": 2, "start_method": method}}
    with inputkit.Runner(cfg) as runner:
        batch = next(runner.device(0))
    print("threads", int(batch["threads"].max()), "torch", int(batch["torch"].max()), flush=True)
"""


def run_in_own_group(args: list[str], cwd: Path, timeout: float) -> tuple[int, str, str]:
    """Run ``args``; on a timeout kill its whole process group (deadlocked workers too)."""
    with subprocess.Popen(args, cwd=cwd, stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                          text=True, start_new_session=True) as child:
        try:
            out, err = child.communicate(timeout=timeout)
        except subprocess.TimeoutExpired:
            os.killpg(child.pid, signal.SIGKILL)
            child.communicate()
            raise
    return child.returncode, out, err


def test_a_forked_worker_can_use_torch_after_the_parent_warmed_its_thread_pool(tmp_path):
    """A fork child inherits torch's thread pool without its threads; like DataLoader, each
    worker that has torch imported runs it with one thread, so the convolution returns."""
    script = tmp_path / "train.py"
    script.write_text(TORCH_SCRIPT)
    code, out, err = run_in_own_group([sys.executable, str(script), "fork"], tmp_path, 40)
    assert code == 0, err
    assert "threads 1 torch 1" in out


def test_workers_whose_source_does_not_use_torch_do_not_import_it(tmp_path):
    script = tmp_path / "train.py"
    script.write_text(TORCH_SCRIPT)
    code, out, err = run_in_own_group([sys.executable, str(script), "forkserver"], tmp_path, 40)
    assert code == 0, err
    assert "threads 0 torch 0" in out

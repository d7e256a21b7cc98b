"""workers.kind=inline: the chain in the consumer's thread keeps every guarantee of thread workers.

Exact batches, exactly-once epochs over devices, the same batches as ordered thread
workers, resume across worker kinds, the failure policies, stalls, Ctrl-C, the plan,
the statistics and the diagnosis, through the real Runner and the real CLI.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest
from conftest import make_cfg, pipeline_threads, wait_for_no_pipeline_threads

from inputkit import Runner, StallError, load_spec
from inputkit.observe.diagnosis import diagnose
from inputkit.planning.memory import plan_memory

SYN = "inputkit.sources.synthetic.SyntheticSource"
INDEXED = {"_target_": SYN, "fields": {"x": {"shape": [2]}}, "length": 1000, "id_field": "id"}
INLINE = {"kind": "inline"}


def ids_of(stream) -> list[int]:
    return [i for batch in stream for i in batch["id"].tolist()]


def test_random_chunks_become_exact_batches_with_leftovers_carried():
    cfg = make_cfg({"_target_": "fakes.RandomChunks", "length": 1000, "max_chunk": 70},
                   batch_size=64, workers=INLINE)
    with Runner(cfg) as runner:
        batches = list(runner.device(0))
        stats = runner.stats().coordinators[0]
        threads = [t.name for t in pipeline_threads()]
    assert not [name for name in threads if "fetch" in name or "batcher" in name], threads
    assert [len(b["id"]) for b in batches] == [64] * 15 + [1000 - 15 * 64]
    assert np.concatenate([b["id"].numpy() for b in batches]).tolist() == list(range(1000))
    assert stats.workers.kind == "inline" and stats.workers.workers == 1
    assert stats.queues == () and stats.batches == 16 and stats.finished
    assert wait_for_no_pipeline_threads() == []


def test_every_sample_once_per_epoch_over_two_devices_with_shuffle():
    cfg = make_cfg(INDEXED, batch_size=32, devices=["cpu", "cpu"], workers=INLINE,
                   epoch={"count": 2, "shuffle": True, "seed": 3, "chunk_size": 20})
    with Runner(cfg) as runner:
        passes = []
        for _ in range(2):
            got = [i for step in runner.steps() for b in step if b is not None
                   for i in b["id"].tolist()]
            passes.append(got)
    assert [sorted(p) for p in passes] == [list(range(1000))] * 2
    assert passes[0] != passes[1], "each epoch draws its own order"


def test_the_same_batches_as_ordered_thread_workers():
    def run(workers):
        cfg = make_cfg(INDEXED, batch_size=48, workers=workers,
                       epoch={"count": 2, "shuffle": True, "seed": 9, "chunk_size": 30,
                              "ordered": True})
        with Runner(cfg) as runner:
            stream = runner.device(0)
            return [ids_of(stream), ids_of(stream)]

    assert run(INLINE) == run({"kind": "thread", "count": 3})


def test_resume_from_inline_to_processes_and_back():
    def cfg(workers):
        return make_cfg(INDEXED, batch_size=25, workers=workers,
                        epoch={"count": 1, "shuffle": True, "seed": 1, "chunk_size": 25})

    with Runner(cfg(INLINE)) as runner:
        stream = runner.device(0)
        first = [i for _, b in zip(range(7), stream, strict=False) for i in b["id"].tolist()]
        state = runner.state_dict()
    resumed = Runner(cfg({"kind": "process", "count": 2}))
    resumed.load_state_dict(state)
    with resumed:
        stream = resumed.device(0)
        second = [i for _, b in zip(range(11), stream, strict=False) for i in b["id"].tolist()]
        state = resumed.state_dict()
    last = Runner(cfg(INLINE))
    last.load_state_dict(state)
    with last:
        rest = ids_of(last.device(0))
    assert len(first) == 175 and len(second) == 275
    assert sorted(first + second + rest) == list(range(1000))


def test_processors_run_in_the_consumers_thread():
    cfg = make_cfg({"_target_": SYN, "fields": {"x": {"shape": [4], "dtype": "uint8"}},
                    "chunk_size": 16}, batch_size=16, workers=INLINE,
                   processors=[{"_target_": "inputkit.processors.Cast", "field": "x",
                                "dtype": "float32"}])
    with Runner(cfg) as runner:
        batch = next(runner.device(0))
        stats = runner.stats().coordinators[0].workers
    assert str(batch["x"].dtype) == "torch.float32"
    assert [p.name for p in stats.processors] == ["Cast"]


def test_a_failing_fetch_reaches_the_consumer_with_its_type_and_names_the_worker():
    cfg = make_cfg({"_target_": "fakes.Raising", "after": 3}, batch_size=4, workers=INLINE)
    with Runner(cfg) as runner:
        stream = runner.device(0)
        next(stream), next(stream)
        with pytest.raises(KeyError, match="record 3 is corrupt") as raised:
            next(stream)
        with pytest.raises(KeyError):  # the runner stopped: asked again, the same error
            next(stream)
    notes = "\n".join(getattr(raised.value, "__notes__", []))
    assert "worker 0 of input 'main'" in notes and "fakes.Raising" in notes


def test_retry_and_skip_policies_apply_inline():
    retry = make_cfg({"_target_": "faulty.FlakyFetch", "every": 3}, batch_size=8, workers=INLINE,
                     failures={"on_error": "retry", "retries": 2, "retry_backoff": 0.0})
    with Runner(retry) as runner:
        stream = runner.device(0)
        batches = [next(stream) for _ in range(10)]
        stats = runner.stats().coordinators[0].workers
    assert len(batches) == 10 and stats.retries >= 4
    skip = make_cfg({"_target_": "faulty.Indexed", "length": 300, "bad": [7, 150]},
                    batch_size=20, workers=INLINE, failures={"on_error": "skip"})
    with Runner(skip) as runner:
        got = ids_of(runner.device(0))
        stats = runner.stats().coordinators[0].workers
    assert sorted(got) == [i for i in range(300) if i not in (7, 150)]
    assert stats.skipped_samples == 2 and sorted(stats.skipped_indices) == [7, 150]


def test_a_stalled_fetch_is_reported_with_the_consumers_stack_and_raised_when_it_returns():
    cfg = make_cfg({"_target_": "faulty.Hangs", "after": 2, "seconds": 2.5}, batch_size=8,
                   workers=INLINE, failures={"stall_timeout": 0.5, "on_stall": "raise"})
    with Runner(cfg) as runner:
        stream = runner.device(0)
        next(stream), next(stream)
        with pytest.raises(StallError, match="inside one fetch") as raised:
            next(stream)
    assert "stuck_in_a_slow_fetch" in str(raised.value)  # the line the consumer was on


LOOP = """
import sys
sys.path.insert(0, TESTS)
from inputkit import Runner
cfg = {"source": {"_target_": "fakes.HangsAfter", "after": 3, "marker": MARKER},
       "devices": "cpu", "batch_size": 4, "workers": {"kind": "inline"}}
with Runner(cfg) as runner:
    try:
        for batch in runner.device(0):
            pass
    except KeyboardInterrupt:
        print("interrupted", flush=True)
print("closed", flush=True)
"""


def test_ctrl_c_inside_fetch_interrupts_the_loop_and_leaves_nothing_behind(tmp_path):
    script = tmp_path / "loop.py"
    marker = tmp_path / "stuck"
    script.write_text(LOOP.replace("TESTS", repr(str(Path(__file__).parent)))
                      .replace("MARKER", repr(str(marker))))
    proc = subprocess.Popen([sys.executable, str(script)], stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE, text=True)
    deadline = time.monotonic() + 60
    while not marker.exists() and time.monotonic() < deadline and proc.poll() is None:
        time.sleep(0.05)
    assert marker.exists(), proc.communicate(timeout=10)
    proc.send_signal(__import__("signal").SIGINT)
    out, err = proc.communicate(timeout=30)
    assert proc.returncode == 0, err
    assert out.split() == ["interrupted", "closed"], (out, err)
    assert "Exception ignored" not in err and "Traceback" not in err


def test_the_plan_has_no_queues_and_counts_one_chunk():
    cfg = make_cfg({"_target_": SYN, "fields": {"x": {"shape": [1000], "dtype": "float32"}},
                    "chunk_size": 64}, batch_size=64, workers=INLINE,
                   queue={"capacity": 64, "batch_capacity": 32})
    plan = plan_memory(load_spec(cfg))
    stages = {t.stage: t for t in plan.terms}
    assert "chunk queue" not in stages and "batch queue" not in stages
    assert stages["chunk being re-chunked"].bytes == 64 * 4000
    threads = plan_memory(load_spec({**cfg, "workers": {"kind": "thread", "count": 1}}))
    assert plan.host_bytes < threads.host_bytes / 10, "capacities do not apply inline"


def test_workers_count_does_not_apply_inline():
    spec = load_spec(make_cfg(INDEXED, workers={"kind": "inline", "count": 8}))
    assert spec.inputs[0].worker_count == 1


def test_the_diagnosis_judges_inline_by_the_consumers_time_in_fetch():
    quick = make_cfg({"_target_": SYN, "fields": {"x": {"shape": [4]}}, "chunk_size": 32},
                     batch_size=32, workers=INLINE)
    slow = make_cfg({"_target_": SYN, "fields": {"x": {"shape": [4]}}, "chunk_size": 32,
                     "latency_ms": 5.0}, batch_size=32, workers=INLINE)
    lines = []
    for cfg in (quick, slow):
        with Runner(cfg) as runner:
            stream = runner.device(0)
            for _ in range(100):
                next(stream)
            [line] = diagnose(runner.stats())
        lines.append(line)
    assert ": inline. The consumer spent" in lines[0] and "nothing in the input" in lines[0]
    assert ": fetch-bound. The consumer spent" in lines[1] and "workers.kind=thread" in lines[1]


def test_bench_runs_inline_from_the_cli(tmp_path):
    env = {**os.environ, "CI": "true", "COLUMNS": "200"}
    out = subprocess.run([sys.executable, "-m", "inputkit", "bench", "experiment=tiny",
                          "workers=inline", "bench.seconds=1", f"hydra.run.dir={tmp_path}"],
                         capture_output=True, text=True, env=env, timeout=120, stdin=subprocess.DEVNULL)
    assert out.returncode == 0, out.stderr
    summary = json.loads((tmp_path / "summary.json").read_text())
    [coordinator] = summary["stats"]["coordinators"]
    assert coordinator["workers"]["kind"] == "inline" and coordinator["batches"] > 0
    assert "inline." in out.stdout or "hand-over" not in out.stdout


"""metrics.tensorboard and metrics.wandb: the records of metrics.jsonl where people look.

Read back with each tool's own reader: TensorBoard's EventAccumulator; for W&B (offline),
the run's ``.wandb`` file, a LevelDB-style log of ``wandb_internal_pb2.Record`` messages
(wandb 0.31 ships no Python reader of it, so the test reads the framing itself).
"""

from __future__ import annotations

import json
import math
import os
import struct
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest
from conftest import make_cfg, wait_for_no_pipeline_threads, wait_until

from inputkit import Runner
from inputkit.errors import ConfigError
from inputkit.observe.sinks import check, flatten

pytest.importorskip("tensorboard")
pytest.importorskip("wandb")

SYN = "inputkit.sources.synthetic.SyntheticSource"
SRC = {"_target_": SYN, "fields": {"x": {"shape": [64]}}, "chunk_size": 64}
TESTS = Path(__file__).resolve().parent


def events(log_dir: Path) -> Any:
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    acc = EventAccumulator(str(log_dir), size_guidance={"scalars": 0, "tensors": 0})
    acc.Reload()
    return acc


def wandb_records(path: Path) -> list[Any]:
    """Every Record in a ``.wandb`` file: a 7-byte header (``:W&B``, magic, version), then
    32 KiB blocks of chunks (crc32 4 bytes, length 2, type 1: full, first, middle, last)."""
    from wandb.proto import wandb_internal_pb2 as pb

    data = path.read_bytes()
    assert data[:4] == b":W&B", data[:7]
    pos, block, parts, found = 7, 32768, b"", []
    while pos + 7 <= len(data):
        left = block - pos % block
        if left < 7:  # a block's tail too short for a header is padding
            pos += left
            continue
        _crc, length, kind = struct.unpack("<IHB", data[pos:pos + 7])
        chunk, pos = data[pos + 7:pos + 7 + length], pos + 7 + length
        if kind in (1, 4):
            record = pb.Record()
            record.ParseFromString(parts + chunk if kind == 4 else chunk)
            found.append(record)
            parts = b""
        elif kind in (2, 3):
            parts += chunk
        else:
            assert kind == 0 and length == 0, f"chunk type {kind} at {pos}"
            pos += block - pos % block if pos % block else 0
    return found


@pytest.fixture(scope="module")
def bench_run(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Any]:
    """One real ``inputkit bench`` with both sinks: its metrics.jsonl, event dir, W&B file."""
    tmp = tmp_path_factory.mktemp("bench")
    env = {**os.environ, "PYTHONPATH": str(TESTS), "COLUMNS": "200", "WANDB_MODE": "offline",
           "WANDB_DIR": str(tmp / "wandb"), "WANDB_SILENT": "true"}
    (tmp / "wandb").mkdir()
    out = subprocess.run([sys.executable, "-m", "inputkit", "bench", "--json", "bench.seconds=2",
                          "devices=cpu", "workers=threads", f"metrics.tensorboard={tmp / 'tb'}",
                          "metrics.wandb=true"], cwd=tmp, env=env, capture_output=True,
                         text=True, timeout=200, stdin=subprocess.DEVNULL)
    assert out.returncode == 0, out.stderr[-3000:]
    [jsonl] = list((tmp / "outputs").rglob("metrics.jsonl"))
    records = [json.loads(line) for line in jsonl.read_text().splitlines()]
    assert len(records) >= 3, out.stdout
    [run_file] = list((tmp / "wandb").rglob("*.wandb"))
    return {"records": records, "tb": tmp / "tb", "wandb": run_file}


@pytest.mark.timeout(240)
def test_bench_writes_tensorboard_scalars_named_and_valued_as_metrics_jsonl(bench_run):
    """Every figure of every metrics.jsonl line is a scalar of the same name at that line's
    step, with its value (float32 in the event file); texts where they change."""
    records, acc = bench_run["records"], events(bench_run["tb"])
    names = set().union(*(flatten(r)[0] for r in records))
    assert set(acc.Tags()["scalars"]) == names
    assert {"inputkit/samples_per_s", "inputkit/batches_per_s", "inputkit/mb_per_s",
            "inputkit/buffered_bytes", "inputkit/planned_host_bytes",
            "inputkit/coordinators/main/0/consumer_wait",
            "inputkit/coordinators/main/0/queues/chunk_queue/full",
            "inputkit/coordinators/main/0/queues/batch_queue/empty",
            "inputkit/coordinators/main/0/workers/restarts",
            "inputkit/coordinators/main/0/workers/skipped_samples"} <= names
    for name in names:
        written = {e.step: e.value for e in acc.Scalars(name)}
        expected = {i: flatten(r)[0][name] for i, r in enumerate(records)
                    if name in flatten(r)[0]}
        assert written.keys() == expected.keys(), name
        for step, value in expected.items():
            assert math.isclose(written[step], value, rel_tol=1e-6, abs_tol=1e-30), (name, step)
    verdicts = [r["coordinators"][0]["verdict"] for r in records]
    tag = "inputkit/coordinators/main/0/verdict/text_summary"
    if any(verdicts):
        texts = {e.step: e.tensor_proto.string_val[0].decode() for e in acc.Tensors(tag)}
        for step, text in texts.items():
            assert verdicts[step] == text
        assert texts[min(texts)] == next(v for v in verdicts if v)


@pytest.mark.timeout(240)
def test_bench_logs_the_same_figures_to_an_offline_wandb_run(bench_run):
    """One W&B history step per metrics.jsonl line, the same names and values."""
    records = bench_run["records"]
    history = [{item.key or "/".join(item.nested_key): json.loads(item.value_json)
                for item in r.history.item}
               for r in wandb_records(bench_run["wandb"]) if r.WhichOneof("record_type") == "history"]
    assert len(history) == len(records)
    for step, (logged, record) in enumerate(zip(history, records, strict=True)):
        numbers, _ = flatten(record)
        ours = {k: v for k, v in logged.items() if k.startswith("inputkit/")
                and not isinstance(v, str)}
        assert ours.keys() == numbers.keys(), step
        for name, value in numbers.items():
            assert math.isclose(ours[name], value, rel_tol=1e-12), (name, step)
    verdicts = [(i, h["inputkit/coordinators/main/0/verdict"]) for i, h in enumerate(history)
                if "inputkit/coordinators/main/0/verdict" in h]
    for step, text in verdicts:
        assert records[step]["coordinators"][0]["verdict"] == text


def test_flatten_names_figures_by_their_path_in_the_record():
    record = {"t": 1.5, "samples_per_s": 10.0, "rss_bytes": None, "warnings": ["a", "b"],
              "coordinators": [{"input": "val", "device": "cuda:1", "device_index": 1,
                                "samples_per_s": 3.0, "verdict": "fetch-bound",
                                "workers": {"restarts": 2, "p50_ms": None},
                                "queues": [{"stage": "chunk queue", "full": 0.25},
                                           {"stage": "queue", "full": 0.5},
                                           {"stage": "queue", "full": 0.75}]}]}
    numbers, texts = flatten(record)
    base = "inputkit/coordinators/val/1/"
    assert numbers == {"inputkit/t": 1.5, "inputkit/samples_per_s": 10.0,
                       base + "samples_per_s": 3.0, base + "workers/restarts": 2.0,
                       base + "queues/chunk_queue/full": 0.25, base + "queues/queue/full": 0.5,
                       base + "queues/queue_2/full": 0.75}
    assert texts == {"inputkit/warnings": "a\nb", base + "verdict": "fetch-bound"}


def test_a_missing_package_names_the_key_and_the_extra(monkeypatch):
    monkeypatch.setitem(sys.modules, "tensorboard", None)  # as if not installed
    with pytest.raises(ConfigError, match=r"metrics\.tensorboard: is set, but the tensorboard "
                       r"package is not installed: pip install 'inputkit-ml\[tensorboard\]'"):
        check({"tensorboard": "runs/input", "wandb": False})
    monkeypatch.setitem(sys.modules, "wandb", None)
    with pytest.raises(ConfigError, match=r"metrics\.wandb: .*'inputkit-ml\[wandb\]'"):
        check({"tensorboard": None, "wandb": True})
    check({"tensorboard": None, "wandb": False})  # nothing asked, nothing imported


def test_bad_metrics_values_name_their_key():
    with pytest.raises(ConfigError, match=r"metrics\.interval: must be positive"):
        Runner(make_cfg(SRC, metrics={"interval": 0}))
    with pytest.raises(ConfigError, match=r"metrics\.wandb"):
        Runner(make_cfg(SRC, metrics={"wandb": "yes please"}))


def test_an_embedded_runner_without_a_wandb_run_refuses_to_start(tmp_path):
    import wandb

    assert wandb.run is None
    runner = Runner(make_cfg(SRC, workers={"kind": "thread", "count": 1},
                             metrics={"wandb": True}))
    with pytest.raises(ConfigError, match=r"metrics\.wandb: is true but no W&B run is active: "
                       r"call wandb\.init\(\) before Runner\.start\(\)"):
        runner.start()
    assert wait_for_no_pipeline_threads() == []


def test_an_embedded_runner_writes_tensorboard_from_its_own_thread(tmp_path):
    """Runner(cfg) honours metrics.tensorboard: records every metrics.interval from the
    inputkit-metrics thread, the last one at close, and the thread ends with the runner."""
    cfg = make_cfg(SRC, batch_size=64, workers={"kind": "thread", "count": 1},
                   metrics={"tensorboard": str(tmp_path / "tb"), "interval": 0.05})
    with Runner(cfg) as runner:
        stream = runner.device(0)
        [reporter] = [s for s in runner._stages if type(s).__name__ == "MetricsReporter"]
        for _ in range(3):
            next(stream)
        wait_until(lambda: reporter.written >= 3, "three records written")
    assert not reporter.thread.is_alive() and wait_for_no_pipeline_threads() == []
    acc = events(tmp_path / "tb")
    steps = acc.Scalars("inputkit/samples")
    assert len(steps) == reporter.written >= 4  # (the last one at close)
    assert steps[-1].value >= 3 * 64 and [e.step for e in steps] == list(range(len(steps)))
    assert "inputkit/coordinators/main/0/queues/batch_queue/full" in acc.Tags()["scalars"]


@pytest.mark.timeout(300)
def test_each_point_of_a_bench_sweep_is_a_tensorboard_run_of_its_own(tmp_path):
    """``bench -m``: point N's events go to ``metrics.tensorboard``/N (as its run directory is
    named), one step per line of that point's own metrics.jsonl, never mixed."""
    env = {**os.environ, "PYTHONPATH": str(TESTS), "COLUMNS": "200"}
    out = subprocess.run([sys.executable, "-m", "inputkit", "bench", "-m", "queue.capacity=2,8",
                          "bench.seconds=1", "devices=cpu", "workers=threads", "bench.plot=false",
                          f"metrics.tensorboard={tmp_path / 'tb'}"], cwd=tmp_path, env=env,
                         capture_output=True, text=True, timeout=250, stdin=subprocess.DEVNULL)
    assert out.returncode == 0, out.stderr[-3000:]
    assert sorted(p.name for p in (tmp_path / "tb").iterdir()) == ["0", "1"]
    for point in ("0", "1"):
        [jsonl] = list((tmp_path / "multirun").rglob(f"{point}/metrics.jsonl"))
        records = [json.loads(line) for line in jsonl.read_text().splitlines()]
        written = events(tmp_path / "tb" / point).Scalars("inputkit/samples")
        assert [e.value for e in written] == [float(r["samples"]) for r in records]


def test_a_tuner_trial_leaves_the_metrics_sinks_alone(tmp_path):
    """A trial of ``inputkit tune`` is a short private run, not the run the sinks watch: with
    metrics.wandb=true and no W&B run it still runs (a Runner would refuse), and writes no
    TensorBoard events."""
    from inputkit.config.spec import load_spec
    from inputkit.tuning.trial import Settings, run_once

    spec = load_spec(make_cfg(SRC, workers={"kind": "thread", "count": 1},
                              metrics={"wandb": True, "tensorboard": str(tmp_path / "tb")}))
    run = run_once(spec, "main", Settings(seconds=0.4, warmup=0.1))
    assert run.rate > 0
    assert not (tmp_path / "tb").exists()
    assert wait_for_no_pipeline_threads() == []

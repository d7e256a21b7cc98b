"""The runner end to end, in-process: real threads, real queues, real torch tensors."""

from __future__ import annotations

import threading
import time

import numpy as np
import pytest
import torch
from conftest import make_cfg, pipeline_threads, wait_for_no_pipeline_threads, wait_until

import inputkit
from inputkit import ConfigError, InputkitError, Runner, SourceError, WorkerFailure

SYN = "inputkit.sources.synthetic.SyntheticSource"
NO_PROBE = {"probe": False}  # slow sources: no extra fetch at start for the memory plan


def ids_of(batches):
    return np.concatenate([b["id"].numpy() for b in batches]).tolist()


@pytest.mark.parametrize("length, batch_size", [(3000, 64), (1001, 100), (37, 50)])
def test_exactly_once_across_two_devices_with_random_chunks(length, batch_size):
    # Chunks of 0..150 samples: empty ones, ones larger than a batch, and everything between.
    cfg = make_cfg({"_target_": "fakes:RandomChunks", "length": length, "max_chunk": 150},
                   batch_size=batch_size, devices=["cpu", "cpu"], workers={"count": 3})
    got: dict[int, list] = {0: [], 1: []}
    with Runner(cfg) as runner:
        assert runner.devices == ("cpu", "cpu")
        for step in runner.steps():
            for device, batch in enumerate(step):
                if batch is not None:
                    got[device].append(batch)
        stats = runner.stats()
    everything = ids_of(got[0] + got[1])
    assert sorted(everything) == list(range(length)), "every id exactly once across devices"
    for device_batches in got.values():
        sizes = [len(b["id"]) for b in device_batches]
        assert all(s == batch_size for s in sizes[:-1])
        assert sizes == [] or 1 <= sizes[-1] <= batch_size
        for b in device_batches:
            assert isinstance(b["x"], torch.Tensor) and b["x"].shape == (len(b["id"]), 3)
            assert torch.equal(b["x"][:, 0].long(), b["id"])
    assert all(c.finished for c in stats.coordinators)
    assert stats.samples == length


def test_each_steps_pass_is_one_epoch_when_device_shares_differ():
    """20 chunks over 3 devices (7, 7, 6): the device that ends first waits for the others
    (None in the last step) instead of starting the next epoch inside the same pass."""
    cfg = make_cfg({"_target_": SYN, "fields": {"x": {"shape": [2]}}, "length": 1000,
                    "id_field": "id"}, batch_size=50, devices=["cpu"] * 3,
                   workers={"count": 2}, epoch={"count": 3})
    with Runner(cfg) as runner:
        passes = [[b for step in runner.steps() for b in step if b is not None]
                  for _ in range(4)]
        epochs = [c.epoch for c in runner.coordinators()]
    assert [sum(len(b["id"]) for b in p) for p in passes] == [1000, 1000, 1000, 0]
    assert all(sorted(ids_of(p)) == list(range(1000)) for p in passes[:3])
    assert epochs == [3, 3, 3]


def test_synthetic_finite_source_ends_the_epoch_with_a_partial_batch():
    cfg = make_cfg({"_target_": SYN, "fields": {"x": {"shape": [2]}}, "length": 1000,
                    "id_field": "id", "chunk_size": 30}, batch_size=64)
    with Runner(cfg) as runner:
        batches = list(runner.device(0))
        assert list(runner.device(0)) == [], "after the end, iteration stays ended"
    assert [len(b["id"]) for b in batches] == [64] * 15 + [40]
    assert sorted(ids_of(batches)) == list(range(1000))


def test_drop_last_drops_the_partial_batch_and_reports_it():
    cfg = make_cfg({"_target_": SYN, "fields": {}, "length": 100, "id_field": "id",
                    "chunk_size": 30}, batch_size=64, drop_last=True, workers={"count": 1})
    with Runner(cfg) as runner:
        batches = list(runner.device(0))
        stats = runner.stats().coordinators[0]
    assert [len(b["id"]) for b in batches] == [64]
    assert stats.dropped_samples == 36


def test_batches_are_tensors_sharing_the_batch_memory_on_cpu():
    cfg = make_cfg({"_target_": SYN, "fields": {"img": {"shape": [3, 8, 8], "dtype": "uint8"}},
                    "chunk_size": 16}, batch_size=16)
    with Runner(cfg) as runner:
        batch = next(runner.device(0))
        stats = runner.stats().coordinators[0]
    assert batch["img"].dtype == torch.uint8 and batch["img"].shape == (16, 3, 8, 8)
    assert batch["img"].device.type == "cpu"
    assert stats.view_batches >= 1, "chunk size == batch size goes through without a copy"


def test_fetch_error_reaches_the_consumer_with_type_message_and_worker_traceback():
    cfg = make_cfg({"_target_": "fakes:Raising", "after": 3}, batch_size=4)
    began = time.monotonic()
    with pytest.raises(KeyError, match="is corrupt") as info:
        with Runner(cfg) as runner:
            for _ in runner.device(0):
                pass
    assert time.monotonic() - began < 5
    notes = "\n".join(getattr(info.value, "__notes__", []))
    assert "worker" in notes and "fakes:Raising" in notes and "in fetch" in notes
    assert not pipeline_threads() or all(not t.is_alive() for t in pipeline_threads())


@pytest.mark.parametrize("kind, text", [("ragged", "different leading lengths"),
                                        ("dtype_change", "dtype changed"),
                                        ("none", "fetch returned None")])
def test_bad_fetch_output_is_a_source_error_naming_the_source(kind, text):
    cfg = make_cfg({"_target_": "fakes:Returns", "kind": kind}, batch_size=4,
                   workers={"count": 1})
    with pytest.raises(SourceError, match=text) as info:
        with Runner(cfg) as runner:
            list(runner.device(0))
    assert info.value.source == "fakes:Returns"


def test_a_failure_on_one_device_stops_the_other_devices_consumer():
    cfg = make_cfg({"_target_": "fakes:Raising", "after": 2}, batch_size=4,
                   devices=["cpu", "cpu"], workers={"count": 1})
    errors = []
    with Runner(cfg) as runner:
        def consume(i):
            try:
                for _ in runner.device(i):
                    pass
            except BaseException as exc:
                errors.append(exc)
        threads = [threading.Thread(target=consume, args=(i,)) for i in range(2)]
        for t in threads:
            t.start()
        for t in threads:
            t.join(10)
            assert not t.is_alive()
    assert len(errors) == 2
    assert any(isinstance(e, KeyError) for e in errors)
    assert all(isinstance(e, (KeyError, WorkerFailure)) for e in errors)


def test_a_failure_stops_every_worker_of_the_runner_at_once():
    # Nobody consumes, so most workers are blocked on full queues when one of them fails.
    cfg = make_cfg({"_target_": "fakes:Raising", "after": 12}, batch_size=4,
                   devices=["cpu", "cpu"], workers={"count": 2}, queue={"capacity": 1})

    def fetchers():
        return [t for t in pipeline_threads() if "-fetch-" in t.name]

    with Runner(cfg) as runner:
        wait_until(lambda: not fetchers(), "every worker, on every device, to stop after the "
                   "failure")
        assert {t.name for t in pipeline_threads()} >= {"inputkit-main-0-batcher"}
        errors = []
        for device in (0, 1):
            with pytest.raises((KeyError, WorkerFailure)) as info:
                next(runner.device(device))
            errors.append(info.value)
    assert sum(isinstance(e, KeyError) for e in errors) == 1
    [other] = [e for e in errors if isinstance(e, WorkerFailure)]
    assert "stopped because worker" in str(other) and "KeyError" in str(other)


def test_early_break_and_leaving_the_block_stop_every_thread_within_2s():
    cfg = make_cfg({"_target_": SYN, "fields": {"x": {"shape": [256]}}, "chunk_size": 7},
                   batch_size=32, devices=["cpu", "cpu"], workers={"count": 4},
                   queue={"capacity": 2, "batch_capacity": 1})
    with Runner(cfg) as runner:
        for step, _batch in enumerate(runner.device(0)):
            if step == 5:
                break
        wait_until(lambda: [c.workers.blocked for c in runner.stats().coordinators] == [4, 4],
                   "every worker to block on a full queue")
        names = [t.name for t in pipeline_threads()]
        for device in (0, 1):  # the config's 4 workers per device, and its batcher
            assert len([n for n in names if n.startswith(f"inputkit-main-{device}-fetch-")]) == 4
            assert f"inputkit-main-{device}-batcher" in names
    # Leaving the block closes with close()'s 2 s timeout, which raises ShutdownError naming
    # any thread still running then; none is left.
    assert pipeline_threads() == []


def test_leaving_the_block_with_an_exception_stops_threads_and_keeps_the_exception():
    cfg = make_cfg({"_target_": SYN, "fields": {"x": {"shape": [4]}}}, batch_size=8)
    with pytest.raises(RuntimeError, match="training diverged"):
        with Runner(cfg) as runner:
            next(runner.device(0))
            raise RuntimeError("training diverged")
    assert pipeline_threads() == []


def test_close_is_idempotent_and_safe_from_another_thread():
    cfg = make_cfg({"_target_": "fakes:Slow", "seconds": 0.05}, batch_size=4, memory=NO_PROBE)
    runner = Runner(cfg).start()
    closer = threading.Thread(target=runner.close)
    closer.start()
    runner.close()
    closer.join(5)
    runner.close()
    assert pipeline_threads() == []
    with pytest.raises(InputkitError, match="the runner is closed"):
        runner.device(0)


@pytest.mark.parametrize("kind", ["thread", "inline"])
def test_close_while_consumer_waits_ends_its_wait_with_a_clear_error(kind):
    # Inline, the consumer is inside the fetch itself: close() from another thread ends its
    # stream as soon as that fetch returns.
    cfg = make_cfg({"_target_": "fakes:Slow", "seconds": 0.3}, batch_size=4, memory=NO_PROBE,
                   workers={"kind": kind, "count": 1})
    runner = Runner(cfg).start()
    caught = []

    def consume():
        try:
            for _ in runner.device(0):
                pass
        except InputkitError as exc:
            caught.append(exc)

    t = threading.Thread(target=consume)
    t.start()
    wait_until(lambda: runner.stats().coordinators[0].workers.fetching == 1,
               "the slow fetch to begin")  # inline: inside the consumer's own next()
    runner.close()
    t.join(3)
    assert not t.is_alive()
    assert caught and "closed" in str(caught[0])


def test_a_fetch_that_never_returns_is_reported_by_close():
    cfg = make_cfg({"_target_": "fakes:Slow", "seconds": 3.5}, batch_size=4,
                   workers={"count": 1}, memory=NO_PROBE)
    runner = Runner(cfg).start()
    wait_until(lambda: runner.stats().coordinators[0].workers.fetching == 1,
               "the worker to be inside fetch")
    with pytest.raises(inputkit.ShutdownError, match="did not stop within 0.5s") as info:
        runner.close(timeout=0.5)
    assert "still inside fetch of fakes:Slow" in str(info.value) and "time.sleep" in str(info.value)
    wait_for_no_pipeline_threads(5)  # let the slow fetch finish


def test_named_inputs_each_get_their_own_coordinators():
    cfg = inputkit.compose(["experiment=train_val", "devices=cpu", "inputs.val.source.length=300",
                            "source.fields.image.shape=[4]"])
    with Runner(cfg) as runner:
        assert runner.input_names == ("train", "val")
        with pytest.raises(InputkitError, match="pass input=<name>"):
            runner.device(0)
        val = list(runner.device(0, input="val"))
        train = next(runner.device(0, input="train"))
    assert sorted(ids_of(val)) == list(range(300)) and len(val[0]["id"]) == 300
    assert train["image"].shape == (256, 4)


def test_runner_can_start_only_some_inputs():
    cfg = inputkit.compose(["experiment=train_val", "devices=cpu"])
    with Runner(cfg, inputs=["val"]) as runner:
        assert runner.input_names == ("val",)
        assert len(runner.coordinators()) == 1
    with pytest.raises(ConfigError, match="no input named 'test'"):
        Runner(cfg, inputs=["test"])


def test_stats_report_queues_workers_and_rates():
    cfg = make_cfg({"_target_": SYN, "fields": {"x": {"shape": [16]}}, "chunk_size": 8,
                    "latency_ms": 1}, batch_size=32, workers={"count": 2})
    with Runner(cfg) as runner:
        for step, _ in enumerate(runner.device(0)):
            if step == 20:
                break
        stats = runner.stats()
    c = stats.coordinators[0]
    assert (c.input, c.device, c.batch_size) == ("main", "cpu", 32)
    assert c.batches == 21 and c.samples == 21 * 32 and c.bytes == 21 * 32 * 16 * 4
    assert [q.name for q in c.queues] == ["main/cpu/chunks", "main/cpu/batches"]
    assert c.workers.kind == "thread" and c.workers.workers == 2
    assert c.workers.samples >= c.samples and c.workers.fetch_p50_ms >= 1.0
    assert c.first_batch_s is not None and c.samples_per_s > 0
    assert stats.to_dict()["coordinators"][0]["queues"][0]["capacity"] == 16


def test_unknown_cuda_device_on_a_cpu_build_is_a_config_error():
    if torch.cuda.is_available():
        pytest.skip("this machine has CUDA")
    cfg = make_cfg({"_target_": SYN, "fields": {"x": {}}}, devices="cuda:0")
    with pytest.raises(ConfigError, match="devices: cuda:0 requested, but torch.cuda.is_available"):
        Runner(cfg).start()
    assert pipeline_threads() == []


def test_auto_devices_fall_back_to_cpu_without_gpus():
    cfg = make_cfg({"_target_": SYN, "fields": {"x": {}}}, devices="auto")
    with Runner(cfg) as runner:
        expected = torch.cuda.device_count() if torch.cuda.is_available() else 0
        assert len(runner.devices) == max(expected, 1)


def test_start_twice_and_use_before_start_are_clear_errors():
    cfg = make_cfg({"_target_": SYN, "fields": {"x": {}}})
    runner = Runner(cfg)
    with pytest.raises(InputkitError, match="runner.start"):
        runner.device(0)
    with runner:
        with pytest.raises(InputkitError, match="already running"):
            runner.start()
        with pytest.raises(InputkitError, match="device index 3 is out of range"):
            runner.device(3)


def test_a_runner_dropped_without_close_stops_its_threads():
    import gc

    cfg = make_cfg({"_target_": SYN, "fields": {"x": {"shape": [64]}}, "chunk_size": 16},
                   batch_size=32, workers={"count": 2}, queue={"capacity": 2})
    runner = Runner(cfg).start()
    next(runner.device(0))
    assert pipeline_threads()
    del runner
    gc.collect()
    assert wait_for_no_pipeline_threads() == []


def test_a_stream_keeps_its_runner_alive_until_the_stream_is_dropped():
    import gc

    cfg = make_cfg({"_target_": SYN, "fields": {"x": {"shape": [8]}}, "chunk_size": 16},
                   batch_size=16)
    stream = Runner(cfg).start().device(0)
    gc.collect()
    assert next(stream)["x"].shape == (16, 8), "the runner behind the stream is still running"
    del stream
    gc.collect()
    assert wait_for_no_pipeline_threads() == []


def test_a_block_that_raises_still_names_the_threads_that_did_not_stop(tmp_path, caplog):
    """The block's own error is raised, and a fetch thread that would not stop is named in a
    warning rather than hidden."""
    marker = tmp_path / "stuck"
    cfg = make_cfg({"_target_": "fakes:HangsAfter", "after": 0, "marker": str(marker)},
                   batch_size=4, workers={"count": 1}, memory={"probe": False})
    with pytest.raises(RuntimeError, match="the loop's own error"):
        with Runner(cfg) as runner:
            source = runner._sources[0].obj
            deadline = time.monotonic() + 30
            while not marker.exists() and time.monotonic() < deadline:
                time.sleep(0.02)
            assert marker.exists(), "the fetch never got stuck"
            raise RuntimeError("the loop's own error")
    source.never.set()  # let the stuck thread end, for the leak check
    assert "while the runner closed after RuntimeError" in caplog.text
    assert "inputkit-main-0-fetch-0" in caplog.text

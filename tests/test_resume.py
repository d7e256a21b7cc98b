"""Runner.state_dict / load_state_dict: resume mid-epoch with nothing repeated or skipped,
also when the worker count, the worker kind or the device count changed."""

from __future__ import annotations

import pickle

import pytest
from conftest import make_cfg

from inputkit import InputkitError, Runner

SOURCE = {"_target_": "inputkit.sources.synthetic.SyntheticSource", "fields": {"x": {"shape": [2]}},
          "length": 1000, "id_field": "id"}


def cfg(devices=1, workers=None, **top):
    return make_cfg(SOURCE, batch_size=32, devices=["cpu"] * devices,
                    workers=workers or {"count": 2},
                    epoch={"count": 2, "shuffle": True, "seed": 4, "chunk_size": 16}, **top)


def take(runner, batches: int) -> list[int]:
    got = []
    for step in runner.steps():
        got.extend(i for b in step if b is not None for i in b["id"].tolist())
        batches -= 1
        if batches == 0:
            break
    return got


def rest_of_epochs(runner) -> list[list[int]]:
    """What the runner delivers until it finishes, split by epoch (device 0's epoch counter)."""
    epochs: dict[int, list[int]] = {}
    streams = [runner.device(i) for i in range(len(runner.devices))]
    while not all(s.finished for s in streams):
        for stream in streams:
            epoch = stream.epoch
            epochs.setdefault(epoch, []).extend(i for b in stream for i in b["id"].tolist())
    return [epochs[e] for e in sorted(epochs)]


@pytest.mark.parametrize("before,after", [
    (cfg(1), cfg(1)),
    (cfg(1, {"count": 3}), cfg(2, {"count": 1})),
    (cfg(2), cfg(3, {"kind": "process", "count": 2})),
], ids=["same", "fewer-workers-more-devices", "threads-to-processes"])
def test_resume_mid_epoch_repeats_and_skips_nothing(before, after):
    with Runner(before) as runner:
        first = take(runner, 10)
        state = runner.state_dict()
    state = pickle.loads(pickle.dumps(state))  # it survives a checkpoint file
    assert state["inputs"]["main"]["epoch"] == 0
    assert state["inputs"]["main"]["samples"][0] == len(first)
    resumed = Runner(after)
    resumed.load_state_dict(state)
    with resumed:
        epochs = rest_of_epochs(resumed)
    assert len(epochs) == 2
    assert sorted(first + epochs[0]) == list(range(1000)), "epoch 0: each sample exactly once"
    assert sorted(epochs[1]) == list(range(1000)), "epoch 1: whole"


def test_resume_in_the_second_epoch():
    with Runner(cfg(1)) as runner:
        stream = runner.device(0)
        epoch0 = [i for b in stream for i in b["id"].tolist()]
        partial = []
        for b in stream:
            partial.extend(b["id"].tolist())
            if len(partial) > 300:
                break
        state = runner.state_dict()
    assert sorted(epoch0) == list(range(1000))
    assert state["inputs"]["main"]["epoch"] == 1
    resumed = Runner(cfg(2))
    resumed.load_state_dict(state)
    with resumed:
        streams = [resumed.device(i) for i in range(2)]
        assert all(s.epoch == 1 for s in streams)
        rest = [i for s in streams for b in s for i in b["id"].tolist()]
        assert all(s.finished for s in streams) or all(list(s) == [] for s in streams)
    assert sorted(partial + rest) == list(range(1000))


def test_a_finished_runner_resumes_to_nothing():
    with Runner(cfg(1)) as runner:
        rest_of_epochs(runner)
        state = runner.state_dict()
    assert state["inputs"]["main"]["epoch"] == 2
    resumed = Runner(cfg(1))
    resumed.load_state_dict(state)
    with resumed:
        assert list(resumed.device(0)) == [] and resumed.device(0).finished


def test_state_errors_are_clear():
    with Runner(cfg(1)) as runner:
        take(runner, 2)
        state = runner.state_dict()
    other = make_cfg(SOURCE | {"length": 500}, batch_size=32)
    resumed = Runner(other)
    resumed.load_state_dict(state)
    with pytest.raises(InputkitError, match="saved with 1,000 samples per epoch, but its source "
                                            "now has 500"):
        resumed.start()
    started = Runner(cfg(1)).start()
    try:
        with pytest.raises(InputkitError, match="call it before start"):
            started.load_state_dict(state)
    finally:
        started.close()
    with pytest.raises(InputkitError, match="not an inputkit runner state"):
        Runner(cfg(1)).load_state_dict({"epoch": 3})
    with pytest.raises(InputkitError, match="has not started"):
        Runner(cfg(1)).state_dict()


def test_fetch_inputs_are_marked_not_resumable():
    endless = {k: v for k, v in SOURCE.items() if k != "length"}
    with Runner(make_cfg(endless, batch_size=8)) as runner:
        next(runner.device(0))
        assert runner.state_dict()["inputs"]["main"] == {"resumable": False}


def epoch_cfg(devices: int, kind: str = "thread") -> dict:
    """1,000 samples, batch 50 (chunk = batch), three epochs: the shape of issue 12's report."""
    return make_cfg(SOURCE, batch_size=50, devices=["cpu"] * devices,
                    workers={"count": 1 if kind == "process" else 2, "kind": kind},
                    epoch={"count": 3})


def passes_of_steps(runner, passes: int = 4) -> list[list[int]]:
    """The ids each ``for step in runner.steps()`` pass delivers."""
    return [[i for step in runner.steps() for b in step if b is not None for i in b["id"].tolist()]
            for _ in range(passes)]


@pytest.mark.parametrize("devices,saved_after,kind", [
    (3, 200, "thread"),
    (2, 150, "thread"),
    (3, 200, "process"),
], ids=["3-devices", "2-devices-odd-chunks", "3-devices-processes"])
def test_resumed_steps_passes_keep_epoch_boundaries(devices, saved_after, kind):
    """Each steps() pass is one epoch, also when devices' shares of the rest differ in length
    (a device that ends its share first must not run on into the next epoch)."""
    with Runner(epoch_cfg(1)) as runner:
        first = take(runner, saved_after // 50)
        state = runner.state_dict()
    assert len(first) == saved_after
    resumed = Runner(epoch_cfg(devices, kind))
    resumed.load_state_dict(state)
    with resumed:
        passes = passes_of_steps(resumed)
    assert [len(p) for p in passes] == [1000 - saved_after, 1000, 1000, 0]
    assert sorted(first + passes[0]) == list(range(1000))
    assert sorted(passes[1]) == sorted(passes[2]) == list(range(1000))


def test_masks_of_epochs_left_behind_are_dropped_and_resume_still_exact():
    """A long run does not keep one mask (a byte per sample) per epoch it has finished: only
    the least epoch of the input's devices and the one before it stay; a state saved after
    many epochs still resumes exactly."""
    many = make_cfg(SOURCE, batch_size=32, devices=["cpu", "cpu"], workers={"count": 2},
                    epoch={"count": 7, "shuffle": True, "seed": 4, "chunk_size": 16})
    with Runner(many) as runner:
        streams = [runner.device(i) for i in range(2)]
        for _ in range(5):  # five whole epochs on both devices
            for stream in streams:
                list(stream)
        held = {e for c in runner.coordinators() for e in c.consumed}
        assert held <= {4, 5}, f"masks still held for epochs {sorted(held)}"
        partial = []
        for b in streams[0]:
            partial.extend(b["id"].tolist())
            if len(partial) > 200:
                break
        state = runner.state_dict()
    assert state["inputs"]["main"]["epoch"] == 5
    resumed = Runner(make_cfg(SOURCE, batch_size=32, devices=["cpu"], workers={"count": 2},
                              epoch={"count": 7, "shuffle": True, "seed": 4, "chunk_size": 16}))
    resumed.load_state_dict(state)
    with resumed:
        epochs = rest_of_epochs(resumed)
    assert sorted(partial + epochs[0]) == list(range(1000)), "epoch 5: each sample exactly once"
    assert sorted(epochs[1]) == list(range(1000)), "epoch 6: whole"

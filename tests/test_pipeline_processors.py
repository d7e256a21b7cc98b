"""Processors wired into the pipeline: run inside thread and process workers, timed, planned."""

from __future__ import annotations

import time

import numpy as np
import pytest
from conftest import make_cfg

from inputkit import ConfigError, Runner

SYN = "inputkit.sources.synthetic.SyntheticSource"
CROP = {"_target_": "inputkit.processors.RandomCrop", "field": "img", "size": [4, 4]}
NORM = {"_target_": "inputkit.processors.Normalize", "field": "img", "mean": [0.5] * 3,
        "std": [0.25] * 3}


def source(length: int | None = 300) -> dict:
    return {"_target_": SYN, "fields": {"img": {"shape": [8, 8, 3], "dtype": "uint8"}},
            "length": length, "id_field": "id"}


@pytest.mark.parametrize("workers", [{"count": 2}, {"kind": "process", "count": 2}],
                         ids=["threads", "processes"])
def test_processors_run_in_the_workers_and_each_step_is_timed(workers):
    cfg = make_cfg(source(), batch_size=32, workers=workers, processors=[CROP, NORM])
    with Runner(cfg) as runner:
        batches = list(runner.device(0))
        steps = runner.stats().coordinators[0].workers.processors
        plan = runner.plan
    ids = np.concatenate([b["id"].numpy() for b in batches])
    assert sorted(ids.tolist()) == list(range(300))
    assert batches[0]["img"].shape == (32, 4, 4, 3) and str(batches[0]["img"].dtype) == "torch.float32"
    assert [s.name for s in steps] == ["RandomCrop", "Normalize"]
    assert all(s.calls >= 1 and s.wall_s > 0 for s in steps)
    # The plan counts what flows downstream: 4x4x3 float32 + the id, not 8x8x3 uint8.
    assert plan.layouts["main"].sample_bytes == 4 * 4 * 3 * 4 + 8


def test_augmentations_are_reproducible_with_ordered_epochs_whatever_the_workers():
    def run(count):
        cfg = make_cfg(source(200), batch_size=20, workers={"count": count},
                       epoch={"ordered": True, "seed": 5}, processors=[CROP])
        with Runner(cfg) as runner:
            return np.concatenate([b["img"].numpy() for b in runner.device(0)])

    assert np.array_equal(run(1), run(3)), "seeded by (epoch, first index), not by worker"


def test_a_bad_processor_config_names_its_place_in_the_list():
    cfg = make_cfg(source(), processors=[CROP, {"_target_": "inputkit.processors.Cast",
                                                "field": "img", "dtype": "not-a-dtype"}])
    with pytest.raises(ConfigError, match=r"processors\[1\]"):
        Runner(cfg).start()


def test_a_processor_config_that_is_not_a_mapping_is_refused():
    with pytest.raises(ConfigError, match=r"processors\[0\]: expected \{_target_"):
        Runner(make_cfg(source(), processors=["RandomCrop"]))


def test_a_failing_processor_goes_through_the_failure_policy():
    too_big = {"_target_": "inputkit.processors.RandomCrop", "field": "img", "size": [16, 16]}
    cfg = make_cfg(source(None), batch_size=8, processors=[too_big], memory={"probe": False},
                   failures={"on_error": "skip"}, workers={"count": 1})
    with Runner(cfg) as runner:  # every chunk fails: nothing to consume, the workers go on
        deadline = time.monotonic() + 5
        while runner.stats().coordinators[0].workers.skipped_chunks < 3:
            assert time.monotonic() < deadline
            time.sleep(0.01)
        last = runner.stats().coordinators[0].workers.last_error
    assert "RandomCrop" in last and "img" in last

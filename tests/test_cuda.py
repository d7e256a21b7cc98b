"""The CUDA device stage: pinned staging, a side stream, non_blocking copies, prefetch.

Skipped (not faked) where torch sees no GPU; run them on a GPU machine with
``pytest tests/test_cuda.py``. tools/h2d.py measures the transfer rate.
"""

from __future__ import annotations

import numpy as np
import pytest
import torch
from conftest import make_cfg

from inputkit import Runner

pytestmark = pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA GPU")

SOURCE = {"_target_": "inputkit.sources.synthetic.SyntheticSource",
          "fields": {"x": {"shape": [3, 32, 32], "dtype": "uint8"}}, "length": 4096,
          "id_field": "id"}


def test_batches_arrive_on_the_gpu_exactly_once_and_intact():
    cfg = make_cfg(SOURCE, batch_size=64, devices="cuda:0", workers={"count": 2})
    ids = []
    with Runner(cfg) as runner:
        for batch in runner.device(0):
            assert batch["x"].device.type == "cuda" and batch["id"].device.type == "cuda"
            assert batch["x"].dtype == torch.uint8 and batch["x"].shape[1:] == (3, 32, 32)
            ids.append(batch["id"].cpu().numpy())
    assert sorted(np.concatenate(ids).tolist()) == list(range(4096))


def test_copies_run_on_a_side_stream_with_pinned_staging_and_the_consumer_waits():
    cfg = make_cfg(SOURCE, batch_size=256, devices="cuda:0", device={"prefetch": 3})
    with Runner(cfg) as runner:
        stage = runner.device(0).device_stage
        stream = runner.device(0)
        batch = next(stream)
        # The copy stream is not the consumer's, and the staging host buffers are pinned.
        assert stage._stream != torch.cuda.current_stream()
        staging_sets = [s for s, _ in stage._staging] + stage._free
        assert staging_sets and all(t.is_pinned() for s in staging_sets for t in s.values())
        # Using the batch on the consumer's stream is safe without a manual synchronize.
        total = int(batch["x"].sum(dtype=torch.int64).item())
        assert total == int(batch["x"].cpu().numpy().astype(np.int64).sum())
        # Prefetch: the device queue holds at most device.prefetch batches.
        assert stage.queue().stats().capacity == 3


def test_the_memory_plan_counts_pinned_staging_and_gpu_prefetch():
    cfg = make_cfg(SOURCE, batch_size=256, devices="cuda:0", device={"prefetch": 2})
    with Runner(cfg) as runner:
        stages = {t.stage: t for t in runner.plan.terms}
        used = runner.stats().memory.gpu_bytes
    per_batch = 256 * (3 * 32 * 32 + 8)
    assert stages["device prefetch"].bytes == 3 * per_batch
    assert stages["pinned staging"].bytes == 3 * per_batch
    assert used.get("cuda:0", 0) > 0


@pytest.mark.skipif(torch.cuda.device_count() < 2, reason="needs two GPUs")
def test_two_gpus_split_an_epoch_and_each_batch_is_on_its_own_gpu():
    cfg = make_cfg(SOURCE, batch_size=64, devices=["cuda:0", "cuda:1"])
    ids = []
    with Runner(cfg) as runner:
        for step in runner.steps():
            for index, batch in enumerate(step):
                if batch is not None:
                    assert batch["x"].device == torch.device(f"cuda:{index}")
                    ids.append(batch["id"].cpu().numpy())
    assert sorted(np.concatenate(ids).tolist()) == list(range(4096))

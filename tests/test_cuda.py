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


NORMALIZE = {"mean": [0.485, 0.456, 0.406], "std": [0.229, 0.224, 0.225]}


def _normalised_by_label(folder, devices, channels_last):
    """Every sample's image as the consumer received it, by label (= sample index)."""
    cfg = make_cfg({"_target_": "inputkit.sources.arrays.ArraySource", "path": str(folder)},
                   batch_size=64, devices=devices, workers={"count": 2},
                   device={"normalize": NORMALIZE, "channels_last": channels_last})
    out = {}
    with Runner(cfg) as runner:
        for batch in runner.device(0):
            image = batch["image"]
            assert image.device.type == devices.split(":")[0] and image.dtype == torch.float32
            assert batch["label"].dtype == torch.int64
            if channels_last:
                assert image.is_contiguous(memory_format=torch.channels_last)
            # Used at once on the consumer's stream: the copy's event covers the normalize too.
            for label, pixels in zip(batch["label"].cpu().numpy(), image.cpu().numpy(), strict=True):
                out[int(label)] = pixels
    return out


@pytest.mark.parametrize("channels_last", [False, True])
def test_normalised_batches_on_the_gpu_match_the_cpu_result(tmp_path, channels_last):
    images = np.random.default_rng(0).integers(0, 256, size=(512, 3, 16, 16), dtype=np.uint8)
    np.save(tmp_path / "image.npy", images)
    np.save(tmp_path / "label.npy", np.arange(512, dtype=np.int64))
    gpu = _normalised_by_label(tmp_path, "cuda:0", channels_last)
    cpu = _normalised_by_label(tmp_path, "cpu", channels_last)
    assert sorted(gpu) == sorted(cpu) == list(range(512))
    got = np.stack([gpu[i] for i in range(512)])
    np.testing.assert_allclose(got, np.stack([cpu[i] for i in range(512)]), rtol=1e-6, atol=2e-6)
    mean = np.asarray(NORMALIZE["mean"], dtype=np.float32).reshape(1, 3, 1, 1)
    std = np.asarray(NORMALIZE["std"], dtype=np.float32).reshape(1, 3, 1, 1)
    want = (images.astype(np.float32) / np.float32(255) - mean) / std
    np.testing.assert_allclose(got, want, rtol=1e-6, atol=2e-6)


def test_the_plan_counts_float32_batches_on_the_gpu_and_uint8_in_staging():
    cfg = make_cfg(SOURCE, batch_size=256, devices="cuda:0",
                   device={"prefetch": 2, "normalize": {**NORMALIZE, "fields": ["x"]}})
    with Runner(cfg) as runner:
        stages = {t.stage: t for t in runner.plan.terms}
        batch = next(runner.device(0))
        assert batch["x"].dtype == torch.float32 and batch["id"].dtype == torch.int64
        used = runner.stats().memory.gpu_bytes
    pixels = 3 * 32 * 32
    assert stages["pinned staging"].bytes == 3 * 256 * (pixels + 8)
    assert stages["device prefetch"].bytes == 3 * 256 * (4 * pixels + 8)
    assert stages["device copy before normalize"].bytes == 256 * pixels
    assert used.get("cuda:0", 0) > 0

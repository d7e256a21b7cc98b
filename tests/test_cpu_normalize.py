"""device.normalize on a CPU device: converted in a device-stage thread ahead of the consumer,
into reused float buffers that are never reused while a tensor made from them lives."""

from __future__ import annotations

import threading

import numpy as np
import pytest
import torch
from conftest import make_cfg, wait_for_no_pipeline_threads

from inputkit import Runner
from inputkit.observe.evidence import evidence
from inputkit.pipeline.device import CpuDeviceStage, CpuThreadStage, DeviceTransform
from inputkit.pipeline.float_buffers import FloatBuffers

SYN = "inputkit.sources.synthetic.SyntheticSource"
NORMALIZE = {"mean": [0.485, 0.456, 0.406], "std": [0.229, 0.224, 0.225]}


def image_cfg(**top):
    source = {"_target_": SYN, "fields": {"image": {"shape": [3, 8, 8], "dtype": "uint8"},
                                          "label": {"shape": [], "dtype": "int64"}},
              "chunk_size": 16}
    return make_cfg(source, batch_size=16, workers={"count": 1}, **top)


def expected(images: np.ndarray) -> np.ndarray:
    m = np.asarray(NORMALIZE["mean"], dtype=np.float32).reshape(1, -1, 1, 1)
    s = np.asarray(NORMALIZE["std"], dtype=np.float32).reshape(1, -1, 1, 1)
    return (images.astype(np.float32) / np.float32(255.0) - m) / s


def test_the_conversion_runs_in_the_device_stage_thread_not_the_consumers(monkeypatch):
    """The issue: normalize ran in next(), on the training loop's thread, adding its cost to
    every step. Now a thread of the device stage converts ahead of the consumer."""
    threads: list[str] = []
    apply = DeviceTransform.apply

    def recording(self, tensors):
        threads.append(threading.current_thread().name)
        return apply(self, tensors)

    monkeypatch.setattr(DeviceTransform, "apply", recording)
    with Runner(image_cfg(device={"normalize": NORMALIZE})) as runner:
        [coordinator] = runner.coordinators()
        assert isinstance(coordinator.device_stage, CpuThreadStage)
        stream = runner.device(0)
        for _ in range(5):
            batch = next(stream)
            assert batch["image"].dtype == torch.float32
        stats = runner.stats().coordinators[0]
    assert threads and threading.current_thread().name not in threads
    assert set(threads) == {"inputkit-main-0-normalize"}
    # The stage is a queue of its own (the consumer's), and its thread's time is counted.
    assert [q.name.rsplit("/", 1)[-1] for q in stats.queues] == ["chunks", "batches", "device"]
    assert stats.device_busy_s > 0 and stats.next_s > 0
    e = evidence(stats)
    assert e.consumer_queue is not None and e.consumer_queue.stage == "device prefetch"
    assert 0 < e.device_busy <= 1 and e.device == "cpu"
    assert wait_for_no_pipeline_threads() == []


def test_without_normalize_the_cpu_stage_stays_a_zero_copy_view_in_the_consumers_thread():
    with Runner(image_cfg()) as runner:
        [coordinator] = runner.coordinators()
        assert isinstance(coordinator.device_stage, CpuDeviceStage)
        assert next(runner.device(0))["image"].dtype == torch.uint8
        assert [q.name.rsplit("/", 1)[-1] for q in runner.stats().coordinators[0].queues] == \
            ["chunks", "batches"]


def test_batches_dropped_by_the_consumer_reuse_buffers_and_every_value_is_right(tmp_path):
    """A consumer that lets go of each batch (a training loop) gets buffers back; each batch
    still equals the numpy normalisation of its own uint8 pixels (labels say which)."""
    pixels = np.random.default_rng(1).integers(0, 256, size=(64, 3, 8, 8), dtype=np.uint8)
    np.save(tmp_path / "image.npy", pixels)
    np.save(tmp_path / "label.npy", np.arange(len(pixels), dtype=np.int64))
    cfg = make_cfg({"_target_": "inputkit.sources.arrays.ArraySource", "path": str(tmp_path)},
                   batch_size=16, workers={"count": 1}, device={"normalize": NORMALIZE},
                   epoch={"count": 4})
    seen = 0
    with Runner(cfg) as runner:
        [coordinator] = runner.coordinators()
        while not coordinator.finished:
            for batch in coordinator:
                labels = batch["label"].numpy()
                np.testing.assert_allclose(batch["image"].numpy(), expected(pixels[labels]),
                                           rtol=0, atol=1e-6)
                seen += 1
                del batch  # the consumer lets go: its buffer may be written again
        pool = coordinator.device_stage.transform._buffers["image"]
    assert seen == 16
    assert pool.reused > 0, (pool.reused, pool.allocated)
    assert pool.allocated < seen  # not one fresh float batch per batch


def test_a_buffer_comes_back_only_once_no_tensor_or_view_of_it_lives():
    pool = FloatBuffers()
    first = torch.from_numpy(pool.take((4, 3)))
    address = first.data_ptr()
    part = first[1:]  # a view the consumer kept
    del first
    assert pool.free == 0  # the view holds it
    other = torch.from_numpy(pool.take((4, 3)))
    assert other.data_ptr() != address  # never written under a live view
    del part
    assert pool.free == 1
    again = torch.from_numpy(pool.take((4, 3)))
    assert again.data_ptr() == address and pool.reused == 1
    # Another shape (a last, partial batch) is not handed a buffer of the wrong size.
    del again
    small = pool.take((2, 3))
    assert small.shape == (2, 3) and pool.reused == 1
    del other, small


@pytest.mark.parametrize("keep_free", [0, 2])
def test_the_pool_keeps_at_most_keep_free_buffers(keep_free):
    pool = FloatBuffers(keep_free=keep_free)
    held = [pool.take((8,)) for _ in range(5)]
    del held
    assert pool.free == keep_free


def test_channels_last_batches_from_the_reused_buffers_keep_their_layout_and_values():
    transform = DeviceTransform(_spec(), channels_last=True)
    images = np.random.default_rng(2).integers(0, 256, size=(4, 3, 5, 6), dtype=np.uint8)
    for _ in range(3):  # the second and third come from the pool
        out = transform.apply({"image": torch.from_numpy(images.copy())})["image"]
        assert out.is_contiguous(memory_format=torch.channels_last)
        np.testing.assert_allclose(out.numpy(), expected(images), rtol=0, atol=1e-6)
        del out
    assert transform._buffers["image"].reused == 2


def _spec():
    from inputkit.config.normalize import NormalizeSpec

    return NormalizeSpec(mean=tuple(NORMALIZE["mean"]), std=tuple(NORMALIZE["std"]))

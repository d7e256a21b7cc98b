"""device.normalize and device.channels_last: uint8 through the host queues, float32 after.

The pixels come from an ArraySource whose label is each sample's index, so the
expected float of every batch is computed in numpy from the very uint8 it was made of.
"""

from __future__ import annotations

import logging
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch
from conftest import make_cfg, pipeline_threads

import inputkit
from inputkit import ConfigError, Runner
from inputkit.planning.memory import plan_memory

TESTS = Path(__file__).resolve().parent
ARRAYS = "inputkit.sources.arrays.ArraySource"
SYN = "inputkit.sources.synthetic.SyntheticSource"
MEAN, STD = [0.485, 0.456, 0.406], [0.229, 0.224, 0.225]
NORMALIZE = {"mean": MEAN, "std": STD}
N = 96


@pytest.fixture
def pixels(tmp_path):
    """image.npy (N, 3, 8, 8) uint8 over the full 0..255 range, label.npy = the sample index."""
    images = np.random.default_rng(0).integers(0, 256, size=(N, 3, 8, 8), dtype=np.uint8)
    images[0] = 0
    images[1] = 255
    folder = tmp_path / "data"
    folder.mkdir()
    np.save(folder / "image.npy", images)
    np.save(folder / "label.npy", np.arange(N, dtype=np.int64))
    return folder, images


def expected(images, mean=MEAN, std=STD, scale=255.0):
    """The reference, in numpy float32: (x / scale - mean) / std per channel."""
    m = np.asarray(mean, dtype=np.float32).reshape(1, -1, 1, 1)
    s = np.asarray(std, dtype=np.float32).reshape(1, -1, 1, 1)
    return (images.astype(np.float32) / np.float32(scale) - m) / s


def batches_of(cfg):
    with Runner(cfg) as runner:
        return list(runner.device(0))


@pytest.mark.parametrize("kind", ["thread", "process"])
def test_cpu_batches_are_float32_equal_to_the_numpy_normalisation(pixels, kind):
    folder, images = pixels
    cfg = make_cfg({"_target_": ARRAYS, "path": str(folder)}, batch_size=16,
                   workers={"kind": kind, "count": 2}, device={"normalize": NORMALIZE})
    with Runner(cfg) as runner:
        batches = list(runner.device(0))
        stats = runner.stats()
    labels = np.concatenate([b["label"].numpy() for b in batches])
    assert sorted(labels.tolist()) == list(range(N)), "every sample exactly once"
    for batch in batches:
        image = batch["image"]
        assert image.dtype == torch.float32 and image.shape[1:] == (3, 8, 8)
        assert batch["label"].dtype == torch.int64, "other fields pass untouched"
        want = expected(images[batch["label"].numpy()])
        np.testing.assert_allclose(image.numpy(), want, rtol=1e-6, atol=2e-6)
    # Through the host queues the batches were uint8: 192 B of image + 8 B of label a sample.
    [coordinator] = stats.coordinators
    assert coordinator.bytes == N * (3 * 8 * 8 + 8)


def test_scale_and_fields_choose_what_is_converted(tmp_path):
    folder = tmp_path / "data"
    folder.mkdir()
    pixels = np.random.default_rng(1).random((32, 2, 4, 4), dtype=np.float32)
    other = np.random.default_rng(2).integers(0, 256, size=(32, 2, 5), dtype=np.uint8)
    np.save(folder / "pixels.npy", pixels)
    np.save(folder / "other.npy", other)
    np.save(folder / "label.npy", np.arange(32, dtype=np.int64))
    norm = {"mean": [0.5, 0.25], "std": [0.5, 2.0], "fields": ["pixels"], "scale": 1.0}
    cfg = make_cfg({"_target_": ARRAYS, "path": str(folder)}, batch_size=8,
                   device={"normalize": norm})
    batches = batches_of(cfg)
    for batch in batches:
        idx = batch["label"].numpy()
        np.testing.assert_allclose(batch["pixels"].numpy(),
                                   expected(pixels[idx], [0.5, 0.25], [0.5, 2.0], 1.0),
                                   rtol=1e-6, atol=2e-6)
        assert batch["other"].dtype == torch.uint8
        np.testing.assert_array_equal(batch["other"].numpy(), other[idx])


def test_channels_last_gives_a_channels_last_float_tensor_with_the_same_values(pixels):
    folder, images = pixels
    cfg = make_cfg({"_target_": ARRAYS, "path": str(folder)}, batch_size=32,
                   device={"normalize": NORMALIZE, "channels_last": True})
    batches = batches_of(cfg)
    for batch in batches:
        image = batch["image"]
        assert image.is_contiguous(memory_format=torch.channels_last)
        assert not image.is_contiguous()
        np.testing.assert_allclose(image.numpy(), expected(images[batch["label"].numpy()]),
                                   rtol=1e-6, atol=2e-6)


def test_channels_last_alone_keeps_uint8(pixels):
    folder, images = pixels
    cfg = make_cfg({"_target_": ARRAYS, "path": str(folder)}, batch_size=32,
                   device={"channels_last": True})
    batches = batches_of(cfg)
    for batch in batches:
        image = batch["image"]
        assert image.dtype == torch.uint8
        assert image.is_contiguous(memory_format=torch.channels_last)
        np.testing.assert_array_equal(image.numpy(), images[batch["label"].numpy()])


@pytest.mark.parametrize("normalize, key, text", [
    ([0.5], "device.normalize", "expected a mapping {mean: [...], std: [...]} or null"),
    ({"std": STD}, "device.normalize.mean", "missing"),
    ({"mean": "0.5", "std": STD}, "device.normalize.mean", "expected a non-empty list of numbers"),
    ({"mean": [], "std": []}, "device.normalize.mean", "expected a non-empty list of numbers"),
    ({"mean": [0.5, "x", 0.5], "std": STD}, "device.normalize.mean", "got 'x' at [1]"),
    ({"mean": MEAN, "std": [0.2, 0.2]}, "device.normalize.std", "has 2 values but mean has 3"),
    ({"mean": MEAN, "std": [0.2, 0.0, 0.2]}, "device.normalize.std", "must be positive, got 0 at [1]"),
    ({"mean": MEAN, "std": [0.2, -1, 0.2]}, "device.normalize.std", "got -1 at [1]"),
    ({**NORMALIZE, "scale": 0}, "device.normalize.scale", "must be a positive number"),
    ({**NORMALIZE, "fields": []}, "device.normalize.fields", "non-empty list of field names"),
    ({**NORMALIZE, "fields": ["image", "image"]}, "device.normalize.fields", "names a field twice"),
    ({**NORMALIZE, "maen": MEAN}, "device.normalize.maen", "unknown key"),
])
def test_bad_keys_are_refused_when_the_config_loads_naming_the_key(normalize, key, text):
    cfg = make_cfg({"_target_": SYN, "fields": {"image": {"shape": [3, 8, 8], "dtype": "uint8"}}},
                   inputs={"train": {"device": {"normalize": normalize}}})
    with pytest.raises(ConfigError) as info:
        inputkit.load_spec(cfg)
    assert str(info.value).startswith(f"inputs.train.{key}: "), info.value
    assert text in str(info.value)


IMAGE = {"image": {"shape": [3, 8, 8], "dtype": "uint8"}, "label": {"shape": [], "dtype": "int64"},
         "mask": {"shape": [3, 8, 8], "dtype": "bool"}, "flat": {"shape": [3], "dtype": "uint8"}}


@pytest.mark.parametrize("device, key, text", [
    ({"normalize": {**NORMALIZE, "fields": ["img"]}}, "device.normalize.fields",
     "no field 'img' in the batches; the fields there are: image, label, mask, flat"),
    ({"normalize": {"mean": [0.5] * 4, "std": [0.5] * 4}}, "device.normalize.mean",
     "has 4 values, but field 'image' has batches of shape (N, 3, 8, 8): its channel dimension "
     "(dim 1) is 3"),
    ({"normalize": {**NORMALIZE, "fields": ["label"]}}, "device.normalize.mean",
     "has 3 values, but field 'label' has batches of shape (N): its channel dimension (dim 1) "
     "does not exist"),
    ({"normalize": {**NORMALIZE, "fields": ["mask"]}}, "device.normalize.fields",
     "field 'mask' is bool; normalize needs an integer (uint8) or float field"),
    ({"normalize": {**NORMALIZE, "fields": ["flat"]}, "channels_last": True},
     "device.channels_last", "needs a 4-D batch (N, C, H, W), but field 'flat' has batches of "
     "shape (N, 3)"),
    ({"channels_last": True, "normalize": None}, None, None),
])
def test_keys_that_do_not_fit_the_fields_are_refused_at_start(device, key, text):
    """The memory plan knows the fields (declared here) and checks them before any worker runs."""
    cfg = make_cfg({"_target_": SYN, "fields": IMAGE, "length": 64}, batch_size=16, device=device)
    if key is None:  # the control: a config that fits starts
        with Runner(cfg) as runner:
            assert next(runner.device(0))["image"].is_contiguous(memory_format=torch.channels_last)
        return
    with pytest.raises(ConfigError) as info:
        Runner(cfg).start()
    assert str(info.value).startswith(f"{key}: {text}"), info.value
    assert not pipeline_threads(), "refused before any worker or stage started"


def test_without_a_plan_the_device_stage_checks_the_first_batch(pixels, caplog):
    """No declared sizes and the probe off: no plan, so the device stage names the key."""
    folder, _ = pixels
    cfg = make_cfg({"_target_": ARRAYS, "path": str(folder)}, batch_size=16,
                   memory={"probe": False},
                   device={"normalize": {"mean": [0.5, 0.5], "std": [0.5, 0.5]}})
    with caplog.at_level(logging.WARNING, logger="inputkit"), Runner(cfg) as runner:
        with pytest.raises(ConfigError, match=r"^device\.normalize\.mean: has 2 values, but field "
                           r"'image' has batches of shape \(N, 3, 8, 8\)"):
            next(runner.device(0))


def sizes(on, **top):
    cfg = make_cfg({"_target_": SYN, "fields": {k: IMAGE[k] for k in ("image", "label")}},
                   batch_size=16, **top)
    plan = plan_memory(inputkit.load_spec(cfg), devices=(on,))
    return {t.stage: t for t in plan.terms}, plan


def test_the_plan_counts_the_float_batch_where_it_exists():
    image, label = 3 * 8 * 8, 8
    plain, _ = sizes("cpu")
    cpu, _ = sizes("cpu", device={"normalize": NORMALIZE})
    # Host queues still carry uint8.
    for stage in ("chunk queue", "batcher", "batch queue"):
        assert cpu[stage].bytes == plain[stage].bytes
    assert plain["batch in the consumer's hands"].bytes == 16 * (image + label)
    hands = cpu["batch in the consumer's hands"]
    assert hands.bytes == 16 * (4 * image + label)
    assert "image in float32 after device.normalize" in hands.detail
    # A thread converts ahead of the consumer: device.prefetch float batches wait, one forms
    # (its float output), and the uint8 batch it reads.
    assert cpu["device prefetch"].bytes == 3 * 16 * (4 * image + label)  # prefetch 2 + 1
    assert cpu["device stage normalize"].bytes == 16 * (image + label)
    assert "device stage normalize" not in plain and "device prefetch" not in plain
    inline, _ = sizes("cpu", device={"normalize": NORMALIZE}, workers={"kind": "inline"})
    # Inline converts in the consumer's thread: the uint8 input and the float32 it becomes.
    assert inline["device stage normalize"].bytes == 16 * ((image + label) + 4 * image)
    assert "device prefetch" not in inline
    gpu, plan = sizes("cuda:0", device={"normalize": NORMALIZE, "prefetch": 2})
    assert gpu["pinned staging"].bytes == 3 * 16 * (image + label), "the copy moves uint8"
    assert gpu["device prefetch"].bytes == 3 * 16 * (4 * image + label)
    assert "image in float32 after device.normalize" in gpu["device prefetch"].detail
    assert gpu["device copy before normalize"].bytes == 16 * image
    assert plan.gpu_bytes_per_device == 3 * 16 * (4 * image + label) + 16 * image
    assert "device stage normalize" not in gpu


def cli(args, cwd):
    env = {**os.environ, "PYTHONPATH": str(TESTS), "COLUMNS": "220"}
    env.pop("HYDRA_FULL_ERROR", None)
    return subprocess.run([sys.executable, "-m", "inputkit", *args], cwd=cwd, env=env,
                          capture_output=True, text=True, timeout=120, stdin=subprocess.DEVNULL)


def test_inputkit_plan_shows_the_float_batch_and_names_a_bad_key(tmp_path):
    norm = "device.normalize={mean:[0.485,0.456,0.406],std:[0.229,0.224,0.225]}"
    out = cli(["plan", "source=images", "batch_size=64", norm], tmp_path)
    assert out.returncode == 0, out.stdout + out.stderr
    # 3 x 224 x 224 pixels: 150,528 B as uint8 in the queues, 602,112 B as float32 (+ 8 B label).
    assert "64 samples x 150,536 B" in out.stdout
    assert "64 samples x 602,120 B (image in float32 after device.normalize)" in out.stdout
    assert "device stage normalize" in out.stdout
    bad = cli(["plan", "source=images", "device.normalize={mean:[0.5],std:[0.5]}"], tmp_path)
    assert bad.returncode == 2, bad.stdout + bad.stderr
    assert bad.stderr.strip().startswith("error: device.normalize.mean: has 1 values, but field "
                                         "'image' has batches of shape (N, 3, 224, 224)"), bad.stderr


def test_a_float32_field_is_converted_into_a_new_tensor_not_in_place():
    """The batch's own array may be the source's (a view lent on CPU): it must stay as it was."""
    from inputkit.config.normalize import NormalizeSpec
    from inputkit.pipeline.device import DeviceTransform

    pixels = np.random.default_rng(3).random((4, 3, 2, 2), dtype=np.float32)
    before = pixels.copy()
    spec = NormalizeSpec(mean=(0.5, 0.5, 0.5), std=(0.25, 0.25, 0.25), scale=1.0)
    for channels_last in (False, True):
        out = DeviceTransform(spec, channels_last).apply({"image": torch.from_numpy(pixels)})
        np.testing.assert_array_equal(pixels, before)
        np.testing.assert_allclose(out["image"].numpy(), (before - 0.5) / 0.25, rtol=1e-6,
                                   atol=2e-6)

"""Processors: the chain built from configs, seeding, per-step stats, errors, and the built-ins."""

from __future__ import annotations

import pickle
import threading

import numpy as np
import pytest

from inputkit.errors import ConfigError, SourceError
from inputkit.processors import (
    Cast,
    Normalize,
    ProcessorChain,
    ProcessorStats,
    ProcessorTotals,
    RandomCrop,
    RandomFlip,
    merge_snapshots,
    stats_from_snapshot,
)

P = "inputkit.processors"
HERE = "test_processors"  # this module, importable as a _target_ (tests/ is on sys.path)


# Processors used as _target_ by the tests below.
def add_value(fields, rng, value=1):
    return {**fields, "x": fields["x"] + value}


def add_noise(fields, rng):
    return {**fields, "noise": rng.random(len(fields["x"]))}


def keep_even(fields, rng):  # changes n, for every field alike
    return {name: arr[::2] for name, arr in fields.items()}


def shorten_x(fields, rng):  # changes n of one field only
    return {**fields, "x": fields["x"][:-1]}


def forget_return(fields, rng):
    fields["x"] = fields["x"] * 2


def explode(fields, rng):
    raise ZeroDivisionError("boom")


def stop(fields, rng):
    raise StopIteration


def wrong_signature(fields):
    return fields


def deterministic(fields, rng):
    assert rng is None
    return fields


deterministic.uses_rng = False  # type: ignore[attr-defined]


class Scale:
    def __init__(self, factor: float) -> None:
        if factor == 0:
            raise ValueError("factor must not be 0")
        self.factor = factor

    def __call__(self, fields, rng):
        return {**fields, "x": fields["x"] * self.factor}


SCALE_BY_3 = Scale(3)
NOT_CALLABLE = 42


def chunk(n: int = 8, h: int = 12, w: int = 10, c: int = 3, seed: int = 0) -> dict[str, np.ndarray]:
    rng = np.random.default_rng(seed)
    return {"image": rng.integers(0, 256, (n, h, w, c), dtype=np.uint8), "label": np.arange(n)}


# --- building from configs -------------------------------------------------------------------


def test_from_config_builds_classes_functions_and_objects():
    chain = ProcessorChain.from_config([
        {"_target_": f"{HERE}:add_value", "value": 10},  # function + keys -> partial
        {"_target_": f"{HERE}.Scale", "factor": 2},  # class -> instance
        {"_target_": f"{HERE}:SCALE_BY_3"},  # existing callable object
        {"_target_": f"{HERE}:add_value"},
    ])
    assert chain and len(chain) == 4
    assert chain.names == ("add_value", "Scale", "Scale#2", "add_value#2")
    out = chain.apply({"x": np.arange(3)}, worker_id=0)
    np.testing.assert_array_equal(out["x"], (np.arange(3) + 10) * 2 * 3 + 1)


def test_empty_chain_does_nothing():
    for chain in (ProcessorChain.from_config([]), ProcessorChain.from_config(None), ProcessorChain([])):
        assert not chain and len(chain) == 0 and chain.stats() == ()
        fields = chunk()
        assert chain.apply(fields, 0) is fields


@pytest.mark.parametrize("configs, key, match", [
    ([{"_target_": f"{P}.Cast", "field": "x", "dtype": "f4"}, {"_target_": "no_such_pkg.mod:f"}],
     "processors[1]._target_", "cannot import module 'no_such_pkg.mod'"),
    ([{"_target_": f"{P}.Cast", "field": "x", "dtype": "f4"}, {"_target_": f"{P}.Nope"}],
     "processors[1]._target_", "has no attribute 'Nope'"),
    ([{"_target_": f"{P}.Cast", "field": "x", "dtype": "f4"}, {"_target_": f"{P}.Normalize", "field": "x"}],
     "processors[1]", r"inputkit\.processors\.Normalize rejected its arguments: .*'mean'"),
    ([{"field": "x"}], "processors[0]._target_", "missing; name the processor"),
    (["Cast"], "processors[0]", "expected a mapping with _target_, got str"),
    ({"_target_": f"{P}.Cast"}, "processors", "must be a list of processor configs, got dict"),
    ([{"_target_": f"{P}.Normalize", "field": "x", "mean": 0, "std": [1, 0]}], "processors[0]",
     r"Normalize: std must be finite and non-zero"),
    ([{"_target_": f"{P}.Cast", "field": "x", "dtype": "nonsense"}], "processors[0]",
     "dtype 'nonsense' is not a numpy dtype"),
    ([{"_target_": f"{P}.RandomCrop", "field": "x", "size": [4, 4], "layout": "NHWC"}], "processors[0]",
     "layout must be one of HWC, CHW, HW"),
    ([{"_target_": f"{HERE}.Scale", "factor": 0}], "processors[0]", "factor must not be 0"),
    ([{"_target_": f"{HERE}:add_value", "bogus": 1}], "processors[0]",
     r"cannot be called as proc\(fields, rng, bogus=\.\.\.\)"),
    ([{"_target_": f"{HERE}:wrong_signature"}], "processors[0]", r"cannot be called as proc\(fields, rng\)"),
    ([{"_target_": f"{HERE}:SCALE_BY_3", "factor": 2}], "processors[0]", "existing object; it takes no"),
    ([{"_target_": f"{HERE}:NOT_CALLABLE"}], "processors[0]._target_", "is a int, not a class or"),
])
def test_config_errors_name_the_step(configs, key, match):
    with pytest.raises(ConfigError, match=match) as info:
        ProcessorChain.from_config(configs)
    assert info.value.key == key
    assert str(info.value).startswith(f"{key}: ")


def test_config_key_prefix_and_seed_are_checked():
    with pytest.raises(ConfigError) as info:
        ProcessorChain.from_config([{"_target_": "x.y:z"}], key="inputs.train.processors")
    assert info.value.key == "inputs.train.processors[0]._target_"
    with pytest.raises(ConfigError, match="must be a non-negative integer, got -1"):
        ProcessorChain([], seed=-1)


# --- running: stats, errors --------------------------------------------------------------------


def test_stats_count_calls_samples_and_time_per_step():
    chain = ProcessorChain([Cast("image", "float32"), Cast("label", "int32"), Normalize("image", 0, 255)])
    assert chain.names == ("Cast", "Cast#2", "Normalize")
    for n in (8, 5, 0):
        out = chain.apply(chunk(n), worker_id=1)
    assert out["image"].shape == (0, 12, 10, 3) and out["label"].dtype == np.int32
    stats = chain.stats()
    assert [s.name for s in stats] == ["Cast", "Cast#2", "Normalize"]
    assert all(s.calls == 3 and s.samples == 13 for s in stats)
    assert all(s.wall_s > 0 and s.cpu_s >= 0 for s in stats)
    assert stats[2].ms_per_chunk == pytest.approx(1000 * stats[2].wall_s / 3)
    assert stats[2].us_per_sample == pytest.approx(1e6 * stats[2].wall_s / 13)
    assert ProcessorStats("x", 0, 0, 0.0, 0.0).ms_per_chunk == 0.0


def test_a_step_may_change_n_for_every_field():
    chain = ProcessorChain.from_config([{"_target_": f"{HERE}:keep_even"},
                                        {"_target_": f"{P}.Cast", "field": "label", "dtype": "int8"}])
    out = chain.apply(chunk(7), 0)
    assert out["image"].shape[0] == out["label"].shape[0] == 4
    np.testing.assert_array_equal(out["label"], [0, 2, 4, 6])
    assert [s.samples for s in chain.stats()] == [7, 4]


def test_a_step_that_changes_one_fields_length_is_named():
    chain = ProcessorChain.from_config([{"_target_": f"{P}.Cast", "field": "x", "dtype": "int64"},
                                        {"_target_": f"{HERE}:shorten_x"}])
    lengths = r"different leading lengths \(x=3, y=4; 4 samples came in\)"
    with pytest.raises(SourceError, match=lengths) as info:
        chain.apply({"x": np.arange(4), "y": np.arange(4)}, 0)
    assert info.value.source == "processors[1] (shorten_x)"
    assert info.value.field == "x"


@pytest.mark.parametrize("target, match", [
    ("forget_return", r"returned NoneType \(did it forget `return fields`\?\)"),
])
def test_a_step_must_return_fields(target, match):
    chain = ProcessorChain.from_config([{"_target_": f"{HERE}:{target}"}])
    with pytest.raises(SourceError, match=match) as info:
        chain.apply({"x": np.arange(4)}, 0)
    assert info.value.source == f"processors[0] ({target})"


def test_an_exception_in_a_step_passes_through_with_a_note():
    chain = ProcessorChain.from_config([{"_target_": f"{P}.Cast", "field": "x", "dtype": "f4"},
                                        {"_target_": f"{HERE}:add_value"},
                                        {"_target_": f"{HERE}:explode"}])
    with pytest.raises(ZeroDivisionError, match="boom") as info:
        chain.apply({"x": np.arange(4)}, 0)
    assert getattr(info.value, "__notes__", None) == [
        "[inputkit] raised in processors[2] (explode), step 3 of 3 of the processor chain"]
    assert [s.calls for s in chain.stats()] == [1, 1, 0]  # the failed step is not counted


def test_a_step_cannot_end_the_epoch():
    chain = ProcessorChain.from_config([{"_target_": f"{HERE}:stop"}])
    with pytest.raises(RuntimeError, match=r"processors\[0\] \(stop\) raised StopIteration"):
        chain.apply({"x": np.arange(4)}, 0)


def test_steps_without_rng_get_none():
    chain = ProcessorChain([deterministic, Cast("x", "f4"), add_noise])
    out = chain.apply({"x": np.arange(4)}, 0)
    assert out["noise"].shape == (4,)


# --- seeding --------------------------------------------------------------------------------------


def crop_chain(seed: int = 0) -> ProcessorChain:
    return ProcessorChain([Normalize("image", 128, 64), RandomCrop("image", [6, 5]),
                           RandomFlip("image", axis=1)], seed=seed)


def test_same_seed_worker_and_chunk_count_give_the_same_output():
    a, b = crop_chain(), crop_chain()
    first = [a.apply(chunk(), worker_id=3)["image"] for _ in range(3)]
    again = [b.apply(chunk(), worker_id=3)["image"] for _ in range(3)]
    for x, y in zip(first, again, strict=True):
        np.testing.assert_array_equal(x, y)
    assert not np.array_equal(first[0], first[1])  # the counter moves on per chunk
    other_worker = crop_chain().apply(chunk(), worker_id=4)["image"]
    assert not np.array_equal(first[0], other_worker)
    other_seed = crop_chain(seed=1).apply(chunk(), worker_id=3)["image"]
    assert not np.array_equal(first[0], other_seed)


def test_a_key_replaces_worker_and_counter():
    chain = crop_chain()
    by_key = [chain.apply(chunk(), worker_id=w, key=640)["image"] for w in (0, 1, 0, 7)]
    for x in by_key[1:]:
        np.testing.assert_array_equal(by_key[0], x)
    np.testing.assert_array_equal(by_key[0], crop_chain().apply(chunk(), worker_id=9, key=640)["image"])
    assert not np.array_equal(by_key[0], chain.apply(chunk(), worker_id=0, key=648)["image"])
    tupled = chain.apply(chunk(), 0, key=(2, 640))["image"]
    np.testing.assert_array_equal(tupled, chain.apply(chunk(), 5, key=(2, 640))["image"])
    assert not np.array_equal(tupled, by_key[0])
    with pytest.raises(ValueError, match="non-negative int"):
        chain.apply(chunk(), 0, key=-1)


def test_pickled_chain_keeps_steps_and_seed_and_starts_counting_afresh():
    chain = crop_chain(seed=5)
    expected = chain.apply(chunk(), worker_id=2)["image"]
    chain.apply(chunk(), worker_id=2)
    copy = pickle.loads(pickle.dumps(chain))
    assert copy.names == chain.names and copy.seed == 5
    assert all(s.calls == 0 for s in copy.stats())
    np.testing.assert_array_equal(copy.apply(chunk(), worker_id=2)["image"], expected)


# --- thread safety, snapshots and totals ----------------------------------------------------------


def test_threads_share_one_chain():
    chain = crop_chain()
    errors: list[BaseException] = []
    outputs: dict[int, list[np.ndarray]] = {w: [] for w in range(4)}

    def work(worker_id: int) -> None:
        try:
            for i in range(25):
                outputs[worker_id].append(chain.apply(chunk(4, seed=i), worker_id)["image"])
        except BaseException as exc:  # pragma: no cover - reported below
            errors.append(exc)

    threads = [threading.Thread(target=work, args=(w,)) for w in range(4)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(10)
    assert not errors and not any(t.is_alive() for t in threads)
    assert all(s.calls == 100 and s.samples == 400 for s in chain.stats())
    # each worker kept its own chunk counter: worker 2's chunks come out as they do alone
    solo = crop_chain()
    for i, shared in enumerate(outputs[2]):
        np.testing.assert_array_equal(solo.apply(chunk(4, seed=i), 2)["image"], shared)


def test_snapshots_add_up_in_totals():
    a, b = crop_chain(), crop_chain()
    for _ in range(2):
        a.apply(chunk(4), 0)
    b.apply(chunk(6), 1)
    snap_a, snap_b = a.snapshot(), b.snapshot()
    assert list(snap_a) == ["Normalize", "RandomCrop", "RandomFlip"]
    assert snap_a["RandomCrop"][:2] == (2, 8)
    totals = ProcessorTotals()
    totals.add("w0", snap_a)
    totals.add("w0", snap_a)  # the same cumulative snapshot twice counts once
    totals.add("w1", snap_b)
    merged = {s.name: s for s in totals.stats()}
    assert (merged["RandomCrop"].calls, merged["RandomCrop"].samples) == (3, 14)
    assert merged["Normalize"].wall_s == pytest.approx(snap_a["Normalize"][2] + snap_b["Normalize"][2])
    # a restarted worker: retire its last snapshot, then its new chain counts from zero
    totals.retire("w1")
    totals.retire("w1")
    fresh = crop_chain()
    fresh.apply(chunk(2), 1)
    totals.add("w1", fresh.snapshot())
    assert totals.snapshot()["RandomFlip"][:2] == (4, 16)
    assert stats_from_snapshot(merge_snapshots([snap_a, snap_b]))[1].calls == 3
    assert ProcessorTotals().stats() == ()


# --- built-ins against per-sample reference implementations -------------------------------------


@pytest.mark.parametrize("shape, axis, mean, std, dtype", [
    ((6, 9, 7, 3), -1, [120, 110, 100], [60, 50, 40], "float32"),  # HWC
    ((6, 3, 9, 7), 0, [120, 110, 100], [60, 50, 40], "float64"),  # CHW
    ((6, 40, 30, 3), 2, [0.1, 0.2, 0.3], 2.0, "float16"),  # scalar std, positive axis
    ((6, 5), -1, 3.0, 2.0, "float32"),  # scalar statistics
    ((0, 9, 7, 3), -1, [1, 2, 3], [1, 2, 3], "float32"),  # empty chunk
])
def test_normalize_matches_a_per_sample_loop(shape, axis, mean, std, dtype):
    x = np.random.default_rng(1).integers(0, 256, shape).astype(np.uint8)
    out = Normalize("x", mean, std, dtype=dtype, axis=axis)({"x": x, "y": np.arange(shape[0])}, None)
    assert out["x"].dtype == np.dtype(dtype) and out["x"].shape == shape
    per_sample = len(shape) - 1
    bshape = [1] * per_sample
    if np.ndim(mean) or np.ndim(std):
        bshape[axis] = shape[1:][axis]
    m = np.broadcast_to(np.asarray(mean, np.float64).reshape(-1), (bshape[axis],)).reshape(bshape)
    s = np.broadcast_to(np.asarray(std, np.float64).reshape(-1), (bshape[axis],)).reshape(bshape)
    for i in range(shape[0]):
        expected = (x[i].astype(np.float64) - m) / s
        np.testing.assert_allclose(out["x"][i], expected, rtol=2e-3 if dtype == "float16" else 1e-6,
                                   atol=2e-3 if dtype == "float16" else 1e-5)
    assert out["y"] is not None and x.dtype == np.uint8  # other fields kept, input untouched


def test_normalize_errors_name_field_and_shapes():
    norm = Normalize("image", [1, 2], [1, 1])
    with pytest.raises(SourceError, match=r"has 3 channels on per-sample axis -1 \(per-sample shape "
                                          r"\[12, 10, 3\]\), but mean/std have 2 values"):
        norm(chunk(), None)
    with pytest.raises(SourceError, match=r"is not in the chunk \(its fields: image, label\)") as info:
        Normalize("img", 0, 1)(chunk(), None)
    assert info.value.field == "img"
    with pytest.raises(ValueError, match="dtype must be a float dtype"):
        Normalize("x", 0, 1, dtype="int32")


def test_cast():
    fields = chunk()
    out = Cast("image", "float16")(fields, None)
    assert out["image"].dtype == np.float16 and out["label"] is fields["label"]
    np.testing.assert_array_equal(out["image"], fields["image"].astype(np.float16))
    same = Cast("label", fields["label"].dtype.name)(fields, None)
    assert same["label"] is fields["label"]  # no copy when the dtype already fits
    with pytest.raises(ValueError, match="must be a bool, integer, float or complex dtype"):
        Cast("x", "U4")


def reference_crop(x, size, layout, seed):
    rng = np.random.default_rng(seed)
    ay, ax = {"HWC": (1, 2), "CHW": (2, 3), "HW": (1, 2)}[layout]
    h, w = size
    oy = rng.integers(0, x.shape[ay] - h + 1, size=len(x))
    ox = rng.integers(0, x.shape[ax] - w + 1, size=len(x))
    crops = []
    for i in range(len(x)):
        index = [slice(None)] * (x.ndim - 1)
        index[ay - 1] = slice(oy[i], oy[i] + h)
        index[ax - 1] = slice(ox[i], ox[i] + w)
        crops.append(x[i][tuple(index)])
    return np.stack(crops) if crops else np.empty((0,) + x.shape[1:], x.dtype)


@pytest.mark.parametrize("shape, size, layout", [
    ((16, 20, 18, 3), [7, 9], "HWC"),
    ((16, 3, 20, 18), [7, 9], "CHW"),
    ((16, 20, 18), [20, 4], "HW"),
    ((16, 20, 18, 3), 5, "HWC"),
])
def test_random_crop_matches_a_per_sample_loop(shape, size, layout):
    x = np.random.default_rng(2).integers(0, 1000, shape).astype(np.int16)
    out = RandomCrop("x", size, layout=layout)({"x": x}, np.random.default_rng(11))["x"]
    size = [size, size] if isinstance(size, int) else size
    expected = reference_crop(x, size, layout, seed=11)
    assert out.shape == expected.shape and out.flags.c_contiguous and out.dtype == x.dtype
    np.testing.assert_array_equal(out, expected)


def test_random_crop_offsets_vary_and_edges_are_reached():
    x = np.broadcast_to(np.arange(10)[None, None, :], (400, 4, 10)).copy()  # HW, value = column
    out = RandomCrop("x", [4, 3], layout="HW")({"x": x}, np.random.default_rng(0))["x"]
    assert set(out[:, 0, 0]) == set(range(8))  # every column offset 0..7 appears


def test_random_crop_of_the_full_size_and_of_an_empty_chunk():
    fields = chunk(3, h=6, w=5)
    assert RandomCrop("image", [6, 5])(fields, np.random.default_rng(0))["image"] is fields["image"]
    empty = RandomCrop("image", [2, 2])(chunk(0), np.random.default_rng(0))["image"]
    assert empty.shape == (0, 2, 2, 3)


def test_random_crop_too_large_names_field_and_shapes():
    with pytest.raises(SourceError, match=r"per-sample shape \[12, 10, 3\] \(HWC: height 12, width 10\) "
                                          r"is smaller than the crop size \[12, 11\]") as info:
        RandomCrop("image", [12, 11])(chunk(), np.random.default_rng(0))
    assert info.value.field == "image" and info.value.source == "RandomCrop"
    with pytest.raises(SourceError, match=r"per-sample shape \[12, 10, 3\], which does not fit layout HW"):
        RandomCrop("image", [2, 2], layout="HW")(chunk(), np.random.default_rng(0))
    chain = ProcessorChain([Cast("label", "int8"), RandomCrop("image", [13, 2])])
    with pytest.raises(SourceError) as info:
        chain.apply(chunk(), 0)
    assert info.value.__notes__ == [
        "[inputkit] raised in processors[1] (RandomCrop), step 2 of 2 of the processor chain"]


@pytest.mark.parametrize("axis, p", [(1, 0.5), (0, 0.3), (-1, 1.0), (2, 0.0)])
def test_random_flip_matches_a_per_sample_loop(axis, p):
    x = np.random.default_rng(3).random((32, 5, 6, 3)).astype(np.float32)
    before = x.copy()
    out = RandomFlip("x", axis=axis, p=p)({"x": x}, np.random.default_rng(9))["x"]
    flips = np.random.default_rng(9).random(len(x)) < p
    for i in range(len(x)):
        np.testing.assert_array_equal(out[i], np.flip(x[i], axis) if flips[i] else x[i])
    np.testing.assert_array_equal(x, before)  # input untouched
    if 0 < p < 1:
        assert 0 < flips.sum() < len(x)


def test_random_flip_arguments_and_axis_are_checked():
    with pytest.raises(ValueError, match="p must be a probability between 0 and 1, got 1.5"):
        RandomFlip("x", axis=0, p=1.5)
    with pytest.raises(TypeError, match="axis must be an int"):
        RandomFlip("x", axis="W")
    with pytest.raises(SourceError, match=r"per-sample shape \[12, 10, 3\], which has no axis 3"):
        RandomFlip("image", axis=3)(chunk(), np.random.default_rng(0))


def test_builtins_pickle_for_worker_processes():
    norm = Normalize("image", [1, 2, 3], [1, 2, 3])
    norm(chunk(), None)  # fills the shape cache, which is not pickled
    for proc in (norm, Cast("x", "f4"), RandomCrop("x", [2, 3]), RandomFlip("x", 1)):
        copy = pickle.loads(pickle.dumps(proc))
        assert repr(copy) == repr(proc)
    np.testing.assert_array_equal(pickle.loads(pickle.dumps(norm))(chunk(), None)["image"],
                                  norm(chunk(), None)["image"])

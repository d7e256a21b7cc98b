"""TorchDatasetSource (torch map-style and iterable datasets) and the DataLoader adapter."""

from __future__ import annotations

import gc
import os
import time

import numpy as np
import pytest
import torch
from conftest import children, make_cfg
from torch.utils.data import DataLoader

from inputkit import ConfigError, InputkitError, Runner, SourceError, SourceExhausted
from inputkit.sources.torch_dataset import TorchDatasetSource, worker_info
from inputkit.torch_adapter import InputkitIterableDataset

# Process workers import torch in each child (8-11 s each on a loaded 2-core machine), and
# several tests start two runs: a hang guard, not a speed limit.
pytestmark = pytest.mark.timeout(240)

T = "inputkit.sources.torch_dataset.TorchDatasetSource"
PROCESSES = {"kind": "process", "count": 2}


def source(dataset: str, **kwargs) -> dict:
    """A TorchDatasetSource config around ``torch_fakes.<dataset>`` built with ``kwargs``."""
    extra = {k: kwargs.pop(k) for k in ("fields", "shard") if k in kwargs}
    return {"_target_": T, "dataset": {"_target_": f"torch_fakes.{dataset}", **kwargs}, **extra}


def wait_for_no_children(before: set[int], seconds: float = 3.0) -> set[int]:
    deadline = time.monotonic() + seconds
    while children() - before and time.monotonic() < deadline:
        time.sleep(0.05)
    return children() - before


def ids_of(batches) -> list[int]:
    return np.concatenate([b["id"].numpy() for b in batches]).tolist() if batches else []


# map-style datasets ------------------------------------------------------------------------------

@pytest.mark.parametrize("workers", [{"count": 3}, PROCESSES], ids=["threads", "processes"])
def test_dict_samples_arrive_once_each_collated_by_field(workers):
    cfg = make_cfg(source("DictDataset", n=100), batch_size=16, workers=workers)
    with Runner(cfg) as runner:
        batches = list(runner.device(0))
    assert sorted(ids_of(batches)) == list(range(100))
    assert [len(b["id"]) for b in batches] == [16] * 6 + [4]
    first = batches[0]
    layout = {name: (t.dtype, tuple(t.shape)) for name, t in first.items()}
    assert layout == {"id": (torch.int64, (16,)), "x": (torch.float32, (16, 4)),
                      "label": (torch.int64, (16,)), "flag": (torch.bool, (16,)),
                      "arr": (torch.int16, (16, 3))}
    for batch in batches:  # every field of a row comes from the same sample
        ids = batch["id"]
        assert torch.equal(batch["x"][:, 0], ids.float())
        assert torch.equal(batch["label"], ids % 10)
        assert torch.equal(batch["flag"], ids % 2 == 1)
        assert torch.equal(batch["arr"][:, 2], (ids + 2).to(torch.int16))


def test_shuffle_gives_a_new_order_each_epoch_and_every_sample_once():
    cfg = make_cfg(source("DictDataset", n=100), batch_size=16, workers={"count": 2},
                   epoch={"shuffle": True, "count": 2, "ordered": True})
    with Runner(cfg) as runner:
        stream = runner.device(0)
        first, second = ids_of(list(stream)), ids_of(list(stream))
    assert sorted(first) == sorted(second) == list(range(100))
    assert first != list(range(100)) and first != second


def test_tuple_samples_are_fields_0_1_or_the_names_given():
    with Runner(make_cfg(source("TupleDataset", n=50), batch_size=20)) as runner:
        batches = list(runner.device(0))
    assert set(batches[0]) == {"0", "1"}
    assert batches[0]["0"].shape == (20, 2, 3) and batches[0]["0"].dtype == torch.float32
    assert sorted(ids_of([{"id": b["1"]} for b in batches])) == list(range(50))

    cfg = make_cfg(source("TupleDataset", n=50, fields=["image", "id"]), batch_size=20)
    with Runner(cfg) as runner:
        batches = list(runner.device(0))
    assert set(batches[0]) == {"image", "id"}
    assert sorted(ids_of(batches)) == list(range(50))
    assert all(torch.equal(b["image"][:, 1, 2], b["id"].float()) for b in batches)


def test_a_single_tensor_sample_is_field_0():
    with Runner(make_cfg(source("TensorDataset", n=30), batch_size=8)) as runner:
        batches = list(runner.device(0))
    got = torch.cat([b["0"] for b in batches])
    assert got.shape == (30, 2) and got.dtype == torch.int64
    assert sorted(got[:, 0].tolist()) == list(range(30))


def test_numbers_of_mixed_types_with_one_dtype_are_collated_sample_by_sample():
    with Runner(make_cfg(source("MixedScalars", n=30, fields=["id", "w"]), batch_size=8)) as runner:
        batches = list(runner.device(0))
    assert {b["id"].dtype for b in batches} == {torch.int64}
    assert {b["w"].dtype for b in batches} == {torch.float32}
    assert sorted(ids_of(batches)) == list(range(30))
    assert all(torch.equal(b["w"], b["id"].float()) for b in batches)


def test_fields_as_a_mapping_declares_shapes_and_dtypes_for_the_plan_and_checks_them():
    declared = {"id": {"dtype": "int64"}, "x": {"shape": [4], "dtype": "float32"}}
    cfg = make_cfg(source("DictDataset", n=20, fields=declared), batch_size=8)
    with Runner(cfg) as runner:
        batches = list(runner.device(0))
        assert runner.plan is not None and "8 samples x 24 B" in str(runner.plan.terms[0])
    assert set(batches[0]) == {"id", "x"} and sorted(ids_of(batches)) == list(range(20))

    declared["x"]["dtype"] = "float64"
    with pytest.raises(SourceError, match="fields declares shape \\[4\\] and dtype float64") as info:
        with Runner(make_cfg(source("DictDataset", n=20, fields=declared), batch_size=8)) as runner:
            list(runner.device(0))
    assert info.value.field == "x"


def test_a_dotted_name_with_dataset_args_works_like_a_nested_target():
    cfg = make_cfg({"_target_": T, "dataset": "torch_fakes.DictDataset", "dataset_args": {"n": 40}},
                   batch_size=16)
    with Runner(cfg) as runner:
        assert sorted(ids_of(list(runner.device(0)))) == list(range(40))


def test_fields_select_the_keys_of_dict_samples_and_strings_are_refused_by_name():
    cfg = make_cfg(source("DictDataset", n=20, with_name=True), batch_size=8)
    with pytest.raises(SourceError) as info:
        with Runner(cfg) as runner:
            list(runner.device(0))
    message = str(info.value)
    assert "field 'name'" in message and "index 0" in message and "str" in message
    assert "fields=[...]" in message

    cfg = make_cfg(source("DictDataset", n=20, with_name=True, fields=["id", "x"]), batch_size=8)
    with Runner(cfg) as runner:
        batches = list(runner.device(0))
    assert set(batches[0]) == {"id", "x"} and sorted(ids_of(batches)) == list(range(20))


# errors -------------------------------------------------------------------------------------------

@pytest.mark.parametrize("workers", [{"count": 2}, PROCESSES], ids=["threads", "processes"])
def test_getitem_raising_propagates_with_a_note_naming_the_dataset_and_index(workers):
    cfg = make_cfg(source("RaisesAt", n=100, bad=7), batch_size=16, workers=workers,
                   memory={"probe": False})
    with pytest.raises(ValueError, match="sample 7 is corrupt") as info:
        with Runner(cfg) as runner:
            list(runner.device(0))
    notes = "\n".join(info.value.__notes__)
    assert "torch_fakes.RaisesAt.__getitem__(7)" in notes
    assert f"source '{T}'" in notes  # the pipeline's own note names the worker and source


def test_getitem_raising_in_the_memory_probe_is_reported_by_the_probe():
    cfg = make_cfg(source("RaisesAt", n=100, bad=7), batch_size=16)
    with pytest.raises(SourceError, match="probe fetch failed: ValueError: sample 7 is corrupt"):
        with Runner(cfg):
            pass


@pytest.mark.parametrize("workers", [{"count": 2}, PROCESSES], ids=["threads", "processes"])
def test_a_sample_with_another_shape_fails_naming_index_and_field(workers):
    cfg = make_cfg(source("ShapeChange", n=100, odd=5), batch_size=16, workers=workers,
                   memory={"probe": False})
    with pytest.raises(SourceError) as info:
        with Runner(cfg) as runner:
            list(runner.device(0))
    error = info.value
    assert error.field == "x" and error.source == "torch_fakes.ShapeChange"
    assert "index 5: per-sample shape [5] differs from [4]" in str(error)


@pytest.mark.parametrize(("extra", "match"), [
    ({"dataset": 5}, "dataset: expected a torch Dataset object"),
    ({"dataset": {"root": "/data"}}, "dataset: expected a torch Dataset object"),
    ({"dataset": "torch_fakes.NoSuchDataset"}, "has no attribute 'NoSuchDataset'"),
    ({"dataset": "torch_fakes.DictDataset", "dataset_args": {"bogus": 1}},
     "torch_fakes.DictDataset\\(\\*\\*dataset_args\\) failed"),
    ({"dataset": {"_target_": "torch_fakes.DictDataset"}, "dataset_args": {"n": 1}},
     "dataset_args: only goes with a dotted-name dataset"),
    ({"dataset": {"_target_": "torch_fakes.DictDataset"}, "fields": "id"}, "fields: expected a"),
    ({"dataset": {"_target_": "torch_fakes.DictDataset"}, "shard": "yes"}, "shard: expected"),
])
def test_bad_arguments_are_config_errors_naming_the_problem(extra, match):
    cfg = make_cfg({"_target_": T, **extra})
    with pytest.raises(ConfigError, match=match) as info:
        with Runner(cfg):
            pass
    assert info.value.key == "source"


def test_read_and_fetch_by_hand_and_worker_info_outside_a_worker():
    from torch_fakes import DictDataset, Unsharded

    mapped = TorchDatasetSource(DictDataset(10))
    assert len(mapped) == 10
    chunk = mapped.read(np.array([3, 1], dtype=np.int64))
    assert chunk["id"].tolist() == [3, 1] and chunk["x"].shape == (2, 4)
    assert mapped.read(np.array([], dtype=np.int64))["x"].shape == (0, 4)
    with pytest.raises(TypeError, match="read\\(indices\\), not fetch"):
        mapped.fetch(0, 4)

    iterable = TorchDatasetSource(Unsharded(5))
    with pytest.raises(TypeError):
        len(iterable)
    assert iterable.fetch(0, 4)["id"].tolist() == [0, 1, 2, 3]
    assert iterable.fetch(0, 4)["id"].tolist() == [4]
    for _ in range(2):  # and on every later call
        with pytest.raises(SourceExhausted):
            iterable.fetch(0, 4)
    assert worker_info() == (0, 1)


# iterable datasets ----------------------------------------------------------------------------

@pytest.mark.parametrize("workers", [{"count": 3}, PROCESSES], ids=["threads", "processes"])
@pytest.mark.parametrize("dataset", ["Unsharded", "SelfSharded"])
def test_iterable_datasets_deliver_each_item_once_with_shard_true(workers, dataset):
    cfg = make_cfg(source(dataset, n=100), batch_size=16, workers=workers)
    with Runner(cfg) as runner:
        batches = list(runner.device(0))
    assert sorted(ids_of(batches)) == list(range(100))
    assert all(torch.equal(b["x"][:, 0], b["id"].float()) for b in batches)


def test_without_shard_an_unsharded_iterable_dataset_is_read_once_per_worker():
    cfg = make_cfg(source("Unsharded", n=50, shard=False), batch_size=16, workers={"count": 3})
    with Runner(cfg) as runner:
        got = ids_of(list(runner.device(0)))
    assert sorted(got) == sorted(list(range(50)) * 3)  # duplicates: documented

    cfg = make_cfg(source("SelfSharded", n=50, shard=False), batch_size=16, workers={"count": 3})
    with Runner(cfg) as runner:
        assert sorted(ids_of(list(runner.device(0)))) == list(range(50))


def test_epoch_keys_need_a_map_style_dataset():
    cfg = make_cfg(source("Unsharded", n=10), epoch={"shuffle": True})
    with pytest.raises(ConfigError, match="needs an indexable source") as info:
        with Runner(cfg):
            pass
    assert info.value.key == "epoch.shuffle"


# the DataLoader adapter --------------------------------------------------------------------------

def test_dataloader_over_two_epochs_keeps_one_runner_and_its_worker_processes():
    before = children()
    cfg = make_cfg(source("DictDataset", n=100), batch_size=16, workers=PROCESSES,
                   epoch={"shuffle": True})
    with InputkitIterableDataset(cfg) as ds:
        loader = DataLoader(ds, batch_size=None)
        epochs, runners, pids = [], [], []
        for _ in range(2):
            batches = list(loader)
            epochs.append(ids_of(batches))
            runners.append(ds.runner)
            pids.append(ds.runner.stats().coordinators[0].workers.pids)
            assert all(isinstance(b["x"], torch.Tensor) and b["x"].shape[1:] == (4,) for b in batches)
        assert sorted(epochs[0]) == sorted(epochs[1]) == list(range(100))
        assert epochs[0] != epochs[1]  # a new shuffle each epoch
        assert runners[0] is runners[1] and pids[0] == pids[1]
    assert ds.runner is None
    assert wait_for_no_children(before) == set()


def test_dataloader_over_a_finite_iterable_dataset_starts_a_runner_per_pass():
    cfg = make_cfg(source("Unsharded", n=40), batch_size=16, workers={"count": 2})
    ds = InputkitIterableDataset(cfg)
    loader = DataLoader(ds, batch_size=None)
    for _ in range(2):
        assert sorted(ids_of(list(loader))) == list(range(40))
        assert ds.runner is None  # the stream ended: nothing left running between passes


def test_early_break_stops_every_thread_and_process():
    before = children()
    cfg = make_cfg(source("DictDataset", n=1000), batch_size=16, workers=PROCESSES)
    ds = InputkitIterableDataset(cfg)
    loader = DataLoader(ds, batch_size=None)
    for i, _ in enumerate(loader):
        if i == 2:
            break
    assert ds.runner is None
    assert wait_for_no_children(before) == set()
    # the next pass starts afresh, with a whole epoch
    assert sorted(ids_of(list(loader))) == list(range(1000))
    ds.close()


def test_an_endless_source_streams_until_the_loop_stops_and_gc_closes_the_runner():
    cfg = make_cfg({"_target_": "inputkit.sources.synthetic.SyntheticSource",
                    "fields": {"x": {"shape": [2], "dtype": "float32"}}}, batch_size=8)
    ds = InputkitIterableDataset(cfg)
    it = iter(DataLoader(ds, batch_size=None))
    assert [next(it)["x"].shape for _ in range(50)] == [(8, 2)] * 50
    del ds, it
    gc.collect()  # the conftest fixture checks that every pipeline thread stopped


def test_a_stale_pass_ends_when_a_new_one_starts():
    cfg = make_cfg(source("DictDataset", n=64), batch_size=16)
    with InputkitIterableDataset(cfg) as ds:
        old = iter(ds)
        next(old)
        new = iter(ds)
        assert sorted(ids_of(list(new))) == list(range(64))
        assert list(old) == []


def test_dataloader_workers_are_refused():
    before = children()
    ds = InputkitIterableDataset(make_cfg(source("DictDataset", n=10)))
    with pytest.raises(InputkitError, match="num_workers=0"):
        for _ in DataLoader(ds, batch_size=None, num_workers=1):
            pass
    gc.collect()  # torch's DataLoader takes about 5 s to stop a worker that raised
    assert wait_for_no_children(before) == set()


def test_the_adapter_checks_its_arguments():
    two = {"source": source("DictDataset", n=10), "devices": "cpu",
           "inputs": {"train": {}, "val": {}}}
    with pytest.raises(ConfigError, match="declares inputs train, val; pass input="):
        InputkitIterableDataset(two)
    with pytest.raises(ConfigError, match="no input named 'test'"):
        InputkitIterableDataset(two, input="test")
    with pytest.raises(ConfigError, match="device"):
        InputkitIterableDataset(two, device=-1, input="val")
    ds = InputkitIterableDataset(two, input="val")
    assert sorted(ids_of(list(ds))) == list(range(10))
    assert ds.runner is not None and ds.runner.input_names == ("val",)
    ds.close()
    with pytest.raises(InputkitError, match="device index 3 is out of range"):
        list(InputkitIterableDataset(two, device=3, input="val"))


# building the dataset once per process ----------------------------------------------------------

def constructions(log) -> tuple[int, list[int]]:
    """How often CountedDataset was built in this process, and in each other process."""
    pids = [int(line) for line in log.read_text().split()] if log.exists() else []
    mine = pids.count(os.getpid())
    return mine, sorted(pids.count(pid) for pid in set(pids) - {os.getpid()})


@pytest.mark.parametrize(("workers", "others"), [({"count": 2}, []), (PROCESSES, [1, 1])],
                         ids=["threads", "processes"])
def test_the_dataset_is_built_once_per_process(tmp_path, workers, others):
    """The memory probe, the length check and the run share one dataset in the main process;
    each worker process builds its own."""
    log = tmp_path / "built.txt"
    cfg = make_cfg(source("CountedDataset", n=40, log=str(log)), batch_size=16, workers=workers)
    with Runner(cfg) as runner:
        assert runner.plan is not None  # the sizes were probed
        assert sorted(ids_of(list(runner.device(0)))) == list(range(40))
    assert constructions(log) == (1, others)

    log.unlink()
    with InputkitIterableDataset(cfg) as ds:  # the adapter adds no construction of its own
        assert sorted(ids_of([b for b in DataLoader(ds, batch_size=None)])) == list(range(40))
        assert len(ds) == 3  # while running, the Runner knows the length
    assert constructions(log) == (1, others)
    assert len(ds) == 3  # and after it stopped, its last state does


# dropping values of tuple samples --------------------------------------------------------------

def test_null_in_fields_drops_that_value_of_a_tuple_sample():
    cfg = make_cfg(source("WithPath", n=40, fields=["image", "label", None]), batch_size=16)
    with Runner(cfg) as runner:
        batches = list(runner.device(0))
    assert set(batches[0]) == {"image", "label"}
    got = torch.cat([b["label"] for b in batches])
    assert sorted(got.tolist()) == list(range(40))
    assert all(torch.equal(b["image"][:, 0, 0], b["label"].float()) for b in batches)


def test_null_in_the_fields_mapping_drops_that_value_and_the_plan_uses_the_rest():
    declared = {"image": {"shape": [2, 3], "dtype": "float32"}, "label": {"dtype": "int64"},
                "path": None}
    cfg = make_cfg(source("WithPath", n=40, fields=declared), batch_size=16)
    with Runner(cfg) as runner:
        batches = list(runner.device(0))
        assert runner.plan is not None and runner.plan.layouts["main"].source == "declared"
        assert set(runner.plan.layouts["main"].fields) == {"image", "label"}
    assert set(batches[0]) == {"image", "label"}
    assert sorted(torch.cat([b["label"] for b in batches]).tolist()) == list(range(40))


@pytest.mark.parametrize(("dataset", "fields", "match"), [
    ("DictDataset", ["id", None], "null drops a value of a tuple sample; a dict sample keeps "
                                  "only the keys listed"),
    ("TensorDataset", ["x", None], "the sample is a single-value sample: null drops"),
    ("WithPath", [None, None, None], "keep at least one"),
])
def test_null_in_fields_is_refused_where_it_drops_nothing_useful(dataset, fields, match):
    cfg = make_cfg(source(dataset, n=20, fields=fields), batch_size=8)
    with pytest.raises((SourceError, ConfigError), match=match):
        with Runner(cfg) as runner:
            list(runner.device(0))


# the adapter: resuming, and DataLoader's default batch_size ------------------------------------

def take(loader, k: int) -> list[dict]:
    out = []
    for batch in loader:
        out.append(batch)
        if len(out) == k:
            break
    return out


@pytest.mark.parametrize("workers", [{"count": 2}, PROCESSES], ids=["threads", "processes"])
def test_a_dataloader_resumes_mid_epoch_with_exactly_the_rest(workers):
    """k batches, state saved; a new dataset given the state delivers the rest of the epoch,
    then whole epochs in the saved run's shuffle order (ordered: so orders can be compared)."""
    cfg = make_cfg(source("DictDataset", n=200), batch_size=16, workers=workers,
                   epoch={"shuffle": True, "seed": 3, "ordered": True})
    with InputkitIterableDataset(cfg) as ds:
        first = ids_of(take(DataLoader(ds, batch_size=None), 4))
        state = ds.state_dict()
    assert len(first) == 64
    with InputkitIterableDataset(cfg) as reference:  # the same run, not interrupted
        loader = DataLoader(reference, batch_size=None)
        whole = [ids_of(list(loader)) for _ in range(2)]

    resumed = InputkitIterableDataset(cfg)
    resumed.load_state_dict(state)
    with resumed:
        loader = DataLoader(resumed, batch_size=None)
        rest = ids_of(list(loader))
        next_epoch = ids_of(list(loader))
    assert sorted(first + rest) == list(range(200))  # nothing lost, nothing twice
    assert first + rest == whole[0]
    assert next_epoch == whole[1]  # the epoch after it is the uninterrupted run's


def test_state_dict_is_torch_saveable_and_says_where_a_fresh_dataset_stands(tmp_path):
    cfg = make_cfg(source("DictDataset", n=64), batch_size=16)
    ds = InputkitIterableDataset(cfg)
    fresh = ds.state_dict()  # before any pass: the start
    with ds:
        take(DataLoader(ds, batch_size=None), 1)
        torch.save(ds.state_dict(), tmp_path / "state.pt")
    state = torch.load(tmp_path / "state.pt", weights_only=False)
    for saved, expected in ((fresh, 64), (state, 48)):
        resumed = InputkitIterableDataset(cfg)
        resumed.load_state_dict(saved)
        with resumed:
            assert len(ids_of(list(resumed))) == expected
    with pytest.raises(InputkitError, match="not an InputkitIterableDataset state"):
        InputkitIterableDataset(cfg).load_state_dict({"epoch": 3})


@pytest.mark.filterwarnings("ignore:'set_vital' is deprecated:UserWarning")  # torchdata 0.11
def test_a_stateful_dataloader_resumes_mid_epoch_with_exactly_the_rest(caplog):
    """torchdata's StatefulDataLoader calls the dataset's state_dict/load_state_dict (instead
    of replaying the first batches, which it warns about)."""
    stateful = pytest.importorskip("torchdata.stateful_dataloader",
                                   reason="torchdata is not installed (pip install torchdata)")
    cfg = make_cfg(source("DictDataset", n=200), batch_size=16, workers={"count": 2},
                   epoch={"shuffle": True})
    with InputkitIterableDataset(cfg) as ds:
        loader = stateful.StatefulDataLoader(ds, batch_size=None)
        first = ids_of(take(loader, 5))
        state = loader.state_dict()
    with InputkitIterableDataset(cfg) as ds:
        loader = stateful.StatefulDataLoader(ds, batch_size=None)
        loader.load_state_dict(state)
        rest = ids_of(list(loader))
    assert len(first) == 80 and len(rest) == 120
    assert sorted(first + rest) == list(range(200))
    assert "fast-forwarding" not in caplog.text


def test_dataloaders_default_batch_size_is_refused_naming_batch_size_none():
    """With batch_size=1 the DataLoader would stack each batch into a [1, 16, ...] tensor."""
    with InputkitIterableDataset(make_cfg(source("DictDataset", n=64), batch_size=16)) as ds:
        with pytest.raises(InputkitError, match="batch_size=None"):
            next(iter(DataLoader(ds)))
        with pytest.raises(InputkitError, match="batch_size=None"):
            next(iter(DataLoader(ds, batch_size=4)))
        batch = next(iter(DataLoader(ds, batch_size=None)))  # and the right way still works
        assert batch["x"].shape == (16, 4)

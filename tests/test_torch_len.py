"""len() of the DataLoader adapter: the batches a pass really yields on this device and rank."""

from __future__ import annotations

import os
import warnings

import pytest
import torch
from conftest import make_cfg
from torch.utils.data import DataLoader

from inputkit import InputkitError
from inputkit.pipeline.epochs import batches_in, epoch_share
from inputkit.torch_adapter import InputkitIterableDataset

T = "inputkit.sources.torch_dataset.TorchDatasetSource"


def source(dataset: str, **kwargs) -> dict:
    return {"_target_": T, "dataset": {"_target_": f"torch_fakes.{dataset}", **kwargs}}


def test_the_share_of_a_slot_is_the_dispatchers_split_and_the_slots_cover_the_epoch():
    # 10 chunks of 10 (the last one 3 short) over 4 slots: slots 0 and 1 get 3 chunks each,
    # and slot 1 holds the short last chunk (chunk 9).
    assert [epoch_share(97, 10, s, 4) for s in range(4)] == [30, 27, 20, 20]
    assert epoch_share(5, 8, 1, 2) == 0  # one chunk for two slots: the second gets nothing
    assert epoch_share(0, 8, 0, 1) == 0
    for length in range(40):
        for chunk in (1, 3, 8):
            for slots in (1, 2, 3, 5):
                assert sum(epoch_share(length, chunk, s, slots) for s in range(slots)) == length
    assert (batches_in(100, 16, False), batches_in(100, 16, True), batches_in(96, 16, False)) \
        == (7, 6, 6)


CASES = {  # (samples, batch_size, extra top-level keys, device index): batches on that device
    "partial-last-batch": (100, 16, {}, 0, 7),
    "drop-last": (100, 16, {"drop_last": True}, 0, 6),
    "exact-batches": (96, 16, {}, 0, 6),
    "two-devices-first": (100, 16, {"devices": ["cpu", "cpu"]}, 0, 4),  # chunks 0,2,4,6: 64
    "two-devices-second": (100, 16, {"devices": ["cpu", "cpu"]}, 1, 3),  # 1,3,5: 16+16+4
    "chunks-unlike-batches": (100, 16, {"devices": ["cpu", "cpu"],
                                        "epoch": {"chunk_size": 24}}, 1, 3),  # 24+24 = 48
    "more-devices-than-chunks": (10, 16, {"devices": ["cpu", "cpu"]}, 1, 0),
}


@pytest.mark.parametrize("case", list(CASES))
def test_len_is_the_number_of_batches_a_pass_yields_through_a_dataloader(case):
    """The DataLoader warns when an IterableDataset yields more than its len() (an error
    here: filterwarnings=error); the count is checked equal, over two epochs."""
    n, batch_size, extra, device, expected = CASES[case]
    cfg = make_cfg(source("DictDataset", n=n), batch_size=batch_size, workers={"count": 2},
                   **extra)
    with InputkitIterableDataset(cfg, device=device) as ds:
        assert len(ds) == expected  # before any pass: from a copy of the source
        loader = DataLoader(ds, batch_size=None)
        assert len(loader) == expected
        for _ in range(2):
            batches = list(loader)
            assert len(batches) == expected
            assert len(ds) == expected  # while the Runner runs: from the Runner itself
        if batches:
            sizes = [len(b["id"]) for b in batches]
            assert all(size == batch_size for size in sizes[:-1])


@pytest.mark.parametrize("rank", [0, 1])
def test_len_counts_this_ranks_share_under_torchrun(monkeypatch, rank):
    # 2 ranks x 1 device: 7 chunks of 16 over 2 slots; rank 0 gets 4 (64), rank 1 three (36).
    monkeypatch.setenv("RANK", str(rank))
    monkeypatch.setenv("WORLD_SIZE", "2")
    monkeypatch.setenv("LOCAL_RANK", str(rank))
    cfg = make_cfg(source("DictDataset", n=100), batch_size=16)
    with InputkitIterableDataset(cfg) as ds:
        loader = DataLoader(ds, batch_size=None)
        expected = [4, 3][rank]
        assert len(loader) == expected
        assert len(list(loader)) == expected


def test_a_resumed_pass_yields_fewer_than_len_and_the_dataloader_does_not_warn():
    cfg = make_cfg(source("DictDataset", n=100), batch_size=16)
    with InputkitIterableDataset(cfg) as ds:
        for i, _ in enumerate(DataLoader(ds, batch_size=None)):
            if i == 2:
                break
        state = ds.state_dict()
    resumed = InputkitIterableDataset(cfg)
    resumed.load_state_dict(state)
    with resumed:
        loader = DataLoader(resumed, batch_size=None)
        assert len(loader) == 7  # a whole epoch: where progress bars count from
        with warnings.catch_warnings():
            warnings.simplefilter("error")
            assert len(list(loader)) == 4  # the rest: 52 samples
            assert len(list(loader)) == 7  # then whole epochs


@pytest.mark.filterwarnings("ignore:'set_vital' is deprecated:UserWarning")  # torchdata 0.11
def test_a_stateful_dataloader_resumed_mid_epoch_counts_up_to_len():
    stateful = pytest.importorskip("torchdata.stateful_dataloader",
                                   reason="torchdata is not installed (pip install torchdata)")
    cfg = make_cfg(source("DictDataset", n=100), batch_size=16, epoch={"shuffle": True})
    with InputkitIterableDataset(cfg) as ds:
        loader = stateful.StatefulDataLoader(ds, batch_size=None)
        it = iter(loader)
        first = [next(it)["id"] for _ in range(3)]
        state = loader.state_dict()
        del it
    with InputkitIterableDataset(cfg) as ds:
        loader = stateful.StatefulDataLoader(ds, batch_size=None)
        loader.load_state_dict(state)
        assert len(loader) == 7
        rest = [b["id"] for b in loader]
    assert len(first) + len(rest) == 7
    assert sorted(torch.cat(first + rest).tolist()) == list(range(100))


@pytest.mark.parametrize("src", [
    {"_target_": "inputkit.sources.synthetic.SyntheticSource",
     "fields": {"x": {"shape": [2], "dtype": "float32"}}},
    source("Unsharded", n=40),
], ids=["endless-fetch", "iterable-dataset"])
def test_a_source_read_by_fetch_has_no_len(src):
    ds = InputkitIterableDataset(make_cfg(src, batch_size=8))
    with pytest.raises(TypeError, match="has no len\\(\\).*reads .* by fetch"):
        len(ds)
    with pytest.raises(TypeError):
        len(DataLoader(ds, batch_size=None))
    ds.close()


def test_len_of_a_device_the_config_does_not_feed_names_the_device_count():
    ds = InputkitIterableDataset(make_cfg(source("DictDataset", n=10), batch_size=8), device=1)
    with pytest.raises(InputkitError, match=r"device index 1 is out of range; this config feeds 1"):
        len(ds)


def test_len_before_the_first_pass_builds_one_copy_of_the_dataset_and_no_more(tmp_path):
    """A DataLoader's list() asks len() first; the running Runner, and after it its last
    state, answer without building the dataset again."""
    log = tmp_path / "built.txt"
    cfg = make_cfg(source("CountedDataset", n=40, log=str(log)), batch_size=16,
                   workers={"count": 2})
    with InputkitIterableDataset(cfg) as ds:
        assert len(ds) == 3
        assert log.read_text().split() == [str(os.getpid())]  # the copy that counted
        assert len(list(DataLoader(ds, batch_size=None))) == 3
        assert len(ds) == 3
    assert len(ds) == 3
    assert log.read_text().split() == [str(os.getpid())] * 2  # that copy and the Runner's

"""epoch.shuffle=shards: the block shuffle's orders (a permutation, deterministic, bounded in
shards), its bookkeeping for the cache (shards_in_flight, Dispatcher.progress), its config,
and real runs that deliver every sample exactly once, resumed onto other worker and device
counts."""

from __future__ import annotations

import pickle

import numpy as np
import pytest
from conftest import make_cfg
from fakes import GroupedIndexed
from hypothesis import given, settings
from hypothesis import strategies as st

from inputkit import Runner
from inputkit.errors import ConfigError
from inputkit.pipeline.dispatcher import Dispatcher, EpochOrders, EpochSpec
from inputkit.pipeline.shuffle import ShardLayout, epoch_order, shards_in_flight

GROUPED = {"_target_": "fakes.GroupedIndexed", "length": 600, "shards": 12}


def uneven_groups(sizes: list[int], seed: int) -> np.ndarray:
    """Shard ids for shards of ``sizes`` samples, scattered over the index space."""
    groups = np.repeat(np.arange(len(sizes)), sizes)
    return np.random.default_rng(seed).permutation(groups)


shard_sizes = st.lists(st.integers(1, 30), min_size=1, max_size=25)


@settings(max_examples=60, deadline=None)
@given(sizes=shard_sizes, seed=st.integers(0, 2**32 - 1), epoch=st.integers(0, 50),
       window=st.integers(1, 10), mode=st.sampled_from(["none", "global", "shards"]))
def test_every_mode_reads_every_index_exactly_once(sizes, seed, epoch, window, mode):
    """Whatever the shard sizes and window, an order is a permutation of the indices."""
    groups = uneven_groups(sizes, seed % 1000)
    order = epoch_order(len(groups), seed, epoch, mode, groups, window)
    assert order.dtype == np.int64
    assert np.array_equal(np.sort(order), np.arange(len(groups)))


@settings(max_examples=60, deadline=None)
@given(sizes=shard_sizes, seed=st.integers(0, 1000), window=st.integers(1, 6))
def test_each_shard_is_read_within_one_block_of_window_shards(sizes, seed, window):
    """A shard's samples all fall inside one block; a block holds at most ``window`` shards,
    so a cache that keeps a shard from its first to its last use holds at most ``window``
    shards at one position and ``2 * window`` over any span shorter than a block."""
    groups = uneven_groups(sizes, seed)
    layout = ShardLayout.of(groups)
    order = epoch_order(len(groups), seed, 1, "shards", layout, window)
    spans = shards_in_flight(order, layout, 1)
    # blocks: runs of positions between which no shard's interval crosses
    starts = np.sort(spans.first)
    blocks = [starts[i:i + window] for i in range(0, len(starts), window)]
    for block in blocks:
        inside = np.isin(spans.first, block)
        lo, hi = spans.first[inside].min(), spans.last[inside].max()
        shards_here = np.unique(layout.dense[order[lo:hi + 1]])
        assert len(shards_here) == inside.sum() <= window
    assert spans.max_in_flight <= window
    smallest_block = min(int(layout.counts[np.isin(spans.first, b)].sum()) for b in blocks)
    assert shards_in_flight(order, layout, smallest_block).max_in_flight <= 2 * window


@settings(max_examples=40, deadline=None)
@given(sizes=shard_sizes, seed=st.integers(0, 1000), window=st.integers(1, 6),
       span=st.integers(1, 40), drop=st.integers(0, 3))
def test_shards_in_flight_matches_counting_by_hand(sizes, seed, window, span, drop):
    """first/last positions and the most shards held at once, against a plain loop; also on a
    resumed epoch's remainder (some samples gone)."""
    groups = uneven_groups(sizes, seed)
    order = epoch_order(len(groups), seed, 0, "shards", groups, window)
    order = order[np.arange(len(order)) % 4 != drop] if drop else order
    spans = shards_in_flight(order, groups, span)
    dense = ShardLayout.of(groups).dense
    first: dict[int, int] = {}
    last: dict[int, int] = {}
    for position, index in enumerate(order.tolist()):
        first.setdefault(int(dense[index]), position)
        last[int(dense[index])] = position
    for shard in range(len(sizes)):
        assert spans.first[shard] == first.get(shard, -1)
        assert spans.last[shard] == last.get(shard, -1)
    held = 0
    for p in range(len(order)):
        window_lo = max(0, p - span + 1)
        held = max(held, sum(1 for s in first if first[s] <= p and last[s] >= window_lo))
        touched = len({int(dense[i]) for i in order[window_lo:p + 1]})
        assert touched <= spans.max_in_flight, "held is at least what a span touches"
    assert spans.max_in_flight == held


def test_global_mode_is_the_permutation_inputkit_always_drew():
    """Saved resume state and earlier runs keep their meaning: global is rng((seed, epoch))."""
    for seed, epoch, length in ((0, 0, 1), (4, 1, 1000), (123, 7, 37)):
        expected = np.random.default_rng((seed, epoch)).permutation(length)
        assert np.array_equal(epoch_order(length, seed, epoch, "global"), expected)
    assert np.array_equal(epoch_order(5, 1, 1, "none"), np.arange(5))


def test_orders_are_deterministic_from_seed_and_epoch_and_differ_otherwise():
    groups = uneven_groups([40] * 16, 0)
    one = epoch_order(len(groups), 3, 0, "shards", groups, 4)
    assert np.array_equal(one, epoch_order(len(groups), 3, 0, "shards", groups.copy(), 4))
    assert not np.array_equal(one, epoch_order(len(groups), 3, 1, "shards", groups, 4))
    assert not np.array_equal(one, epoch_order(len(groups), 4, 0, "shards", groups, 4))
    # group ids are labels only: renaming the shards keeps the same order
    assert np.array_equal(one, epoch_order(len(groups), 3, 0, "shards", groups * 10 + 5, 4))


def test_bad_groups_and_windows_are_refused_with_what_to_fix():
    with pytest.raises(ValueError, match=r"sample_groups\(\) gave 3 group ids for a source of 4"):
        epoch_order(4, 0, 0, "shards", np.array([0, 0, 1]), 2)
    with pytest.raises(ValueError, match="window must be at least 1 shard, got 0"):
        epoch_order(4, 0, 0, "shards", np.array([0, 0, 1, 1]), 0)
    with pytest.raises(ValueError, match="unknown shuffle mode 'blocks'"):
        epoch_order(4, 0, 0, "blocks")


def test_epoch_orders_are_drawn_once_and_shared_read_only():
    """Every device of an input takes the same array; a prefetcher cannot write to it."""
    source = GroupedIndexed(200, 8)
    spec = EpochSpec(count=2, shuffle="shards", shuffle_window=2, seed=5)
    orders = EpochOrders(200, spec, source.sample_groups())
    assert orders.get(0) is orders.get(0)
    assert not orders.get(0).flags.writeable
    assert np.array_equal(orders.get(1), epoch_order(200, 5, 1, "shards", source.groups, 2))
    assert EpochOrders(200, EpochSpec()).get(0) is None, "index order is never materialized"


def test_progress_reports_the_oldest_unfinished_position_without_copying():
    spec = EpochSpec(count=1, chunk_size=10, shuffle="shards", shuffle_window=3, seed=1)
    source = GroupedIndexed(100, 10)
    out: list = []
    dispatcher = Dispatcher(100, 10, spec, 0, 1, window=4,
                            orders=EpochOrders(100, spec, source.sample_groups()))
    dispatcher.bind(lambda item: out.append(item) or True)
    epoch, order, low = dispatcher.progress()
    assert (epoch, low) == (0, 0)
    assert np.array_equal(order, epoch_order(100, 1, 0, "shards", source.groups, 3))
    a, b, c = (dispatcher.try_take() for _ in range(3))
    assert dispatcher.progress()[2] == 0
    dispatcher.deliver(b, "chunk b", len(b.indices), last=True)
    assert dispatcher.progress()[2] == 0, "a is still out"
    dispatcher.deliver(a, "chunk a", 4, last=False)
    assert dispatcher.progress()[2] == 0, "a is only partly delivered"
    dispatcher.deliver(a, "chunk a", 6, last=True)
    assert dispatcher.progress()[2] == 20, "c is the oldest unfinished"
    dispatcher.skip(c)
    assert dispatcher.progress()[2] == 30, "nothing out: the next to hand out"
    assert dispatcher.progress()[1] is order, "the same array, not a copy"


def test_progress_in_index_order_materializes_positions_once():
    dispatcher = Dispatcher(50, 10, EpochSpec(count=1), 1, 2, window=4)
    epoch, order, low = dispatcher.progress()
    assert (epoch, low) == (0, 10), "device 1 of 2 starts at chunk 1"
    assert np.array_equal(order, np.arange(50)) and dispatcher.progress()[1] is order


# config ----------------------------------------------------------------------------------------

def test_shards_on_a_source_without_shards_names_the_key_and_the_sources_that_have_them():
    cfg = make_cfg({"_target_": "inputkit.sources.synthetic.SyntheticSource",
                    "fields": {"x": {"shape": [2]}}, "length": 100},
                   batch_size=10, workers={"kind": "inline"}, epoch={"shuffle": "shards"})
    with pytest.raises(ConfigError, match=r"epoch.shuffle: shards needs a source that stores its "
                       r"samples in shards .*image_shards, tokens, parquet.*epoch.shuffle=true"):
        Runner(cfg).start()


@pytest.mark.parametrize("epoch,key,message", [
    ({"shuffle": "random"}, "epoch.shuffle", r"expected false .*true .*or shards.*got 'random'"),
    ({"shuffle": "shards", "shuffle_window": 0}, "epoch.shuffle_window", r"at least 1, got 0"),
])
def test_bad_shuffle_settings_name_their_key(epoch, key, message):
    cfg = make_cfg(GROUPED, batch_size=10, workers={"kind": "inline"}, epoch=epoch)
    with pytest.raises(ConfigError, match=rf"{key}: .*{message}"):
        Runner(cfg).start()


# real runs -------------------------------------------------------------------------------------

def shards_cfg(devices: int = 1, workers: dict | None = None, **epoch: object) -> dict:
    return make_cfg(GROUPED, batch_size=25, devices=["cpu"] * devices,
                    workers=workers or {"count": 2},
                    epoch={"count": 2, "shuffle": "shards", "shuffle_window": 3, "seed": 6,
                           "chunk_size": 10, **epoch})


@pytest.mark.parametrize("workers", [{"kind": "inline"}, {"kind": "thread", "count": 3}],
                         ids=["inline", "threads"])
def test_a_shards_epoch_delivers_the_drawn_order_exactly_once(workers):
    """ordered: the batches are the block shuffle's order itself, epoch after epoch."""
    groups = GroupedIndexed(600, 12).groups
    with Runner(shards_cfg(workers=workers, ordered=True)) as runner:
        stream = runner.device(0)
        epochs = [np.concatenate([b["id"].numpy() for b in stream]) for _ in range(2)]
    for e, got in enumerate(epochs):
        assert np.array_equal(got, epoch_order(600, 6, e, "shards", groups, 3))
    assert not np.array_equal(epochs[0], epochs[1])


def test_two_devices_share_one_order_and_together_read_every_sample_once():
    with Runner(shards_cfg(devices=2)) as runner:
        orders = {id(c.dispatcher.orders) for c in runner.coordinators()}
        assert len(orders) == 1, "one EpochOrders per input"
        streams = [runner.device(i) for i in range(2)]
        got = [i for s in streams for b in s for i in b["id"].tolist()]
    assert sorted(got) == list(range(600))


@pytest.mark.timeout(120)
@pytest.mark.parametrize("after", [
    shards_cfg(devices=2, workers={"count": 1}),
    shards_cfg(devices=3, workers={"kind": "process", "count": 1}),
], ids=["threads-2-devices-1-worker", "processes-3-devices"])
def test_resume_a_shards_epoch_onto_other_worker_and_device_counts(after):
    """Saved mid-epoch from one device with 3 threads; resumed elsewhere: each sample of the
    epoch exactly once, and the next epoch whole."""
    with Runner(shards_cfg(devices=1, workers={"count": 3})) as runner:
        first: list[int] = []
        for batch in runner.device(0):
            first.extend(batch["id"].tolist())
            if len(first) >= 250:
                break
        state = pickle.loads(pickle.dumps(runner.state_dict()))
    assert state["inputs"]["main"]["shuffle"] == "shards"
    resumed = Runner(after)
    resumed.load_state_dict(state)
    with resumed:
        streams = [resumed.device(i) for i in range(len(resumed.devices))]
        rest = [i for s in streams for b in s for i in b["id"].tolist()]
        second = [i for s in streams for b in s for i in b["id"].tolist()]
    assert sorted(first + rest) == list(range(600)), "epoch 0: each sample exactly once"
    assert sorted(second) == list(range(600)), "epoch 1: whole"


@pytest.mark.parametrize("workers", [{"kind": "thread", "count": 2}, {"kind": "process", "count": 2}],
                         ids=["threads", "processes"])
def test_token_files_read_file_blocks_in_the_shards_order(tmp_path, workers):
    """A real sharded source: 6 token files; the run's order is the block shuffle over the
    files the source names (each window exactly once), also when process workers build their
    own source."""
    from inputkit.sources.tokens import TokenSource

    for f in range(6):
        np.save(tmp_path / f"part-{f}.npy", np.arange(f * 1000, f * 1000 + 200 + 40 * f,
                                                      dtype=np.int32))
    files = str(tmp_path / "part-*.npy")
    source = {"_target_": "inputkit.sources.tokens.TokenSource", "files": files, "seq_len": 9,
              "mode": "per_file", "fields": ["id", "tokens"]}
    cfg = make_cfg(source, batch_size=8, workers=workers,
                   epoch={"count": 1, "shuffle": "shards", "shuffle_window": 2, "seed": 2,
                          "chunk_size": 4, "ordered": True})
    groups = TokenSource(files, seq_len=9, mode="per_file").sample_groups()
    with Runner(cfg) as runner:
        batches = list(runner.device(0))
    ids = np.concatenate([b["id"].numpy() for b in batches])
    assert np.array_equal(ids, epoch_order(len(groups), 2, 0, "shards", groups, 2))
    first_tokens = np.concatenate([b["tokens"].numpy()[:, 0] for b in batches])
    assert np.array_equal(np.unique(first_tokens // 1000, return_index=True)[0], np.arange(6))
    files_per_batch = [len(set((first_tokens[p:p + 8] // 1000).tolist()))
                       for p in range(0, len(ids), 8)]
    assert max(files_per_batch) <= 4, "a batch spans at most two blocks of 2 files"

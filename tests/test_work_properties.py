"""Property tests for index-range work: exactly once per epoch under random chunk sizes,
piece splits, skips (whole items or some of their samples) and worker deaths, on every
device, in order when asked."""

from __future__ import annotations

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from inputkit.pipeline.dispatcher import Dispatcher, EpochEnd, EpochSpec
from inputkit.pipeline.messages import END


def run_device(data, length, chunk_size, device, devices, epochs, ordered, shuffle):
    """Drive one device's dispatcher with random workers that deliver pieces, skip and die."""
    out: list = []
    spec = EpochSpec(count=epochs, chunk_size=chunk_size, shuffle=shuffle, seed=3, ordered=ordered)
    dispatcher = Dispatcher(length, batch_size=8, spec=spec, device_index=device,
                            num_devices=devices, window=4)
    dispatcher.bind(lambda item: out.append(item) or True)
    assert dispatcher.start()
    held: dict[int, list] = {w: [] for w in range(3)}  # worker -> items it holds
    skipped: list[int] = []
    steps = 0
    while not dispatcher.done:
        steps += 1
        assert steps < 10_000, "the dispatcher made no progress"
        worker = data.draw(st.integers(0, 2))
        action = data.draw(st.sampled_from(["take", "work", "work", "work", "die", "drop"]))
        if action == "take" or not held[worker]:
            item = dispatcher.try_take()
            if item is not None:
                held[worker].append(item)
            elif not any(held.values()):
                assert dispatcher.done, "nothing held, nothing to take, yet not done"
            continue
        item = held[worker][0]
        if action == "drop":  # some of its samples fail (on_error=skip): the rest come later
            remaining = item.remaining
            mask = np.array(data.draw(st.lists(st.booleans(), min_size=len(remaining),
                                               max_size=len(remaining))), dtype=bool)
            skipped.extend(remaining[mask].tolist())
            if mask.all():
                held[worker].pop(0)
            dispatcher.drop(item, remaining[mask])
            continue
        if action == "die":  # it delivered some pieces of its first item, then died
            remaining = item.remaining
            part = data.draw(st.integers(0, len(remaining) - 1)) if len(remaining) > 1 else 0
            if part:
                dispatcher.deliver(item, ("piece", remaining[:part].copy(), item.seq), part, last=False)
            for lost in held[worker]:
                dispatcher.requeue(lost)
            held[worker] = []
            continue
        held[worker].pop(0)
        if data.draw(st.integers(0, 9)) == 0:  # a read that fails under on_error=skip
            skipped.extend(item.remaining.tolist())
            dispatcher.skip(item)
            continue
        remaining = item.remaining
        cuts = sorted(set(data.draw(st.lists(st.integers(1, max(1, len(remaining) - 1)),
                                             max_size=2)))) if len(remaining) > 1 else []
        bounds = [0, *cuts, len(remaining)]
        for i in range(len(bounds) - 1):
            piece = remaining[bounds[i]:bounds[i + 1]].copy()
            dispatcher.deliver(item, ("piece", piece, item.seq), len(piece),
                               last=i == len(bounds) - 2)
    return out, skipped


# CPU-bound and deterministic: on a loaded machine 150 examples can take minutes, so the
# timeout is a hang guard with room for that, not a speed check.
@pytest.mark.timeout(300)
@settings(max_examples=150, deadline=None)
@given(data=st.data(), length=st.integers(0, 120), chunk_size=st.integers(1, 17),
       devices=st.integers(1, 3), epochs=st.integers(1, 3), ordered=st.booleans(),
       shuffle=st.booleans())
def test_every_sample_exactly_once_per_epoch(data, length, chunk_size, devices, epochs, ordered,
                                             shuffle):
    per_epoch: list[list[int]] = [[] for _ in range(epochs)]
    skipped_all: list[int] = []
    for device in range(devices):
        out, skipped = run_device(data, length, chunk_size, device, devices, epochs, ordered,
                                  shuffle)
        skipped_all.extend(skipped)
        assert out and out[-1] is END and END not in out[:-1]
        markers = [m for m in out if isinstance(m, EpochEnd)]
        items_per_epoch = -(-length // chunk_size)
        has_items = device < items_per_epoch
        assert [m.epoch for m in markers] == (list(range(epochs - 1)) if has_items else [])
        epoch, seqs = 0, []
        for entry in out:
            if isinstance(entry, EpochEnd):
                epoch += 1
            elif entry is not END:
                _, ids, seq = entry
                per_epoch[epoch].extend(ids.tolist())
                seqs.append(seq)
        if ordered:
            assert seqs == sorted(seqs), "ordered: pieces leave in item order"
    skipped_set = set(skipped_all) if epochs == 1 else set()
    for got in per_epoch:
        assert len(got) == len(set(got)), "no sample twice in an epoch"
        assert not skipped_set & set(got), "a skipped sample never arrives"
    total_delivered = sum(len(got) for got in per_epoch)
    assert total_delivered + len(skipped_all) == epochs * length, "nothing lost"
    assert sorted(sum(per_epoch, []) + skipped_all) == sorted(list(range(length)) * epochs)


def test_shuffled_epochs_differ_and_repeat_across_runs():
    def order(epoch_count):
        out: list = []
        d = Dispatcher(50, 8, EpochSpec(count=epoch_count, chunk_size=50, shuffle=True, seed=9),
                       0, 1, window=2)
        d.bind(lambda item: out.append(item) or True)
        while not d.done:
            item = d.try_take()
            d.deliver(item, item.indices.copy(), len(item.indices), last=True)
        return [x.tolist() for x in out if isinstance(x, np.ndarray)]

    first, again = order(2), order(2)
    assert first == again and first[0] != first[1]
    assert sorted(first[0]) == sorted(first[1]) == list(range(50))

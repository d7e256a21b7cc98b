"""The re-chunking logic: exact batches, leftovers carried, nothing lost or duplicated."""

from __future__ import annotations

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from inputkit.pipeline.batcher import Rechunker


def chunk(start: int, n: int) -> dict[str, np.ndarray]:
    ids = np.arange(start, start + n, dtype=np.int64)
    return {"id": ids, "x": np.stack([ids, ids], axis=1).astype(np.float32)}


def feed(sizes: list[int], batch_size: int, drop_last: bool = False):
    r = Rechunker(batch_size, drop_last)
    batches, start = [], 0
    for n in sizes:
        batches += r.add(chunk(start, n), n)
        start += n
    last = r.flush()
    if last is not None:
        batches.append(last)
    return r, batches, start


def test_exact_batches_from_uneven_chunks_carry_leftovers():
    _, batches, total = feed([3, 0, 7, 1, 25, 2], batch_size=8)
    assert [b.n for b in batches] == [8, 8, 8, 8, 6]
    ids = np.concatenate([b.fields["id"] for b in batches])
    assert ids.tolist() == list(range(total))
    for b in batches:
        assert b.fields["x"].shape == (b.n, 2)
        assert (b.fields["x"][:, 0] == b.fields["id"]).all()


def test_batch_inside_one_chunk_is_a_view_and_spanning_batch_is_one_copy():
    r = Rechunker(4)
    source = chunk(0, 10)
    out = r.add(source, 10)
    assert [b.copied for b in out] == [False, False]
    assert np.shares_memory(out[0].fields["x"], source["x"])
    out = r.add(chunk(10, 3), 3)  # 2 left over + 3 new: spans two chunks
    assert len(out) == 1 and out[0].copied
    assert out[0].fields["id"].tolist() == [8, 9, 10, 11]
    assert not np.shares_memory(out[0].fields["x"], source["x"])


def test_drop_last_drops_only_the_final_partial_batch_and_counts_it():
    r, batches, _ = feed([5, 5, 3], batch_size=4, drop_last=True)
    assert [b.n for b in batches] == [4, 4, 4]
    assert r.dropped == 1


def test_flush_with_nothing_pending_returns_none():
    r, batches, _ = feed([4, 4], batch_size=4)
    assert [b.n for b in batches] == [4, 4]
    assert r.flush() is None


def test_rejects_non_positive_batch_size():
    with pytest.raises(ValueError, match="batch_size must be >= 1, got 0"):
        Rechunker(0)


@settings(max_examples=200, deadline=None)
@given(sizes=st.lists(st.integers(0, 40), max_size=30), batch_size=st.integers(1, 17),
       drop_last=st.booleans())
def test_every_sample_exactly_once_in_order(sizes, batch_size, drop_last):
    r, batches, total = feed(sizes, batch_size, drop_last)
    ids = np.concatenate([b.fields["id"] for b in batches]) if batches else np.array([], int)
    kept = total - r.dropped
    assert ids.tolist() == list(range(kept))
    assert all(b.n == batch_size for b in batches[:-1])
    if batches:
        assert 1 <= batches[-1].n <= batch_size
        assert not drop_last or batches[-1].n == batch_size
    assert r.dropped == (total % batch_size if drop_last else 0)

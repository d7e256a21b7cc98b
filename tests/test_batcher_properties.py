"""Property-based tests of the Rechunker: exact batches, order, alignment, views vs copies.

``test_batcher.py`` covers the examples and the basic "every sample once, in order" law;
here random chunk sequences (empty ones, ones spanning many batches, borrowed ones, a
``copy_borrowed`` that answers differently on every call) check everything a batch
promises: sizes, contents, field alignment, dtypes, ``pending``, when it may be a view of
its chunk and when it must be a copy, and that nothing handed out changes afterwards.
"""

from __future__ import annotations

from collections import defaultdict
from dataclasses import dataclass

import numpy as np
from hypothesis import given, settings
from hypothesis import strategies as st
from hypothesis.stateful import RuleBasedStateMachine, initialize, invariant, rule

from inputkit.pipeline.batcher import Batch, Rechunker

# ---------------------------------------------------------------------------------------------
# chunks whose every field encodes the sample id, so that alignment can be read back

WIDTH = 3  # columns of the 2-D float field


def make_chunk(ids: np.ndarray, strided: bool) -> dict[str, np.ndarray]:
    """``id`` (int64), ``x`` (float32, n x WIDTH) and ``img`` (uint8, n x 2 x 2) for ``ids``.

    With ``strided`` the float field is a non-contiguous view of a wider array, as a
    column-selected source would give.
    """
    ids = np.asarray(ids, dtype=np.int64)
    cols = ids[:, None] * WIDTH + np.arange(WIDTH)
    if strided:
        wide = np.zeros((len(ids), 2 * WIDTH), dtype=np.float32)
        wide[:, ::2] = cols
        x = wide[:, ::2]
    else:
        x = cols.astype(np.float32)
    img = np.broadcast_to((ids % 251).astype(np.uint8)[:, None, None], (len(ids), 2, 2)).copy()
    return {"id": ids, "x": x, "img": img}


FIELD_SPECS = {"id": (np.dtype(np.int64), ()), "x": (np.dtype(np.float32), (WIDTH,)),
               "img": (np.dtype(np.uint8), (2, 2))}


def check_aligned(fields: dict[str, np.ndarray], n: int) -> None:
    """Every field has ``n`` rows of the right dtype and shape, and encodes the same ids."""
    assert set(fields) == set(FIELD_SPECS)
    for name, (dtype, shape) in FIELD_SPECS.items():
        assert fields[name].dtype == dtype, name
        assert fields[name].shape == (n, *shape), name
    ids = fields["id"]
    np.testing.assert_array_equal(fields["x"], (ids[:, None] * WIDTH + np.arange(WIDTH)).astype(np.float32))
    np.testing.assert_array_equal(fields["img"], np.broadcast_to((ids % 251).astype(np.uint8)[:, None, None],
                                                                 (n, 2, 2)))


def snapshot(batch: Batch) -> dict[str, np.ndarray]:
    return {name: arr.copy() for name, arr in batch.fields.items()}


@dataclass
class Source:
    fields: dict[str, np.ndarray]
    start: int  # offset of its first sample in the whole input
    n: int
    borrowed: bool


# ---------------------------------------------------------------------------------------------
# the main property


@st.composite
def scenarios(draw):
    batch_size = draw(st.integers(1, 64))
    # Small chunks, empty ones, and ones several batches long.
    size = st.one_of(st.integers(0, 5), st.integers(0, batch_size + 2), st.integers(0, 4 * batch_size + 3))
    chunks = draw(st.lists(st.tuples(size, st.booleans(), st.booleans()), max_size=16))
    return batch_size, draw(st.booleans()), chunks


@settings(max_examples=200, deadline=None)
@given(scenario=scenarios(), seed=st.integers(0, 2**32 - 1), data=st.data())
def test_rechunker_properties(scenario, seed, data):
    batch_size, drop_last, chunks = scenario
    total = sum(n for n, _, _ in chunks)
    # Unique ids in a random order: the output order can only come from the input order.
    all_ids = np.random.default_rng(seed).permutation(total).astype(np.int64) + 1_000

    state = {"added": 0}
    asked: dict[int, list[bool]] = defaultdict(list)  # batch start offset -> answers given

    def copy_borrowed() -> bool:
        answer = data.draw(st.booleans(), label="copy_borrowed()")
        # Asked right before a batch is taken: pending counts from that batch's first sample.
        asked[state["added"] - r.pending].append(answer)
        return answer

    r = Rechunker(batch_size, drop_last, copy_borrowed=copy_borrowed)
    sources: list[Source] = []
    received: list[tuple[Batch, int, dict[str, np.ndarray]]] = []  # batch, start offset, snapshot
    emitted = 0

    def receive(batch: Batch) -> None:
        nonlocal emitted
        received.append((batch, emitted, snapshot(batch)))
        emitted += batch.n

    for n, borrowed, strided in chunks:
        added = state["added"]
        fields = make_chunk(all_ids[added:added + n], strided)
        sources.append(Source(fields, added, n, borrowed))
        state["added"] = added + n
        out = r.add(fields, n, borrowed=borrowed)
        for batch in out:
            assert batch.n == batch_size
            receive(batch)
        assert r.pending == state["added"] - emitted
        assert 0 <= r.pending < batch_size
    assert state["added"] == total

    before_flush = r.pending
    last = r.flush()
    if last is None:
        assert drop_last or before_flush == 0
    else:
        assert not drop_last
        assert 1 <= last.n <= batch_size - 1
        assert last.n == before_flush
        receive(last)
    assert r.pending == 0
    assert r.flush() is None

    # Handed out earlier, unchanged by everything the Rechunker did since.
    for i, (batch, _, snap) in enumerate(received):
        for name, arr in snap.items():
            np.testing.assert_array_equal(batch.fields[name], arr, err_msg=f"batch {i}: {name} changed")

    # Nothing lost, duplicated or reordered; with drop_last only the tail is missing.
    kept = total - r.dropped
    assert r.dropped == (total % batch_size if drop_last else 0)
    assert emitted == kept
    got = np.concatenate([b.fields["id"] for b, _, _ in received]) if received else np.array([], np.int64)
    np.testing.assert_array_equal(got, all_ids[:kept])

    for batch, start, _ in received:
        check_aligned(batch.fields, batch.n)
        assert batch.nbytes == sum(arr.nbytes for arr in batch.fields.values())
        spanned = [s for s in sources if s.n and s.start < start + batch.n and start < s.start + s.n]
        inside = spanned[0] if len(spanned) == 1 else None
        answers = asked.get(start, [])
        if not batch.copied:
            # A view is only possible inside one chunk, and it must really be a view of it.
            assert inside is not None, "copied=False for a batch spanning chunks"
            for name in FIELD_SPECS:
                assert np.shares_memory(batch.fields[name], inside.fields[name]), name
            if inside.borrowed:
                # Lending a borrowed view needs copy_borrowed() to have said no, just now.
                assert answers and not any(answers), f"borrowed view at {start} after answers {answers}"
        else:
            for s in spanned:
                for name in FIELD_SPECS:
                    assert not np.may_share_memory(batch.fields[name], s.fields[name]), name
            # No needless copies: inside one chunk a copy is only for a borrowed chunk
            # whose copy_borrowed() said yes (or was never asked).
            if inside is not None:
                assert inside.borrowed, "a batch inside one owned chunk was copied"
                assert not answers or any(answers), f"copied at {start} though copy_borrowed() said {answers}"

    # No two batches share memory: mark each with its index and read every mark back.
    for i, (batch, _, _) in enumerate(received):
        for arr in batch.fields.values():
            arr[...] = i
    for i, (batch, _, _) in enumerate(received):
        assert (batch.fields["id"] == i).all() and (batch.fields["x"] == i).all(), f"batch {i} aliased"


@settings(max_examples=50, deadline=None)
@given(batch_size=st.integers(1, 16), n=st.integers(1, 80), borrowed=st.booleans())
def test_one_chunk_gives_views_of_consecutive_slices(batch_size, n, borrowed):
    """A chunk of whole batches never lent out yields plain slices of it, in order."""
    fields = make_chunk(np.arange(n), strided=False)
    r = Rechunker(batch_size, copy_borrowed=lambda: False)
    out = r.add(fields, n, borrowed=borrowed)
    assert len(out) == n // batch_size
    for i, batch in enumerate(out):
        assert not batch.copied
        for name, arr in fields.items():
            view = batch.fields[name]
            # A chunk of exactly one batch is passed as is (W1's shape: no slicing at all).
            assert view.base is not None or (view is arr and n == batch_size and not borrowed)
            assert view.__array_interface__["data"][0] == arr[i * batch_size:].__array_interface__["data"][0]
    assert r.pending == n % batch_size


# ---------------------------------------------------------------------------------------------
# a stateful model: the Rechunker behaves like a FIFO list of pending ids


class RechunkerMachine(RuleBasedStateMachine):
    """Adds, copy-policy changes and flushes in any order against a list-of-ids model."""

    @initialize(batch_size=st.integers(1, 12), drop_last=st.booleans())
    def start(self, batch_size, drop_last):
        self.batch_size = batch_size
        self.drop_last = drop_last
        self.answer = True
        self.r = Rechunker(batch_size, drop_last, copy_borrowed=lambda: self.answer)
        self.model: list[int] = []  # ids waiting, in order
        self.next_id = 0
        self.dropped = 0
        self.handed: list[tuple[Batch, dict[str, np.ndarray]]] = []
        self.sources: list[tuple[dict[str, np.ndarray], bool]] = []

    def _check_batch(self, batch: Batch, n: int) -> None:
        assert batch.n == n
        check_aligned(batch.fields, n)
        assert batch.fields["id"].tolist() == self.model[:n]
        del self.model[:n]
        if not batch.copied:
            owners = [(f, b) for f, b in self.sources if np.shares_memory(batch.fields["id"], f["id"])]
            assert len(owners) == 1
            assert not (owners[0][1] and self.answer), "borrowed view handed out though copy was asked"
        self.handed.append((batch, snapshot(batch)))

    @rule(answer=st.booleans())
    def set_copy_borrowed(self, answer):
        self.answer = answer

    @rule(n=st.integers(0, 30), borrowed=st.booleans(), strided=st.booleans())
    def add(self, n, borrowed, strided):
        fields = make_chunk(np.arange(self.next_id, self.next_id + n), strided)
        self.next_id += n
        self.sources.append((fields, borrowed))
        self.model.extend(range(self.next_id - n, self.next_id))
        expected = len(self.model) // self.batch_size
        out = self.r.add(fields, n, borrowed=borrowed)
        assert len(out) == expected
        for batch in out:
            self._check_batch(batch, self.batch_size)

    @rule()
    def flush(self):
        left = len(self.model)
        last = self.r.flush()
        if self.drop_last or left == 0:
            assert last is None
            self.dropped += left
            self.model.clear()
        else:
            assert last is not None
            self._check_batch(last, left)
        assert not self.model

    @invariant()
    def pending_matches_model(self):
        if hasattr(self, "r"):
            assert self.r.pending == len(self.model) < self.batch_size
            assert self.r.dropped == self.dropped

    def teardown(self):
        if hasattr(self, "r"):
            self.flush()
            for batch, snap in self.handed:  # nothing handed out changed since
                for name, arr in snap.items():
                    np.testing.assert_array_equal(batch.fields[name], arr)
            handed = sum(b.n for b, _ in self.handed)
            assert handed + self.dropped == self.next_id
            ids = [i for b, _ in self.handed for i in b.fields["id"].tolist()]
            assert ids == sorted(set(ids))  # in order, none twice (drop_last leaves gaps)
            if not self.drop_last:
                assert ids == list(range(self.next_id))


TestRechunkerMachine = RechunkerMachine.TestCase
TestRechunkerMachine.settings = settings(max_examples=100, stateful_step_count=25, deadline=None)

"""Inline and thread workers given the same input deliver the same stream.

Inline's batches come from the same Batcher.pull as the batcher thread's (the chunk
stream of inputkit/pipeline/chunk_stream.py), so epoch ends, the last partial batch, resume
state and failures must match thread workers' exactly, with ordered epochs.
"""

from __future__ import annotations

import pytest
from conftest import make_cfg

from inputkit import Runner

SYN = "inputkit.sources.synthetic.SyntheticSource"
INDEXED = {"_target_": SYN, "fields": {"x": {"shape": [2]}}, "length": 1000, "id_field": "id"}
KINDS = ({"kind": "inline"}, {"kind": "thread", "count": 3})
ORDERED = {"count": 3, "shuffle": True, "seed": 5, "chunk_size": 40, "ordered": True}


def epochs(runner: Runner, count: int) -> list[list[list[int]]]:
    """Each epoch's batches (their ids), one pass of the stream per epoch."""
    stream = runner.device(0)
    return [[batch["id"].tolist() for batch in stream] for _ in range(count)]


@pytest.mark.parametrize("drop_last", [False, True])
def test_epoch_ends_and_last_batches_match_thread_workers(drop_last):
    """The flush at each epoch's end is one piece of code: same batches, same remainders."""
    def run(workers):
        cfg = make_cfg(INDEXED, batch_size=64, drop_last=drop_last, workers=workers,
                       epoch=ORDERED)
        with Runner(cfg) as runner:
            got = epochs(runner, 3)
            with pytest.raises(StopIteration):  # three epochs, then the end
                next(runner.device(0))
            dropped = runner.stats().coordinators[0].dropped_samples
        return got, dropped

    inline, threads = run(KINDS[0]), run(KINDS[1])
    assert inline == threads
    got, dropped = inline
    sizes = [len(batch) for batch in got[0]]
    assert sizes == [64] * 15 + ([] if drop_last else [40])
    assert dropped == (3 * 40 if drop_last else 0)
    assert len({tuple(i for b in epoch for i in b) for epoch in got}) == 3  # own order each


def test_resume_state_matches_thread_workers_and_resumes_the_rest():
    """The state after the same batches is the same, and either kind resumes from either."""
    def saved(workers):
        cfg = make_cfg(INDEXED, batch_size=30, workers=workers, epoch=ORDERED)
        with Runner(cfg) as runner:
            stream = runner.device(0)
            first = [b["id"].tolist() for b in stream]  # epoch 0, whole
            taken = [next(stream)["id"].tolist() for _ in range(9)]  # part of epoch 1
            return first, taken, runner.state_dict()

    inline, threads = saved(KINDS[0]), saved(KINDS[1])
    assert inline[:2] == threads[:2]
    assert inline[2] == threads[2]
    assert inline[2]["inputs"]["main"]["epoch"] == 1
    assert inline[2]["inputs"]["main"]["samples"] == {1: 270}

    def rest(workers, state):
        runner = Runner(make_cfg(INDEXED, batch_size=30, workers=workers, epoch=ORDERED))
        runner.load_state_dict(state)
        with runner:
            return [i for b in runner.device(0) for i in b["id"].tolist()]

    state = inline[2]
    after_inline, after_threads = rest(KINDS[0], state), rest(KINDS[1], state)
    assert after_inline == after_threads
    taken = [i for b in inline[1] for i in b]
    assert sorted(taken + after_inline) == list(range(1000))


def test_a_failure_reaches_the_consumer_as_from_thread_workers():
    """The original exception, naming the worker and source. Inline delivers every chunk
    fetched before the failed fetch; threads stop the runner at once, so the consumer gets
    a prefix of those batches (how many depends on timing), never other ones."""
    def run(workers):
        cfg = make_cfg({"_target_": "fakes.Raising", "after": 4}, batch_size=6, workers=workers)
        with Runner(cfg) as runner:
            stream = runner.device(0)
            got = []
            with pytest.raises(KeyError, match="record 4 is corrupt") as raised:
                while True:
                    got.append(len(next(stream)["x"]))
        notes = "\n".join(getattr(raised.value, "__notes__", []))
        return got, "worker 0 of input 'main'" in notes and "fakes.Raising" in notes

    inline, threads = run(KINDS[0]), run({"kind": "thread", "count": 1})
    assert inline == ([6, 6], True)
    assert threads[1] and threads[0] == inline[0][:len(threads[0])]


def test_skipped_samples_match_thread_workers():
    """Under on_error=skip both kinds lose exactly the bad samples, and count them alike."""
    def run(workers):
        cfg = make_cfg({"_target_": "faulty.Indexed", "length": 300, "bad": [7, 150]},
                       batch_size=20, workers=workers, failures={"on_error": "skip"},
                       epoch={"ordered": True})
        with Runner(cfg) as runner:
            got = [i for b in runner.device(0) for i in b["id"].tolist()]
            stats = runner.stats().coordinators[0].workers
        return got, stats.skipped_samples, sorted(stats.skipped_indices)

    inline = run(KINDS[0])
    assert inline == run(KINDS[1])
    assert inline[0] == [i for i in range(300) if i not in (7, 150)]
    assert inline[1:] == (2, [7, 150])

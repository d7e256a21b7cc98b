"""The one worker step (workers/step.py) and its typed outcomes (workers/outcome.py).

The step is driven directly with real sources (retry, per-sample skip, processors, the
index field); then threads, processes and Ray run the same input and must come to the
same outcomes: the same samples, the same skips, the same retries.
"""

from __future__ import annotations

import os
import pickle
import threading
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from conftest import alive, consume_within, make_cfg, ray_processes, wait_until

from inputkit import Runner
from inputkit.pipeline.chunk import ChunkSchema
from inputkit.pipeline.dispatcher import INDEX_FIELD
from inputkit.pipeline.failures import FailurePolicy
from inputkit.processors import ProcessorChain
from inputkit.sources.loader import build_source
from inputkit.workers.outcome import (
    DONE,
    Empty,
    Error,
    FetchSkipped,
    Got,
    SamplesSkipped,
)
from inputkit.workers.step import WorkerStep

TESTS = str(Path(__file__).parent)
CAST = {"_target_": "inputkit.processors.Cast", "field": "x", "dtype": "float64"}


def make_step(source: dict[str, Any], policy: FailurePolicy = FailurePolicy(),
              processors: list[dict[str, Any]] | None = None) -> WorkerStep:
    bound = build_source(source)
    chain = ProcessorChain.from_config(processors) if processors else None
    return WorkerStep(bound, worker_id=0, num_workers=1, hint=8, policy=policy,
                      where="worker 0 (test)", stop=threading.Event(),
                      schema=ChunkSchema(bound.name), chain=chain,
                      out_schema=ChunkSchema(bound.name))


def test_a_read_carries_its_index_field_and_seq():
    step = make_step({"_target_": "faulty.Indexed", "length": 50})
    got = step.read(7, 0, np.array([5, 6, 9]))
    assert type(got) is Got
    assert got.seq == 7 and got.skipped is None and got.retries == ()
    assert got.chunk.fields[INDEX_FIELD].tolist() == [5, 6, 9]
    assert got.chunk.fields["id"].tolist() == [5, 6, 9]
    assert got.chunk.n == 3 and got.wall >= 0.0


def test_a_read_that_fails_then_succeeds_is_retried_and_says_so():
    policy = FailurePolicy(on_error="retry", retries=3, retry_backoff=0.001)
    step = make_step({"_target_": "faulty.Indexed", "length": 50, "flaky": 2}, policy)
    got = step.read(0, 0, np.arange(10, 20))
    assert type(got) is Got
    assert len(got.retries) == 2
    assert got.retries[0].startswith("ConnectionError: attempt 1 at samples from 10")
    assert got.chunk.fields[INDEX_FIELD].tolist() == list(range(10, 20))


def test_a_fetch_that_fails_then_succeeds_is_retried_and_a_skip_is_named():
    retry = make_step({"_target_": "faulty.FlakyFetch", "every": 2},
                      FailurePolicy(on_error="retry", retries=2, retry_backoff=0.001))
    first, second = retry.fetch(), retry.fetch()
    assert type(first) is Got and first.retries == ()
    assert type(second) is Got and second.retries == ("OSError: read 2 failed: connection reset",)
    skip = make_step({"_target_": "faulty.FlakyFetch", "every": 2}, FailurePolicy(on_error="skip"))
    assert type(skip.fetch()) is Got
    skipped = skip.fetch()
    assert type(skipped) is FetchSkipped
    assert skipped.why == "OSError: read 2 failed: connection reset"


def test_a_bad_sample_is_skipped_with_its_id_and_the_rest_delivered():
    step = make_step({"_target_": "faulty.BadFiles", "length": 50, "bad": [12, 13]},
                     FailurePolicy(on_error="skip"))
    got = step.read(1, 0, np.arange(10, 20))
    assert type(got) is Got
    assert got.chunk.fields[INDEX_FIELD].tolist() == [10, 11, *range(14, 20)]
    assert got.chunk.fields["id"].tolist() == [10, 11, *range(14, 20)]
    assert got.skipped is not None and got.skipped.seq == 1
    assert [i for i, _ in got.skipped.bad] == [12, 13]
    assert "/data/train/00012.jpg" in got.skipped.bad[0][1]
    assert got.skipped.ok == [True, True, False, False, *[True] * 6]
    assert not got.skipped.whole_item
    whole = step.read(2, 0, np.array([12, 13]))
    assert type(whole) is SamplesSkipped and whole.whole_item and whole.seq == 2


def test_processors_change_the_chunk_and_their_output_is_checked():
    step = make_step({"_target_": "faulty.Indexed", "length": 50}, processors=[CAST])
    got = step.read(0, 0, np.arange(4))
    assert type(got) is Got
    assert got.chunk.fields["x"].dtype == np.float64
    assert got.chunk.fields[INDEX_FIELD].tolist() == [0, 1, 2, 3]


def test_an_empty_fetch_and_the_end_are_outcomes_and_errors_pass_out():
    empty = make_step({"_target_": "fakes:fetch_empty"})
    assert type(empty.fetch()) is Empty
    short = make_step({"_target_": "faulty.ShortReads", "length": 50})
    with pytest.raises(Exception, match="returned 2 samples for 3 indices") as raised:
        short.read(0, 0, np.arange(3))
    report = pickle.loads(pickle.dumps(Error.of(raised.value)))
    failure = report.failure("worker 0")
    assert type(failure.exc) is type(raised.value)
    assert "returned 2 samples for 3 indices" in failure.traceback_text
    assert pickle.loads(pickle.dumps(DONE)) == DONE


# the same input through every kind ------------------------------------------------------------

LENGTH, CHUNK = 120, 10
BAD = [3, 41, 42, 77]


def run_kind(workers: dict[str, Any], seconds: float = 60.0) -> tuple[list[int], Any]:
    source = {"_target_": "faulty.BadFiles", "length": LENGTH, "bad": BAD}
    cfg = make_cfg(source, batch_size=16, workers=workers, memory={"probe": False},
                   failures={"on_error": "skip"}, processors=[CAST],
                   epoch={"chunk_size": CHUNK})
    runner = Runner(cfg).start()
    ids: list[int] = []

    def loop() -> None:
        for batch in runner.device(0):
            assert str(batch["x"].dtype).endswith("float64"), "the processors ran"
            ids.extend(batch["id"].tolist())

    raised = consume_within(runner, loop, seconds)
    if raised is not None:
        raise raised
    return sorted(ids), runner.stats().coordinators[0].workers


def outcome_of(workers: dict[str, Any]) -> tuple[Any, ...]:
    ids, stats = run_kind(workers)
    return (ids, sorted(stats.skipped_indices), stats.skipped_samples, stats.samples,
            stats.chunks + stats.skipped_chunks)


def expected() -> tuple[Any, ...]:
    good = [i for i in range(LENGTH) if i not in BAD]
    return (good, BAD, len(BAD), len(good), LENGTH // CHUNK)


@pytest.mark.parametrize("workers", [{"count": 2}, {"kind": "inline"},
                                     {"kind": "process", "count": 2,
                                      "start_method": "forkserver"}],
                         ids=["threads", "inline", "processes"])
def test_every_kind_comes_to_the_same_outcomes(workers):
    assert outcome_of(workers) == expected()


@pytest.mark.timeout(180)
def test_ray_comes_to_the_same_outcomes_as_threads():
    """A local Ray whose workers import the tests' sources (as tests/test_ray.py starts it)."""
    ray = pytest.importorskip("ray")
    if ray.is_initialized():
        ray.shutdown()
    old = os.environ.get("PYTHONPATH")
    os.environ["PYTHONPATH"] = TESTS + (os.pathsep + old if old else "")
    try:
        ray.init(address="local", num_cpus=2, include_dashboard=False, log_to_driver=False,
                 configure_logging=False)
    finally:
        if old is None:
            os.environ.pop("PYTHONPATH", None)
        else:
            os.environ["PYTHONPATH"] = old
    try:
        got = outcome_of({"kind": "ray", "count": 2, "ray": {"cpus_per_actor": 0.5}})
    finally:
        started = ray_processes()
        ray.shutdown()
        wait_until(lambda: not alive(list(started)), "Ray's processes to end after shutdown", 30)
    assert got == expected()

"""``failures.on_error=skip`` has a ceiling, and its repeated messages are counted, not flooded.

A source that always fails used to be skipped forever: bench wrote a warning line per
fetch (hundreds of thousands in seconds), delivered nothing and exited 0, and an embedded
loop waited forever. Now the first message of a kind is logged in full and repeats are
summarised, and too many skips in a row (``failures.max_consecutive_skips``) or too large a
share (``failures.max_skip_share``) stop the run with ``SkipLimitExceeded``.
"""

from __future__ import annotations

import logging
import os
import re
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest
from conftest import assert_nothing_leaked, children, consume_within, make_cfg, segments

from inputkit import ConfigError, Runner, SkipLimitExceeded
from inputkit.observe.repeats import RepeatedLog

TESTS = Path(__file__).resolve().parent
THREADS = {"count": 2}
PROCESSES = {"kind": "process", "count": 2, "start_method": "forkserver"}
KINDS = pytest.mark.parametrize("workers", [THREADS, PROCESSES], ids=["threads", "processes"])
ALWAYS_FAILS = {"_target_": "faulty.FlakyFetch", "every": 1}  # every call raises OSError
ALL_BAD = {"_target_": "faulty.Indexed", "length": 1000, "bad": list(range(1000))}


@pytest.fixture(autouse=True)
def no_leaks(caplog):
    """Every test leaves no shared-memory segment and no worker process behind."""
    before_segments, before_children = segments(), children()
    yield
    assert_nothing_leaked(before_segments, before_children, caplog)


def skip_cfg(source: dict[str, Any], workers: dict[str, Any], **failures: Any) -> dict[str, Any]:
    """Batches of 8; an indexable source is read in chunks of 5 samples."""
    epoch = {"epoch": {"chunk_size": 5}} if source["_target_"] == "faulty.Indexed" else {}
    return make_cfg(source, batch_size=8, workers=workers, memory={"probe": False},
                    failures={"on_error": "skip", **failures}, **epoch)


def consume(cfg: dict[str, Any], batches: int | None = None,
            seconds: float = 30.0) -> tuple[int, BaseException | None, Any]:
    """Iterate device 0 in a thread (``batches`` of them, or to the end) within ``seconds``.

    Returns (batches received, the exception raised or None, the pool's stats after close).
    A consumer still waiting at the deadline fails the test instead of hanging it.
    """
    got: list[int] = [0]
    runner = Runner(cfg).start()

    def loop() -> None:
        for _ in runner.device(0):
            got[0] += 1
            if batches is not None and got[0] >= batches:
                return

    raised = consume_within(runner, loop, seconds)
    return got[0], raised, runner.stats().coordinators[0].workers


# the ceiling -----------------------------------------------------------------------------------

@KINDS
@pytest.mark.parametrize("source", [ALWAYS_FAILS, ALL_BAD], ids=["fetch", "indexable"])
def test_an_always_failing_source_stops_the_run_with_skip_limit_exceeded(workers, source):
    got, error, pool = consume(skip_cfg(source, workers))
    assert got == 0
    assert isinstance(error, SkipLimitExceeded), error
    text = str(error)
    # Index-range work counts samples: each bad one is a skipped fetch (test_sample_skip.py).
    unit = "samples" if source is ALL_BAD else "fetches"
    assert re.search(rf"([\d,]+) {unit} in a row were skipped "
                     r"\(failures\.on_error=skip\); the limit is "
                     r"failures\.max_consecutive_skips=100", text), text
    skipped = int(re.search(r"([\d,]+) \w+ in a row", text).group(1).replace(",", ""))  # type: ignore[union-attr]
    assert skipped >= 100
    if source is ALL_BAD:
        assert "the last error: ValueError: sample " in text and " is corrupt" in text
    else:
        assert re.search(r"the last error: OSError: read \d+ failed: connection reset", text), text
    assert "source 'faulty." in text and "input 'main' on device 0 (cpu)" in text
    assert pool.skipped_chunks >= (20 if source is ALL_BAD else 100), "the counts stay in stats"


@KINDS
@pytest.mark.parametrize("source", [
    {"_target_": "faulty.FlakyFetch", "every": 3},
    # chunks of 5: every third one holds a bad sample
    {"_target_": "faulty.Indexed", "length": 3000, "bad": list(range(10, 3000, 15))},
], ids=["fetch", "indexable"])
def test_one_failure_in_three_does_not_trip_the_default_ceiling(workers, source):
    endless = source["_target_"].endswith("FlakyFetch")
    got, error, pool = consume(skip_cfg(source, workers), batches=150 if endless else None)
    assert error is None, error
    if endless:
        assert pool.skipped_chunks >= 30
    else:  # only the bad sample of each chunk is skipped
        assert pool.skipped_chunks == 0 and pool.skipped_samples == 200
        assert got == (3000 - 200) // 8


@KINDS
def test_a_large_share_of_skips_trips_max_skip_share(workers):
    # Two chunks of every three are bad: never 100 samples in a row, but 2/3 of them all.
    bad = [i for i in range(3000) if (i // 5) % 3]
    source = {"_target_": "faulty.Indexed", "length": 3000, "bad": bad}
    got, error, pool = consume(skip_cfg(source, workers))
    assert isinstance(error, SkipLimitExceeded), error
    assert re.search(r"[\d,]+ of [\d,]+ samples \([5-9]\d%\) were skipped \(failures\.on_error="
                     r"skip\); the limit is failures\.max_skip_share=0\.5 \(judged from 100 "
                     r"samples on\)", str(error)), str(error)
    assert "the last error: ValueError: sample" in str(error)


@KINDS
def test_null_limits_skip_without_a_ceiling(workers):
    cfg = skip_cfg(ALL_BAD, workers, max_consecutive_skips=None, max_skip_share=None)
    got, error, pool = consume(cfg)
    assert error is None and got == 0
    assert pool.skipped_chunks == 200 and pool.skipped_samples == 1000


def test_a_lower_limit_is_named_in_the_error():
    got, error, _ = consume(skip_cfg(ALWAYS_FAILS, THREADS, max_consecutive_skips=5))
    assert isinstance(error, SkipLimitExceeded)
    assert "failures.max_consecutive_skips=5" in str(error)


@pytest.mark.parametrize("key,value,message", [
    ("max_consecutive_skips", 0, "failures.max_consecutive_skips: must be at least 1, or null "
                                 "(no limit), got 0"),
    ("max_skip_share", 0, "failures.max_skip_share: must be more than 0 and at most 1, or null "
                          "(no limit), got 0"),
    ("max_skip_share", 1.5, "failures.max_skip_share: must be more than 0 and at most 1"),
])
def test_bad_skip_limits_name_the_key(key, value, message):
    with pytest.raises(ConfigError, match=re.escape(message)):
        Runner(skip_cfg(ALL_BAD, THREADS, **{key: value}))


# the command line ------------------------------------------------------------------------------

@pytest.mark.timeout(150)  # a fresh interpreter's bench start-up takes 5 s, 30 s on a loaded machine
@pytest.mark.parametrize("kind", ["thread", "process"])
def test_bench_of_an_always_failing_source_exits_1_with_a_short_output(tmp_path, kind):
    env = {**os.environ, "PYTHONPATH": str(TESTS), "COLUMNS": "200"}
    env.pop("HYDRA_FULL_ERROR", None)
    out = subprocess.run(
        [sys.executable, "-m", "inputkit", "bench", "~source", "+source._target_=faulty.FlakyFetch",
         "+source.every=1", "devices=cpu", "memory.probe=false", "failures.on_error=skip",
         f"workers.kind={kind}", "workers.count=2", "bench.seconds=10"],
        cwd=tmp_path, env=env, capture_output=True, text=True, timeout=120, stdin=subprocess.DEVNULL)
    lines = (out.stdout + out.stderr).splitlines()
    shown = f"exit {out.returncode}, {len(lines)} lines; stderr:\n{out.stderr[-2000:]}"
    assert out.returncode == 1, shown
    assert len(lines) < 200, shown
    assert out.stderr.startswith("error: "), shown
    first = out.stderr.splitlines()[0]
    assert re.search(r"\d+ fetches in a row were skipped \(failures\.on_error=skip\); the limit is "
                     r"failures\.max_consecutive_skips=100", first), shown
    assert re.search(r"the last error: OSError: read \d+ failed: connection reset", first), shown


# repeated messages ------------------------------------------------------------------------------

@KINDS
def test_repeated_skip_warnings_are_counted_not_logged_one_by_one(workers, caplog):
    cfg = skip_cfg({"_target_": "faulty.FlakyFetch", "every": 3}, workers)
    with caplog.at_level(logging.INFO, logger="inputkit"):
        got, error, pool = consume(cfg, batches=150)
    assert error is None, error
    records = [r.getMessage() for r in caplog.records if "skipped a chunk" in r.getMessage()]
    full = [m for m in records if "repeated" not in m]
    summaries = [m for m in records if "repeated" in m]
    assert len(full) == 1 and "OSError: read 3 failed: connection reset" in full[0], records[:5]
    assert pool.skipped_chunks >= 30
    assert summaries, "the repeats are summarised when the pool stops"
    repeated = sum(int(re.search(r"repeated ([\d,]+) time", m).group(1).replace(",", ""))
                   for m in summaries)  # type: ignore[union-attr]
    assert 1 + repeated == pool.skipped_chunks, (records, pool.skipped_chunks)


FIRST = " (repeats are counted, with a summary every 10 s)"


class FakeClock:
    def __init__(self) -> None:
        self.now = 100.0

    def __call__(self) -> float:
        return self.now


def test_repeated_log_logs_the_first_in_full_then_counts_and_summarises(caplog):
    clock = FakeClock()
    logger = logging.getLogger("inputkit.test_repeats")
    repeats = RepeatedLog(logger, "input 'main'", period=10.0, clock=clock)
    with caplog.at_level(logging.INFO, logger="inputkit.test_repeats"):
        for i in range(5):
            repeats.log(logging.WARNING, "skipped a chunk", "OSError", f"worker 1: OSError: read {i}")
            clock.now += 1.0
        assert [r.getMessage() for r in caplog.records] == [f"worker 1: OSError: read 0{FIRST}"]
        repeats.log(logging.WARNING, "skipped a chunk", "KeyError", "worker 0: KeyError: 'a'")
        clock.now += 6.0  # 11 s after the first OSError
        repeats.log(logging.WARNING, "skipped a chunk", "OSError", "worker 0: OSError: read 5")
        repeats.log(logging.WARNING, "skipped a chunk", "OSError", "worker 0: OSError: read 6")
        repeats.flush()
        repeats.flush()  # nothing new: no second summary
    messages = [r.getMessage() for r in caplog.records]
    assert messages == [
        f"worker 1: OSError: read 0{FIRST}",
        f"worker 0: KeyError: 'a'{FIRST}",
        "input 'main': skipped a chunk: OSError repeated 5 times in the last 11.0 s "
        "(counted in stats()); the latest: worker 0: OSError: read 5",
        "input 'main': skipped a chunk: OSError repeated 1 time in the last 0.0 s "
        "(counted in stats()); the latest: worker 0: OSError: read 6",
    ]
    assert all(r.levelno == logging.WARNING for r in caplog.records)


def test_repeated_log_keeps_each_level_and_key_apart(caplog):
    clock = FakeClock()
    logger = logging.getLogger("inputkit.test_repeats")
    repeats = RepeatedLog(logger, "pool", period=10.0, clock=clock)
    with caplog.at_level(logging.INFO, logger="inputkit.test_repeats"):
        for _ in range(3):
            repeats.log(logging.INFO, "retried a fetch", "OSError", "retry")
            repeats.log(logging.WARNING, "skipped a chunk", "OSError", "skip")
        repeats.flush()
    got = [(r.levelno, r.getMessage()) for r in caplog.records]
    assert got[:2] == [(logging.INFO, f"retry{FIRST}"), (logging.WARNING, f"skip{FIRST}")]
    assert sorted(got[2:]) == sorted([
        (logging.INFO, "pool: retried a fetch: OSError repeated 2 times in the last 0.0 s "
                       "(counted in stats()); the latest: retry"),
        (logging.WARNING, "pool: skipped a chunk: OSError repeated 2 times in the last 0.0 s "
                          "(counted in stats()); the latest: skip"),
    ])


def test_retry_info_lines_are_rate_limited_too(caplog):
    # Every read fails once, then succeeds: one retry per chunk, 200 chunks.
    source = {"_target_": "faulty.Indexed", "length": 1000, "flaky": 1}
    cfg = make_cfg(source, batch_size=8, workers=THREADS, memory={"probe": False},
                   failures={"on_error": "retry", "retry_backoff": 0.0}, epoch={"chunk_size": 5})
    with caplog.at_level(logging.INFO, logger="inputkit"):
        got, error, pool = consume(cfg)
    assert error is None and got == 125 and pool.retries == 200
    retries = [r.getMessage() for r in caplog.records if "retr" in r.getMessage()]
    assert len(retries) <= 10, retries[:12]
    assert any("repeated" in m for m in retries), retries

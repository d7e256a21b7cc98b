"""Under ``failures.on_error=skip``, a bad sample costs only itself (issue 13, bad input).

A ``read(indices)`` that fails because one of its samples is bad used to drop the whole
work item (64 images for one corrupt JPEG). Now the item is read again one index at a
time: the good samples arrive once, the bad ones are skipped, counted and reported by
index with their error (which names the file), and delivered + skipped is the epoch.
"""

from __future__ import annotations

import io
import json
import os
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest
from conftest import assert_nothing_leaked, children, consume_within, make_cfg, segments
from rich.console import Console

from inputkit import Runner, SkipLimitExceeded
from inputkit.observe.dashboard import plain_lines, render
from inputkit.observe.metrics import MovingWindow
from inputkit.pipeline.failures import ERROR_CHARS, KEPT_SKIPS, FailurePolicy, FailureTally

TESTS = Path(__file__).resolve().parent
THREADS = {"count": 2}
PROCESSES = {"kind": "process", "count": 2, "start_method": "forkserver"}
KINDS = pytest.mark.parametrize("workers", [THREADS, PROCESSES], ids=["threads", "processes"])
LENGTH, CHUNK, BATCH = 300, 10, 16
# Item 1 (samples 10-19) is bad all through; others lose one or two, at either end or inside.
BAD = [3, *range(10, 20), 25, 29, 150, 151, 299]


@pytest.fixture(autouse=True)
def no_leaks(caplog):
    """Every test leaves no shared-memory segment and no worker process behind."""
    before_segments, before_children = segments(), children()
    yield
    assert_nothing_leaked(before_segments, before_children, caplog)


def bad_files(**extra: Any) -> dict[str, Any]:
    return {"_target_": "faulty.BadFiles", "length": LENGTH, "bad": BAD, **extra}


def skip_cfg(source: dict[str, Any], workers: dict[str, Any], devices: int = 1,
             epoch: dict[str, Any] | None = None, **failures: Any) -> dict[str, Any]:
    return make_cfg(source, batch_size=BATCH, devices=["cpu"] * devices, workers=workers,
                    memory={"probe": False}, failures={"on_error": "skip", **failures},
                    epoch={"chunk_size": CHUNK, **(epoch or {})})


def consume(cfg: dict[str, Any], seconds: float = 45.0) -> tuple[list[list[int]], list[int], Any]:
    """Every device's stream to its end, in a thread that must finish within ``seconds``.

    Returns the ids each device received (in order), its batch sizes, and the stats.
    """
    runner = Runner(cfg).start()
    got: list[list[int]] = [[] for _ in runner.devices]
    sizes: list[int] = []

    def loop() -> None:
        for step in runner.steps():
            for device, batch in enumerate(step):
                if batch is None:
                    continue
                ids = batch["id"].tolist()
                assert batch["x"][:, 0].tolist() == [float(i) for i in ids], "rows aligned"
                got[device].extend(ids)
                sizes.append(len(ids))

    raised = consume_within(runner, loop, seconds)
    if raised is not None:
        raise raised
    return got, sizes, runner.stats()


@KINDS
@pytest.mark.parametrize("devices", [1, 2])
@pytest.mark.parametrize("shuffle", [False, True], ids=["in-order", "shuffled"])
@pytest.mark.parametrize("ordered", [False, True], ids=["unordered", "ordered"])
def test_only_the_bad_samples_are_skipped_and_each_is_reported_once(workers, devices, shuffle,
                                                                    ordered):
    cfg = skip_cfg(bad_files(), workers, devices, epoch={"shuffle": shuffle, "ordered": ordered})
    got, sizes, stats = consume(cfg)
    delivered = [i for ids in got for i in ids]
    good = [i for i in range(LENGTH) if i not in BAD]
    assert sorted(delivered) == good, "every good sample exactly once, no bad one"
    pools = [c.workers for c in stats.coordinators]
    reported = [i for w in pools for i in w.skipped_indices]
    assert sorted(reported) == BAD, "every bad sample reported once, by index"
    assert sum(w.skipped_samples for w in pools) == len(BAD)
    assert len(delivered) + len(reported) == LENGTH
    errors = [e for w in pools for e in w.skipped_errors]
    by_index = dict(zip(reported, errors, strict=True))
    assert by_index[150] == ("SourceError: source 'faulty.BadFiles': /data/train/00150.jpg: "
                             "cannot identify image file (truncated or not an image)")
    # Chunks and batches add up on every device: device d reads items d, d + D, ...
    items = -(-LENGTH // CHUNK)
    for device, (ids, w) in enumerate(zip(got, pools, strict=True)):
        assert w.samples == len(ids)
        assert w.chunks + w.skipped_chunks == len(range(device, items, devices))
        assert stats.coordinators[device].batches == -(-len(ids) // BATCH)
    assert sum(sizes) == len(delivered)
    if not shuffle:
        assert sum(w.skipped_chunks for w in pools) == 1, "item 1 has no good sample"
        if ordered:  # the good samples of each item arrive in the item's order
            for device, ids in enumerate(got):
                mine = [i for i in good if (i // CHUNK) % devices == device]
                assert ids == mine


@KINDS
def test_a_chunk_that_fails_only_as_a_whole_arrives_whole(workers):
    """Reads of several indices fail, reads of one succeed: nothing is skipped."""
    got, _, stats = consume(skip_cfg(bad_files(bad=[], fail_batches=True), workers))
    assert sorted(got[0]) == list(range(LENGTH))
    pool = stats.coordinators[0].workers
    assert pool.skipped_samples == pool.skipped_chunks == 0 and pool.skipped_indices == ()


def test_a_worker_that_dies_while_reading_one_by_one_loses_and_repeats_nothing(tmp_path):
    """The worker is killed inside the one-by-one reads of item 15, before it reported: the
    item goes to the new worker, which reads and reports it again, once."""
    source = bad_files(die_at=152, marker=str(tmp_path / "died"))
    got, _, stats = consume(skip_cfg(source, PROCESSES, on_worker_death="restart"))
    assert (tmp_path / "died").exists(), "the worker did die"
    pool = stats.coordinators[0].workers
    assert pool.restarts == 1
    assert sorted(got[0]) == [i for i in range(LENGTH) if i not in BAD]
    assert sorted(pool.skipped_indices) == BAD and pool.skipped_samples == len(BAD)


@KINDS
def test_a_source_whose_every_sample_fails_trips_the_ceiling_quickly(workers):
    """Endless epochs of nothing but bad samples: the run stops after about
    failures.max_consecutive_skips samples (each bad sample is one skipped fetch), not later."""
    source = {"_target_": "faulty.Indexed", "length": 5000, "bad": list(range(5000))}
    cfg = skip_cfg(source, workers, epoch={"count": None, "chunk_size": 64})
    with pytest.raises(SkipLimitExceeded) as info:
        consume(cfg)
    error = info.value
    assert error.key == "failures.max_consecutive_skips"
    assert "samples in a row were skipped (failures.on_error=skip)" in str(error)
    assert "the last error: ValueError: sample " in str(error)
    # Two items of 64 reach the limit; what the workers had in hand may add a few more.
    assert 100 <= error.skipped_samples < 1000, error.skipped_samples


def test_runs_of_skips_are_exact_inside_an_item():
    """120 bad samples scattered through one item of 256 are not 120 in a row; 60 at the end
    of one item and 60 at the start of the next are."""
    policy = FailurePolicy(on_error="skip", max_consecutive_skips=100, max_skip_share=None)
    tally = FailureTally(policy, "pool", per_sample=True)
    ok = [i % 2 == 1 or i >= 240 for i in range(256)]  # 120 bad, never two in a row
    bad = [(i, f"ValueError: sample {i}") for i in range(256) if not ok[i]]
    assert tally.read_samples(bad, ok) is None
    ends_bad = [i < 196 for i in range(256)]  # its last 60 are bad
    assert tally.read_samples([(i, "E: x") for i in range(196, 256)], ends_bad) is None
    starts_bad = [i >= 60 for i in range(256)]  # the next item's first 60
    limit = tally.read_samples([(i, "E: x") for i in range(256, 316)], starts_bad)
    assert limit is not None and "120 samples in a row were skipped" in str(limit)


def test_the_first_thousand_skipped_samples_are_kept_with_a_short_error():
    tally = FailureTally(FailurePolicy(on_error="skip", max_consecutive_skips=None,
                                       max_skip_share=None), per_sample=True)
    long = "SourceError: /data/" + "x" * 500 + ".jpg: broken\nTraceback: second line"
    for start in range(0, 1200, 100):
        tally.read_samples([(i, long) for i in range(start, start + 100)], [False] * 100)
    snap = tally.snapshot()
    assert snap["skipped_samples"] == 1200 and snap["skipped_chunks"] == 12
    assert snap["skipped_indices"] == tuple(range(KEPT_SKIPS))
    assert {len(e) for e in snap["skipped_errors"]} == {ERROR_CHARS}
    assert snap["skipped_errors"][0].startswith("SourceError: /data/xxx") and \
        snap["skipped_errors"][0].endswith("...") and "\n" not in snap["skipped_errors"][0]


def test_the_dashboard_and_its_plain_lines_show_the_skipped_samples():
    window = MovingWindow(5.0)
    with Runner(skip_cfg(bad_files(), THREADS)) as runner:
        for _ in runner.device(0):
            pass
        shown = window.update(runner.stats())
    console = Console(record=True, width=160, file=io.StringIO())
    console.print(render(shown, []))
    text = console.export_text()
    expected = "16 samples skipped (indices 3, 10, 11, 12, 13, 14, 15, 16, ...)"
    assert "skipped 1 chunk, 16 samples" in text and expected in text, text
    assert f"  skipped main@0:cpu: {expected}" in plain_lines(shown)


def test_bench_prints_the_skipped_samples_and_writes_them_to_summary_json(tmp_path):
    env = {**os.environ, "PYTHONPATH": str(TESTS), "COLUMNS": "200"}
    env.pop("HYDRA_FULL_ERROR", None)
    out = subprocess.run(
        [sys.executable, "-m", "inputkit", "bench", "source._target_=faulty.BadFiles",
         f"+source.length={LENGTH}", f"+source.bad=[{','.join(map(str, BAD))}]",
         "failures.on_error=skip", f"epoch.chunk_size={CHUNK}", f"batch_size={BATCH}",
         "devices=[cpu,cpu]", "workers.count=2", "bench.seconds=null"],
        cwd=tmp_path, env=env, capture_output=True, text=True, timeout=120,
        stdin=subprocess.DEVNULL)
    assert out.returncode == 0, out.stderr
    [path] = list((tmp_path / "outputs").rglob("summary.json"))
    summary = json.loads(path.read_text())
    entries = summary["skipped_samples"]
    assert [e["device_index"] for e in entries] == [0, 1]  # items 1 (all bad) and 15 are device 1's
    assert sum(e["count"] for e in entries) == len(BAD)
    for entry in entries:
        assert [s["index"] for s in entry["samples"]] == sorted(s["index"] for s in entry["samples"])
    samples = {s["index"]: s["error"] for e in entries for s in e["samples"]}
    assert sorted(samples) == BAD
    assert "/data/train/00299.jpg: cannot identify image file" in samples[299]
    coordinators = summary["stats"]["coordinators"]
    assert sum(c["samples"] for c in coordinators) == LENGTH - len(BAD)
    assert sorted(i for c in coordinators for i in c["workers"]["skipped_indices"]) == BAD
    device0 = sorted(i for i in BAD if (i // CHUNK) % 2 == 0)
    shown = ", ".join(map(str, device0))
    assert f"input 'main' on 0:cpu: {len(device0)} samples skipped (indices {shown}; see " \
           "summary.json)" in out.stdout, out.stdout
    device1 = sorted(set(BAD) - set(device0))
    shown = ", ".join(map(str, device1[:8]))
    assert f"input 'main' on 1:cpu: {len(device1)} samples skipped (indices {shown}, ...; see " \
           "summary.json)" in out.stdout, out.stdout
    assert f"input 'main' on 1:cpu: skipped 1 chunk, {len(device1)} samples " \
           "(failures.on_error=skip)" \
        in out.stdout, "the diagnosis counts them"

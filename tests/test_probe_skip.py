"""The memory probe follows ``failures.on_error=skip`` per sample, as the workers do (issue item 6).

A probe chunk that held one bad file used to fail the whole start with "found by the
memory planner's probe", while the pipeline itself skips exactly that file.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest
from conftest import consume_within, make_cfg
from imagefiles import jpeg_bytes, photo

import inputkit
from inputkit import Runner, SourceError
from inputkit.planning.memory import plan_memory

CHUNK = 16


def folder_with_a_bad_file_per_chunk(root: Path, images: int = 64) -> list[Path]:
    """``images`` small JPEGs in one class folder; the 4th of every CHUNK is not an image."""
    folder = root / "class_0"
    folder.mkdir(parents=True)
    good = jpeg_bytes(photo(40, 32, 0))
    bad = []
    for i in range(images):
        path = folder / f"img_{i:03d}.jpg"
        if i % CHUNK == 3:
            path.write_bytes(good[: len(good) // 3])  # truncated: cannot be decoded
            bad.append(path)
        else:
            path.write_bytes(good)
    return bad


def image_cfg(root: Path, **failures: Any) -> dict[str, Any]:
    source = {"_target_": "inputkit.sources.images.ImageFolderSource", "path": str(root),
              "transforms": [{"resize": 16}, {"center_crop": 16}]}
    return make_cfg(source, batch_size=8, workers={"count": 2},
                    epoch={"chunk_size": CHUNK}, failures=failures)


def test_the_probe_skips_a_bad_file_alone_and_the_run_skips_exactly_the_bad_ones(tmp_path):
    """Every probe chunk holds a bad file: the start succeeds, the plan has the sizes, and the
    epoch delivers every good image once."""
    bad = folder_with_a_bad_file_per_chunk(tmp_path)
    cfg = image_cfg(tmp_path, on_error="skip")
    plan = plan_memory(inputkit.load_spec(cfg), devices=("cpu",))
    layout = plan.layouts["main"]
    assert layout.source == "probe"
    assert layout.fields["image"][0] == (3, 16, 16)
    received: list[int] = []
    runner = Runner(cfg).start()  # used to raise SourceError ... found by the memory planner's probe

    def loop() -> None:
        for batch in runner.device(0):
            received.append(int(batch["label"].shape[0]))

    error = consume_within(runner, loop, 45)
    assert error is None, error
    assert sum(received) == 64 - len(bad)
    workers = runner.stats().coordinators[0].workers
    assert workers.skipped_samples == len(bad)
    assert sorted(workers.skipped_indices) == [3, 19, 35, 51]


def test_without_skip_the_probe_still_names_the_bad_file(tmp_path):
    """on_error=raise: the probe's error names the file, as before."""
    folder_with_a_bad_file_per_chunk(tmp_path)
    spec = inputkit.load_spec(image_cfg(tmp_path))
    with pytest.raises(SourceError, match="img_003.jpg"):
        plan_memory(spec, devices=("cpu",))


def test_a_probe_whose_every_sample_is_bad_says_so_under_skip():
    """Nothing to learn sizes from: one error naming the samples tried and their errors."""
    source = {"_target_": "faulty.BadFiles", "length": 100, "bad": list(range(100))}
    spec = inputkit.load_spec(make_cfg(source, batch_size=4, failures={"on_error": "skip"},
                                       epoch={"chunk_size": 4}))
    with pytest.raises(SourceError, match=r"probe read samples 0-31 and every one of those 32 "
                                          r"failed .*sample 0: SourceError: .*00000\.jpg"):
        plan_memory(spec, devices=("cpu",))


def test_a_probe_under_skip_finds_the_first_chunk_with_a_good_sample():
    """The first chunks entirely bad, then one good sample among bad ones: it gives the sizes
    (every chunk tried fails when read whole)."""
    source = {"_target_": "faulty.BadFiles", "length": 100, "dim": 7,
              "bad": [i for i in range(32) if i != 9]}
    spec = inputkit.load_spec(make_cfg(source, batch_size=4, failures={"on_error": "skip"},
                                       epoch={"chunk_size": 4}))
    layout = plan_memory(spec, devices=("cpu",)).layouts["main"]
    assert layout.fields["x"][0] == (7,)

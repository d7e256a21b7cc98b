"""The image sources through the real pipeline: exactly-once, augmentations independent of the
workers, resume, and bad files skipped one by one, with threads and worker processes."""

from __future__ import annotations

import pickle
from pathlib import Path

import numpy as np
import pytest
from conftest import make_cfg
from imagefiles import jpeg_bytes, photo

from inputkit import Runner

LIST = "inputkit.sources.images.ImageListSource"
TRAIN = [{"random_resized_crop": {"size": 32}}, {"horizontal_flip": {"p": 0.5}}]
THREADS = {"count": 3}
PROCESSES = {"kind": "process", "count": 2}


def write_list(root: Path, n: int, bad: dict[int, bytes] | None = None) -> Path:
    """``n`` photo-like JPEGs and a list file labelling image i with i (so a label names its
    sample); ``bad`` replaces some files' bytes."""
    (root / "img").mkdir(parents=True, exist_ok=True)
    rows = []
    for i in range(n):
        data = (bad or {}).get(i)
        if data is None:
            data = jpeg_bytes(photo(60 + (i * 7) % 50, 50 + (i * 11) % 40, i))
        (root / "img" / f"{i:04d}.jpg").write_bytes(data)
        rows.append(f"img/{i:04d}.jpg,{i}")
    (root / "list.csv").write_text("\n".join(rows) + "\n")
    return root / "list.csv"


def source(path: Path, **extra) -> dict:
    return {"_target_": LIST, "path": str(path), "transforms": TRAIN, "seed": 3, **extra}


def by_label(runner: Runner, device: int = 0) -> dict[int, np.ndarray]:
    got: dict[int, np.ndarray] = {}
    for batch in runner.device(device):
        for label, image in zip(batch["label"].tolist(), batch["image"].numpy(), strict=True):
            assert label not in got, f"sample {label} delivered twice"
            got[label] = image.copy()
    return got


@pytest.mark.parametrize("workers", [THREADS, PROCESSES], ids=["threads", "processes"])
def test_every_image_exactly_once_shuffled_over_two_devices(tmp_path, workers):
    path = write_list(tmp_path, 90)
    cfg = make_cfg(source(path), batch_size=8, workers=workers, devices=["cpu", "cpu"],
                   epoch={"shuffle": True, "seed": 1, "count": 1})
    with Runner(cfg) as runner:
        seen = [by_label(runner, d) for d in (0, 1)]
    assert not set(seen[0]) & set(seen[1]), "the devices overlap"
    assert sorted([*seen[0], *seen[1]]) == list(range(90))
    shapes = {img.shape for part in seen for img in part.values()}
    assert shapes == {(3, 32, 32)}


def test_the_same_seed_gives_the_same_pixels_at_any_worker_count_and_kind(tmp_path):
    path = write_list(tmp_path, 40)
    runs = []
    for workers in ({"count": 1}, {"count": 3}, PROCESSES):
        cfg = make_cfg(source(path), batch_size=8, workers=workers,
                       epoch={"shuffle": True, "seed": 5, "count": 2})
        with Runner(cfg) as runner:
            runs.append([by_label(runner) for _ in range(2)])  # two epochs
    for run in runs[1:]:
        for epoch in (0, 1):
            assert run[epoch].keys() == runs[0][epoch].keys()
            for label, image in run[epoch].items():
                assert np.array_equal(image, runs[0][epoch][label]), (epoch, label)
    # ... and a new epoch draws new crops
    changed = sum(not np.array_equal(runs[0][0][k], runs[0][1][k]) for k in runs[0][0])
    assert changed > 30


def test_resume_mid_epoch_on_a_folder_repeats_and_skips_nothing(tmp_path):
    path = write_list(tmp_path, 64)
    cfg = make_cfg(source(path), batch_size=8, workers={"count": 2},
                   epoch={"shuffle": True, "seed": 2, "count": 1, "chunk_size": 8})
    first: dict[int, np.ndarray] = {}
    with Runner(cfg) as runner:
        stream = runner.device(0)
        for step, batch in enumerate(stream):
            first.update(zip(batch["label"].tolist(), batch["image"].numpy().copy(), strict=True))
            if step == 2:
                break
        state = pickle.loads(pickle.dumps(runner.state_dict()))
    resumed = Runner(make_cfg(source(path), batch_size=8, workers=PROCESSES,
                              epoch={"shuffle": True, "seed": 2, "count": 1, "chunk_size": 8}))
    resumed.load_state_dict(state)
    with resumed:
        rest = by_label(resumed)
    assert len(first) == 24 and not set(first) & set(rest)
    assert sorted([*first, *rest]) == list(range(64))
    # the resumed run's augmentations are the ones the uninterrupted run would have drawn
    with Runner(cfg) as runner:
        whole = by_label(runner)
    for label, image in {**first, **rest}.items():
        assert np.array_equal(image, whole[label]), label


@pytest.mark.parametrize("workers", [THREADS, PROCESSES], ids=["threads", "processes"])
def test_bad_files_are_skipped_alone_and_reported_by_index(tmp_path, workers):
    good = jpeg_bytes(photo(80, 60, 0))
    bad = {5: b"", 17: good[: len(good) // 3], 30: b"plain text, not a picture"}
    path = write_list(tmp_path, 48, bad)
    cfg = make_cfg(source(path), batch_size=8, workers=workers,
                   failures={"on_error": "skip"}, epoch={"shuffle": True, "count": 1})
    with Runner(cfg) as runner:
        seen = by_label(runner)
        stats = runner.stats().coordinators[0].workers
    assert sorted(seen) == sorted(set(range(48)) - set(bad)), "every good image, once"
    assert stats.skipped_samples == 3
    assert sorted(stats.skipped_indices) == sorted(bad)
    text = " ".join(stats.skipped_errors)
    for i in bad:
        assert f"{i:04d}.jpg" in text


@pytest.mark.parametrize("slot_bytes,in_place", [("1MiB", True), ("16KiB", False)],
                         ids=["fits-a-slot", "split-across-slots"])
def test_process_workers_decode_straight_into_shared_memory(tmp_path, slot_bytes, in_place):
    path = write_list(tmp_path, 40)
    cfg = make_cfg(source(path), batch_size=8,
                   workers={**PROCESSES, "slot_bytes": slot_bytes}, epoch={"count": 1})
    with Runner(cfg) as runner:
        seen = by_label(runner)
        stats = runner.stats().coordinators[0].workers
    assert sorted(seen) == list(range(40))
    # 8 images of 3 x 32 x 32 are 24 KiB: written where the batcher reads them, or copied in
    # pieces when a slot is smaller than a chunk
    assert stats.shm_chunks_in_place == (stats.chunks if in_place else 0)
    assert stats.chunks >= 5


def test_the_plan_counts_each_workers_decode_and_no_private_chunk_when_written_in_place(tmp_path):
    from inputkit import load_spec
    from inputkit.planning.memory import plan_memory

    path = write_list(tmp_path, 16)
    plans = {}
    for kind, workers in (("threads", THREADS), ("processes", PROCESSES)):
        spec = load_spec(make_cfg(source(path), batch_size=8, workers=workers))
        plans[kind] = {t.stage: t for t in plan_memory(spec, devices=("cpu",)).terms}
    for terms in plans.values():
        decode = terms["decoding in workers"]
        # the largest file and image the probe read: the list's images are at most 109 x 89
        assert 0 < decode.unit_bytes <= 100_000 + 109 * 89 * 8
        assert "pixels" in decode.detail
    assert "chunks in worker processes" not in plans["processes"]  # written into the slot
    assert "chunks held by workers" in plans["threads"]


@pytest.mark.parametrize("experiment", ["imagenet_train", "imagenet_val"])
def test_the_imagenet_experiments_run_from_the_cli_and_record_the_classes(tmp_path, experiment):
    from imagefiles import write_folder
    from test_cli import run, summaries

    root = write_folder(tmp_path / "train", classes=3, per_class=6)
    out = run(["bench", f"experiment={experiment}", f"source.path='{root}'", "devices=cpu",
               "batch_size=4", "workers.count=2", "bench.seconds=null", "bench.steps=3",
               f"hydra.run.dir={tmp_path / 'run'}"], cwd=tmp_path)
    assert out.returncode == 0, out.stderr[-3000:]
    (summary,) = summaries(tmp_path / "run")
    info = summary["sources"]["main"]
    assert info["class_to_index"] == {"class_0": 0, "class_1": 1, "class_2": 2}
    assert info["samples"] == 18 and info["output"] == [3, 224, 224]
    assert info["transforms"].startswith("random_resized_crop(224" if experiment == "imagenet_train"
                                         else "resize(256), center_crop(224)")
    assert summary["stats"]["coordinators"][0]["batches"] == 3


@pytest.mark.parametrize("workers,advice", [(PROCESSES, "workers.kind=thread"),
                                            (THREADS, "thread workers are the right kind")],
                         ids=["processes", "threads"])
def test_the_diagnosis_says_which_worker_kind_decodes_best(tmp_path, workers, advice):
    import dataclasses

    from inputkit.observe.evidence import evidence
    from inputkit.observe.own_stages import decoding_note as _decoding_note
    from inputkit.observe.verdict import Verdict

    path = write_list(tmp_path, 24)
    with Runner(make_cfg(source(path), batch_size=8, workers=workers)) as runner:
        by_label(runner)
        c = runner.stats().coordinators[0]
    assert c.source == LIST
    e = evidence(c, None)
    for kind in ("CPU-bound", "fetch-bound", "transport-bound"):
        assert advice in _decoding_note(c, e, Verdict(kind, ""))
    # not for other verdicts, nor for other sources
    assert _decoding_note(c, e, Verdict("consumer-bound", "")) == ""
    assert _decoding_note(c, e, Verdict("GIL-bound", "")) == ""
    other = dataclasses.replace(c, source="inputkit.sources.synthetic.SyntheticSource")
    assert _decoding_note(other, e, Verdict("CPU-bound", "")) == ""


def test_shards_named_by_an_unquoted_brace_range_on_the_command_line(tmp_path):
    from imagefiles import write_shards
    from test_cli import run, summaries

    images = [jpeg_bytes(photo(90 + i, 70, i)) for i in range(12)]
    write_shards(tmp_path / "shards", images, [i % 3 for i in range(12)], per_shard=4)
    out = run(["bench", "source=image_shards", f"source.urls={tmp_path}/shards/train-{{000..002}}.tar",
               "transforms=train_224", "devices=cpu", "batch_size=4", "workers.count=2",
               "epoch.shuffle=true", "bench.seconds=null", "bench.steps=3",
               f"hydra.run.dir={tmp_path / 'run'}"], cwd=tmp_path)
    assert out.returncode == 0, out.stderr[-3000:]
    (summary,) = summaries(tmp_path / "run")
    assert summary["sources"]["main"]["shards"] == 3 and summary["sources"]["main"]["samples"] == 12


def test_brace_patterns_are_quoted_for_hydra_and_other_values_left_alone():
    from inputkit.config.errors import quote_brace_patterns

    assert quote_brace_patterns(["source.urls=d/train-{000..127}.tar", "x={a,b}.tar"]) == \
        ['source.urls="d/train-{000..127}.tar"', 'x="{a,b}.tar"']
    untouched = ["a=1", "b='q-{0..1}.tar'", 'c="q-{0..1}"', "d={k: v}", "e=[1,2]", "+f={}",
                 "g=${oc.env:HOME}/x"]
    assert quote_brace_patterns(untouched) == untouched

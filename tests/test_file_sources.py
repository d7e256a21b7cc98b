"""The built-in file sources on real files: a directory of .npy files and WebDataset tar shards."""

from __future__ import annotations

import importlib.util
import io
import os
import pickle
import re
import subprocess
import sys
import tarfile
from pathlib import Path

import numpy as np
import pytest
from conftest import make_cfg

from inputkit import ConfigError, Runner, SourceError, SourceExhausted
from inputkit.sources.arrays import ArraySource
from inputkit.sources.shards import ShardSource
from inputkit.storage.locations import expand_braces

ARRAYS = "inputkit.sources.arrays.ArraySource"
SHARDS = "inputkit.sources.shards.ShardSource"
THREADS = {"count": 3}
PROCESSES = {"kind": "process", "count": 2}
HAS_PILLOW = importlib.util.find_spec("PIL") is not None


def drain(runner: Runner, device: int = 0) -> list[dict[str, np.ndarray]]:
    return [{k: v.numpy().copy() for k, v in batch.items()} for batch in runner.device(device)]


def concat(batches: list[dict[str, np.ndarray]], field: str) -> np.ndarray:
    return np.concatenate([b[field] for b in batches])


# a directory of .npy files --------------------------------------------------------------------

def write_arrays(folder: Path, n: int = 1000) -> Path:
    folder.mkdir(parents=True, exist_ok=True)
    ids = np.arange(n, dtype=np.int64)
    np.save(folder / "id.npy", ids)
    np.save(folder / "x.npy", np.repeat(ids[:, None], 3, axis=1).astype(np.float32))
    np.save(folder / "image.npy", (ids[:, None, None] % 251).astype(np.uint8) * np.ones((1, 4, 4), np.uint8))
    return folder


@pytest.mark.parametrize("workers", [THREADS, PROCESSES], ids=["threads", "processes"])
def test_arrays_deliver_every_sample_once_shuffled_with_fields_aligned(tmp_path, workers):
    path = write_arrays(tmp_path / "data", 1000)
    cfg = make_cfg({"_target_": ARRAYS, "path": str(path)}, batch_size=64, workers=workers,
                   epoch={"shuffle": True, "seed": 3, "chunk_size": 50})
    with Runner(cfg) as runner:
        batches = drain(runner)
    ids = concat(batches, "id")
    assert sorted(ids.tolist()) == list(range(1000)), "every sample exactly once"
    assert ids.tolist() != list(range(1000)), "shuffled"
    assert np.array_equal(concat(batches, "x"), np.repeat(ids[:, None], 3, axis=1).astype(np.float32))
    images = concat(batches, "image")
    assert images.shape == (1000, 4, 4) and images.dtype == np.uint8
    assert np.array_equal(images[:, 0, 0], (ids % 251).astype(np.uint8))


def test_arrays_split_over_devices_and_read_only_the_fields_asked_for(tmp_path):
    path = write_arrays(tmp_path / "data", 500)
    cfg = make_cfg({"_target_": ARRAYS, "path": str(path), "fields": ["id", "x"]}, batch_size=32,
                   devices=["cpu", "cpu"], workers={"count": 2}, epoch={"shuffle": True})
    seen: list[int] = []
    with Runner(cfg) as runner:
        for step in runner.steps():
            for batch in step:
                if batch is not None:
                    assert set(batch) == {"id", "x"}
                    seen += batch["id"].tolist()
    assert sorted(seen) == list(range(500))


def test_arrays_ordered_epochs_are_the_same_on_threads_and_processes(tmp_path):
    path = write_arrays(tmp_path / "data", 300)

    def run(workers):
        cfg = make_cfg({"_target_": ARRAYS, "path": str(path)}, batch_size=40, workers=workers,
                       epoch={"shuffle": True, "ordered": True, "count": 2, "chunk_size": 25})
        with Runner(cfg) as runner:
            stream = runner.device(0)
            return [concat([{k: v.numpy() for k, v in b.items()} for b in stream], "id").tolist()
                    for _ in range(2)]

    threads = run({"count": 3})
    assert threads == run(PROCESSES)
    assert all(sorted(epoch) == list(range(300)) for epoch in threads)
    assert threads[0] != threads[1], "a new permutation each epoch"


@pytest.mark.parametrize("mmap", [True, False])
def test_array_reads_return_fresh_arrays_in_the_order_asked_for(tmp_path, mmap):
    src = ArraySource(str(write_arrays(tmp_path / "data", 100)), mmap=mmap)
    assert len(src) == 100 and src.fields == ["id", "image", "x"]
    for indices in ([5, 6, 7, 8], [9, 2, 77, 2, 0], [1, 50, 99], [42], []):
        chunk = src.read(np.array(indices, dtype=np.int64))
        assert chunk["id"].tolist() == indices
        assert chunk["x"].shape == (len(indices), 3) and chunk["x"][:, 2].tolist() == indices
        assert all(type(a) is np.ndarray and a.flags.writeable for a in chunk.values())
        chunk["x"][...] = -1  # a fresh array: writing to it leaves the file alone
        assert src.read(np.array(indices, dtype=np.int64))["x"][:, 0].tolist() == indices
    with pytest.raises(IndexError, match=r"indices must lie in 0\.\.99"):
        src.read(np.array([3, 100]))


def test_array_source_pickles_small_and_opens_its_maps_per_process(tmp_path):
    folder = tmp_path / "data"
    folder.mkdir()
    np.save(folder / "big.npy", np.zeros((20000, 64), np.float32))  # 5 MB
    src = ArraySource(str(folder))
    src.read(np.arange(10))  # maps are open now
    blob = pickle.dumps(src)
    assert len(blob) < 2000
    copy = pickle.loads(blob)
    assert copy.read(np.array([19999]))["big"].shape == (1, 64)
    src.close()


def test_an_npz_file_works_too(tmp_path):
    np.savez(tmp_path / "d.npz", id=np.arange(40), y=np.arange(40) * 2.0)
    cfg = make_cfg({"_target_": ARRAYS, "path": str(tmp_path / "d.npz")}, batch_size=16,
                   epoch={"shuffle": True})
    with Runner(cfg) as runner:
        batches = drain(runner)
    assert sorted(concat(batches, "id").tolist()) == list(range(40))
    assert np.array_equal(concat(batches, "y"), concat(batches, "id") * 2.0)


def _bad_folder(tmp_path: Path, case: str) -> tuple[str, dict]:
    folder = tmp_path / case
    folder.mkdir()
    extra: dict = {}
    if case == "missing":
        return str(tmp_path / "nowhere"), extra
    if case in ("field", "lengths"):
        np.save(folder / "x.npy", np.zeros((10, 2)))
        np.save(folder / "label.npy", np.zeros(10 if case == "field" else 9, np.int64))
        if case == "field":
            extra = {"fields": ["x", "y"]}
    elif case == "object":
        np.save(folder / "meta.npy", np.array([{"a": 1}, None], dtype=object), allow_pickle=True)
    elif case == "strings":
        np.save(folder / "name.npy", np.array(["cat", "dog"]))
    elif case == "corrupt":
        (folder / "x.npy").write_bytes(b"this is not an array")
    elif case == "truncated":
        np.save(folder / "x.npy", np.zeros((100, 8)))
        data = (folder / "x.npy").read_bytes()
        (folder / "x.npy").write_bytes(data[:1000])
    elif case == "scalar":
        np.save(folder / "x.npy", np.float32(1.5))
    return str(folder), extra


@pytest.mark.parametrize("case, message", [
    ("missing", r"path: no such directory: '.*nowhere'"),
    ("empty", r"path: no \.npy files in '.*empty'"),
    ("field", r"fields: no file 'y\.npy' in the directory '.*field'; the fields there are: label, x"),
    ("lengths", r"field 'x' holds 10 samples \(x\.npy\) but field 'label' holds 9 \(label\.npy\)"),
    ("object", r"'.*meta\.npy' has dtype object"),
    ("strings", r"'.*name\.npy' has dtype <U3, which cannot become a tensor"),
    ("corrupt", r"cannot read '.*corrupt/x\.npy' as a \.npy file: ValueError: the magic string"),
    ("truncated", r"'.*truncated/x\.npy' is truncated: its header promises 6,528 bytes"),
    ("scalar", r"'.*scalar/x\.npy' holds a 0-d array"),
])
def test_bad_array_folders_are_config_errors_naming_source_and_file(tmp_path, case, message):
    path, extra = _bad_folder(tmp_path, case)
    cfg = make_cfg({"_target_": ARRAYS, "path": path, **extra}, batch_size=4)
    with pytest.raises(ConfigError, match=r"^source: inputkit\.sources\.arrays\.ArraySource: " + message):
        Runner(cfg).start()


def test_bad_array_folders_fail_before_process_workers_start(tmp_path):
    path, _ = _bad_folder(tmp_path, "lengths")
    cfg = make_cfg({"_target_": ARRAYS, "path": path}, batch_size=4, workers=PROCESSES)
    with pytest.raises(ConfigError, match=r"^source: .*every field needs the same leading length"):
        Runner(cfg).start()


def test_array_source_argument_checks():
    with pytest.raises(ValueError, match=r"fields: expected a list of field names"):
        ArraySource("/", fields=[])
    with pytest.raises(ValueError, match=r"mmap: expected true or false"):
        ArraySource("/", mmap="yes")  # type: ignore[arg-type]


# WebDataset tar shards ------------------------------------------------------------------------

def npy_bytes(array: np.ndarray) -> bytes:
    buf = io.BytesIO()
    np.save(buf, array)
    return buf.getvalue()


def write_tar(path: Path, members: list[tuple[str, bytes]]) -> Path:
    with tarfile.open(path, "w") as tar:
        for name, data in members:
            info = tarfile.TarInfo(name)
            info.size = len(data)
            tar.addfile(info, io.BytesIO(data))
    return path


def sample_members(i: int, width: int = 3) -> list[tuple[str, bytes]]:
    return [(f"{i:06d}.x.npy", npy_bytes(np.full(width, i, np.float32))),
            (f"{i:06d}.label.cls", f"{i}\n".encode())]


def write_shards(folder: Path, sizes: list[int]) -> list[Path]:
    """Shards train-000.tar, ... holding ``sizes[k]`` samples each, numbered on across shards."""
    folder.mkdir(parents=True, exist_ok=True)
    paths, start = [], 0
    for k, size in enumerate(sizes):
        members = [m for i in range(start, start + size) for m in sample_members(i)]
        paths.append(write_tar(folder / f"train-{k:03d}.tar", members))
        start += size
    return paths


def check_all_once(batches: list[dict[str, np.ndarray]], total: int) -> None:
    labels = concat(batches, "label")
    assert sorted(labels.tolist()) == list(range(total)), "every sample exactly once"
    assert np.array_equal(concat(batches, "x")[:, 0], labels.astype(np.float32)), "fields aligned"


SIZES = [23, 0, 17, 40, 9]  # ragged, one shard empty


@pytest.mark.parametrize("workers", [{"count": 2}, {"kind": "process", "count": 2}],
                         ids=["threads", "processes"])
def test_shards_deliver_every_sample_once(tmp_path, workers):
    write_shards(tmp_path / "shards", SIZES)
    cfg = make_cfg({"_target_": SHARDS, "urls": str(tmp_path / "shards" / "train-*.tar")},
                   batch_size=8, workers=workers)
    with Runner(cfg) as runner:
        batches = drain(runner)
    check_all_once(batches, sum(SIZES))
    assert batches[0]["label"].dtype == np.int64 and batches[0]["x"].shape == (8, 3)


def test_shards_split_over_two_devices(tmp_path):
    write_shards(tmp_path / "shards", SIZES)
    cfg = make_cfg({"_target_": SHARDS, "urls": str(tmp_path / "shards" / "train-{000..004}.tar")},
                   batch_size=8, devices=["cpu", "cpu"], workers={"count": 2})
    seen: list[int] = []
    with Runner(cfg) as runner:
        for step in runner.steps():
            seen += [i for batch in step if batch is not None for i in batch["label"].tolist()]
    assert sorted(seen) == list(range(sum(SIZES)))


@pytest.mark.parametrize("workers", [{"count": 3}, {"kind": "process", "count": 3}],
                         ids=["threads", "processes"])
def test_fewer_shards_than_workers_leaves_the_extra_workers_idle(tmp_path, workers):
    write_shards(tmp_path / "shards", [30])
    cfg = make_cfg({"_target_": SHARDS, "urls": [str(tmp_path / "shards" / "train-000.tar")]},
                   batch_size=8, workers=workers)
    with Runner(cfg) as runner:
        check_all_once(drain(runner), 30)


def test_url_patterns_globs_braces_and_lists_name_the_same_shards(tmp_path):
    paths = [str(p) for p in write_shards(tmp_path, [1, 1, 1])]
    assert ShardSource(str(tmp_path / "train-*.tar")).shards == paths
    assert ShardSource(str(tmp_path / "train-{000..002}.tar")).shards == paths
    assert ShardSource(str(tmp_path / "train-00{0,1,2}.tar")).shards == paths
    assert ShardSource(paths[::-1]).shards == paths[::-1], "a list keeps its order"
    assert expand_braces("a-{8..10}-{x,y}") == ["a-8-x", "a-8-y", "a-9-x", "a-9-y", "a-10-x", "a-10-y"]
    assert expand_braces("{000..002}") == ["000", "001", "002"]
    assert expand_braces("{keep}.tar") == ["{keep}.tar"]


@pytest.mark.parametrize("urls, message", [
    ("nothing-*.tar", r"urls: no files match '.*nothing-\*\.tar'"),
    ("missing.tar", r"urls: no such file: '.*missing\.tar'"),
    ("train-{000..003}.tar", r"urls: 1 file\(s\) of '.*train-\{000\.\.003\}\.tar' do not exist: "
                             r".*train-003\.tar"),
    ("", r"urls: expected a path, a glob pattern"),
    ("hdfs://example.com/train-000.tar", r"urls: 'hdfs://example\.com/train-000\.tar' is neither "
                                         r"a local path nor an s3://"),
])
def test_bad_urls_are_config_errors_naming_source_and_pattern(tmp_path, urls, message):
    write_shards(tmp_path, [1, 1, 1])
    if urls and "://" not in urls:
        urls = str(tmp_path / urls)
    cfg = make_cfg({"_target_": SHARDS, "urls": urls}, batch_size=4)
    with pytest.raises(ConfigError, match=r"^source: inputkit\.sources\.shards\.ShardSource: " + message):
        Runner(cfg).start()


def truncate(path: Path, size: int) -> None:
    with open(path, "r+b") as f:
        f.truncate(size)


@pytest.mark.parametrize("cut, message", [
    (2048 + 512 + 70, r"is corrupt or truncated \(in member '000011\.x\.npy'\): ReadError: "
                 r"unexpected end of data"),
    # at a member boundary tarfile stops quietly; the source still sees the missing end marker
    (4096, r"is corrupt or truncated: it ends after member '000011\.label\.cls' \(byte 4,096\) "
           r"without the tar end-of-archive marker"),
])
def test_a_truncated_shard_is_a_source_error_naming_the_file(tmp_path, cut, message):
    good, bad = write_shards(tmp_path, [10, 10])
    truncate(bad, cut)
    cfg = make_cfg({"_target_": SHARDS, "urls": str(tmp_path / "train-*.tar")}, batch_size=4,
                   workers={"count": 1})
    with pytest.raises(SourceError, match=re.escape(f"shard '{bad}' ") + message):
        with Runner(cfg) as runner:
            drain(runner)


def test_samples_before_the_damage_arrive_and_skip_goes_on_with_the_next_shard(tmp_path):
    first, bad, last = write_shards(tmp_path, [10, 10, 10])
    truncate(bad, 2048 * 5 + 512 + 70)  # inside the data of sample 15
    src = ShardSource([str(bad), str(first), str(last)])
    got = src.fetch(0, 100)["label"].tolist()
    assert got == list(range(10, 15)), "the good samples come first"
    with pytest.raises(SourceError, match=re.escape(str(bad))):
        src.fetch(0, 100)
    rest = src.fetch(0, 100)["label"].tolist()
    assert rest == list(range(0, 10)) + list(range(20, 30))
    with pytest.raises(SourceExhausted):
        src.fetch(0, 100)
    cfg = make_cfg({"_target_": SHARDS, "urls": [str(bad), str(first), str(last)]}, batch_size=4,
                   workers={"count": 1}, failures={"on_error": "skip"})
    with Runner(cfg) as runner:
        labels = sorted(concat(drain(runner), "label").tolist())
        assert runner.stats().coordinators[0].workers.skipped_chunks == 1
    assert labels == list(range(0, 15)) + list(range(20, 30))


def test_a_garbage_shard_names_the_file_and_the_next_fetch_goes_on(tmp_path):
    bad = tmp_path / "bad.tar"
    bad.write_bytes(b"definitely not a tar file" * 100)
    [good] = write_shards(tmp_path, [3])
    src = ShardSource([str(bad), str(good)])
    with pytest.raises(SourceError, match=re.escape(f"shard '{bad}' is not a tar file, or is corrupt")):
        src.fetch(0, 4)
    assert src.fetch(0, 4)["label"].tolist() == [0, 1, 2]
    with pytest.raises(SourceExhausted):
        src.fetch(0, 4)


def test_mismatched_samples_name_the_shard_member_and_field(tmp_path):
    members = sample_members(0) + sample_members(1) + sample_members(2, width=4)
    shard = write_tar(tmp_path / "mixed.tar", members)
    src = ShardSource(str(shard))
    with pytest.raises(SourceError) as info:
        src.fetch(0, 10)  # the two good samples come first
        src.fetch(0, 10)
    assert info.value.field == "x"
    assert str(info.value) == (
        f"source '{SHARDS}', field 'x': shard '{shard}', member '000002.x.npy': shape (4,) float32 "
        f"differs from (3,) float32 of '000000.x.npy' in '{shard}'; every sample needs the same "
        "shape and dtype per field")
    missing = write_tar(tmp_path / "missing.tar", sample_members(0) + sample_members(1)[:1])
    with pytest.raises(SourceError, match=r"sample '000001' has no 'label' field \(it has x\); the "
                                          r"first sample \('000000' in .*\) has one"):
        src = ShardSource(str(missing))
        src.fetch(0, 1)
        src.fetch(0, 1)


def test_unsupported_members_fail_unless_left_out_by_fields(tmp_path):
    members = [m for i in range(3) for m in sample_members(i) + [(f"{i:06d}.meta.yaml", b"a: 1")]]
    shard = write_tar(tmp_path / "s.tar", members)
    with pytest.raises(SourceError, match=r"member '000000\.meta\.yaml': unsupported extension '\.yaml'"):
        ShardSource(str(shard)).fetch(0, 8)
    chunk = ShardSource(str(shard), fields=["label", "x"]).fetch(0, 8)
    assert list(chunk) == ["label", "x"] and chunk["label"].tolist() == [0, 1, 2]
    bad_label = write_tar(tmp_path / "l.tar", [("0.x.npy", npy_bytes(np.zeros(2))), ("0.label.txt", b"cat")])
    with pytest.raises(SourceError, match=r"member '0\.label\.txt': expected a whole number .*'cat'"):
        ShardSource(str(bad_label)).fetch(0, 8)


def test_shard_source_pickles_small_and_without_open_files(tmp_path):
    paths = write_shards(tmp_path, [50, 50])
    src = ShardSource([str(p) for p in paths])
    src.setup(0, 1)
    src.fetch(0, 10)  # a shard is open now
    copy = pickle.loads(pickle.dumps(src))
    assert len(pickle.dumps(src)) < 1000
    assert copy.fetch(0, 5)["label"].tolist() == [0, 1, 2, 3, 4], "a copy starts over"
    src.close()
    copy.close()


def png_bytes(array: np.ndarray) -> bytes:
    from PIL import Image

    buf = io.BytesIO()
    Image.fromarray(array).save(buf, format="PNG")
    return buf.getvalue()


@pytest.mark.skipif(not HAS_PILLOW, reason="needs Pillow (pip install pillow)")
@pytest.mark.parametrize("workers", [{"count": 2}, {"kind": "process", "count": 2}],
                         ids=["threads", "processes"])
def test_png_images_decode_to_uint8_hwc(tmp_path, workers):
    for k in range(2):
        members = []
        for i in range(k * 12, k * 12 + 12):
            members += [(f"{i:04d}.image.png", png_bytes(np.full((6, 5, 3), i, np.uint8))),
                        (f"{i:04d}.mask.png", png_bytes(np.full((6, 5), 255 - i, np.uint8))),
                        (f"{i:04d}.cls", str(i).encode())]
        write_tar(tmp_path / f"img-{k}.tar", members)
    cfg = make_cfg({"_target_": SHARDS, "urls": str(tmp_path / "img-{0..1}.tar")}, batch_size=5,
                   workers=workers)
    with Runner(cfg) as runner:
        batches = drain(runner)
    labels = concat(batches, "cls")
    images, masks = concat(batches, "image"), concat(batches, "mask")
    assert sorted(labels.tolist()) == list(range(24))
    assert images.shape == (24, 6, 5, 3) and images.dtype == np.uint8
    assert masks.shape == (24, 6, 5, 1), "grey images get one channel"
    assert np.array_equal(images[:, 3, 2, 1], labels.astype(np.uint8))
    assert np.array_equal(masks[:, 0, 0, 0], (255 - labels).astype(np.uint8))


def fake_png_shard(tmp_path: Path) -> Path:
    # The bytes are never decoded when Pillow is missing, so they need not be a real PNG.
    members = [m for i in range(4) for m in [(f"{i:04d}.image.png", b"\x89PNG..."),
                                             (f"{i:04d}.label.cls", str(i).encode())]]
    return write_tar(tmp_path / "img.tar", members)


def test_without_pillow_images_fail_with_how_to_install_it(tmp_path, monkeypatch):
    monkeypatch.setitem(sys.modules, "PIL", None)  # `from PIL import Image` now raises ImportError
    shard = fake_png_shard(tmp_path)
    cfg = make_cfg({"_target_": SHARDS, "urls": str(shard)}, batch_size=2, workers={"count": 2})
    with pytest.raises(SourceError, match=r"member '0000\.image\.png': decoding \.png images needs "
                                          r"Pillow, which is not installed: pip install pillow"):
        with Runner(cfg) as runner:
            drain(runner)
    # decode_images=false leaves the images out, so the labels can still be read
    cfg["source"]["decode_images"] = False
    with Runner(cfg) as runner:
        batches = drain(runner)
    assert set(batches[0]) == {"label"} and sorted(concat(batches, "label").tolist()) == [0, 1, 2, 3]


# the command line ------------------------------------------------------------------------------

def run_cli(args: list[str], cwd: Path) -> subprocess.CompletedProcess[str]:
    env = {**os.environ, "COLUMNS": "200"}
    return subprocess.run([sys.executable, "-m", "inputkit", *args], cwd=cwd, env=env,
                          capture_output=True, text=True, timeout=60, stdin=subprocess.DEVNULL)


def test_cli_bench_reads_a_folder_of_arrays(tmp_path):
    path = write_arrays(tmp_path / "data", 2000)
    out = run_cli(["bench", "source=arrays", f"source.path={path}", "bench.seconds=1", "devices=cpu",
                   "epoch.shuffle=true"], tmp_path)
    assert out.returncode == 0, out.stdout + out.stderr
    assert "2,000" in out.stdout, out.stdout  # one epoch: every sample once


def test_cli_bench_without_source_path_says_it_is_missing(tmp_path):
    out = run_cli(["bench", "source=arrays", "bench.seconds=1", "devices=cpu"], tmp_path)
    assert out.returncode == 2, out.stdout + out.stderr
    assert "error: source.path: required (??? in the config); set it, e.g. source.path=VALUE" \
        in out.stderr

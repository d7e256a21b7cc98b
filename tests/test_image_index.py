"""The image sources' index: compact, written once to a file in the cache, mapped (not pickled)
by worker processes, reused on the next start while the listing holds, rebuilt otherwise."""

from __future__ import annotations

import os
import pickle
import tarfile
from pathlib import Path

import numpy as np
import pytest
from conftest import make_cfg
from imagefiles import jpeg_bytes, photo, write_folder, write_shards

from inputkit import Runner
from inputkit.sources.image_shards import ImageShardSource
from inputkit.sources.images import ImageFolderSource, ImageListSource
from inputkit.sources.index_file import IndexFile, IndexFileError, Names, narrow, pack_names
from inputkit.sources.tar_index import index_shards

VAL = [{"resize": 40}, {"center_crop": 32}]
FOLDER = "inputkit.sources.images.ImageFolderSource"


def test_index_file_round_trip_keeps_odd_names_and_narrow_types(tmp_path):
    """Names that are not UTF-8 come back byte for byte; numbers take the narrowest type."""
    names = [b"caf\xe9.jpg", b"", "ümlaut/ß.png".encode(), b"x" * 300]
    blob, offsets = pack_names(names)
    labels = narrow([0, 999, 3, 7])
    assert labels.dtype == np.uint16 and offsets.dtype == np.uint16
    assert narrow([-1, 5]).dtype == np.int8
    written = IndexFile.write(str(tmp_path / "a.idx"), {"names": blob, "name_offsets": offsets,
                                                        "labels": labels}, {"classes": ["caf\udce9"]})
    opened = IndexFile.open(str(tmp_path / "a.idx"))
    assert Names(opened["names"], opened["name_offsets"]).tolist() == names
    assert opened["labels"].tolist() == [0, 999, 3, 7] and opened["labels"].dtype == np.uint16
    assert opened.meta["classes"] == ["caf\udce9"] and opened.build == written.build
    clone = pickle.loads(pickle.dumps(opened))
    assert len(pickle.dumps(opened)) < 300  # the path and the build, not the arrays
    assert clone["labels"].tolist() == [0, 999, 3, 7] and not clone["labels"].flags.writeable


def test_a_damaged_or_replaced_index_file_is_refused(tmp_path):
    path = str(tmp_path / "a.idx")
    first = IndexFile.write(path, {"labels": np.arange(1000, dtype=np.uint16)}, {})
    data = bytearray(Path(path).read_bytes())
    data[-100] ^= 0x01  # one flipped bit in the data (the last 48 bytes are padding)
    Path(path).write_bytes(bytes(data))
    with pytest.raises(IndexFileError, match="does not match its checksum"):
        IndexFile.open(path)
    Path(path).write_bytes(bytes(data[:-100]))  # cut off
    with pytest.raises(IndexFileError, match="damaged or truncated"):
        IndexFile.open(path)
    IndexFile.write(path, {"labels": np.arange(10, dtype=np.uint16)}, {})  # another run's build
    state = first.__getstate__()
    with pytest.raises(IndexFileError, match="was replaced"):
        IndexFile.__new__(IndexFile).__setstate__(state)


def test_a_second_build_maps_the_cached_index_without_listing(tmp_path):
    root = write_folder(tmp_path / "data", classes=3, per_class=4)
    first = ImageFolderSource(str(root), VAL)
    assert first.run_info()["index"]["from_cache"] is False
    second = ImageFolderSource(str(root), VAL)
    info = second.run_info()["index"]
    assert info["from_cache"] is True and info["why"] == "cached"
    assert info["file"].startswith(os.environ["INPUTKIT_CACHE_DIR"])
    assert second.labels.tolist() == first.labels.tolist() == [0] * 4 + [1] * 4 + [2] * 4
    assert [second.path_of(i) for i in range(12)] == [first.path_of(i) for i in range(12)]
    assert info["bytes_per_sample"] < 100


def test_adding_a_file_or_a_folder_anywhere_invalidates_the_cache(tmp_path):
    root = write_folder(tmp_path / "data", classes=2, per_class=3)
    (root / "class_1" / "deep").mkdir()
    ImageFolderSource(str(root), VAL)
    (root / "class_1" / "deep" / "new.jpg").write_bytes(jpeg_bytes(photo(50, 40, 1)))
    again = ImageFolderSource(str(root), VAL)
    assert again.run_info()["index"]["from_cache"] is False
    assert "changed" in again.run_info()["index"]["why"] and len(again) == 7
    assert again.path_of(6).endswith("class_1/deep/new.jpg")
    (root / "class_2").mkdir()
    (root / "class_2" / "a.jpg").write_bytes(jpeg_bytes(photo(50, 40, 2)))
    third = ImageFolderSource(str(root), VAL)
    assert third.run_info()["index"]["from_cache"] is False and third.classes[-1] == "class_2"
    os.remove(root / "class_0" / "img_000.jpg")
    assert len(ImageFolderSource(str(root), VAL)) == 7


def test_a_corrupt_cache_file_is_rebuilt_not_trusted(tmp_path):
    root = write_folder(tmp_path / "data", classes=2, per_class=3)
    cached = ImageFolderSource(str(root), VAL).run_info()["index"]["file"]
    data = bytearray(Path(cached).read_bytes())
    data[-200:] = b"\xff" * 200  # the last arrays' bytes overwritten
    Path(cached).write_bytes(bytes(data))
    rebuilt = ImageFolderSource(str(root), VAL)
    assert rebuilt.run_info()["index"]["why"].startswith("damaged")
    assert rebuilt.labels.tolist() == [0, 0, 0, 1, 1, 1]
    assert ImageFolderSource(str(root), VAL).run_info()["index"]["from_cache"] is True


def test_a_list_index_is_cached_until_the_list_changes(tmp_path):
    write_folder(tmp_path, classes=1, per_class=3)
    listing = tmp_path / "list.csv"
    listing.write_text("class_0/img_000.jpg,4\nclass_0/img_001.jpg,2\n")
    assert ImageListSource(str(listing), VAL).run_info()["index"]["from_cache"] is False
    cached = ImageListSource(str(listing), VAL)
    assert cached.run_info()["index"]["from_cache"] is True and cached.labels.tolist() == [4, 2]
    assert cached.describe(1)["line"] == 2
    listing.write_text("class_0/img_000.jpg,4\nclass_0/img_001.jpg,2\nclass_0/img_002.jpg,9\n")
    assert ImageListSource(str(listing), VAL).labels.tolist() == [4, 2, 9]


def test_a_shard_index_is_cached_and_a_changed_shard_rebuilds_it(tmp_path):
    images = [jpeg_bytes(photo(40, 30, i)) for i in range(12)]
    write_shards(tmp_path / "s", images, list(range(12)), per_shard=5)
    pattern = str(tmp_path / "s" / "*.tar")
    first = ImageShardSource(pattern, VAL)
    second = ImageShardSource(pattern, VAL)
    assert second.run_info()["index"]["from_cache"] is True
    assert second.labels.tolist() == first.labels.tolist() == list(range(12))
    assert second.encoded(7) == images[7]
    shard = sorted((tmp_path / "s").glob("*.tar"))[-1]
    with tarfile.open(shard, "a") as tar:  # one more sample appended
        for name, data in (("extra.jpg", images[0]), ("extra.cls", b"77")):
            info = tarfile.TarInfo(name)
            info.size = len(data)
            tar.addfile(info, __import__("io").BytesIO(data))
    third = ImageShardSource(pattern, VAL)
    assert third.run_info()["index"]["from_cache"] is False and third.labels.tolist()[-1] == 77


def test_shards_indexed_in_child_processes_match_the_serial_index(tmp_path):
    images = [jpeg_bytes(photo(30, 30, i)) for i in range(30)]
    write_shards(tmp_path, images, [i % 7 for i in range(30)], per_shard=4)
    shards = sorted(str(p) for p in tmp_path.glob("*.tar"))
    serial = index_shards(shards, (".jpg",), "cls", parallel=1)
    parallel = index_shards(shards, (".jpg",), "cls", parallel=2)
    assert serial.keys() == parallel.keys()
    for name in serial:
        assert np.array_equal(serial[name], parallel[name]), name
    Path(shards[3]).write_bytes(Path(shards[3]).read_bytes()[:700])  # cut inside a member
    with pytest.raises(ValueError, match="truncated"):
        index_shards(shards, (".jpg",), "cls", parallel=2)


@pytest.mark.timeout(120)
def test_process_workers_map_the_index_file_instead_of_a_pickled_copy(tmp_path):
    """The source shipped to each worker process is small (the index file's path), and the
    worker maps that file: one copy of the index in the page cache for every process."""
    import psutil

    root = write_folder(tmp_path / "data", classes=2, per_class=6)
    built = ImageFolderSource(str(root), VAL)
    index_file = built.index.path
    assert index_file and len(pickle.dumps(built)) < 4096
    cfg = make_cfg({"_target_": FOLDER, "path": str(root), "transforms": VAL}, batch_size=4,
                   workers={"kind": "process", "count": 2}, epoch={"count": 1})
    mapped_by = []
    with Runner(cfg) as runner:
        batches = iter(runner.device(0))
        labels = next(batches)["label"].tolist()
        for child in psutil.Process().children(recursive=True):
            try:
                with open(f"/proc/{child.pid}/maps") as maps:
                    if index_file in maps.read():
                        mapped_by.append(child.pid)
            except OSError:
                continue
        labels += [label for batch in batches for label in batch["label"].tolist()]
    assert sorted(labels) == [0] * 6 + [1] * 6
    assert mapped_by, f"no worker process maps {index_file}"


# over URLs: a folder and a list in the local S3 server ---------------------------------------

def test_image_folder_from_a_bucket_gives_the_local_folders_labels_and_pixels(s3_bucket, tmp_path):
    root = write_folder(tmp_path / "data", classes=3, per_class=3)
    (root / "class_1" / "sub").mkdir()  # a sub-folder: its files come after the folder's own
    (root / "class_1" / "sub" / "a.jpg").write_bytes(jpeg_bytes(photo(50, 40, 9)))
    (root / "class_2" / "notes.txt").write_text("not an image")
    s3_bucket.upload_tree(root, "imagenet/train")
    local = ImageFolderSource(str(root), VAL)
    remote = ImageFolderSource(s3_bucket.url("imagenet/train"), VAL)
    assert remote.classes == local.classes and remote.labels.tolist() == local.labels.tolist()
    assert [os.path.relpath(local.path_of(i), root) for i in range(len(local))] == \
        [remote.path_of(i).split("imagenet/train/", 1)[1] for i in range(len(remote))]
    assert remote.describe(0)["file"] == s3_bucket.url("imagenet/train/class_0/img_000.jpg")
    everything = np.arange(len(local))
    assert np.array_equal(remote.read(everything)["image"], local.read(everything)["image"])
    again = ImageFolderSource(s3_bucket.url("imagenet/train"), VAL)  # listed, found unchanged
    assert again.run_info()["index"]["from_cache"] is True
    s3_bucket.put("imagenet/train/class_0/zz.jpg", jpeg_bytes(photo(40, 40, 3)))
    changed = ImageFolderSource(s3_bucket.url("imagenet/train"), VAL)
    assert changed.run_info()["index"]["from_cache"] is False and len(changed) == len(local) + 1
    trusted = ImageFolderSource(s3_bucket.url("imagenet/train"), VAL, trust_cached_listing=True)
    assert trusted.run_info()["index"]["from_cache"] is True and len(trusted) == len(local) + 1


def test_a_missing_object_is_skipped_alone_and_counted(s3_bucket, tmp_path):
    """A list in the bucket names an object that is not there: under on_error=skip that sample
    alone is skipped, and its error names the URL."""
    rows = []
    for i in range(12):
        if i != 5:
            s3_bucket.put(f"img/{i:03d}.jpg", jpeg_bytes(photo(40 + i, 40, i)))
        rows.append(f"img/{i:03d}.jpg,{i}")
    s3_bucket.put("list.csv", ("\n".join(rows) + "\n").encode())
    source = ImageListSource(s3_bucket.url("list.csv"), VAL)
    assert source.path_of(5) == s3_bucket.url("img/005.jpg")
    cfg = make_cfg({"_target_": "inputkit.sources.images.ImageListSource",
                    "path": s3_bucket.url("list.csv"), "transforms": VAL}, batch_size=4,
                   workers={"count": 2}, failures={"on_error": "skip"}, epoch={"count": 1})
    with Runner(cfg) as runner:
        labels = [label for batch in runner.device(0) for label in batch["label"].tolist()]
        stats = runner.stats().coordinators[0].workers
    assert sorted(labels) == [i for i in range(12) if i != 5]
    assert stats.skipped_samples == 1 and list(stats.skipped_indices) == [5]
    assert s3_bucket.url("img/005.jpg") in " ".join(stats.skipped_errors)


def test_a_rebuild_by_another_run_leaves_this_runs_workers_their_build(tmp_path):
    """Another job (or rank) rebuilding the same folder's index writes a new build file; a
    worker of this run unpickling its source still maps the build its parent checked."""
    root = write_folder(tmp_path / "data", classes=2, per_class=2)
    ours = ImageFolderSource(str(root), VAL)
    shipped = pickle.dumps(ours)
    (root / "class_0" / "late.jpg").write_bytes(jpeg_bytes(photo(40, 40, 5)))
    theirs = ImageFolderSource(str(root), VAL)
    assert theirs.run_info()["index"]["from_cache"] is False and len(theirs) == 5
    worker_copy = pickle.loads(shipped)
    assert len(worker_copy) == 4 and worker_copy.index.path == ours.index.path != theirs.index.path

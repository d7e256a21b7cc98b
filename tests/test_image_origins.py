"""Which file each image sample came from: the ``id`` field, ``describe(index)``, the eval
recipe's order, and file names that are not UTF-8 (read, and named when they are bad)."""

from __future__ import annotations

import io
import os
import tarfile
from pathlib import Path

import numpy as np
import pytest
from imagefiles import jpeg_bytes, photo, write_folder

from inputkit import Runner, SourceError, compose, load_spec
from inputkit.images.decode import Decoder
from inputkit.images.transforms import Transforms
from inputkit.sources.images import ImageFolderSource, ImageListSource, ImageShardSource

SAME = [{"resize": [30, 40]}]  # the pictures below are 40 x 30: pixels as decoded
CAFE = b"caf\xe9.jpg"  # Latin-1, as an archive made on another system names it: not UTF-8


def picture(seed: int) -> bytes:
    return jpeg_bytes(photo(40, 30, seed))


def write_bytes_named(folder: bytes, name: bytes, data: bytes) -> bytes:
    """A real file whose name is raw bytes (no str can be given to the file system for it)."""
    os.makedirs(folder, exist_ok=True)
    path = os.path.join(folder, name)
    with open(path, "wb") as f:
        f.write(data)
    return path


def decoded(data: bytes) -> np.ndarray:
    """``data`` decoded as the sources above decode it."""
    image = np.zeros((3, 30, 40), np.uint8)
    Decoder().decode_into(data, image, Transforms.parse(SAME), 0, 0, 0)
    return image


# file names that are not UTF-8 ----------------------------------------------------------------

def test_a_folder_with_names_that_are_not_utf8_is_read_like_torchvision(tmp_path):
    root = os.fsencode(tmp_path / "train")
    files = {(b"ant", CAFE): picture(1), (b"ant", b"plain.jpg"): picture(2),
             (b"gr\xfcn", b"x.jpg"): picture(3)}  # a class folder's name too
    for (cls, name), data in files.items():
        write_bytes_named(os.path.join(root, cls), name, data)
    source = ImageFolderSource(str(tmp_path / "train"), SAME, id_field="id")
    assert source.classes == ["ant", os.fsdecode(b"gr\xfcn")]
    assert len(source) == 3
    chunk = source.read(np.arange(3))
    for k in range(3):
        info = source.describe(k)
        key = os.path.split(os.path.dirname(os.fsencode(info["file"])))[1], \
            os.path.basename(os.fsencode(info["file"]))
        assert np.array_equal(chunk["image"][k], decoded(files[key])), key
        assert chunk["label"][k] == info["label"] == (0 if key[0] == b"ant" else 1)
        with open(info["file"], "rb") as f:  # the path opens the very file
            assert f.read() == files[key]


def test_a_bad_file_whose_name_is_not_utf8_is_named_with_its_bytes_escaped(tmp_path):
    write_bytes_named(os.fsencode(tmp_path / "train" / "c"), CAFE, b"not a picture")
    source = ImageFolderSource(str(tmp_path / "train"), SAME)
    with pytest.raises(SourceError) as info:
        source.read(np.array([0]))
    message = str(info.value)
    assert "caf\\xe9.jpg" in message and "not an image Pillow can read" in message, message
    message.encode("utf-8")  # prints and serializes anywhere: no lone surrogate in it


def test_a_list_naming_files_in_bytes_that_are_not_utf8_reads_them(tmp_path):
    write_bytes_named(os.fsencode(tmp_path / "img"), CAFE, picture(4))
    (tmp_path / "img" / "b.jpg").write_bytes(picture(5))
    (tmp_path / "list.csv").write_bytes(b"img/" + CAFE + b",3\nimg/b.jpg,1\n")
    source = ImageListSource(str(tmp_path / "list.csv"), SAME)
    assert source.labels.tolist() == [3, 1]
    assert os.fsencode(source.describe(0)["file"]) == os.fsencode(tmp_path / "img") + b"/" + CAFE
    assert source.describe(0)["line"] == 1
    assert np.array_equal(source.read(np.array([0]))["image"][0], decoded(picture(4)))


@pytest.mark.parametrize("fmt", [tarfile.USTAR_FORMAT, tarfile.PAX_FORMAT],
                         ids=["ustar", "pax"])  # read from the headers / through tarfile
def test_shard_members_named_in_bytes_that_are_not_utf8_are_read(tmp_path, fmt):
    images = {b"caf\xe9": picture(6), b"plain": picture(7)}
    with tarfile.open(tmp_path / "a.tar", "w", format=fmt, encoding="utf-8",
                      errors="surrogateescape") as tar:
        for label, (key, data) in enumerate(images.items()):
            for ext, payload in ((b".jpg", data), (b".cls", b"%d" % label)):
                info = tarfile.TarInfo(os.fsdecode(key + ext))
                info.size = len(payload)
                tar.addfile(info, io.BytesIO(payload))
    source = ImageShardSource(str(tmp_path / "a.tar"), SAME, id_field="id")
    try:
        assert len(source) == 2
        chunk = source.read(np.arange(2))
        for k in range(2):
            info = source.describe(k)
            key = os.fsencode(info["member"]).rsplit(b".", 1)[0]
            assert info["label"] == chunk["label"][k] == list(images).index(key)
            assert np.array_equal(chunk["image"][k], decoded(images[key]))
            with open(info["shard"], "rb") as f:  # offset and size are the member's bytes
                f.seek(info["offset"])
                assert f.read(info["size"]) == images[key]
        assert "caf\\xe9.jpg" in source.where(list(source.labels).index(0))
    finally:
        source.close()


# the id field and describe() ------------------------------------------------------------------

def test_the_id_field_carries_each_rows_index_and_describe_names_its_file(tmp_path):
    write_folder(tmp_path / "val", classes=2, per_class=3)
    source = ImageFolderSource(str(tmp_path / "val"), SAME, id_field="id")
    chunk = source.read(np.array([4, 0, 2]))
    assert chunk["id"].dtype == np.int64 and chunk["id"].tolist() == [4, 0, 2]
    info = source.describe(4)
    assert info == {"index": 4, "label": 1, "class": "class_1",
                    "file": str(tmp_path / "val" / "class_1" / "img_001.jpg")}
    assert "id" not in ImageFolderSource(str(tmp_path / "val"), SAME).read(np.array([0]))
    with pytest.raises(IndexError, match="sample index 6 is out of range: this source has 6"):
        source.describe(6)
    with pytest.raises(ValueError, match="id_field: .*other than image and label"):
        ImageFolderSource(str(tmp_path / "val"), SAME, id_field="label")


# the eval recipe: in order, the same every run -------------------------------------------------

def val_ids(root: Path, *overrides: str) -> tuple[list[int], list[dict]]:
    cfg = compose(["experiment=imagenet_val", f"source.path={root}", "workers.count=2",
                   "batch_size=4", "epoch.chunk_size=2", "devices=cpu", "device.normalize=null",
                   "source.transforms=[{resize: [24, 32]}]", *overrides])
    ids: list[int] = []
    labels: list[int] = []
    with Runner(cfg) as runner:
        for batch in runner.device(0):
            ids += batch["id"].tolist()
            labels += batch["label"].tolist()
        described = [runner.source().describe(i) for i in ids]
    assert labels == [d["label"] for d in described]
    return ids, described


@pytest.mark.timeout(120)
def test_the_val_recipe_reads_every_image_once_in_index_order_on_every_run(tmp_path):
    """Two identical runs with 2 workers: the same sequence, 0..n-1 (epoch.ordered), and each
    id names its file (the class folder matches the label)."""
    write_folder(tmp_path / "val", classes=3, per_class=7)
    first, described = val_ids(tmp_path / "val")
    second, _ = val_ids(tmp_path / "val")
    assert first == second == list(range(21))
    for info in described:
        assert Path(info["file"]).parent.name == f"class_{info['label']}"
        assert Path(info["file"]).is_file()
    spec_epoch = compose(["experiment=imagenet_val", "source.path=x"]).epoch
    assert spec_epoch.ordered is True and spec_epoch.shuffle is False
    assert load_spec(compose(["experiment=train_val"])).input("val").epoch.ordered  # its val too


def test_runner_source_is_the_workers_own_or_a_copy_for_processes(tmp_path):
    write_folder(tmp_path / "val", classes=2, per_class=2)
    for kind in ("thread", "process"):
        cfg = compose(["experiment=imagenet_val", f"source.path={tmp_path / 'val'}",
                       f"workers.kind={kind}", "workers.count=1", "devices=cpu",
                       "device.normalize=null"])
        with Runner(cfg) as runner:
            source = runner.source()
            assert runner.source() is source and len(source) == 4
            assert source.describe(3)["class"] == "class_1"
        with pytest.raises(Exception, match="a Runner runs once"):
            runner.source()


def test_a_file_that_is_not_an_image_is_named_without_a_memory_address(tmp_path):
    """Pillow names the buffer it read (`<_io.BytesIO object at 0x7fb6...>`): noise beside the
    file the message already names, and different on every run."""
    (tmp_path / "train" / "c").mkdir(parents=True)
    (tmp_path / "train" / "c" / "notes.jpg").write_bytes(b"not a picture")
    source = ImageFolderSource(str(tmp_path / "train"), SAME)
    with pytest.raises(SourceError) as info:
        source.read(np.array([0]))
    message = str(info.value)
    assert "notes.jpg" in message and "not an image Pillow can read" in message, message
    assert "BytesIO" not in message and " at 0x" not in message, message

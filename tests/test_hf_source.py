"""source=hf on datasets made with the real ``datasets`` package: save_to_disk folders, a saved
DatasetDict and a Parquet folder laid out as the Hub's cache; numbers, sequences and images read
back exactly through a Runner (every row once, shuffled, resumed mid-epoch), and one clear error
for each bad input."""

from __future__ import annotations

import io
import pickle
from pathlib import Path

import numpy as np
import pytest
from conftest import make_cfg

pa = pytest.importorskip("pyarrow", reason="source=hf reads with pyarrow (the hf extra)")
datasets = pytest.importorskip("datasets", reason="the tests make their datasets with `datasets` "
                                                  "(the test extra)")
Image = pytest.importorskip("PIL.Image", reason="the image tests need Pillow (the images extra)")

from inputkit import ConfigError, Runner  # noqa: E402
from inputkit.errors import SourceError  # noqa: E402
from inputkit.sources.hf import HFSource  # noqa: E402
from inputkit.sources.hf_tables import EncodedImages  # noqa: E402

HF = "inputkit.sources.hf.HFSource"
ROWS = 300


@pytest.fixture(autouse=True)
def _quiet_datasets():
    datasets.disable_progress_bars()


def numbers(n: int = ROWS) -> datasets.Dataset:
    """Row i: id i, x = i / 2 (float32), a fixed triple (i, i+1, i+2), a ragged list of i % 5
    items (0, 1, ...), a class label i % 3, and a name (a string)."""
    ids = np.arange(n, dtype=np.int64)
    features = datasets.Features({
        "id": datasets.Value("int64"), "x": datasets.Value("float32"),
        "triple": datasets.List(datasets.Value("int64"), length=3),
        "ragged": datasets.List(datasets.Value("int32")),
        "label": datasets.ClassLabel(names=["a", "b", "c"]), "name": datasets.Value("string")})
    return datasets.Dataset.from_dict({
        "id": ids, "x": ids.astype(np.float32) / 2,
        "triple": np.stack([ids, ids + 1, ids + 2], axis=1).tolist(),
        "ragged": [list(range(i % 5)) for i in ids.tolist()],
        "label": (ids % 3).tolist(), "name": [f"row {i}" for i in ids.tolist()]}, features=features)


def check_rows(batch: dict[str, np.ndarray], pad: int = 3) -> None:
    """Every field of a batch belongs to the row its id names."""
    ids = batch["id"]
    assert np.array_equal(batch["x"], ids.astype(np.float32) / 2)
    assert np.array_equal(batch["triple"], np.stack([ids, ids + 1, ids + 2], axis=1))
    assert np.array_equal(batch["label"], ids % 3)
    expected = np.full((len(ids), pad), -1, np.int32)
    for k, i in enumerate(ids.tolist()):
        n = min(i % 5, pad)
        expected[k, :n] = np.arange(n)
    assert np.array_equal(batch["ragged"], expected)


def saved(tmp_path: Path, layout: str) -> Path:
    """The numbers dataset in ``layout``: save_to_disk (two shards) or a Hub-cache Parquet folder
    (two files of the train split, small row groups)."""
    ds = numbers()
    if layout == "save_to_disk":
        ds.save_to_disk(str(tmp_path / "ds"), num_shards=2)
        return tmp_path / "ds"
    folder = tmp_path / "snapshot" / "data"
    folder.mkdir(parents=True)
    for k in range(2):
        part = ds.shard(2, k, contiguous=True)
        part.to_parquet(str(folder / f"train-{k:05d}-of-00002.parquet"), batch_size=40)
    return tmp_path / "snapshot"


def source(path: Path, **keys) -> dict:
    return {"_target_": HF, "path": str(path), "columns": ["id", "x", "triple", "ragged", "label"],
            "pad": {"ragged": 3}, "pad_value": -1, **keys}


def as_numpy(batch) -> dict[str, np.ndarray]:
    return {k: v.numpy() for k, v in batch.items()}


LAYOUTS = ["save_to_disk", "parquet"]


@pytest.mark.parametrize("layout", LAYOUTS)
@pytest.mark.parametrize("workers", [{"kind": "thread", "count": 3},
                                     {"kind": "process", "count": 2}], ids=["threads", "processes"])
def test_every_row_exactly_once_shuffled_with_fields_exact(tmp_path, layout, workers):
    path = saved(tmp_path, layout)
    cfg = make_cfg(source(path), batch_size=32, workers=workers,
                   epoch={"shuffle": True, "seed": 5, "chunk_size": 25, "count": 1})
    seen: list[int] = []
    with Runner(cfg) as runner:
        for batch in runner.device(0):
            batch = as_numpy(batch)
            assert batch["triple"].shape[1:] == (3,) and batch["ragged"].dtype == np.int32
            assert batch["x"].dtype == np.float32 and batch["id"].dtype == np.int64
            check_rows(batch)
            seen += batch["id"].tolist()
        info = runner.source_info["main"]
    assert sorted(seen) == list(range(ROWS)), "every row exactly once"
    assert seen != sorted(seen), "shuffled"
    assert info["rows"] == ROWS and info["format"] == ("arrow" if layout == "save_to_disk"
                                                       else "parquet")


def ordered_cfg(path: Path) -> dict:
    return make_cfg(source(path), batch_size=24, workers={"kind": "thread", "count": 2},
                    epoch={"shuffle": True, "ordered": True, "seed": 9, "count": 2,
                           "chunk_size": 16})


@pytest.mark.parametrize("layout", LAYOUTS)
def test_resume_mid_epoch_gives_exactly_the_uninterrupted_sequence(tmp_path, layout):
    path = saved(tmp_path, layout)
    ids = lambda b: b["id"].tolist()  # noqa: E731
    with Runner(ordered_cfg(path)) as runner:
        whole = [ids(b) for b in runner.device(0)] + [ids(b) for b in runner.device(0)]
    assert sorted(i for b in whole for i in b) == sorted(list(range(ROWS)) * 2)
    with Runner(ordered_cfg(path)) as runner:
        stream = runner.device(0)
        first = [ids(next(stream)) for _ in range(5)]
        state = pickle.loads(pickle.dumps(runner.state_dict()))
    resumed = Runner(ordered_cfg(path))
    resumed.load_state_dict(state)
    with resumed:
        stream = resumed.device(0)
        rest = [ids(b) for b in stream]
        rest += [ids(b) for b in stream]  # the second epoch
    assert first + rest == whole


def test_the_config_group_reads_one_split_of_a_dataset_dict(tmp_path):
    import inputkit

    train, test = numbers(200), numbers(ROWS).select(range(200, ROWS))
    datasets.DatasetDict({"train": train, "test": test}).save_to_disk(str(tmp_path / "dd"))
    cfg = inputkit.compose(["source=hf", f"source.path={tmp_path / 'dd'}", "source.split=test",
                            "source.columns=[id,triple]", "devices=cpu", "batch_size=64",
                            "epoch.count=1", "workers=threads"])
    with Runner(cfg) as runner:
        batches = [as_numpy(b) for b in runner.device(0)]
        info = runner.source_info["main"]
    assert set(batches[0]) == {"id", "triple"}
    assert sorted(np.concatenate([b["id"] for b in batches]).tolist()) == list(range(200, ROWS))
    assert info["layout"] == "DatasetDict" and info["split"] == "test"


# images ----------------------------------------------------------------------------------------

def pictures(n: int, size: tuple[int, int] = (12, 10)) -> list[np.ndarray]:
    """``n`` distinct RGB pictures of ``size`` (height, width): noise seeded by the index."""
    return [np.random.default_rng(i).integers(0, 256, (*size, 3), dtype=np.uint8)
            for i in range(n)]


def encoded(picture: np.ndarray, fmt: str) -> bytes:
    buf = io.BytesIO()
    Image.fromarray(picture).save(buf, format=fmt, **({"quality": 90} if fmt == "JPEG" else {}))
    return buf.getvalue()


def image_dataset(n: int, fmt: str) -> datasets.Dataset:
    features = datasets.Features({"img": datasets.Image(), "id": datasets.Value("int64")})
    return datasets.Dataset.from_dict(
        {"img": [{"bytes": encoded(p, fmt), "path": None} for p in pictures(n)],
         "id": list(range(n))}, features=features)


@pytest.mark.parametrize("layout", LAYOUTS)
@pytest.mark.parametrize("fmt", ["PNG", "JPEG"])
def test_images_are_decoded_exactly_through_the_image_path(tmp_path, fmt, layout):
    n = 70
    ds = image_dataset(n, fmt)
    if layout == "save_to_disk":
        ds.save_to_disk(str(tmp_path / "ds"))
        path = tmp_path / "ds"
    else:
        (tmp_path / "data").mkdir()
        ds.to_parquet(str(tmp_path / "data" / "train-00000-of-00001.parquet"), batch_size=16)
        path = tmp_path
    # the pictures' own size: the transform keeps every pixel; Pillow's decode, as the reference
    cfg = make_cfg({"_target_": HF, "path": str(path), "transforms": [{"resize": [12, 10]}],
                    "decode": {"backend": "pillow"}}, batch_size=16,
                   workers={"kind": "thread", "count": 2},
                   epoch={"shuffle": True, "seed": 1, "count": 1})
    stored = ds.cast_column("img", datasets.Image(decode=False))["img"]
    stored = [row["bytes"] for row in stored]  # the encoded bytes, as datasets stored them
    seen: list[int] = []
    with Runner(cfg) as runner:
        for batch in runner.device(0):
            batch = as_numpy(batch)
            assert batch["img"].shape[1:] == (3, 12, 10) and batch["img"].dtype == np.uint8
            for image, i in zip(batch["img"], batch["id"].tolist(), strict=True):
                reference = np.asarray(Image.open(io.BytesIO(stored[i])).convert("RGB"))
                assert np.array_equal(image.transpose(1, 2, 0), reference), f"image {i}"
            seen += batch["id"].tolist()
    assert sorted(seen) == list(range(n)) and seen != sorted(seen)
    if fmt == "PNG":  # lossless: the very pictures written
        src = HFSource(str(path), transforms=[{"resize": [12, 10]}])
        got = src.read(np.array([3, 0]))
        assert np.array_equal(got["img"][0].transpose(1, 2, 0), pictures(4)[3])
        src.close()


def test_an_image_stored_as_a_path_is_read_from_its_file(tmp_path):
    files = []
    for i, picture in enumerate(pictures(3)):
        files.append(tmp_path / f"{i}.png")
        Image.fromarray(picture).save(files[-1])
    ds = datasets.Dataset.from_dict({"img": [str(f) for f in files]}).cast_column(
        "img", datasets.Image())
    ds.save_to_disk(str(tmp_path / "ds"))
    src = HFSource(str(tmp_path / "ds"), transforms=[{"resize": [12, 10]}])
    got = src.read(np.array([2, 1, 0]))["img"]
    assert [np.array_equal(g.transpose(1, 2, 0), p) for g, p in zip(got, pictures(3)[::-1],
                                                                      strict=True)] == [True] * 3


def test_embedded_path_only_and_null_images_in_one_segment_each_read_from_their_own_row(
        tmp_path):
    """Rows' bytes are sliced from the segment's buffer by its offsets: a path-only row (no
    bytes) or a null row between embedded ones must not shift them; large_binary offsets too."""
    n = 9
    pics = pictures(n)
    values = []
    for i, picture in enumerate(pics):
        if i == 7:
            values.append(None)  # no image at all
        elif i % 3 == 0:
            Image.fromarray(picture).save(tmp_path / f"{i}.png")
            values.append({"bytes": None, "path": str(tmp_path / f"{i}.png")})
        else:
            values.append({"bytes": encoded(picture, "PNG"), "path": None})
    kind = pa.struct([("bytes", pa.large_binary()), ("path", pa.string())])
    table = pa.table({"img": pa.array(values, kind), "id": pa.array(range(n), pa.int64())})
    (tmp_path / "data").mkdir()
    import pyarrow.parquet as pq

    pq.write_table(table, str(tmp_path / "data" / "train-00000-of-00001.parquet"))
    src = HFSource(str(tmp_path), transforms=[{"resize": [12, 10]}])
    wanted = np.array([8, 0, 5, 3, 1, 6, 2, 4])
    got = src.read(wanted)
    assert got["id"].tolist() == wanted.tolist()
    for image, i in zip(got["img"], wanted.tolist(), strict=True):
        assert np.array_equal(image.transpose(1, 2, 0), pics[i]), f"row {i}"
    with pytest.raises(SourceError, match=r"row 7 .*column 'img' is null \(no image\)"):
        src.read(np.array([6, 7]))
    src.close()


def test_encoded_images_of_a_sliced_struct_array_start_at_its_offset():
    """A sliced Arrow array's buffers start before its first row: the offsets must be read
    from the slice's own offset."""
    kind = pa.struct([("bytes", pa.binary()), ("path", pa.string())])
    whole = pa.array([{"bytes": bytes([k]) * (k + 1), "path": None} for k in range(6)]
                     + [{"bytes": None, "path": "p6"}], kind)
    images = EncodedImages.of(whole.slice(2))
    begins, ends = images.spans(np.array([0, 3, 1]))
    assert [bytes(images.data[b:e]) for b, e in zip(begins, ends, strict=True)] == [
        b"\x02" * 3, b"\x05" * 6, b"\x03" * 4]
    assert images.missing is not None and images.missing.tolist() == [False] * 4 + [True]
    assert images.paths[4].as_py() == "p6"


# bad input -------------------------------------------------------------------------------------

def bad_case(tmp_path: Path, case: str) -> dict:
    keys: dict = {"path": str(tmp_path / "ds")}
    if case == "not a dataset":
        (tmp_path / "ds").mkdir()
        (tmp_path / "ds" / "notes.txt").write_text("hello")
    elif case == "no such folder":
        keys["path"] = str(tmp_path / "gone")
    elif case == "dataset dict without split":
        datasets.DatasetDict({"train": numbers(10), "test": numbers(10)}).save_to_disk(
            keys["path"])
    elif case == "unknown split":
        datasets.DatasetDict({"train": numbers(10)}).save_to_disk(keys["path"])
        keys["split"] = "validation"
    elif case == "cache folder with two splits":
        (tmp_path / "ds" / "data").mkdir(parents=True)
        for split in ("train", "test"):
            numbers(10).to_parquet(str(tmp_path / "ds" / "data" / f"{split}-00000-of-00001.parquet"))
    else:
        numbers(10).add_column("img", [{"bytes": encoded(p, "PNG"), "path": None}
                                       for p in pictures(10)],
                               feature=datasets.Image()).save_to_disk(keys["path"])
        if case == "every column":
            keys["pad"] = {"ragged": 2}
        keys["columns"] = {"missing column": ["id", "label2"], "string column": ["id", "name"],
                           "image without transforms": ["id", "img"],
                           "every column": None}[case]
    return {"_target_": HF, **keys}


BAD = [
    ("not a dataset", r"path: '.*ds' is not a Hugging Face dataset: it has no state\.json "
                      r"\(Dataset\.save_to_disk\), no dataset_dict\.json .* and no \.parquet or "
                      r"\.arrow files"),
    ("no such folder", r"path: '.*gone' is no such folder"),
    ("dataset dict without split", r"split: '.*ds' is a DatasetDict with the splits train, test; "
                                   r"choose one with source\.split=train"),
    ("unknown split", r"split: '.*ds' has no split 'validation'; its splits are train"),
    ("cache folder with two splits", r"split: '.*ds' holds the splits train, test; choose one "
                                     r"with source\.split=train"),
    ("missing column", r"columns: the dataset has no column 'label2'; its columns are: id, x, "
                       r"triple, ragged, label, name, img"),
    ("string column", r"column 'name' in '.*\.arrow' holds strings or bytes \(string\), which "
                      r"cannot become a tensor; leave it out with source\.columns"),
    ("image without transforms", r"transforms: column 'img' holds images \(the Image feature\), "
                                 r"which need one size: set source\.transforms"),
    ("every column", r"column 'name' .* holds strings or bytes .*; to read the others: "
                     r"source\.columns=\[id,x,triple,ragged,label,img\]"),
]


@pytest.mark.parametrize("case,message", BAD, ids=[c for c, _ in BAD])
def test_bad_input_is_one_config_error_naming_the_source_and_what_is_wrong(tmp_path, case,
                                                                           message):
    cfg = make_cfg(bad_case(tmp_path, case), batch_size=8, workers={"kind": "thread", "count": 1})
    with pytest.raises(ConfigError, match=r"source: inputkit\.sources\.hf\.HFSource: " + message):
        Runner(cfg).start()

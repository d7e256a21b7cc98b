"""source=parquet on real Parquet files: every row once, resume, row-group reads, projection,
list columns, and a clear error for every bad input."""

from __future__ import annotations

import pickle
from pathlib import Path

import numpy as np
import pytest
from conftest import make_cfg

pa = pytest.importorskip("pyarrow", reason="source=parquet needs pyarrow (the parquet extra)")
pq = pytest.importorskip("pyarrow.parquet", reason="source=parquet needs pyarrow.parquet")

from inputkit import ConfigError, Runner, SourceError  # noqa: E402
from inputkit.sources.parquet import ParquetSource  # noqa: E402

PARQUET = "inputkit.sources.parquet.ParquetSource"
THREADS = {"count": 3}
PROCESSES = {"kind": "process", "count": 2}


def table(ids: np.ndarray, **extra) -> pa.Table:
    """Rows ``ids``: id, a float, a fixed-size list (id, id+1, id+2), a ragged list of id % 5
    items (0, 1, ...), and a flag."""
    fixed = np.stack([ids, ids + 1, ids + 2], axis=1).reshape(-1)
    return pa.table({
        "id": pa.array(ids, pa.int64()),
        "x": pa.array(ids.astype(np.float32) / 2),
        "triple": pa.FixedSizeListArray.from_arrays(pa.array(fixed, pa.int64()), 3),
        "ragged": pa.array([list(range(i % 5)) for i in ids.tolist()], pa.list_(pa.int32())),
        "even": pa.array(ids % 2 == 0),
        **extra,
    })


def write_files(folder: Path, sizes=(130, 70, 200), row_group=40, **extra) -> list[Path]:
    """Files of ``sizes`` rows with consecutive ids, in row groups of ``row_group`` rows."""
    folder.mkdir(parents=True, exist_ok=True)
    paths, start = [], 0
    for k, size in enumerate(sizes):
        ids = np.arange(start, start + size, dtype=np.int64)
        path = folder / f"part-{k:02d}.parquet"
        pq.write_table(table(ids, **{n: f(ids) for n, f in extra.items()}), path,
                       row_group_size=row_group)
        paths.append(path)
        start += size
    return paths


def source(folder: Path, **keys) -> dict:
    return {"_target_": PARQUET, "files": str(folder / "*.parquet"), "pad": {"ragged": 3}, **keys}


def check_rows(batch: dict[str, np.ndarray]) -> None:
    """Every field of a batch belongs to the row its id names."""
    ids = batch["id"]
    assert np.array_equal(batch["x"], ids.astype(np.float32) / 2)
    assert np.array_equal(batch["triple"], np.stack([ids, ids + 1, ids + 2], axis=1))
    assert np.array_equal(batch["even"], ids % 2 == 0)
    expected = np.full((len(ids), 3), 0, np.int32)
    for k, i in enumerate(ids.tolist()):
        n = min(i % 5, 3)
        expected[k, :n] = np.arange(n)
    assert np.array_equal(batch["ragged"], expected)


def ids_of(batch) -> list[int]:
    return batch["id"].tolist()


# every row once ------------------------------------------------------------------------------

@pytest.mark.parametrize("workers", [THREADS, PROCESSES], ids=["threads", "processes"])
def test_every_row_exactly_once_over_two_devices_with_fields_aligned(tmp_path, workers):
    write_files(tmp_path)
    cfg = make_cfg(source(tmp_path), batch_size=32, devices=["cpu", "cpu"], workers=workers,
                   epoch={"shuffle": True, "seed": 5, "chunk_size": 25})
    seen: list[int] = []
    with Runner(cfg) as runner:
        for step in runner.steps():
            for batch in step:
                if batch is not None:
                    batch = {k: v.numpy() for k, v in batch.items()}
                    assert batch["triple"].shape[1:] == (3,) and batch["ragged"].dtype == np.int32
                    check_rows(batch)
                    seen += ids_of(batch)
        stats = runner.stats().coordinators
    assert sorted(seen) == list(range(400)), "every row exactly once"
    assert seen != sorted(seen), "shuffled"
    if workers is PROCESSES:  # read_into wrote every chunk straight into shared memory
        assert all(c.workers.shm_chunks_in_place == c.workers.chunks > 0 for c in stats)


def ordered_cfg(folder: Path) -> dict:
    return make_cfg(source(folder), batch_size=24, workers={"count": 2},
                    epoch={"shuffle": True, "ordered": True, "seed": 9, "count": 2,
                           "chunk_size": 16})


def test_resume_mid_epoch_gives_exactly_the_uninterrupted_sequence(tmp_path):
    write_files(tmp_path)
    with Runner(ordered_cfg(tmp_path)) as runner:
        whole = [ids_of(b) for b in runner.device(0)] + [ids_of(b) for b in runner.device(0)]
    assert sorted(i for b in whole for i in b) == sorted(list(range(400)) * 2)
    with Runner(ordered_cfg(tmp_path)) as runner:
        stream = runner.device(0)
        first = [ids_of(next(stream)) for _ in range(7)]
        state = pickle.loads(pickle.dumps(runner.state_dict()))
    resumed = Runner(ordered_cfg(tmp_path))
    resumed.load_state_dict(state)
    with resumed:
        stream = resumed.device(0)
        rest = [ids_of(b) for b in stream]
        rest += [ids_of(b) for b in stream]  # the second epoch
    assert first + rest == whole


def test_the_cli_config_group_builds_the_source(tmp_path):
    import inputkit

    write_files(tmp_path)
    cfg = inputkit.compose(["source=parquet", f"source.files={tmp_path}",
                            "source.columns=[id,triple]", "devices=cpu", "batch_size=64",
                            "epoch.count=1"])
    with Runner(cfg) as runner:
        batches = [{k: v.numpy() for k, v in b.items()} for b in runner.device(0)]
        info = runner.source_info["main"]
    assert set(batches[0]) == {"id", "triple"}
    assert sorted(np.concatenate([b["id"] for b in batches]).tolist()) == list(range(400))
    assert info["rows"] == 400 and info["files"] == 3 and list(info["columns"]) == ["id", "triple"]


# how it reads --------------------------------------------------------------------------------

def counting(src: ParquetSource) -> list[int]:
    """Wrap the source's row-group decoder; the list receives each row group it decodes."""
    decoded: list[int] = []
    decode = src._decode_row_group

    def counted(g: int):
        decoded.append(g)
        return decode(g)

    src._decode_row_group = counted  # type: ignore[method-assign]
    return decoded


def test_a_range_decodes_only_the_row_groups_it_touches_and_each_once(tmp_path):
    write_files(tmp_path)  # row groups: 0-39, 40-79, 80-119, 120-129 | 130-169, 170-199 | 200-...
    src = ParquetSource(str(tmp_path / "*.parquet"), pad={"ragged": 3})
    assert len(src) == 400 and len(src.groups) == 4 + 2 + 5
    decoded = counting(src)
    last = src.read(np.arange(365, 400))  # inside the last row group (360-399)
    assert decoded == [10]
    check_rows(last)
    src.read(np.arange(370, 380))
    assert decoded == [10], "the next chunk of the same row group comes from the cache"
    spanning = src.read(np.arange(110, 175))  # file 0's end, file 1's two groups
    assert decoded == [10, 2, 3, 4, 5]
    assert ids_of(spanning) == list(range(110, 175))
    check_rows(spanning)


def test_shuffled_indices_decode_each_row_group_touched_once_and_keep_their_order(tmp_path):
    write_files(tmp_path)
    src = ParquetSource(str(tmp_path / "*.parquet"), pad={"ragged": 3}, cache_row_groups=2)
    decoded = counting(src)
    indices = np.array([399, 5, 131, 7, 398, 131, 60, 6])
    got = src.read(indices)
    assert ids_of(got) == indices.tolist()
    check_rows(got)
    assert sorted(decoded) == [0, 1, 4, 10] and len(set(decoded)) == len(decoded)
    assert src.read_scratch()[0] == 2 * src.group_bytes > 0


def test_threads_share_the_cache_and_decode_the_next_row_group_while_one_decodes(tmp_path):
    """Thread b wants row group 0 while thread a decodes it: b decodes row group 1 (what the
    reads after its own want) meanwhile, then waits for a's decode; each is decoded once."""
    import threading
    import time

    write_files(tmp_path)
    src = ParquetSource(str(tmp_path / "*.parquet"), pad={"ragged": 3})
    entered = {g: threading.Event() for g in (0, 1)}
    release = {g: threading.Event() for g in (0, 1)}
    decoded: list[int] = []
    decode = src._decode_row_group

    def slow(g: int):
        decoded.append(g)
        entered[g].set()
        assert release[g].wait(30)
        return decode(g)

    src._decode_row_group = slow  # type: ignore[method-assign]
    got: dict[str, list[int]] = {}
    readers = [threading.Thread(target=lambda r=r, k=k: got.__setitem__(k, ids_of(src.read(r))))
               for k, r in (("a", np.arange(0, 10)), ("b", np.arange(10, 20)))]
    readers[0].start()
    assert entered[0].wait(30)
    readers[1].start()
    assert entered[1].wait(30), "b decodes row group 1 while a decodes row group 0"
    release[1].set()
    deadline = time.monotonic() + 30
    while src._cache.waits == 0 and time.monotonic() < deadline:
        time.sleep(0.01)
    release[0].set()
    for t in readers:
        t.join(30)
    assert src._cache.waits == 1 and src._cache.ahead_decodes == 1 and decoded == [0, 1]
    assert src._cache.capacity == 2 * 2, "each thread brings cache_row_groups to the pool"
    assert got == {"a": list(range(10)), "b": list(range(10, 20))}
    assert ids_of(src.read(np.arange(40, 60))) == list(range(40, 60)) and decoded == [0, 1]
    src.close()


def test_a_row_group_that_fails_to_decode_ahead_fails_the_read_that_wants_it(tmp_path):
    """A decode ahead that raises caches nothing and fails no read; the read of that row
    group decodes it again and raises its error."""
    write_files(tmp_path)
    src = ParquetSource(str(tmp_path / "*.parquet"), pad={"ragged": 3})
    decode = src._decode_row_group

    def broken(g: int):
        if g == 1:
            raise SourceError("test", "row group 1 is damaged")
        return decode(g)

    src._decode_row_group = broken  # type: ignore[method-assign]
    src._cache.ahead(1, src._decode_row_group)
    assert 1 not in src._cache and src._cache.ahead_decodes == 1
    assert ids_of(src.read(np.arange(0, 10))) == list(range(10))
    with pytest.raises(SourceError, match="row group 1 is damaged"):
        src.read(np.arange(40, 50))
    src.close()


def test_projection_reads_only_the_listed_columns(tmp_path):
    # a string column, which cannot become a field, does not matter when it is not read
    write_files(tmp_path, name=lambda ids: pa.array([f"row {i}" for i in ids.tolist()]))
    src = ParquetSource(str(tmp_path / "*.parquet"), columns=["triple", "id"])
    got = src.read(np.arange(10, 20))
    assert list(got) == ["triple", "id"]
    assert got["triple"][:, 0].tolist() == list(range(10, 20))
    assert pickle.loads(pickle.dumps(src)).read(np.array([3]))["id"].tolist() == [3]


def test_fixed_size_lists_become_2d_and_nested_ones_3d(tmp_path):
    ids = np.arange(12, dtype=np.int64)
    inner = pa.FixedSizeListArray.from_arrays(pa.array(np.arange(12 * 6, dtype=np.float32)), 3)
    path = tmp_path / "nested.parquet"
    pq.write_table(pa.table({"id": ids, "grid": pa.FixedSizeListArray.from_arrays(inner, 2)}),
                   path, row_group_size=5)
    got = ParquetSource(str(path)).read(np.array([11, 0, 6]))
    assert got["grid"].shape == (3, 2, 3) and got["grid"].dtype == np.float32
    assert np.array_equal(got["grid"], np.arange(72, dtype=np.float32).reshape(12, 2, 3)[[11, 0, 6]])


def test_ragged_lists_are_padded_or_cut_and_a_null_list_is_empty(tmp_path):
    path = tmp_path / "ragged.parquet"
    lists = [[1, 2, 3, 4, 5], [6], None, [], [7, 8]]
    pq.write_table(pa.table({"ids": pa.array(lists, pa.list_(pa.int64()))}), path)
    got = ParquetSource(str(path), pad={"ids": 3}, pad_value=-1).read(np.arange(5))
    assert got["ids"].tolist() == [[1, 2, 3], [6, -1, -1], [-1, -1, -1], [-1, -1, -1], [7, 8, -1]]
    even = tmp_path / "even" / "even.parquet"
    even.parent.mkdir()
    pq.write_table(pa.table({"ids": pa.array([[1, 2], [3, 4], [5, 6]])}), even)
    assert ParquetSource(str(even), pad={"ids": 2}).read(np.array([2, 0]))["ids"].tolist() == \
        [[5, 6], [1, 2]]


def test_the_memory_plan_counts_each_workers_row_group_and_no_private_chunk(tmp_path):
    from inputkit import load_spec
    from inputkit.planning.memory import plan_memory

    write_files(tmp_path)
    spec = load_spec(make_cfg(source(tmp_path), batch_size=16, workers=PROCESSES))
    terms = {t.stage: t for t in plan_memory(spec, devices=("cpu",)).terms}
    decode = terms["decoding in workers"]
    # 40 rows x (8 + 4 + 24 + 12 + 1) B converted, plus the ragged list's values and offsets
    # two (source.cache_row_groups) row groups of 40 rows x (8 + 4 + 24 + 12 + 1) B, converted,
    # plus the ragged list's values and offsets
    assert 2 * 40 * 49 < decode.unit_bytes <= 2 * (40 * 49 + 40 * 4 * 4 + 41 * 8)
    assert "row group" in decode.detail and decode.count == 2
    assert "chunks in worker processes" not in terms  # read_into writes into the slot


# bad input -----------------------------------------------------------------------------------

def truncate(path: Path, keep: int) -> None:
    data = path.read_bytes()
    path.write_bytes(data[:keep])


def bad_case(tmp_path: Path, case: str) -> dict:
    """The source config of one bad input."""
    paths = write_files(tmp_path / "data", sizes=(50, 50), row_group=20)
    keys: dict = {"files": str(tmp_path / "data" / "*.parquet"), "pad": {"ragged": 3}}
    if case == "no match":
        keys["files"] = str(tmp_path / "nowhere" / "*.parquet")
    elif case == "missing path":
        keys["files"] = [str(paths[0]), str(tmp_path / "gone.parquet")]
    elif case == "empty directory":
        (tmp_path / "empty").mkdir()
        keys["files"] = str(tmp_path / "empty")
    elif case == "truncated":
        truncate(paths[1], paths[1].stat().st_size // 2)
    elif case == "not parquet":
        paths[0].write_text("id,x\n1,2\n")
    elif case == "missing column":
        keys["columns"] = ["id", "label"]
    elif case == "type differs":
        ids = np.arange(50, 100)
        pq.write_table(table(ids).set_column(1, "x", pa.array(ids.astype(np.float64))), paths[1])
    elif case == "column missing in a file":
        pq.write_table(table(np.arange(50, 100)).drop_columns(["even"]), paths[1])
    elif case == "extra column in a file":
        ids = np.arange(50, 100)
        pq.write_table(table(ids, more=pa.array(ids)), paths[1])
    elif case == "ragged without pad":
        del keys["pad"]
    elif case == "string column":
        pq.write_table(table(np.arange(50), name=pa.array(["a"] * 50)), paths[0])
        pq.write_table(table(np.arange(50, 100), name=pa.array(["b"] * 50)), paths[1])
    elif case == "every column, two unreadable":
        del keys["pad"]
        pq.write_table(table(np.arange(50), name=pa.array(["a"] * 50)), paths[0])
    elif case == "zero rows":
        for p in paths:
            pq.write_table(table(np.arange(0)), p)
    elif case == "pad on a number":
        keys["pad"] = {"ragged": 3, "id": 4}
    elif case == "pad value does not fit":
        keys["pad_value"] = 2**40
    elif case == "listed twice":
        keys["files"] = [str(paths[0]), str(paths[0])]
    return {"_target_": PARQUET, **keys}


BAD = [
    ("no match", r"files: no files match '.*nowhere/\*\.parquet'"),
    ("missing path", r"files: no such file or directory: '.*gone\.parquet'"),
    ("empty directory", r"files: the directory '.*empty' holds no \.parquet files"),
    ("truncated", r"'.*part-01\.parquet' is not a Parquet file, or is corrupt or truncated"),
    ("not parquet", r"'.*part-00\.parquet' is not a Parquet file, or is corrupt or truncated"),
    ("missing column", r"columns: '.*part-00\.parquet' has no column 'label'; its columns are: "
                       r"id, x, triple, ragged, even"),
    ("type differs", r"column 'x' is double in '.*part-01\.parquet' but float in "
                     r"'.*part-00\.parquet'; every file needs the same type per column"),
    ("column missing in a file", r"'.*part-01\.parquet' has no column 'even', which "
                                 r"'.*part-00\.parquet' has"),
    ("extra column in a file", r"'.*part-01\.parquet' has a column 'more' that '.*part-00\.parquet' "
                               r"lacks; .* list the columns to read in source\.columns"),
    ("ragged without pad", r"column 'ragged' in '.*part-00\.parquet' holds lists of varying length "
                           r".*set source\.pad=\{ragged: LENGTH\}"),
    ("string column", r"column 'name' in '.*part-00\.parquet' holds strings or bytes \(string\), "
                      r"which cannot become a tensor; leave it out with source\.columns"),
    ("every column, two unreadable", r"column 'ragged' .* holds lists of varying length .*; nor "
                                     r"can 'name' \(string\) become fields; to read the others: "
                                     r"source\.columns=\[id,x,triple,even\]"),
    ("zero rows", r"files: the 2 file\(s\) from .* hold no rows"),
    ("pad on a number", r"pad\.id: column 'id' holds single numbers \(int64\), not lists; "
                        r"remove it from source\.pad"),
    ("pad value does not fit", r"pad_value: 1099511627776 does not fit column 'ragged' \(int32\)"),
    ("listed twice", r"files: '.*part-00\.parquet' is listed twice"),
]


@pytest.mark.parametrize("case,message", BAD, ids=[c for c, _ in BAD])
def test_bad_input_is_a_config_error_naming_source_and_the_file_column_or_key(tmp_path, case,
                                                                               message):
    cfg = make_cfg(bad_case(tmp_path, case), batch_size=8)
    with pytest.raises(ConfigError, match=r"source: inputkit\.sources\.parquet\.ParquetSource: "
                                          + message):
        Runner(cfg).start()


def test_damaged_data_and_nulls_are_source_errors_naming_file_row_group_and_column(tmp_path):
    ids = np.arange(100, dtype=np.int64)
    path = tmp_path / "damaged.parquet"
    pq.write_table(pa.table({"id": ids, "x": ids * 2.0}), path, row_group_size=25)
    chunk = pq.read_metadata(path).row_group(2).column(0)
    data = bytearray(path.read_bytes())
    data[chunk.data_page_offset:chunk.data_page_offset + chunk.total_compressed_size] = \
        b"\xff" * chunk.total_compressed_size
    path.write_bytes(bytes(data))
    src = ParquetSource(str(path))  # the footer is whole
    assert src.read(np.arange(20))["id"].tolist() == list(range(20))
    with pytest.raises(SourceError, match=r"'.*damaged\.parquet' \(row group 2\) cannot be read; "
                                          r"the file is corrupt or truncated"):
        src.read(np.arange(55, 60))
    cfg = make_cfg({"_target_": PARQUET, "files": str(path)}, batch_size=10,
                   failures={"on_error": "skip"}, epoch={"count": 1})
    with Runner(cfg) as runner:
        got = sorted(i for batch in runner.device(0) for i in ids_of(batch))
        skipped = runner.stats().coordinators[0].workers.skipped_indices
    assert got == list(range(50)) + list(range(75, 100)), "the damaged row group alone is skipped"
    assert sorted(skipped) == list(range(50, 75))
    holes = tmp_path / "holes.parquet"
    pq.write_table(pa.table({"id": ids, "score": pa.array([None if i == 70 else 1.0 for i in ids])}),
                   holes, row_group_size=50)
    src = ParquetSource(str(holes))
    assert src.read(np.arange(50))["score"].sum() == 50
    with pytest.raises(SourceError, match=r"field 'score': column 'score' has 1 null rows in "
                                          r"'.*holes\.parquet' \(row group 1\)"):
        src.read(np.array([3, 70]))


def test_argument_checks(tmp_path):
    write_files(tmp_path)
    files = str(tmp_path / "*.parquet")
    for kwargs, message in [
        ({"files": []}, "files: expected a glob pattern"),
        ({"files": files, "pad": [3]}, r"pad: expected \{column: length"),
        ({"files": files, "pad": {"ragged": 0}}, "pad.ragged: expected a whole number"),
        ({"files": files, "pad": {"ragged": 2, "nope": 2}}, "pad.nope: no column 'nope' is read"),
        ({"files": files, "pad": {"ragged": 2}, "cache_row_groups": 0}, "cache_row_groups"),
        ({"files": files, "columns": ["id", "id"]}, "lists a field twice"),
    ]:
        with pytest.raises(ValueError, match=message):
            ParquetSource(**kwargs)
    src = ParquetSource(files, columns="id")
    with pytest.raises(IndexError, match=r"indices must lie in 0\.\.399"):
        src.read(np.array([400]))
    assert src.read(np.array([], np.int64))["id"].shape == (0,)


# nulls: only the rows that hold one ------------------------------------------------------------

def holes_file(path: Path) -> Path:
    """120 rows in row groups of 30: a null score at row 47; a null item at row 50 of
    ``triple`` and a null list at row 55; in ``ragged`` (pad 3) a null item kept at row 70,
    one past the cut at row 80 and a null list at row 60."""
    ids = np.arange(120, dtype=np.int64)
    fixed = pa.array([None if k == 3 * 50 + 1 else k for k in range(360)], pa.int64())
    triple = pa.FixedSizeListArray.from_arrays(fixed, 3, mask=pa.array(ids == 55))
    ragged = [None if i == 60 else [1, None, 3] if i == 70 else [1, 2, 3, None] if i == 80
              else [int(i)] for i in ids.tolist()]
    pq.write_table(pa.table({
        "id": ids, "score": pa.array([None if i == 47 else float(i) for i in ids.tolist()]),
        "triple": triple, "ragged": pa.array(ragged, pa.list_(pa.int32()))}),
        path, row_group_size=30)
    return path


@pytest.mark.parametrize("workers", [THREADS, PROCESSES], ids=["threads", "processes"])
def test_a_null_under_skip_drops_only_its_row_and_every_other_row_arrives_once(tmp_path, workers):
    """One null at row 47 of a row group of 30 (rows 30-59) used to skip all 30 rows."""
    holes = holes_file(tmp_path / "holes.parquet")
    cfg = make_cfg({"_target_": PARQUET, "files": str(holes), "columns": ["id", "score"]},
                   batch_size=10, workers=workers, failures={"on_error": "skip"},
                   epoch={"count": 1, "shuffle": True, "seed": 3})
    with Runner(cfg) as runner:
        batches = [{k: v.numpy() for k, v in b.items()} for b in runner.device(0)]
        stats = runner.stats().coordinators[0].workers
    got = [i for b in batches for i in ids_of(b)]
    assert sorted(got) == [i for i in range(120) if i != 47], "every other row, exactly once"
    assert all(np.array_equal(b["score"], b["id"].astype(np.float64)) for b in batches)
    assert stats.skipped_samples == 1 and list(stats.skipped_indices) == [47]
    assert "column 'score' has 1 null rows" in stats.skipped_errors[0]


def test_a_read_fails_only_when_it_reaches_a_row_with_a_null_in_a_column_it_keeps(tmp_path):
    src = ParquetSource(str(holes_file(tmp_path / "holes.parquet")), pad={"ragged": 3})
    got = src.read(np.r_[30:47, 48:50, 56:60, 80])  # row group 1 but its null rows; row 80's
    assert ids_of(got) == [*range(30, 47), 48, 49, *range(56, 60), 80]  # null is past the cut
    assert got["ragged"][-1].tolist() == [1, 2, 3]
    assert src.read(np.array([60]))["ragged"].tolist() == [[0, 0, 0]], "a null list is empty"
    for rows, column, row in [(np.arange(40, 50), "score", 47), (np.array([50]), "triple", 50),
                              (np.array([90, 55]), "triple", 55), (np.array([71, 70]), "ragged", 70)]:
        with pytest.raises(SourceError, match=rf"field '{column}': column '{column}' has \d null "
                                              rf"rows in '.*holes\.parquet' \(row group \d\); of "
                                              rf"the rows read, row {row} holds one\. A tensor has "
                                              rf"no nulls: set source\.fill_null=\{{{column}: "):
            src.read(rows)


def test_fill_null_replaces_nulls_per_column_or_with_one_value(tmp_path):
    import inputkit

    holes = holes_file(tmp_path / "holes.parquet")
    src = ParquetSource(str(holes), pad={"ragged": 3},
                        fill_null={"score": -1.5, "triple": -7, "ragged": 9})
    every = src.read(np.arange(120))
    assert every["score"][47] == -1.5 and every["score"][46] == 46.0
    assert every["triple"][50].tolist() == [150, -7, 152]
    assert every["triple"][55].tolist() == [-7, -7, -7], "a null list: fill_null in every item"
    assert every["ragged"][70].tolist() == [1, 9, 3] and every["ragged"][60].tolist() == [0, 0, 0]
    assert src.run_info()["fill_null"] == {"score": -1.5, "triple": -7, "ragged": 9}
    cfg = inputkit.compose(["source=parquet", f"source.files={holes}", "source.pad={ragged: 3}",
                            "source.fill_null=0", "devices=cpu", "batch_size=40",
                            "epoch.count=1"])
    with Runner(cfg) as runner:
        batches = [{k: v.numpy() for k, v in b.items()} for b in runner.device(0)]
        skipped = runner.stats().coordinators[0].workers.skipped_samples
    score = np.concatenate([b["score"] for b in batches])[np.argsort(
        np.concatenate([b["id"] for b in batches]))]
    assert len(score) == 120 and skipped == 0 and score[47] == 0 and score[48] == 48


@pytest.mark.parametrize("fill, message", [
    ({"nope": 1}, r"fill_null\.nope: no column 'nope' is read \(the columns are id, score, "
                  r"triple, ragged\); remove it from source\.fill_null"),
    ("x", r"fill_null: expected a number \(for every column\) or \{column: number"),
    (0.5, r"fill_null: 0\.5 does not fit column 'id' \(int64\); give that column its own: "
          r"source\.fill_null=\{id: VALUE"),
    ({"id": -1.5}, r"fill_null\.id: -1\.5 does not fit column 'id' \(int64\)"),
    ({"score": "a"}, r"fill_null\.score: expected a number to fill the nulls of column 'score'"),
])
def test_a_bad_fill_null_is_a_config_error_naming_the_key(tmp_path, fill, message):
    holes = holes_file(tmp_path / "holes.parquet")
    cfg = make_cfg({"_target_": PARQUET, "files": str(holes), "pad": {"ragged": 3},
                    "fill_null": fill}, batch_size=8)
    with pytest.raises(ConfigError, match=r"source: inputkit\.sources\.parquet\.ParquetSource: "
                                          + message):
        Runner(cfg).start()

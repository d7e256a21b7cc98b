"""tokens, parquet, arrays and shards over URLs: the same files in a bucket (moto's S3 server on
127.0.0.1) or behind a local HTTP server give exactly the samples they give from disk; braces and
globs list the bucket; a missing object fails at once naming its URL; under on_error=skip an
unreadable token window or Parquet row group is skipped alone and counted; bytes are counted."""

from __future__ import annotations

import io
import tarfile
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from conftest import make_cfg

from inputkit import Runner, SourceError, storage
from inputkit.errors import SourceExhausted
from inputkit.sources.arrays import ArraySource
from inputkit.sources.shards import ShardSource
from inputkit.sources.tokens import TokenSource

pa = pytest.importorskip("pyarrow")
pq = pytest.importorskip("pyarrow.parquet")
from inputkit.sources.parquet import ParquetSource  # noqa: E402 - after pyarrow's skip

TOKENS = "inputkit.sources.tokens.TokenSource"
PARQUET = "inputkit.sources.parquet.ParquetSource"
THREADS = {"count": 2}
PROCESSES = {"kind": "process", "count": 2}


def put_folder(bucket: Any, folder: Path, prefix: str) -> None:
    """Every file of ``folder`` (flat) at ``prefix/<name>`` in the bucket."""
    for path in sorted(folder.iterdir()):
        bucket.put(f"{prefix}/{path.name}", path.read_bytes())


def token_files(folder: Path, sizes: list[int], npy: bool = False) -> np.ndarray:
    """Files of consecutive uint16 ids (a token's value is its stream position)."""
    folder.mkdir(parents=True, exist_ok=True)
    pos = 0
    for i, n in enumerate(sizes):
        arr = np.arange(pos, pos + n).astype(np.uint16)
        path = folder / (f"part{i:02d}.npy" if npy else f"part{i:02d}.bin")
        np.save(path, arr) if npy else arr.tofile(path)
        pos += n
    return np.arange(pos).astype(np.uint16)


def drain(runner: Runner, field: str) -> list[int]:
    stream, got = runner.device(0), []
    while not stream.finished:
        got.extend(v for b in stream for v in b[field].reshape(-1).tolist())
    return got


def same_chunks(a: dict[str, np.ndarray], b: dict[str, np.ndarray]) -> None:
    assert a.keys() == b.keys()
    for name in a:
        assert a[name].dtype == b[name].dtype and np.array_equal(a[name], b[name]), name


# tokens -----------------------------------------------------------------------------------------

@pytest.mark.parametrize("npy", [False, True], ids=["bin", "npy"])
def test_tokens_from_a_bucket_read_the_windows_of_the_local_files(tmp_path, s3_bucket, npy):
    """Raw and .npy files, stream mode with windows across files: every window of a shuffled
    read is byte-identical to the local source's, nothing is mapped, and bytes are counted."""
    token_files(tmp_path / "tok", [3000, 1000, 2100], npy=npy)
    put_folder(s3_bucket, tmp_path / "tok", "tok")
    ext = "npy" if npy else "bin"
    kw = {"seq_len": 32, "fields": ["input_ids", "labels", "tokens", "id"]} | (
        {} if npy else {"dtype": "uint16"})
    local = TokenSource(str(tmp_path / "tok" / f"*.{ext}"), **kw)
    before = storage.stats()["bytes_read"]
    remote = TokenSource(s3_bucket.url(f"tok/part{{00..02}}.{ext}"), **kw)
    assert remote.paths == [s3_bucket.url(f"tok/part{i:02d}.{ext}") for i in range(3)]
    assert len(remote) == len(local) and remote.mapped_bytes() == (0, "")
    order = np.random.default_rng(3).permutation(len(local))
    for chunk in (order[:17], np.arange(80, 120), order[-40:]):
        same_chunks(remote.read(chunk), local.read(chunk))
    assert storage.stats()["bytes_read"] - before >= 97 * 33 * 2
    assert remote.sample_groups().tolist() == local.sample_groups().tolist()
    assert set(remote.sample_groups().tolist()) == {0, 1, 2}


@pytest.mark.parametrize("workers", [THREADS, PROCESSES], ids=["threads", "processes"])
def test_tokens_from_a_bucket_through_the_runner_match_local_with_the_same_seed(
        tmp_path, s3_bucket, workers):
    token_files(tmp_path / "tok", [2000, 1500])
    put_folder(s3_bucket, tmp_path / "tok", "tok")

    def run(files: str) -> list[int]:
        source = {"_target_": TOKENS, "files": files, "dtype": "uint16", "seq_len": 16,
                  "fields": ["tokens"]}
        cfg = make_cfg(source, batch_size=8, workers=workers,
                       epoch={"shuffle": True, "seed": 5, "chunk_size": 6, "count": 1,
                              "ordered": True})
        with Runner(cfg) as runner:
            return drain(runner, "tokens")

    local = run(str(tmp_path / "tok" / "*.bin"))
    remote = run(s3_bucket.url("tok/*.bin"))
    assert len(local) == ((3500 - 17) // 16 + 1) * 17
    assert remote == local, "the same windows in the same order"


def test_tokens_missing_object_fails_at_once_naming_the_url(tmp_path, s3_bucket):
    token_files(tmp_path / "tok", [500])
    put_folder(s3_bucket, tmp_path / "tok", "tok")
    missing = s3_bucket.url("tok/part07.bin")
    with pytest.raises(SourceError, match=missing.replace(".", r"\.")) as caught:
        TokenSource([s3_bucket.url("tok/part00.bin"), missing], seq_len=8, dtype="uint16")
    assert caught.value.kind == "not_found"
    with pytest.raises(SourceError, match=r"files: .*part9\*\.bin: no objects match"):
        TokenSource(s3_bucket.url("tok/part9*.bin"), seq_len=8, dtype="uint16")


def test_tokens_a_deleted_object_skips_its_windows_alone_and_counts_them(tmp_path, s3_bucket):
    """per_file windows; the second file goes away once the first batch has arrived (the
    queues hold at most a few chunks, far fewer than the first file's): under on_error=skip
    its windows alone are skipped and counted, every other window arrives once."""
    token_files(tmp_path / "tok", [2000, 330, 330])
    put_folder(s3_bucket, tmp_path / "tok", "tok")
    source = {"_target_": TOKENS, "files": s3_bucket.url("tok/*.bin"), "dtype": "uint16",
              "seq_len": 32, "mode": "per_file", "fields": ["id", "tokens"]}
    cfg = make_cfg(source, batch_size=5, workers={"count": 1}, queue={"capacity": 1,
                                                                      "batch_capacity": 1},
                   failures={"on_error": "skip", "max_skip_share": None,
                             "max_consecutive_skips": None}, epoch={"count": 1, "chunk_size": 5})
    first, per_file = (2000 - 33) // 32 + 1, (330 - 33) // 32 + 1
    with Runner(cfg) as runner:
        stream = runner.device(0)
        got = next(iter(stream))["id"].tolist()
        s3_bucket.server.delete(s3_bucket.url("tok/part01.bin"))
        got += drain(runner, "id")
        workers = runner.stats().coordinators[0].workers
        skipped, errors = sorted(workers.skipped_indices), list(workers.skipped_errors)
    assert skipped == list(range(first, first + per_file))
    assert sorted(got) == list(range(first)) + list(range(first + per_file, first + 2 * per_file))
    assert s3_bucket.url("tok/part01.bin") in errors[0]


# parquet ----------------------------------------------------------------------------------------

def parquet_files(folder: Path, files: int = 3, rows: int = 120) -> None:
    folder.mkdir(parents=True, exist_ok=True)
    for f in range(files):
        ids = np.arange(f * rows, (f + 1) * rows, dtype=np.int64)
        table = pa.table({"id": ids, "x": ids * 0.5,
                          "vec": pa.array([[int(i), int(i) + 1] for i in ids],
                                          pa.list_(pa.int32(), 2))})
        pq.write_table(table, folder / f"part-{f}.parquet", row_group_size=25)


def test_parquet_from_a_bucket_reads_the_rows_of_the_local_files(tmp_path, s3_bucket):
    parquet_files(tmp_path / "pq")
    put_folder(s3_bucket, tmp_path / "pq", "pq")
    local = ParquetSource(str(tmp_path / "pq"))
    for files in (s3_bucket.url("pq/"), s3_bucket.url("pq/*.parquet"),
                  s3_bucket.url("pq/part-{0..2}.parquet")):
        remote = ParquetSource(files)
        assert remote.files == [s3_bucket.url(f"pq/part-{f}.parquet") for f in range(3)]
        order = np.random.default_rng(1).permutation(len(local))
        for chunk in (order[:50], np.arange(90, 160)):
            same_chunks(remote.read(chunk), local.read(chunk))
        assert remote.sample_groups().tolist() == [f for f in range(3) for _ in range(120)]
        remote.close()


def test_parquet_from_a_bucket_reads_footers_once_and_only_the_row_groups_read(
        tmp_path, s3_bucket):
    parquet_files(tmp_path / "pq", files=1, rows=1000)
    put_folder(s3_bucket, tmp_path / "pq", "pq")
    size = (tmp_path / "pq" / "part-0.parquet").stat().st_size
    remote = ParquetSource(s3_bucket.url("pq/part-0.parquet"), columns=["id"])
    before = storage.stats()["bytes_read"]
    assert remote.read(np.arange(10))["id"].tolist() == list(range(10))
    one_group = storage.stats()["bytes_read"] - before
    assert 0 < one_group < size // 4, "one row group's id column, not the file"
    import pickle

    copy = pickle.loads(pickle.dumps(remote))
    before = storage.stats()["requests"]
    assert copy.read(np.arange(500, 510))["id"].tolist() == list(range(500, 510))
    assert storage.stats()["requests"] - before == 1, "the footer travels; one column chunk read"
    remote.close()
    copy.close()


@pytest.mark.parametrize("workers", [THREADS, PROCESSES], ids=["threads", "processes"])
def test_parquet_damaged_row_group_in_a_bucket_is_skipped_alone(tmp_path, s3_bucket, workers):
    ids = np.arange(100, dtype=np.int64)
    path = tmp_path / "damaged.parquet"
    pq.write_table(pa.table({"id": ids, "x": ids * 2.0}), path, row_group_size=25)
    chunk = pq.read_metadata(path).row_group(2).column(0)
    data = bytearray(path.read_bytes())
    data[chunk.data_page_offset:chunk.data_page_offset + chunk.total_compressed_size] = \
        b"\xff" * chunk.total_compressed_size
    url = s3_bucket.put("damaged.parquet", bytes(data))
    with pytest.raises(SourceError, match=r"damaged\.parquet' \(row group 2\) cannot be read"):
        ParquetSource(url).read(np.arange(55, 60))
    cfg = make_cfg({"_target_": PARQUET, "files": url}, batch_size=10, workers=workers,
                   failures={"on_error": "skip"}, epoch={"count": 1})
    with Runner(cfg) as runner:
        got = sorted(drain(runner, "id"))
        skipped = runner.stats().coordinators[0].workers.skipped_indices
    assert got == list(range(50)) + list(range(75, 100)), "the damaged row group alone is skipped"
    assert sorted(skipped) == list(range(50, 75))


def test_parquet_missing_object_fails_at_once_naming_the_url(tmp_path, s3_bucket):
    parquet_files(tmp_path / "pq", files=1)
    put_folder(s3_bucket, tmp_path / "pq", "pq")
    missing = s3_bucket.url("pq/part-5.parquet")
    with pytest.raises((SourceError, ValueError), match=missing.replace(".", r"\.")):
        ParquetSource([s3_bucket.url("pq/part-0.parquet"), missing])
    with pytest.raises(ValueError, match=r"no \.parquet objects under"):
        ParquetSource(s3_bucket.url("elsewhere"))


# shards -----------------------------------------------------------------------------------------

def write_shards(folder: Path, sizes: list[int], gz: bool = False) -> list[Path]:
    """Shards train-000.tar(.gz), ... of samples numbered on across shards: ``k.x.npy`` (16
    floats, the first k) and ``k.label.cls`` (k)."""
    folder.mkdir(parents=True, exist_ok=True)
    paths, start = [], 0
    for s, size in enumerate(sizes):
        path = folder / f"train-{s:03d}.tar{'.gz' if gz else ''}"
        with tarfile.open(path, "w:gz" if gz else "w") as tar:
            for k in range(start, start + size):
                buf = io.BytesIO()
                np.save(buf, np.full(16, k, np.float32))
                for name, data in ((f"{k:06d}.x.npy", buf.getvalue()),
                                   (f"{k:06d}.label.cls", str(k).encode())):
                    info = tarfile.TarInfo(name)
                    info.size = len(data)
                    tar.addfile(info, io.BytesIO(data))
        paths.append(path)
        start += size
    return paths


def read_all(source: ShardSource) -> dict[str, np.ndarray]:
    source.setup(0, 1)
    chunks = []
    try:
        while True:
            chunks.append(source.fetch(0, 7))
    except SourceExhausted:
        pass
    finally:
        source.close()
    return {name: np.concatenate([c[name] for c in chunks]) for name in chunks[0]}


@pytest.mark.parametrize("gz", [False, True], ids=["tar", "tar.gz"])
def test_shards_from_a_bucket_stream_the_samples_of_the_local_shards(tmp_path, s3_bucket,
                                                                     monkeypatch, gz):
    """Plain and gzip shards, streamed in ranged reads (a small block here, so one shard is
    many requests): the same samples, in the same order, as the local shards."""
    import inputkit.sources.shard_stream as stream_module

    monkeypatch.setattr(stream_module, "_REMOTE_BLOCK", 4096)
    write_shards(tmp_path / "sh", [23, 17, 9], gz=gz)
    put_folder(s3_bucket, tmp_path / "sh", "sh")
    ext = "tar.gz" if gz else "tar"
    local = read_all(ShardSource(str(tmp_path / "sh" / f"train-*.{ext}")))
    before = storage.stats()
    remote = ShardSource(s3_bucket.url(f"sh/train-{{000..002}}.{ext}"))
    assert remote.shards == [s3_bucket.url(f"sh/train-{s:03d}.{ext}") for s in range(3)]
    got = read_all(remote)
    same_chunks(got, local)
    assert got["label"].tolist() == list(range(49))
    after = storage.stats()
    size = sum(p.stat().st_size for p in (tmp_path / "sh").iterdir())
    assert after["bytes_read"] - before["bytes_read"] >= size
    assert after["requests"] - before["requests"] > 3, "streamed in blocks, not one GET each"
    assert ShardSource(s3_bucket.url(f"sh/*.{ext}")).shards == remote.shards


def test_shards_over_https_style_urls_through_the_runner(tmp_path, http_server):
    write_shards(tmp_path / "sh", [23, 17, 9])
    server = http_server(tmp_path / "sh")
    cfg = make_cfg({"_target_": "inputkit.sources.shards.ShardSource",
                    "urls": server.url("train-{000..002}.tar")}, batch_size=8,
                   workers={"count": 2})
    with Runner(cfg) as runner:
        labels = sorted(drain(runner, "label"))
    assert labels == list(range(49)), "every sample exactly once"


def test_shards_missing_or_vanishing_object_fails_naming_its_url(tmp_path, s3_bucket,
                                                                  monkeypatch):
    import inputkit.sources.shard_stream as stream_module

    monkeypatch.setattr(stream_module, "_REMOTE_BLOCK", 4096)
    write_shards(tmp_path / "sh", [40])
    put_folder(s3_bucket, tmp_path / "sh", "sh")
    missing = s3_bucket.url("sh/train-001.tar")
    source = ShardSource([missing, s3_bucket.url("sh/train-000.tar")])  # no request yet
    source.setup(0, 1)
    try:  # the first fetch opens it: no retries for a missing object
        with pytest.raises(SourceError, match=rf"shard '{missing.replace('.', '[.]')}' cannot be "
                                              "read: .*not_found|NoSuchKey|not found") as caught:
            source.fetch(0, 2)
        assert caught.value.__cause__.kind == "not_found"
    finally:
        source.close()
    url = s3_bucket.url("sh/train-000.tar")
    source = ShardSource(url)
    source.setup(0, 1)
    try:
        assert source.fetch(0, 2)["label"].tolist() == [0, 1]
        s3_bucket.server.delete(url)  # gone after its first block was read
        with pytest.raises(SourceError, match=rf"shard '{url.replace('.', '[.]')}' could not be "
                                              r"read \(after member '0000\d\d\.\w+\.\w+'\): .*no such "
                                              "object"):
            while True:
                source.fetch(0, 2)
    finally:
        source.close()


# arrays -----------------------------------------------------------------------------------------

def test_arrays_from_a_bucket_read_rows_by_ranges_like_the_local_files(tmp_path, s3_bucket):
    folder = tmp_path / "arr"
    folder.mkdir()
    rng = np.random.default_rng(0)
    np.save(folder / "image.npy", rng.integers(0, 255, (300, 4, 5), dtype=np.uint8))
    np.save(folder / "label.npy", np.arange(300, dtype=np.int64))
    put_folder(s3_bucket, folder, "arr")
    local = ArraySource(str(folder))
    remote = ArraySource(s3_bucket.url("arr"))
    assert remote.fields == ["image", "label"] and len(remote) == 300
    assert remote.mapped_bytes() == (0, "")
    before = storage.stats()["requests"]
    for chunk in (np.arange(10, 60), np.array([5, 299, 7, 5, 6, 120]), np.arange(0)):
        same_chunks(remote.read(chunk), local.read(chunk))
    # a range is one request per field; [5, 299, 7, 5, 6, 120] is runs 5-7, 120, 299
    assert storage.stats()["requests"] - before <= 2 + 2 * 3
    with pytest.raises(ValueError, match=r"path: no \.npy objects under 's3://.*/nothing/'"):
        ArraySource(s3_bucket.url("nothing"))
    with pytest.raises(ValueError, match=r"fields: no file 'depth\.npy'"):
        ArraySource(s3_bucket.url("arr/"), fields=["image", "depth"])

"""The memory plan of an input that reads from an object store: the disk cache and the download
buffers as lines of their own (disk apart from RAM), and the refusal of a cache too small for
the shards in use, against moto's S3 server on 127.0.0.1."""

from __future__ import annotations

import pytest

SHARDS, PER_SHARD = 8, 6
TRANSFORMS = [{"resize": {"size": 16}}, {"center_crop": {"size": 16}}]


@pytest.fixture(scope="module")
def shard_files(tmp_path_factory) -> list:
    from imagefiles import jpeg_bytes, photo, write_shards

    images = [jpeg_bytes(photo(40, 32, i), quality=70) for i in range(SHARDS * PER_SHARD)]
    folder = tmp_path_factory.mktemp("plan-shards")
    return write_shards(folder, images, list(range(len(images))), per_shard=PER_SHARD)


def _url(bucket, shard_files) -> str:
    for path in shard_files:
        bucket.put(f"train/{path.name}", path.read_bytes())
    return bucket.url("train/train-{000..007}.tar")


def _spec(url: str, cache: dict, **epoch):
    from inputkit.config.spec import load_spec

    return load_spec({"source": {"_target_": "inputkit.sources.image_shards.ImageShardSource",
                                 "urls": url, "transforms": TRANSFORMS},
                      "devices": "cpu", "batch_size": 4, "workers": {"kind": "thread", "count": 2},
                      "epoch": {"shuffle": "shards", "shuffle_window": 2, **epoch},
                      "cache": cache})


def test_plan_shows_the_disk_cache_and_download_buffers_apart_from_ram(
        s3_bucket, shard_files, tmp_path) -> None:
    """The disk cache's budget and the shards in use are disk lines, outside the host total;
    the download buffers are a host line; the disk lines name cache.dir and the bucket."""
    from inputkit import storage
    from inputkit.planning.memory import DISK, HOST, plan_memory
    from inputkit.storage.cache import META_BYTES

    url = _url(s3_bucket, shard_files)
    largest = max(p.stat().st_size for p in shard_files)
    folder = tmp_path / "cache"
    try:
        plan = plan_memory(_spec(url, {"dir": str(folder), "max_bytes": "1MiB", "read_ahead": 2}))
    finally:
        storage.configure(None, None)
    by_stage = {t.stage: t for t in plan.terms}
    budget, in_use, buffers = (by_stage["disk cache"], by_stage["disk cache: shards in use"],
                               by_stage["download buffers"])
    assert budget.memory == DISK and budget.bytes == 2**20 and str(folder) in budget.detail
    assert in_use.memory == DISK and in_use.unit_bytes == largest + META_BYTES
    # 2 workers x 4 samples in flight over blocks of 2 shards: at most 4 shards; read-ahead 2
    assert 2 <= in_use.count <= 4, in_use
    assert s3_bucket.url("train") in in_use.detail
    assert buffers.memory == HOST and buffers.bytes > 0
    assert plan.host_bytes == sum(t.bytes for t in plan.terms if t.memory != DISK)
    assert plan.dominating().memory != DISK


def test_a_cache_too_small_for_the_shards_in_use_is_refused_with_what_fits(
        s3_bucket, shard_files, tmp_path) -> None:
    """A cache of three shards cannot hold the 6 shards in use with a window of 4: ConfigError naming
    cache.max_bytes with the smallest size that works, which then plans; the largest
    epoch.shuffle_window offered fits the budget as it was."""
    import re

    from inputkit import storage
    from inputkit.errors import ConfigError
    from inputkit.planning.memory import plan_memory
    from inputkit.storage.cache import META_BYTES

    url = _url(s3_bucket, shard_files)
    largest = max(p.stat().st_size for p in shard_files)
    small = 3 * (largest + META_BYTES)
    cache = {"dir": str(tmp_path / "cache"), "max_bytes": small, "read_ahead": 1}
    try:
        with pytest.raises(ConfigError) as raised:
            plan_memory(_spec(url, cache, shuffle_window=4))
        assert raised.value.key == "cache.max_bytes"
        text = str(raised.value)
        assert "s3://" in text and "epoch.shuffle_window=" in text, text
        need = int(re.search(r"set cache\.max_bytes=(\d+) or more", text).group(1))
        assert need > small
        window = int(re.search(r"epoch\.shuffle_window=(\d+) \(", text).group(1))
        assert 1 <= window < 4
        plan_memory(_spec(url, {**cache, "max_bytes": need}, shuffle_window=4))  # fits now
        plan_memory(_spec(url, cache, shuffle_window=window))  # and so does the window offered
    finally:
        storage.configure(None, None)


def test_inputkit_plan_refuses_a_small_cache_with_exit_2(s3_bucket, shard_files, tmp_path) -> None:
    """`inputkit plan` names cache.max_bytes and exits 2 (a config error), before any run."""
    from typer.testing import CliRunner

    from inputkit import storage
    from inputkit.cli import app

    url = _url(s3_bucket, shard_files)
    try:
        result = CliRunner().invoke(app, [
            "plan", "source=image_shards", f"source.urls={url}", "epoch.shuffle=shards",
            "epoch.shuffle_window=4", f"cache.dir={tmp_path / 'cache'}", "cache.max_bytes=80KiB"],
            env={"COLUMNS": "200"}, prog_name="inputkit")
    finally:
        storage.configure(None, None)
    assert result.exit_code == 2, result.output
    assert "cache.max_bytes" in result.output and "set cache.max_bytes=" in result.output


def test_plan_of_an_image_folder_in_a_bucket_counts_its_download_buffers(s3_bucket,
                                                                        tmp_path) -> None:
    """Photos one object each: no disk cache lines, and a host line for the objects of every
    worker's chunk fetched together, each as large as the largest file the probe read."""
    from imagefiles import jpeg_bytes, photo

    from inputkit import storage
    from inputkit.config.spec import load_spec
    from inputkit.planning.memory import DISK, HOST, plan_memory

    files = {f"imgs/c{i % 2}/p{i}.jpg": jpeg_bytes(photo(40, 32, i), quality=70)
             for i in range(12)}
    for key, data in files.items():
        s3_bucket.put(key, data)
    spec = load_spec({"source": {"_target_": "inputkit.sources.images.ImageFolderSource",
                                 "path": s3_bucket.url("imgs"), "transforms": TRANSFORMS},
                      "devices": "cpu", "batch_size": 4,
                      "workers": {"kind": "thread", "count": 3},
                      "cache": {"dir": str(tmp_path / "cache")}})
    try:
        plan = plan_memory(spec)
    finally:
        storage.configure(None, None)
    assert not [t for t in plan.terms if t.memory == DISK]
    buffers = next(t for t in plan.terms if t.stage == "download buffers")
    assert buffers.memory == HOST and buffers.count == 3 * 4
    assert buffers.unit_bytes in {len(d) for d in files.values()}  # the largest of the probe's

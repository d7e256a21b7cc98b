"""Watching a run that reads from a store: the dashboard's storage row, the same figures in
metrics.jsonl's record and summary.json's stats, and the storage-bound verdict, from real
runs of image_shards against moto's S3 server on 127.0.0.1 (through a FaultProxy where the
store must be slow)."""

from __future__ import annotations

import json

import pytest
from conftest import make_cfg

from inputkit import Runner, storage
from inputkit.storage.cache import META_BYTES

pytestmark = pytest.mark.timeout(120)

SHARDS, PER_SHARD = 8, 6
TRANSFORMS = [{"resize": {"size": 16}}, {"center_crop": {"size": 16}}]


@pytest.fixture(scope="module")
def shard_files(tmp_path_factory) -> list:
    from imagefiles import jpeg_bytes, photo, write_shards

    images = [jpeg_bytes(photo(40, 32, i), quality=70) for i in range(SHARDS * PER_SHARD)]
    return write_shards(tmp_path_factory.mktemp("watch-shards"), images,
                        list(range(len(images))), per_shard=PER_SHARD)


@pytest.fixture
def shards_url(s3_server, fault_proxy, shard_files, monkeypatch):
    """(proxy, url): the shards in a fresh bucket, the client pointed at a proxy in front."""
    from storage_servers import apply_env

    if not s3_server.running:
        s3_server.start()
    bucket = s3_server.make_bucket()
    for path in shard_files:
        s3_server.put(f"s3://{bucket}/train/{path.name}", path.read_bytes())
    proxy = fault_proxy(s3_server)
    apply_env(s3_server.env(proxy.endpoint), monkeypatch)
    yield proxy, f"s3://{bucket}/train/train-{{000..007}}.tar"
    storage.configure(None, None)


def _cfg(url: str, folder, max_bytes: int, **top):
    cfg = make_cfg({"_target_": "inputkit.sources.image_shards.ImageShardSource", "urls": url,
                    "transforms": TRANSFORMS},
                   batch_size=4, workers={"kind": "thread", "count": 2},
                   queue={"capacity": 1, "batch_capacity": 1},
                   epoch={"shuffle": "shards", "shuffle_window": 1, "seed": 1, "count": 3},
                   cache={"dir": str(folder), "max_bytes": max_bytes, "read_ahead": 1},
                   storage={"backoff_s": 0.01})
    cfg.update(top)
    return cfg


def test_dashboard_metrics_and_summary_show_the_store(shards_url, shard_files, tmp_path) -> None:
    """Mid-run and at the end: one storage row naming the bucket with MB/s, requests in
    flight, retries and errors, the cache's fill against cache.max_bytes (bytes and %), hits
    and misses; metrics.jsonl's record and summary.json's stats carry the same figures."""
    from rich.console import Console

    from inputkit.observe.dashboard import plain_lines, render
    from inputkit.observe.metrics import MovingWindow

    _, url = shards_url
    slot = max(p.stat().st_size for p in shard_files) + META_BYTES
    max_bytes = 3 * slot
    window = MovingWindow(seconds=60)
    with Runner(_cfg(url, tmp_path / "cache", max_bytes)) as runner:
        window.update(runner.stats())
        labels = [int(v) for _ in range(3) for b in runner.device(0) for v in b["label"]]
        final = runner.stats()
    seen = window.update(final)
    assert sorted(labels) == sorted(list(range(SHARDS * PER_SHARD)) * 3)
    reading = final.coordinators[0].storage
    assert reading is not None and reading.where == url.rsplit("/", 1)[0] + "/"
    assert reading.cache_max == max_bytes and 0 < reading.cache_used <= max_bytes
    assert reading.cache_misses > 0 and reading.bytes_read > 0 and reading.readers == 2

    console = Console(record=True, width=200, color_system=None)
    console.print(render(seen, []))
    shown = console.export_text()
    row = next(line for line in shown.splitlines() if "storage" in line and "MB/s" in line)
    for part in (reading.where, "MB/s", "in flight", "retries", "errors", "cache ",
                 f"({reading.cache_used / max_bytes:.0%})", "hits", "misses"):
        assert part in row, (part, row)
    assert any(line.strip().startswith("storage s3://") for line in plain_lines(seen))

    record = json.loads(json.dumps(seen.record([])))["coordinators"][0]["storage"]
    assert record["where"] == reading.where and record["cache_used"] == reading.cache_used
    assert record["cache_misses"] == reading.cache_misses and record["mb_per_s"] > 0
    summary = json.loads(json.dumps(final.to_dict(), default=str))
    assert summary["coordinators"][0]["storage"]["bytes_read"] == reading.bytes_read


def test_local_data_shows_no_storage_row(tmp_path, shard_files) -> None:
    """The same shards from a local folder: no storage reading, no row."""
    from rich.console import Console

    from inputkit.observe.dashboard import render
    from inputkit.observe.metrics import MovingWindow

    cfg = make_cfg({"_target_": "inputkit.sources.image_shards.ImageShardSource",
                    "urls": str(shard_files[0].parent / "train-{000..007}.tar"),
                    "transforms": TRANSFORMS}, batch_size=4, epoch={"count": 1})
    with Runner(cfg) as runner:
        for _ in runner.device(0):
            pass
        final = runner.stats()
    assert final.coordinators[0].storage is None
    console = Console(record=True, width=200, color_system=None)
    console.print(render(MovingWindow().update(final), []))
    assert "storage " not in console.export_text()
    assert "storage" not in MovingWindow().update(final).record([])["coordinators"][0]


def test_workers_waiting_on_a_slow_store_read_storage_bound(shards_url, shard_files,
                                                            tmp_path) -> None:
    """Every request to the store held 0.25 s, a cache that holds three shards and no
    read-ahead: the workers spend most of their time waiting for shards, and the verdict
    says storage-bound, naming the bucket and the two settings to raise."""
    from inputkit.observe.diagnosis import diagnose

    proxy, url = shards_url
    slot = max(p.stat().st_size for p in shard_files) + META_BYTES
    cfg = _cfg(url, tmp_path / "cache", 3 * slot,
               cache={"dir": str(tmp_path / "cache"), "max_bytes": 3 * slot, "read_ahead": 0})
    with Runner(cfg) as runner:
        proxy.delay(0.25)
        for _ in range(3):
            for _ in runner.device(0):
                pass
        final = runner.stats()
    proxy.heal()
    lines = diagnose(final)
    verdict = lines[0]
    assert "storage-bound" in verdict, lines
    assert url.rsplit("/", 1)[0] + "/" in verdict
    assert "storage.concurrency" in verdict and "cache.read_ahead (now 0)" in verdict
    assert final.coordinators[0].storage.wait_us > 0


def test_storage_bound_from_stated_evidence_and_not_without_it() -> None:
    """The rule alone: workers the slow side and blocked on the store 80% of their time read
    storage-bound; the same evidence with a store that answers at once does not."""
    from inputkit.observe.diagnosis import judge
    from inputkit.observe.evidence import Evidence, QueueEvidence

    def ev(wait: float | None) -> Evidence:
        queues = (QueueEvidence(stage="chunk queue", capacity=4, items=0, bytes=0, full=0.0,
                                empty=0.9, max_bytes=None),
                  QueueEvidence(stage="batch queue", capacity=4, items=0, bytes=0, full=0.0,
                                empty=0.9, max_bytes=None))
        return Evidence(where="input 'main' on 0:cpu", over="the run", span_s=10.0, batches=200,
                        kind="thread", workers=2, queues=queues, in_fetch=0.95,
                        fetch_cores=0.02, fetch_cpu_share=0.02, fetch_p50_ms=40.0,
                        gil_wait_ms=0.1, gil_held=0.02, idle_cores=1.9, chunks=200, cores=2,
                        storage_wait=wait, storage_where="s3://b/train/",
                        storage_mb_per_s=3.5, storage_retries=2)
    slow = judge(ev(0.8))
    assert slow is not None and slow.kind == "storage-bound" and slow.starved
    assert "80%" in slow.text and "s3://b/train/" in slow.text and "2 retries" in slow.text
    assert judge(ev(0.05)).kind != "storage-bound"
    assert judge(ev(None)).kind != "storage-bound"

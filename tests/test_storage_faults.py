"""A store that fails, end to end: real runs of image_shards from s3:// (moto's server on
127.0.0.1) through a FaultProxy the test controls, with a disk cache that holds three of the
eight shards, so every epoch downloads shards again while it runs.

Connections reset, delayed, refused for a while, and the server stopped and restarted
mid-epoch: every sample arrives exactly once per epoch and the retries are counted in the
run's storage.stats(). A missing object fails at once naming its URL (`inputkit bench`: exit
2); an endpoint that does not answer fails naming it; under failures.on_error=skip a shard
that went away is skipped alone and reported; a resume mid-epoch onto another worker and
device count reads every sample once, the cache folder never above cache.max_bytes.
"""

from __future__ import annotations

import contextlib
import os
import pickle
import threading
import time

import pytest
from conftest import make_cfg

from inputkit import Runner, storage
from inputkit.storage.cache import META_BYTES

pytestmark = pytest.mark.timeout(120)

SHARDS, PER_SHARD = 8, 6
SAMPLES = SHARDS * PER_SHARD
TRANSFORMS = [{"resize": {"size": 16}}, {"center_crop": {"size": 16}}]
IMAGE_SHARDS = "inputkit.sources.image_shards.ImageShardSource"
# small backoffs and timeouts so that every test finishes in seconds
QUICK = {"backoff_s": 0.01, "retries": 60, "connect_timeout_s": 20, "timeout_s": 10}


@pytest.fixture(scope="module")
def shard_files(tmp_path_factory) -> list:
    """Eight shards of six small JPEGs; each sample's label is its own number."""
    from imagefiles import jpeg_bytes, photo, write_shards

    images = [jpeg_bytes(photo(40, 32, i), quality=70) for i in range(SAMPLES)]
    folder = tmp_path_factory.mktemp("fault-shards")
    return write_shards(folder, images, list(range(SAMPLES)), per_shard=PER_SHARD)


@pytest.fixture
def proxied(s3_server, fault_proxy, shard_files, monkeypatch):
    """(proxy, url of the shards, bucket name): the shards put straight into the server, the
    client's environment pointing at the proxy in front of it."""
    from storage_servers import apply_env

    if not s3_server.running:
        s3_server.start()
    bucket = s3_server.make_bucket()
    for path in shard_files:
        s3_server.put(f"s3://{bucket}/train/{path.name}", path.read_bytes())
    proxy = fault_proxy(s3_server)
    apply_env(s3_server.env(proxy.endpoint), monkeypatch)
    yield proxy, f"s3://{bucket}/train/train-{{000..007}}.tar", bucket
    storage.configure(None, None)


def _slot(shard_files) -> int:
    return max(p.stat().st_size for p in shard_files) + META_BYTES


def _cfg(url: str, folder, max_bytes: int, kind: str = "thread", **top):
    cfg = make_cfg({"_target_": IMAGE_SHARDS, "urls": url, "transforms": TRANSFORMS},
                   batch_size=4, workers={"kind": kind, "count": 2},
                   queue={"capacity": 1, "batch_capacity": 1},
                   epoch={"shuffle": "shards", "shuffle_window": 1, "seed": 5, "count": 2},
                   cache={"dir": str(folder), "max_bytes": max_bytes, "read_ahead": 1},
                   storage=dict(QUICK))
    cfg.update(top)
    return cfg


def _two_epochs(runner, at_batch: int, fault) -> list[list[int]]:
    """The labels of two epochs on device 0; ``fault()`` is called once ``at_batch`` batches
    of the first epoch have arrived."""
    epochs, seen = [], 0
    for _ in range(2):
        labels: list[int] = []
        for batch in runner.device(0):
            seen += 1
            if seen == at_batch:
                fault()
            labels.extend(int(v) for v in batch["label"])
        epochs.append(labels)
    return epochs


class _CacheWatch:
    """Samples the cache folder's size in a thread while a run reads (the largest seen)."""

    def __init__(self, folder) -> None:
        self.folder = str(folder)
        self.peak = 0
        self.at_peak: list[tuple[str, int]] = []  # what the folder held then, for the message
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, name="test-cache-watch")

    def _run(self) -> None:
        while not self._stop.is_set():
            total = 0
            seen: list[tuple[str, int]] = []
            for root, _, names in os.walk(os.path.join(self.folder, "objects")):
                for name in names:
                    with contextlib.suppress(FileNotFoundError):  # renamed or evicted meanwhile
                        seen.append((name, os.stat(os.path.join(root, name)).st_size))
                        total += seen[-1][1]
            if total > self.peak:
                self.peak, self.at_peak = total, seen
            self._stop.wait(0.002)

    def __enter__(self) -> _CacheWatch:
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        self._thread.join(5)


def _in_background(action) -> threading.Thread:
    """Run ``action`` in a thread (an outage that lasts while the consumer keeps reading)."""
    thread = threading.Thread(target=action, name="test-outage")
    thread.start()
    return thread


@pytest.mark.parametrize("kind", ["thread", "process"])
def test_connections_reset_mid_epoch_are_retried_counted_and_lose_no_sample(
        proxied, shard_files, tmp_path, kind) -> None:
    """Three requests reset mid-epoch: each retried once and counted (retries grow by exactly
    the resets), no error, every sample once per epoch; the cache within its budget."""
    proxy, url, _ = proxied
    max_bytes = 3 * _slot(shard_files)
    with _CacheWatch(tmp_path / "cache") as watch, \
            Runner(_cfg(url, tmp_path / "cache", max_bytes, kind)) as runner:
        before, resets = storage.stats(), proxy.counts.resets
        epochs = _two_epochs(runner, 3, lambda: proxy.reset_connections(n=3))
        after = storage.stats()
    for labels in epochs:
        assert sorted(labels) == list(range(SAMPLES))
    assert proxy.counts.resets - resets == 3
    assert after["retries"] - before["retries"] == 3
    assert after["errors"] == before["errors"]
    assert 0 < watch.peak <= max_bytes, f"the cache folder held {watch.at_peak}"


def test_requests_delayed_mid_epoch_lose_no_sample(proxied, shard_files, tmp_path) -> None:
    """Every request held 0.2 s for a while: slower, nothing lost, nothing counted as an error."""
    proxy, url, _ = proxied
    with Runner(_cfg(url, tmp_path / "cache", 3 * _slot(shard_files))) as runner:
        before = storage.stats()
        epochs = _two_epochs(runner, 3, lambda: proxy.delay(0.2, for_s=1.0))
        after = storage.stats()
    for labels in epochs:
        assert sorted(labels) == list(range(SAMPLES))
    assert proxy.counts.delayed > 0
    assert after["errors"] == before["errors"]
    assert after["cache_misses"] > before["cache_misses"]


def test_a_store_refused_for_a_while_mid_epoch_loses_no_sample(proxied, shard_files,
                                                               tmp_path) -> None:
    """The endpoint refuses connections for 1.5 s (less than storage.connect_timeout_s) while
    the run reads on: the downloads wait, retrying (counted), and every sample arrives once."""
    proxy, url, _ = proxied
    outage: list[threading.Thread] = []
    with Runner(_cfg(url, tmp_path / "cache", 3 * _slot(shard_files))) as runner:
        before = storage.stats()
        epochs = _two_epochs(runner, 3, lambda: outage.append(
            _in_background(lambda: proxy.refuse(for_s=1.5))))
        after = storage.stats()
    for thread in outage:
        thread.join(10)
    for labels in epochs:
        assert sorted(labels) == list(range(SAMPLES))
    assert after["retries"] > before["retries"], "no download met the refused endpoint"
    assert after["errors"] == before["errors"]


def test_the_server_stopped_and_restarted_mid_epoch_loses_no_sample(
        proxied, s3_server, shard_files, tmp_path) -> None:
    """moto's server process stopped mid-epoch and started again on its port: the downloads
    retry (counted) until it is back, and every sample of both epochs arrives exactly once.

    moto keeps its objects in memory and answers before tests/storage_servers.py has put
    them back (a read in that moment is a true 404, which fails at once), so the proxy
    refuses connections from the stop until the objects are back: to the client, the store
    is away for the whole restart."""
    proxy, url, _ = proxied

    def restart() -> None:
        proxy.refuse(for_s=120)
        s3_server.stop()
        time.sleep(0.5)  # the outage's length, not a barrier
        s3_server.start()
        proxy.heal()

    outage: list[threading.Thread] = []
    with Runner(_cfg(url, tmp_path / "cache", 3 * _slot(shard_files))) as runner:
        before = storage.stats()
        epochs = _two_epochs(runner, 3, lambda: outage.append(_in_background(restart)))
        after = storage.stats()
    for thread in outage:
        thread.join(60)
    assert s3_server.running
    for labels in epochs:
        assert sorted(labels) == list(range(SAMPLES))
    assert after["retries"] > before["retries"], "no download met the stopped server"
    assert after["errors"] == before["errors"]


def test_bench_with_a_missing_shard_fails_at_once_naming_its_url(proxied, tmp_path,
                                                                 monkeypatch) -> None:
    """One URL of the brace range has no object: `inputkit bench` exits 2 naming it, with no
    retry."""
    from typer.testing import CliRunner

    from inputkit.cli import app

    _, url, bucket = proxied
    missing = f"s3://{bucket}/train/train-008.tar"
    monkeypatch.chdir(tmp_path)  # whatever bench writes stays in the test's folder
    before = storage.stats()
    result = CliRunner().invoke(app, [
        "bench", "source=image_shards", f"source.urls={url.replace('007', '008')}",
        f"cache.dir={tmp_path / 'cache'}", "storage.backoff_s=0.01", "bench.seconds=1"],
        env={"COLUMNS": "200"}, prog_name="inputkit")
    assert result.exit_code == 2, result.output
    assert missing in result.output, result.output
    assert storage.stats()["retries"] == before["retries"]


def test_an_endpoint_that_does_not_answer_fails_naming_it(proxied, tmp_path) -> None:
    """Requests accepted and never answered: the run's start fails within storage.timeout_s
    x (retries + 1), naming the endpoint, instead of hanging."""
    from inputkit.errors import InputkitError

    proxy, url, _ = proxied
    proxy.blackhole(for_s=60)
    cfg = _cfg(url, tmp_path / "cache", 2**20,
               storage={"timeout_s": 0.5, "connect_timeout_s": 0.5, "retries": 1,
                        "backoff_s": 0.01})
    with pytest.raises((storage.StorageError, InputkitError)) as raised:
        with Runner(cfg):
            pass
    text = str(raised.value)
    assert f"127.0.0.1:{proxy.port}" in text or "s3://" in text, text
    proxy.heal()


def test_a_shard_gone_from_the_store_is_skipped_alone_and_reported(
        proxied, s3_server, shard_files, tmp_path) -> None:
    """After the first epoch one shard is deleted from the store and evicted from the cache:
    under failures.on_error=skip the second epoch skips its six samples alone, reports them
    with the URL, and delivers every other sample once."""
    from inputkit.storage.cache import DiskCache

    proxy, url, bucket = proxied
    gone = f"s3://{bucket}/train/train-003.tar"
    max_bytes = 3 * _slot(shard_files)
    cfg = _cfg(url, tmp_path / "cache", max_bytes,
               failures={"on_error": "skip", "max_skip_share": None,
                         "max_consecutive_skips": None})
    with Runner(cfg) as runner:
        first = [int(v) for b in runner.device(0) for v in b["label"]]
        s3_server.delete(gone)
        DiskCache(str(tmp_path / "cache"), max_bytes).evict(gone)
        second = [int(v) for b in runner.device(0) for v in b["label"]]
        workers = runner.stats().coordinators[0].workers
        skipped, errors = sorted(workers.skipped_indices), list(workers.skipped_errors)
    assert sorted(first) == list(range(SAMPLES))
    lost = list(range(3 * PER_SHARD, 4 * PER_SHARD))
    assert sorted(second) == [i for i in range(SAMPLES) if i not in lost]
    assert skipped == lost
    assert any(gone in e for e in errors), errors


@pytest.mark.timeout(180)
def test_resume_mid_epoch_onto_other_workers_and_devices_within_the_cache_budget(
        proxied, shard_files, tmp_path) -> None:
    """Saved mid-epoch from one device with two threads, resumed onto two devices with one
    process worker each: every sample of the epoch exactly once, the next epoch whole, and
    the cache folder, sampled throughout both runs, never above cache.max_bytes."""
    _, url, _ = proxied
    max_bytes = 4 * _slot(shard_files)
    folder = tmp_path / "cache"
    with _CacheWatch(folder) as watch:
        with Runner(_cfg(url, folder, max_bytes)) as runner:
            first: list[int] = []
            for batch in runner.device(0):
                first.extend(int(v) for v in batch["label"])
                if len(first) >= 20:
                    break
            state = pickle.loads(pickle.dumps(runner.state_dict()))
        resumed = Runner(_cfg(url, folder, max_bytes, devices=["cpu", "cpu"],
                              workers={"kind": "process", "count": 1}))
        resumed.load_state_dict(state)
        with resumed:
            streams = [resumed.device(i) for i in range(2)]
            rest = [int(v) for s in streams for b in s for v in b["label"]]
            second = [int(v) for s in streams for b in s for v in b["label"]]
    assert sorted(first + rest) == list(range(SAMPLES)), "epoch 0: each sample exactly once"
    assert sorted(second) == list(range(SAMPLES)), "epoch 1: whole"
    assert 0 < watch.peak <= max_bytes, \
        f"the cache held {watch.peak:,} > {max_bytes:,} bytes: {watch.at_peak}"


def test_bench_with_bad_credentials_fails_at_once_naming_the_url(tmp_path, monkeypatch) -> None:
    """moto checking signatures, a key it does not know: `inputkit bench` exits 2 at start
    with the URL and 'access denied', no retry."""
    pytest.importorskip("moto.server")
    from storage_servers import S3Server, apply_env
    from typer.testing import CliRunner

    from inputkit.cli import app

    with pytest.MonkeyPatch.context() as patch:
        patch.setenv("INITIAL_NO_AUTH_ACTION_COUNT", "0")  # every request is authenticated
        server = S3Server().start(restore=False)
    try:
        apply_env({**server.env(), "AWS_ACCESS_KEY_ID": "AKIANOTAKEY0000",
                   "AWS_SECRET_ACCESS_KEY": "not-the-secret"}, monkeypatch)
        monkeypatch.chdir(tmp_path)
        url = "s3://private/train/train-000.tar"
        before = storage.stats()
        result = CliRunner().invoke(app, [
            "bench", "source=image_shards", f"source.urls={url}",
            f"cache.dir={tmp_path / 'cache'}", "storage.backoff_s=0.01", "bench.seconds=1"],
            env={"COLUMNS": "200"}, prog_name="inputkit")
    finally:
        server.stop()
        storage.configure(None, None)
    assert result.exit_code == 2, result.output
    assert url in result.output and "access denied" in result.output, result.output
    assert storage.stats()["retries"] == before["retries"]

"""The storage core (inputkit.storage) against real servers on 127.0.0.1: moto's S3 server and
an HTTP server with ranges. No mock of the client: every read is real HTTP."""

from __future__ import annotations

import json
import multiprocessing
import os
import pickle
from collections.abc import Iterator

import pytest
from fault_proxy import FaultProxy
from http_range_server import HttpServer
from storage_servers import S3Server, apply_env, free_port

from inputkit import storage
from inputkit.errors import ConfigError
from inputkit.storage.settings import free_bytes, reset
from inputkit.storage.store import open_store

pytestmark = pytest.mark.timeout(120)


@pytest.fixture
def s3(s3_server: S3Server) -> S3Server:
    """The session's S3 server (tests/conftest.py), started again if a test stopped it."""
    if not s3_server.running:
        s3_server.start()
    return s3_server


@pytest.fixture
def bucket(s3: S3Server, monkeypatch: pytest.MonkeyPatch) -> Iterator[str]:
    """A fresh bucket; the environment points the client at the server; settings reset."""
    apply_env(s3.env(), monkeypatch)
    storage.configure({"backoff_s": 0.01}, None)
    name = s3.make_bucket()
    yield name
    reset()
    s3.forget(name)


@pytest.fixture
def http(tmp_path, monkeypatch: pytest.MonkeyPatch) -> Iterator[HttpServer]:
    root = tmp_path / "www"
    root.mkdir()
    storage.configure({"backoff_s": 0.01, "retries": 3}, None)
    with HttpServer(root) as server:
        yield server
    reset()


def _data(n: int, seed: int) -> bytes:
    return bytes((i * 131 + seed * 17) % 251 for i in range(n))


def test_is_remote_knows_the_object_store_schemes():
    """Every scheme a store serves is remote; local paths (even odd ones) are not."""
    for url in ("s3://b/k", "gs://b/k", "az://c/k", "azure://c/k", "abfss://c@a.dfs.core.windows.net/k",
                "http://h/k", "https://h:8443/k", "S3://B/k"):
        assert storage.is_remote(url), url
    for path in ("data/x.tar", "/abs/x.tar", "s3:/not-a-url", "C:\\data", "ftp://h/k"):
        assert not storage.is_remote(path), path


def test_an_unknown_scheme_or_a_missing_bucket_names_the_url_and_the_key():
    with pytest.raises(storage.StorageError, match=r"source\.urls: ftp://h/x\.tar: unknown scheme") as info:
        storage.expand("ftp://h/x.tar", "source.urls")
    assert info.value.url == "ftp://h/x.tar"
    with pytest.raises(storage.StorageError, match=r"s3:///k: names no bucket"):
        storage.expand("s3:///k", "source.urls")


def test_local_paths_expand_as_the_shard_source_did(tmp_path):
    """Braces then globs, sorted, each entry's matches together; misses name the key."""
    for name in ("b-01.tar", "b-00.tar", "a.tar", "c.txt"):
        (tmp_path / name).write_bytes(b"x")
    found = storage.expand([str(tmp_path / "b-*.tar"), str(tmp_path / "{a,c}.*")], "source.urls")
    assert found == [str(tmp_path / n) for n in ("b-00.tar", "b-01.tar", "a.tar", "c.txt")]
    assert storage.expand(str(tmp_path / "b-{00..01}.tar"), "k") == \
        [str(tmp_path / "b-00.tar"), str(tmp_path / "b-01.tar")]
    with pytest.raises(ValueError, match=r"^source\.urls: no files match"):
        storage.expand(str(tmp_path / "z-*.tar"), "source.urls")
    with pytest.raises(ValueError, match=r"^source\.urls: 1 file\(s\) of .* do not exist"):
        storage.expand(str(tmp_path / "b-{00..02}.tar"), "source.urls")
    with pytest.raises(ValueError, match=r"is listed twice"):
        storage.expand([str(tmp_path / "a.tar"), str(tmp_path / "a.tar")], "source.urls")


def test_a_remote_glob_lists_the_store_and_braces_expand_without_a_request(s3, bucket):
    for i in range(4):
        s3.put(f"s3://{bucket}/train/shard-{i:03d}.tar", _data(100 + i, i))
    s3.put(f"s3://{bucket}/train/deeper/shard-009.tar", b"x")  # '*' stays within one segment
    s3.put(f"s3://{bucket}/train/notes.txt", b"x")
    s3.put(f"s3://{bucket}/trainee.tar", b"x")
    base = f"s3://{bucket}/train"
    assert storage.expand(f"{base}/shard-*.tar", "source.urls") == \
        [f"{base}/shard-{i:03d}.tar" for i in range(4)]
    assert storage.expand(f"{base}/shard-00[13].tar", "k") == [f"{base}/shard-001.tar",
                                                               f"{base}/shard-003.tar"]
    before = storage.stats()["requests"]
    assert storage.expand(f"{base}/shard-{{002..003}}.tar", "k") == \
        [f"{base}/shard-002.tar", f"{base}/shard-003.tar"]
    assert storage.stats()["requests"] == before  # braces name objects: nothing is listed
    listed = open_store(base).list(f"{base}/")
    assert [i.url for i in listed] == sorted(i.url for i in listed)
    assert {i.url for i in listed} == {f"{base}/shard-{i:03d}.tar" for i in range(4)} | \
        {f"{base}/deeper/shard-009.tar", f"{base}/notes.txt"}
    assert {i.size for i in listed if "/train/shard-" in i.url} == {100, 101, 102, 103}
    with pytest.raises(storage.StorageError, match=rf"^source\.urls: {base}/val-\*\.tar: no objects "
                                                   "match") as info:
        storage.expand(f"{base}/val-*.tar", "source.urls")
    assert info.value.kind == "not_found"


def test_every_read_returns_the_exact_bytes(s3, bucket, tmp_path):
    """read, read_range, read_ranges, read_many and download against the real server."""
    blobs = {f"s3://{bucket}/d/{i}.bin": _data(50_000 + i * 999, i) for i in range(6)}
    for url, data in blobs.items():
        s3.put(url, data)
    url, data = next(iter(blobs.items()))
    store = storage.open_store(url)
    assert store.read(url) == data
    assert store.head(url).size == len(data)
    assert store.read_range(url, 1234, 5000) == data[1234:6234]
    assert store.read_ranges(url, [0, 40_000, 10], [10, 9_999, 7]) == \
        [data[0:10], data[40_000:49_999], data[10:17]]
    many = store.read_many(list(blobs) + [f"s3://{bucket}/d/missing.bin"])
    assert many[:-1] == list(blobs.values())
    assert isinstance(many[-1], storage.StorageError) and many[-1].kind == "not_found"
    dest = tmp_path / "copy.bin"
    last_url = list(blobs)[-1]
    assert store.download(last_url, str(dest)) == len(blobs[last_url])
    assert dest.read_bytes() == blobs[last_url]
    assert os.listdir(tmp_path) == ["copy.bin"]  # no temporary file left beside it
    with pytest.raises(storage.StorageError, match="InvalidRange") as info:
        store.read_range(url, len(data) + 10, 5)
    assert info.value.url == url


def test_a_missing_object_or_bucket_fails_at_once_naming_the_url(s3, bucket, tmp_path):
    before = storage.stats()
    for url in (f"s3://{bucket}/no/such.tar", "s3://no-such-bucket-here/x.tar"):
        with pytest.raises(storage.StorageError, match=rf"^{url}: no such object or bucket") as info:
            storage.open_store(url).read(url)
        assert info.value.kind == "not_found"
    with pytest.raises(storage.StorageError, match="NoSuchBucket"):
        storage.open_store("s3://no-such-bucket-here/").list("s3://no-such-bucket-here/")
    with pytest.raises(storage.StorageError) as info:
        storage.open_store(f"s3://{bucket}/").download(f"s3://{bucket}/no.tar", str(tmp_path / "x"))
    assert info.value.kind == "not_found" and os.listdir(tmp_path) == []
    after = storage.stats()
    assert after["retries"] == before["retries"]  # never retried
    assert after["errors"] == before["errors"] + 4


@pytest.fixture(scope="module")
def s3_with_auth() -> Iterator[tuple[S3Server, str, str]]:
    """moto checking signatures: an IAM user's key made in the first unauthenticated calls."""
    with pytest.MonkeyPatch.context() as patch:
        patch.setenv("INITIAL_NO_AUTH_ACTION_COUNT", "4")
        server = S3Server().start(restore=False)
    try:
        import boto3

        iam = boto3.session.Session().client(
            "iam", endpoint_url=server.endpoint, region_name="us-east-1",
            aws_access_key_id="testing", aws_secret_access_key="testing")
        iam.create_user(UserName="reader")
        iam.put_user_policy(UserName="reader", PolicyName="s3", PolicyDocument=json.dumps({
            "Version": "2012-10-17",
            "Statement": [{"Effect": "Allow", "Action": "s3:*", "Resource": "*"}]}))
        key = iam.create_access_key(UserName="reader")["AccessKey"]
        iam.close()
        yield server, key["AccessKeyId"], key["SecretAccessKey"]
    finally:
        server.stop()


def test_a_wrong_secret_key_is_denied_at_once_naming_the_url(s3_with_auth, monkeypatch):
    server, key_id, secret = s3_with_auth
    apply_env({**server.env(), "AWS_ACCESS_KEY_ID": key_id, "AWS_SECRET_ACCESS_KEY": secret},
              monkeypatch)
    storage.configure({"backoff_s": 0.01}, None)
    url = "s3://authed/x.bin"
    store = storage.open_store(url)
    with pytest.raises(storage.StorageError) as info:  # the right key: the bucket is missing
        store.read(url)
    assert info.value.kind == "not_found"
    monkeypatch.setenv("AWS_SECRET_ACCESS_KEY", "not-the-secret")
    before = storage.stats()["retries"]
    with pytest.raises(storage.StorageError, match=rf"^{url}: access denied; check the "
                                                   "credentials") as info:
        storage.open_store(url).read(url)
    assert info.value.kind == "denied"
    assert "SignatureDoesNotMatch" in str(info.value)
    assert storage.stats()["retries"] == before
    reset()


def test_an_endpoint_that_does_not_answer_fails_naming_it(monkeypatch, s3):
    """A closed port: refused connections are retried (counted) until connect_timeout_s,
    then a StorageError of kind unreachable names the endpoint."""
    port = free_port()
    apply_env(s3.env(f"http://127.0.0.1:{port}"), monkeypatch)
    storage.configure({"connect_timeout_s": 0.5, "backoff_s": 0.05, "retries": 1000}, None)
    before = storage.stats()
    with pytest.raises(storage.StorageError, match=rf"127\.0\.0\.1:{port}") as info:
        storage.open_store("s3://b/x").read("s3://b/x")
    assert info.value.kind == "unreachable"
    assert "storage.connect_timeout_s" in str(info.value)
    after = storage.stats()
    assert after["retries"] > before["retries"]
    assert after["in_flight"] == before["in_flight"]
    reset()


def test_http_5xx_is_retried_and_counted_then_gives_up(http):
    (http.root / "a.bin").write_bytes(_data(3000, 1))
    url = http.url("a.bin")
    store = storage.open_store(url)
    before = storage.stats()
    http.fail_next(2, 503)
    assert store.read_range(url, 100, 50) == _data(3000, 1)[100:150]
    middle = storage.stats()
    assert middle["retries"] - before["retries"] == 2
    assert middle["errors"] == before["errors"]
    http.fail_next(10, 500)  # more than storage.retries=3
    with pytest.raises(storage.StorageError, match="gave up after 3 retries") as info:
        store.read(url)
    assert info.value.kind == "transient" and info.value.url == url
    after = storage.stats()
    assert after["retries"] - middle["retries"] == 3
    assert after["errors"] - middle["errors"] == 1
    http.fail_next(0)
    with http._lock:
        http._failures.clear()


def test_an_http_server_cannot_be_globbed(http):
    with pytest.raises(storage.StorageError, match=r"^source\.urls: .*cannot be listed"):
        storage.expand(http.url("shard-*.tar"), "source.urls")


def _child_reads(url: str) -> tuple[tuple[object, object], int]:
    data = storage.open_store(url).read(url)
    return storage.settings(), len(data)


def test_a_child_process_counts_into_the_parents_stats_and_has_its_settings(http):
    """A spawned worker: same settings as the parent (through the environment), and its
    bytes and requests reach the parent's stats() after it ended."""
    (http.root / "c.bin").write_bytes(_data(7777, 3))
    storage.configure({"backoff_s": 0.01, "retries": 3, "concurrency": 5},
                      {"max_bytes": "1GiB", "read_ahead": 2})
    before = storage.stats()
    context = multiprocessing.get_context("spawn")
    with context.Pool(1) as pool:
        child_settings, size = pool.apply(_child_reads, (http.url("c.bin"),))
    assert size == 7777
    assert child_settings == storage.settings()
    after = storage.stats()
    assert after["bytes_read"] - before["bytes_read"] == 7777
    assert after["requests"] - before["requests"] == 1


def test_a_store_pickles_as_its_url_and_settings(http):
    (http.root / "p.bin").write_bytes(b"pickled")
    store = storage.open_store(http.url("p.bin"))
    copy = pickle.loads(pickle.dumps(store))
    assert copy.settings == store.settings and copy.base == store.base
    assert copy.read(http.url("p.bin")) == b"pickled"


def test_bad_storage_and_cache_values_name_their_key(tmp_path):
    with pytest.raises(ConfigError, match=r"^storage\.concurrency: expected a whole number >= 1"):
        storage.configure({"concurrency": 0}, None)
    with pytest.raises(ConfigError, match=r"^storage\.endpoint: expected a URL"):
        storage.configure({"endpoint": "localhost:9000"}, None)
    with pytest.raises(ConfigError, match=r"^cache\.max_bytes: cannot read 'lots'"):
        storage.configure(None, {"max_bytes": "lots"})
    with pytest.raises(ConfigError, match=r"^storage\.bogus: unknown key"):
        storage.configure({"bogus": 1}, None)
    storage.configure(None, {"dir": str(tmp_path), "max_bytes": "3GiB"})
    try:
        assert storage.cache_dir() == str(tmp_path)
        assert storage.settings()[1].max_bytes == 3 * 2**30
        storage.configure(None, {"dir": str(tmp_path / "not-yet")})
        limit = min(20 * 2**30, free_bytes(str(tmp_path)) // 2)
        assert abs(storage.settings()[1].max_bytes - limit) < 2**30  # the disk may move a bit
    finally:
        reset()


def test_settings_default_to_the_cache_dir_of_the_environment(monkeypatch, tmp_path):
    reset()
    monkeypatch.setenv("INPUTKIT_CACHE_DIR", str(tmp_path / "c"))
    assert storage.cache_dir() == str(tmp_path / "c")
    reset()


@pytest.fixture
def proxied(s3: S3Server, monkeypatch: pytest.MonkeyPatch) -> Iterator[tuple[FaultProxy, str]]:
    """A bucket reached through a FaultProxy in front of the S3 server."""
    with FaultProxy("127.0.0.1", s3.port) as proxy:
        apply_env(s3.env(proxy.endpoint), monkeypatch)
        storage.configure({"backoff_s": 0.01, "connect_timeout_s": 10}, None)
        yield proxy, s3.make_bucket()
        reset()


def test_reset_connections_are_retried_and_every_retry_counted(s3, proxied, tmp_path):
    proxy, bucket = proxied
    url = s3.put(f"s3://{bucket}/r.bin", _data(200_000, 5))
    store = storage.open_store(url)
    assert store.read_range(url, 0, 10) == _data(200_000, 5)[:10]  # a pooled connection now
    before = storage.stats()
    proxy.reset_connections(n=3)
    assert store.read(url) == _data(200_000, 5)
    after = storage.stats()
    assert proxy.counts.resets == 3
    assert after["retries"] - before["retries"] == 3
    assert after["errors"] == before["errors"]
    assert after["bytes_read"] - before["bytes_read"] == 200_000
    proxy.reset_connections(n=1, after_bytes=50_000)  # the body cut short mid-download
    dest = tmp_path / "r.bin"
    assert store.download(url, str(dest)) == 200_000
    assert dest.read_bytes() == _data(200_000, 5)
    assert os.listdir(tmp_path) == ["r.bin"]
    assert storage.stats()["retries"] - after["retries"] == 1


def test_a_store_that_goes_away_and_comes_back_loses_no_read(s3, proxied):
    """Refused for a while (shorter than connect_timeout_s): the reads wait, retrying."""
    proxy, bucket = proxied
    urls = [s3.put(f"s3://{bucket}/g/{i}.bin", _data(10_000, i)) for i in range(8)]
    store = storage.open_store(urls[0])
    before = storage.stats()
    proxy.refuse(for_s=1.0)
    got = store.read_many(urls)
    assert got == [_data(10_000, i) for i in range(8)]
    after = storage.stats()
    assert after["retries"] > before["retries"]
    assert after["errors"] == before["errors"]


def test_an_azure_url_without_an_account_says_where_to_name_one(monkeypatch):
    for name in ("AZURE_STORAGE_ACCOUNT_NAME", "AZURE_STORAGE_CONNECTION_STRING",
                 "AZURE_STORAGE_USE_EMULATOR"):
        monkeypatch.delenv(name, raising=False)
    with pytest.raises(storage.StorageError, match=r"^az://box: names no storage account; set "
                                                   "AZURE_STORAGE_ACCOUNT_NAME"):
        storage.open_store("az://box/x.tar").read("az://box/x.tar")
    monkeypatch.setenv("AZURE_STORAGE_CONNECTION_STRING",
                       "DefaultEndpointsProtocol=https;AccountName=acct;AccountKey=a2V5;"
                       "EndpointSuffix=core.windows.net")
    assert storage.open_store("az://box/x.tar").client().config["account_name"] == "acct"


def test_forkserver_workers_read_the_latest_settings_and_count_into_the_parent(http):
    """The forkserver passes on the environment it started with; the run's folder it names
    holds the settings configured since, and the workers' counters."""
    from inputkit.workers.processes import context

    (http.root / "f.bin").write_bytes(_data(4321, 9))
    ctx = context("forkserver")
    with ctx.Pool(1) as pool:  # the forkserver runs from here on (maybe from an earlier test)
        pool.apply(_child_reads, (http.url("f.bin"),))
    storage.configure({"concurrency": 7, "retries": 2}, {"read_ahead": 1})
    before = storage.stats()
    with ctx.Pool(1) as pool:
        child_settings, size = pool.apply(_child_reads, (http.url("f.bin"),))
    assert child_settings == storage.settings()
    assert child_settings[0].concurrency == 7 and child_settings[1].read_ahead == 1
    assert storage.stats()["bytes_read"] - before["bytes_read"] == 4321


def test_a_process_that_configures_a_run_of_its_own_counts_apart_from_the_one_it_came_from(
        tmp_path):
    """A CLI started by another inputkit process inherits its folder's name but not its run."""
    import subprocess
    import sys

    storage.stats()  # this process's folder exists
    code = ("from inputkit import storage; from inputkit.storage import counters;"
            "storage.configure(None, None); counters.add('bytes_read', 5);"
            "import os; print(os.environ[counters.ENV_DIR])")
    before = storage.stats()["bytes_read"]
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True,
                         timeout=60)
    assert out.stdout.strip() != os.environ["INPUTKIT_STORAGE_STATS_DIR"]
    assert storage.stats()["bytes_read"] == before
    reset()


def test_a_request_nobody_answers_times_out_and_is_retried_as_transient(s3, proxied):
    """Accepted but never answered (a black hole): each try ends at storage.timeout_s, is
    retried and counted, then fails naming the URL."""
    proxy, bucket = proxied
    url = s3.put(f"s3://{bucket}/h.bin", b"held")
    storage.configure({"timeout_s": 0.3, "retries": 1, "backoff_s": 0.01}, None)
    before = storage.stats()
    proxy.blackhole(for_s=30)
    try:
        with pytest.raises(storage.StorageError, match=rf"^{url}: the store kept failing.*gave "
                                                       "up after 1 retries") as info:
            storage.open_store(url).read(url)
    finally:
        proxy.heal()
    assert info.value.kind == "transient"
    assert storage.stats()["retries"] - before["retries"] == 1
    assert storage.open_store(url).read(url) == b"held"

"""Review fixes in the storage core: brace and glob edge cases of expand(), "folder" marker
objects kept out of listings, keys with spaces and '%' read back exactly, local disk
failures of a download named as such (not as the store's), counter folders of crashed
runs cleaned up."""

from __future__ import annotations

from collections.abc import Iterator

import pytest
from storage_servers import S3Server, apply_env

from inputkit import storage
from inputkit.storage.locations import expand_braces
from inputkit.storage.settings import reset
from inputkit.storage.store import open_store

pytestmark = pytest.mark.timeout(120)


@pytest.fixture(scope="module")
def s3() -> Iterator[S3Server]:
    with S3Server() as server:
        yield server


@pytest.fixture
def bucket(s3: S3Server, monkeypatch: pytest.MonkeyPatch) -> Iterator[str]:
    apply_env(s3.env(), monkeypatch)
    storage.configure({"backoff_s": 0.01, "retries": 2}, None)
    yield s3.make_bucket()
    reset()


@pytest.mark.parametrize(("pattern", "expected"), [
    ("x{a,b{1,2}}", ["xa", "xb1", "xb2"]),
    ("{a,{b,c}}.tar", ["a.tar", "b.tar", "c.tar"]),
    ("s-{1..10}", [f"s-{i}" for i in range(1, 11)]),
    ("s-{08..10}", ["s-08", "s-09", "s-10"]),
    ("s-{3..1}", ["s-3", "s-2", "s-1"]),
    ("{a,b}-{1,2}", ["a-1", "a-2", "b-1", "b-2"]),
    ("a{,b}", ["a", "ab"]),
    ("keep-{x}-{}", ["keep-{x}-{}"]),
    ("odd{-{1,2}", ["odd{-1", "odd{-2"]),
])
def test_brace_expansion_matches_the_shell(pattern, expected):
    assert expand_braces(pattern) == expected


def test_nested_braces_name_each_local_file_once(tmp_path):
    for name in ("a.tar", "b1.tar", "b2.tar"):
        (tmp_path / name).write_bytes(b"x")
    found = storage.expand(str(tmp_path / "{a,b{1,2}}.tar"), "source.urls")
    assert found == [str(tmp_path / n) for n in ("a.tar", "b1.tar", "b2.tar")]


def test_a_remote_glob_leaves_hidden_objects_and_folder_markers_out(s3, bucket):
    base = f"s3://{bucket}/data"
    for name in ("a.tar", "b.tar", ".c.tar"):
        s3.put(f"{base}/{name}", b"tar!")
    s3.put(f"{base}/sub/", b"")  # a console's "create folder"
    s3.put(f"{base}/empty.tar", b"")  # a real empty object stays: the source decides
    assert storage.expand(f"{base}/*.tar", "source.urls") == \
        [f"{base}/a.tar", f"{base}/b.tar", f"{base}/empty.tar"]
    assert storage.expand(f"{base}/.*.tar", "source.urls") == [f"{base}/.c.tar"]
    s3.put(f"{base}/full/", b"")  # a marker with objects below it: no HEAD needed
    s3.put(f"{base}/full/x.tar", b"tar!")
    before = storage.stats()["errors"]
    requests = storage.stats()["requests"]
    listed = [info.url for info in open_store(base).list(f"{base}/")]
    assert f"{base}/sub" not in listed and f"{base}/empty.tar" in listed
    assert f"{base}/full" not in listed and f"{base}/full/x.tar" in listed
    assert storage.stats()["requests"] - requests == 3  # the LIST, a HEAD each: sub, empty.tar
    assert storage.expand(f"{base}/*", "k") == [f"{base}/{n}" for n in ("a.tar", "b.tar",
                                                                      "empty.tar")]
    assert storage.stats()["errors"] == before  # telling a marker apart is not an error


def test_keys_with_spaces_and_percent_signs_read_back_exactly(s3, bucket):
    base = f"s3://{bucket}/odd names"
    blobs = {"my file.bin": b"one", "p%41q.bin": b"two", "pAq.bin": b"three"}
    for name, data in blobs.items():
        s3.put(f"{base}/{name}", data)
    found = storage.expand(f"{base}/*.bin", "k")
    assert found == sorted(f"{base}/{n}" for n in blobs)
    store = open_store(base)
    assert [store.read(u) for u in found] == [blobs[u.rsplit("/", 1)[1]] for u in found]
    assert [i.size for i in store.list(f"{base}/")] == [len(blobs[u.rsplit("/", 1)[1]])
                                                        for u in found]


def test_a_download_that_cannot_be_written_locally_is_the_disks_error_not_the_stores(
        s3, bucket, tmp_path):
    url = f"s3://{bucket}/shard.tar"
    s3.put(url, b"x" * 1000)
    store = open_store(url)
    before = storage.stats()
    with pytest.raises(FileNotFoundError) as info:  # was StorageError "no such object"
        store.download(url, str(tmp_path / "no-such-folder" / "shard.tar"))
    assert not isinstance(info.value, storage.StorageError)
    assert any(url in note and "cache.dir" in note for note in info.value.__notes__)
    after = storage.stats()
    assert after["retries"] == before["retries"] and after["errors"] == before["errors"]
    assert store.download(url, str(tmp_path / "shard.tar")) == 1000
    assert (tmp_path / "shard.tar").read_bytes() == b"x" * 1000
    assert [p.name for p in tmp_path.iterdir()] == ["shard.tar"]  # no temporary left


def test_a_reused_pid_does_not_wipe_a_finished_workers_counts(tmp_path, monkeypatch):
    from inputkit.storage import counters

    monkeypatch.setenv(counters.ENV_DIR, str(tmp_path))
    counters._Counters(str(tmp_path)).add("requests", 5)  # a worker that has finished
    counters._Counters(str(tmp_path)).add("requests", 2)  # a later one with the same pid
    assert counters.stats()["requests"] == 7


def test_counter_folders_of_crashed_runs_are_removed_by_the_next_run(tmp_path):
    import os
    import subprocess
    import sys

    from inputkit.storage import counters

    dead = subprocess.run([sys.executable, "-c", "import os; print(os.getpid())"],
                          capture_output=True, text=True, check=True)
    dead_pid = int(dead.stdout)
    orphan = tmp_path / f"{counters._PREFIX}{dead_pid}-crashed"
    living = tmp_path / f"{counters._PREFIX}{os.getpid()}-running"
    for folder in (orphan, living):
        folder.mkdir()
        (folder / "1.counters").write_bytes(b"\0" * 8)
    env = {k: v for k, v in os.environ.items() if k != counters.ENV_DIR}
    env["TMPDIR"] = str(tmp_path)
    code = ("from inputkit.storage import counters; counters.add('requests');"
            "import os; print(os.environ[counters.ENV_DIR])")
    made = subprocess.run([sys.executable, "-c", code], env=env, capture_output=True,
                          text=True, check=True, timeout=60).stdout.strip()
    assert os.path.dirname(made) == str(tmp_path)
    assert not orphan.exists() and living.exists() and not os.path.exists(made)


def test_a_download_of_a_listed_version_refuses_an_object_replaced_since(s3, bucket, tmp_path):
    url = f"s3://{bucket}/shard-000.tar"
    s3.put(url, b"a" * 2048)
    listed = open_store(url).head(url)
    s3.put(url, b"b" * 2048)  # replaced with the same size: only the etag tells
    dest = tmp_path / "shard-000.tar"
    with pytest.raises(storage.StorageError, match="changed in the store since it was listed") \
            as info:
        open_store(url).download(url, str(dest), etag=listed.etag)
    assert info.value.url == url and info.value.kind == "other"
    assert not dest.exists() and list(tmp_path.iterdir()) == []
    now = open_store(url).head(url)
    assert open_store(url).download(url, str(dest), etag=now.etag) == 2048
    assert dest.read_bytes() == b"b" * 2048


def test_the_environment_wins_over_the_aws_files_setting_by_setting(tmp_path, monkeypatch):
    from inputkit.storage.credentials import aws_profile

    config = tmp_path / "config"
    config.write_text("[profile lab]\nregion = eu-west-3\nendpoint_url = http://file:9000\n")
    creds = tmp_path / "credentials"
    creds.write_text("[lab]\naws_access_key_id = FILEKEY\naws_secret_access_key = FILESECRET\n")
    for name in ("AWS_ACCESS_KEY_ID", "AWS_REGION", "AWS_DEFAULT_REGION", "AWS_ENDPOINT_URL",
                 "AWS_ENDPOINT_URL_S3", "AWS_DEFAULT_PROFILE"):
        monkeypatch.delenv(name, raising=False)
    monkeypatch.setenv("AWS_CONFIG_FILE", str(config))
    monkeypatch.setenv("AWS_SHARED_CREDENTIALS_FILE", str(creds))
    monkeypatch.setenv("AWS_PROFILE", "lab")
    assert aws_profile() == {"access_key_id": "FILEKEY", "secret_access_key": "FILESECRET",
                             "region": "eu-west-3", "endpoint": "http://file:9000"}
    monkeypatch.setenv("AWS_REGION", "us-east-2")  # a region alone keeps the file's endpoint
    assert aws_profile()["endpoint"] == "http://file:9000" and "region" not in aws_profile()
    monkeypatch.setenv("AWS_ENDPOINT_URL_S3", "http://env:9000")
    assert "endpoint" not in aws_profile()


def test_aws_endpoint_url_s3_is_the_endpoint_the_client_uses(s3, bucket, monkeypatch):
    url = f"s3://{bucket}/x.bin"
    s3.put(url, b"found")
    endpoint = s3.env()["AWS_ENDPOINT_URL"]
    monkeypatch.delenv("AWS_ENDPOINT_URL", raising=False)
    monkeypatch.setenv("AWS_ENDPOINT_URL_S3", endpoint)
    assert open_store(url).read(url) == b"found"


def test_read_many_works_from_a_thread_whose_event_loop_is_running(s3, bucket):
    """An inline worker in a notebook (or an async framework) calls read_many from a thread
    that runs an event loop, where asyncio.run refuses."""
    import asyncio

    urls = [f"s3://{bucket}/img-{i}.jpg" for i in range(5)]
    for i, url in enumerate(urls):
        s3.put(url, bytes([i]) * (i + 1))
    store = open_store(urls[0])

    async def inside_a_loop() -> list[bytes | storage.StorageError]:
        return store.read_many(urls + [f"s3://{bucket}/missing.jpg"])

    got = asyncio.run(inside_a_loop())
    assert got[:5] == [bytes([i]) * (i + 1) for i in range(5)]
    assert isinstance(got[5], storage.StorageError) and got[5].kind == "not_found"
    assert got[5].url == f"s3://{bucket}/missing.jpg"


def test_read_many_waits_for_the_processs_request_slots(s3, bucket):
    """storage.concurrency bounds the requests in flight in the whole process: read_many
    in one thread waits while other threads hold every slot, and goes on once they are
    given back."""
    import threading

    from inputkit.storage.request_gate import request_slots

    urls = [f"s3://{bucket}/obj-{i}" for i in range(3)]
    for url in urls:
        s3.put(url, url.encode())
    store = open_store(urls[0])
    store.head(urls[0])  # the client built before the slots are taken
    concurrency = storage.settings()[0].concurrency
    slots = request_slots(concurrency)
    for _ in range(concurrency):
        assert slots.acquire(timeout=10)
    got: list[object] = []
    reader = threading.Thread(target=lambda: got.append(store.read_many(urls)))
    try:
        reader.start()
        reader.join(timeout=1.0)
        assert reader.is_alive() and not got  # every slot is held elsewhere
    finally:
        for _ in range(concurrency):
            slots.release()
    reader.join(timeout=30)
    assert not reader.is_alive() and got == [[u.encode() for u in urls]]


def test_a_worker_killed_mid_request_leaves_no_request_in_flight(tmp_path, monkeypatch):
    import os
    import signal
    import subprocess
    import sys

    from inputkit.storage import counters

    monkeypatch.setenv(counters.ENV_DIR, str(tmp_path))
    code = ("from inputkit.storage import counters; counters.add('requests', 3);"
            "counters.add('in_flight', 2); print('counted', flush=True); input()")
    child = subprocess.Popen([sys.executable, "-c", code], stdin=subprocess.PIPE,
                             stdout=subprocess.PIPE, text=True)
    try:
        assert child.stdout is not None and child.stdout.readline().strip() == "counted"
        assert counters.stats()["in_flight"] == 2  # alive: its requests are in flight
    finally:
        os.kill(child.pid, signal.SIGKILL)
        child.wait(timeout=30)
        for pipe in (child.stdin, child.stdout):
            if pipe is not None:
                pipe.close()
    after = counters.stats()
    assert after["requests"] == 3 and after["in_flight"] == 0


def test_runs_configured_from_several_threads_at_once_do_not_trip_over_each_other():
    """Two runners started from threads of one process both write the run's settings file."""
    import threading

    errors: list[BaseException] = []

    def configure_often(concurrency: int) -> None:
        try:
            for _ in range(100):
                storage.configure({"concurrency": concurrency}, None)
        except BaseException as exc:  # noqa: BLE001 - reported below
            errors.append(exc)

    threads = [threading.Thread(target=configure_often, args=(c,)) for c in (3, 5, 7, 9)]
    try:
        for thread in threads:
            thread.start()
        for thread in threads:
            thread.join(timeout=60)
        assert errors == [] and not any(t.is_alive() for t in threads)
        assert storage.settings()[0].concurrency in (3, 5, 7, 9)
    finally:
        reset()


def test_a_range_file_behaves_as_a_file_at_its_edges(s3, bucket):
    import io

    from inputkit.sources.remote_files import RangeFile

    url = f"s3://{bucket}/blob.bin"
    data = bytes(range(256)) * 40
    s3.put(url, data)
    local, remote = io.BytesIO(data), RangeFile(url, len(data), block=1000)
    for whence, offset, size in [(io.SEEK_SET, 0, 10), (io.SEEK_CUR, 995, 20),
                                 (io.SEEK_END, -5, 100), (io.SEEK_END, 50, 10),
                                 (io.SEEK_SET, 3000, -1), (io.SEEK_SET, 7, 0)]:
        assert remote.seek(offset, whence) == local.seek(offset, whence)
        assert remote.read(size) == local.read(size)
        assert remote.tell() == local.tell()
    buffer = bytearray(64)
    remote.seek(len(data) - 10)
    assert remote.readinto(buffer) == 10 and bytes(buffer[:10]) == data[-10:]
    with pytest.raises(ValueError, match="never negative"):
        remote.seek(-1)
    with pytest.raises(ValueError, match="never negative"):
        remote.seek(-len(data) - 1, io.SEEK_END)
    remote.close()

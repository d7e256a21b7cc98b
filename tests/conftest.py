"""Shared fixtures: leak checks for pipeline threads, processes and shared memory; config helpers."""

from __future__ import annotations

import contextlib
import gc
import os
import threading
import time
from collections.abc import Iterator
from typing import Any

import psutil
import pytest


def pipeline_threads() -> list[threading.Thread]:
    return [t for t in threading.enumerate() if t.name.startswith("inputkit-") and t.is_alive()]


def wait_until(condition: Any, what: str, seconds: float = 30.0) -> None:
    """Poll ``condition()`` until it is true: a state barrier with a deadline generous enough
    for a loaded machine, that fails the test naming ``what`` it waited for."""
    deadline = time.monotonic() + seconds
    while not condition():
        assert time.monotonic() < deadline, f"waited {seconds:g} s for {what}"
        time.sleep(0.02)


def wait_for_no_pipeline_threads(seconds: float = 3.0) -> list[threading.Thread]:
    """Wait up to ``seconds`` for every inputkit thread to end; return those still running."""
    deadline = time.monotonic() + seconds
    while pipeline_threads() and time.monotonic() < deadline:
        time.sleep(0.02)
    return pipeline_threads()


def segments() -> set[str]:
    """This test process's shared-memory segments (named inputkit_<pid>_...; others' runs do
    not count): names left in /dev/shm, and the unlinked segments it still maps or holds a
    descriptor of (a slot arena is unlinked as soon as it is made, so only these show it)."""
    mine = f"inputkit_{os.getpid()}_"
    found = {name for name in os.listdir("/dev/shm") if name.startswith(mine)}
    with open("/proc/self/maps") as maps:
        found |= {line.split()[-2] if line.rstrip().endswith("(deleted)") else line.split()[-1]
                  for line in maps if mine in line}
    for fd in os.listdir("/proc/self/fd"):
        with contextlib.suppress(OSError):
            if mine in (target := os.readlink(f"/proc/self/fd/{fd}")):
                found.add(target.split()[0])
    return {os.path.basename(path) for path in found}


def drop_captured_log_records(caplog: pytest.LogCaptureFixture) -> None:
    """Let go of the log records pytest kept of this test (their text stays in the report).

    A record logged with ``exc_info`` holds the traceback, its frames and so a closed
    runner with its shared-memory mapping: without this, a leak check would see pytest's
    own reference as a leak.
    """
    for when in ("setup", "call"):
        caplog.get_records(when).clear()


def alive(pids: list[int]) -> list[int]:
    """The processes of ``pids`` that still run (zombies do not count)."""
    out = []
    for pid in pids:
        try:
            if psutil.Process(pid).status() != psutil.STATUS_ZOMBIE:
                out.append(pid)
        except psutil.NoSuchProcess:
            pass
    return out


def ray_processes() -> set[int]:
    """This process's descendants that belong to Ray (raylets, GCS, its workers and agents)."""
    found = set()
    for child in psutil.Process().children(recursive=True):
        try:
            line = " ".join(child.cmdline())
            # (multiprocessing's forkserver, of the process-worker tests, lists Ray's paths)
            if "ray" in line and "forkserver" not in line and "resource_tracker" not in line:
                found.add(child.pid)
        except psutil.Error:
            continue
    return found


def children() -> set[int]:
    """Live child processes, except multiprocessing's long-lived forkserver and tracker."""
    out = set()
    for child in psutil.Process().children(recursive=True):
        try:
            if child.status() != psutil.STATUS_ZOMBIE and \
                    not any("forkserver" in a or "resource_tracker" in a for a in child.cmdline()):
                out.add(child.pid)
        except psutil.NoSuchProcess:
            pass
    return out


def assert_nothing_leaked(before_segments: set[str], before_children: set[int],
                          caplog: pytest.LogCaptureFixture, seconds: float = 5.0) -> None:
    """No segment (named or mapped) and no worker process beyond those there ``before``.

    Waits up to ``seconds`` for them to go (workers being reaped, the slot thread
    returning slots), after letting go of what pytest holds of the test: the log records
    and, through the garbage collector, a caught exception's frames with a batch that
    views a slot.
    """
    drop_captured_log_records(caplog)
    gc.collect()
    deadline = time.monotonic() + seconds
    while time.monotonic() < deadline and (segments() - before_segments
                                           or children() - before_children):
        time.sleep(0.05)
    assert segments() - before_segments == set(), "shared-memory segments left in /dev/shm or mapped"
    assert children() - before_children == set(), "worker processes left running"


@pytest.fixture(autouse=True, scope="session")
def private_cache_dir(tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    """Every cache inputkit writes (index files, downloaded shards) goes to a tmp folder of this
    test session, never to the user's ~/.cache (storage.cache_dir reads INPUTKIT_CACHE_DIR)."""
    folder = str(tmp_path_factory.mktemp("inputkit-cache"))
    before = os.environ.get("INPUTKIT_CACHE_DIR")
    os.environ["INPUTKIT_CACHE_DIR"] = folder
    yield folder
    if before is None:
        os.environ.pop("INPUTKIT_CACHE_DIR", None)
    else:
        os.environ["INPUTKIT_CACHE_DIR"] = before


@pytest.fixture(autouse=True)
def no_leaked_threads() -> Iterator[None]:
    """Every test must leave no inputkit thread running (they have 2 s to stop)."""
    yield
    leaked = [t.name for t in wait_for_no_pipeline_threads()]
    assert not leaked, f"pipeline threads still running after the test: {leaked}"


def make_cfg(source: dict[str, Any], **top: Any) -> dict[str, Any]:
    """A plain-dict config (no Hydra) around ``source``."""
    cfg: dict[str, Any] = {"source": source, "devices": "cpu"}
    cfg.update(top)
    return cfg


def consume_within(runner: Any, loop: Any, seconds: float) -> BaseException | None:
    """Run ``loop()`` (a consumer of ``runner``) in a thread that must finish within
    ``seconds``, then close the runner; return what ``loop`` raised, or None. A consumer
    still waiting at the deadline fails the test instead of hanging it."""
    raised: list[BaseException] = []

    def guarded() -> None:
        try:
            loop()
        except BaseException as exc:  # noqa: BLE001 - handed to the test
            raised.append(exc)

    consumer = threading.Thread(target=guarded, name="test-consumer", daemon=True)
    consumer.start()
    consumer.join(seconds)
    waiting = consumer.is_alive()
    runner.close()
    consumer.join(5)
    assert not waiting, f"the consumer was still waiting after {seconds:g}s"
    return raised[0] if raised else None


# -- real storage servers on 127.0.0.1 (tests/storage_servers.py) --------------------------

@pytest.fixture(scope="session")
def s3_server() -> Iterator[Any]:
    """moto's S3 server in a subprocess for the whole session (skipped only where moto's
    server extra is not installed; the test extra installs it)."""
    pytest.importorskip("moto.server", reason="moto's server is not installed: pip install 'moto[server]'")
    pytest.importorskip("boto3", reason="boto3 is not installed: pip install boto3")
    from storage_servers import S3Server

    server = S3Server()
    server.start()
    try:
        yield server
    finally:
        server.stop()


@pytest.fixture
def s3_bucket(s3_server: Any, monkeypatch: pytest.MonkeyPatch) -> Iterator[Any]:
    """A fresh bucket on the session's S3 server, with the AWS environment of this test
    pointing at it (AWS_ENDPOINT_URL, test credentials, plain http; undone after the test).
    After the test the server no longer puts it back at a restart."""
    from storage_servers import S3Bucket, apply_env

    if not s3_server.running:  # a test before this one stopped it and did not start it again
        s3_server.start()
    apply_env(s3_server.env(), monkeypatch)
    bucket = S3Bucket(s3_server, s3_server.make_bucket())
    yield bucket
    s3_server.forget(bucket.name)


@pytest.fixture
def http_server() -> Iterator[Any]:
    """Factory: ``http_server(root)`` serves the folder ``root`` on 127.0.0.1 with Range
    support (tests/http_range_server.py); every server made is stopped after the test."""
    from storage_servers import HttpServer

    made: list[Any] = []

    def make(root: Any, port: int = 0) -> Any:
        server = HttpServer(root, port=port).start()
        made.append(server)
        return server

    yield make
    for server in made:
        server.stop()


@pytest.fixture
def fault_proxy() -> Iterator[Any]:
    """Factory: ``fault_proxy(target)`` puts a FaultProxy in front of ``target`` (an object
    with ``.endpoint``, e.g. s3_server or an http_server, or a (host, port) pair); every proxy
    made is closed after the test. Point a client at ``proxy.endpoint``."""
    from urllib.parse import urlsplit

    from storage_servers import FaultProxy

    made: list[Any] = []

    def make(target: Any) -> Any:
        if isinstance(target, tuple):
            host, port = target
        else:
            parts = urlsplit(target if isinstance(target, str) else target.endpoint)
            host, port = parts.hostname, parts.port
        proxy = FaultProxy(host, port).start()
        made.append(proxy)
        return proxy

    yield make
    for proxy in made:
        proxy.close()

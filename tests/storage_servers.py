"""Real servers for the storage tests, all on 127.0.0.1: an S3-compatible store (moto's
standalone server in a subprocess), an HTTP server with Range support, and a TCP proxy that
injects faults. No mock of any client library: the clients under test speak real HTTP.

``S3Server`` runs moto as a subprocess so a test can stop and restart it on the same port
mid-epoch (an outage the client sees as refused connections) and so moto's CPU does not
share the test's GIL. moto keeps its objects in memory: a restart loses them, so the server
records what was put through it and ``start()`` puts it back (``restore=False`` to start
empty). For an outage that keeps the data, put a ``FaultProxy`` in front and ``refuse()``.
"""

from __future__ import annotations

import contextlib
import os
import socket
import subprocess
import sys
import tempfile
import time
import urllib.error
import urllib.request
import uuid
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from fault_proxy import FaultProxy, ProxyCounts, rst_close
from http_range_server import HttpServer, Seen, parse_range

__all__ = ["FaultProxy", "HttpServer", "ProxyCounts", "S3Bucket", "S3Server", "Seen", "apply_env",
           "free_port", "parse_range", "rst_close", "s3_env"]

ACCESS_KEY = "testing"
SECRET_KEY = "testing"
REGION = "us-east-1"

# Variables that would send a client elsewhere or sign with someone else's credentials.
_FOREIGN_ENV = ("AWS_SESSION_TOKEN", "AWS_SECURITY_TOKEN", "AWS_PROFILE", "AWS_DEFAULT_PROFILE",
                "AWS_ENDPOINT", "AWS_ENDPOINT_URL_S3", "AWS_WEB_IDENTITY_TOKEN_FILE",
                "AWS_ROLE_ARN", "AWS_CONTAINER_CREDENTIALS_RELATIVE_URI",
                "AWS_CONTAINER_CREDENTIALS_FULL_URI")


def free_port() -> int:
    """A TCP port on 127.0.0.1 that nothing listens on right now."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def s3_env(endpoint: str) -> dict[str, str]:
    """The environment that points boto3, s3fs and obstore (object_store) at ``endpoint``
    with moto's test credentials, over plain http, path-style, without IMDS look-ups."""
    return {
        "AWS_ENDPOINT_URL": endpoint,
        "AWS_ACCESS_KEY_ID": ACCESS_KEY,
        "AWS_SECRET_ACCESS_KEY": SECRET_KEY,
        "AWS_REGION": REGION,
        "AWS_DEFAULT_REGION": REGION,
        "AWS_ALLOW_HTTP": "true",  # object_store refuses http:// endpoints without it
        "AWS_VIRTUAL_HOSTED_STYLE_REQUEST": "false",  # bucket in the path: 127.0.0.1 has no subdomains
        "AWS_EC2_METADATA_DISABLED": "true",
        # never read the user's ~/.aws files (a profile there must not change the test)
        "AWS_CONFIG_FILE": os.devnull,
        "AWS_SHARED_CREDENTIALS_FILE": os.devnull,
    }


def apply_env(env: Mapping[str, str], monkeypatch: Any) -> None:
    """Set ``env`` for one test with pytest's ``monkeypatch`` (undone after the test), and
    remove the AWS variables that would override it."""
    for name in _FOREIGN_ENV:
        monkeypatch.delenv(name, raising=False)
    for name, value in env.items():
        monkeypatch.setenv(name, value)


def _split_s3(url: str) -> tuple[str, str]:
    if not url.startswith("s3://"):
        raise ValueError(f"expected an s3://bucket/key URL, got {url!r}")
    bucket, _, key = url[len("s3://"):].partition("/")
    if not bucket:
        raise ValueError(f"no bucket in {url!r}")
    return bucket, key


class S3Server:
    """moto's S3 server in a subprocess on 127.0.0.1; a context manager.

    ``endpoint`` is "http://127.0.0.1:PORT"; ``env()`` the variables a client needs.
    Objects put through ``make_bucket``/``put``/``upload_tree`` are recorded so that
    ``start()`` after ``stop()`` (same port) puts them back.
    """

    def __init__(self, port: int | None = None, start_timeout_s: float = 60.0) -> None:
        self.port = port or free_port()
        self.endpoint = f"http://127.0.0.1:{self.port}"
        self.start_timeout_s = start_timeout_s
        self._proc: subprocess.Popen[bytes] | None = None
        self._log: Any = None
        self._client: Any = None
        self._buckets: list[str] = []
        self._objects: dict[tuple[str, str], bytes] = {}

    # lifecycle ------------------------------------------------------------------------
    def start(self, restore: bool = True) -> S3Server:
        """Start (or restart on the same port) and wait until it answers; with ``restore``,
        re-create the buckets and objects put through this object before a stop."""
        if self.running:
            return self
        self._log = tempfile.TemporaryFile(prefix="moto-server-")
        self._proc = subprocess.Popen(
            [sys.executable, "-m", "moto.server", "-H", "127.0.0.1", "-p", str(self.port)],
            stdin=subprocess.DEVNULL, stdout=self._log, stderr=subprocess.STDOUT,
            env={**os.environ, "PYTHONWARNINGS": "ignore"})
        self._wait_ready()
        if restore:
            for bucket in self._buckets:
                self.client().create_bucket(Bucket=bucket)
            for (bucket, key), data in self._objects.items():
                self.client().put_object(Bucket=bucket, Key=key, Body=data)
        else:
            self._buckets.clear()
            self._objects.clear()
        return self

    def _wait_ready(self) -> None:
        deadline = time.monotonic() + self.start_timeout_s
        last: BaseException | None = None
        while time.monotonic() < deadline:
            assert self._proc is not None
            if self._proc.poll() is not None:
                output = self._output()
                self.stop()
                raise RuntimeError(f"moto's S3 server on {self.endpoint} exited at start "
                                   f"(code {self._proc.returncode}); its output:\n{output}")
            try:
                with urllib.request.urlopen(f"{self.endpoint}/moto-api/", timeout=2) as reply:
                    reply.read()
                return
            except (OSError, urllib.error.URLError) as exc:
                last = exc
                time.sleep(0.1)
        output = self._output()
        self.stop()
        raise RuntimeError(f"moto's S3 server on {self.endpoint} did not answer within "
                           f"{self.start_timeout_s:g} s (last error: {last}); its output:\n{output}")

    def _output(self) -> str:
        if self._log is None:
            return ""
        self._log.seek(0)
        return self._log.read().decode(errors="replace")[-4000:]

    @property
    def running(self) -> bool:
        return self._proc is not None and self._proc.poll() is None

    def stop(self) -> None:
        """Stop the server process (its port refuses connections until ``start()``);
        idempotent."""
        if self._client is not None:
            self._client.close()
            self._client = None
        if self._proc is not None:
            if self._proc.poll() is None:
                self._proc.terminate()
                try:
                    self._proc.wait(10)
                except subprocess.TimeoutExpired:
                    self._proc.kill()
                    self._proc.wait(10)
        if self._log is not None:
            self._log.close()
            self._log = None

    def __enter__(self) -> S3Server:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()

    # clients and data -----------------------------------------------------------------
    def env(self, endpoint: str | None = None) -> dict[str, str]:
        """Environment for a client of this server (or of ``endpoint``, e.g. a proxy's)."""
        return s3_env(endpoint or self.endpoint)

    def client(self, endpoint: str | None = None, **config: Any) -> Any:
        """A boto3 S3 client (the helper's own, not the client under test). Without
        ``endpoint`` the server's shared client; otherwise a new one the caller closes."""
        import boto3
        from botocore.config import Config

        def make(url: str) -> Any:
            return boto3.session.Session().client(
                "s3", endpoint_url=url, region_name=REGION, aws_access_key_id=ACCESS_KEY,
                aws_secret_access_key=SECRET_KEY,
                config=Config(s3={"addressing_style": "path"}, **config))

        if endpoint is not None or config:
            return make(endpoint or self.endpoint)
        if self._client is None:
            self._client = make(self.endpoint)
        return self._client

    def make_bucket(self, name: str | None = None) -> str:
        """Create a bucket (a fresh unique name if none is given); returns its name."""
        name = name or f"test-{uuid.uuid4().hex[:12]}"
        self.client().create_bucket(Bucket=name)
        self._buckets.append(name)
        return name

    def forget(self, bucket: str) -> None:
        """Stop putting ``bucket`` back at a restart (its test is over; the running server keeps
        it): a restart late in a session re-creates only the buckets still in use, not every
        object the session ever put."""
        self._buckets = [name for name in self._buckets if name != bucket]
        self._objects = {k: v for k, v in self._objects.items() if k[0] != bucket}

    def put(self, url: str, data: bytes) -> str:
        """Put ``data`` at ``s3://bucket/key``; returns the URL."""
        bucket, key = _split_s3(url)
        self.client().put_object(Bucket=bucket, Key=key, Body=data)
        self._objects[(bucket, key)] = bytes(data)
        return url

    def get(self, url: str) -> bytes:
        bucket, key = _split_s3(url)
        reply = self.client().get_object(Bucket=bucket, Key=key)
        with contextlib.closing(reply["Body"]) as body:
            return bytes(body.read())

    def delete(self, url: str) -> None:
        bucket, key = _split_s3(url)
        self.client().delete_object(Bucket=bucket, Key=key)
        self._objects.pop((bucket, key), None)

    def upload_tree(self, local_dir: str | os.PathLike[str], url_prefix: str) -> list[str]:
        """Put every file under ``local_dir`` at ``url_prefix``/<relative path> (POSIX
        separators); returns the URLs, sorted."""
        root = Path(local_dir)
        if not root.is_dir():
            raise ValueError(f"upload_tree: {root} is not a folder")
        prefix = url_prefix.rstrip("/")
        urls = []
        for path in sorted(p for p in root.rglob("*") if p.is_file()):
            urls.append(self.put(f"{prefix}/{path.relative_to(root).as_posix()}", path.read_bytes()))
        return urls


class S3Bucket:
    """One test's bucket on an ``S3Server``: its name, URLs in it, and puts into it."""

    def __init__(self, server: S3Server, name: str) -> None:
        self.server = server
        self.name = name

    def url(self, key: str = "") -> str:
        return f"s3://{self.name}/{key.lstrip('/')}"

    def put(self, key: str, data: bytes) -> str:
        return self.server.put(self.url(key), data)

    def upload_tree(self, local_dir: str | os.PathLike[str], prefix: str = "") -> list[str]:
        return self.server.upload_tree(local_dir, self.url(prefix))

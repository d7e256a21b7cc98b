"""The real servers of the storage tests behave as the tests rely on: moto's S3 server takes
signed puts and gets (directly and through the fault proxy) and survives a restart with the
objects put back; the HTTP server answers ranges as RFC 9110 says; the proxy resets, delays,
refuses and black-holes connections when told to."""

from __future__ import annotations

import http.client
import os
import socket
import threading
import time
from urllib.parse import urlsplit

import pytest
from conftest import wait_until


def test_s3_put_get_roundtrip(s3_bucket) -> None:
    """An object put through the helper comes back byte for byte from a separate boto3
    client configured only by the environment the fixture set."""
    import boto3

    data = os.urandom(3000)
    url = s3_bucket.put("dir/a.bin", data)
    assert url == f"s3://{s3_bucket.name}/dir/a.bin"
    assert os.environ["AWS_ENDPOINT_URL"] == s3_bucket.server.endpoint
    client = boto3.session.Session().client("s3")  # endpoint, region and keys from the env
    try:
        body = client.get_object(Bucket=s3_bucket.name, Key="dir/a.bin")["Body"]
        assert body.read() == data
        body.close()
        ranged = client.get_object(Bucket=s3_bucket.name, Key="dir/a.bin", Range="bytes=10-19")["Body"]
        assert ranged.read() == data[10:20]
        ranged.close()
    finally:
        client.close()


def test_s3_upload_tree_lists_every_file(s3_bucket, tmp_path) -> None:
    """upload_tree puts each file under the prefix with its relative POSIX path."""
    (tmp_path / "cls_a").mkdir()
    (tmp_path / "cls_b").mkdir()
    (tmp_path / "cls_a" / "1.jpg").write_bytes(b"one")
    (tmp_path / "cls_b" / "2.jpg").write_bytes(b"two")
    urls = s3_bucket.upload_tree(tmp_path, "imgs")
    assert urls == [s3_bucket.url("imgs/cls_a/1.jpg"), s3_bucket.url("imgs/cls_b/2.jpg")]
    listed = s3_bucket.server.client().list_objects_v2(Bucket=s3_bucket.name, Prefix="imgs/")
    assert sorted(o["Key"] for o in listed["Contents"]) == ["imgs/cls_a/1.jpg", "imgs/cls_b/2.jpg"]
    assert s3_bucket.server.get(s3_bucket.url("imgs/cls_b/2.jpg")) == b"two"


def test_s3_missing_object_is_not_found(s3_bucket) -> None:
    """A key that was never put answers 404 NoSuchKey (what a client maps to not_found)."""
    from botocore.exceptions import ClientError

    with pytest.raises(ClientError, match="NoSuchKey"):
        s3_bucket.server.get(s3_bucket.url("never-put"))


def test_obstore_reads_through_the_env(s3_bucket) -> None:
    """obstore, configured only by the environment the fixture set, reads what was put (the
    environment is enough for the storage layer's client over plain http)."""
    obstore = pytest.importorskip("obstore")
    from obstore.store import S3Store

    s3_bucket.put("x/y.bin", b"0123456789")
    store = S3Store(s3_bucket.name)
    assert bytes(obstore.get(store, "x/y.bin").bytes()) == b"0123456789"
    assert bytes(obstore.get_range(store, "x/y.bin", start=2, length=3)) == b"234"
    listed = obstore.list(store, prefix="x/").collect()
    assert [meta["path"] for meta in listed] == ["x/y.bin"]


@pytest.mark.timeout(120)
def test_s3_restart_on_same_port_restores_objects(tmp_path) -> None:
    """stop() makes the port refuse connections; start() brings the server back on the same
    port with the buckets and objects put through the helper (moto itself keeps nothing)."""
    from botocore.exceptions import ClientError, EndpointConnectionError
    from storage_servers import S3Server

    with S3Server() as server:
        bucket = server.make_bucket()
        server.put(f"s3://{bucket}/k", b"kept")
        port = server.port
        server.stop()
        assert not server.running
        probe = server.client(connect_timeout=2, retries={"total_max_attempts": 1})
        try:
            with pytest.raises(EndpointConnectionError):
                probe.get_object(Bucket=bucket, Key="k")
        finally:
            probe.close()
        server.start()
        assert server.port == port
        assert server.get(f"s3://{bucket}/k") == b"kept"
        server.stop()
        server.start(restore=False)
        with pytest.raises(ClientError, match="NoSuchBucket"):
            server.get(f"s3://{bucket}/k")
    assert not server.running


# -- HttpServer ------------------------------------------------------------------------------

def _request(endpoint: str, method: str, path: str, headers: dict[str, str] | None = None,
             timeout: float = 10) -> tuple[int, dict[str, str], bytes]:
    parts = urlsplit(endpoint)
    conn = http.client.HTTPConnection(parts.hostname, parts.port, timeout=timeout)
    try:
        conn.request(method, path, headers=headers or {})
        reply = conn.getresponse()
        return reply.status, {k.lower(): v for k, v in reply.getheaders()}, reply.read()
    finally:
        conn.close()


@pytest.fixture
def served(tmp_path, http_server):
    data = bytes(range(256)) * 4  # 1,024 bytes, each offset recognisable
    (tmp_path / "shards").mkdir()
    (tmp_path / "shards" / "a.tar").write_bytes(data)
    return http_server(tmp_path), data


@pytest.mark.parametrize(("header", "status", "first", "last"), [
    ("bytes=0-9", 206, 0, 9),
    ("bytes=1000-", 206, 1000, 1023),
    ("bytes=-24", 206, 1000, 1023),
    ("bytes=1000-5000", 206, 1000, 1023),  # the end past the size is cut to the size
    ("bytes=-5000", 206, 0, 1023),  # a suffix longer than the file is the whole file
    ("bytes=1024-", 416, None, None),
    ("bytes=-0", 416, None, None),
    ("bytes=5-2", 200, 0, 1023),  # invalid: ignored, the whole file
    ("bytes=0-1,5-6", 200, 0, 1023),  # several ranges: this server answers the whole file
])
def test_http_range(served, header, status, first, last) -> None:
    """Each Range form gets the status and bytes RFC 9110 gives it."""
    server, data = served
    got, headers, body = _request(server.endpoint, "GET", "/shards/a.tar", {"Range": header})
    assert got == status
    if status == 416:
        assert headers["content-range"] == "bytes */1024"
        assert body == b""
    else:
        assert body == data[first:last + 1]
        assert int(headers["content-length"]) == len(body)
    if status == 206:
        assert headers["content-range"] == f"bytes {first}-{last}/1024"
    assert server.seen[-1].range == header


def test_http_head_and_validators(served) -> None:
    """HEAD gives the size, ETag and Last-Modified without a body; GET the same ETag."""
    server, data = served
    status, headers, body = _request(server.endpoint, "HEAD", "/shards/a.tar")
    assert (status, body) == (200, b"")
    assert headers["content-length"] == "1024"
    assert headers["accept-ranges"] == "bytes"
    assert headers["etag"].startswith('"') and headers["last-modified"].endswith("GMT")
    status, again, body = _request(server.endpoint, "GET", "/shards/a.tar")
    assert (status, body, again["etag"]) == (200, data, headers["etag"])


@pytest.mark.parametrize("path", ["/shards", "/shards/", "/", "/nope.tar", "/../etc/passwd",
                                  "/shards/%2e%2e/%2e%2e/etc/passwd"])
def test_http_no_listing_no_escape(served, path) -> None:
    """Folders, missing files and paths outside the root are 404: no listings, no escapes."""
    server, _ = served
    assert _request(server.endpoint, "GET", path)[0] == 404


def test_http_fail_next_then_serves(served) -> None:
    """fail_next(n, status) answers the next n requests with that status, then serves."""
    server, data = served
    server.fail_next(2, status=503)
    assert _request(server.endpoint, "GET", "/shards/a.tar")[0] == 503
    assert _request(server.endpoint, "GET", "/shards/a.tar")[0] == 503
    assert _request(server.endpoint, "GET", "/shards/a.tar")[2] == data
    assert [s.status for s in server.seen] == [503, 503, 200]


def test_http_stop_closes_keepalive_connections(served) -> None:
    """stop() returns while a client still holds a keep-alive connection, and the port then
    refuses connections."""
    server, _ = served
    port = server.port
    conn = http.client.HTTPConnection("127.0.0.1", port, timeout=10)
    try:
        conn.request("GET", "/shards/a.tar")
        conn.getresponse().read()
        server.stop()
    finally:
        conn.close()
    with pytest.raises(ConnectionRefusedError):
        socket.create_connection(("127.0.0.1", port), timeout=5).close()


# -- FaultProxy ------------------------------------------------------------------------------

def test_proxy_forwards_s3(s3_bucket, fault_proxy) -> None:
    """boto3 through the proxy reaches moto with valid signatures (the Host header names the
    proxy), and the proxy counts the connection."""
    proxy = fault_proxy(s3_bucket.server)
    s3_bucket.put("k", b"through")
    client = s3_bucket.server.client(endpoint=proxy.endpoint)
    try:
        body = client.get_object(Bucket=s3_bucket.name, Key="k")["Body"]
        assert body.read() == b"through"
        body.close()
    finally:
        client.close()
    counts = proxy.counts
    assert counts.connections >= 1 and counts.requests >= 1 and counts.resets == 0


def test_proxy_http_error_is_retried_by_boto3(s3_bucket, fault_proxy) -> None:
    """http_error(n) answers S3's SlowDown: boto3 without retries sees it; with retries the
    request goes through after it."""
    from botocore.exceptions import ClientError

    proxy = fault_proxy(s3_bucket.server)
    s3_bucket.put("k", b"v")
    once = s3_bucket.server.client(endpoint=proxy.endpoint, retries={"total_max_attempts": 1})
    patient = s3_bucket.server.client(endpoint=proxy.endpoint, retries={"total_max_attempts": 5})
    try:
        proxy.http_error(1)
        with pytest.raises(ClientError, match="SlowDown"):
            once.get_object(Bucket=s3_bucket.name, Key="k")
        proxy.http_error(2)
        body = patient.get_object(Bucket=s3_bucket.name, Key="k")["Body"]
        assert body.read() == b"v"
        body.close()
    finally:
        once.close()
        patient.close()
    assert proxy.counts.http_errors == 3


def test_proxy_reset_is_a_connection_error(served, fault_proxy) -> None:
    """reset_connections(n=1): the next request's connection is reset (the client sees a
    connection error, not an answer); the one after goes through."""
    server, data = served
    proxy = fault_proxy(server)
    proxy.reset_connections(n=1)
    with pytest.raises(ConnectionError):
        _request(proxy.endpoint, "GET", "/shards/a.tar")
    assert _request(proxy.endpoint, "GET", "/shards/a.tar")[2] == data
    assert proxy.counts.resets == 1


def test_proxy_reset_mid_body(served, fault_proxy) -> None:
    """after_bytes cuts an answer short with a reset: the client never gets the whole body."""
    server, _ = served
    proxy = fault_proxy(server)
    proxy.reset_connections(n=1, after_bytes=300)  # past the headers, inside the body
    with pytest.raises((ConnectionError, http.client.IncompleteRead)):
        _request(proxy.endpoint, "GET", "/shards/a.tar")
    assert proxy.counts.resets == 1


def test_proxy_reset_hits_keepalive_connection(served, fault_proxy) -> None:
    """A reset also hits the next request on a connection opened before it was asked for."""
    server, data = served
    proxy = fault_proxy(server)
    conn = http.client.HTTPConnection("127.0.0.1", proxy.port, timeout=10)
    try:
        conn.request("GET", "/shards/a.tar")
        assert conn.getresponse().read() == data
        proxy.reset_connections(n=1)
        conn.request("GET", "/shards/a.tar")
        with pytest.raises(ConnectionError):
            conn.getresponse().read()
    finally:
        conn.close()


def test_proxy_refuse_then_heal(served, fault_proxy) -> None:
    """refuse(): connects are refused until the window ends (or heal()), then served on the
    same port."""
    server, data = served
    proxy = fault_proxy(server)
    port = proxy.port
    proxy.refuse(60)
    with pytest.raises(ConnectionRefusedError):
        socket.create_connection(("127.0.0.1", port), timeout=5).close()
    proxy.heal()
    wait_until(lambda: _connects(port), "the proxy to listen again after heal()")
    assert proxy.port == port
    assert _request(proxy.endpoint, "GET", "/shards/a.tar")[2] == data


def _connects(port: int) -> bool:
    try:
        socket.create_connection(("127.0.0.1", port), timeout=5).close()
        return True
    except ConnectionRefusedError:
        return False


def test_proxy_blackhole_times_out(served, fault_proxy) -> None:
    """blackhole(): the request is accepted and never answered, so the client's own timeout
    fires; after heal() requests are answered again."""
    server, data = served
    proxy = fault_proxy(server)
    proxy.blackhole(60)
    with pytest.raises(TimeoutError):
        _request(proxy.endpoint, "GET", "/shards/a.tar", timeout=0.5)
    assert proxy.counts.blackholed == 1
    proxy.heal()
    assert _request(proxy.endpoint, "GET", "/shards/a.tar")[2] == data


def test_proxy_delay_holds_requests(served, fault_proxy) -> None:
    """delay(s) holds each request at least s before it is forwarded; the answer is whole."""
    server, data = served
    proxy = fault_proxy(server)
    proxy.delay(0.3)
    started = time.monotonic()
    assert _request(proxy.endpoint, "GET", "/shards/a.tar")[2] == data
    assert time.monotonic() - started >= 0.3  # a lower bound: true however loaded the machine
    assert proxy.counts.delayed == 1


def test_proxy_close_leaves_no_threads(served) -> None:
    """close() ends the accept thread and every connection thread, idle keep-alive ones too."""
    from storage_servers import FaultProxy

    server, _ = served
    before = {t.ident for t in threading.enumerate()}
    proxy = FaultProxy("127.0.0.1", server.port).start()
    conn = http.client.HTTPConnection("127.0.0.1", proxy.port, timeout=10)
    try:
        conn.request("GET", "/shards/a.tar")
        conn.getresponse().read()
        assert proxy.open_connections == 1
        proxy.close()
        proxy.close()  # idempotent
    finally:
        conn.close()
    assert [t.name for t in threading.enumerate()
            if t.ident not in before and t.is_alive() and t.name.startswith("test-proxy")] == []


def test_obstore_http_store_through_proxy(served, fault_proxy) -> None:
    """obstore's HTTP store reads whole objects, ranges and heads from HttpServer through the
    proxy (over plain http it needs client_options allow_http), and a reset request is
    retried by it and counted by the proxy."""
    obstore = pytest.importorskip("obstore")
    from obstore.store import HTTPStore

    server, data = served
    proxy = fault_proxy(server)
    store = HTTPStore.from_url(proxy.endpoint, client_options={"allow_http": True})
    assert bytes(obstore.get(store, "shards/a.tar").bytes()) == data
    assert bytes(obstore.get_range(store, "shards/a.tar", start=100, length=7)) == data[100:107]
    assert obstore.head(store, "shards/a.tar")["size"] == len(data)
    proxy.reset_connections(n=1)
    assert bytes(obstore.get(store, "shards/a.tar").bytes()) == data
    assert proxy.counts.resets == 1

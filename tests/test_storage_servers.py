"""The real servers of the storage tests behave as the tests rely on: moto's S3 server takes
signed puts and gets (directly and through the fault proxy) and survives a restart with the
objects put back; the HTTP server answers ranges as RFC 9110 says; the proxy resets, delays,
refuses and black-holes connections when told to."""

from __future__ import annotations

import os

import pytest


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
        probe = server.client(connect_timeout=2, retries={"max_attempts": 1})
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

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
    before = storage.stats()["errors"]
    listed = [info.url for info in open_store(base).list(f"{base}/")]
    assert f"{base}/sub" not in listed and f"{base}/empty.tar" in listed
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

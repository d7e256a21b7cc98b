"""A cached index is never used for files that changed under it: a shard or list file
replaced by another of the same size with its mtime kept (cp -p, tar x, rsync -t) is
caught by its ctime and inode, so the labels and offsets come from the new bytes."""

from __future__ import annotations

import os
from pathlib import Path

from imagefiles import jpeg_bytes, photo, write_folder, write_shards

from inputkit.sources.image_shards import ImageShardSource
from inputkit.sources.images import ImageListSource

VAL = [{"resize": 40}, {"center_crop": 32}]


def _replace_keeping_size_and_mtime(path: Path, data: bytes) -> None:
    """Overwrite ``path`` in place with ``data`` (same length) and put its old mtime back,
    as ``cp -p`` or ``tar x`` do."""
    before = os.stat(path)
    assert len(data) == before.st_size
    with open(path, "r+b") as out:
        out.write(data)
    os.utime(path, ns=(before.st_atime_ns, before.st_mtime_ns))
    after = os.stat(path)
    assert (after.st_size, after.st_mtime_ns) == (before.st_size, before.st_mtime_ns)


def test_a_shard_replaced_with_same_size_and_mtime_is_indexed_again(tmp_path):
    images = [jpeg_bytes(photo(40, 30, i)) for i in range(6)]
    write_shards(tmp_path / "old", images, [1, 2, 3, 4, 5, 6], per_shard=3)
    write_shards(tmp_path / "new", images, [7, 8, 9, 1, 2, 3], per_shard=3)
    pattern = str(tmp_path / "old" / "*.tar")
    assert ImageShardSource(pattern, VAL).labels.tolist() == [1, 2, 3, 4, 5, 6]
    first = sorted((tmp_path / "old").glob("*.tar"))[0]
    replacement = sorted((tmp_path / "new").glob("*.tar"))[0].read_bytes()
    _replace_keeping_size_and_mtime(first, replacement)
    again = ImageShardSource(pattern, VAL)
    assert again.run_info()["index"]["from_cache"] is False
    assert again.labels.tolist() == [7, 8, 9, 4, 5, 6]
    assert ImageShardSource(pattern, VAL).run_info()["index"]["from_cache"] is True


def test_a_list_replaced_with_same_size_and_mtime_is_read_again(tmp_path):
    write_folder(tmp_path, classes=1, per_class=3)
    listing = tmp_path / "list.csv"
    listing.write_text("class_0/img_000.jpg,4\nclass_0/img_001.jpg,2\n")
    assert ImageListSource(str(listing), VAL).labels.tolist() == [4, 2]
    _replace_keeping_size_and_mtime(listing, b"class_0/img_000.jpg,5\nclass_0/img_001.jpg,6\n")
    again = ImageListSource(str(listing), VAL)
    assert again.run_info()["index"]["from_cache"] is False
    assert again.labels.tolist() == [5, 6]


def test_a_cache_folder_without_symbolic_links_leaves_no_index_file_behind(tmp_path,
                                                                          monkeypatch):
    import inputkit.sources.index_cache as index_cache

    images = [jpeg_bytes(photo(40, 30, i)) for i in range(4)]
    write_shards(tmp_path / "s", images, [0, 1, 2, 3], per_shard=2)
    folder = Path(index_cache.cache_root()) / "index"
    before = set(folder.iterdir()) if folder.exists() else set()

    def no_links(*args: object, **kwargs: object) -> None:
        raise OSError(95, "Operation not supported")

    monkeypatch.setattr(index_cache.os, "symlink", no_links)
    for _ in range(2):
        source = ImageShardSource(str(tmp_path / "s" / "*.tar"), VAL)
        assert source.labels.tolist() == [0, 1, 2, 3]
        assert source.run_info()["index"]["from_cache"] is False
        assert "not cached" in source.run_info()["index"]["why"]
    after = set(folder.iterdir()) if folder.exists() else set()
    assert after == before

"""The tar-indexing child processes: any error of a shard comes back as itself (type and
the shard's path), and no child is left behind."""

from __future__ import annotations

import pytest
from imagefiles import jpeg_bytes, photo, write_shards

from inputkit.sources.tar_index_pool import index_in_children


def test_an_unreadable_shard_in_a_child_is_raised_as_its_own_error_naming_it(tmp_path):
    images = [jpeg_bytes(photo(20, 20, i)) for i in range(8)]
    write_shards(tmp_path, images, list(range(8)), per_shard=2)
    shards = sorted(str(p) for p in tmp_path.glob("*.tar"))
    unreadable = tmp_path / "not-a-file.tar"
    unreadable.mkdir()  # open() fails with IsADirectoryError, for root too
    shards.insert(2, str(unreadable))
    with pytest.raises(IsADirectoryError, match="not-a-file.tar"):
        index_in_children(shards, {"jpg"}, "cls", workers=2)
    rows = index_in_children([s for s in shards if s != str(unreadable)], {"jpg"}, "cls",
                             workers=2)
    assert [r[3].tolist() for r in rows] == [[0, 1], [2, 3], [4, 5], [6, 7]]

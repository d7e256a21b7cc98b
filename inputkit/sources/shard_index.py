"""The index of image_shards, cached: keyed by each shard's path, size, mtime, ctime and
inode (local) or URL, size and etag (a store's listing), so a restart maps the cached file
instead of reading every tar header again (minutes at ImageNet scale before the cache)."""

from __future__ import annotations

import hashlib
import os
from typing import Any

import numpy as np

from inputkit.sources.index_cache import IndexOrigin, load_or_build, stats_changed
from inputkit.sources.index_file import IndexFile, Names, pack_names


def shards_index(shards: list[str], remote: Any, extensions: tuple[str, ...],
                 label: str | None) -> tuple[IndexFile, IndexOrigin]:
    """The index of ``shards`` (local paths, or ``remote``: a RemoteShards with the listing's
    sizes and etags), from the cache when nothing listed has changed."""
    from inputkit.sources.tar_index import index_shards

    names = shards if remote is not None else [os.path.abspath(p) for p in shards]
    digest = hashlib.sha256("\n".join(names).encode("utf-8", "surrogateescape")).hexdigest()
    identity = {"kind": "image_shards", "shards": digest, "count": len(names),
                "first": names[0], "label": label, "extensions": list(extensions)}

    if remote is not None:
        def still_valid(index: IndexFile) -> str | None:
            etags = Names(index["etags"], index["etag_offsets"]).tolist()
            for i, url in enumerate(remote.urls):
                if int(index["shard_bytes"][i]) != remote.sizes[i] or \
                        etags[i] != (remote.etags[i] or "").encode():
                    return f"shard '{url}' changed in the store (size or etag)"
            return None

        def build() -> tuple[dict[str, np.ndarray], dict[str, Any]]:
            from inputkit.sources.remote_shards import index_remote

            arrays = dict(index_remote(remote, extensions, label))
            blob, offsets = pack_names([(e or "").encode() for e in remote.etags])
            arrays.update(shard_bytes=np.asarray(remote.sizes, dtype=np.int64), etags=blob,
                          etag_offsets=offsets)
            return arrays, {"samples": len(arrays["offsets"])}
    else:
        def still_valid(index: IndexFile) -> str | None:
            if "shard_ctimes" not in index:
                return "built before shards were keyed by inode and ctime"
            return stats_changed(names, index["shard_bytes"], index["shard_mtimes"],
                                 index["shard_inodes"], "shard", index["shard_ctimes"])

        def build() -> tuple[dict[str, np.ndarray], dict[str, Any]]:
            stats = [os.stat(p) for p in names]  # before reading: a change meanwhile shows next time
            arrays = index_shards(shards, extensions, label)
            arrays.update(shard_bytes=np.array([st.st_size for st in stats], dtype=np.int64),
                          shard_mtimes=np.array([st.st_mtime_ns for st in stats], dtype=np.int64),
                          shard_ctimes=np.array([st.st_ctime_ns for st in stats], dtype=np.int64),
                          shard_inodes=np.array([st.st_ino for st in stats], dtype=np.uint64))
            return arrays, {"samples": len(arrays["offsets"])}

    return load_or_build(identity, still_valid, build, f"source.urls ({len(names)} shards)",
                         "samples")

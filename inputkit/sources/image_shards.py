"""Images in uncompressed tar shards (WebDataset layout), read by index.

The shards' tar headers are indexed once when the source is built (inputkit.sources.tar_index);
reading a sample is one positioned read of its member. Decoding, transforms and errors are the
image sources' own (inputkit.sources.images.EncodedImageSource).
"""

from __future__ import annotations

import os
import threading
from collections.abc import Mapping, Sequence
from typing import Any

from inputkit.errors import shown_name
from inputkit.sources.images import EXTENSIONS, EncodedImageSource


class ImageShardSource(EncodedImageSource):
    """Images in uncompressed tar shards (WebDataset layout), read by index.

    Each sample is ``<key>.<image ext>`` with its label in ``<key>.cls`` (or the
    ``label`` member extension you name). The shards are indexed when the source
    is built (their tar headers only); reading a sample is one positioned read of
    its member, so shuffling and exactly-once epochs work as for a folder.
    """

    NAME = "inputkit.sources.image_shards.ImageShardSource"

    def __init__(self, urls: str | Sequence[str], transforms: Any,
                 decode: Mapping[str, Any] | None = None, seed: int = 0,
                 label: str | None = "cls", id_field: str | None = None) -> None:
        super().__init__(transforms, decode, seed, id_field)
        from inputkit.sources.shards import _expand_urls
        from inputkit.sources.tar_index import index_shards

        self.shards = _expand_urls(urls)
        self.urls = urls
        self.label = label
        index = index_shards(self.shards, EXTENSIONS, label)
        self.shard_of, self.offsets, self.sizes, self.names, self.labels = index
        self._lock = threading.Lock()
        self._fds: dict[int, int] = {}

    def encoded(self, index: int) -> bytes:
        shard = int(self.shard_of[index])
        fd = self._fds.get(shard)
        if fd is None:
            with self._lock:
                fd = self._fds.get(shard)
                if fd is None:
                    fd = self._fds[shard] = os.open(self.shards[shard], os.O_RDONLY)
        size = int(self.sizes[index])
        data = os.pread(fd, size, int(self.offsets[index]))
        if len(data) != size:
            raise OSError(f"read {len(data):,} of {size:,} bytes: the shard changed since it "
                          "was indexed")
        return data

    def where(self, index: int) -> str:
        return (f"shard '{shown_name(self.shards[int(self.shard_of[index])])}', member "
                f"'{shown_name(self.names[index])}'")

    def origin(self, index: int) -> dict[str, Any]:
        """The shard file, the member's name (str; os.fsdecode, as a path), and its bytes' place."""
        return {"shard": self.shards[int(self.shard_of[index])],
                "member": os.fsdecode(self.names[index]),
                "offset": int(self.offsets[index]), "size": int(self.sizes[index])}

    def close(self) -> None:
        with self._lock:
            fds, self._fds = self._fds, {}
        for fd in fds.values():
            os.close(fd)

    def __getstate__(self) -> dict[str, Any]:
        state = self.__dict__.copy()
        del state["_lock"]
        state["_fds"] = {}
        return state

    def __setstate__(self, state: dict[str, Any]) -> None:
        self.__dict__.update(state)
        self._lock = threading.Lock()

    def run_info(self) -> dict[str, Any]:
        return {**super().run_info(), "shards": len(self.shards),
                "classes": int(self.labels.max()) + 1 if len(self.labels) else 0}

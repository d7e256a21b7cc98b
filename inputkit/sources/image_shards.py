"""Images in uncompressed tar shards (WebDataset layout), read by index.

The shards' tar headers are indexed once when the source is built (inputkit.sources.tar_index);
reading a sample is one positioned read of its member. Decoding, transforms and errors are the
image sources' own (inputkit.sources.encoded_images.EncodedImageSource).
"""

from __future__ import annotations

import os
import threading
from collections.abc import Mapping, Sequence
from typing import Any

import numpy as np

from inputkit.errors import shown_name
from inputkit.sources.encoded_images import EXTENSIONS, EncodedImageSource
from inputkit.sources.shard_files import ShardFiles


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
        from inputkit.sources.remote_shards import remote_urls
        from inputkit.sources.shard_index import shards_index
        from inputkit.sources.shards import _expand_urls

        # (not ``self.remote``: that is EncodedImageSource's flag for samples fetched one object
        # each; a shard's samples are read from its cached copy)
        self.remote_set = None
        if remote_urls(urls):  # s3://, gs://, az://, http(s)://: through the disk cache
            from inputkit.sources.remote_shards import RemoteShards

            self.remote_set = RemoteShards.listed(urls, "urls")
            self.shards = self.remote_set.urls
        else:
            self.shards = _expand_urls(urls)
        self.urls = urls
        self.label = label
        # Built once (or mapped from the index cache); workers map the same file.
        self.index, self.index_origin = shards_index(self.shards, self.remote_set, EXTENSIONS, label)
        self._attach()
        self._reading = threading.local()
        self._files = ShardFiles(self.shards, remote=self.remote_set is not None)

    def read_into(self, indices: Any, allocate: Any, epoch: int = 0) -> dict[str, Any]:
        self._reading.epoch = epoch  # a remote shard's read waits for this epoch's download
        return super().read_into(indices, allocate, epoch)

    def encoded(self, index: int) -> bytes:
        # one pread of the shard's file, kept open per thread (a remote shard's cached copy is
        # found, or waited for, once per thread and shard: ShardFiles)
        return self._files.read(int(self.shard_of[index]), int(self.offsets[index]),
                                int(self.sizes[index]), self._locate)

    def _locate(self, shard: int) -> str:
        """The file to open for shard ``shard``: the path, or a remote shard's cached copy for
        this thread's epoch (waited for while the prefetcher fetches it)."""
        if self.remote_set is None:
            return self.shards[shard]
        return self.remote_set.local(shard, getattr(self._reading, "epoch", 0))

    def where(self, index: int) -> str:
        return (f"shard '{shown_name(self.shards[int(self.shard_of[index])])}', member "
                f"'{shown_name(self.names[index])}'")

    def origin(self, index: int) -> dict[str, Any]:
        """The shard file, the member's name (str; os.fsdecode, as a path), and its bytes' place."""
        return {"shard": self.shards[int(self.shard_of[index])],
                "member": os.fsdecode(self.names[index]),
                "offset": int(self.offsets[index]), "size": int(self.sizes[index])}

    def remote_shards(self) -> Any:
        """The shards' RemoteShards when they live in an object store (the runner then starts a
        ShardPrefetcher for them), else None."""
        return self.remote_set

    def sample_groups(self) -> np.ndarray:
        """The shard of each sample (for ``epoch.shuffle=shards``)."""
        return np.asarray(self.shard_of, dtype=np.int64)

    def close(self) -> None:
        self._files.close()

    def _attach(self) -> None:
        super()._attach()
        self.names = self.files  # member names' bytes
        self.shard_of, self.offsets = self.index["shard_of"], self.index["offsets"]
        self.sizes = self.index["sizes"]

    def __getstate__(self) -> dict[str, Any]:
        state = super().__getstate__()
        del state["_reading"]
        return state

    def __setstate__(self, state: dict[str, Any]) -> None:
        super().__setstate__(state)
        self._reading = threading.local()

    def run_info(self) -> dict[str, Any]:
        return {**super().run_info(), "shards": len(self.shards),
                "classes": int(self.labels.max()) + 1 if len(self.labels) else 0}

"""W6's peers: WebDataset, Mosaic Streaming and LitData reading the image set from S3.

Each loader runs in the shape its project recommends for a machine like this one
(its own dataset, a DataLoader with ``workers`` processes, each reading from the store
with its own client into its own cache folder) and applies W5's recipe to every image
with OpenCV (``cv2.imdecode``, RandomResizedCrop(224) by torchvision's rule, flip with
p = 0.5, CHW uint8; ``cv2_recipe.opencv_transform``), the decoder W5 measured fastest,
so that every row decodes alike. Batches are ``(uint8 B x 3 x 224 x 224, int64 B)``.

How each reads ``s3://`` (what a user of it would write):

- WebDataset: ``pipe:aws s3 cp s3://.../train-{000..N}.tar -`` URLs (its documented way to
  read S3; the AWS CLI honours ``AWS_ENDPOINT_URL``), ``cache_dir`` keeps each shard on
  disk as it streams, so epoch 2 reads the cached files;
- Mosaic Streaming: ``StreamingDataset(remote="s3://...", local=cache)`` (boto3; the
  endpoint comes from ``S3_ENDPOINT_URL``, which ``peer_env`` sets); epoch 2 reads the
  shards epoch 1 left in ``local``;
- LitData: ``StreamingDataset("s3://...", cache_dir=cache)`` with ``StreamingDataLoader``
  (boto3/obstore; the endpoint comes from ``AWS_ENDPOINT_URL``); epoch 2 reads the chunks
  kept in ``cache_dir``.

Mosaic's package imports torchvision at import time (``streaming.vision``, for its vision
dataset classes, which W6 does not use), and no CPU build of torchvision matching the
CPU torch is installable here (PyPI's is the CUDA build, and it fails to import against
the CPU torch). ``import_streaming`` therefore imports it, where torchvision does not
import, with torchvision's three names it asks for standing in: calling any of them
raises. Mosaic's MDS reading, downloading and shuffling code is its own, unchanged.
"""

from __future__ import annotations

import importlib
import os
import sys
import types
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

BATCH = 64
Batch = tuple[Any, Any]  # (uint8 tensor B x 3 x 224 x 224, int64 tensor B)


def decode(jpg: bytes) -> Any:
    """W5's recipe with OpenCV on one JPEG's bytes: a CHW uint8 tensor of 224 x 224."""
    from inputkit.peers.cv2_recipe import GlobalDraws, one_thread, opencv_transform

    cv2 = one_thread()
    bgr = cv2.imdecode(np.frombuffer(jpg, dtype=np.uint8), cv2.IMREAD_COLOR)
    if bgr is None:
        raise OSError("OpenCV cannot decode a sample's .jpg bytes (cv2.imdecode returned None)")
    return opencv_transform(cv2, bgr, GlobalDraws())


def _decode_pair(sample: tuple[bytes, Any]) -> tuple[Any, int]:
    jpg, label = sample
    return decode(jpg), int(label)


class _TorchvisionMissing:
    """Stands in for a torchvision name that ``streaming.vision`` imports; W6 never calls it."""

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        raise RuntimeError("torchvision is not installed: Mosaic's streaming.vision datasets need it "
                           "(W6 reads MDS with streaming.StreamingDataset, which does not)")


def import_streaming() -> Any:
    """Mosaic's ``streaming`` package; where torchvision does not import, imported with
    torchvision's names ``streaming.vision`` asks for standing in (see the module's text),
    and those stand-ins removed from ``sys.modules`` again afterwards."""
    if "streaming" in sys.modules:
        return sys.modules["streaming"]
    try:
        importlib.import_module("torchvision")
    except (ImportError, RuntimeError):
        # transformers (which streaming's DataLoader imports) looks torchvision up by its
        # spec: imported first, it sees the truth, not the stand-ins.
        for name in ("transformers.feature_extraction_utils", "transformers.tokenization_utils_base"):
            importlib.import_module(name)
        names = ("torchvision", "torchvision.datasets", "torchvision.transforms",
                 "torchvision.transforms.functional")
        mods = {name: types.ModuleType(name) for name in names}
        mods["torchvision.datasets"].VisionDataset = _TorchvisionMissing  # type: ignore[attr-defined]
        mods["torchvision.datasets"].CIFAR10 = _TorchvisionMissing  # type: ignore[attr-defined]
        mods["torchvision.transforms.functional"].to_tensor = _TorchvisionMissing  # type: ignore[attr-defined]
        saved = {name: sys.modules.get(name) for name in names}
        sys.modules.update(mods)
        try:
            return importlib.import_module("streaming")
        finally:
            for name, old in saved.items():
                if old is None:
                    sys.modules.pop(name, None)
                else:
                    sys.modules[name] = old
    return importlib.import_module("streaming")


@dataclass
class Loader:
    """A peer's loader: ``epoch()`` yields one epoch's batches; ``close()`` ends its workers."""

    iterate: Callable[[], Iterator[Batch]]
    close: Callable[[], None]

    def epoch(self) -> Iterator[Batch]:
        return self.iterate()


def _open_wds(remote: str, data: Path, cache: str, workers: int, seed: int) -> Loader:
    import webdataset as wds

    names = sorted(p.name for p in data.glob("*.tar"))
    urls = [f"pipe:aws s3 cp --quiet {remote.rstrip('/')}/{name} -" for name in names]
    dataset = (wds.WebDataset(urls, shardshuffle=len(urls), seed=seed, cache_dir=cache,
                              nodesplitter=wds.split_by_node, workersplitter=wds.split_by_worker,
                              empty_check=False)
               .shuffle(1000, seed=seed).to_tuple("jpg", "cls").map(_decode_pair)
               .batched(BATCH, partial=True))
    loader = wds.WebLoader(dataset, batch_size=None, num_workers=workers,
                           persistent_workers=workers > 0)
    return Loader(lambda: iter(loader), lambda: _end_workers(loader))


def _open_mosaic(remote: str, data: Path, cache: str, workers: int, seed: int) -> Loader:
    import torch

    streaming = import_streaming()

    class MDSImages(streaming.StreamingDataset):  # type: ignore[misc, name-defined]
        def __getitem__(self, index: int) -> tuple[Any, int]:
            sample = super().__getitem__(index)
            return decode(sample["jpg"]), int(sample["cls"])

    streaming.base.util.clean_stale_shared_memory()
    dataset = MDSImages(remote=remote, local=cache, shuffle=True, shuffle_seed=seed, batch_size=BATCH,
                        num_canonical_nodes=1)
    loader = torch.utils.data.DataLoader(dataset, batch_size=BATCH, num_workers=workers,
                                         persistent_workers=workers > 0)
    return Loader(lambda: iter(loader), lambda: _end_workers(loader))


def _open_litdata(remote: str, data: Path, cache: str, workers: int, seed: int) -> Loader:
    import litdata

    if os.environ.get("AWS_ENDPOINT_URL", "").startswith("http://"):
        _litdata_allow_http()
    dataset = litdata.StreamingDataset(remote, cache_dir=cache, shuffle=True, seed=seed,
                                       transform=_lit_transform)
    loader = litdata.StreamingDataLoader(dataset, batch_size=BATCH, num_workers=workers,
                                         persistent_workers=workers > 0)
    return Loader(lambda: iter(loader), lambda: _end_workers(loader))


def _litdata_allow_http() -> None:
    """LitData downloads chunks with obstore under client options of its own, which leave
    out ``AWS_ALLOW_HTTP``: object_store then refuses a plain ``http://`` endpoint such as
    the local server ("BadScheme"). Real S3 is https; this lets the local run take the same
    obstore path."""
    from litdata.streaming import downloader

    options = getattr(downloader, "_OBSTORE_CLIENT_OPTIONS", None)
    if isinstance(options, dict):
        options["allow_http"] = "true"


def _lit_transform(sample: dict[str, Any]) -> tuple[Any, int]:
    return decode(sample["jpg"]), int(sample["cls"])


def _end_workers(loader: Any) -> None:
    """Shut a DataLoader's persistent workers down now (not at garbage collection)."""
    iterator = getattr(loader, "_iterator", None)
    if iterator is not None and hasattr(iterator, "_shutdown_workers"):
        iterator._shutdown_workers()
        loader._iterator = None


@dataclass(frozen=True)
class StoragePeer:
    """One W6 peer: its format (``storage_formats``), its package, and its loader."""

    key: str
    title: str  # the row label, formatted with the worker count as {n}
    fmt: str
    package: str
    install: str
    opener: Callable[[str, Path, str, int, int], Loader]
    warm: str  # what epoch 2 reads from

    def missing(self) -> str | None:
        """Why this peer cannot run here (its package or command is missing), or None."""
        try:
            if self.package == "streaming":
                import_streaming()
            else:
                importlib.import_module(self.package)
        except ImportError as exc:
            return f"{self.package} does not import ({exc}); {self.install}"
        if self.key == "webdataset" and not _on_path("aws"):
            return "the AWS CLI ('aws') is not on PATH: WebDataset reads s3:// through " \
                   "'pipe:aws s3 cp'; pip install awscli"
        return None

    def open(self, remote: str, data: Path, cache: str, workers: int = 2, seed: int = 0) -> Loader:
        """Start the peer on the objects under ``remote`` (``data``: its local copy, for shard
        names), caching into ``cache``."""
        return self.opener(remote, data, cache, workers, seed)


def _on_path(command: str) -> bool:
    return any(os.access(os.path.join(d, command), os.X_OK)
               for d in os.environ.get("PATH", "").split(os.pathsep) if d)


def peer_env(endpoint: str) -> dict[str, str]:
    """Variables the peers need beyond the standard AWS ones: Mosaic reads its endpoint from
    ``S3_ENDPOINT_URL`` only."""
    return {"S3_ENDPOINT_URL": endpoint}


INSTALL = "see docs/benchmarks.md#w6-object-storage for the install recipe that keeps the CPU torch"
STORAGE_PEERS: tuple[StoragePeer, ...] = (
    StoragePeer("webdataset", "WebDataset, aws s3 cp pipe ({n} procs)", "wds", "webdataset",
                f"pip install webdataset awscli; {INSTALL}", _open_wds, "cache_dir's shard copies"),
    StoragePeer("mosaic", "Mosaic Streaming, MDS ({n} procs)", "mds", "streaming",
                f"pip install --no-deps mosaicml-streaming; {INSTALL}", _open_mosaic,
                "the shards left in local="),
    StoragePeer("litdata", "LitData, optimize chunks ({n} procs)", "litdata", "litdata",
                f"pip install --no-deps litdata; {INSTALL}", _open_litdata, "chunks kept in cache_dir"),
)


def storage_peer(key: str) -> StoragePeer:
    for peer in STORAGE_PEERS:
        if peer.key == key:
            return peer
    raise ValueError(f"no W6 peer {key!r}; the peers are {', '.join(p.key for p in STORAGE_PEERS)}")

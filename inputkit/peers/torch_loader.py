"""The DataLoader peers: the same fetch work through ``torch.utils.data.DataLoader``.

- ``in-process``: the ``chunks`` dataset below with ``num_workers=0``: the main process
  calls ``fetch`` itself, with no worker processes and no transport. On a cheap fetch
  this is the fastest DataLoader.
- ``per-item``: a map-style Dataset whose ``__getitem__`` builds one sample with the
  same per-sample cost (latency and CPU time divided by the batch size), batched
  by DataLoader's ``batch_size`` and default collate.
- ``chunks``: an IterableDataset whose workers call the same ``fetch`` and yield
  whole batches as tensors, with ``batch_size=None`` (no collate).

The last two use the input's worker count (processes), ``persistent_workers=True`` and
``prefetch_factor=4``. ``inputkit.peers.catalog`` lists these with the thread peer.

W5's DataLoaders (``make_image_loader``) run an ImageFolder-style dataset with one of
``RECIPES``: torchvision's Pillow recipe, the same recipe with OpenCV, or albumentations.
"""

from __future__ import annotations

import os
from collections.abc import Callable, Iterator
from typing import Any

import numpy as np
import torch
from torch.utils.data import DataLoader, Dataset, IterableDataset, get_worker_info

from inputkit.config.spec import InputSpec
from inputkit.sources.loader import build_source

PREFETCH_FACTOR = 4


def tensors(chunk: Any) -> dict[str, torch.Tensor]:
    return {name: torch.from_numpy(np.ascontiguousarray(arr)) for name, arr in chunk.items()}


class ChunkDataset(IterableDataset):  # type: ignore[type-arg]
    """Each DataLoader worker calls ``fetch(worker_id, batch_size)`` and yields the chunk."""

    def __init__(self, source_config: dict[str, Any], batch_size: int) -> None:
        self.source_config = source_config
        self.batch_size = batch_size

    def __iter__(self) -> Iterator[dict[str, torch.Tensor]]:
        info = get_worker_info()
        worker_id, workers = (info.id, info.num_workers) if info is not None else (0, 1)
        source = build_source(self.source_config)
        source.setup(worker_id, workers)
        while True:
            try:
                yield tensors(source.fetch(worker_id, self.batch_size))
            except StopIteration:
                return


class ItemDataset(Dataset):  # type: ignore[type-arg]
    """One sample per ``__getitem__``, with the per-sample share of the fetch's cost."""

    def __init__(self, source_config: dict[str, Any], batch_size: int) -> None:
        config = dict(source_config)
        config["chunk_size"] = 1
        config["chunk_size_max"] = None
        config["latency_ms"] = float(config.get("latency_ms", 0.0)) / batch_size
        config["cpu_ms"] = float(config.get("cpu_ms", 0.0)) / batch_size
        self.source_config = config
        self._source: Any = None

    def __len__(self) -> int:
        return 2**40  # endless, like the sources it is compared with

    def __getitem__(self, index: int) -> dict[str, np.ndarray]:
        if self._source is None:
            self._source = build_source(self.source_config)
        chunk = self._source.fetch(0, 1)
        return {name: arr[0] for name, arr in chunk.items()}


def make_loader(variant: str, spec: InputSpec) -> DataLoader:  # type: ignore[type-arg]
    """The DataLoader for ``variant`` (one of ``VARIANTS``), configured for ``spec``."""
    if variant == "in-process":
        return DataLoader(ChunkDataset(spec.source, spec.batch_size), batch_size=None,
                          num_workers=0)
    common: dict[str, Any] = {"num_workers": spec.worker_count, "persistent_workers": True,
                              "prefetch_factor": PREFETCH_FACTOR}
    if variant == "per-item":
        return DataLoader(ItemDataset(spec.source, spec.batch_size), batch_size=spec.batch_size,
                          **common)
    if variant == "chunks":
        return DataLoader(ChunkDataset(spec.source, spec.batch_size), batch_size=None, **common)
    raise ValueError(f"unknown DataLoader variant {variant!r}; use one of {', '.join(VARIANTS)}")


def open_loader(variant: str, spec: InputSpec) -> tuple[Iterator[Any], Callable[[], None]]:
    """An endless stream of batches from the DataLoader ``variant``, and the call that stops
    its worker processes (none for ``in-process``)."""
    stream = iter(make_loader(variant, spec))

    def close() -> None:
        shutdown = getattr(stream, "_shutdown_workers", None)
        if callable(shutdown):
            shutdown()

    return stream, close


VARIANTS = ("in-process", "per-item", "chunks")


IMAGE_VARIANTS = ("in-process", "processes")
# Which dataset decodes and transforms: torchvision's Pillow recipe, the same recipe written
# with OpenCV calls, or albumentations' (inputkit.peers.pil_recipe and cv2_recipe).
RECIPES = ("pillow", "opencv", "albumentations")


def image_dataset(recipe: str, root: str | os.PathLike[str]) -> Dataset:  # type: ignore[type-arg]
    """The ImageFolder-style dataset over ``root`` that runs ``recipe`` (one of ``RECIPES``)."""
    if recipe == "pillow":
        from inputkit.peers.pil_recipe import ImageFolderDataset

        return ImageFolderDataset(root)
    if recipe == "opencv":
        from inputkit.peers.cv2_recipe import OpenCVImageFolder

        return OpenCVImageFolder(root)
    if recipe == "albumentations":
        from inputkit.peers.cv2_recipe import AlbumentationsImageFolder

        return AlbumentationsImageFolder(root)
    raise ValueError(f"unknown image recipe {recipe!r}; use one of {', '.join(RECIPES)}")


def make_image_loader(variant: str, spec: InputSpec,
                      recipe: str = "pillow") -> DataLoader:  # type: ignore[type-arg]
    """W5's DataLoader: an ``ImageFolder``-style map dataset over ``spec.source.path`` doing
    ``recipe``'s training transforms, shuffled, batches of ``spec.batch_size``;
    ``processes`` uses the input's worker count, persistent workers, ``prefetch_factor=4``
    and a ``worker_init_fn`` that reseeds a dataset with generators of its own."""
    if variant not in IMAGE_VARIANTS:
        raise ValueError(f"unknown image DataLoader variant {variant!r}; use one of "
                         f"{', '.join(IMAGE_VARIANTS)}")
    dataset = image_dataset(recipe, spec.source["path"])
    if variant == "in-process":
        return DataLoader(dataset, batch_size=spec.batch_size, shuffle=True, num_workers=0)
    from inputkit.peers.cv2_recipe import worker_init

    return DataLoader(dataset, batch_size=spec.batch_size, shuffle=True,
                      num_workers=spec.worker_count, persistent_workers=True,
                      prefetch_factor=PREFETCH_FACTOR, worker_init_fn=worker_init)


def open_image_loader(variant: str, spec: InputSpec, recipe: str = "pillow",
                      ) -> tuple[Iterator[Any], Callable[[], None]]:
    """An endless stream of (images, labels) batches, epoch after epoch, and the call that
    stops the worker processes."""
    from inputkit.peers.pil_recipe import endless

    loader = make_image_loader(variant, spec, recipe)

    def close() -> None:
        iterator = getattr(loader, "_iterator", None)
        shutdown = getattr(iterator, "_shutdown_workers", None)
        if callable(shutdown):
            shutdown()

    return endless(loader), close

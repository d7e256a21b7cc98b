"""torchvision's ImageNet training recipe with Pillow, as a user would write it for DataLoader.

``ImageFolder(root, transform=Compose([RandomResizedCrop(224), RandomHorizontalFlip(),
PILToTensor()]))``: W5's DataLoader peer and the per-thread limit both run it.

torchvision is used when it imports. Where it does not (PyPI's torchvision fails to load
beside this project's CPU torch build: "operator torchvision::nms does not exist"),
the same recipe is replicated here with the same calls torchvision makes, in the same
order, so the work per image is the same:

- loading: ``Image.open(f).convert("RGB")`` (``torchvision.datasets.folder.pil_loader``);
- ``RandomResizedCrop.get_params``: 10 tries of ``area * uniform(scale)`` and
  ``exp(uniform(log(ratio)))`` from torch's RNG, ``w = round(sqrt(a * r))``,
  ``h = round(sqrt(a / r))``, ``randint`` offsets, then the centre crop with the ratio
  clamped (``crop_box`` below);
- ``F.resized_crop`` with the PIL backend: ``img.crop((j, i, j + w, i + h)).resize((224, 224),
  Image.BILINEAR)`` (torchvision returns the crop unresized when it is already 224 x 224);
- ``RandomHorizontalFlip``: ``torch.rand(1) < 0.5`` then ``img.transpose(FLIP_LEFT_RIGHT)``;
- ``PILToTensor``: ``torch.as_tensor(np.array(img, copy=True))`` viewed as HWC, permuted to
  CHW uint8.

The class folders are found as ``ImageFolder`` finds them: sub-folders sorted by name,
files walked in sorted order, kept when their lower-cased name ends in one of
``IMG_EXTENSIONS``.
"""

from __future__ import annotations

import os
import random
from collections.abc import Callable, Iterator, Sequence
from typing import Any

import numpy as np
import torch
from PIL import Image

from inputkit.images.transforms import Draws, random_resized_box

SIZE = 224
SCALE = (0.08, 1.0)
RATIO = (3.0 / 4.0, 4.0 / 3.0)
IMG_EXTENSIONS = (".jpg", ".jpeg", ".png", ".ppm", ".bmp", ".pgm", ".tif", ".tiff", ".webp")


def torchvision_transforms() -> Any | None:
    """``torchvision.transforms`` when it imports (and loads its operators), else None."""
    try:
        from torchvision import transforms
    except Exception:  # ImportError, or RuntimeError from a torchvision built for another torch
        return None
    return transforms


def find_samples(root: str | os.PathLike[str]) -> tuple[list[str], list[tuple[str, int]]]:
    """(classes, [(path, class index)]) as ``torchvision.datasets.ImageFolder`` lists them."""
    root = os.fspath(root)
    classes = sorted(entry.name for entry in os.scandir(root) if entry.is_dir())
    if not classes:
        raise FileNotFoundError(f"{root} has no class folders (the ImageFolder layout is "
                                "root/<class>/<image>)")
    samples = []
    for index, name in enumerate(classes):
        for folder, _, files in sorted(os.walk(os.path.join(root, name), followlinks=True)):
            for file in sorted(files):
                if file.lower().endswith(IMG_EXTENSIONS):
                    samples.append((os.path.join(folder, file), index))
    if not samples:
        raise FileNotFoundError(f"{root} has no images ({', '.join(IMG_EXTENSIONS)}) in its "
                                "class folders")
    return classes, samples


class TorchDraws:
    """torch's global RNG, drawn exactly as ``RandomResizedCrop.get_params`` draws it."""

    def uniform(self, low: float, high: float) -> float:
        return float(torch.empty(1).uniform_(low, high).item())

    def log_uniform(self, low: float, high: float) -> float:
        log_ratio = torch.log(torch.tensor((low, high)))
        return float(torch.exp(torch.empty(1).uniform_(log_ratio[0], log_ratio[1])).item())

    def randint(self, low: int, high: int) -> int:  # high included, as random.randint
        return int(torch.randint(low, high + 1, size=(1,)).item())


def crop_box(width: int, height: int, draws: Draws | random.Random,
             scale: Sequence[float] = SCALE, ratio: Sequence[float] = RATIO,
             ) -> tuple[int, int, int, int]:
    """(top, left, height, width) of the crop, by ``RandomResizedCrop.get_params``'s rule
    (inputkit's own implementation of it; ``draws``: TorchDraws, or a ``random.Random``)."""
    left, top, w, h = random_resized_box(width, height, (scale[0], scale[1]),
                                         (ratio[0], ratio[1]), draws)
    return top, left, h, w


def pil_loader(path: str) -> Image.Image:
    with open(path, "rb") as f:
        img = Image.open(f)
        return img.convert("RGB")


def replicated_transform(img: Image.Image) -> torch.Tensor:
    """RandomResizedCrop(224) → RandomHorizontalFlip() → PILToTensor(), without torchvision."""
    width, height = img.size
    i, j, h, w = crop_box(width, height, TorchDraws())
    img = img.crop((j, i, j + w, i + h))
    if img.size != (SIZE, SIZE):
        img = img.resize((SIZE, SIZE), Image.BILINEAR)
    if torch.rand(1) < 0.5:
        img = img.transpose(Image.FLIP_LEFT_RIGHT)
    tensor = torch.as_tensor(np.array(img, copy=True))
    return tensor.view(img.size[1], img.size[0], 3).permute((2, 0, 1))


def train_transform() -> tuple[Callable[[Image.Image], torch.Tensor], str]:
    """The recipe's transform, and where it comes from (torchvision, or the replica)."""
    transforms = torchvision_transforms()
    if transforms is None:
        return replicated_transform, "Pillow, torchvision's recipe replicated"
    return transforms.Compose([transforms.RandomResizedCrop(SIZE), transforms.RandomHorizontalFlip(),
                               transforms.PILToTensor()]), "torchvision"


class ImageFolderDataset(torch.utils.data.Dataset):  # type: ignore[type-arg]
    """``torchvision.datasets.ImageFolder(root, transform)``: (CHW uint8 tensor, class index)."""

    def __init__(self, root: str | os.PathLike[str]) -> None:
        self.classes, self.samples = find_samples(root)
        self.transform, self.backend = train_transform()

    def __len__(self) -> int:
        return len(self.samples)

    def __getitem__(self, index: int) -> tuple[torch.Tensor, int]:
        path, label = self.samples[index]
        return self.transform(pil_loader(path)), label


def recipe_rate(root: str | os.PathLike[str], seconds: float, seed: int = 0) -> float:
    """Images/s of the recipe in this one thread (load, crop, flip, to tensor), after a
    short warm-up, over the images in a shuffled order."""
    import time

    _, samples = find_samples(root)
    order = list(range(len(samples)))
    random.Random(seed).shuffle(order)
    transform, _ = train_transform()

    def one(k: int) -> None:
        transform(pil_loader(samples[order[k % len(order)]][0]))

    for k in range(min(8, len(order))):
        one(k)
    count, began = 0, time.perf_counter()
    while time.perf_counter() - began < seconds:
        one(count)
        count += 1
    return count / (time.perf_counter() - began)


def endless(loader: Any) -> Iterator[Any]:
    """One epoch after another from ``loader`` (persistent workers carry over)."""
    while True:
        delivered = 0
        for batch in loader:
            delivered += 1
            yield batch
        if not delivered:
            return

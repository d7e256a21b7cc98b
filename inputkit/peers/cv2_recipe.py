"""The ImageNet training recipe with OpenCV, as a DataLoader user who wants speed writes it.

W5's Pillow peer (``pil_recipe``) decodes with Pillow while inputkit decodes with OpenCV by
default, so part of inputkit's lead over it is the decoder's. These datasets decode with
OpenCV too, so the loader can be compared with a peer that uses the same decoder:

- ``OpenCVImageFolder``, the hand-written recipe: ``cv2.imread(path, cv2.IMREAD_COLOR)``
  (the whole image, BGR), RandomResizedCrop's box by torchvision's rule (``pil_recipe.crop_box``,
  drawn from Python's ``random``, which DataLoader seeds in every worker), the crop as a
  slice, ``cv2.resize(crop, (224, 224), interpolation=cv2.INTER_LINEAR)``, ``cv2.flip(img, 1)``
  with p = 0.5, ``cv2.cvtColor(BGR2RGB)`` on the 224 x 224 result (the cheapest place for it),
  then ``torch.from_numpy(img).permute(2, 0, 1)``;
- ``AlbumentationsImageFolder``, albumentations' own recipe as its documentation writes it:
  ``cv2.imread`` then ``cv2.cvtColor(BGR2RGB)``, then ``A.Compose([A.RandomResizedCrop(size=
  (224, 224)), A.HorizontalFlip(p=0.5), ToTensorV2()])`` (crop, ``cv2.resize`` with
  INTER_LINEAR, flip, CHW view).

Both give (CHW uint8 tensor, class index) per image, batched by DataLoader's default collate
into the uint8 64 x 3 x 224 x 224 batches and int64 labels that inputkit's recipe makes.
Each process runs OpenCV with one thread (``cv2.setNumThreads(1)``, as inputkit's decoder
does in each worker): the loaders parallelise over images, not inside one.
"""

from __future__ import annotations

import os
import random
from typing import Any

import numpy as np
import torch

from inputkit.peers.pil_recipe import SIZE, crop_box, find_samples

ALBUMENTATIONS_INSTALL = "pip install 'inputkit-ml[peers]' (albumentations)"


class GlobalDraws:
    """Python's global ``random``, which DataLoader seeds differently in every worker."""

    def uniform(self, low: float, high: float) -> float:
        return random.uniform(low, high)

    def log_uniform(self, low: float, high: float) -> float:
        return float(np.exp(random.uniform(np.log(low), np.log(high))))

    def randint(self, low: int, high: int) -> int:
        return random.randint(low, high)


def one_thread() -> Any:
    """``cv2``, with its own thread pool set to one thread in this process."""
    import cv2

    cv2.setNumThreads(1)
    return cv2


def cv2_loader(cv2: Any, path: str) -> np.ndarray:
    """``cv2.imread(path, IMREAD_COLOR)``: the whole image as BGR HWC uint8."""
    bgr = cv2.imread(path, cv2.IMREAD_COLOR)
    if bgr is None:
        raise OSError(f"file '{path}': OpenCV cannot read it as an image (cv2.imread returned "
                      "None); remove it from the folder or convert it")
    return bgr


def opencv_transform(cv2: Any, bgr: np.ndarray, draws: GlobalDraws) -> torch.Tensor:
    """RandomResizedCrop(224) → flip → RGB → CHW uint8 tensor, with OpenCV calls."""
    height, width = bgr.shape[:2]
    top, left, h, w = crop_box(width, height, draws)
    img = cv2.resize(bgr[top:top + h, left:left + w], (SIZE, SIZE), interpolation=cv2.INTER_LINEAR)
    if random.random() < 0.5:
        img = cv2.flip(img, 1)
    img = cv2.cvtColor(img, cv2.COLOR_BGR2RGB)
    return torch.from_numpy(img).permute(2, 0, 1)


class _CV2ImageFolder(torch.utils.data.Dataset):  # type: ignore[type-arg]
    """An ImageFolder over ``root`` read with ``cv2.imread``; subclasses say how an image
    (BGR HWC uint8) becomes the CHW tensor. OpenCV is set up in the process that reads."""

    backend = ""

    def __init__(self, root: str | os.PathLike[str]) -> None:
        self.classes, self.samples = find_samples(root)
        self._cv2: Any = None

    def __len__(self) -> int:
        return len(self.samples)

    def __getitem__(self, index: int) -> tuple[torch.Tensor, int]:
        if self._cv2 is None:
            self._cv2 = one_thread()
        path, label = self.samples[index]
        return self.transform_image(self._cv2, cv2_loader(self._cv2, path)), label

    def transform_image(self, cv2: Any, bgr: np.ndarray) -> torch.Tensor:
        raise NotImplementedError


class OpenCVImageFolder(_CV2ImageFolder):
    """An ImageFolder over ``root`` with the hand-written OpenCV recipe."""

    backend = "OpenCV"

    def __init__(self, root: str | os.PathLike[str]) -> None:
        super().__init__(root)
        self.draws = GlobalDraws()

    def transform_image(self, cv2: Any, bgr: np.ndarray) -> torch.Tensor:
        return opencv_transform(cv2, bgr, self.draws)


def albumentations() -> Any:
    """The ``albumentations`` module, imported without its check for a newer version on PyPI
    (a network call at import; ``NO_ALBUMENTATIONS_UPDATE`` is set unless you set it)."""
    os.environ.setdefault("NO_ALBUMENTATIONS_UPDATE", "1")
    import albumentations

    return albumentations


def albumentations_missing() -> str | None:
    """Why the albumentations peer cannot run here, or None."""
    try:
        albumentations()
        from albumentations.pytorch import ToTensorV2  # noqa: F401
    except ImportError as exc:
        return f"albumentations does not import ({exc}); {ALBUMENTATIONS_INSTALL}"
    return None


def albumentations_transform() -> Any:
    """``A.Compose([A.RandomResizedCrop(size=(224, 224)), A.HorizontalFlip(p=0.5), ToTensorV2()])``."""
    A = albumentations()  # noqa: N806 - the name albumentations' documentation uses
    from albumentations.pytorch import ToTensorV2

    return A.Compose([A.RandomResizedCrop(size=(SIZE, SIZE)), A.HorizontalFlip(p=0.5),
                      ToTensorV2()])


class AlbumentationsImageFolder(_CV2ImageFolder):
    """An ImageFolder over ``root`` with albumentations' documented recipe."""

    backend = "albumentations"

    def __init__(self, root: str | os.PathLike[str]) -> None:
        super().__init__(root)
        self.transform = albumentations_transform()

    def transform_image(self, cv2: Any, bgr: np.ndarray) -> torch.Tensor:
        return self.transform(image=cv2.cvtColor(bgr, cv2.COLOR_BGR2RGB))["image"]

    def reseed(self, seed: int) -> None:
        """albumentations draws from generators of its own, seeded once in the parent
        process: without this, every worker would crop and flip alike."""
        self.transform.set_random_seed(seed % 2**32)


def worker_init(worker_id: int) -> None:
    """DataLoader's ``worker_init_fn``: the worker's copy of the dataset is reseeded with
    the worker's seed where it has generators of its own."""
    info = torch.utils.data.get_worker_info()
    reseed = getattr(info.dataset, "reseed", None) if info is not None else None
    if callable(reseed):
        reseed(info.seed)

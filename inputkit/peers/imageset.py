"""An ImageNet-like JPEG set cut from real photographs, as a folder and as tar shards.

The photographs are the colour sample images scikit-image ships in its wheel
(astronaut, coffee, chelsea, rocket, ...): real photos, which compress and decode
like ImageNet's, unlike random noise. Each output image is a random crop of one of
them with an aspect ratio between 3:4 and 4:3, resized so that its longer side is
400-500 px (ImageNet's typical size), randomly mirrored, saved as a JPEG at
quality 90. The same seed writes the same bytes.

``write_image_set`` writes ``<out>/train/<class>/<key>.jpg`` (the ImageFolder layout)
and ``<out>/shards/train-{000..}.tar`` (WebDataset layout: ``<key>.jpg`` and
``<key>.cls`` per sample). ``tools/make_images.py`` is its command line;
``cached_image_set`` is what ``inputkit compare``'s W5 uses when no ``--images``
folder is given.
"""

from __future__ import annotations

import io
import os
import tarfile
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

# scikit-image's colour photographs (grey and synthetic images are left out).
PHOTOS = ("astronaut.png", "chelsea.png", "coffee.png", "hubble_deep_field.jpg",
          "motorcycle_left.png", "motorcycle_right.png", "retina.jpg", "rocket.jpg", "ihc.png")
INSTALL = "pip install scikit-image (only for its sample photographs)"
# Written last into a cached set's folder: a set without it was interrupted and is redone.
COMPLETE = ".complete"


class ImageSetUnavailable(RuntimeError):  # noqa: N818 - reads as a state, like FileNotFoundError
    """The photographs to cut the set from are not installed (scikit-image is missing)."""


@dataclass(frozen=True)
class ImageSet:
    root: Path  # holds train/ and shards/
    count: int
    mean_bytes: float  # mean size of one JPEG
    seconds: float  # time it took to write (0 when it was found in the cache)

    @property
    def train(self) -> Path:
        return self.root / "train"


def photo_dir() -> str:
    """Where scikit-image keeps its sample photographs; ImageSetUnavailable without it."""
    try:
        import skimage.data
    except ImportError as exc:
        raise ImageSetUnavailable(f"the real-image set is cut from scikit-image's sample "
                                  f"photographs, and scikit-image does not import ({exc}); "
                                  f"{INSTALL}") from exc
    return os.path.dirname(skimage.data.__file__)


def load_photos() -> list[Any]:
    """The colour photographs as RGB Pillow images."""
    from PIL import Image

    root = photo_dir()
    photos = []
    for name in PHOTOS:
        path = os.path.join(root, name)
        if os.path.exists(path):
            with Image.open(path) as img:
                photos.append(img.convert("RGB"))
    if not photos:
        raise ImageSetUnavailable(f"no sample photographs ({', '.join(PHOTOS)}) found in {root}")
    return photos


def cut(photo: Any, rng: np.random.Generator) -> Any:
    """One ImageNet-like image: a random crop of ``photo``, 400-500 px on its longer side."""
    from PIL import Image

    width, height = photo.size
    aspect = float(np.exp(rng.uniform(np.log(3 / 4), np.log(4 / 3))))  # width / height
    longer = int(rng.integers(400, 501))
    out_w, out_h = (longer, round(longer / aspect)) if aspect >= 1 else (round(longer * aspect), longer)
    # The largest crop of that aspect inside the photo, then 35-100% of its side.
    crop_w = min(width, height * aspect)
    share = float(rng.uniform(0.35, 1.0))
    crop_w, crop_h = crop_w * share, crop_w * share / aspect
    left = float(rng.uniform(0, width - crop_w))
    top = float(rng.uniform(0, height - crop_h))
    img = photo.resize((out_w, out_h), Image.Resampling.LANCZOS,
                       box=(left, top, left + crop_w, top + crop_h))
    if rng.random() < 0.5:
        img = img.transpose(Image.Transpose.FLIP_LEFT_RIGHT)
    return img


def write_image_set(out: str | os.PathLike[str], count: int = 2000, classes: int = 10,
                    per_shard: int = 500, quality: int = 90, seed: int = 0,
                    say: Callable[[str], None] | None = None) -> ImageSet:
    """Write ``count`` JPEGs into ``out``/train (``classes`` folders) and ``out``/shards."""
    if count < 1 or classes < 1 or per_shard < 1:
        raise ValueError(f"count, classes and per_shard must be at least 1, got count={count}, "
                         f"classes={classes}, per_shard={per_shard}")
    photos = load_photos()
    rng = np.random.default_rng(seed)
    root = Path(out)
    folder, shards = root / "train", root / "shards"
    for c in range(classes):
        (folder / f"class_{c:03d}").mkdir(parents=True, exist_ok=True)
    shards.mkdir(parents=True, exist_ok=True)
    started = time.perf_counter()
    total_bytes = 0
    tar: tarfile.TarFile | None = None
    try:
        for i in range(count):
            if i % per_shard == 0:
                if tar is not None:
                    tar.close()
                tar = tarfile.open(shards / f"train-{i // per_shard:03d}.tar", "w")
            img = cut(photos[int(rng.integers(len(photos)))], rng)
            buffer = io.BytesIO()
            img.save(buffer, format="JPEG", quality=quality)
            data = buffer.getvalue()
            total_bytes += len(data)
            label = i % classes
            key = f"{i:06d}"
            (folder / f"class_{label:03d}" / f"{key}.jpg").write_bytes(data)
            for name, payload in ((key + ".jpg", data), (key + ".cls", str(label).encode())):
                info = tarfile.TarInfo(name)
                info.size = len(payload)
                info.mtime = 0
                tar.addfile(info, io.BytesIO(payload))  # type: ignore[union-attr]
            if say is not None and ((i + 1) % 500 == 0 or i + 1 == count):
                say(f"{i + 1:,}/{count:,} images")
    finally:
        if tar is not None:
            tar.close()
    return ImageSet(root, count, total_bytes / count, time.perf_counter() - started)


def cache_dir() -> Path:
    """Where generated sets are kept: ``$INPUTKIT_CACHE`` or ``~/.cache/inputkit``."""
    base = os.environ.get("INPUTKIT_CACHE") or os.path.join(
        os.environ.get("XDG_CACHE_HOME") or os.path.expanduser("~/.cache"), "inputkit")
    return Path(base)


def cached_image_set(count: int = 2000, seed: int = 0, root: Path | None = None,
                     say: Callable[[str], None] | None = None) -> ImageSet:
    """The set of ``count`` images for ``seed``, written once into the cache and reused."""
    root = (root or cache_dir()) / f"images-{count}-seed{seed}"
    marker = root / COMPLETE
    if marker.exists():
        sizes = [p.stat().st_size for p in (root / "train").rglob("*.jpg")]
        if len(sizes) == count:
            return ImageSet(root, count, sum(sizes) / count, 0.0)
    made = write_image_set(root, count=count, seed=seed, say=say)
    marker.write_text(f"{count} images, seed {seed}\n")
    return made

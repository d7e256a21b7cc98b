"""Real image files for the image-source tests: photo-like JPEGs and every awkward kind of file."""

from __future__ import annotations

import io
import tarfile
from pathlib import Path

import numpy as np
from PIL import Image


def photo(width: int, height: int, seed: int) -> Image.Image:
    """A smooth, photo-like RGB picture (gradients, waves, a disc, mild noise): it compresses
    and decodes like a photograph, unlike random noise."""
    rng = np.random.default_rng(seed)
    y, x = np.mgrid[0:height, 0:width].astype(np.float32)
    channels = []
    for c in range(3):
        fx, fy = rng.uniform(0.005, 0.05, size=2)
        wave = np.sin(x * fx + c) * np.cos(y * fy - c) * 60
        channels.append(96 + 80 * x / width * (c - 1) + wave + 40 * y / height)
    img = np.stack(channels, axis=-1)
    cx, cy, r = rng.uniform(0.2, 0.8) * width, rng.uniform(0.2, 0.8) * height, min(width, height) / 5
    img[(x - cx) ** 2 + (y - cy) ** 2 < r * r] += rng.uniform(-80, 80, size=3)
    img += rng.normal(0, 4, size=img.shape)
    return Image.fromarray(np.clip(img, 0, 255).astype(np.uint8), "RGB")


def jpeg_bytes(img: Image.Image, quality: int = 90) -> bytes:
    buffer = io.BytesIO()
    img.save(buffer, format="JPEG", quality=quality)
    return buffer.getvalue()


def write_folder(root: Path, classes: int = 3, per_class: int = 8, seed: int = 0) -> Path:
    """``root/class_<k>/img_<i>.jpg``: ImageNet-like sizes (longer side 400-500, 3:4..4:3)."""
    rng = np.random.default_rng(seed)
    for c in range(classes):
        folder = root / f"class_{c}"
        folder.mkdir(parents=True, exist_ok=True)
        for i in range(per_class):
            longer = int(rng.integers(400, 501))
            shorter = int(longer * rng.uniform(0.75, 1.0))
            w, h = (longer, shorter) if rng.random() < 0.5 else (shorter, longer)
            (folder / f"img_{i:03d}.jpg").write_bytes(jpeg_bytes(photo(w, h, seed * 1000 + c * 100 + i)))
    return root


def write_shards(folder: Path, images: list[bytes], labels: list[int], per_shard: int = 10,
                 ext: str = "jpg") -> list[Path]:
    folder.mkdir(parents=True, exist_ok=True)
    paths = []
    for start in range(0, len(images), per_shard):
        path = folder / f"train-{start // per_shard:03d}.tar"
        with tarfile.open(path, "w") as tar:
            for i in range(start, min(start + per_shard, len(images))):
                for name, payload in ((f"{i:06d}.{ext}", images[i]),
                                      (f"{i:06d}.cls", str(labels[i]).encode())):
                    info = tarfile.TarInfo(name)
                    info.size = len(payload)
                    tar.addfile(info, io.BytesIO(payload))
        paths.append(path)
    return paths


def encoded(img: Image.Image, fmt: str, **save: object) -> bytes:
    buffer = io.BytesIO()
    img.save(buffer, format=fmt, **save)
    return buffer.getvalue()


def awkward_images() -> dict[str, tuple[bytes, np.ndarray]]:
    """Files of every mode a folder may hold, and the RGB pixels each must decode to."""
    base = photo(64, 48, 7)
    rgb = np.asarray(base)
    grey = base.convert("L")
    palette = base.convert("P", palette=Image.Palette.ADAPTIVE, colors=32)
    rgba = base.copy()
    rgba.putalpha(Image.fromarray(np.full((48, 64), 77, np.uint8)))
    sixteen = np.asarray(grey).astype(np.uint16) * 257  # the 8-bit values, spread over 16 bits
    files = {
        "grey.png": (encoded(grey, "PNG"), np.repeat(np.asarray(grey)[:, :, None], 3, axis=2)),
        "palette.png": (encoded(palette, "PNG"), np.asarray(palette.convert("RGB"))),
        "rgba.png": (encoded(rgba, "PNG"), rgb),
        "sixteen.png": (encoded(Image.fromarray(sixteen), "PNG"),
                        np.repeat(np.asarray(grey)[:, :, None], 3, axis=2)),
        "rgb.bmp": (encoded(base, "BMP"), rgb),
        "rgb.webp": (encoded(base, "WEBP", lossless=True), rgb),
        "cmyk.jpg": (encoded(base.convert("CMYK"), "JPEG", quality=95), None),  # lossy: checked loosely
        "grey.jpg": (encoded(grey, "JPEG", quality=95), None),
    }
    return files  # type: ignore[return-value]

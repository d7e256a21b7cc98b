"""Write an ImageNet-like JPEG set cut from real photographs, as a folder and as tar shards.

The photographs are the colour sample images scikit-image ships in its wheel
(astronaut, coffee, chelsea, rocket, ...): real photos, which compress and decode
like ImageNet's, unlike random noise. Each output image is a random crop of one of
them with an aspect ratio between 3:4 and 4:3, resized so that its longer side is
400-500 px (ImageNet's typical size), randomly mirrored, saved as a JPEG at
quality 90. The same ``--seed`` writes the same bytes.

    pip install scikit-image        # only for its photographs
    python tools/make_images.py /tmp/inputkit-images --count 2000

writes ``<out>/train/<class>/<key>.jpg`` (the ImageFolder layout, ``--classes``
class folders) and ``<out>/shards/train-{000..}.tar`` (WebDataset layout:
``<key>.jpg`` and ``<key>.cls`` per sample, ``--per-shard`` samples a shard).
"""

from __future__ import annotations

import argparse
import io
import os
import sys
import tarfile
import time

import numpy as np

# scikit-image's colour photographs (grey and synthetic images are left out).
PHOTOS = ("astronaut.png", "chelsea.png", "coffee.png", "hubble_deep_field.jpg",
          "motorcycle_left.png", "motorcycle_right.png", "retina.jpg", "rocket.jpg", "ihc.png")


def photo_dir() -> str:
    try:
        import skimage.data
    except ImportError:
        sys.exit("tools/make_images.py cuts its images from scikit-image's sample photographs: "
                 "pip install scikit-image")
    return os.path.dirname(skimage.data.__file__)


def load_photos() -> list[object]:
    from PIL import Image

    root = photo_dir()
    photos = []
    for name in PHOTOS:
        path = os.path.join(root, name)
        if os.path.exists(path):
            with Image.open(path) as img:
                photos.append(img.convert("RGB"))
    if not photos:
        sys.exit(f"no sample photographs found in {root}")
    return photos


def cut(photo: object, rng: np.random.Generator) -> object:
    """One ImageNet-like image: a random crop of ``photo``, 400-500 px on its longer side."""
    from PIL import Image

    width, height = photo.size  # type: ignore[attr-defined]
    aspect = float(np.exp(rng.uniform(np.log(3 / 4), np.log(4 / 3))))  # width / height
    longer = int(rng.integers(400, 501))
    out_w, out_h = (longer, round(longer / aspect)) if aspect >= 1 else (round(longer * aspect), longer)
    # The largest crop of that aspect inside the photo, then 35-100% of its side.
    crop_w = min(width, height * aspect)
    share = float(rng.uniform(0.35, 1.0))
    crop_w, crop_h = crop_w * share, crop_w * share / aspect
    left = float(rng.uniform(0, width - crop_w))
    top = float(rng.uniform(0, height - crop_h))
    img = photo.resize((out_w, out_h), Image.Resampling.LANCZOS,  # type: ignore[attr-defined]
                       box=(left, top, left + crop_w, top + crop_h))
    if rng.random() < 0.5:
        img = img.transpose(Image.Transpose.FLIP_LEFT_RIGHT)
    return img


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("out", help="output directory")
    parser.add_argument("--count", type=int, default=2000, help="images to write (default 2000)")
    parser.add_argument("--classes", type=int, default=10, help="class folders (default 10)")
    parser.add_argument("--per-shard", type=int, default=500, help="samples per tar shard")
    parser.add_argument("--quality", type=int, default=90, help="JPEG quality (default 90)")
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args(argv)
    if args.count < 1 or args.classes < 1 or args.per_shard < 1:
        parser.error("--count, --classes and --per-shard must be at least 1")

    photos = load_photos()
    rng = np.random.default_rng(args.seed)
    folder = os.path.join(args.out, "train")
    shards = os.path.join(args.out, "shards")
    for c in range(args.classes):
        os.makedirs(os.path.join(folder, f"class_{c:03d}"), exist_ok=True)
    os.makedirs(shards, exist_ok=True)
    started = time.perf_counter()
    total_bytes = 0
    tar: tarfile.TarFile | None = None
    for i in range(args.count):
        if i % args.per_shard == 0:
            if tar is not None:
                tar.close()
            tar = tarfile.open(os.path.join(shards, f"train-{i // args.per_shard:03d}.tar"), "w")
        img = cut(photos[int(rng.integers(len(photos)))], rng)
        buffer = io.BytesIO()
        img.save(buffer, format="JPEG", quality=args.quality)  # type: ignore[attr-defined]
        data = buffer.getvalue()
        total_bytes += len(data)
        label = i % args.classes
        key = f"{i:06d}"
        with open(os.path.join(folder, f"class_{label:03d}", key + ".jpg"), "wb") as f:
            f.write(data)
        assert tar is not None
        for name, payload in ((key + ".jpg", data), (key + ".cls", str(label).encode())):
            info = tarfile.TarInfo(name)
            info.size = len(payload)
            info.mtime = 0
            tar.addfile(info, io.BytesIO(payload))
        if (i + 1) % 500 == 0 or i + 1 == args.count:
            print(f"  {i + 1:,}/{args.count:,} images", file=sys.stderr, flush=True)
    if tar is not None:
        tar.close()
    took = time.perf_counter() - started
    print(f"wrote {args.count:,} JPEGs ({total_bytes / args.count / 1024:.0f} KiB each on average) "
          f"to {folder} and {-(-args.count // args.per_shard)} shards in {shards} in {took:.1f} s")
    return 0


if __name__ == "__main__":
    sys.exit(main())

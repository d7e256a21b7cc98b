"""ImageNet-shaped data at any sample count, built in minutes: a class-folder tree and 128 tar shards.

Start-up and index memory grow with the number of files, not their size, so the
images are a few dozen small real JPEGs (64 x 64, Pillow-drawn gradients and
shapes, 1-2 kB each) and the folder tree is made of hard links to them: 1,281,167
files in 1,000 class folders cost directory entries, not 1.28M copies. The shards
(``train-{000..127}.tar``, WebDataset layout: ``<key>.jpg`` and ``<key>.cls``)
hold the same samples, uncompressed, written with plain ustar headers.

    python tools/scale_data.py /work/scale_data --samples 1281167

writes ``<out>/n<samples>/folder/<class>/<key>.jpg`` and
``<out>/n<samples>/shards/train-NNN.tar`` (and ``built.json`` when complete; a
second call with the same arguments reuses it). Used by tools/startup_scale.py.
"""

from __future__ import annotations

import argparse
import io
import json
import os
import shutil
import sys
import tarfile
import time
from dataclasses import asdict, dataclass

IMAGENET_SAMPLES = 1_281_167
SOURCES = 64  # distinct JPEGs: ext4 allows 65,000 links per file, so 1.28M links need 20+


@dataclass(frozen=True)
class Built:
    """Where a built data set lives and what it holds."""

    root: str
    folder: str
    shards: list[str]
    samples: int
    classes: int
    folder_seconds: float
    shard_seconds: float
    shard_bytes: int


def _jpegs(count: int, size: int = 64) -> list[bytes]:
    """``count`` different small JPEGs: gradients with a shape, so they decode like photos."""
    from PIL import Image, ImageDraw

    out = []
    for k in range(count):
        image = Image.linear_gradient("L").resize((size, size)).convert("RGB")
        image = Image.merge("RGB", [band.point(lambda v, s=(k * 37 + b * 71) % 256: (v + s) % 256)
                                    for b, band in enumerate(image.split())])
        draw = ImageDraw.Draw(image)
        r = 8 + k % 20
        draw.ellipse((k % 32, (k * 7) % 32, k % 32 + r, (k * 7) % 32 + r),
                     fill=((k * 53) % 256, (k * 91) % 256, (k * 13) % 256))
        buffer = io.BytesIO()
        image.save(buffer, format="JPEG", quality=90)
        out.append(buffer.getvalue())
    return out


class _Progress:
    """One line to stderr every ``every_s`` seconds: how far a long build got."""

    def __init__(self, what: str, total: int, every_s: float = 2.0) -> None:
        self.what, self.total, self.every_s = what, total, every_s
        self.began = self.last = time.monotonic()

    def __call__(self, done: int, force: bool = False) -> None:
        now = time.monotonic()
        if force or now - self.last >= self.every_s:
            self.last = now
            print(f"  {self.what}: {done:,}/{self.total:,} ({100 * done / max(1, self.total):.0f}%), "
                  f"{now - self.began:.1f} s", file=sys.stderr, flush=True)


def _split(samples: int, parts: int) -> list[int]:
    """``samples`` into ``parts`` counts that differ by at most one."""
    base, extra = divmod(samples, parts)
    return [base + (1 if i < extra else 0) for i in range(parts)]


def _key(sample: int) -> str:
    return f"s{sample:08d}"


def write_folder(folder: str, sources: list[str], samples: int, classes: int) -> None:
    """``classes`` class folders holding ``samples`` hard links to ``sources`` in all."""
    shown = _Progress(f"folder {folder}", samples)
    sample = 0
    for c, count in enumerate(_split(samples, classes)):
        target = os.path.join(folder, f"n{c:08d}")
        os.makedirs(target)
        for _ in range(count):
            os.link(sources[sample % len(sources)], os.path.join(target, f"{_key(sample)}.jpg"))
            sample += 1
        shown(sample)
    shown(sample, force=True)


def _header(name: str, size: int) -> bytes:
    info = tarfile.TarInfo(name)
    info.size, info.mtime, info.mode = size, 0, 0o644
    return info.tobuf(format=tarfile.USTAR_FORMAT)


def _padded(data: bytes) -> bytes:
    return data + b"\0" * (-len(data) % tarfile.BLOCKSIZE)


def write_shards(folder: str, jpegs: list[bytes], samples: int, classes: int,
                 shards: int) -> list[str]:
    """``shards`` uncompressed tars holding the folder's samples in its order (same labels)."""
    os.makedirs(folder)
    label_of = [c for c, count in enumerate(_split(samples, classes)) for _ in range(count)]
    padded = [_padded(j) for j in jpegs]
    shown = _Progress(f"shards {folder}", samples)
    paths, sample = [], 0
    for s, count in enumerate(_split(samples, shards)):
        path = os.path.join(folder, f"train-{s:03d}.tar")
        parts = []
        for _ in range(count):
            key, k = _key(sample), sample % len(jpegs)
            cls = str(label_of[sample]).encode()
            parts += [_header(f"{key}.jpg", len(jpegs[k])), padded[k],
                      _header(f"{key}.cls", len(cls)), _padded(cls)]
            sample += 1
        parts.append(b"\0" * (2 * tarfile.BLOCKSIZE))  # the end-of-archive marker
        with open(path + ".part", "wb") as f:
            f.write(b"".join(parts))
        os.replace(path + ".part", path)
        paths.append(path)
        shown(sample)
    shown(sample, force=True)
    return paths


def build(out: str, samples: int, classes: int = 1000, shards: int = 128) -> Built:
    """The data set of ``samples`` under ``out/n<samples>``, built unless ``built.json`` says it is."""
    if samples < classes or samples < shards:
        raise SystemExit(f"--samples {samples:,} must be at least --classes ({classes}) and "
                         f"--shards ({shards})")
    root = os.path.join(out, f"n{samples}")
    marker = os.path.join(root, "built.json")
    if os.path.exists(marker):
        with open(marker) as f:
            built = Built(**json.load(f))
        if (built.samples, built.classes, len(built.shards)) == (samples, classes, shards):
            return built
    shutil.rmtree(root, ignore_errors=True)  # a half-built or different set: start over
    os.makedirs(os.path.join(root, "jpegs"))
    jpegs = _jpegs(SOURCES)
    sources = []
    for k, data in enumerate(jpegs):
        sources.append(os.path.join(root, "jpegs", f"src_{k:03d}.jpg"))
        with open(sources[-1], "wb") as f:
            f.write(data)
    began = time.monotonic()
    write_folder(os.path.join(root, "folder"), sources, samples, classes)
    folder_s = time.monotonic() - began
    began = time.monotonic()
    paths = write_shards(os.path.join(root, "shards"), jpegs, samples, classes, shards)
    shard_s = time.monotonic() - began
    built = Built(root, os.path.join(root, "folder"), paths, samples, classes,
                  round(folder_s, 2), round(shard_s, 2), sum(os.path.getsize(p) for p in paths))
    with open(marker, "w") as f:
        json.dump(asdict(built), f)
    return built


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("out", help="where the data sets live (not in the repository)")
    parser.add_argument("--samples", type=int, default=IMAGENET_SAMPLES)
    parser.add_argument("--classes", type=int, default=1000)
    parser.add_argument("--shards", type=int, default=128)
    args = parser.parse_args(argv)
    built = build(args.out, args.samples, args.classes, args.shards)
    print(f"{built.samples:,} samples: folder {built.folder} ({built.folder_seconds} s), "
          f"{len(built.shards)} shards, {built.shard_bytes / 2**30:.2f} GiB ({built.shard_seconds} s)")
    return 0


if __name__ == "__main__":
    sys.exit(main())

"""Each image decoder's cost per image and its pixel difference from torchvision's Pillow recipe.

One thread decodes and transforms every image of a folder (the ImageFolder layout,
e.g. from tools/make_images.py) with each decoder inputkit has, for the training
recipe (RandomResizedCrop 224 + flip) and the evaluation one (resize 256, centre
crop 224). Reported: CPU milliseconds per image (thread CPU time, the best of
``--rounds``, so a busy machine disturbs it little) and the mean absolute
difference per pixel (0-255 scale) from the exact mode, which replays
torchvision's Pillow steps one by one.

    python tools/make_images.py /tmp/inputkit-images
    python tools/image_decode.py /tmp/inputkit-images/train
"""

from __future__ import annotations

import argparse
import sys
import time

import numpy as np

from inputkit.images.decode import Decoder, opencv_available
from inputkit.images.transforms import Transforms
from inputkit.sources.images import ImageFolderSource

RECIPES = {
    "train (random_resized_crop 224, flip)": [{"random_resized_crop": {"size": 224}},
                                              {"horizontal_flip": {"p": 0.5}}],
    "val (resize 256, center_crop 224)": [{"resize": 256}, {"center_crop": 224}],
}


def run(decoder: Decoder, data: list[bytes], transforms: Transforms, rounds: int,
        ) -> tuple[float, np.ndarray]:
    out = np.empty((len(data), 3, *transforms.out_size), np.uint8)
    best = float("inf")
    for _ in range(rounds):
        cpu0 = time.thread_time()
        for i, payload in enumerate(data):
            decoder.decode_into(payload, out[i], transforms, 0, 0, i)
        best = min(best, (time.thread_time() - cpu0) / len(data) * 1000)
    return best, out


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("folder", help="an ImageFolder tree (path/<class>/<file>)")
    parser.add_argument("--images", type=int, default=500, help="images to decode (default 500)")
    parser.add_argument("--rounds", type=int, default=3)
    args = parser.parse_args(argv)
    source = ImageFolderSource(args.folder, RECIPES[next(iter(RECIPES))])
    count = min(args.images, len(source))
    data = [source.encoded(i) for i in range(count)]
    decoders = [("pillow, exact (torchvision's steps)", Decoder("pillow", exact=True)),
                ("pillow (draft + resize(box))", Decoder("pillow"))]
    if opencv_available():
        decoders.append(("opencv", Decoder("opencv")))
    else:
        print("opencv: not installed (pip install 'inputkit-ml[images]'), left out", file=sys.stderr)
    print(f"{count} images of {args.folder}, {np.mean([len(d) for d in data]) / 1024:.0f} KiB "
          f"each on average; one thread, best of {args.rounds} rounds")
    for recipe, steps in RECIPES.items():
        transforms = Transforms.parse(steps)
        print(f"\n{recipe}")
        print(f"  {'decoder':40s} {'CPU ms/image':>12s} {'images/s':>9s} {'MAD vs exact':>13s}")
        reference = None
        for name, decoder in decoders:
            ms, out = run(decoder, data, transforms, args.rounds)
            if reference is None:
                reference, mad = out, 0.0
            else:
                mad = float(np.abs(out.astype(np.int16) - reference).mean())
            print(f"  {name:40s} {ms:12.3f} {1000 / ms:9.0f} {mad:13.2f}")
    return 0


if __name__ == "__main__":
    sys.exit(main())

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
The generator itself is ``inputkit.peers.imageset`` (``inputkit compare``'s W5
writes the same set into its cache when it is given no ``--images`` folder).
"""

from __future__ import annotations

import argparse
import sys

from inputkit.peers.imageset import ImageSetUnavailable, write_image_set


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
    try:
        made = write_image_set(args.out, count=args.count, classes=args.classes,
                               per_shard=args.per_shard, quality=args.quality, seed=args.seed,
                               say=lambda text: print(f"  {text}", file=sys.stderr, flush=True))
    except ImageSetUnavailable as exc:
        sys.exit(f"tools/make_images.py: {exc}")
    shards = -(-args.count // args.per_shard)
    print(f"wrote {args.count:,} JPEGs ({made.mean_bytes / 1024:.0f} KiB each on average) "
          f"to {made.train} and {shards} shards in {made.root / 'shards'} in {made.seconds:.1f} s")
    return 0


if __name__ == "__main__":
    sys.exit(main())

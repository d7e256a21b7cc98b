"""Per-sample geometric transforms, planned as one crop box and one output size per image.

A transform list (``source.transforms``) is a sequence of steps, each a one-key
mapping (or a bare name)::

    - random_resized_crop: {size: 224, scale: [0.08, 1.0], ratio: [0.75, 1.3333]}
    - horizontal_flip: {p: 0.5}

    - resize: 256          # the shorter side; [h, w] for an exact size
    - center_crop: 224

Every step is sampled the way torchvision samples it, on the image size the
previous steps produced, and the whole list folds into a :class:`Geometry`: a
box in the source image's pixels, the output size and whether to mirror. The
decoder then does one crop-and-resize instead of a resize followed by a crop,
so no pixel is decoded, resized or copied that the output does not need. The
exact mode (``decode.exact``) replays the same sampled steps one by one with
Pillow, as torchvision does.

Randomness is drawn from ``(seed, epoch, sample index)`` alone, so an epoch's
augmentations are the same at any worker count and with threads or processes.
"""

from __future__ import annotations

import math
import random
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any, Protocol


def bad_key(key: str, message: str) -> ValueError:
    """A bad source argument: ``key: message`` (the loader names the source config around it)."""
    return ValueError(f"{key}: {message}")


STEPS = ("random_resized_crop", "resize", "center_crop", "horizontal_flip")


@dataclass(frozen=True)
class Step:
    """One parsed transform step."""

    name: str
    size: tuple[int, int] | int | None = None  # (h, w); an int for resize = the shorter side
    scale: tuple[float, float] = (0.08, 1.0)
    ratio: tuple[float, float] = (3 / 4, 4 / 3)
    p: float = 0.5


@dataclass(frozen=True)
class Geometry:
    """What one sample's transforms do: the box of the source image (x0, y0, x1, y1, in its
    pixels) that becomes the ``out`` (width, height) image, mirrored if ``flip``; ``steps``
    are the sampled steps, for the exact mode."""

    box: tuple[float, float, float, float]
    out: tuple[int, int]
    flip: bool
    steps: tuple[tuple[str, Any], ...]
    size: tuple[int, int] = (0, 0)  # the source image's (width, height)


class Transforms:
    """A checked transform list; ``plan(width, height, seed, epoch, index)`` samples it."""

    def __init__(self, steps: Sequence[Step], key: str = "transforms") -> None:
        self.steps = tuple(steps)
        self.key = key
        self.out_size = _fixed_size(self.steps, key)  # (h, w)

    @classmethod
    def parse(cls, config: Any, key: str = "transforms") -> Transforms:
        """From the config's list (``None`` or ``[]`` is an error: the output needs a size)."""
        if isinstance(config, Transforms):
            return config
        if config is None or isinstance(config, (str, bytes)) or not isinstance(config, Sequence):
            raise bad_key(key, f"expected a list of steps ({', '.join(STEPS)}), e.g. "
                              "[{random_resized_crop: {size: 224}}, horizontal_flip] or "
                              f"transforms=train_224, got {config!r}")
        return cls([_parse_step(entry, f"{key}[{i}]") for i, entry in enumerate(config)], key)

    def plan(self, width: int, height: int, seed: int, epoch: int, index: int) -> Geometry:
        """Sample every step for one image of ``width`` x ``height`` pixels."""
        # Seeded at the first draw: seeding costs more than the rest of a plan, and a list
        # that draws nothing (resize, center_crop) needs none.
        rng: random.Random | None = None
        # The virtual image the steps see (vw x vh) is the box (bx0, by0)-(bx1, by1) of the source.
        vw, vh = width, height
        bx0, by0, bx1, by1 = 0.0, 0.0, float(width), float(height)
        flip = False
        sampled: list[tuple[str, Any]] = []
        for step in self.steps:
            if rng is None and step.name in ("horizontal_flip", "random_resized_crop"):
                rng = random.Random(f"{seed}:{epoch}:{index}")
            if step.name == "horizontal_flip":
                hit = rng.random() < step.p
                flip ^= hit
                sampled.append(("flip", hit))
                continue
            if step.name == "resize":
                vw, vh = resized(vw, vh, step.size)  # type: ignore[arg-type]
                sampled.append(("resize", (vw, vh)))
                continue
            if step.name == "center_crop":
                ch, cw = step.size  # type: ignore[misc]
                if cw > vw or ch > vh:
                    raise ValueError(f"the image is {vw}x{vh} at center_crop, smaller than the "
                                     f"crop's {cw}x{ch}; put a resize before center_crop")
                top, left = int(round((vh - ch) / 2.0)), int(round((vw - cw) / 2.0))
                crop = (left, top, cw, ch)
                out = (cw, ch)
            else:  # random_resized_crop
                left, top, cw, ch = random_resized_box(vw, vh, step.scale, step.ratio, rng)
                crop = (left, top, cw, ch)
                out = (step.size[1], step.size[0])  # type: ignore[index]
            sx, sy = (bx1 - bx0) / vw, (by1 - by0) / vh
            bx0, by0, bx1, by1 = (bx0 + crop[0] * sx, by0 + crop[1] * sy,
                                  bx0 + (crop[0] + crop[2]) * sx, by0 + (crop[1] + crop[3]) * sy)
            vw, vh = out
            sampled.append((step.name, (crop, out)))
        return Geometry((bx0, by0, bx1, by1), (vw, vh), flip, tuple(sampled), (width, height))

    def describe(self) -> str:
        return ", ".join(_describe(step) for step in self.steps)


class Draws(Protocol):
    """The random numbers RandomResizedCrop's rule draws, from whichever generator."""

    def uniform(self, low: float, high: float) -> float: ...

    def log_uniform(self, low: float, high: float) -> float:
        """exp(uniform(log(low), log(high)))."""
        ...

    def randint(self, low: int, high: int) -> int:
        """A whole number in low..high, both included."""
        ...


class RandomDraws:
    """Draws from a ``random.Random``: what inputkit's transforms use."""

    def __init__(self, rng: random.Random) -> None:
        self.uniform = rng.uniform
        self.randint = rng.randint

    def log_uniform(self, low: float, high: float) -> float:
        return math.exp(self.uniform(math.log(low), math.log(high)))


def random_resized_box(width: int, height: int, scale: tuple[float, float],
                       ratio: tuple[float, float], rng: random.Random | Draws,
                       ) -> tuple[int, int, int, int]:
    """torchvision's RandomResizedCrop.get_params: (left, top, width, height) of the crop.

    Ten tries of an area share from ``scale`` and a log-uniform aspect ratio from
    ``ratio``; when none fits, the whole image center-cropped to the nearest allowed ratio.
    ``rng``: a ``random.Random``, or any Draws (W5's DataLoader peer draws from torch).
    """
    draws = RandomDraws(rng) if isinstance(rng, random.Random) else rng
    area = width * height
    for _ in range(10):
        target_area = area * draws.uniform(scale[0], scale[1])
        aspect = draws.log_uniform(ratio[0], ratio[1])
        w = int(round(math.sqrt(target_area * aspect)))
        h = int(round(math.sqrt(target_area / aspect)))
        if 0 < w <= width and 0 < h <= height:
            top = draws.randint(0, height - h)
            left = draws.randint(0, width - w)
            return left, top, w, h
    in_ratio = width / height
    if in_ratio < min(ratio):
        w = width
        h = int(round(w / min(ratio)))
    elif in_ratio > max(ratio):
        h = height
        w = int(round(h * max(ratio)))
    else:
        w, h = width, height
    return (width - w) // 2, (height - h) // 2, w, h


def resized(width: int, height: int, size: tuple[int, int] | int) -> tuple[int, int]:
    """torchvision's Resize output size: ``size`` (h, w), or an int for the shorter side."""
    if isinstance(size, tuple):
        return size[1], size[0]
    short, long = (width, height) if width <= height else (height, width)
    new_short, new_long = size, int(size * long / short)
    return (new_short, new_long) if width <= height else (new_long, new_short)


# parsing -------------------------------------------------------------------------------------

def _parse_step(entry: Any, key: str) -> Step:
    if isinstance(entry, str):
        name, args = entry, {}
    elif isinstance(entry, Mapping) and len(entry) == 1:
        name, args = next(iter(entry.items()))
        if args is None:
            args = {}
        elif not isinstance(args, Mapping):
            args = {"size": args} if name != "horizontal_flip" else {"p": args}
    else:
        raise bad_key(key, f"expected one step as {{name: {{arguments}}}} or a bare name, got "
                          f"{entry!r}")
    if name not in STEPS:
        raise bad_key(key, f"unknown transform {name!r}; the transforms are {', '.join(STEPS)}")
    args = dict(args)
    allowed = {"random_resized_crop": {"size", "scale", "ratio"}, "resize": {"size"},
               "center_crop": {"size"}, "horizontal_flip": {"p"}}[name]
    unknown = sorted(set(args) - allowed)
    if unknown:
        raise bad_key(f"{key}.{name}.{unknown[0]}", f"{name} takes {', '.join(sorted(allowed))}")
    if name == "horizontal_flip":
        p = args.get("p", 0.5)
        if isinstance(p, bool) or not isinstance(p, (int, float)) or not 0 <= p <= 1:
            raise bad_key(f"{key}.{name}.p", f"expected a probability in [0, 1], got {p!r}")
        return Step(name, p=float(p))
    if "size" not in args:
        raise bad_key(f"{key}.{name}.size", f"{name} needs a size (pixels), e.g. "
                          f"{{{name}: {{size: 224}}}}")
    size = _size(args["size"], f"{key}.{name}.size", shorter_side=name == "resize")
    if name != "random_resized_crop":
        return Step(name, size=size)
    scale = _pair(args.get("scale", (0.08, 1.0)), f"{key}.{name}.scale")
    ratio = _pair(args.get("ratio", (3 / 4, 4 / 3)), f"{key}.{name}.ratio")
    if not 0 < scale[0] <= scale[1] <= 1:
        raise bad_key(f"{key}.{name}.scale", f"expected 0 < low <= high <= 1 (shares of the "
                          f"image's area), got {list(scale)}")
    if not 0 < ratio[0] <= ratio[1]:
        raise bad_key(f"{key}.{name}.ratio", f"expected 0 < low <= high (width / height), got "
                          f"{list(ratio)}")
    return Step(name, size=size, scale=scale, ratio=ratio)


def _size(value: Any, key: str, shorter_side: bool) -> tuple[int, int] | int:
    def positive(v: Any) -> bool:
        return isinstance(v, int) and not isinstance(v, bool) and v > 0

    if positive(value):
        return value if shorter_side else (value, value)
    if isinstance(value, Sequence) and not isinstance(value, str) and len(value) == 2 \
            and all(positive(v) for v in value):
        return (int(value[0]), int(value[1]))
    raise bad_key(key, f"expected a positive number of pixels or [height, width], got {value!r}")


def _pair(value: Any, key: str) -> tuple[float, float]:
    if isinstance(value, Sequence) and not isinstance(value, str) and len(value) == 2 and \
            all(isinstance(v, (int, float)) and not isinstance(v, bool) for v in value):
        return (float(value[0]), float(value[1]))
    raise bad_key(key, f"expected [low, high], got {value!r}")


def _fixed_size(steps: tuple[Step, ...], key: str) -> tuple[int, int]:
    """The (h, w) every image comes out at; an error when the list leaves it to the image."""
    size: tuple[int, int] | None = None
    for step in steps:
        if step.name == "horizontal_flip":
            continue
        if step.name == "resize" and isinstance(step.size, int):
            size = None  # the longer side follows the image's aspect ratio
        else:
            size = step.size  # type: ignore[assignment]
    if size is None:
        last = next((s for s in reversed(steps) if s.name == "resize"), None)
        why = (f"it ends with resize: {last.size} (the shorter side), which leaves the longer side "
               "to each image's aspect ratio; add center_crop after it") if last is not None else \
            "no step fixes the size"
        raise bad_key(key, f"the transforms must give every image the same size, for a batch: "
                          f"{why} (or use random_resized_crop, or resize: [height, width])")
    return size


def _describe(step: Step) -> str:
    if step.name == "horizontal_flip":
        return f"horizontal_flip(p={step.p:g})"
    if step.name == "random_resized_crop":
        return (f"random_resized_crop({_size_text(step.size)}, scale={list(step.scale)}, "
                f"ratio=[{step.ratio[0]:.4g}, {step.ratio[1]:.4g}])")
    return f"{step.name}({_size_text(step.size)})"


def _size_text(size: Any) -> str:
    if isinstance(size, tuple):
        return str(size[0]) if size[0] == size[1] else f"{size[0]}x{size[1]}"
    return str(size)

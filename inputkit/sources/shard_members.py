"""The members of a WebDataset shard: what their names mean and how each is decoded.

Its own module because the member format is the one thing the stream and the source both
read: ``<key>.<field>.<ext>`` splits into a sample key, a field and an extension
(:func:`split_name`), and the extension says how the bytes become an array
(:func:`decode_member`: ``.npy`` without pickles, images through Pillow, whole numbers).
``NAME`` is the source every error names.
"""

from __future__ import annotations

import io
import json
from dataclasses import dataclass

import numpy as np

from inputkit.errors import SourceError
from inputkit.sources.npy_bytes import load_npy_bytes

NAME = "inputkit.sources.shards.ShardSource"
IMAGE_EXTS = frozenset({"png", "jpg", "jpeg"})
INT_EXTS = frozenset({"txt", "cls", "json"})
SUPPORTED = ".npy, .png, .jpg, .jpeg, .txt, .cls, .json"


@dataclass(frozen=True)
class Member:
    """One member read from a shard: its sample key, field, extension, name and bytes."""

    key: str
    field: str
    ext: str
    name: str
    data: bytes


def decode_member(path: str, m: Member) -> np.ndarray:
    """Member ``m`` of shard ``path`` as an array; a SourceError names the member and why."""
    where = f"shard '{path}', member '{m.name}'"
    if m.ext == "npy":
        try:
            return load_npy_bytes(m.data)
        except Exception as exc:
            raise SourceError(NAME, f"{where}: cannot read it as a .npy array: "
                              f"{type(exc).__name__}: {exc}", m.field) from exc
    if m.ext in INT_EXTS:
        text = m.data.decode("utf-8", errors="replace").strip()
        try:
            value = json.loads(text) if m.ext == "json" else int(text)
        except ValueError:
            value = None
        if not isinstance(value, int) or isinstance(value, bool):
            shown = text if len(text) <= 40 else text[:37] + "..."
            raise SourceError(NAME, f"{where}: expected a whole number (e.g. a class label), got "
                              f"{shown!r}", m.field)
        return np.asarray(value, dtype=np.int64)
    if m.ext in IMAGE_EXTS:
        return _decode_image(where, m)
    raise SourceError(NAME, f"{where}: unsupported extension '.{m.ext}'; supported: {SUPPORTED} "
                      "(list the fields to read in source.fields to leave it out)", m.field)


def _decode_image(where: str, m: Member) -> np.ndarray:
    try:
        from PIL import Image
    except ImportError:
        raise SourceError(NAME, f"{where}: decoding .{m.ext} images needs Pillow, which is not "
                          "installed: pip install pillow (or set source.decode_images=false to "
                          "leave image members out)", m.field) from None
    try:
        with Image.open(io.BytesIO(m.data)) as img:
            mode = img.mode
            if mode == "1":
                img = img.convert("L")
            elif mode in ("P", "PA"):
                img = img.convert("RGBA" if mode == "PA" or "transparency" in img.info else "RGB")
            elif mode in ("CMYK", "YCbCr", "LAB", "HSV"):
                img = img.convert("RGB")
            elif mode not in ("L", "LA", "RGB", "RGBA"):
                raise SourceError(NAME, f"{where}: image mode {mode} (16-bit or float pixels) is "
                                  "not supported; store such images as .npy", m.field)
            array = np.asarray(img, dtype=np.uint8)
    except SourceError:
        raise
    except Exception as exc:
        raise SourceError(NAME, f"{where}: cannot decode the image: {type(exc).__name__}: {exc}",
                          m.field) from exc
    return array[:, :, None] if array.ndim == 2 else array


def split_name(name: str) -> tuple[str, str, str] | None:
    """``dir/000017.image.png`` -> (``dir/000017``, ``image``, ``png``); ``000017.cls`` ->
    (``000017``, ``cls``, ``cls``); None for a member with no extension or a hidden one."""
    folder, _, base = name.rpartition("/")
    if base.startswith(".") or "." not in base:
        return None
    stem, _, suffix = base.partition(".")
    key = f"{folder}/{stem}" if folder else stem
    field, _, ext = suffix.rpartition(".")
    return key, field or suffix, ext.lower()

"""What every encoded-image source shares: labels, the decoder, the transforms and ``read``.

Its own module because three sources build on it and live apart: the folder and list
sources (``images.py``) and the tar-shard source (``image_shards.py``). A subclass says,
for sample ``i``, where its encoded bytes are (``encoded``, ``where``, ``origin``) and
sets the labels; ``read`` / ``read_into`` decode and transform every image straight into
one ``image`` array beside ``label``, and the index is mapped from one file and pickled
as its path, so worker processes share what the parent built.
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from collections.abc import Callable, Mapping
from typing import Any

import numpy as np

from inputkit.errors import SourceError
from inputkit.images.decode import Decoder, ImageError
from inputkit.images.transforms import Transforms, bad_key
from inputkit.sources.index_cache import IndexOrigin
from inputkit.sources.index_file import IndexFile, Names

# torchvision's IMG_EXTENSIONS, and .webp.
EXTENSIONS = (".jpg", ".jpeg", ".png", ".ppm", ".bmp", ".pgm", ".tif", ".tiff", ".webp")
Allocator = Callable[[str, tuple[int, ...], np.dtype], np.ndarray]


class EncodedImageSource(ABC):
    """What the image sources share: labels, the decoder, the transforms and ``read``.

    A subclass sets ``self.labels`` (int64, one per sample) and implements
    ``encoded(i)`` (the file's bytes) and ``where(i)`` (the file, for errors).
    """

    NAME = "inputkit.sources.images"
    # Worker processes take a pickled copy of the source built in the parent (the index is
    # built once per run); what is per process (open shard files) is left out by pickling.
    ship_built = True

    def __init__(self, transforms: Any, decode: Mapping[str, Any] | None, seed: int,
                 id_field: str | None = None) -> None:
        if id_field is not None and (not isinstance(id_field, str) or not id_field
                                     or id_field in ("image", "label")):
            raise bad_key("id_field", f"expected the name of an extra int64 field holding each "
                          f"sample's index (e.g. id), other than image and label; got {id_field!r}")
        self.id_field = id_field
        self.transforms = Transforms.parse(transforms)
        decode = dict(decode or {})
        unknown = sorted(set(decode) - {"backend", "exact", "max_pixels"})
        if unknown:
            raise bad_key(f"decode.{unknown[0]}", "decode takes backend (auto|pillow|opencv), "
                          "exact (true|false) and max_pixels")
        self.decoder = Decoder(**decode)
        if isinstance(seed, bool) or not isinstance(seed, int):
            raise bad_key("seed", f"expected a whole number, got {seed!r}")
        self.seed = seed
        self.labels = np.zeros(0, dtype=np.int64)
        self.out_shape = (3, *self.transforms.out_size)  # C, H, W
        self.largest = (0, 0)  # the largest encoded file (bytes) and image (pixels) read so far

    # the index: mapped from one file, pickled as its path ---------------------------------------

    index: IndexFile | None = None
    index_origin: IndexOrigin | None = None
    remote = False  # some samples live at URLs (s3://, gs://, az://, http(s)://)
    # Views of self.index: left out when pickled (a worker maps the same file instead).
    INDEX_VIEWS = ("files", "labels", "lines", "shard_of", "offsets", "sizes", "names")

    def _attach(self) -> None:
        """Set the views of ``self.index`` a subclass reads (names and labels here)."""
        if self.index is None:
            return
        if "names" in self.index:
            self.files = Names(self.index["names"], self.index["name_offsets"])
        self.labels = self.index["labels"]

    def __getstate__(self) -> dict[str, Any]:
        state = self.__dict__.copy()
        for name in self.INDEX_VIEWS:
            state.pop(name, None)
        return state

    def __setstate__(self, state: dict[str, Any]) -> None:
        self.__dict__.update(state)
        if self.index is not None:
            self._attach()

    # the indexable protocol ------------------------------------------------------------------

    def __len__(self) -> int:
        return len(self.labels)

    def read(self, indices: np.ndarray, epoch: int = 0) -> dict[str, np.ndarray]:
        """Images ``indices`` of ``epoch``, decoded and transformed, with their labels."""
        return self.read_into(indices, _fresh, epoch)

    def read_into(self, indices: np.ndarray, allocate: Allocator,
                  epoch: int = 0) -> dict[str, np.ndarray]:
        """``read``, with the output arrays from ``allocate(name, shape, dtype)`` (a process
        worker's shared-memory slot): each image is written once, where the batch reads it."""
        indices = np.asarray(indices, dtype=np.int64).reshape(-1)
        n = len(indices)
        if n and (indices.min() < 0 or indices.max() >= len(self.labels)):
            raise IndexError(f"read: indices must lie in 0..{len(self.labels) - 1}, got "
                             f"{int(indices.min())}..{int(indices.max())}")
        images = allocate("image", (n, *self.out_shape), np.dtype(np.uint8))
        labels = allocate("label", (n,), np.dtype(np.int64))
        labels[:] = self.labels[indices]
        chunk = {"image": images, "label": labels}
        if self.id_field is not None:  # which sample each row is: describe(i) names its file
            chunk[self.id_field] = allocate(self.id_field, (n,), np.dtype(np.int64))
            chunk[self.id_field][:] = indices
        decode, transforms, seed = self.decoder.decode_into, self.transforms, self.seed
        wanted = indices.tolist()
        # Objects in a store: the chunk's objects fetched together, many requests in flight.
        fetched = self._fetch_remote(wanted) if self.remote else [None] * n
        for k, index in enumerate(wanted):
            try:
                data = fetched[k]
                if data is None:
                    data = self.encoded(index)
                elif isinstance(data, Exception):
                    raise OSError(str(data)) from data
            except OSError as exc:
                raise SourceError(self.NAME, f"{self.where(index)}: cannot read it: "
                                  f"{type(exc).__name__}: {exc}", field="image") from exc
            try:
                geometry = decode(data, images[k], transforms, seed, epoch, index)
            except (ImageError, ValueError) as exc:
                raise SourceError(self.NAME, f"{self.where(index)}: {exc}", field="image") from exc
            pixels = geometry.size[0] * geometry.size[1]
            if len(data) > self.largest[0] or pixels > self.largest[1]:
                self.largest = (max(len(data), self.largest[0]), max(pixels, self.largest[1]))
        return chunk

    def _fetch_remote(self, indices: list[int]) -> list[bytes | Exception | None]:
        """The encoded bytes of the samples at URLs (None for local files, read one by one)."""
        from inputkit.sources.image_remote import fetch_many
        from inputkit.storage import is_remote

        where = [self.path_of(i) for i in indices]
        remote = [k for k, path in enumerate(where) if is_remote(path)]
        found: list[bytes | Exception | None] = [None] * len(indices)
        for k, data in zip(remote, fetch_many([where[k] for k in remote]), strict=True):
            found[k] = data
        return found

    def path_of(self, index: int) -> str:
        """The file or URL of sample ``index`` (folder and list sources)."""
        raise NotImplementedError(f"{type(self).__name__} has no file per sample")

    def describe(self, index: int) -> dict[str, Any]:
        """Where sample ``index`` comes from: its label and file (a folder or list), or its
        shard and member: for per-image eval output, or to find a sample an error named."""
        index = self._checked(index)
        return {"index": index, "label": int(self.labels[index]), **self.origin(index)}

    def _checked(self, index: int) -> int:
        if isinstance(index, bool) or not isinstance(index, (int, np.integer)):
            raise TypeError(f"a sample index is a whole number, got {index!r}")
        if not 0 <= index < len(self.labels):
            raise IndexError(f"sample index {index} is out of range: this source has "
                             f"{len(self.labels):,} samples (0..{len(self.labels) - 1})")
        return int(index)

    def read_scratch(self) -> tuple[int, str]:
        """For the memory plan: what one worker holds while it decodes (after a read): the
        largest file and full-size image seen, or the declared decode.max_pixels."""
        encoded, pixels = self.largest
        declared = self.decoder.max_pixels
        if declared is not None:
            pixels = declared
        per_pixel = self.decoder.bytes_per_pixel
        where = "decode.max_pixels" if declared is not None else "the largest the probe read"
        return (encoded + pixels * per_pixel,
                f"{encoded:,} B file + {pixels:,} pixels x {per_pixel} B decoded ({where})")

    def run_info(self) -> dict[str, Any]:
        """What the run's summary.json records about this source."""
        info = {"samples": len(self), "decoder": self.decoder.name,
                "transforms": self.transforms.describe(), "output": list(self.out_shape)}
        if self.index is not None and self.index_origin is not None:
            info["index"] = self.index_origin.info(self.index, len(self))
        return info

    # what a subclass provides ----------------------------------------------------------------

    @abstractmethod
    def encoded(self, index: int) -> bytes:
        """The encoded bytes of sample ``index`` (OSError when they cannot be read)."""

    @abstractmethod
    def where(self, index: int) -> str:
        """Where sample ``index`` lives, for errors: ``file '...'`` or shard and member."""

    @abstractmethod
    def origin(self, index: int) -> dict[str, Any]:
        """Where sample ``index`` lives, as ``describe`` gives it (``file``, or ``shard`` and
        ``member``)."""


def _fresh(name: str, shape: tuple[int, ...], dtype: np.dtype) -> np.ndarray:
    return np.empty(shape, dtype)

"""Encoded images read by index: an ImageFolder tree or a file list (tar shards: image_shards.py).

Each source knows, for sample ``i``, where its encoded bytes are and its label;
``read(indices, epoch)`` decodes and transforms every image straight into one
``image`` array (``n x 3 x H x W`` uint8, the size the transforms fix) beside a
``label`` array (int64). They are *indexable* (``len()`` and ``read``), so
shuffling, exactly-once epochs, resume and ``epoch.*`` come from the pipeline.
Augmentations are drawn from ``(seed, epoch, index)`` (inputkit.images.transforms).

An image that cannot be read or decoded raises a SourceError naming its file (and
shard member) and what is wrong; under ``failures.on_error=skip`` the pipeline
skips that sample alone (docs/images.md).
"""

from __future__ import annotations

import os
from abc import ABC, abstractmethod
from collections.abc import Callable, Mapping, Sequence
from typing import Any

import numpy as np

from inputkit.errors import SourceError, shown_name
from inputkit.images.decode import Decoder, ImageError
from inputkit.images.transforms import Transforms, bad_key
from inputkit.sources.image_index import _parse_list, folder_index, list_index
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


class ImageFolderSource(EncodedImageSource):
    """Images in the ImageFolder layout: ``path/<class>/**/<file>``, classes sorted by name.

    Class ``k`` is the k-th class folder by name (``classes``, ``class_to_index``), as
    torchvision's ImageFolder numbers them. Files are found recursively inside each
    class folder, in sorted order; ``extensions`` (case-insensitive) are the files
    that count as images. A class folder without images is an error unless
    ``allow_empty_classes`` (its index is kept, so labels do not shift).
    """

    NAME = "inputkit.sources.images.ImageFolderSource"

    def __init__(self, path: str, transforms: Any, decode: Mapping[str, Any] | None = None,
                 seed: int = 0, extensions: Sequence[str] | None = None,
                 allow_empty_classes: bool = False, id_field: str | None = None,
                 trust_cached_listing: bool = False) -> None:
        super().__init__(transforms, decode, seed, id_field)
        if not isinstance(path, (str, os.PathLike)) or not str(path):
            raise bad_key("path", f"expected the folder that holds one folder per "
                              f"class, got {path!r}")
        self.path = os.fspath(path)
        self.extensions = _extensions(extensions)
        if _is_remote(self.path):  # a prefix of objects: listed once, class = first component
            from inputkit.sources.image_remote import remote_folder_index

            self.remote = True
            self.path = self.path.rstrip("/")
            self.index, self.index_origin = remote_folder_index(self.path, self.extensions,
                                                                bool(trust_cached_listing))
        elif not os.path.isdir(self.path):
            if os.path.isfile(self.path):
                raise bad_key("path", f"'{self.path}' is a file, not a folder (for a list of "
                              "files, use source=image_list)")
            raise bad_key("path", f"no such folder: '{self.path}'{_resolved(self.path)}")
        else:
            self.index, self.index_origin = folder_index(self.path, self.extensions)
        self._attach()
        empty = self.empty_classes
        if empty and not allow_empty_classes:
            listed = ", ".join(shown_name(e) for e in empty[:5]) + (", ..." if len(empty) > 5 else "")
            raise bad_key("path", f"{len(empty)} class folder(s) of '{self.path}' hold "
                              f"no images: {listed}; remove them, or set "
                              "allow_empty_classes=true to keep their class indices")

    def _attach(self) -> None:
        # Names are one blob of the file system's own bytes (os.fsencode: a name that is not
        # UTF-8, b"caf\xe9.jpg", is kept as it is on disk) and offsets, mapped from the index file.
        super()._attach()
        self.classes = list(self.index.meta["classes"])
        self.class_to_index = {name: i for i, name in enumerate(self.classes)}
        self.empty_classes = list(self.index.meta["empty_classes"])

    def path_of(self, index: int) -> str:
        """The file of sample ``index``, as ``open()`` takes it (os.fsdecode: a name that is not
        UTF-8 keeps its bytes as surrogate escapes; ``os.fsencode`` gives the bytes back); the
        object's URL when the folder is in a store."""
        return _joined(self.path, self.files[self._checked(index)])

    def encoded(self, index: int) -> bytes:
        return _read(self.path_of(index))

    def where(self, index: int) -> str:
        return f"file '{shown_name(self.path_of(index))}'"

    def origin(self, index: int) -> dict[str, Any]:
        return {"file": self.path_of(index), "class": self.classes[int(self.labels[index])]}

    def run_info(self) -> dict[str, Any]:
        return {**super().run_info(), "path": self.path, "class_to_index": self.class_to_index,
                "empty_classes": self.empty_classes}

    def __repr__(self) -> str:
        return (f"ImageFolderSource(path={self.path!r}, {len(self):,} images, "
                f"{len(self.classes)} classes)")


class ImageListSource(EncodedImageSource):
    """Images named in a list file: one ``path,label`` (or ``path label``) per line.

    Relative paths are taken from ``root`` (default: the list file's folder). Blank
    lines and lines starting with ``#`` are ignored, and so is a first line
    ``path,label``. Labels are whole numbers.
    """

    NAME = "inputkit.sources.images.ImageListSource"

    def __init__(self, path: str, transforms: Any, root: str | None = None,
                 decode: Mapping[str, Any] | None = None, seed: int = 0,
                 id_field: str | None = None) -> None:
        super().__init__(transforms, decode, seed, id_field)
        if isinstance(path, str) and _is_remote(path):  # a list file in a store
            from inputkit.sources.image_remote import remote_list_index

            self.path = path
            self.root = root if root is not None else path.rsplit("/", 1)[0]
            self.index, self.index_origin = remote_list_index(path, self.root, _parse_list)
        else:
            if not isinstance(path, (str, os.PathLike)) or not os.path.isfile(path):
                what = "a folder (for the ImageFolder layout, use source=image_folder)" \
                    if isinstance(path, str) and os.path.isdir(path) else "no such file"
                raise bad_key("path", f"expected a list file of path,label lines, got "
                              f"{path!r}: {what}")
            self.path = os.fspath(path)
            self.root = os.fspath(root) if root is not None else \
                os.path.dirname(os.path.abspath(path))
            if not _is_remote(self.root) and not os.path.isdir(self.root):
                raise bad_key("root", f"no such folder: '{self.root}'")
            self.index, self.index_origin = list_index(self.path, self.root, _parse_list)
        self._attach()
        self.remote = _is_remote(self.root)  # or a line names a URL (seen below, or on read)
        first = self.path_of(0)
        if _is_remote(first):
            self.remote = True
        elif not os.path.exists(first):
            raise bad_key("root", f"the list's first image, '{shown_name(first)}' (line "
                              f"{self.lines[0]} of '{self.path}'), does not exist; relative paths "
                              f"are taken from source.root ('{self.root}')")

    def _attach(self) -> None:
        super()._attach()
        self.lines = self.index["lines"]

    def path_of(self, index: int) -> str:
        """The file (or URL) of sample ``index`` (see ImageFolderSource.path_of)."""
        return _joined(self.root, self.files[self._checked(index)])

    def encoded(self, index: int) -> bytes:
        return _read(self.path_of(index))

    def where(self, index: int) -> str:
        return f"file '{shown_name(self.path_of(index))}' (line {self.lines[index]} of '{self.path}')"

    def origin(self, index: int) -> dict[str, Any]:
        return {"file": self.path_of(index), "line": int(self.lines[index])}

    def run_info(self) -> dict[str, Any]:
        return {**super().run_info(), "path": self.path, "root": self.root,
                "classes": int(self.labels.max()) + 1 if len(self.labels) else 0}


# helpers -------------------------------------------------------------------------------------

def _extensions(extensions: Sequence[str] | None) -> tuple[str, ...]:
    if extensions is None:
        return EXTENSIONS
    if isinstance(extensions, str) or not isinstance(extensions, Sequence) or not extensions or \
            not all(isinstance(e, str) and e.strip(".") for e in extensions):
        raise bad_key("extensions", f"expected a list like [jpg, png], got "
                          f"{extensions!r}")
    return tuple("." + e.lower().lstrip(".") for e in extensions)


def _is_remote(path: str) -> bool:
    from inputkit.storage import is_remote

    return is_remote(path)


def _joined(base: str, name: bytes) -> str:
    """``name`` (index bytes) under ``base``; a name that is itself a URL or absolute stays."""
    text = os.fsdecode(name)
    if _is_remote(text):
        return text
    if not _is_remote(base):
        return os.path.join(base, text)
    return base.rstrip("/") + "/" + text


def _read(path: str) -> bytes:
    """A file's or an object's bytes (OSError when they cannot be read: the sample's error)."""
    if _is_remote(path):
        from inputkit.sources.image_remote import fetch_many

        data = fetch_many([path])[0]
        if isinstance(data, Exception):
            raise OSError(str(data)) from data
        return data
    with open(path, "rb") as f:
        return f.read()


def _resolved(path: str) -> str:
    return "" if os.path.isabs(path) else f" (resolved to '{os.path.abspath(path)}')"


def __getattr__(name: str) -> Any:
    """``inputkit.sources.images.ImageShardSource`` (configs and code from before the split)
    is the class in inputkit.sources.image_shards, imported when asked for."""
    if name == "ImageShardSource":
        from inputkit.sources.image_shards import ImageShardSource

        return ImageShardSource
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")

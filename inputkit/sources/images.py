"""Encoded images read by index: an ImageFolder tree or a file list (tar shards: image_shards.py;
what they all share, the decoding ``read``: encoded_images.py).

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
from collections.abc import Mapping, Sequence
from typing import Any

from inputkit.errors import shown_name
from inputkit.images.transforms import bad_key
from inputkit.sources.encoded_images import EXTENSIONS, EncodedImageSource
from inputkit.sources.image_index import _parse_list, folder_index, list_index

# The tar-shard source's name from before it had its own module (image_shards.py); it
# builds on encoded_images.py, not on this module, so the import runs one way.
from inputkit.sources.image_shards import ImageShardSource

__all__ = ["EXTENSIONS", "EncodedImageSource", "ImageFolderSource", "ImageListSource",
           "ImageShardSource"]


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

"""The indexes of image_folder and image_list: built once (or taken from the index cache).

Why a module of its own: the sources (images.py) read samples; this finds them. A folder is
walked with ``os.scandir`` (each directory stat'ed *before* it is listed, so a file added
while it is walked invalidates the cached index next time), and the result is compact
arrays for :class:`inputkit.sources.index_file.IndexFile`: names as one blob and offsets,
labels in the narrowest integer type. The cache key of a folder is each walked directory's
``(mtime_ns, inode)``: validating it is one ``stat`` per directory (about 1,000 at ImageNet).
"""

from __future__ import annotations

import os
from collections.abc import Callable, Sequence
from typing import Any

import numpy as np

from inputkit.errors import shown_name
from inputkit.images.transforms import bad_key
from inputkit.sources.index_cache import IndexOrigin, load_or_build, stats_changed
from inputkit.sources.index_file import IndexFile, Names, narrow, pack_names
from inputkit.startup import progress


def folder_index(path: str, extensions: tuple[str, ...]) -> tuple[IndexFile, IndexOrigin]:
    """The index of the ImageFolder tree at ``path`` (arrays ``names``/``name_offsets`` of
    ``class/sub/file`` bytes, ``labels``; meta ``classes``, ``empty_classes``)."""
    root = os.path.abspath(path)
    identity = {"kind": "image_folder", "path": root, "extensions": list(extensions)}

    def still_valid(index: IndexFile) -> str | None:
        dirs = Names(index["dir_names"], index["dir_offsets"])
        paths = [os.fsdecode(p) for p in dirs.tolist()]
        return stats_changed(paths, None, index["dir_mtimes"], index["dir_inodes"], "folder")

    def build() -> tuple[dict[str, np.ndarray], dict[str, Any]]:
        return _walk_folder(path, extensions)

    return load_or_build(identity, still_valid, build, f"source.path {path}", "files")


def _walk_folder(path: str, extensions: tuple[str, ...]) -> tuple[dict[str, np.ndarray],
                                                                  dict[str, Any]]:
    dirs: list[tuple[bytes, int, int]] = []
    top = os.stat(path)
    dirs.append((os.fsencode(os.path.abspath(path)), top.st_mtime_ns, top.st_ino))
    classes = sorted(entry.name for entry in os.scandir(path)
                     if _is_dir(entry) and not entry.name.startswith("."))
    if not classes:
        raise bad_key("path", f"'{path}' holds no class folders; the layout "
                      "is path/<class>/<file> (one folder per class)")
    files: list[bytes] = []
    counts: list[int] = []
    empty: list[str] = []
    for name in classes:
        before = len(files)
        _walk(os.path.join(path, name), os.fsencode(name), extensions, files, dirs,
              lambda: progress(len(files), "files", f"indexing source.path {path}"))
        counts.append(len(files) - before)
        if len(files) == before:
            empty.append(name)
    progress(len(files), "files", f"indexing source.path {path}")
    if not files:
        raise bad_key("path", f"'{path}' has {len(classes)} class folder(s) but no images in "
                      f"them (extensions {', '.join(extensions)})")
    labels = np.repeat(np.arange(len(classes), dtype=np.int64), counts)
    blob, offsets = pack_names(files)
    dir_blob, dir_offsets = pack_names([d for d, _, _ in dirs])
    arrays = {"names": blob, "name_offsets": offsets, "labels": narrow(labels),
              "dir_names": dir_blob, "dir_offsets": dir_offsets,
              "dir_mtimes": np.array([m for _, m, _ in dirs], dtype=np.int64),
              "dir_inodes": np.array([i for _, _, i in dirs], dtype=np.uint64)}
    return arrays, {"samples": len(files), "classes": classes, "empty_classes": empty,
                    "folders": len(dirs)}


def _walk(folder: str, rel: bytes, extensions: tuple[str, ...], found: list[bytes],
          dirs: list[tuple[bytes, int, int]], tick: Callable[[], None]) -> None:
    """Image files under ``folder`` (as ``rel/...`` bytes), in os.walk's top-down order with
    sorted names and hidden ones left out, each directory's stat recorded before listing."""
    try:
        st = os.stat(folder)
        with os.scandir(folder) as entries:
            listed = [(entry.name, _is_dir(entry)) for entry in entries]
    except OSError as exc:
        raise bad_key("path", f"cannot list folder '{shown_name(folder)}': "
                      f"{exc.strerror or exc}; fix its permissions or remove it") from None
    dirs.append((os.fsencode(os.path.abspath(folder)), st.st_mtime_ns, st.st_ino))
    tick()
    for name in sorted(n for n, is_dir in listed if not is_dir):
        if not name.startswith(".") and name.lower().endswith(extensions):
            found.append(rel + b"/" + os.fsencode(name))
    for name in sorted(n for n, is_dir in listed if is_dir and not n.startswith(".")):
        _walk(os.path.join(folder, name), rel + b"/" + os.fsencode(name), extensions, found,
              dirs, tick)


def _is_dir(entry: os.DirEntry) -> bool:
    try:
        return entry.is_dir()  # follows symbolic links, as os.walk(followlinks=True) did
    except OSError:
        return False


def list_index(path: str, root: str, parse: Callable[[str], tuple[list[tuple[int, str]], list[int]]]
               ) -> tuple[IndexFile, IndexOrigin]:
    """The index of a list file (arrays ``names``/``name_offsets``, ``labels``, ``lines``),
    keyed by the file's path, size, mtime_ns, ctime_ns and inode and the root."""
    resolved = os.path.abspath(path)
    identity = {"kind": "image_list", "path": resolved, "root": os.path.abspath(root)}

    def still_valid(index: IndexFile) -> str | None:
        if "list_ctime" not in index:
            return "built before lists were keyed by inode and ctime"
        return stats_changed([resolved], index["list_size"], index["list_mtime"],
                             index["list_inode"], "list", index["list_ctime"])

    def build() -> tuple[dict[str, np.ndarray], dict[str, Any]]:
        st = os.stat(resolved)
        files, labels = parse(path)
        if not files:
            raise bad_key("path", f"the list '{path}' names no images")
        blob, offsets = pack_names([os.fsencode(f) for _, f in files])
        arrays = {"names": blob, "name_offsets": offsets, "labels": narrow(labels),
                  "lines": narrow([line for line, _ in files]),
                  "list_size": np.array([st.st_size], dtype=np.int64),
                  "list_mtime": np.array([st.st_mtime_ns], dtype=np.int64),
                  "list_ctime": np.array([st.st_ctime_ns], dtype=np.int64),
                  "list_inode": np.array([st.st_ino], dtype=np.uint64)}
        return arrays, {"samples": len(files)}

    return load_or_build(identity, still_valid, build, f"source.path {path}", "lines")


def _parse_list(path: str, lines: Sequence[str] | None = None
                ) -> tuple[list[tuple[int, str]], list[int]]:
    """The list file's (line number, name) and labels; ``lines``: its text, when it is not a
    local file (a list in a store)."""
    if lines is None:
        # A name that is not UTF-8 (a list written on another system) keeps its bytes, which
        # name the file on disk as they do in a folder's index.
        with open(path, encoding="utf-8", errors="surrogateescape") as f:
            return _parse_lines(path, f)
    return _parse_lines(path, lines)


def _parse_lines(path: str, lines: Any) -> tuple[list[tuple[int, str]], list[int]]:
    files: list[tuple[int, str]] = []
    labels: list[int] = []
    for number, raw in enumerate(lines, start=1):
        line = raw.strip()
        if not line or line.startswith("#"):
            continue
        parts = line.rsplit(",", 1) if "," in line else line.rsplit(None, 1)
        if len(parts) != 2:
            raise bad_key("path", f"line {number} of '{path}': expected "
                              f"'path,label', got {line!r}")
        name, label = parts[0].strip(), parts[1].strip()
        try:
            value = int(label)
        except ValueError:
            if not files and label.lower() == "label":
                continue  # a header line
            raise bad_key("path", f"line {number} of '{path}': the label "
                              f"{label!r} is not a whole number") from None
        if value < 0:
            raise bad_key("path", f"line {number} of '{path}': the label {value} "
                              "is negative")
        files.append((number, name))
        labels.append(value)
    return files, labels

"""The disk cache's folder, file by file: the record beside each object, reservations,
temporary downloads, and what the folder holds or has promised.

Apart from ``cache.py`` (which decides: reserve, evict, land, wait) because these are facts
about names on disk that every process reads the same way: ``<key>`` is the object,
``<key>.meta`` its record (URL, size, etag), ``<key>.part`` a download's reservation (its
full size, written before a byte is), ``<key>.dl*`` the download itself.
"""

from __future__ import annotations

import contextlib
import json
import os

from inputkit.storage.errors import StorageError

# What a .meta file may take: reserved with the object so the total stays under the budget.
META_BYTES = 4096


def folder_usage(folder: str) -> int:
    """Bytes ``folder`` holds or has promised (see ``DiskCache.usage`` for when it is exact):
    each object being fetched counts once, at the most of its reservation and what it holds."""
    sizes: dict[str, int] = {}
    with contextlib.suppress(FileNotFoundError):
        for entry in os.scandir(folder):
            with contextlib.suppress(FileNotFoundError):
                sizes[entry.name] = entry.stat(follow_symlinks=False).st_size
    fetching = {name[:-5] for name in sizes if name.endswith(".part")}
    total = 0
    for name, size in sizes.items():
        if not any(name == key or name.startswith(key + ".") for key in fetching):
            total += size
    for key in fetching:
        written = extras = 0
        for name, size in sizes.items():
            if name.startswith(key + ".dl"):
                written += size
            elif name.startswith(key + "."):  # its record, the record's .tmp, .part
                extras += size
        data = max(written, sizes.get(key, 0)) + extras
        total += max(data, reserved(os.path.join(folder, key + ".part")))
    return total


def read_meta(path: str) -> dict | None:
    """The record at ``path``; None when it is missing or unreadable (a half-written one)."""
    try:
        with open(path, encoding="utf-8") as f:
            meta = json.load(f)
    except (FileNotFoundError, ValueError):
        return None
    return meta if isinstance(meta, dict) else None


def write_meta(path: str, url: str, size: int, etag: str | None) -> None:
    """Write the record whole (a temporary file, then a rename); a URL too long for the
    ``META_BYTES`` reserved beside the object is a StorageError naming it."""
    text = json.dumps({"url": url, "size": size, "etag": etag})
    if len(text.encode()) > META_BYTES - 64:
        raise StorageError(url, "other", f"the URL is {len(url):,} characters long; the disk "
                           f"cache records at most {META_BYTES - 64:,} bytes beside an object")
    tmp = path + ".tmp"
    with open(tmp, "w", encoding="utf-8") as f:
        f.write(text)
    os.replace(tmp, path)


def reserved(part: str) -> int:
    """The bytes a reservation record promises (0 when it is gone or half-written)."""
    try:
        with open(part) as f:
            return int(f.read() or 0)
    except (FileNotFoundError, ValueError):
        return 0


def remove_download(path: str) -> None:
    """Remove every temporary file of the object at ``path``, then its reservation: the
    reservation goes last, so a scan never sees download bytes that nothing reserves."""
    folder, key = os.path.split(path)
    with contextlib.suppress(FileNotFoundError):
        for name in os.listdir(folder):
            if name.startswith(key + ".dl"):
                with contextlib.suppress(FileNotFoundError):
                    os.unlink(os.path.join(folder, name))
    with contextlib.suppress(FileNotFoundError):
        os.unlink(path + ".part")


def size_of(path: str) -> int:
    """The file's size; 0 when it is gone."""
    try:
        return os.stat(path).st_size
    except FileNotFoundError:
        return 0


def mtime(path: str) -> float:
    """The file's modification time (its last use: see :func:`touch`); 0 when it is gone."""
    try:
        return os.stat(path).st_mtime
    except FileNotFoundError:
        return 0.0


def touch(path: str) -> None:
    """Mark a cached object as used now (least-recently-used eviction reads it)."""
    with contextlib.suppress(FileNotFoundError):
        os.utime(path)

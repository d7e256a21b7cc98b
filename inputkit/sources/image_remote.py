"""image_folder and image_list over object-store URLs (s3://, gs://, az://, http(s)://).

A folder in a store is a prefix: listing it once gives every object (about 1,300 LIST
requests at ImageNet's 1.28M objects), and the class of an object is the first path
component below the prefix. The same sorted order and extension rules as a local folder
apply (files of a "directory" before its sub-directories, hidden names left out), so a
folder and its upload give the same labels in the same order. The index is cached like a
local folder's; it is re-validated against a fresh listing (keys, sizes, etags) on every
start unless ``trust_cached_listing`` says the store's contents do not change.

Reading many small objects: a chunk's objects are fetched together with
``Store.read_many`` (``storage.concurrency`` requests in flight), then decoded.
"""

from __future__ import annotations

import hashlib
from collections.abc import Sequence
from typing import Any
from urllib.parse import urlsplit

import numpy as np

from inputkit.images.transforms import bad_key
from inputkit.sources.index_cache import IndexOrigin, load_or_build
from inputkit.sources.index_file import IndexFile, narrow, pack_names


def remote_folder_index(url: str, extensions: tuple[str, ...],
                        trust_cached_listing: bool) -> tuple[IndexFile, IndexOrigin]:
    """The index of the ImageFolder layout under the prefix ``url`` (names relative to it)."""
    from inputkit import storage

    prefix = url.rstrip("/") + "/"
    store = storage.open_store(prefix)
    identity = {"kind": "image_folder", "path": prefix, "extensions": list(extensions)}
    listed: list[Any] = []

    def listing() -> list[Any]:
        if not listed:
            listed.append(store.list(prefix))
        return listed[0]

    def still_valid(index: IndexFile) -> str | None:
        if trust_cached_listing:
            return None
        if _digest(listing()) != index.meta["listing"]:
            return f"the objects under '{prefix}' changed (keys, sizes or etags)"
        return None

    def build() -> tuple[dict[str, np.ndarray], dict[str, Any]]:
        return _folder_arrays(prefix, listing(), extensions)

    return load_or_build(identity, still_valid, build, f"source.path {prefix}", "objects")


def _folder_arrays(prefix: str, objects: list[Any], extensions: tuple[str, ...]
                   ) -> tuple[dict[str, np.ndarray], dict[str, Any]]:
    classes: set[str] = set()
    kept: list[tuple[list[tuple[int, str]], str]] = []
    for info in objects:
        parts = info.url[len(prefix):].split("/")
        if len(parts) < 2 or any(p.startswith(".") or not p for p in parts):
            continue  # a file beside the class "folders", or a hidden one
        classes.add(parts[0])
        if parts[-1].lower().endswith(extensions):
            # os.walk's order: a directory's files (sorted) before its sub-directories
            kept.append(([(1, p) for p in parts[1:-1]] + [(0, parts[-1])], "/".join(parts)))
    if not classes:
        raise bad_key("path", f"no objects under '{prefix}' in the ImageFolder layout "
                      "(prefix/<class>/<file>); check the URL")
    ordered = sorted(classes)
    number = {name: i for i, name in enumerate(ordered)}
    kept.sort(key=lambda item: (item[1].split("/", 1)[0], item[0]))
    if not kept:
        raise bad_key("path", f"'{prefix}' has {len(ordered)} class prefix(es) but no images "
                      f"under them (extensions {', '.join(extensions)})")
    labels = [number[rel.split("/", 1)[0]] for _, rel in kept]
    with_images = {rel.split("/", 1)[0] for _, rel in kept}
    blob, offsets = pack_names([rel.encode("utf-8", "surrogateescape") for _, rel in kept])
    arrays = {"names": blob, "name_offsets": offsets, "labels": narrow(labels)}
    return arrays, {"samples": len(kept), "classes": ordered, "listing": _digest(objects),
                    "empty_classes": [c for c in ordered if c not in with_images]}


def _digest(objects: list[Any]) -> str:
    """What a listing says, in a few bytes: every key, size and etag."""
    h = hashlib.sha256()
    for info in objects:
        h.update(f"{info.url}\0{info.size}\0{info.etag}\n".encode("utf-8", "surrogateescape"))
    return h.hexdigest()


def remote_list_index(url: str, root: str, parse: Any) -> tuple[IndexFile, IndexOrigin]:
    """The index of a list file in a store: keyed by its URL, size and etag (one HEAD per
    start); ``parse(path, lines)`` reads its lines as for a local list."""
    from inputkit import storage

    store = storage.open_store(url)
    info = store.head(url)
    identity = {"kind": "image_list", "path": url, "root": root,
                "version": f"{info.size}:{info.etag}"}

    def build() -> tuple[dict[str, np.ndarray], dict[str, Any]]:
        text = store.read(url).decode("utf-8", "surrogateescape")
        files, labels = parse(url, text.splitlines())
        if not files:
            raise bad_key("path", f"the list '{url}' names no images")
        blob, offsets = pack_names([f.encode("utf-8", "surrogateescape") for _, f in files])
        return ({"names": blob, "name_offsets": offsets, "labels": narrow(labels),
                 "lines": narrow([line for line, _ in files])}, {"samples": len(files)})

    return load_or_build(identity, lambda index: None, build, f"source.path {url}", "lines")


def fetch_many(urls: Sequence[str]) -> list[bytes | Exception]:
    """Every object of ``urls`` (any mix of stores): each store's share with read_many, many
    requests in flight; a failure is returned in its place (it fails its sample alone)."""
    from inputkit import storage

    groups: dict[str, list[int]] = {}
    for k, url in enumerate(urls):
        parts = urlsplit(url)
        groups.setdefault(f"{parts.scheme}://{parts.netloc}", []).append(k)
    found: list[bytes | Exception] = [b""] * len(urls)
    for members in groups.values():
        store = storage.open_store(urls[members[0]])
        for k, data in zip(members, store.read_many([urls[k] for k in members]), strict=True):
            found[k] = data
    return found

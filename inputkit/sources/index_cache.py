"""Index files cached across runs in ``<cache dir>/index/``, keyed by what was listed.

Why: a restart (or a resume) rebuilt the whole index: seconds per million files, minutes
for shards. A cached index is reused only when its *listing key* still holds: the builder
stores what it looked at (each directory's mtime and inode, the list file's size and
mtime, each shard's size and mtime, a store's keys, sizes and etags) and ``still_valid``
re-checks it on the next start (one ``stat`` per directory, not a walk). A file that is
stale, damaged or from another version is rebuilt, never trusted; when the cache folder
cannot be written the index is built in memory (and each process worker gets a copy).

The file name is a hash of the source's identity (kind, resolved path or URL, the options
that change what is indexed, e.g. extensions); the epoch and transforms are not part of it.
"""

from __future__ import annotations

import contextlib
import glob
import hashlib
import json
import os
import time
import uuid
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Any

import numpy as np

from inputkit.sources.index_file import IndexFile, IndexFileError
from inputkit.startup import progress

Build = Callable[[], tuple[dict[str, np.ndarray], dict[str, Any]]]


@dataclass
class IndexOrigin:
    """How this run got its index: for run_info and the start-up line."""

    from_cache: bool
    file: str | None
    seconds: float
    why: str  # "cached", "no cache file", "stale: ...", "damaged: ...", "not cached: ..."

    def info(self, index: IndexFile, samples: int) -> dict[str, Any]:
        return {"from_cache": self.from_cache, "file": self.file, "why": self.why,
                "seconds": round(self.seconds, 4), "bytes": index.nbytes,
                "bytes_per_sample": round(index.nbytes / samples, 1) if samples else 0.0}


def cache_root() -> str:
    """The cache folder (``cache.dir``): inputkit.storage's when configured, else
    $INPUTKIT_CACHE_DIR, else $XDG_CACHE_HOME/inputkit, else ~/.cache/inputkit."""
    with contextlib.suppress(ImportError, AttributeError):
        from inputkit import storage

        return storage.cache_dir()
    explicit = os.environ.get("INPUTKIT_CACHE_DIR")
    if explicit:
        return explicit
    base = os.environ.get("XDG_CACHE_HOME") or os.path.join(os.path.expanduser("~"), ".cache")
    return os.path.join(base, "inputkit")


def index_path(identity: Mapping[str, Any]) -> str:
    """Where the index of ``identity`` (JSON-able: kind, path, options) is cached."""
    text = json.dumps(dict(identity), sort_keys=True, default=str)
    digest = hashlib.sha256(text.encode("utf-8", "surrogateescape")).hexdigest()[:24]
    return os.path.join(cache_root(), "index", f"{identity.get('kind', 'index')}-{digest}.idx")


def load_or_build(identity: Mapping[str, Any], still_valid: Callable[[IndexFile], str | None],
                  build: Build, label: str, unit: str) -> tuple[IndexFile, IndexOrigin]:
    """The cached index of ``identity`` when ``still_valid(index)`` finds nothing changed
    (it returns None, or what changed), else ``build()``'s arrays and meta, written to the
    cache. ``label`` names the source in start-up progress ("index from cache: ..." or
    "indexing ...", counted in ``unit``)."""
    started = time.monotonic()
    path = index_path(identity)
    key = json.loads(json.dumps(dict(identity), default=str))
    why = "no cache file"
    if os.path.exists(path):
        try:
            cached = IndexFile.open(path)
            changed = "another source's index" if cached.meta.get("identity") != key \
                else still_valid(cached)
        except IndexFileError as exc:
            why = f"damaged: {exc}"
        else:
            if changed is None:
                progress(int(cached.meta.get("samples", 0)), unit, f"index from cache: {label}")
                return cached, IndexOrigin(True, path, time.monotonic() - started, "cached")
            cached.close()
            why = f"stale: {changed}"
    progress(0, unit, f"indexing {label}")
    arrays, meta = build()
    meta = {**meta, "identity": key}
    try:
        index = _publish(path, arrays, meta)
    except OSError as exc:
        index = IndexFile(arrays, meta)
        return index, IndexOrigin(False, None, time.monotonic() - started,
                                  f"not cached: cannot write '{path}': {exc.strerror or exc}")
    return index, IndexOrigin(False, path, time.monotonic() - started, why)


def _publish(link: str, arrays: dict[str, np.ndarray], meta: dict[str, Any]) -> IndexFile:
    """Write a build to its own file (``<name>-<build>.idx``, never replaced) and point ``link``
    at it (a symbolic link, swapped atomically). A run's workers map the build file its parent
    checked, so another run (a second job, another rank) rebuilding the same index meanwhile
    changes nothing under them. Builds older than a day that ``link`` no longer names are
    removed."""
    stem = link[:-len(".idx")]
    target = f"{stem}-{uuid.uuid4().hex[:12]}.idx"
    index = IndexFile.write(target, arrays, meta)
    temp = f"{link}.{os.getpid()}.{uuid.uuid4().hex[:8]}.link"
    try:
        os.symlink(os.path.basename(target), temp)
        os.replace(temp, link)
    except OSError:  # no symbolic links here (some network or FUSE folders): a build no link
        index.close()  # names would be left behind by every start, never reused nor pruned
        for leftover in (temp, target):
            with contextlib.suppress(OSError):
                os.unlink(leftover)
        raise
    cutoff = time.time() - _KEEP_OLD_BUILDS_S
    for old in glob.glob(glob.escape(stem) + "-*.idx"):
        with contextlib.suppress(OSError):
            if old != target and os.stat(old).st_mtime < cutoff:
                os.unlink(old)
    return index


_KEEP_OLD_BUILDS_S = 86400.0  # a run still going (a worker restarted) may map an older build


def stats_changed(paths: list[str], sizes: np.ndarray | None, mtimes: np.ndarray,
                  inodes: np.ndarray | None, what: str,
                  ctimes: np.ndarray | None = None) -> str | None:
    """None when every path still has its recorded size/mtime_ns/inode/ctime_ns, else what
    changed (the first path that differs, or is gone).

    Why ctime too for files: size + mtime miss a file replaced by another of the same size
    whose mtime was kept (``cp -p``, ``tar x``, ``rsync -t``, a sync tool setting the
    store's time): the index's offsets would then point into other bytes. ctime cannot be
    set by a user, and a replacement by rename also changes the inode."""
    for i, path in enumerate(paths):
        try:
            st = os.stat(path)
        except OSError:
            return f"{what} '{path}' is gone"
        if st.st_mtime_ns != int(mtimes[i]) or (sizes is not None and st.st_size != int(sizes[i])) \
                or (inodes is not None and st.st_ino != int(inodes[i])) \
                or (ctimes is not None and st.st_ctime_ns != int(ctimes[i])):
            return f"{what} '{path}' changed"
    return None

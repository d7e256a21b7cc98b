"""An index of the image members of uncompressed tar shards: where each sample's bytes are.

Built from the tar headers alone (one shard's walk is ``tar_shard.py``), so a
shard of thousands of JPEGs is indexed in milliseconds and each sample is then one
positioned read (``os.pread``) of its member. This module checks the shards, runs the walk
here or in child processes (``tar_index_pool.py``) and packs the rows into one index.
Compressed shards cannot be read by position: they get an error that says what to do.
"""

from __future__ import annotations

import os

import numpy as np

from inputkit.images.transforms import bad_key
from inputkit.sources.index_file import narrow, pack_names
from inputkit.sources.tar_index_pool import index_in_children
from inputkit.sources.tar_shard import ShardRows, _index_arrays
from inputkit.startup import progress

_COMPRESSED = ((b"\x1f\x8b", "gzip"), (b"BZh", "bzip2"), (b"\xfd7zXZ\x00", "xz"))

def index_shards(shards: list[str], extensions: tuple[str, ...], label: str | None,
                 parallel: int | None = None) -> dict[str, np.ndarray]:
    """The compact index of every shard's samples (inputkit.sources.index_file): arrays
    ``shard_of``, ``offsets``, ``sizes``, ``names``/``name_offsets`` (member names' bytes,
    as the tar holds them) and ``labels``, each in the narrowest integer type.

    A sample is the members sharing a key (``<key>.<ext>``): one image (an extension in
    ``extensions``) and, unless ``label`` is None, a ``<key>.<label>`` member holding a
    whole number. Labels are -1 when ``label`` is None. ``parallel`` processes index the
    shards (default: up to 4, one per core, when there are many large shards).
    """
    images = {e.lstrip(".") for e in extensions}
    for path in shards:
        _check_uncompressed(path)
    workers = _parallel(shards) if parallel is None else parallel
    if workers > 1 and len(shards) > 1:
        found = _in_processes(shards, images, label, workers)
    else:
        found = []
        for done, path in enumerate(shards):
            found.append(_index_arrays(path, images, label))
            progress(sum(len(f[0]) for f in found), "samples",
                     f"indexing source.urls ({done + 1}/{len(shards)} shards)")
    return compact(found, images, len(shards))


def compact(found: list[ShardRows], images: set[str], shards: int) -> dict[str, np.ndarray]:
    """Per-shard rows as one index's arrays (see :func:`index_shards`)."""
    counts = [len(f[0]) for f in found]
    if not sum(counts):
        raise bad_key("urls", f"the {shards} shard(s) hold no images (members named "
                      f"<key>.<ext> with ext one of {', '.join(sorted(images))})")
    blob, name_offsets = pack_names([n for f in found for n in f[2]])
    return {"shard_of": narrow(np.repeat(np.arange(len(found), dtype=np.int64), counts)),
            "offsets": narrow(np.concatenate([f[0] for f in found])),
            "sizes": narrow(np.concatenate([f[1] for f in found])),
            "names": blob, "name_offsets": name_offsets,
            "labels": narrow(np.concatenate([f[3] for f in found]))}


def _parallel(shards: list[str]) -> int:
    """Processes worth starting: one per core (at most 4) for 8+ shards of 256+ MiB in all."""
    cores = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count()
    if not cores or cores < 2 or len(shards) < 8:
        return 1
    total = sum(os.path.getsize(p) for p in shards)
    return min(cores, 4) if total >= 256 << 20 else 1


def _in_processes(shards: list[str], images: set[str], label: str | None,
                  workers: int) -> list[ShardRows]:
    def done(count: int) -> None:
        progress(count, "shards", f"indexing source.urls ({len(shards)} shards, {workers} processes)")

    return index_in_children(shards, images, label, workers, done)


def _check_uncompressed(path: str) -> None:
    try:
        with open(path, "rb") as f:
            magic = f.read(6)
    except OSError as exc:
        raise bad_key("urls", f"cannot open shard '{path}': {type(exc).__name__}: {exc}") from None
    for prefix, kind in _COMPRESSED:
        if magic.startswith(prefix):
            raise bad_key("urls", f"shard '{path}' is {kind}-compressed; image_shards reads "
                          "members by position, which needs an uncompressed tar (JPEGs do not "
                          "compress further: unpack it, or stream it with source=shards)")

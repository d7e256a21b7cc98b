"""W6's data in each peer's own format, converted once from the same tar shards.

The source is the image set's ``shards/`` folder (``<key>.jpg`` + ``<key>.cls`` per sample,
the WebDataset layout inputkit's ``image_shards`` reads). Each peer gets the same JPEG
bytes, stored undecoded, so every loader decodes the same files with the same recipe:

- WebDataset: the tar shards themselves (nothing to convert);
- Mosaic Streaming: MDS shards written by ``streaming.MDSWriter`` (columns ``jpg: bytes``,
  ``cls: int``, no compression: JPEGs do not compress);
- LitData: chunks written by ``litdata.optimize`` (``{"jpg": bytes, "cls": int}`` per sample).

Each conversion is written into ``<root>/<format>`` and marked complete by a ``.complete``
file written last; a folder without it (an interrupted conversion) is written again.
"""

from __future__ import annotations

import contextlib
import os
import shutil
import sys
import tarfile
from collections.abc import Iterator
from pathlib import Path

COMPLETE = ".complete"
FORMATS = ("wds", "mds", "litdata")


def tar_samples(shards: str | os.PathLike[str]) -> Iterator[tuple[str, bytes, int]]:
    """(key, JPEG bytes, label) of every sample in the ``*.tar`` files of ``shards``, in order.

    A sample without both its ``.jpg`` and its ``.cls`` member is an error naming the shard:
    converting it silently would make the peers read a different set from inputkit."""
    paths = sorted(Path(shards).glob("*.tar"))
    if not paths:
        raise FileNotFoundError(f"no *.tar shards in {shards}; write the image set first "
                                "(tools/make_images.py)")
    for path in paths:
        pending: dict[str, dict[str, bytes]] = {}
        with tarfile.open(path) as tar:
            for member in tar:
                if not member.isfile():
                    continue
                key, _, ext = member.name.rpartition(".")
                handle = tar.extractfile(member)
                assert handle is not None  # a regular file always has a handle
                pending.setdefault(key, {})[ext] = handle.read()
                sample = pending[key]
                if "jpg" in sample and "cls" in sample:
                    del pending[key]
                    yield key, sample["jpg"], int(sample["cls"])
        if pending:
            raise ValueError(f"shard {path}: samples {sorted(pending)[:5]} lack a .jpg or a .cls "
                             "member; rewrite the shard")


def shard_bytes(shards: str | os.PathLike[str]) -> int:
    """The size of the tar shards: the size MDS and LitData shards are cut to, per shard."""
    sizes = [p.stat().st_size for p in Path(shards).glob("*.tar")]
    return max(sizes) if sizes else 0


def _write_mds(shards: Path, out: Path) -> None:
    from inputkit.peers.storage_peers import import_streaming

    streaming = import_streaming()
    with streaming.MDSWriter(out=str(out), columns={"jpg": "bytes", "cls": "int"},
                             size_limit=shard_bytes(shards) + (1 << 20)) as writer:
        for _, jpg, label in tar_samples(shards):
            writer.write({"jpg": jpg, "cls": label})


def _write_litdata(shards: Path, out: Path) -> None:
    import litdata

    samples = [(key, jpg, label) for key, jpg, label in tar_samples(shards)]
    # optimize prints its progress on stdout, where the benchmark's table goes
    with contextlib.redirect_stdout(sys.stderr):
        litdata.optimize(fn=_LitSample(samples), inputs=list(range(len(samples))), output_dir=str(out),
                         chunk_bytes=shard_bytes(shards) + (1 << 20), num_workers=1,
                         mode="overwrite", start_method="fork")


class _LitSample:
    """litdata.optimize's ``fn``: sample ``i`` of the set, as ``{"jpg": bytes, "cls": int}``."""

    def __init__(self, samples: list[tuple[str, bytes, int]]) -> None:
        self.samples = samples

    def __call__(self, index: int) -> dict[str, object]:
        _, jpg, label = self.samples[index]
        return {"jpg": jpg, "cls": label}


def _write_wds(shards: Path, out: Path) -> None:
    out.mkdir(parents=True, exist_ok=True)
    for path in sorted(shards.glob("*.tar")):
        shutil.copyfile(path, out / path.name)


_WRITERS = {"wds": _write_wds, "mds": _write_mds, "litdata": _write_litdata}


def prepare(fmt: str, shards: str | os.PathLike[str], root: str | os.PathLike[str]) -> Path:
    """``root/<fmt>``: the samples of ``shards`` in format ``fmt``, written once and reused."""
    if fmt not in _WRITERS:
        raise ValueError(f"format {fmt!r} is not one of {', '.join(FORMATS)}")
    out = Path(root) / fmt
    if (out / COMPLETE).exists():
        return out
    if out.exists():
        shutil.rmtree(out)
    _WRITERS[fmt](Path(shards), out)
    (out / COMPLETE).write_text(f"{fmt} from {shards}\n")
    return out

"""W6's peers (WebDataset, Mosaic Streaming, LitData) against moto's S3 server on 127.0.0.1:
each delivers every image of a tiny set exactly once per epoch, decoded by W5's recipe, in
two epochs (the second from its cache). A peer that is not installed is skipped with the
reason (docs/benchmarks.md#w6-object-storage has the install recipe)."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from collections import Counter
from pathlib import Path
from typing import Any

import pytest
from imagefiles import jpeg_bytes, photo, write_shards

from inputkit.peers.storage_formats import prepare, tar_samples
from inputkit.peers.storage_peers import STORAGE_PEERS, StoragePeer, peer_env

COUNT = 32


@pytest.fixture(scope="module")
def tiny_shards(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """32 photo-like JPEGs in 2 tar shards; image i has label i, so a label names its image."""
    folder = tmp_path_factory.mktemp("w6-shards")
    images = [jpeg_bytes(photo(160 + 7 * i, 120 + 5 * i, seed=i)) for i in range(COUNT)]
    write_shards(folder, images, list(range(COUNT)), per_shard=COUNT // 2)
    return folder


def test_tar_samples_pairs_every_image_with_its_label(tiny_shards: Path) -> None:
    """The converters read the same (jpg, label) pairs inputkit's image_shards reads."""
    samples = list(tar_samples(tiny_shards))
    assert [label for _, _, label in samples] == list(range(COUNT))
    assert all(jpg[:2] == b"\xff\xd8" for _, jpg, _ in samples)


def test_tar_samples_refuses_a_sample_without_its_label(tmp_path: Path) -> None:
    """A .jpg without its .cls is an error naming the shard, never a sample dropped."""
    import io
    import tarfile

    with tarfile.open(tmp_path / "train-000.tar", "w") as tar:
        data = jpeg_bytes(photo(64, 48, seed=1))
        info = tarfile.TarInfo("000000.jpg")
        info.size = len(data)
        tar.addfile(info, io.BytesIO(data))
    with pytest.raises(ValueError, match=r"train-000\.tar.*lack a \.jpg or a \.cls"):
        list(tar_samples(tmp_path))


@pytest.mark.timeout(180)
@pytest.mark.parametrize("peer", STORAGE_PEERS, ids=lambda p: p.key)
def test_peer_reads_each_image_once_per_epoch(peer: StoragePeer, tiny_shards: Path, tmp_path: Path,
                                              s3_bucket: Any, monkeypatch: pytest.MonkeyPatch) -> None:
    """Two epochs from S3: the labels are exactly 0..31 each epoch, batches are uint8
    3x224x224, and epoch 1 left the data in the peer's cache folder.

    WebDataset runs 2 workers, as in W6: its split between workers is ours to configure
    (split_by_worker), so two workers prove no image is read twice. Mosaic and LitData split
    the data between workers themselves; one worker each keeps their tests to seconds (Mosaic
    took 20 s with two on the loaded 2-core machine)."""
    why = peer.missing()
    if why is not None:
        pytest.skip(why)
    for name, value in peer_env(s3_bucket.server.endpoint).items():
        monkeypatch.setenv(name, value)
    data = prepare(peer.fmt, tiny_shards, tmp_path / "formats")
    s3_bucket.upload_tree(data, peer.fmt)
    cache = tmp_path / "cache"
    cache.mkdir()
    workers = 2 if peer.key == "webdataset" else 1
    # Each peer reads in a fresh interpreter, as W6 runs every row: LitData's loader crashed
    # (SIGSEGV) in a pytest process that had run inputkit's storage tests before it (threads
    # of other clients alive at its fork), which says nothing about either library's reading.
    args = [peer.key, s3_bucket.url(peer.fmt), str(data), str(cache), str(workers)]
    done = subprocess.run([sys.executable, "-c", _READ_TWO_EPOCHS, *args], capture_output=True,
                          text=True, timeout=170, env=dict(os.environ))
    assert done.returncode == 0, f"{peer.key} failed:\n{done.stderr[-4000:]}"
    epochs = json.loads(done.stdout.strip().splitlines()[-1])
    assert len(epochs) == 2
    for epoch, found in enumerate(epochs, start=1):
        assert found["shapes"] == [[3, 224, 224]], f"epoch {epoch}: {found['shapes']}"
        assert found["dtypes"] == ["torch.uint8"], f"epoch {epoch}: {found['dtypes']}"
        labels = Counter(found["labels"])
        assert labels == Counter(range(COUNT)), f"epoch {epoch}: {labels}"
        if epoch == 1:
            assert found["cached_files"] > 0, f"{peer.key} left nothing in its cache folder {cache}"


# Run in a child: read two epochs with the named peer; print per epoch the labels, the
# batch shapes and dtypes seen, and (after epoch 1) how many files its cache folder holds.
_READ_TWO_EPOCHS = """
import json, sys
from pathlib import Path
from inputkit.peers.storage_peers import storage_peer

key, remote, data, cache, workers = sys.argv[1:6]
loader = storage_peer(key).open(remote, Path(data), cache, workers=int(workers), seed=0)
epochs = []
try:
    for epoch in (1, 2):
        found = {"labels": [], "shapes": set(), "dtypes": set()}
        for images, labels in loader.epoch():
            assert len(images) == len(labels)
            found["shapes"].add(tuple(images.shape[1:]))
            found["dtypes"].add(str(images.dtype))
            found["labels"] += [int(label) for label in labels]
        found["shapes"] = sorted(list(s) for s in found["shapes"])
        found["dtypes"] = sorted(found["dtypes"])
        found["cached_files"] = sum(1 for p in Path(cache).rglob("*")
                                    if p.is_file() and p.stat().st_size > 0)
        epochs.append(found)
finally:
    loader.close()
print(json.dumps(epochs))
"""

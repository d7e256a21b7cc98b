"""W5's OpenCV peers: DataLoader with the training recipe written with OpenCV, and with
albumentations. They exist so that inputkit's lead can be split into the loader's share
(against a peer with the same decoder) and the decoder's (that peer against Pillow), so
they must deliver what inputkit's recipe delivers, and the report must use them.
"""

from __future__ import annotations

import random
import sys
from pathlib import Path

import numpy as np
import pytest
import torch
from imagefiles import jpeg_bytes, photo, write_folder
from rich.console import Console

import inputkit
from inputkit.cli.compare import images_table, lead_lines, print_report
from inputkit.peers import cv2_recipe, pil_recipe, realimages
from inputkit.peers.catalog import IMAGE_PEERS
from inputkit.peers.compare import Measurement

cv2 = pytest.importorskip("cv2")

OPENCV_PEERS = [p for p in IMAGE_PEERS if p.decoder == "opencv"]


@pytest.fixture(scope="module")
def train(tmp_path_factory) -> Path:
    """40 photo-like JPEGs, 400-500 px on the longer side, in 4 class folders."""
    return write_folder(tmp_path_factory.mktemp("peers-cv2") / "train", classes=4, per_class=10)


def _inputkit_batch(train: Path) -> dict[str, torch.Tensor]:
    spec = realimages.inputkit_spec(train, "thread", ["batch_size=8", "workers.count=1"])
    with inputkit.Runner(spec) as runner:
        return next(iter(runner.device(0)))


@pytest.mark.timeout(120)
@pytest.mark.parametrize("peer", OPENCV_PEERS, ids=lambda p: p.key)
def test_an_opencv_peer_delivers_the_batches_inputkits_recipe_delivers(peer, train):
    """The same folder through inputkit's W5 recipe and through the peer: images of the
    same shape and dtype (N x 3 x 224 x 224 uint8, contiguous), int64 labels of the same
    classes."""
    if reason := peer.missing():
        pytest.skip(reason)
    ours = _inputkit_batch(train)
    spec = realimages.inputkit_spec(train, "thread", ["batch_size=8"]).inputs[0]
    stream, close = peer.open(spec)
    try:
        images, labels = next(stream)
    finally:
        close()
    assert images.dtype == ours["image"].dtype == torch.uint8
    assert tuple(images.shape) == tuple(ours["image"].shape) == (8, 3, 224, 224)
    assert images.is_contiguous()
    assert labels.dtype == ours["label"].dtype == torch.int64
    assert set(labels.tolist()) <= set(range(4))
    assert images.float().std() > 5  # pictures, not a blank buffer


def test_the_opencv_recipe_is_imread_crop_resize_flip_rgb(train):
    """The hand-written recipe draws RandomResizedCrop's box by torchvision's rule from
    Python's random, then makes the OpenCV calls a user writes: the same seed gives the
    same pixels as those calls made by hand, as a CHW uint8 tensor."""
    dataset = cv2_recipe.OpenCVImageFolder(train)
    path, label = dataset.samples[5]
    flips = set()
    for seed in range(8):
        random.seed(seed)
        got, got_label = dataset[5]
        random.seed(seed)
        bgr = cv2.imread(path, cv2.IMREAD_COLOR)
        top, left, h, w = pil_recipe.crop_box(bgr.shape[1], bgr.shape[0], cv2_recipe.GlobalDraws())
        img = cv2.resize(bgr[top:top + h, left:left + w], (224, 224), interpolation=cv2.INTER_LINEAR)
        flip = random.random() < 0.5
        flips.add(flip)
        if flip:
            img = img[:, ::-1]
        expected = img[:, :, ::-1]  # BGR -> RGB
        assert got_label == label
        assert got.dtype == torch.uint8 and tuple(got.shape) == (3, 224, 224)
        assert np.array_equal(got.permute(1, 2, 0).numpy(), expected), seed
    assert flips == {True, False}


def test_an_unreadable_file_names_the_file(tmp_path):
    """A file OpenCV cannot read fails with its path, not with a None deep in cv2.resize."""
    bad = tmp_path / "cats" / "broken.jpg"
    bad.parent.mkdir()
    bad.write_bytes(b"not a jpeg")
    with pytest.raises(OSError, match=r"broken\.jpg': OpenCV cannot read it"):
        cv2_recipe.OpenCVImageFolder(tmp_path)[0]


@pytest.mark.timeout(120)
def test_albumentations_workers_crop_differently(tmp_path):
    """albumentations seeds its generators once, in the parent: each DataLoader worker is
    reseeded with its own seed, so two workers given the same picture crop it differently."""
    pytest.importorskip("albumentations")
    from inputkit.peers.torch_loader import make_image_loader

    data = jpeg_bytes(photo(480, 400, 3))
    for i in range(4):
        (tmp_path / "a").mkdir(exist_ok=True)
        (tmp_path / "a" / f"{i}.jpg").write_bytes(data)
    spec = realimages.inputkit_spec(tmp_path, "thread", ["batch_size=1", "workers.count=2"]).inputs[0]
    loader = make_image_loader("processes", spec, "albumentations")
    images = []
    stream = iter(loader)
    try:
        for _ in range(2):  # one batch from each worker
            images.append(next(stream)[0][0])
    finally:
        stream._shutdown_workers()
    assert not torch.equal(images[0], images[1])


def test_without_albumentations_its_peer_is_skipped_with_the_extra_to_install(monkeypatch):
    """albumentations is optional: without it the peer is skipped, and the reason names
    the `peers` extra of the renamed distribution."""
    peer = next(p for p in IMAGE_PEERS if p.key == "albumentations")
    monkeypatch.setitem(sys.modules, "albumentations", None)
    reason = peer.missing()
    assert reason is not None and "albumentations does not import" in reason
    assert "pip install 'inputkit-ml[peers]'" in reason


@pytest.mark.parametrize("backend", [None, "opencv", "pillow"])
def test_the_pillow_row_decodes_with_pillow_whatever_the_user_overrides(train, backend):
    """The extra inputkit row decodes with Pillow over a user's own decode.backend (not a
    key given twice), and is left out where inputkit decodes with Pillow already."""
    overrides = [] if backend is None else [f"source.decode.backend={backend}"]
    spec = realimages.inputkit_spec(train, "thread", overrides).inputs[0]
    pillow = realimages.pillow_spec(train, overrides, spec)
    if backend == "pillow":
        assert pillow is None
    else:
        assert realimages.decoder_name(spec) == "opencv"
        assert realimages.decoder_name(pillow.inputs[0]) == "pillow"
        assert pillow.inputs[0].worker_kind == "thread"


def _m(loader: str, rate: float, decoder: str | None) -> Measurement:
    return Measurement(loader, rate / 64, 0.0, 0.1, 300.0, notes={"decoder": decoder},
                       samples_per_s=rate, cpu_ms_per_sample=1.0)


def _result(ours: Measurement, pillow_row: Measurement | None,
            peers: list[Measurement]) -> dict:
    return {"workload": realimages.IMAGES, "images": True, "about": "40 images",
            "inputkit_rows": [ours, *([pillow_row] if pillow_row else [])], "inputkit": ours,
            "inputkit_pillow": pillow_row, "peers": peers,
            "best_peer": max(peers, key=lambda m: m.batches_per_s),
            "same_decoder": realimages.best_with(peers, realimages.decoder_of(ours)),
            "best_pillow": realimages.best_with(peers, "pillow"), "spdl": None,
            "skipped": [], "spec": None, "limit_images": 4000.0, "limit_how": "2 cores x 2,000/s"}


def test_the_best_peer_is_the_fastest_of_all_and_the_lead_splits_into_loader_and_decoder():
    """With DataLoader + OpenCV the fastest peer, it is both the best peer and the
    same-decoder peer; the report's lead over the Pillow peer is the product of the
    loader's share (against the same decoder) and the decoder's (OpenCV peer against
    Pillow peer), and inputkit's own Pillow row is set against the Pillow peer."""
    ours = _m("inputkit (2 thread workers, opencv)", 3300.0, "opencv")
    mine = _m("inputkit (2 thread workers, pillow)", 1800.0, "pillow")
    pil = _m("DataLoader + Pillow (2 procs)", 1500.0, "pillow")
    cv = _m("DataLoader + OpenCV (2 procs)", 2400.0, "opencv")
    alb = _m("DataLoader + albumentations (2 procs)", 2200.0, "opencv")
    slow = _m("DataLoader + OpenCV in-process (num_workers=0)", 1600.0, "opencv")
    result = _result(ours, mine, [pil, slow, cv, alb])
    assert result["best_peer"] is cv and result["same_decoder"] is cv
    assert result["best_pillow"] is pil
    assert lead_lines(result) == [
        "inputkit (2 thread workers, opencv) against the fastest peer, "
        "DataLoader + OpenCV (2 procs): 1.38x",
        "lead over DataLoader + Pillow (2 procs): 2.20x",
        "  = 1.38x the loader (inputkit (2 thread workers, opencv) against "
        "DataLoader + OpenCV (2 procs), the same decoder)",
        "  x 1.60x the decoder (DataLoader + OpenCV (2 procs) against DataLoader + Pillow (2 procs))",
        "inputkit (2 thread workers, pillow) against DataLoader + Pillow (2 procs): 1.20x "
        "(the loader's share, both decoding with Pillow)"]
    console = Console(record=True, width=220)
    console.print(images_table(result))
    rows = {line.split("│")[1].strip(): [c.strip() for c in line.split("│")[2:-1]]
            for line in console.export_text().splitlines() if line.startswith("│")}
    # vs best peer, vs same decoder, vs Pillow peer, vs limit
    assert rows["inputkit (2 thread workers, opencv)"][4:] == ["1.38x", "1.38x", "2.20x", "0.82"]
    assert rows["inputkit (2 thread workers, pillow)"][4:] == ["0.75x", "1.20x", "1.20x", "0.45"]
    assert rows["DataLoader + albumentations (2 procs)"][4:] == ["0.92x", "0.92x", "1.47x", "0.55"]


def test_a_pillow_only_run_has_no_decoder_split():
    """Where inputkit decodes with Pillow itself (no OpenCV), its same-decoder peer is the
    Pillow peer: the report gives the one ratio, and no split or extra Pillow row."""
    ours = _m("inputkit (2 thread workers, pillow)", 1800.0, "pillow")
    pil = _m("DataLoader + Pillow (2 procs)", 1500.0, "pillow")
    result = _result(ours, None, [pil, _m("SPDL, FFmpeg decode (2 threads)", 900.0, "ffmpeg")])
    console = Console(record=True, width=220)
    print_report(console, [result], None)
    text = console.export_text()
    assert "lead over DataLoader + Pillow (2 procs): 1.20x" in text
    assert "the decoder" not in text and "the loader's share" not in text

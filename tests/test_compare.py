"""``inputkit compare``: which peers run, which one is "best", and what the report prints.

Measurements are faked where the test is about selection or rendering, so nothing here
depends on how fast this machine is; the peers themselves are run for a few batches to
check that each one really delivers the workload's batches.
"""

from __future__ import annotations

import os
import re
import sys
import threading
import time

import psutil
import pytest
from rich.console import Console

import inputkit
from inputkit.cli.compare import print_report
from inputkit.peers import compare, pil_recipe, realimages
from inputkit.peers.catalog import IMAGE_PEERS, PEERS, Peer, best_peer

SHAPES = {"in-process", "threads", "processes"}


def _spec(workload: str, *overrides: str):
    cfg = inputkit.compose([f"experiment={compare.WORKLOADS[workload].experiment}", "devices=cpu",
                            *overrides])
    return inputkit.load_spec(cfg)


def test_the_peers_include_in_process_thread_and_process_shapes():
    """Every workload is compared with DataLoader(num_workers=0), a torchdata.nodes thread
    ParallelMapper and the worker-process DataLoaders: the in-process one is what wins
    on a cheap fetch, so leaving it out overstates inputkit."""
    keys = [peer.key for peer in PEERS]
    assert keys == ["dataloader-in-process", "dataloader-per-item", "dataloader-chunks",
                    "nodes-threads"]
    assert {peer.shape for peer in PEERS} == SHAPES
    for workload in compare.WORKLOADS:
        spec = _spec(workload).inputs[0]
        labels = [peer.label(spec) for peer in PEERS]
        n = spec.worker_count
        assert labels == ["DataLoader in-process (num_workers=0)",
                          f"DataLoader per-item ({n} procs)", f"DataLoader chunks ({n} procs)",
                          f"torchdata.nodes ({n} threads)"], workload


@pytest.mark.parametrize("peer", PEERS, ids=lambda p: p.key)
def test_each_peer_delivers_the_workloads_batches(peer: Peer):
    """Each peer runs the same fetch and yields whole batches of the workload's shape,
    and closing it leaves no thread of its own behind."""
    if reason := peer.missing():
        pytest.skip(reason)
    import torch

    spec = _spec("w1").inputs[0]
    before = set(threading.enumerate())
    before_pids = {child.pid for child in psutil.Process().children(recursive=True)}
    stream, close = peer.open(spec)
    try:
        for _ in range(3):
            batch = next(stream)
            assert isinstance(batch["x"], torch.Tensor)
            assert tuple(batch["x"].shape) == (spec.batch_size, 64)
    finally:
        close()
    deadline = time.monotonic() + 20  # multiprocessing's queue feeders end just after close
    while True:
        threads = [t for t in threading.enumerate() if t not in before and t.is_alive()]
        children = [child for child in psutil.Process().children(recursive=True)
                    if child.pid not in before_pids]
        if not (threads or children) or time.monotonic() > deadline:
            break
        time.sleep(0.05)
    assert not threads, f"{peer.key} left threads running: {threads}"
    assert not children, f"{peer.key} left processes running: {children}"


def _fake(monkeypatch: pytest.MonkeyPatch, rates: dict[str, float]) -> None:
    """Replace every measurement with fixed rates (batches/s) per peer key."""
    monkeypatch.setattr(compare, "physical_limit", lambda *a, **k: (1e6, "fake limit"))
    monkeypatch.setattr(compare, "sample_bytes", lambda spec: 256)

    def ours(spec, seconds, batch_bytes):
        return compare.Measurement("inputkit (fake)", rates["inputkit"], 1.0, 0.01, 100.0)

    def peer_run(peer, spec, seconds, batch_bytes):
        return compare.Measurement(peer.label(spec), rates[peer.key], 1.0, 0.01, 100.0)

    monkeypatch.setattr(compare, "measure_inputkit", ours)
    monkeypatch.setattr(compare, "measure_peer", peer_run)


@pytest.mark.parametrize("fastest", [peer.key for peer in PEERS])
def test_the_best_peer_is_the_fastest_of_all_peers(monkeypatch, fastest):
    """Whichever peer is fastest, in-process and thread peers included, is the one
    inputkit's ratio is taken against."""
    rates = {peer.key: 100.0 for peer in PEERS}
    rates[fastest] = 500.0
    rates["inputkit"] = 250.0
    _fake(monkeypatch, rates)
    monkeypatch.setattr("inputkit.peers.catalog.Peer.missing", lambda self: None)
    result = compare.run_workload(compare.WORKLOADS["w1"], [], 0.1, lambda text: None)
    spec = _spec("w1").inputs[0]
    best = next(p for p in PEERS if p.key == fastest)
    assert result["best_peer"].loader == best.label(spec)
    assert [m.loader for m in result["peers"]] == [p.label(spec) for p in PEERS]
    assert best_peer(result["peers"]).batches_per_s == 500.0

    console = Console(record=True, width=240)
    print_report(console, [result], None)
    text = console.export_text()
    assert "vs best peer" in text
    ours_row = next(line for line in text.splitlines() if "inputkit (fake)" in line)
    assert "0.50x" in ours_row, ours_row


def test_w1_measures_inputkit_inline_beside_its_thread_workers_and_heads_with_the_faster(
        monkeypatch):
    """A trivial fetch is fastest in the consumer's thread: W1 (and W2) measure that shape
    too, both rows are printed, and the ratio that counts is the faster one's."""
    rates = {peer.key: 100.0 for peer in PEERS}
    _fake(monkeypatch, rates)

    def ours(spec, seconds, batch_bytes):
        kind = spec.inputs[0].worker_kind
        return compare.Measurement(f"inputkit ({kind}, fake)", 300.0 if kind == "inline" else 50.0,
                                   1.0, 0.01, 100.0)

    monkeypatch.setattr(compare, "measure_inputkit", ours)
    monkeypatch.setattr("inputkit.peers.catalog.Peer.missing", lambda self: None)
    result = compare.run_workload(compare.WORKLOADS["w1"], [], 0.1, lambda text: None)
    assert [m.loader for m in result["inputkit_rows"]] == ["inputkit (thread, fake)",
                                                           "inputkit (inline, fake)"]
    assert result["inputkit"].loader == "inputkit (inline, fake)"
    console = Console(record=True, width=240)
    print_report(console, [result], None)
    lines = console.export_text().splitlines()
    assert "3.00x" in next(line for line in lines if "inputkit (inline, fake)" in line)
    assert "0.50x" in next(line for line in lines if "inputkit (thread, fake)" in line)
    four = compare.run_workload(compare.WORKLOADS["w4"], [], 0.1, lambda text: None)
    assert [m.loader for m in four["inputkit_rows"]] == ["inputkit (process, fake)"]


def test_a_missing_torchdata_skips_its_peer_with_the_reason(monkeypatch):
    """Without torchdata the thread peer is skipped, the table says why and how to get it,
    and the best peer is taken among the peers that ran."""
    monkeypatch.setitem(sys.modules, "torchdata", None)  # import torchdata -> ImportError
    monkeypatch.setitem(sys.modules, "torchdata.nodes", None)
    nodes = next(p for p in PEERS if p.key == "nodes-threads")
    reason = nodes.missing()
    assert reason is not None and "pip install torchdata" in reason
    rates = {peer.key: 100.0 for peer in PEERS}
    rates["dataloader-in-process"] = 300.0
    rates["nodes-threads"] = 900.0  # would win, but cannot run here
    rates["inputkit"] = 150.0
    _fake(monkeypatch, rates)
    result = compare.run_workload(compare.WORKLOADS["w1"], [], 0.1, lambda text: None)
    assert result["best_peer"].loader == "DataLoader in-process (num_workers=0)"
    assert [(peer.key, why) for peer, why in result["skipped"]] == [("nodes-threads", reason)]

    console = Console(record=True, width=240)
    print_report(console, [result], None)
    text = console.export_text()
    assert "torchdata.nodes (2 threads): skipped" in text
    assert "pip install torchdata" in text


def test_the_report_prints_figures_not_internal_goals(monkeypatch):
    """The command's output has the table and the cold-start figure; the project's own
    goals (">= 10x", "MISSED") live in docs/benchmarks.md, not in a user's terminal."""
    _fake(monkeypatch, {**{peer.key: 100.0 for peer in PEERS}, "inputkit": 50.0})
    monkeypatch.setattr("inputkit.peers.catalog.Peer.missing", lambda self: None)
    result = compare.run_workload(compare.WORKLOADS["w4"], [], 0.1, lambda text: None)
    console = Console(record=True, width=240)
    print_report(console, [result], 0.412)
    text = console.export_text()
    assert "first batch on 2 devices x 4 process workers: 412 ms" in text
    for word in ("goal", "MISSED", ": met"):
        assert word not in text, word


# W5: real images ------------------------------------------------------------------------------

@pytest.fixture(scope="module")
def image_root(tmp_path_factory):
    """64 JPEGs of 400-500 px in 10 class folders under train/: cut from scikit-image's
    photographs by W5's own generator, or, without scikit-image, drawn gradients (what
    these tests check does not depend on the pictures)."""
    root = tmp_path_factory.mktemp("w5") / "set"
    try:
        import skimage.data  # noqa: F401
    except ImportError:
        import numpy as np
        from PIL import Image

        rng = np.random.default_rng(0)
        for i in range(64):
            width, height = (int(v) for v in rng.integers(400, 501, size=2))
            ramp = np.linspace(0, 255, width * height * 3).reshape(height, width, 3)
            pixels = (ramp + rng.normal(0, 8, ramp.shape)).clip(0, 255).astype(np.uint8)
            folder = root / "train" / f"class_{i % 10:03d}"
            folder.mkdir(parents=True, exist_ok=True)
            Image.fromarray(pixels).save(folder / f"{i:06d}.jpg", quality=90)
        return root
    from inputkit.peers.imageset import write_image_set

    return write_image_set(root, count=64, per_shard=32).root


def _image_spec(root, kind="thread"):
    return realimages.inputkit_spec(root / "train", kind, [])


def test_the_image_peers_are_dataloader_with_pillow_and_opencv_albumentations_and_spdl(image_root):
    """W5 is compared with DataLoader doing torchvision's Pillow recipe and the same recipe
    with OpenCV, each in-process and with one worker process per core, with DataLoader
    doing albumentations' recipe, and with SPDL's threads; each peer names its decoder."""
    spec = _image_spec(image_root).inputs[0]
    n = realimages.cores()
    assert spec.worker_count == n and spec.batch_size == 64
    assert [(peer.label(spec), peer.decoder) for peer in IMAGE_PEERS] == [
        ("DataLoader + Pillow in-process (num_workers=0)", "pillow"),
        (f"DataLoader + Pillow ({n} procs)", "pillow"),
        ("DataLoader + OpenCV in-process (num_workers=0)", "opencv"),
        (f"DataLoader + OpenCV ({n} procs)", "opencv"),
        (f"DataLoader + albumentations ({n} procs)", "opencv"),
        (f"SPDL, FFmpeg decode ({n} threads)", "ffmpeg")]


def test_w5_turns_device_normalisation_off_so_every_loader_delivers_uint8(image_root):
    """imagenet_train normalises on the device; the peers deliver uint8, so W5's inputkit
    runs without it, with endless epochs and the requested worker kind."""
    for kind in realimages.KINDS:
        spec = _image_spec(image_root, kind).inputs[0]
        assert spec.worker_kind == kind
        assert spec.epoch.count is None
        assert spec.normalize is None and not spec.channels_last


@pytest.mark.timeout(120)
@pytest.mark.parametrize("peer", IMAGE_PEERS, ids=lambda p: p.key)
def test_each_image_peer_delivers_uint8_chw_batches_with_int64_labels(peer: Peer, image_root):
    """Every W5 peer yields whole batches of 64 3x224x224 uint8 images and int64 labels
    from the folder, over more than one epoch of it, and closing it leaves nothing running."""
    if reason := peer.missing():
        pytest.skip(reason)
    import torch

    spec = _image_spec(image_root).inputs[0]
    before = set(threading.enumerate())
    before_pids = {child.pid for child in psutil.Process().children(recursive=True)}
    stream, close = peer.open(spec)
    try:
        for _ in range(3):  # 64 images: three batches span three epochs
            batch = next(stream)
            images, labels = (batch["image"], batch["label"]) if isinstance(batch, dict) else batch
            assert images.dtype == torch.uint8 and tuple(images.shape) == (64, 3, 224, 224)
            assert images.is_contiguous()
            assert labels.dtype == torch.int64 and tuple(labels.shape) == (64,)
            assert set(labels.tolist()) <= set(range(10))
            assert realimages.batch_samples(batch) == 64
    finally:
        close()
    deadline = time.monotonic() + 20
    while True:
        threads = [t for t in threading.enumerate() if t not in before and t.is_alive()]
        kids = [child for child in psutil.Process().children(recursive=True)
                if child.pid not in before_pids]
        if not (threads or kids) or time.monotonic() > deadline:
            break
        time.sleep(0.05)
    assert not threads, f"{peer.key} left threads running: {threads}"
    assert not kids, f"{peer.key} left processes running: {kids}"


@pytest.mark.timeout(180)
def test_w5_measures_inputkit_both_kinds_every_peer_and_the_limit(image_root):
    """A short real W5 run: inputkit with threads and with processes, each peer (SPDL's row
    says why where it cannot run), the limit; every row has its images/s, CPU-ms per image,
    first batch and peak PSS, and the ratios to the best DataLoader and to SPDL."""
    said = []
    result = realimages.run_images_workload(image_root, [], 0.2, said.append)
    n = realimages.cores()
    ours = result["inputkit_rows"]
    decoder = realimages.decoder_name(result["spec"])
    assert decoder in {"pillow", "opencv"}, decoder  # decode.backend=auto picks one
    expected = [f"inputkit ({n} thread workers, {decoder})",
                f"inputkit ({n} process workers, {decoder})"]
    if decoder != "pillow":  # the decoder's share: inputkit once more, decoding with Pillow
        expected.append(f"inputkit ({n} thread workers, pillow)")
    assert [m.loader for m in ours] == expected
    assert result["inputkit"] is max(ours[:2], key=lambda m: m.samples_per_s)
    assert (result["inputkit_pillow"] is None) == (decoder == "pillow")
    ran = {m.loader for m in result["peers"]}
    skipped = {peer.key: why for peer, why in result["skipped"]}
    spec = result["spec"]
    for peer in IMAGE_PEERS:
        assert (peer.label(spec) in ran) != (peer.key in skipped), peer.key
    assert "dataloader-pillow" not in skipped  # torch is installed
    assert "dataloader-opencv" not in skipped  # opencv is in the test extra
    assert result["best_peer"] is max(result["peers"], key=lambda m: m.samples_per_s)
    pillow_peers = [m for m in result["peers"] if m.notes["decoder"] == "pillow"]
    assert result["best_pillow"] is max(pillow_peers, key=lambda m: m.samples_per_s)
    same = [m for m in result["peers"] if m.notes["decoder"] == decoder]
    assert result["same_decoder"] is max(same, key=lambda m: m.samples_per_s)
    for m in [*ours, *result["peers"]]:
        assert m.samples_per_s > 0 and m.cpu_ms_per_sample > 0, m
        assert m.first_batch_s > 0 and m.peak_mb > 0, m
    assert result["limit_images"] > 0 and "cores x" in result["limit_how"]
    assert any("physical limit, again" in text for text in said)

    console = Console(record=True, width=260)
    print_report(console, [result], None)
    text = console.export_text()
    for column in ("images/s", "CPU-ms/image", "first batch", "peak PSS", "vs best peer",
                   "vs same decoder", "vs Pillow peer", "vs limit"):
        assert column in text, column
    number = r"[\d,]+\s+│\s+[\d.]+\s+│\s+[\d,]+ ms\s+│\s+[\d,]+ MB"
    for m in [*ours, *result["peers"]]:
        row = next(line for line in text.splitlines() if m.loader in line)
        assert re.search(number, row), row
    best_row = next(line for line in text.splitlines() if line.startswith(
        f"│ {result['best_peer'].loader} "))
    assert best_row.count("1.00x") >= 1
    assert f"against the fastest peer, {result['best_peer'].loader}: " in text
    assert f"lead over {result['best_pillow'].loader}: " in text
    if "spdl" in skipped:
        assert "SPDL, FFmpeg decode" in text and "skipped" in text
        assert "'inputkit-ml[peers]'" in text  # the install hint, not eaten as rich markup


def test_w5_without_scikit_image_or_images_is_skipped_with_the_reason(monkeypatch, tmp_path):
    """No --images and no scikit-image to cut the set from: W5 is skipped, and the report
    says why and what to install, instead of failing the whole compare."""
    monkeypatch.setenv("INPUTKIT_CACHE", str(tmp_path))  # nothing cached there
    monkeypatch.setitem(sys.modules, "skimage", None)
    monkeypatch.setitem(sys.modules, "skimage.data", None)
    result = realimages.run_images_workload(None, [], 0.1, lambda text: None)
    assert "pip install scikit-image" in result["skipped_reason"]
    console = Console(record=True, width=400)
    print_report(console, [result], None)
    text = console.export_text()
    assert text.startswith(f"{realimages.IMAGES.title}: skipped, ")
    assert "--images DIR" in text


def test_a_bad_images_folder_is_an_error_naming_the_option(tmp_path):
    """--images that is not a folder, or holds no images, stops compare with exit 2 and a
    message naming --images."""
    from typer.testing import CliRunner

    from inputkit.cli import app

    (tmp_path / "empty" / "cats").mkdir(parents=True)
    for folder, expected in [(tmp_path / "nope", "is not a folder"),
                             (tmp_path / "empty", "has no images")]:
        out = CliRunner().invoke(app, ["compare", "-w", "w5", "--images", str(folder),
                                       "--no-startup"], prog_name="inputkit")
        assert out.exit_code == 2, out.output
        assert "--images" in out.output and expected in out.output, out.output


def test_spdl_without_ffmpeg_is_skipped_with_what_to_install(monkeypatch):
    """SPDL imports without FFmpeg's libraries and fails on the first decode: the check
    decodes a JPEG, and the reason names the Debian packages; without spdl, pip."""
    spdl = next(p for p in IMAGE_PEERS if p.key == "spdl")
    try:
        import spdl.io as spdl_io
    except Exception:
        spdl_io = None
    if spdl_io is not None:
        def no_ffmpeg(*args, **kwargs):
            raise RuntimeError('Failed to import libspdl. "libavutil.so.57: cannot open shared '
                               'object file"')

        monkeypatch.setattr(spdl_io, "demux_image", no_ffmpeg)
        reason = spdl.missing()
        assert reason is not None and "cannot decode" in reason and "libavutil.so.57" in reason
        assert "apt-get install libavutil57" in reason
        monkeypatch.undo()
    monkeypatch.setitem(sys.modules, "spdl.pipeline", None)
    reason = spdl.missing()
    assert reason is not None and "does not import" in reason and "spdl" in reason


def test_crop_box_stays_in_bounds_with_torchvisions_area_and_ratio():
    """RandomResizedCrop's rule: the box lies inside the image; a box from the 10 tries has
    8-100% of the area (up to rounding) and a ratio in 3/4..4/3; otherwise it is the
    central crop with the ratio clamped."""
    import random

    draws = random.Random(1)
    for width, height in [(500, 375), (375, 500), (224, 224), (100, 60), (32, 480)]:
        for _ in range(300):
            i, j, h, w = pil_recipe.crop_box(width, height, draws)
            assert 0 <= i and i + h <= height and 0 <= j and j + w <= width
            assert w > 0 and h > 0
    # A 1000 x 10 strip: no try fits, so the central crop with the ratio clamped to 4/3.
    assert pil_recipe.crop_box(1000, 10, draws) == (0, (1000 - 13) // 2, 10, 13)
    assert pil_recipe.crop_box(10, 1000, draws) == ((1000 - 13) // 2, 0, 13, 10)


def test_the_replicated_recipe_is_pillows_crop_resize_flip_in_torchvisions_order(image_root):
    """The replica draws from torch's RNG in get_params' order (area, ratio, top, left,
    then the flip) and makes the same Pillow calls: the same seed gives the same pixels as
    those calls made by hand, as a CHW uint8 tensor."""
    import numpy as np
    import torch
    from PIL import Image

    path = sorted((image_root / "train").rglob("*.jpg"))[5]
    for seed in range(6):
        torch.manual_seed(seed)
        got = pil_recipe.replicated_transform(pil_recipe.pil_loader(str(path)))
        torch.manual_seed(seed)
        img = Image.open(path).convert("RGB")
        i, j, h, w = pil_recipe.crop_box(img.width, img.height, pil_recipe.TorchDraws())
        img = img.crop((j, i, j + w, i + h)).resize((224, 224), Image.BILINEAR)
        if torch.rand(1) < 0.5:
            img = img.transpose(Image.FLIP_LEFT_RIGHT)
        assert got.dtype == torch.uint8 and tuple(got.shape) == (3, 224, 224)
        assert np.array_equal(got.permute(1, 2, 0).numpy(), np.asarray(img)), seed


def test_the_replica_matches_torchvision_where_torchvision_loads(image_root):
    """Where torchvision imports, its Compose and the replica give the same pixels for
    the same torch seed."""
    transforms = pil_recipe.torchvision_transforms()
    if transforms is None:
        pytest.skip("torchvision does not load beside this torch (the replica is used)")
    import torch

    recipe, backend = pil_recipe.train_transform()
    assert backend == "torchvision"
    path = str(sorted((image_root / "train").rglob("*.jpg"))[3])
    for seed in range(6):
        torch.manual_seed(seed)
        theirs = recipe(pil_recipe.pil_loader(path))
        torch.manual_seed(seed)
        ours = pil_recipe.replicated_transform(pil_recipe.pil_loader(path))
        assert torch.equal(theirs, ours), seed


def test_find_samples_lists_an_image_folder_as_torchvision_does(tmp_path):
    """Class folders sorted by name into indices, files in sorted order, extensions in any
    case, other files left out."""
    for name in ["b/2.JPG", "b/1.png", "a/x/3.jpeg", "a/notes.txt", "c/4.webp"]:
        (tmp_path / name).parent.mkdir(parents=True, exist_ok=True)
        (tmp_path / name).write_bytes(b"")
    classes, samples = pil_recipe.find_samples(tmp_path)
    assert classes == ["a", "b", "c"]
    assert [(os.path.relpath(p, tmp_path), c) for p, c in samples] == [
        ("a/x/3.jpeg", 0), ("b/1.png", 1), ("b/2.JPG", 1), ("c/4.webp", 2)]


def test_the_cached_image_set_is_written_once(tmp_path):
    """W5 without --images writes its set into the cache once; the next run finds it (a
    set whose writing was interrupted has no marker and is written again)."""
    pytest.importorskip("skimage")
    from inputkit.peers.imageset import COMPLETE, cached_image_set

    first = cached_image_set(count=6, root=tmp_path)
    assert first.seconds > 0 and len(list(first.train.rglob("*.jpg"))) == 6
    stamp = {p: p.stat().st_mtime_ns for p in first.train.rglob("*.jpg")}
    again = cached_image_set(count=6, root=tmp_path)
    assert again.seconds == 0 and again.root == first.root
    assert {p: p.stat().st_mtime_ns for p in again.train.rglob("*.jpg")} == stamp
    (first.root / COMPLETE).unlink()
    assert cached_image_set(count=6, root=tmp_path).seconds > 0


def test_cpu_since_counts_the_cpu_time_of_child_processes():
    """CPU-ms per image counts the whole process tree: a child that burns 0.3 s of CPU
    time is in the figure (CPU time, not wall-clock, so load does not change it)."""
    import subprocess

    before = compare.tree_cpu()
    burn = ("import time\nt = time.process_time()\nwhile time.process_time() - t < 0.3: pass\n"
            "print('done', flush=True)\ninput()\n")
    child = subprocess.Popen([sys.executable, "-c", burn], stdin=subprocess.PIPE,
                             stdout=subprocess.PIPE, text=True)
    try:
        assert child.stdout.readline().strip() == "done"
        assert compare.cpu_since(before) >= 0.3
    finally:
        child.communicate("\n", timeout=30)

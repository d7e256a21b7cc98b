"""W5 of ``inputkit compare``: real JPEGs → decode → RandomResizedCrop(224) → flip → batches.

The images are a folder in the ImageFolder layout (``--images DIR``; ``DIR/train`` when
it has one, as ``tools/make_images.py`` writes), or, without one, the 2,000-image set
``inputkit.peers.imageset`` cuts from scikit-image's photographs, written once into the
cache. Every loader makes uint8 CHW batches of 64 with int64 labels:

- inputkit: ``experiment=imagenet_train`` on that folder with the machine's cores as
  workers, once with thread and once with process workers (each is reported, with the
  decoder the source picked; the faster is the headline row), device-side normalisation
  switched off so that every loader delivers the same uint8 batches; and, where that
  decoder is not Pillow, once more with threads and ``decode.backend=pillow``, so that the
  decoder's share of the lead shows;
- the peers in ``catalog.IMAGE_PEERS``: DataLoader with torchvision's Pillow recipe and
  with the same recipe written with OpenCV (in-process and with worker processes),
  DataLoader with albumentations, and SPDL;
- the limit: one thread running the exact Pillow recipe, times the cores, measured
  before and after the loaders (the higher is kept).

Per loader: images/s in steady state, CPU-ms per image (the process tree's CPU time in
that window divided by the images delivered), time to the first batch, peak PSS. Each row
carries its decoder (``notes["decoder"]``): inputkit is compared with the fastest peer of
all, with the fastest peer that decodes as it does, and with the fastest Pillow peer.
"""

from __future__ import annotations

import os
import time
from collections.abc import Callable, Iterator, Mapping
from pathlib import Path
from typing import Any

from omegaconf import OmegaConf

import inputkit
from inputkit.config.overrides import layered
from inputkit.config.spec import InputSpec, RunSpec
from inputkit.errors import ConfigError
from inputkit.peers.catalog import IMAGE_PEERS, Opened, Peer, best_peer
from inputkit.peers.compare import Measurement, TreeMemory, Workload, _median, cpu_since, tree_cpu
from inputkit.peers.imageset import ImageSetUnavailable, cached_image_set
from inputkit.peers.pil_recipe import find_samples
from inputkit.sources.loader import build_source

IMAGES = Workload("w5", "imagenet_train",
                  "W5 real images (JPEG -> RandomResizedCrop 224 -> flip, 64 a batch)",
                  "Pillow recipe, 1 thread x cores")
BATCH = 64
KINDS = ("thread", "process")
PILLOW = "source.decode.backend=pillow"  # the extra inputkit row: the decoder's share
CACHED_COUNT = 2000
# The chunk a worker is decoding when the clock stops is finished before it stops: on a
# loaded machine, with Pillow, that takes longer than Runner.close's default 2 s.
CLOSE_S = 60.0
# 3 x 224 x 224 uint8 and an int64 label
SAMPLE_BYTES = 3 * 224 * 224 + 8


def cores() -> int:
    try:
        return len(os.sched_getaffinity(0))
    except AttributeError:  # not on Linux
        return os.cpu_count() or 1


def image_folder(images: str | os.PathLike[str] | None,
                 say: Callable[[str], None]) -> tuple[Path | None, str]:
    """The ImageFolder root to read, and what it is; (None, why) when W5 cannot run here
    (no ``--images`` and no scikit-image). A bad ``--images`` is a ConfigError."""
    if images is not None:
        root = Path(images)
        if not root.is_dir():
            raise ConfigError("--images", f"{images} is not a folder; give the root of an "
                              "ImageFolder tree (<root>/<class>/<image>) or a folder holding train/")
        train = root / "train" if (root / "train").is_dir() else root
        try:
            _, samples = find_samples(train)
        except FileNotFoundError as exc:
            raise ConfigError("--images", str(exc)) from exc
        return train, f"{len(samples):,} images in {train}"
    try:
        made = cached_image_set(CACHED_COUNT, say=lambda text: say(f"{IMAGES.title}: writing "
                                                                     f"the image set, {text}"))
    except ImageSetUnavailable as exc:
        return None, f"{exc}, or give a folder of JPEGs with --images DIR"
    return made.train, f"{made.count:,} JPEGs cut from scikit-image's photographs ({made.root})"


def inputkit_spec(train: Path, kind: str, overrides: list[str]) -> RunSpec:
    """``experiment=imagenet_train`` on ``train`` with ``kind`` workers, endless epochs,
    batches left as uint8 on the CPU."""
    quoted = str(train).replace("\\", "\\\\").replace("'", "\\'")
    base = ["experiment=imagenet_train", f"source.path='{quoted}'", f"batch_size={BATCH}",
            f"workers.count={cores()}", f"workers.kind={kind}", "devices=cpu", "epoch.count=null"]
    cfg = inputkit.compose(layered(base, overrides))
    if OmegaConf.select(cfg, "device.normalize", default=None) is not None:
        # The peers deliver uint8; the float conversion would be work only inputkit does.
        cfg = inputkit.compose(layered(base, overrides, ["device.normalize=null"]))
    return inputkit.load_spec(cfg)


def batch_samples(batch: Any) -> int:
    """Images in one batch: a dict with ``label`` (inputkit, SPDL) or (images, labels)."""
    if isinstance(batch, Mapping):
        return len(batch["label"])
    return len(batch[1])


def _epochs(coordinator: Iterator[Any]) -> Iterator[Any]:
    """inputkit's batches epoch after epoch (each pass over a coordinator is one epoch)."""
    while True:
        delivered = 0
        for batch in coordinator:
            delivered += 1
            yield batch
        if not delivered:
            return


def _measure(label: str, start: Callable[[], Opened], seconds: float,
             decoder: str | None) -> Measurement:
    """Open a loader, time its first batch, then count images and CPU for ``seconds``."""
    with TreeMemory() as memory:
        began = time.perf_counter()
        stream, close = start()
        try:
            next(stream)
            first_s = time.perf_counter() - began
            next(stream)  # one more before the clock starts, as W1-W4 do
            before = tree_cpu()
            clock = time.perf_counter()
            samples = 0
            for batch in stream:
                samples += batch_samples(batch)
                if time.perf_counter() - clock >= seconds:
                    break
            elapsed = time.perf_counter() - clock
            cpu_s = cpu_since(before)
            memory.sample()
        finally:
            close()
    rate = samples / elapsed
    return Measurement(label, rate / BATCH, rate * SAMPLE_BYTES / 1e6, first_s, memory.peak / 1e6,
                       notes={"decoder": decoder}, samples_per_s=rate,
                       cpu_ms_per_sample=cpu_s * 1000 / samples if samples else None)


def decoder_name(spec: InputSpec) -> str | None:
    """The decoder the image source picks for this config (``decode.backend=auto`` picks
    OpenCV where it is installed), as the run's summary names it."""
    source = build_source(spec.source)
    try:
        return getattr(getattr(source.obj, "decoder", None), "name", None)
    finally:
        source.close()


def measure_inputkit_images(spec: RunSpec, seconds: float) -> Measurement:
    inputs = spec.inputs[0]
    decoder = decoder_name(inputs)
    label = f"inputkit ({inputs.worker_count} {inputs.worker_kind} workers"
    label += f", {decoder})" if decoder else ")"

    def start() -> Opened:
        runner = inputkit.Runner(spec)
        runner.__enter__()
        return _epochs(runner.device(0)), lambda: runner.close(timeout=CLOSE_S)

    return _measure(label, start, seconds, decoder)


def measure_image_peer(peer: Peer, spec: InputSpec, seconds: float) -> Measurement:
    return _measure(peer.label(spec), lambda: peer.open(spec), seconds, peer.decoder)


def pillow_spec(train: Path, overrides: list[str], spec: InputSpec) -> RunSpec | None:
    """inputkit with thread workers decoding with Pillow (``decode.backend=pillow`` over the
    user's overrides), the row that shows the decoder's share; None where ``spec`` (the
    thread row's input) decodes with Pillow already."""
    if decoder_name(spec) == "pillow":
        return None
    return inputkit_spec(train, "thread", layered(overrides, [PILLOW]))


def decoder_of(m: Measurement) -> str | None:
    return m.notes.get("decoder")


def best_with(peers: list[Measurement], decoder: str | None) -> Measurement | None:
    """The fastest of ``peers`` that decodes with ``decoder``; None when none does."""
    same = [m for m in peers if decoder is not None and decoder_of(m) == decoder]
    return best_peer(same) if same else None


def image_limit(train: Path, seconds: float) -> tuple[float, str]:
    """Images/s the work allows here: one thread's exact Pillow recipe, times the cores."""
    from inputkit.peers.pil_recipe import recipe_rate, train_transform

    single = recipe_rate(train, seconds)
    n = cores()
    _, backend = train_transform()
    return n * single, f"{n} cores x {single:,.0f}/s for 1 thread ({backend})"


def skipped_images(reason: str) -> dict[str, Any]:
    return {"workload": IMAGES, "images": True, "skipped_reason": reason}


def run_images_workload(images: str | os.PathLike[str] | None, overrides: list[str],
                        seconds: float, say: Callable[[str], None],
                        repeats: int = 1) -> dict[str, Any]:
    """inputkit (threads, processes, and threads with Pillow), every image peer that can
    run, and the limit.

    ``inputkit`` is the faster of inputkit's thread and process rows; ``best_peer`` the
    fastest peer of all, ``same_decoder`` the fastest peer decoding as ``inputkit`` does,
    ``best_pillow`` the fastest Pillow peer, ``inputkit_pillow`` inputkit's Pillow row
    (None where its default decoder is Pillow already), ``spdl`` SPDL's row (None when it
    was skipped); ``skipped`` lists ``(peer, reason)``. Without images (no ``--images``
    and no scikit-image) the result has only ``skipped_reason``.
    """
    title = IMAGES.title
    train, about = image_folder(images, say)
    if train is None:
        return skipped_images(about)
    specs = {kind: inputkit_spec(train, kind, overrides) for kind in KINDS}
    input_spec = specs["thread"].inputs[0]
    if (pillow := pillow_spec(train, overrides, input_spec)) is not None:
        specs["pillow"] = pillow
    reasons = {peer.key: peer.missing() for peer in IMAGE_PEERS}
    runnable = [peer for peer in IMAGE_PEERS if reasons[peer.key] is None]
    skipped = [(peer, reasons[peer.key]) for peer in IMAGE_PEERS if reasons[peer.key] is not None]
    say(f"{title}: physical limit")
    limits = [image_limit(train, min(seconds, 2.0))]
    runs: dict[str, list[Measurement]] = {**{kind: [] for kind in specs},
                                          **{p.key: [] for p in runnable}}
    for repeat in range(repeats):  # interleaved, so slow phases of a noisy machine hit all
        suffix = f" (run {repeat + 1} of {repeats})" if repeats > 1 else ""
        for kind, spec in specs.items():
            what = f"thread workers, {PILLOW}" if kind == "pillow" else f"{kind} workers"
            say(f"{title}: inputkit, {what}{suffix}")
            runs[kind].append(measure_inputkit_images(spec, seconds))
        for peer in runnable:
            say(f"{title}: {peer.label(input_spec)}{suffix}")
            runs[peer.key].append(measure_image_peer(peer, input_spec, seconds))
    say(f"{title}: physical limit, again")
    limits.append(image_limit(train, min(seconds, 2.0)))
    limit, how = max(limits)
    rows = {kind: _median(runs[kind]) for kind in specs}
    headline = max((rows[kind] for kind in KINDS), key=lambda m: m.batches_per_s)
    by_key = {peer.key: _median(runs[peer.key]) for peer in runnable}
    peers = list(by_key.values())
    return {"workload": IMAGES, "images": True, "about": about, "folder": train,
            "limit": limit / BATCH, "limit_images": limit, "limit_how": how,
            "inputkit_rows": list(rows.values()), "inputkit": headline,
            "inputkit_pillow": rows.get("pillow"), "peers": peers,
            "best_peer": best_peer(peers) if peers else None,
            "same_decoder": best_with(peers, decoder_of(headline)),
            "best_pillow": best_with(peers, "pillow"),
            "spdl": by_key.get("spdl"),
            "skipped": skipped, "spec": input_spec,
            "batch_bytes": SAMPLE_BYTES * BATCH, "workers": input_spec.worker_count}

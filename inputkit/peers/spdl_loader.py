"""The SPDL peer of W5: FFmpeg decodes and crops in a thread stage of an SPDL pipeline.

``spdl`` (pip install spdl; it loads FFmpeg's shared libraries, Debian's libavcodec59,
libavformat59, libavfilter8, libavdevice59, libswscale6 and libavutil57 on bookworm) is
the ``peers`` extra. The pipeline:

- source: the ImageFolder's (path, label) pairs, shuffled anew every epoch, endless;
- ``pipe(decode, concurrency=N)`` in a pool of N threads: demux the file, draw
  RandomResizedCrop's box by torchvision's rule (``pil_recipe.crop_box``, from a random
  generator per thread) and the flip, and decode through the FFmpeg filter
  ``crop=w:h:x:y,scale=224:224:flags=bilinear[,hflip],format=rgb24``;
- ``aggregate(batch_size)``, then ``pipe(collate)``: the frames into one NHWC buffer,
  as a torch tensor permuted to contiguous NCHW uint8, with int64 labels;
- a sink of ``PREFETCH_FACTOR`` batches.
"""

from __future__ import annotations

import io
import itertools
import random
import threading
from collections.abc import Callable, Iterator
from typing import Any

import torch

from inputkit.config.spec import InputSpec
from inputkit.peers.pil_recipe import SIZE, crop_box, find_samples
from inputkit.peers.torch_loader import PREFETCH_FACTOR

FFMPEG_DEBIAN = ("libavutil57 libavcodec59 libavformat59 libavfilter8 libavdevice59 libswscale6 "
                 "libswresample4")
INSTALL = f"pip install spdl, and FFmpeg's shared libraries (apt-get install {FFMPEG_DEBIAN})"


def spdl_missing() -> str | None:
    """Why SPDL cannot run here: it does not import, or its FFmpeg libraries do not load
    (``import spdl.io`` succeeds without them; the first decode fails). None when it can."""
    try:
        import spdl.io
        import spdl.pipeline  # noqa: F401
    except Exception as exc:
        return f"spdl does not import ({exc}); {INSTALL}"
    try:
        from PIL import Image

        buffer = io.BytesIO()
        Image.new("RGB", (16, 12), (200, 30, 40)).save(buffer, format="JPEG")
        frames = spdl.io.decode_packets(spdl.io.demux_image(buffer.getvalue()))
        shape = tuple(spdl.io.to_numpy(spdl.io.convert_frames(frames)).shape)
    except Exception as exc:
        return f"spdl imports but cannot decode a JPEG ({str(exc)[:300]}); {INSTALL}"
    if shape != (12, 16, 3):
        return f"spdl decoded a 16x12 JPEG to an array of shape {shape}; expected (12, 16, 3)"
    return None


def open_spdl(spec: InputSpec) -> tuple[Iterator[dict[str, torch.Tensor]], Callable[[], None]]:
    """An endless stream of W5 batches from an SPDL pipeline over ``spec.source.path``, and
    the call that stops its threads."""
    import spdl.io
    from spdl.pipeline import PipelineBuilder

    _, samples = find_samples(spec.source["path"])
    threads = spec.worker_count
    seed = int(spec.source.get("seed") or 0)
    local = threading.local()
    streams = itertools.count(seed * 1000)  # one generator per decode thread, seeded in turn

    def source() -> Iterator[tuple[str, int]]:
        rng = random.Random(seed)
        order = list(samples)
        while True:
            rng.shuffle(order)
            yield from order

    def decode(item: tuple[str, int]) -> tuple[Any, int]:
        draws = getattr(local, "draws", None)
        if draws is None:
            draws = local.draws = random.Random(next(streams))
        path, label = item
        packets = spdl.io.demux_image(path)
        i, j, h, w = crop_box(packets.width, packets.height, draws)
        flip = ",hflip" if draws.uniform(0.0, 1.0) < 0.5 else ""
        desc = (f"crop={w}:{h}:{j}:{i}:exact=1,scale={SIZE}:{SIZE}:flags=bilinear{flip},"
                "format=pix_fmts=rgb24")
        return spdl.io.decode_packets(packets, filter_desc=desc), label

    def collate(items: list[tuple[Any, int]]) -> dict[str, torch.Tensor]:
        frames = [frame for frame, _ in items]
        nhwc = spdl.io.to_torch(spdl.io.convert_frames(frames))
        return {"image": nhwc.permute(0, 3, 1, 2).contiguous(),
                "label": torch.tensor([label for _, label in items], dtype=torch.int64)}

    pipeline = (
        PipelineBuilder()
        .add_source(source())
        .pipe(decode, concurrency=threads, name="decode")
        .aggregate(spec.batch_size, drop_last=True)
        .pipe(collate, name="collate")
        .add_sink(PREFETCH_FACTOR)
        .build(num_threads=threads)
    )
    pipeline.start(timeout=30)
    stopped = False

    def stream() -> Iterator[dict[str, torch.Tensor]]:
        while True:
            yield pipeline.get_item(timeout=60)

    def close() -> None:
        nonlocal stopped
        if not stopped:
            stopped = True
            pipeline.stop(timeout=30)

    return stream(), close

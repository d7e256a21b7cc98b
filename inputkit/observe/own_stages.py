"""Verdicts on inputkit's own stages after the workers, and the decoder note of image runs.

Time the consumer's thread spends inside ``next()`` with a batch ready is inputkit's work
(taking the batch, making its tensors), not the training step's: the consumer-bound verdict
holds only when the consumer spends most of the span outside ``next()``. The device stage's
thread (the CUDA copy, or ``device.normalize`` on CPU) is a stage of its own: when the
consumer waits on it while batches wait in the batch queue, it is named with its busy share.
"""

from __future__ import annotations

from typing import Any

from inputkit.kinds.view import view_of
from inputkit.observe.evidence import Evidence, QueueEvidence
from inputkit.observe.verdict import Verdict

# The consumer inside next() at least this share of a span in which its queue kept up:
# inputkit's own work on its thread sets the pace, not the training step.
IN_NEXT = 0.5


def delivery_bound(e: Evidence, last: QueueEvidence) -> Verdict | None:
    """The consumer's queue kept up, yet its thread was mostly inside inputkit's next()."""
    if e.in_next < IN_NEXT or view_of(e.kind).consumer_fetches:  # (judged by its fetch share)
        return None
    per_batch = e.in_next * e.span_s / e.batches if e.batches else 0.0
    cost = f"{per_batch * 1e6:.0f} us" if per_batch < 1e-3 else f"{per_batch * 1e3:.1f} ms"
    return Verdict("delivery-bound", f"The {last.stage} was empty only {last.empty:.0%} of "
                   f"{e.over}, yet the consumer spent {e.in_next:.0%} of it inside inputkit's "
                   f"next() ({cost} a batch): taking each batch and making its tensors, "
                   f"inputkit's own work on the consumer's thread, sets the pace, not a training "
                   f"step. With no step (inputkit bench) this is the input's ceiling; nothing in "
                   f"the input needs to change.")


def device_stage_bound(e: Evidence, seen: str, batch: QueueEvidence) -> Verdict:
    """The consumer waits on the device stage's thread while batches wait before it."""
    ms = e.device_busy * e.span_s / e.batches * 1e3 if e.batches else 0.0
    busy = f"busy {e.device_busy:.0%} of {e.over}, {ms:.1f} ms a batch"
    if e.device == "cpu":
        return Verdict("normalize-bound", f"{seen} while the batch queue was empty only "
                       f"{batch.empty:.0%}: batches wait for device.normalize, which converts "
                       f"them to float32 in the device stage's thread ({busy}) ahead of the "
                       f"consumer: the slowest stage. No setting makes the conversion cheaper "
                       f"on a CPU device (on a GPU it runs on the copy's stream); "
                       f"device.normalize=null measures the input without it.", starved=True)
    return Verdict("copy-bound", f"{seen} while the batch queue was empty only "
                   f"{batch.empty:.0%}: batches wait for the host-to-device copy (its thread "
                   f"{busy}), the slowest stage.", starved=True)


# Image decoding (Pillow, OpenCV) releases the GIL, so thread workers decode in parallel and
# skip the hand-over through shared memory: on 2 cores, inputkit compare's W5 (JPEG ->
# RandomResizedCrop 224) gave 2,345 images/s with 2 threads and 1,791 with 2 processes, at
# 0.82 and 1.09 CPU-ms an image (docs/images.md).
IMAGE_SOURCES = ("inputkit.sources.images.", "image_folder", "image_list", "image_shards")
DECODE_BOUND = ("CPU-bound", "fetch-bound", "transport-bound")


def decoding_note(c: Any, e: Evidence, verdict: Verdict, decoder: str | None = None) -> str:
    """For a run whose workers decode images and set the pace: which worker kind is right, and
    (``decoder``: the summary's ``sources.<input>.decoder``) whether OpenCV would help."""
    decodes = view_of(e.kind).decodes  # (None, Ray's: which kind is right is a question of CPUs)
    if not c.source.startswith(IMAGE_SOURCES) or verdict.kind not in DECODE_BOUND \
            or decodes is None:
        return ""
    if decodes == "process":
        return (" The workers decode images, which releases the GIL: thread workers "
                "(workers.kind=thread) decode as fast in parallel and skip the hand-over through "
                "shared memory (measured 1.3x the images/s at three quarters of the CPU per "
                "image; docs/images.md).")
    note = (" The workers decode images, which releases the GIL: thread workers are the right "
            "kind here (process workers would add a copy through shared memory).")
    half = "OpenCV takes about half of Pillow's CPU per image"
    if decoder is None:  # not known here (diagnose() without the runner's source_info)
        return (f"{note} Where Pillow decodes (the summary's sources.<input>.decoder), {half}: "
                f"pip install 'inputkit-ml[images]'.")
    if decoder != "pillow":  # opencv already; or "pillow (exact)", torchvision's steps by choice
        return note
    from inputkit.images.decode import opencv_available

    if opencv_available():  # installed, so Pillow was asked for: decode.backend=pillow
        return f"{note} Pillow decodes here though OpenCV is installed: {half} (source.decode.backend=auto)."
    return f"{note} Pillow decodes here: {half}: pip install 'inputkit-ml[images]'."

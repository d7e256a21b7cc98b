"""Every peer ``inputkit compare`` runs, in every workload, and how "best peer" is chosen.

A user picking a loader would try the in-process DataLoader, a thread pool and worker
processes; so every workload runs all of them, and inputkit's ratio is taken against
the fastest, whichever it is. Peers whose package is missing are skipped with the
reason (the thread peer needs ``torchdata``).

W5 (real JPEGs) has peers of its own, ``IMAGE_PEERS``: DataLoader over an ImageFolder-style
dataset doing torchvision's Pillow recipe, and the same recipe with OpenCV (each in-process
and with worker processes), DataLoader with albumentations' recipe (skipped with the reason
where albumentations is not installed), and SPDL (FFmpeg decoding in threads; skipped with
the reason where it cannot decode). Each says which decoder it uses, so that inputkit can be
compared with the fastest peer of all and with the fastest one decoding as it does.
"""

from __future__ import annotations

import importlib
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from inputkit.config.spec import InputSpec

if TYPE_CHECKING:
    from inputkit.peers.compare import Measurement

Opened = tuple[Iterator[Any], Callable[[], None]]


@dataclass(frozen=True)
class Peer:
    """One way to load the workload's fetch without inputkit."""

    key: str
    shape: str  # "in-process", "threads" or "processes": where the fetch runs
    title: str  # the row label, formatted with the input's worker count as {n}
    package: str  # the module it needs
    install: str  # what to run when that module is missing
    opener: Callable[[InputSpec], Opened]  # imports the peer's package when called
    # A deeper check than the import, when importing is not enough (SPDL imports without
    # the FFmpeg libraries it needs): returns why the peer cannot run, or None.
    check: Callable[[], str | None] | None = None
    decoder: str | None = None  # W5: the library that decodes ("pillow", "opencv", "ffmpeg")

    def label(self, spec: InputSpec) -> str:
        return self.title.format(n=spec.worker_count)

    def missing(self) -> str | None:
        """Why this peer cannot run here (its package does not import), or None."""
        try:
            importlib.import_module(self.package)
        except ImportError as exc:
            return f"{self.package} does not import ({exc}); {self.install}"
        return self.check() if self.check is not None else None

    def open(self, spec: InputSpec) -> Opened:
        """Start the peer on ``spec``'s source: a stream of batches and its ``close``."""
        return self.opener(spec)


def _dataloader(variant: str) -> Callable[[InputSpec], Opened]:
    def opener(spec: InputSpec) -> Opened:
        from inputkit.peers.torch_loader import open_loader

        return open_loader(variant, spec)

    return opener


def _nodes(spec: InputSpec) -> Opened:
    from inputkit.peers.nodes_loader import open_nodes

    return open_nodes(spec)


_TORCH = "pip install torch"
PEERS: tuple[Peer, ...] = (
    Peer("dataloader-in-process", "in-process", "DataLoader in-process (num_workers=0)",
         "torch", _TORCH, _dataloader("in-process")),
    Peer("dataloader-per-item", "processes", "DataLoader per-item ({n} procs)",
         "torch", _TORCH, _dataloader("per-item")),
    Peer("dataloader-chunks", "processes", "DataLoader chunks ({n} procs)",
         "torch", _TORCH, _dataloader("chunks")),
    Peer("nodes-threads", "threads", "torchdata.nodes ({n} threads)",
         "torchdata.nodes", "pip install torchdata", _nodes),
)


def _image_dataloader(variant: str, recipe: str = "pillow") -> Callable[[InputSpec], Opened]:
    def opener(spec: InputSpec) -> Opened:
        from inputkit.peers.torch_loader import open_image_loader

        return open_image_loader(variant, spec, recipe)

    return opener


def _albumentations_check() -> str | None:
    from inputkit.peers.cv2_recipe import albumentations_missing

    return albumentations_missing()


def _spdl(spec: InputSpec) -> Opened:
    from inputkit.peers.spdl_loader import open_spdl

    return open_spdl(spec)


def _spdl_check() -> str | None:
    from inputkit.peers.spdl_loader import spdl_missing

    return spdl_missing()


# W5 (real images): the same JPEG folder, decoded, cropped, flipped and batched by each.
_OPENCV = "pip install 'inputkit-ml[images]' (opencv-python-headless)"
IMAGE_PEERS: tuple[Peer, ...] = (
    Peer("dataloader-pillow-in-process", "in-process", "DataLoader + Pillow in-process (num_workers=0)",
         "torch", _TORCH, _image_dataloader("in-process"), decoder="pillow"),
    Peer("dataloader-pillow", "processes", "DataLoader + Pillow ({n} procs)",
         "torch", _TORCH, _image_dataloader("processes"), decoder="pillow"),
    Peer("dataloader-opencv-in-process", "in-process", "DataLoader + OpenCV in-process (num_workers=0)",
         "cv2", _OPENCV, _image_dataloader("in-process", "opencv"), decoder="opencv"),
    Peer("dataloader-opencv", "processes", "DataLoader + OpenCV ({n} procs)",
         "cv2", _OPENCV, _image_dataloader("processes", "opencv"), decoder="opencv"),
    Peer("albumentations", "processes", "DataLoader + albumentations ({n} procs)", "cv2", _OPENCV,
         _image_dataloader("processes", "albumentations"), _albumentations_check, decoder="opencv"),
    Peer("spdl", "threads", "SPDL, FFmpeg decode ({n} threads)", "spdl.pipeline",
         "pip install 'inputkit-ml[peers]' (spdl) and FFmpeg's shared libraries", _spdl, _spdl_check,
         decoder="ffmpeg"),
)


def best_peer(measured: Sequence[Measurement]) -> Measurement:
    """The fastest of all the peers that ran, by batches/s."""
    if not measured:
        raise ValueError("no peer ran: install torch (pip install torch) to compare")
    return max(measured, key=lambda m: m.batches_per_s)

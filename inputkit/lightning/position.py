"""Where a Lightning run's training input stands, as of the batches the model trained on.

Pure functions over ``Runner.state_dict()`` dicts (no Lightning, no torch): taking back batches
that were handed out but not trained (a checkpoint written inside a training step, a loader
fetched ahead), merging the states of DDP ranks into one that every rank can resume from,
and reading from Lightning's progress counters how many batches of the epoch count as trained.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import Any

import numpy as np

from inputkit.errors import InputkitError


def _unpack(raw: bytes, length: int) -> np.ndarray:
    return np.unpackbits(np.frombuffer(raw, np.uint8), count=length).astype(bool)


def _pack(entry: dict[str, Any], masks: dict[int, np.ndarray]) -> None:
    entry["consumed"] = {e: np.packbits(m).tobytes() for e, m in sorted(masks.items())}
    entry["samples"] = {e: int(m.sum()) for e, m in sorted(masks.items())}


def take_back(state: dict[str, Any], input: str, batches: Sequence[tuple[int, np.ndarray]],
              older: Callable[[int], np.ndarray | None]) -> dict[str, Any]:
    """``state`` (a ``Runner.state_dict()``) with the samples of ``batches`` (each: its epoch,
    its sample indices) counted as not received, so a resumed run reads them again.

    ``older(epoch)``: the mask of samples received in an epoch the state has already left
    (the pass ended after the batch was handed out); the state goes back to that epoch.
    A new dict; ``state`` is not changed."""
    entry = dict(state["inputs"][input])
    if not batches or not entry.get("resumable"):
        return state
    length = int(entry["length"])
    masks = {int(e): _unpack(raw, length) for e, raw in entry["consumed"].items()}
    for epoch, indices in batches:
        if epoch < int(entry["epoch"]):  # handed out in an epoch the runner has finished since
            mask = older(epoch)
            if mask is None:
                raise InputkitError(
                    f"input '{input}': cannot take back a batch of epoch {epoch} that was handed "
                    "out but not trained: the runner no longer holds that epoch's record")
            masks = {e: m for e, m in masks.items() if e > epoch}
            masks[epoch] = mask.copy()
            entry["epoch"] = epoch
        mask = masks.get(epoch)
        if mask is None:
            mask = masks[epoch] = np.zeros(length, dtype=bool)
        mask[indices] = False
    # A composite source's component positions were worked out from the masks before this
    # change; they are informative only (load_state_dict does not read them), so drop them
    # rather than keep figures that no longer match.
    entry.pop("components", None)
    _pack(entry, masks)
    return {**state, "inputs": {**state["inputs"], input: entry}}


def merge_ranks(states: Sequence[dict[str, Any]]) -> dict[str, Any]:
    """One runner state covering every rank's: per input, the samples any rank received.

    Each rank's Runner saves only its own share, and a resumed Runner splits what is left of
    the epoch over the ranks again, so every rank must load the union. Ranks standing in
    different epochs (uneven shares, which DDP does not support) cannot be merged: an error."""
    first = states[0]
    inputs: dict[str, Any] = {}
    for name, entry in first["inputs"].items():
        entries = [s["inputs"][name] for s in states]
        if not entry.get("resumable"):
            inputs[name] = entry
            continue
        epochs = sorted({int(e["epoch"]) for e in entries})
        if len(epochs) > 1:
            raise InputkitError(
                f"input '{name}': the ranks stand in different epochs {epochs} at this "
                "checkpoint, so their positions cannot be saved as one; every rank must take "
                "the same number of steps per epoch (give each rank an equal share: a sample "
                "count that divides into batch_size x ranks, or drop_last: true)")
        length = int(entry["length"])
        masks: dict[int, np.ndarray] = {}
        for e in entries:
            for epoch, raw in e["consumed"].items():
                mask = _unpack(raw, length)
                epoch = int(epoch)
                masks[epoch] = masks[epoch] | mask if epoch in masks else mask
        merged = {k: v for k, v in entry.items() if k != "components"}
        _pack(merged, masks)
        inputs[name] = merged
    return {**first, "inputs": inputs}


def trained_batches(progress: Any) -> int:
    """The batches of the current epoch that a run resumed from a checkpoint written now will
    count as trained, from Lightning's ``batch_progress.current`` (ready, started, processed,
    completed): written at the end of a training step (``on_train_batch_end``), that step's
    batch counts; written anywhere else (inside a step, on an exception), only the completed
    ones do. The same rule Lightning's training epoch loop applies when it restarts."""
    ready, started = int(progress.ready), int(progress.started)
    processed, completed = int(progress.processed), int(progress.completed)
    if ready == started == processed and completed == processed - 1:
        return processed
    return completed

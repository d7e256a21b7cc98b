"""The runner's saved state: written from its coordinators, read back and checked on resume.

``Runner.state_dict()`` / ``load_state_dict()`` are the public calls; what a saved state holds
(per index-range input: the epoch and the samples the consumer received in it, as bit masks)
and whether it still applies to the source are decided here, so the format has one writer
and one reader beside each other.
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Sequence
from typing import Any

import numpy as np

from inputkit.errors import InputkitError

VERSION = 1
# input -> (the saved epoch, epoch -> the samples received in it, one bool per sample)
Resume = tuple[int, dict[int, np.ndarray]]
# The warning is about the runner's resume: logged under its name, as before this module.
log = logging.getLogger("inputkit.runner")


def input_state(spec: Any, coordinators: Sequence[Any], info: dict[str, Any],
                positions: Callable[..., dict[str, Any]] | None) -> dict[str, Any]:
    """One input's entry of the state: its epoch (the least of its devices') and the samples
    received in it and later, merged over the devices; ``positions``: a composite source's
    ``component_positions``."""
    length = coordinators[0].length
    if length is None:
        return {"resumable": False}
    epoch = min(c.epoch for c in coordinators)
    consumed: dict[int, np.ndarray] = {}
    for c in coordinators:
        for e, mask in list(c.consumed.items()):
            if e >= epoch:
                consumed[e] = consumed[e] | mask if e in consumed else mask.copy()
    state: dict[str, Any] = {
        "resumable": True, "length": length, "epoch": epoch,
        "shuffle": spec.epoch.shuffle, "seed": spec.epoch.seed,
        "consumed": {e: np.packbits(m).tobytes() for e, m in sorted(consumed.items())},
        "samples": {e: int(m.sum()) for e, m in sorted(consumed.items())},
    }
    if positions is not None:  # where each component of a composite source stands
        state["components"] = positions(info, epoch, consumed.get(epoch))
    return state


def read_state(state: Any, input_names: Sequence[str]) -> dict[str, Resume]:
    """The saved positions of each resumable input in ``state`` (a ``state_dict()``)."""
    if not isinstance(state, dict) or state.get("version") != VERSION:
        raise InputkitError("load_state_dict(): not an inputkit runner state (expected the "
                            "dict that Runner.state_dict() returned, version 1)")
    resume: dict[str, Resume] = {}
    for name, saved in state.get("inputs", {}).items():
        if name not in input_names:
            raise InputkitError(f"load_state_dict(): the state has input '{name}', this runner "
                                f"has {', '.join(input_names)}")
        if not saved.get("resumable"):
            log.warning("input '%s' reads by fetch and starts from the beginning", name)
            continue
        length = int(saved["length"])
        masks = {int(e): np.unpackbits(np.frombuffer(raw, np.uint8), count=length).astype(bool)
                 for e, raw in saved["consumed"].items()}
        resume[name] = (int(saved["epoch"]), masks)
    return resume


def check_resume(resume: Resume | None, name: str, length: int | None) -> Resume | None:
    """``resume`` when it applies to the input's source as built now; an error when the source
    changed (read by fetch now, or another number of samples per epoch)."""
    if resume is None:
        return None
    if length is None:
        raise InputkitError(f"load_state_dict(): input '{name}' was saved as an index-range "
                            "input, but its source now reads by fetch")
    masks = resume[1]
    if any(len(m) != length for m in masks.values()):
        saved = len(next(iter(masks.values())))
        raise InputkitError(f"load_state_dict(): input '{name}' was saved with {saved:,} "
                            f"samples per epoch, but its source now has {length:,}; the "
                            "saved positions do not apply")
    return resume

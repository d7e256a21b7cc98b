"""What Lightning iterates for training: one pass per epoch over an InputkitIterableDataset,
counting the batches it hands out so the position can be saved as of the trained ones."""

from __future__ import annotations

from collections import deque
from collections.abc import Iterator
from typing import Any

import numpy as np

from inputkit.errors import InputkitError
from inputkit.lightning.position import take_back
from inputkit.torch_adapter import InputkitIterableDataset

_KEEP = 8  # batches remembered for taking back; Lightning is at most a batch or two ahead
LOADER_STATE = "inputkit.lightning.InputkitLoader"  # marks the loader's own (empty) state


class InputkitLoader:
    """An iterable of batches (dicts of tensors) for ``Trainer.fit``: each ``iter()`` is one
    epoch, ``len()`` its batches on this rank (indexable sources).

    It has ``state_dict``/``load_state_dict`` so that Lightning treats it as resumable, but
    they hold no position: the :class:`~inputkit.lightning.InputkitDataModule` that made it
    saves and restores the position, once, in its own ``state_dict`` (one owner, never two).
    """

    def __init__(self, dataset: InputkitIterableDataset) -> None:
        self.input_dataset = dataset  # not `.dataset`: Lightning would warn about DataLoader workers
        self._taken: deque[tuple[int, int, np.ndarray | None]] = deque(maxlen=_KEEP)
        self._handed = 0  # batches of the current epoch handed out (a resumed one: from base)
        self._base = 0  # batches of the epoch trained before a resume, for the next pass
        self._pass: Iterator[dict[str, Any]] | None = None
        self._ended = True  # the current pass saw the end of its epoch
        self.restored = False  # the owning data module loaded a position into the dataset

    def __len__(self) -> int:
        return len(self.input_dataset)

    def __iter__(self) -> Iterator[dict[str, Any]]:
        self._finish_pass()
        self._taken.clear()
        self._handed, self._base = self._base, 0
        self._ended = False
        self._pass = self._batches(iter(self.input_dataset))
        return self._pass

    def _batches(self, batches: Iterator[dict[str, Any]]) -> Iterator[dict[str, Any]]:
        for batch in batches:
            self._handed += 1
            runner = self.input_dataset.runner
            coordinator = runner.coordinators(self.input_dataset.input)[self.input_dataset.device] \
                if runner is not None else None
            if coordinator is not None:
                # (the coordinator's own copy, replaced by the next batch's)
                self._taken.append((self._handed, coordinator.epoch, coordinator.last_indices))
            yield batch
        self._ended = True

    def _finish_pass(self) -> None:
        """Lightning stops asking once ``len()`` batches came, so a pass that handed out all of
        them has not seen its epoch end; ask once more, so the Runner goes on to the next
        epoch (the same workers, the next shuffle) instead of a new Runner starting over."""
        if self._pass is None or self._ended:
            return
        try:
            whole = len(self.input_dataset)
        except TypeError:  # read by fetch: no length, and nothing to resume
            return
        if self._handed < whole:
            return  # left early (max_steps, limit_train_batches): the dataset's own rules apply
        extra = next(self._pass, None)
        if extra is not None:
            raise InputkitError(f"input '{self.input_dataset.input}': the pass yielded more than its "
                                f"len() of {whole} batches")

    def position(self, trained: int | None) -> tuple[dict[str, Any], int]:
        """The dataset's state as of ``trained`` batches of this epoch (None: every batch
        handed out), and the batches of the epoch that the state counts as trained."""
        if trained is not None and trained >= self._handed:
            self._finish_pass()  # the whole epoch trained: save the start of the next one
        state = self.input_dataset.state_dict()
        if trained is None or trained >= self._handed:
            return state, 0 if self._ended else self._handed
        back = [(epoch, indices) for k, epoch, indices in self._taken if k > trained]
        if len(back) != self._handed - trained or any(i is None for _, i in back):
            raise InputkitError(
                f"input '{self.input_dataset.input}': {self._handed - trained} batch(es) were handed "
                f"out but not trained at this checkpoint, more than the {_KEEP} kept to take "
                "back (or not read by index); save checkpoints at the end of a training step")
        runner = self.input_dataset.runner

        def older(epoch: int) -> np.ndarray | None:
            if runner is None:
                return None
            masks = [c.consumed.get(epoch) for c in runner.coordinators(self.input_dataset.input)]
            masks = [m for m in masks if m is not None]
            return np.logical_or.reduce(masks) if masks else None

        if state["runner"] is not None:
            state = {**state, "runner": take_back(state["runner"], self.input_dataset.input,
                                                  back, older)}  # type: ignore[arg-type]
        return state, trained

    def resume(self, state: dict[str, Any], trained: int) -> None:
        """Load a position from :meth:`position` into the dataset; the next pass counts its
        batches from ``trained``, as Lightning's restored epoch loop does."""
        self.input_dataset.load_state_dict(state)
        self._pass, self._ended = None, True
        self._base = trained
        self.restored = True

    # Lightning's Stateful protocol: the position is the data module's (see the class doc) ---

    def state_dict(self) -> dict[str, Any]:
        return {"kind": LOADER_STATE, "position": "InputkitDataModule.state_dict"}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        if not isinstance(state, dict) or state.get("kind") != LOADER_STATE:
            raise InputkitError("InputkitLoader.load_state_dict(): not this loader's state")
        if not self.restored:
            raise InputkitError(
                f"input '{self.input_dataset.input}': the checkpoint's input position is kept by "
                "InputkitDataModule, but it was not restored: pass the data module to "
                "Trainer.fit(model, datamodule=dm, ckpt_path=...) rather than its loaders, so "
                "Lightning gives it its state")

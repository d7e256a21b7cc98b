"""``InputkitDataModule``: inputkit's train (and val) input as a LightningDataModule whose
checkpoint state is the Runner's, so ``Trainer.fit(..., ckpt_path=...)`` resumes mid-epoch."""

from __future__ import annotations

import logging
from typing import Any

import lightning.pytorch as pl

from inputkit.config.spec import RunSpec, load_spec
from inputkit.errors import InputkitError
from inputkit.lightning.loader import InputkitLoader
from inputkit.lightning.position import merge_ranks, trained_batches
from inputkit.runner import Runner
from inputkit.torch_adapter import InputkitIterableDataset

log = logging.getLogger(__name__)
_STATE_KIND = "inputkit.lightning.InputkitDataModule"


def _dataset(cfg: Any, input: str | None, what: str) -> InputkitIterableDataset:
    spec = cfg if isinstance(cfg, RunSpec) else load_spec(cfg)
    if input is None and len(spec.inputs) > 1:
        raise InputkitError(f"InputkitDataModule({what}_cfg=...): the config declares inputs "
                            f"{', '.join(s.name for s in spec.inputs)}; pass {what}_input=<name>")
    return InputkitIterableDataset(spec, device=0, input=input)


class InputkitDataModule(pl.LightningDataModule):
    """Training (and optionally validation) batches from inputkit configs.

    ``train_cfg`` / ``val_cfg``: what :func:`inputkit.compose` returns, a plain dict or a
    RunSpec, each feeding one device (``devices`` in the config; under DDP, this rank's own).
    ``train_input`` / ``val_input`` pick a named input of a config that declares several.

    ``state_dict()`` is the training input's position as of the batches the model trained on
    (not the ones Lightning fetched ahead of its step); under DDP it covers every rank. It is
    the only saved position: the loader's own ``state_dict`` is a marker, so Lightning's loop
    does not restore a second copy. ``teardown`` stops the Runners.
    """

    def __init__(self, train_cfg: Any, val_cfg: Any = None, *, train_input: str | None = None,
                 val_input: str | None = None) -> None:
        super().__init__()
        self.train_set = _dataset(train_cfg, train_input, "train")
        self.val_set = _dataset(val_cfg, val_input, "val") if val_cfg is not None else None
        self._train = InputkitLoader(self.train_set)
        if self.val_set is None:  # Lightning asks is_overridden("val_dataloader"): say no
            self.val_dataloader = None  # type: ignore[assignment]

    # the loaders ------------------------------------------------------------------------------

    def train_dataloader(self) -> InputkitLoader:
        return self._train

    def val_dataloader(self) -> Any:
        if self.val_set is None:  # not reached through Lightning (shadowed in __init__)
            raise InputkitError("InputkitDataModule: no val_cfg was given, so no val_dataloader")
        return InputkitLoader(self.val_set)  # no position: validation starts over each time

    @property
    def train_runner(self) -> Runner | None:
        """The training input's running Runner (for ``stats()``), or None."""
        return self.train_set.runner

    # the position -----------------------------------------------------------------------------

    def state_dict(self) -> dict[str, Any]:
        """The training input's position as of the batches trained (Lightning's progress
        counters say how many), merged over DDP ranks."""
        trainer = getattr(self, "trainer", None)  # set by Lightning while it runs
        trained = None
        if trainer is not None and trainer.training:
            trained = trained_batches(trainer.fit_loop.epoch_loop.batch_progress.current)
        data, trained_now = self._train.position(trained)
        runners = [data["runner"]]
        import torch.distributed as dist

        if dist.is_available() and dist.is_initialized() and dist.get_world_size() > 1:
            gathered: list[Any] = [None] * dist.get_world_size()
            dist.all_gather_object(gathered, data["runner"])
            runners = gathered
        if any(r is None for r in runners):
            return {}  # nothing delivered yet on some rank: the fit starts from the beginning
        data = {**data, "runner": merge_ranks(runners) if len(runners) > 1 else runners[0]}
        return {"kind": _STATE_KIND, "version": 1, "train": data, "trained": trained_now}

    def load_state_dict(self, state_dict: dict[str, Any]) -> None:
        """Resume the training input from :meth:`state_dict` (Lightning calls this with the
        checkpoint's entry before it asks for the loaders)."""
        if not state_dict:
            return
        if state_dict.get("kind") != _STATE_KIND or state_dict.get("version") != 1:
            raise InputkitError("InputkitDataModule.load_state_dict(): not an InputkitDataModule "
                                f"state of version 1 (got kind {state_dict.get('kind')!r}, "
                                f"version {state_dict.get('version')!r})")
        self._train.resume(state_dict["train"], int(state_dict["trained"]))

    # lifecycle --------------------------------------------------------------------------------

    def teardown(self, stage: str) -> None:
        self.train_set.close()
        if self.val_set is not None:
            self.val_set.close()

"""``InputkitMetricsCallback``: the training input's figures in the trainer's loggers.

Reads ``Runner.stats()`` (a snapshot the pipeline keeps anyway) at most every ``every_s``
seconds, from ``on_train_batch_end``; between reads a step costs one clock reading. The
figures are those of ``metrics.jsonl`` over the span since the last read.
"""

from __future__ import annotations

import logging
import time
from typing import Any

import lightning.pytorch as pl

from inputkit.errors import ConfigError
from inputkit.observe.diagnosis import live_verdicts
from inputkit.observe.metrics import window
from inputkit.observe.stats import RunnerStats
from inputkit.runner import Runner

log = logging.getLogger(__name__)


def _train_runner(trainer: pl.Trainer) -> Runner | None:
    """The Runner feeding training: the data module's, or an inputkit loader's."""
    from inputkit.lightning.datamodule import InputkitDataModule
    from inputkit.lightning.loader import InputkitLoader

    datamodule = getattr(trainer, "datamodule", None)
    if isinstance(datamodule, InputkitDataModule):
        return datamodule.train_runner
    loader = trainer.fit_loop._combined_loader
    for iterable in loader.flattened if loader is not None else ():
        if isinstance(iterable, InputkitLoader):
            return iterable.input_dataset.runner
    return None


def figures(stats: RunnerStats, before: RunnerStats | None, prefix: str = "input/"
            ) -> tuple[dict[str, float], list[str]]:
    """Numbers to log over the span from ``before`` to ``stats``, and each device's verdict
    as text (``"<input>/<device>: <kind>. <what to try>"``) where the span allows one."""
    win = window(stats, before)
    out: dict[str, float] = {f"{prefix}samples_per_s": win.samples_per_s,
                             f"{prefix}batches_per_s": win.batches_per_s,
                             f"{prefix}mb_per_s": win.mb_per_s}
    texts: list[str] = []
    verdicts = live_verdicts(win) if before is not None else [None] * len(win.coordinators)
    for c, verdict in zip(win.coordinators, verdicts, strict=True):
        at = f"{prefix}{c.input}/{c.device_index}/"
        out[f"{at}samples_per_s"] = c.samples_per_s
        out[f"{at}consumer_wait"] = c.in_next  # share of the span the training loop waited
        out[f"{at}restarts"] = float(c.stats.workers.restarts)
        out[f"{at}skipped_samples"] = float(c.stats.workers.skipped_samples)
        for q in c.queues:
            name = q.stage.short
            out[f"{at}{name}/fill"] = q.items / q.capacity if q.capacity else 0.0
            out[f"{at}{name}/full"] = q.full
            out[f"{at}{name}/empty"] = q.empty
        if verdict is not None:
            out[f"{at}starved"] = 1.0 if verdict.starved else 0.0
            texts.append(verdict.line(f"{c.input}/{c.device}"))
    return out, texts


class InputkitMetricsCallback(pl.Callback):
    """Logs the training input's figures to every logger of the trainer, every ``every_s``
    seconds of training (at a step's end): samples/s, batches/s, MB/s, each device's consumer
    wait, queue fill and full/empty shares, restarts, skipped samples, and whether the input
    starves the step; the verdict's text goes to loggers that take text (TensorBoard's
    ``add_text``) and to this module's log when it changes."""

    def __init__(self, every_s: float = 10.0, prefix: str = "input/") -> None:
        if not every_s >= 0:
            raise ConfigError("InputkitMetricsCallback(every_s=...)",
                              f"expected seconds >= 0, got {every_s!r}")
        self.every_s = float(every_s)
        self.prefix = prefix
        self._due = 0.0
        self._before: RunnerStats | None = None
        self._runner: Runner | None = None
        self._verdicts: list[str] = []

    def on_train_batch_end(self, trainer: pl.Trainer, pl_module: pl.LightningModule,
                           outputs: Any, batch: Any, batch_idx: int) -> None:
        now = time.monotonic()
        if now < self._due:
            return
        self._due = now + self.every_s
        self.log_now(trainer)

    def log_now(self, trainer: pl.Trainer) -> dict[str, float]:
        """Read the stats and log them now; returns what was logged (empty: no Runner)."""
        runner = _train_runner(trainer)
        if runner is None:
            return {}
        if runner is not self._runner:  # a new Runner counts from zero again
            self._runner, self._before = runner, None
        stats = runner.stats()
        numbers, texts = figures(stats, self._before, self.prefix)
        self._before = stats
        for logger in trainer.loggers:
            logger.log_metrics(numbers, step=trainer.global_step)
            if texts and texts != self._verdicts:
                add_text = getattr(getattr(logger, "experiment", None), "add_text", None)
                if callable(add_text):
                    add_text(f"{self.prefix}verdict", "\n\n".join(texts), trainer.global_step)
        if texts and texts != self._verdicts:
            log.info("input: %s", "; ".join(texts))
        self._verdicts = texts or self._verdicts
        return numbers

"""``metrics.wandb=true``: each record logged to a W&B run (``wandb.log``).

An embedded runner logs to the run the training script started (``wandb.init`` before
``Runner.start``); its figures join the script's next step (``commit=False``), so they never
move the script's own step counter. ``inputkit bench`` starts a run when none is active,
logs a step per record, and finishes that run at the end. Every figure is charted against
``inputkit/t`` (seconds since the runner started). Texts are logged when they change.
"""

from __future__ import annotations

import os
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from inputkit.errors import ConfigError
from inputkit.observe.metric_names import PREFIX, flatten


class WandbSink:
    """Logs records to the active W&B run, or to one it starts (``start=True``)."""

    def __init__(self, *, start: bool = False, run_dir: Path | None = None,
                 config: Any = None) -> None:
        import wandb

        self._wandb = wandb
        self._owned = False
        run = wandb.run
        if run is None:
            if not start:
                raise ConfigError("metrics.wandb", "is true but no W&B run is active: call "
                                  "wandb.init() before Runner.start(), or unset metrics.wandb")
            where = None if run_dir is None or os.environ.get("WANDB_DIR") else run_dir
            if where is not None:  # the bench's run directory, unless WANDB_DIR says
                where.mkdir(parents=True, exist_ok=True)
            run = wandb.init(project=os.environ.get("WANDB_PROJECT", "inputkit"),
                             job_type="inputkit-bench", config=config,
                             dir=str(where) if where is not None else None)
            self._owned = True
        self.run = run
        run.define_metric(PREFIX + "t")
        run.define_metric(PREFIX + "*", step_metric=PREFIX + "t")
        self._texts: dict[str, str] = {}

    def write(self, record: Mapping[str, Any]) -> None:
        numbers, texts = flatten(record)
        data: dict[str, Any] = dict(numbers)
        for name, text in texts.items():
            if self._texts.get(name) != text:
                self._texts[name] = text
                data[name] = text
        self.run.log(data, commit=self._owned)

    def close(self) -> None:
        """Finish the run this sink started (a script's own run is the script's to finish)."""
        if self._owned:
            self._owned = False
            self.run.finish()

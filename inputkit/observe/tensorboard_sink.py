"""``metrics.tensorboard=DIR``: each record as TensorBoard scalars (torch's ``SummaryWriter``).

Step ``n`` is the record's position (line ``n`` of ``metrics.jsonl`` in a bench run); the
record's own clock is the scalar ``inputkit/t``. Texts (each coordinator's verdict, the live
warnings) are written when they change, not at every step.
"""

from __future__ import annotations

from collections.abc import Mapping
from pathlib import Path
from typing import Any

from inputkit.observe.metric_names import flatten


class TensorBoardSink:
    """Writes records into an event file under ``log_dir`` (created if needed)."""

    def __init__(self, log_dir: Path) -> None:
        from torch.utils.tensorboard import SummaryWriter

        log_dir.mkdir(parents=True, exist_ok=True)
        self.log_dir = log_dir
        self._writer = SummaryWriter(log_dir=str(log_dir))
        self._step = 0
        self._texts: dict[str, str] = {}

    def write(self, record: Mapping[str, Any]) -> None:
        numbers, texts = flatten(record)
        for name, value in numbers.items():
            self._writer.add_scalar(name, value, self._step)
        for name, text in texts.items():
            if self._texts.get(name) != text:
                self._texts[name] = text
                self._writer.add_text(name, text or "(none)", self._step)
        self._step += 1

    def close(self) -> None:
        """Flush and close the event file (idempotent: SummaryWriter.close is)."""
        self._writer.close()

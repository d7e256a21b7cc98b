"""``metrics.tensorboard=DIR``: each record as TensorBoard scalars (torch's event file writer).

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
    """Writes records into an event file under ``log_dir`` (created if needed): one event per
    record holding all its scalars (31 for one input on CPU), not one event per scalar, which
    costs ~15 ms a record against the writer's bounded queue."""

    def __init__(self, log_dir: Path) -> None:
        from torch.utils.tensorboard.writer import FileWriter

        log_dir.mkdir(parents=True, exist_ok=True)
        self.log_dir = log_dir
        self._writer = FileWriter(str(log_dir))
        self._step = 0
        self._texts: dict[str, str] = {}

    def write(self, record: Mapping[str, Any]) -> None:
        from tensorboard.compat.proto.summary_pb2 import Summary
        from torch.utils.tensorboard.summary import text as text_summary

        numbers, texts = flatten(record)
        self._writer.add_summary(Summary(value=[
            Summary.Value(tag=name, simple_value=value) for name, value in numbers.items()]),
            self._step)
        for name, text in texts.items():
            if self._texts.get(name) != text:
                self._texts[name] = text
                self._writer.add_summary(text_summary(name, text or "(none)"), self._step)
        self._step += 1

    def close(self) -> None:
        """Flush and close the event file (idempotent: FileWriter.close is)."""
        self._writer.close()

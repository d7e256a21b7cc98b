"""One snapshot's record: the line of ``metrics.jsonl``, and what the metric sinks receive.

``inputkit bench`` (its ``Recorder``) and an embedded runner's reporter
(:mod:`inputkit.observe.reporter`) both build records here, so ``metrics.jsonl``, TensorBoard
and W&B show the same figures under the same names, computed once per snapshot.
"""

from __future__ import annotations

from typing import Any

from inputkit.observe.diagnosis import live_verdicts, live_warnings
from inputkit.observe.metrics import Window


def snapshot_record(window: Window, budget_bytes: int | None) -> tuple[dict[str, Any], list[str]]:
    """The JSON-ready record of ``window`` (each coordinator's live verdict included) and the
    live warnings it carries."""
    warnings = live_warnings(window, budget_bytes)
    record = window.record(warnings)
    for entry, verdict in zip(record["coordinators"], live_verdicts(window), strict=True):
        entry["verdict"] = verdict.kind if verdict is not None else None
    return record, warnings

"""The names of a record's figures in TensorBoard and W&B: their path in ``metrics.jsonl``.

``flatten`` only renames: the record's numbers go to the sinks as they are, so a figure
means the same in metrics.jsonl, TensorBoard and W&B (docs/metrics.md lists them).
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from typing import Any

PREFIX = "inputkit/"
_UNSAFE = re.compile(r"[^-/\w.]")  # what TensorBoard would rewrite in a tag (with a warning)


def flatten(record: Mapping[str, Any]) -> tuple[dict[str, float], dict[str, str]]:
    """A record's numbers and texts by name: ``inputkit/`` and the figure's path in the record.

    Coordinators are named by input and device index (``coordinators/main/0/...``), queues
    by stage (``queues/chunk_queue/full``), other lists by position; ``warnings`` is one text
    (a line each); None (not measured) is left out; characters TensorBoard does not take in a
    name become ``_``."""
    numbers: dict[str, float] = {}
    texts: dict[str, str] = {}
    texts[PREFIX + "warnings"] = "\n".join(record.get("warnings") or ())
    _walk({k: v for k, v in record.items() if k != "warnings"}, PREFIX.rstrip("/"),
          numbers, texts)
    return numbers, texts


_IDENTITY = {"input", "device", "device_index", "stage"}  # in the name, not a figure


def _walk(value: Any, path: str, numbers: dict[str, float], texts: dict[str, str]) -> None:
    if value is None:
        return
    if isinstance(value, bool):
        numbers[path] = float(value)
    elif isinstance(value, int | float):
        numbers[path] = float(value)
    elif isinstance(value, str):
        texts[path] = value
    elif isinstance(value, Mapping):
        for key, item in value.items():
            if key not in _IDENTITY or not _is_entry(value):
                _walk(item, f"{path}/{_UNSAFE.sub('_', str(key))}", numbers, texts)
    elif isinstance(value, list | tuple):
        seen: set[str] = set()
        for i, item in enumerate(value):
            name = _entry_name(item, i)
            name = name if name not in seen else f"{name}_{i}"  # two queues of one stage
            seen.add(name)
            _walk(item, f"{path}/{name}", numbers, texts)


def _is_entry(value: Mapping[str, Any]) -> bool:
    """A coordinator's or a queue's entry, whose identity keys are its name."""
    return "stage" in value or ("input" in value and "device_index" in value)


def _entry_name(item: Any, index: int) -> str:
    if isinstance(item, Mapping) and "input" in item and "device_index" in item:
        name = f"{item['input']}/{item['device_index']}"
    elif isinstance(item, Mapping) and "stage" in item:
        name = str(item["stage"]).replace(" ", "_")
    else:
        name = str(index)
    return _UNSAFE.sub("_", name)

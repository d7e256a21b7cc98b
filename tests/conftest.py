"""Shared fixtures: leak checks for pipeline threads, and config helpers."""

from __future__ import annotations

import threading
import time
from collections.abc import Iterator
from typing import Any

import pytest


def pipeline_threads() -> list[threading.Thread]:
    return [t for t in threading.enumerate() if t.name.startswith("inputkit-") and t.is_alive()]


@pytest.fixture(autouse=True)
def no_leaked_threads() -> Iterator[None]:
    """Every test must leave no inputkit thread running (they have 2 s to stop)."""
    yield
    deadline = time.monotonic() + 3.0
    while pipeline_threads() and time.monotonic() < deadline:
        time.sleep(0.02)
    leaked = [t.name for t in pipeline_threads()]
    assert not leaked, f"pipeline threads still running after the test: {leaked}"


def make_cfg(source: dict[str, Any], **top: Any) -> dict[str, Any]:
    """A plain-dict config (no Hydra) around ``source``."""
    cfg: dict[str, Any] = {"source": source, "devices": "cpu"}
    cfg.update(top)
    return cfg

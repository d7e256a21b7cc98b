"""Shared fixtures: leak checks for pipeline threads, processes and shared memory; config helpers."""

from __future__ import annotations

import os
import threading
import time
from collections.abc import Iterator
from typing import Any

import psutil
import pytest


def pipeline_threads() -> list[threading.Thread]:
    return [t for t in threading.enumerate() if t.name.startswith("inputkit-") and t.is_alive()]


def wait_for_no_pipeline_threads(seconds: float = 3.0) -> list[threading.Thread]:
    """Wait up to ``seconds`` for every inputkit thread to end; return those still running."""
    deadline = time.monotonic() + seconds
    while pipeline_threads() and time.monotonic() < deadline:
        time.sleep(0.02)
    return pipeline_threads()


def segments() -> set[str]:
    """This test process's segments (named inputkit_<pid>_...): others' runs do not count."""
    return {name for name in os.listdir("/dev/shm") if name.startswith(f"inputkit_{os.getpid()}_")}


def children() -> set[int]:
    """Live child processes, except multiprocessing's long-lived forkserver and tracker."""
    out = set()
    for child in psutil.Process().children(recursive=True):
        try:
            if child.status() != psutil.STATUS_ZOMBIE and \
                    not any("forkserver" in a or "resource_tracker" in a for a in child.cmdline()):
                out.add(child.pid)
        except psutil.NoSuchProcess:
            pass
    return out


@pytest.fixture(autouse=True)
def no_leaked_threads() -> Iterator[None]:
    """Every test must leave no inputkit thread running (they have 2 s to stop)."""
    yield
    leaked = [t.name for t in wait_for_no_pipeline_threads()]
    assert not leaked, f"pipeline threads still running after the test: {leaked}"


def make_cfg(source: dict[str, Any], **top: Any) -> dict[str, Any]:
    """A plain-dict config (no Hydra) around ``source``."""
    cfg: dict[str, Any] = {"source": source, "devices": "cpu"}
    cfg.update(top)
    return cfg

"""The process's bound on store requests in flight (``storage.concurrency``), for blocking
calls and async gathers alike, and running an async gather from any thread.

Its own module because the bound belongs to the process, not to a store: several stores and
several threads (thread workers, the shard prefetcher) share one gate, rebuilt after a fork.
"""

from __future__ import annotations

import asyncio
import os
import threading
from collections.abc import Callable, Coroutine
from concurrent.futures import ThreadPoolExecutor
from typing import Any

_slot_lock = threading.Lock()
_slot_gate: tuple[int, int, threading.BoundedSemaphore] | None = None


def request_slots(concurrency: int) -> threading.BoundedSemaphore:
    """The process's gate on blocking requests in flight (storage.concurrency)."""
    global _slot_gate
    gate = _slot_gate
    if gate is None or gate[0] != os.getpid() or gate[1] != concurrency:
        with _slot_lock:
            gate = _slot_gate
            if gate is None or gate[0] != os.getpid() or gate[1] != concurrency:
                gate = _slot_gate = (os.getpid(), concurrency, threading.BoundedSemaphore(concurrency))
    return gate[2]


async def acquire(slots: threading.BoundedSemaphore) -> None:
    """Take a slot of the process's gate without blocking the event loop."""
    pause = 0.0005
    while not slots.acquire(blocking=False):
        await asyncio.sleep(pause)
        pause = min(pause * 2, 0.02)


def run_async(make: Callable[[], Coroutine[Any, Any, Any]]) -> Any:
    """``asyncio.run(make())``, also from a thread whose event loop is running (a notebook's,
    an async framework's, with inline workers), where asyncio.run refuses: there the
    coroutine runs to completion on a helper thread of its own."""
    try:
        asyncio.get_running_loop()
    except RuntimeError:
        return asyncio.run(make())
    with ThreadPoolExecutor(1, thread_name_prefix="inputkit-storage-async") as pool:
        return pool.submit(lambda: asyncio.run(make())).result()

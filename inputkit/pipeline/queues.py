"""A bounded FIFO between two pipeline stages, with statistics readable at any time.

Producers block on a full queue (backpressure) and consumers on an empty one;
both wait in short slices and re-check a stop event, so closing never hangs.
The queue accounts how long it has been full and empty: a queue that is mostly
full holds memory for nothing, one that is mostly empty starves its consumer.
"""

from __future__ import annotations

import threading
import time
from collections import deque
from dataclasses import dataclass
from enum import StrEnum
from typing import Any

_POLL_S = 0.05


class Stage(StrEnum):
    """Which stage of the chain a queue feeds, set where the queue is made (the one place that
    knows it; views and verdicts read it instead of parsing queue names)."""

    CHUNKS = "chunk queue"
    BATCHES = "batch queue"
    DEVICE = "device prefetch"
    OTHER = "queue"

    @property
    def short(self) -> str:
        """The one-word label of progress lines: ``chunks``, ``batches``, ``device``."""
        return {"chunk queue": "chunks", "batch queue": "batches",
                "device prefetch": "device"}.get(self.value, self.value)


class QueueClosed(Exception):  # noqa: N818 - a signal, not an error
    """Raised by ``get`` once the queue is closed and drained."""


@dataclass(frozen=True)
class QueueStats:
    """A snapshot of one queue.

    ``time_full_s`` / ``time_empty_s``: seconds the queue spent at capacity / empty
    since it was created. ``put_wait_s`` / ``get_wait_s``: seconds producers /
    consumers spent blocked on it (summed over threads).
    """

    name: str
    capacity: int
    max_bytes: int | None
    items: int
    bytes: int
    peak_items: int
    peak_bytes: int
    items_in: int
    items_out: int
    bytes_in: int
    bytes_out: int
    time_full_s: float
    time_empty_s: float
    put_wait_s: float
    get_wait_s: float
    elapsed_s: float
    stage: Stage = Stage.OTHER

    @property
    def fill(self) -> float:
        """Current fill as a fraction of capacity (of the byte limit when there is one)."""
        if self.max_bytes is not None:
            return self.bytes / self.max_bytes
        return self.items / self.capacity if self.capacity else 0.0

    @property
    def full_fraction(self) -> float:
        return self.time_full_s / self.elapsed_s if self.elapsed_s > 0 else 0.0

    @property
    def empty_fraction(self) -> float:
        return self.time_empty_s / self.elapsed_s if self.elapsed_s > 0 else 0.0


class BoundedQueue:
    """FIFO of at most ``capacity`` payload items; control items bypass the bound."""

    def __init__(self, name: str, capacity: int, max_bytes: int | None = None,
                 stage: Stage = Stage.OTHER) -> None:
        if capacity < 1:
            raise ValueError(f"queue '{name}': capacity must be >= 1, got {capacity}")
        if max_bytes is not None and max_bytes < 1:
            raise ValueError(f"queue '{name}': max_bytes must be >= 1, got {max_bytes}")
        self.name = name
        self.stage = stage
        self.capacity = capacity
        # With a byte limit, a put waits while the bytes would go over it, unless the queue
        # is empty: one item larger than the limit still passes, so nothing deadlocks.
        self.max_bytes = max_bytes
        self._lock = threading.Lock()
        self._not_full = threading.Condition(self._lock)
        self._not_empty = threading.Condition(self._lock)
        self._items: deque[tuple[Any, int, bool]] = deque()  # (item, nbytes, counts)
        self._payload = 0  # items that count against capacity
        self._bytes = 0
        self._closed = False
        self._created = time.monotonic()
        self._since = self._created
        self._time_full = 0.0
        self._time_empty = 0.0
        self._put_wait = 0.0
        self._get_wait = 0.0
        self._items_in = self._items_out = self._bytes_in = self._bytes_out = 0
        self._peak_items = self._peak_bytes = 0
        self._putters = self._getters = 0  # threads waiting in put / get (under the lock)

    def put(self, item: Any, nbytes: int = 0, stop: threading.Event | None = None,
            timeout: float | None = None) -> bool:
        """Append ``item``, waiting while the queue is full.

        False if closed, stopped, or still full after ``timeout`` seconds.
        """
        with self._lock:
            if self._full_for(nbytes) and not self._closed:
                began = time.monotonic()
                self._putters += 1  # notified only while someone waits: a notify costs ~1 us
                try:
                    while self._full_for(nbytes) and not self._closed:
                        waited = time.monotonic() - began
                        if (stop is not None and stop.is_set()) or \
                                (timeout is not None and waited >= timeout):
                            self._put_wait += waited
                            return False
                        self._not_full.wait(_POLL_S if timeout is None else min(_POLL_S, timeout))
                finally:
                    self._putters -= 1
                self._put_wait += time.monotonic() - began
            if self._closed:
                return False
            self._append(item, nbytes, counts=True)
            return True

    def _full_for(self, nbytes: int) -> bool:
        if self._payload >= self.capacity:
            return True
        return self.max_bytes is not None and self._payload > 0 \
            and self._bytes + nbytes > self.max_bytes

    def put_control(self, item: Any) -> bool:
        """Append a control message (end of input, an error) even when full. False if closed."""
        with self._lock:
            if self._closed:
                return False
            self._append(item, 0, counts=False)
            return True

    def get(self, stop: threading.Event | None = None) -> Any:
        """Remove and return the oldest item, waiting while empty.

        Raises QueueClosed once closed and empty, or when ``stop`` is set while waiting.
        """
        with self._lock:
            if not self._items:
                began = time.monotonic()
                self._getters += 1
                try:
                    while not self._items:
                        if self._closed or (stop is not None and stop.is_set()):
                            self._get_wait += time.monotonic() - began
                            raise QueueClosed(self.name)
                        self._not_empty.wait(_POLL_S)
                finally:
                    self._getters -= 1
                self._get_wait += time.monotonic() - began
            item, nbytes, counts = self._items.popleft()
            if counts:
                self._account()
                self._payload -= 1
                self._bytes -= nbytes
                self._items_out += 1
                self._bytes_out += nbytes
                if self._putters:
                    self._not_full.notify()
            return item

    def close(self) -> None:
        """Wake every waiter; later puts fail, gets drain what is left then raise QueueClosed."""
        with self._lock:
            self._closed = True
            self._not_full.notify_all()
            self._not_empty.notify_all()

    def clear(self) -> None:
        """Drop everything buffered (used on shutdown, so producers blocked on put wake up)."""
        with self._lock:
            self._account()
            self._items.clear()
            self._payload = 0
            self._bytes = 0
            self._not_full.notify_all()

    @property
    def closed(self) -> bool:
        return self._closed

    def stats(self) -> QueueStats:
        with self._lock:
            now = time.monotonic()
            pending = now - self._since
            full = self._time_full + (pending if self._at_limit() else 0.0)
            empty = self._time_empty + (pending if self._payload == 0 else 0.0)
            return QueueStats(
                name=self.name, capacity=self.capacity, max_bytes=self.max_bytes,
                items=self._payload, bytes=self._bytes,
                peak_items=self._peak_items, peak_bytes=self._peak_bytes,
                items_in=self._items_in, items_out=self._items_out,
                bytes_in=self._bytes_in, bytes_out=self._bytes_out,
                time_full_s=full, time_empty_s=empty,
                put_wait_s=self._put_wait, get_wait_s=self._get_wait,
                elapsed_s=now - self._created, stage=self.stage,
            )

    def _append(self, item: Any, nbytes: int, counts: bool) -> None:
        self._items.append((item, nbytes, counts))
        if counts:
            self._account()
            self._payload += 1
            self._bytes += nbytes
            self._items_in += 1
            self._bytes_in += nbytes
            if self._payload > self._peak_items:
                self._peak_items = self._payload
            if self._bytes > self._peak_bytes:
                self._peak_bytes = self._bytes
        if self._getters:
            self._not_empty.notify()

    def _at_limit(self) -> bool:
        if self._payload >= self.capacity:
            return True
        return self.max_bytes is not None and self._bytes >= self.max_bytes

    def _account(self) -> None:
        """Close the current full/empty time segment before the fill changes."""
        now = time.monotonic()
        if self._payload >= self.capacity or \
                (self.max_bytes is not None and self._bytes >= self.max_bytes):  # _at_limit()
            self._time_full += now - self._since
        elif self._payload == 0:
            self._time_empty += now - self._since
        self._since = now

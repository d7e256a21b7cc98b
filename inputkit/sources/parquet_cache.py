"""What a Parquet worker keeps between reads: decoded row groups (with the rows that hold a
null) in a cache pooled by the threads of a process, and each thread's open files. Used by
:mod:`inputkit.sources.parquet`."""

from __future__ import annotations

import threading
from collections import OrderedDict
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import numpy as np


@dataclass
class RowGroup:
    """One decoded row group: a numpy array per column, and for each column that holds nulls
    (and has no ``fill_null``) the sorted local rows with one. Those rows hold a placeholder,
    so a read that reaches one must fail; the other rows of the row group are good."""

    arrays: dict[str, np.ndarray]
    nulls: dict[str, np.ndarray] = field(default_factory=dict)


class RowGroupCache:
    """The last ``capacity`` decoded row groups, pooled by the threads of one process; a row
    group wanted by several threads at once is decoded by the first, the others wait for it
    (and decode it themselves if that decode failed, to raise its error)."""

    def __init__(self, capacity: int) -> None:
        self.capacity = capacity
        self._lock = threading.Lock()
        self._done: OrderedDict[int, RowGroup] = OrderedDict()
        self._pending: dict[int, threading.Event] = {}
        self.waits = 0  # times a thread waited for another's decode (tests read it)
        self.ahead_decodes = 0  # row groups decoded ahead, while waiting (tests read it)

    def __contains__(self, g: int) -> bool:
        return g in self._done

    def get(self, g: int, decode: Callable[[int], RowGroup]) -> RowGroup:
        while True:
            with self._lock:
                group = self._done.get(g)
                if group is not None:
                    self._done.move_to_end(g)
                    return group
                event = self._pending.get(g)
                mine = event is None
                if event is None:
                    event = self._pending[g] = threading.Event()
                if not mine:
                    self.waits += 1
            if mine:
                break
            event.wait()  # another thread decodes it: bounded by that decode
        group = None
        try:
            group = decode(g)
            return group
        finally:
            with self._lock:
                del self._pending[g]
                if group is not None:
                    self._done[g] = group
                    while len(self._done) > self.capacity:
                        self._done.popitem(last=False)
            event.set()

    def busy(self, g: int) -> bool:
        """Whether another thread is decoding row group ``g`` now (a read of it would wait)."""
        return g in self._pending

    def ahead(self, g: int, decode: Callable[[int], RowGroup]) -> None:
        """Decode row group ``g`` into the cache unless it is there or being decoded: what a
        thread does instead of idling while another decodes the row group it wants. A decode
        that fails caches nothing; the read that wants ``g`` decodes it again and raises."""
        with self._lock:
            if g in self._done or g in self._pending:
                return
            self.ahead_decodes += 1
        try:
            self.get(g, decode)
        except Exception:  # noqa: BLE001 - raised again by the read that wants g, not this one
            return

    def clear(self) -> None:
        with self._lock:
            self._done.clear()


class OpenFiles:
    """One worker thread's open Parquet files (a handle is never shared between threads)."""

    def __init__(self) -> None:
        self.files: OrderedDict[int, Any] = OrderedDict()

    def close(self) -> None:
        while self.files:
            self.files.popitem()[1].close()

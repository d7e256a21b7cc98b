"""Inline workers: fetch runs in the consumer's own thread, when it asks for the next chunk.

A thread pool hands every chunk across two queues and three threads, and each hand-over
waits for a wake-up and the GIL: about 30 us a batch here, more than a trivial fetch of
tiny samples costs. Inline, the consumer's ``next()`` pulls a batch from the batcher, which
pulls chunks from this pool (its ``get``: the chunk stream of inputkit/chunk_stream.py);
``get`` calls fetch (or reads the next work item) there and then, as
``DataLoader(num_workers=0)`` does, and nothing waits. It is the
thread pool's own fetch, checks, processors, failure policies, statistics and
index-range work (the same :class:`ThreadWorkerPool` code, one worker, no threads), so
every guarantee holds; what it gives up is overlap: the consumer waits for each fetch.

Because the fetch runs on the consumer's thread, nothing can interrupt it: the watchdog
still reports a stall (with its stack), and a ``failures.fetch_timeout`` or
``failures.on_stall=raise`` failure is raised as soon as that fetch returns.
"""

from __future__ import annotations

import functools
import sys
import threading
import traceback
from collections import deque
from dataclasses import replace
from typing import Any

from inputkit.errors import InputkitError, SourceExhausted
from inputkit.messages import END, Failure
from inputkit.queues import QueueClosed
from inputkit.workers.base import WorkerPoolStats
from inputkit.workers.threads import DONE, IDLE, SETUP, ThreadWorkerPool


class InlineWorkerPool(ThreadWorkerPool):
    """One worker, run by the caller of :meth:`get` (the consumer's thread): the pool is the
    chunk stream the batcher pulls, with no queue between."""

    kind = "inline"

    def __init__(self, **kwargs: Any) -> None:
        # What one step made, for get() to hand out: a chunk, or (index-range work) what the
        # dispatcher released with it (the chunk, an EpochEnd, END); or a failure.
        self._made: deque[Any] = deque()
        kwargs.pop("out", None)  # there is no chunk queue: get() is the chunk stream
        super().__init__(out=None, **kwargs)  # type: ignore[arg-type]
        self._threads = []  # the consumer is the worker
        self._wid = self._ids[0]
        self._fetch_call = functools.partial(self._source.fetch, self._wid, self._hint)
        self._set_up = False
        self._ended = False
        self._consumer = -1  # the thread that calls get (for stall reports)

    def start(self) -> None:
        """Nothing runs until the consumer asks (setup() too: it runs before the first fetch)."""
        self._activity.started(0)

    def stop(self) -> None:
        self._stop.set()

    def join(self, deadline: float) -> list[str]:
        self._states[self._wid] = DONE
        self._repeats.flush()
        return []  # no thread of its own: a fetch in progress is the consumer's

    def stats(self) -> WorkerPoolStats:
        return replace(super().stats(), gil=None)  # one thread: no GIL contention to probe

    def _stack(self, index: int) -> str:
        """The consumer's stack (the watchdog's stall report): it runs the fetch."""
        frame = sys._current_frames().get(self._consumer)
        return "".join(traceback.format_stack(frame)) if frame is not None else ""

    def get(self, stop: threading.Event | None = None) -> Any:
        """The chunk stream (inputkit/chunk_stream.py): the next chunk, or END, an EpochEnd, a
        Failure, fetched now in the caller's thread; QueueClosed once stopped.

        A failure of the fetch (under the failure policy) comes back as a Failure that names
        the worker and source, as from a thread; KeyboardInterrupt passes straight through.
        """
        made = self._made
        self._consumer = threading.get_ident()
        while not made:  # (a failure, from here or the watchdog, is put there too)
            if self._stop.is_set() or (stop is not None and stop.is_set()):
                raise QueueClosed(self._label)
            if self._ended:
                raise InputkitError(f"{self._label}: iterated past the end of source "
                                    f"'{self._source.name}'")
            try:
                self._step()
            except Exception as exc:
                self.fail(Failure.capture(exc, self._where(self._wid)))
        return made.popleft()

    def fail(self, failure: Any) -> None:
        """Stop, and hand ``failure`` to the consumer next (the first failure only)."""
        with self._lock:
            first = not self._failed
            self._failed = True
        self._stop.set()
        if first:
            self._made.append(failure)
            self._on_failure(failure)

    def _emit(self, item: Any) -> bool:
        """The dispatcher's way downstream: what it releases waits for get(), in order."""
        self._made.append(item)
        return True

    def _step(self) -> None:
        """One fetch (or one work item); what it made waits in ``_made``."""
        wid, states = self._wid, self._states
        if not self._set_up:
            self._set_up = True
            setup = getattr(self._source.obj, "setup", None)
            if callable(setup):
                states[wid] = SETUP
                self._activity.fetching(0)
                setup(wid, self._num_workers)
                self._activity.started(0)
            states[wid] = IDLE
        dispatcher = self._dispatcher
        if dispatcher is not None:
            item = dispatcher.try_take()
            if item is None:  # every item is delivered before the next is taken
                if not dispatcher.done:
                    raise InputkitError(f"{self._label}: the dispatcher has no work item for "
                                        "the inline worker, yet its epoch is not complete")
                self._finished()
                return
            self._read_item(0, wid, item)
            states[wid] = IDLE
            return
        try:
            chunk = self._fetch(0, wid, self._fetch_call)
        except (SourceExhausted, StopIteration):
            self._finished()
            self._made.append(END)
            return
        states[wid] = IDLE
        if chunk is not None and chunk.n:
            self._made.append(chunk)

    def _finished(self) -> None:
        self._ended = True
        self._states[self._wid] = DONE

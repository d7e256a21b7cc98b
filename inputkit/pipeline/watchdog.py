"""The stall watchdog: one thread per runner that looks at every worker pool a few times a second.

It fails a fetch that has run past ``failures.fetch_timeout`` (a FetchTimeout
naming the worker, with its stack; a worker process is killed) and reports a
worker that has made no progress for ``failures.stall_timeout``: stuck inside
one fetch, or returning only empty chunks or errors. A stall is logged once,
with the stuck thread's or process's current stack, and shown in the stats and
the dashboard while it lasts; with ``failures.on_stall=raise`` it stops the run
with a StallError instead. Workers waiting on a full queue are not stalled: that
is backpressure from the consumer, which the dashboard shows as queue fill.

The same thread stops the pipeline of a runner that is garbage-collected without
``close()`` (see :meth:`Watchdog.guard`), so that this never runs in the thread that
dropped the runner, usually the main one, where a Ctrl-C would be lost.
"""

from __future__ import annotations

import logging
import queue
import threading
import time
import weakref
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from inputkit.pipeline.failures import FailurePolicy, StallError
from inputkit.pipeline.messages import Failure
from inputkit.workers import WorkerPool

log = logging.getLogger("inputkit.pipeline.watchdog")


@dataclass(frozen=True)
class Watched:
    """One pool and its input's policy. Holds no coordinator, so no runner is kept alive."""

    pool: WorkerPool
    policy: FailurePolicy
    label: str


class Watchdog:
    def __init__(self, watched: list[Watched], name: str = "inputkit-watchdog") -> None:
        self._watched = [w for w in watched
                         if w.policy.fetch_timeout is not None or w.policy.stall_timeout is not None]
        limits = [t for w in self._watched for t in (w.policy.fetch_timeout, w.policy.stall_timeout)
                  if t is not None]
        # Check often enough to catch a limit within a quarter of it, at most once every 50 ms.
        self.interval = min(1.0, max(0.05, min(limits) / 4)) if limits else 1.0
        # What wakes the thread: None from stop(), or the owner's weak reference once the
        # owner is garbage-collected (see guard()).
        self._wake: queue.SimpleQueue[Any] = queue.SimpleQueue()
        self._owner: weakref.ref[Any] | None = None
        self._orphaned: Callable[[], Any] | None = None
        self._reported: dict[int, set[str]] = {}  # per watched pool: workers reported stalled
        self.thread = threading.Thread(target=self._run, name=name, daemon=True)

    def guard(self, owner: object, orphaned: Callable[[], Any]) -> None:
        """Call ``orphaned()`` in this thread once ``owner`` is garbage-collected (call before start).

        The weak reference's callback is a C method (SimpleQueue.put): the thread that
        frees the owner runs no Python code for it, so a KeyboardInterrupt that arrives
        meanwhile is raised in that thread's own code, never inside a finalizer (where Python
        would print "Exception ignored" and go on). ``orphaned`` must not hold ``owner``.
        """
        self._orphaned = orphaned
        self._owner = weakref.ref(owner, self._wake.put)

    def start(self) -> None:
        if self._watched or self._owner is not None:
            self.thread.start()

    def stop(self) -> None:
        self._owner = None  # a closed owner needs no guarding
        self._wake.put(None)

    def join(self, deadline: float) -> list[str]:
        if self.thread.ident is not None and self.thread is not threading.current_thread():
            self.thread.join(max(0.0, deadline - time.monotonic()))
        return [self.thread.name] if self.thread.is_alive() and \
            self.thread is not threading.current_thread() else []

    def _run(self) -> None:
        timeout = self.interval if self._watched else None
        while True:
            try:
                woken = self._wake.get(timeout=timeout)
            except queue.Empty:
                for watched in self._watched:
                    try:
                        self._check(watched)
                    except Exception:  # the watchdog must never be what stops a run
                        log.exception("the watchdog failed while checking %s", watched.label)
                continue
            if woken is not None and self._orphaned is not None:
                self._orphaned()  # the owner was dropped without close()
            return

    def _check(self, watched: Watched) -> None:
        policy = watched.policy
        stalls = watched.pool.watch(time.monotonic(), policy.fetch_timeout, policy.stall_timeout)
        reported = self._reported.setdefault(id(watched), set())
        for where, text in stalls:
            if where in reported:
                continue  # one report per stall; it shows in the stats while it lasts
            if policy.on_stall == "raise":
                exc = StallError(f"{where}: {text}\n(failures.stall_timeout={policy.stall_timeout:g}, "
                                 "failures.on_stall=raise)")
                watched.pool.fail(Failure(exc=exc, where=where, traceback_text=""))
                return
            log.warning("stall (failures.stall_timeout=%gs): %s: %s", policy.stall_timeout, where,
                        text)
        # A stall that ended is forgotten, so the next one is reported again.
        self._reported[id(watched)] = {where for where, _ in stalls}

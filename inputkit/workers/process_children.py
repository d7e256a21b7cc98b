"""The worker processes of one pool: starting each with its pipes, starting one again, stopping all.

Why a module of its own: a child's start (its arguments, its three pipes, the shared
state arrays and stop flag it inherits, the main module hidden while it starts) and the
bounded stop of children that may never return (join, terminate, kill) do not depend on
what travels through the pipes (workers/processes.py) or on the shared-memory slots
(workers/process_slots.py). The operating-system helpers they use (the multiprocessing
context, exit descriptions, stacks) are workers/process_os.py's.
"""

from __future__ import annotations

import os
import time
from collections.abc import Callable
from dataclasses import dataclass
from multiprocessing.connection import Connection
from typing import Any

from inputkit.workers.base import Activity
from inputkit.workers.helpers import OURS, running
from inputkit.workers.process_main import IDLE, StopFlag, WorkerArgs, worker_main
from inputkit.workers.process_os import children_named_as, main_module_hidden


@dataclass
class Child:
    """The parent's view of one worker process and its pipes."""

    process: Any
    inbox: Connection  # parent -> worker: slots and items
    outbox: Connection  # worker -> parent: chunks and news
    stacks: Connection  # worker -> parent: stack dumps (faulthandler)

    def close(self) -> None:
        for conn in (self.inbox, self.outbox, self.stacks):
            conn.close()


class Children:
    """One pool's worker processes, by index, and what they share with the parent: the stop
    flag, each worker's state byte and its activity stamps.

    ``args(index)`` builds worker ``index``'s :class:`WorkerArgs` when it starts (again);
    ``keep_main``: the children need the main module (the source lives there, or they fork).
    """

    def __init__(self, ctx: Any, count: int, *, args: Callable[[int], WorkerArgs],
                 keep_main: bool) -> None:
        self.ctx = ctx
        self.count = count
        self.stop = StopFlag(ctx)
        self.states: Any = None
        self.activity: Activity | None = None
        self.workers: list[Child] = []
        self._stamps: Any = None
        self._args = args
        self._keep_main = keep_main

    def open(self) -> None:
        """The shared state arrays, before any child starts."""
        self.states = self.ctx.RawArray("b", self.count)
        self._stamps = self.ctx.RawArray("d", 2 * self.count)
        self.activity = Activity(self._stamps, self.count)

    def start_all(self) -> None:
        """Start every worker, in index order."""
        helpers = running()
        try:
            with main_module_hidden(needed=self._keep_main):
                for index in range(self.count):
                    self.workers.append(self._start(index))
        finally:  # stopped at exit if these workers were what started them
            OURS.note(helpers)

    def restart(self, index: int) -> Child:
        """Close the dead worker ``index``'s pipes and start another in its place; the caller
        puts it in :attr:`workers` (under the slots' lock)."""
        self.workers[index].close()
        with main_module_hidden(needed=self._keep_main):
            return self._start(index)

    def _start(self, index: int) -> Child:
        """Start the process for worker ``index`` (again, after a death)."""
        ctx = self.ctx
        inbox_read, inbox = ctx.Pipe(duplex=False)
        outbox, outbox_write = ctx.Pipe(duplex=False)
        stacks, stacks_write = ctx.Pipe(duplex=False)
        os.set_blocking(stacks.fileno(), False)
        args = self._args(index)
        self.states[index] = IDLE
        self.activity.started(index)  # type: ignore[union-attr]
        process = ctx.Process(target=worker_main, name=f"inputkit-worker-{args.worker_id}",
                              daemon=True,
                              args=(args, inbox_read, outbox_write, self.stop, self.states,
                                    self._stamps, stacks_write))
        with children_named_as(ctx):  # not a launcher's own start method (joblib's loky)
            process.start()
        for end in (inbox_read, outbox_write, stacks_write):
            end.close()  # the child holds its ends; EOF then means the child is gone
        return Child(process=process, inbox=inbox, outbox=outbox, stacks=stacks)

    def join(self, deadline: float) -> list[str]:
        """Wait for every process until ``deadline``, then terminate, then kill: the ones still
        alive after that, named with their pids."""
        processes = [w.process for w in self.workers]
        for process in processes:
            process.join(max(0.0, deadline - time.monotonic()))
        for process in processes:
            if process.is_alive():
                process.terminate()  # a fetch that does not return: processes can be stopped
        for process in processes:
            process.join(0.5)
            if process.is_alive():
                process.kill()
                process.join(0.5)
        return [f"{p.name} (pid {p.pid})" for p in processes if p.is_alive()]

    def close(self) -> None:
        """Close every worker's pipes (the processes have been joined)."""
        for worker in self.workers:
            worker.close()

    def pid(self, index: int) -> int | None:
        return self.workers[index].process.pid if index < len(self.workers) else None

    def pids(self) -> list[int]:
        return [w.process.pid for w in self.workers if w.process.pid is not None]

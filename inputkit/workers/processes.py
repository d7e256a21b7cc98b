"""Process workers: fetch runs in separate processes, past the GIL; arrays come back in shared memory.

The parent owns everything: one shared-memory segment of slots, the list of free
slots, per worker an inbox pipe, an outbox pipe, a stack pipe and the process,
and a receiver thread. The receiver waits on every outbox *and* every process
sentinel at once, so a worker that dies (killed, ``os._exit``, a segfault) is
noticed within 0.1 s and reported with its pid and exit code or signal, or, with
``failures.on_worker_death=restart``, replaced.

Shared memory is bounded by construction: a worker needs a free slot to write
a chunk, and a slot comes back only when every view of it (in the chunk queue,
the batcher, a batch) has been freed. The parent hands each worker one slot at a
time (and, for index-range work, its items), so it knows what a dead worker held
and takes it back: no slot and no sample is lost with a worker.

This pool is a transport (workers/transport.py): the ledger of items, requeue, the
restart policy, skip tallies and duplicates are the supervisor's (workers/supervisor.py);
starting, restarting and stopping the children is workers/process_children.py's (with
workers/process_os.py's helpers); the free list and the slots in each worker's hand are
workers/process_slots.py's. What is left here is the receiver: reading the pipes, turning
a slot into a chunk, reaping the dead, and the pool's watchdog and stats.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Callable
from multiprocessing.connection import wait
from typing import Any

from inputkit.errors import SourceError, WorkerFailure
from inputkit.pipeline.chunk import Chunk, ChunkSchema
from inputkit.pipeline.dispatcher import Dispatcher, WorkItem
from inputkit.pipeline.failures import FailurePolicy, FetchTimeout
from inputkit.pipeline.messages import Failure
from inputkit.pipeline.queues import BoundedQueue
from inputkit.processors import ProcessorTotals
from inputkit.storage.inherit import snapshot
from inputkit.workers.base import FailsOnce, FetchTally, WorkerPoolStats, inside, overdue
from inputkit.workers.outcome import Empty, InSlot, SamplesSkipped
from inputkit.workers.process_children import Children
from inputkit.workers.process_main import BLOCKED, BUILDING, DONE, FETCHING, IDLE, SETUP, WorkerArgs
from inputkit.workers.process_os import context, describe_exit, read_stack
from inputkit.workers.process_slots import SlotHands
from inputkit.workers.supervisor import Supervisor

__all__ = ["ProcessWorkerPool", "context"]  # context: tests and tools import it from here

_POLL_S = 0.1
# What a worker is inside before its first fetch, for the watchdog's messages.
_PHASES = {BUILDING: "the source's constructor", SETUP: "setup()"}
_ITEMS_AHEAD = 2  # index-range items a worker holds: one it reads, one waiting, no round trip


class ProcessWorkerPool(FailsOnce):
    kind = "process"

    def __init__(self, *, source_config: dict[str, Any], source_key: str, source_name: str,
                 schema: ChunkSchema, worker_ids: list[int], num_workers: int,
                 batch_size_hint: int, out: BoundedQueue, label: str, thread_prefix: str,
                 on_failure: Callable[[Failure], None], start_method: str, slots: int,
                 slot_bytes: int, policy: FailurePolicy = FailurePolicy(),
                 dispatcher: Dispatcher | None = None,
                 processors: tuple[dict[str, Any], ...] = (), processors_seed: int = 0,
                 processors_key: str = "processors", built: bytes | None = None) -> None:
        self._built = built  # the source pickled in the parent (built_copy), or None
        self._processors = (tuple(processors), processors_seed, processors_key)
        self._processor_totals = ProcessorTotals()
        self._source_config = source_config
        self._source_key = source_key
        self._source_name = source_name
        self._schema = schema
        self._ids = list(worker_ids)
        self._num_workers = num_workers
        self._hint = batch_size_hint
        self._out = out
        self._label = label
        self._on_failure = on_failure
        self._policy = policy
        self._dispatcher = dispatcher
        ctx = context(start_method)
        # A forked child re-imports nothing: hiding the main module would only hide it from it.
        keep_main = source_name.startswith("__main__") or ctx.get_start_method() == "fork"
        self._children = Children(ctx, len(self._ids), args=self._args, keep_main=keep_main)
        self._workers = self._children.workers
        self._stop = self._children.stop
        self._receiver_stop = threading.Event()
        # The free list, each worker's slot; its lock also guards replacing a worker.
        self._slots = SlotHands(slots, slot_bytes, len(self._ids), offer=self._offer,
                                wanted=lambda index: not self._sup.finished(index),
                                thread_name=f"{thread_prefix}-slots")
        self._lock = self._slots.lock  # FailsOnce's, as before the slots had a module
        self._failed = False
        self._tally = FetchTally()
        # The ledger of items, the restart policy, skip tallies, duplicates and END.
        self._sup = Supervisor(self, len(self._ids), policy=policy, dispatcher=dispatcher,
                               pool=f"{label} (source '{source_name}')", put=self._put, out=out,
                               fail=self.fail, stopping=self._stop.is_set,
                               failed=lambda: self._failed)
        self._stalls: tuple[str, ...] = ()
        self._reaping: set[int] = set()  # workers being reaped (a reap can re-enter via _put)
        self._receiver = threading.Thread(target=self._receive, name=f"{thread_prefix}-receiver",
                                          daemon=True)

    # lifecycle -------------------------------------------------------------------------------

    def start(self) -> None:
        self._slots.open()
        self._children.open()
        self._children.start_all()
        self._slots.give_all()
        self._feed()
        self._slots.start()
        self._receiver.start()

    def _args(self, index: int) -> WorkerArgs:
        """What worker ``index`` starts with (again, after a death)."""
        arena = self._slots.arena
        assert arena is not None  # start() opened it before any worker starts
        return WorkerArgs(
            worker_id=self._ids[index], slot_index=index, num_workers=self._num_workers,
            batch_size_hint=self._hint, source_config=self._source_config,
            source_key=self._source_key, arena=arena.handle(), slots=self._slots.slots,
            slot_bytes=self._slots.slot_bytes, policy=self._policy,
            indexed=self._dispatcher is not None, pool_size=len(self._ids),
            processors=self._processors[0], processors_seed=self._processors[1],
            processors_key=self._processors[2], built=self._built, storage_env=snapshot())

    def stop(self) -> None:
        self._stop.set()

    def join(self, deadline: float) -> list[str]:
        """Stop the receiver, then every process (terminate, then kill, past the deadline)."""
        self._stop.set()
        self._receiver_stop.set()
        if self._receiver.ident is not None:  # start() may have failed before starting it
            self._receiver.join(max(0.0, deadline - time.monotonic()))
        stuck = self._children.join(deadline)
        if self._receiver.is_alive():
            stuck.append(self._receiver.name)
        self._sup.repeats.flush()
        if not self._slots.stop(max(0.1, deadline - time.monotonic())):
            stuck.append(self._slots.returner_name)
        self._release_resources()
        return stuck

    def _release_resources(self) -> None:
        if not self._slots.close():
            return
        self._children.close()
        self._slots.free()

    # slots and items -------------------------------------------------------------------------

    def _offer(self, index: int, slot: int) -> bool:
        """Send worker ``index`` a free slot (the slots' lock held); False when it died."""
        try:
            self._workers[index].inbox.send(("slot", slot))
        except (OSError, ValueError):  # it died: its sentinel will say so
            return False
        return True

    def _feed(self) -> None:
        """Index-range work: keep every live worker holding up to _ITEMS_AHEAD items."""
        if self._dispatcher is None:
            return
        for index in range(len(self._workers)):
            if not self._sup.hand_out(index, _ITEMS_AHEAD):
                return

    # the receiver thread ---------------------------------------------------------------------

    def _receive(self) -> None:
        try:
            while not self._receiver_stop.is_set():
                # Keyed to the worker object: a worker restarted while handling this round
                # (a death noticed during a blocked put) must not be mistaken for the old one.
                outboxes = {w.outbox: (i, w) for i, w in enumerate(self._workers)
                            if not w.outbox.closed}
                sentinels = {w.process.sentinel: (i, w) for i, w in enumerate(self._workers)
                             if not self._sup.finished(i)}
                if not outboxes and not sentinels:
                    return
                ready = wait([*outboxes, *sentinels], timeout=_POLL_S)
                for item in ready:
                    if item in outboxes:
                        index, worker = outboxes[item]  # type: ignore[index]
                        if self._workers[index] is worker and not self._read(index):
                            return
                for item in ready:
                    if item in sentinels:
                        index, worker = sentinels[item]  # type: ignore[index]
                        if self._workers[index] is worker and not self._reap(index):
                            return
                if self._failed:
                    return
                self._feed()
        except BaseException as exc:  # a bug here must reach the consumer, not hang it
            self.fail(Failure.capture(exc, f"the receiver of {self._label}"))

    def _read(self, index: int) -> bool:
        """Handle one message from worker ``index``; False when the receiver should end."""
        worker = self._workers[index]
        try:
            message = worker.outbox.recv()
        except (EOFError, OSError):
            worker.outbox.close()  # the process ended; its sentinel says how
            return True
        kind = type(message)
        if kind is InSlot:
            if message.retries:
                self._sup.retried(index, message.retries)
            if message.processors is not None:  # cumulative per process: a restart adds a pid
                self._processor_totals.add(worker.process.pid, message.processors)
            return self._chunk(index, message)
        if kind is Empty:
            self._tally.fetched(0, 0, message.wall, message.cpu)
        elif kind is SamplesSkipped and message.processors is not None:
            self._processor_totals.add(worker.process.pid, message.processors)
        return self._sup.handle(index, message)

    def _chunk(self, index: int, piece: InSlot) -> bool:
        if self._slots.arena is None:
            raise WorkerFailure(f"{self._label}: a chunk arrived before the pool started")
        n, nbytes, wall, cpu = piece.n, piece.nbytes, piece.wall, piece.cpu
        seq, last = piece.seq, piece.last
        fields = self._slots.received(index, piece.slot, piece.layout, nbytes)
        try:
            chunk = self._schema.check(fields, self._ids[index])  # the same fields across workers
        except SourceError as exc:
            self._sup.finish(index)
            self.fail(Failure.capture(exc, self._where(index)))
            return False
        chunk = Chunk(fields=chunk.fields, n=n, nbytes=nbytes, worker_id=chunk.worker_id,
                      borrowed=True)
        self._tally.fetched(n, nbytes, wall, cpu, timed=bool(wall or cpu),
                            in_place=piece.in_place)
        if self._dispatcher is None:
            return self._sup.deliver(index, None, chunk, n, last)
        item = self._sup.current(index, seq)
        return item is None or self._sup.deliver(index, item, chunk, n, last)

    def _put(self, chunk: Chunk) -> bool:
        """Into the chunk queue; while it is full, still notice workers that die."""
        while not self._out.put(chunk, chunk.nbytes, self._receiver_stop, timeout=_POLL_S):
            if self._receiver_stop.is_set() or self._out.closed:
                return False
            self._check_deaths()
            if self._failed:
                return False
        return True

    def _check_deaths(self) -> None:
        """Reap workers killed or crashed (a non-zero exit) while the receiver waits on a full queue."""
        for index, worker in enumerate(self._workers):
            if not self._sup.finished(index) and index not in self._reaping \
                    and worker.process.exitcode not in (None, 0):
                self._reap(index)
                if self._failed:
                    return

    def _reap(self, index: int) -> bool:
        """A worker process ended: fine if it said done or failed; otherwise a death, which is
        raised or, with on_worker_death=restart, repaired. False when the receiver should end."""
        self._reaping.add(index)
        try:
            return self._reap_once(index)
        finally:
            self._reaping.discard(index)

    def _reap_once(self, index: int) -> bool:
        worker = self._workers[index]
        worker.process.join(0.1)
        if worker.process.exitcode in (0, None):
            # A clean exit: what it sent last says whether it finished, failed or just left.
            while not worker.outbox.closed and worker.outbox.poll():
                if not self._read(index):
                    return False
        # A death leaves its unread messages: a chunk among them sits in the slot still in its
        # hand (taken back on restart), and its samples are not counted as delivered.
        if self._sup.finished(index):
            return True
        return self._sup.died(index)

    # the transport (workers/transport.py), for the supervisor ----------------------------------

    def spawn(self, index: int) -> None:
        """Take back what the dead worker ``index`` held (its slot, its pipes), start another."""
        self._slots.take_back(index)
        new = self._children.restart(index)
        with self._slots.lock:
            self._workers[index] = new
            self._slots.give(index)
        self._feed()

    def send(self, index: int, item: WorkItem) -> bool:
        try:
            self._workers[index].inbox.send(("item", (item.seq, item.epoch, item.remaining)))
        except (OSError, ValueError):  # it died; its items go back when it is reaped
            return False
        return True

    def kill(self, index: int) -> None:
        self._workers[index].process.kill()

    def alive(self, index: int) -> bool:
        return bool(self._workers[index].process.is_alive())

    def exit_reason(self, index: int) -> str:
        return (f"{describe_exit(self._workers[index].process.exitcode)} (killed, os._exit, a "
                "crash in native code, or out of memory; its stderr may say more)")

    def where(self, index: int) -> str:
        return self._where(index)

    def _where(self, index: int) -> str:
        pid = self._children.pid(index)
        return (f"worker {self._ids[index]} (pid {pid}) of {self._label} "
                f"(source '{self._source_name}')")

    def slots_scarce(self) -> bool:
        """True when so few slots are free that views must not be lent to the consumer.

        A batch handed out as a view of a slot holds that slot until the consumer frees
        it. While plenty are free that costs nothing and saves a copy; once fewer than
        one per worker (plus two) are free, batches are copied out so that slots flow back
        even to a consumer that keeps every batch.
        """
        return self._slots.scarce(len(self._ids))

    # the watchdog ----------------------------------------------------------------------------

    def watch(self, now: float, fetch_timeout: float | None,
              stall_timeout: float | None) -> list[tuple[str, str]]:
        """Fail (and kill) a worker past fetch_timeout; describe stalled workers with stacks."""
        activity = self._children.activity
        if activity is None or self._failed:
            return []
        states = list(self._children.states)
        timeouts, stalls = overdue(activity, states, (BLOCKED, DONE), now,
                                   fetch_timeout, stall_timeout, _PHASES)
        for index, seconds in timeouts[:1]:
            stack = self._stack(index)
            what = inside(states[index], _PHASES)
            exc = FetchTimeout(f"{self._where(index)}: {what} has not returned after "
                               f"{seconds:.1f}s (failures.fetch_timeout={fetch_timeout:g}); "
                               f"the worker was stopped; it was stuck here:\n{stack}")
            self._sup.finish(index)
            self.fail(Failure(exc=exc, where=self._where(index), traceback_text=""))
            self.kill(index)
        found = [(self._where(i), f"{what}\n{self._stack(i)}") for i, what in stalls]
        self._stalls = tuple(f"{where}: {text.splitlines()[0]}" for where, text in found)
        return found

    def _stack(self, index: int) -> str:
        """The worker's current stack (every thread), dumped by faulthandler on a signal."""
        worker = self._workers[index]
        return read_stack(worker.process.pid, worker.stacks.fileno())

    # stats -----------------------------------------------------------------------------------

    def pids(self) -> list[int]:
        return self._children.pids()

    def stats(self) -> WorkerPoolStats:
        raw = self._children.states
        states = [IDLE if s in _PHASES else s for s in raw] \
            if raw is not None else [IDLE] * len(self._ids)
        slots_in_use, bytes_in_use = self._slots.in_use()
        return self._tally.stats(
            self.kind, states, (IDLE, FETCHING, BLOCKED, DONE), shm_slots=self._slots.slots,
            shm_slot_bytes=self._slots.slot_bytes, shm_slots_in_use=slots_in_use,
            shm_bytes_in_use=bytes_in_use,
            pids=tuple(self.pids()), stalls=self._stalls,
            processors=self._processor_totals.stats(), **self._sup.failures.snapshot())


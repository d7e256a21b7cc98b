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
starting children and reading their stacks are workers/process_os.py's. What is left
(about 500 lines) is one job, the pipes and slots: splitting the slot hand-outs from the
receiver would put one lock's invariants in two files.
"""

from __future__ import annotations

import os
import queue
import threading
import time
import weakref
from collections import deque
from collections.abc import Callable
from dataclasses import dataclass
from multiprocessing.connection import Connection, wait
from typing import Any

from inputkit.errors import SourceError, WorkerFailure
from inputkit.pipeline.chunk import Chunk, ChunkSchema
from inputkit.pipeline.dispatcher import Dispatcher, WorkItem
from inputkit.pipeline.failures import FailurePolicy, FetchTimeout
from inputkit.pipeline.messages import Failure
from inputkit.pipeline.queues import BoundedQueue
from inputkit.processors import ProcessorTotals
from inputkit.storage.inherit import snapshot
from inputkit.workers.base import Activity, FailsOnce, FetchTally, WorkerPoolStats, inside, overdue
from inputkit.workers.helpers import OURS, running
from inputkit.workers.outcome import Empty, InSlot, SamplesSkipped
from inputkit.workers.process_main import (
    BLOCKED,
    BUILDING,
    DONE,
    FETCHING,
    IDLE,
    SETUP,
    StopFlag,
    WorkerArgs,
    worker_main,
)
from inputkit.workers.process_os import context, describe_exit, main_module_hidden, read_stack
from inputkit.workers.shm import SlotArena
from inputkit.workers.supervisor import Supervisor

_POLL_S = 0.1
# What a worker is inside before its first fetch, for the watchdog's messages.
_PHASES = {BUILDING: "the source's constructor", SETUP: "setup()"}


@dataclass
class _Worker:
    """The parent's view of one worker process: its pipes, the slot in its hand, its items."""

    process: Any
    inbox: Connection  # parent -> worker: slots and items
    outbox: Connection  # worker -> parent: chunks and news
    stacks: Connection  # worker -> parent: stack dumps (faulthandler)
    slot: int | None = None  # handed to the worker and not yet used


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
        self._ctx = context(start_method)
        self._slots = slots
        self._slot_bytes = slot_bytes
        self._stop = StopFlag(self._ctx)
        self._receiver_stop = threading.Event()
        # Slots, hands and inbox sends.
        self._lock = threading.Lock()
        self._arena: SlotArena | None = None
        self._free: deque[int] = deque()
        self._states: Any = None
        self._stamps: Any = None
        self._workers: list[_Worker] = []
        self._failed = False
        self._closed = False
        self._in_use: dict[int, int] = {}  # slot -> bytes, for stats
        self._tally = FetchTally()
        # The ledger of items, the restart policy, skip tallies, duplicates and END.
        self._sup = Supervisor(self, len(self._ids), policy=policy, dispatcher=dispatcher,
                               pool=f"{label} (source '{source_name}')", put=self._put, out=out,
                               fail=self.fail, stopping=self._stop.is_set,
                               failed=lambda: self._failed)
        self._stalls: tuple[str, ...] = ()
        self._reaping: set[int] = set()  # workers being reaped (a reap can re-enter via _put)
        self._activity: Activity | None = None
        self._receiver = threading.Thread(target=self._receive, name=f"{thread_prefix}-receiver",
                                          daemon=True)
        # A slot comes back when its last view is freed, which happens wherever the consumer
        # drops a batch, usually the main thread. The weak reference's callback is a C method
        # (SimpleQueue.put) so that no Python code runs there: a Ctrl-C that arrives while a
        # finalizer runs Python code is lost ("Exception ignored in ...") and the slot with it.
        # This thread does the work of giving the slot back.
        self._returned: queue.SimpleQueue[_SlotRef | None] = queue.SimpleQueue()
        self._views: dict[int, _SlotRef] = {}  # slot -> the reference that watches its views
        self._returner = threading.Thread(target=self._return_slots,
                                          name=f"{thread_prefix}-slots", daemon=True)

    # lifecycle -------------------------------------------------------------------------------

    def start(self) -> None:
        ctx = self._ctx
        self._arena = SlotArena.create(self._slots, self._slot_bytes)
        self._free.extend(range(self._slots))
        self._states = ctx.RawArray("b", len(self._ids))
        self._stamps = ctx.RawArray("d", 2 * len(self._ids))
        self._activity = Activity(self._stamps, len(self._ids))
        helpers = running()
        try:
            with self._hidden_main():
                for index in range(len(self._ids)):
                    self._workers.append(self._start_worker(index))
        finally:  # stopped at exit if these workers were what started them
            OURS.note(helpers)
        with self._lock:
            for index in range(len(self._ids)):
                self._give_slot(index)
        self._feed()
        self._returner.start()
        self._receiver.start()

    def _hidden_main(self) -> Any:
        # A forked child re-imports nothing: hiding the main module would only hide it from it.
        keep_main = self._source_name.startswith("__main__") or \
            self._ctx.get_start_method() == "fork"
        return main_module_hidden(needed=keep_main)

    def _start_worker(self, index: int) -> _Worker:
        """Start the process for worker ``index`` (again, after a death)."""
        ctx, arena = self._ctx, self._arena
        assert arena is not None
        inbox_read, inbox = ctx.Pipe(duplex=False)
        outbox, outbox_write = ctx.Pipe(duplex=False)
        stacks, stacks_write = ctx.Pipe(duplex=False)
        os.set_blocking(stacks.fileno(), False)
        wid = self._ids[index]
        args = WorkerArgs(
            worker_id=wid, slot_index=index, num_workers=self._num_workers,
            batch_size_hint=self._hint, source_config=self._source_config,
            source_key=self._source_key, arena=arena.handle(), slots=self._slots,
            slot_bytes=self._slot_bytes, policy=self._policy,
            indexed=self._dispatcher is not None, pool_size=len(self._ids),
            processors=self._processors[0], processors_seed=self._processors[1],
            processors_key=self._processors[2], built=self._built, storage_env=snapshot())
        self._states[index] = IDLE
        self._activity.started(index)  # type: ignore[union-attr]
        process = ctx.Process(target=worker_main, name=f"inputkit-worker-{wid}", daemon=True,
                              args=(args, inbox_read, outbox_write, self._stop, self._states,
                                    self._stamps, stacks_write))
        process.start()
        for end in (inbox_read, outbox_write, stacks_write):
            end.close()  # the child holds its ends; EOF then means the child is gone
        return _Worker(process=process, inbox=inbox, outbox=outbox, stacks=stacks)

    def stop(self) -> None:
        self._stop.set()

    def join(self, deadline: float) -> list[str]:
        """Stop the receiver, then every process (terminate, then kill, past the deadline)."""
        self._stop.set()
        self._receiver_stop.set()
        if self._receiver.ident is not None:  # start() may have failed before starting it
            self._receiver.join(max(0.0, deadline - time.monotonic()))
        processes = [w.process for w in self._workers]
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
        stuck = [f"{p.name} (pid {p.pid})" for p in processes if p.is_alive()]
        if self._receiver.is_alive():
            stuck.append(self._receiver.name)
        self._sup.repeats.flush()
        self._returned.put(None)
        if self._returner.ident is not None:
            self._returner.join(max(0.1, deadline - time.monotonic()))
            if self._returner.is_alive():
                stuck.append(self._returner.name)
        self._release_resources()
        return stuck

    def _release_resources(self) -> None:
        with self._lock:
            if self._closed:
                return
            self._closed = True
        for worker in self._workers:
            for conn in (worker.inbox, worker.outbox, worker.stacks):
                conn.close()
        if self._arena is not None:
            self._arena.close()

    # slots and items -------------------------------------------------------------------------

    def _give_slot(self, index: int) -> None:
        """Put a free slot in worker ``index``'s hand if it has none (lock held)."""
        worker = self._workers[index]
        if worker.slot is not None or not self._free or self._closed or self._sup.finished(index):
            return
        slot = self._free.popleft()
        worker.slot = slot
        try:
            worker.inbox.send(("slot", slot))
        except (OSError, ValueError):  # it died: its sentinel will say so; take the slot back
            worker.slot = None
            self._free.appendleft(slot)

    def _return_slots(self) -> None:
        """The returner thread: give back each slot whose last view was freed, until join()."""
        while (ref := self._returned.get()) is not None:
            self._release_slot(ref.slot)

    def _release_slot(self, slot: int) -> None:
        """Every view of ``slot`` is gone: give it to a worker that has none."""
        with self._lock:
            self._views.pop(slot, None)
            self._in_use.pop(slot, None)
            if self._closed:
                return
            self._free.append(slot)
            for index in range(len(self._workers)):
                if self._workers[index].slot is None:
                    self._give_slot(index)
                    if not self._free:
                        break

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
        arena = self._arena
        if arena is None:
            raise WorkerFailure(f"{self._label}: a chunk arrived before the pool started")
        slot, n, nbytes, wall, cpu = piece.slot, piece.n, piece.nbytes, piece.wall, piece.cpu
        seq, last = piece.seq, piece.last
        holder, fields = arena.view(slot, piece.layout)
        worker = self._workers[index]
        with self._lock:
            self._in_use[slot] = nbytes
            # The slot goes back to the workers when every view of it has been freed.
            self._views[slot] = _SlotRef(holder, self._returned.put, slot)
            worker.slot = None
            self._give_slot(index)
        del holder
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
        old = self._workers[index]
        with self._lock:
            if old.slot is not None:
                self._free.append(old.slot)
                old.slot = None
        for conn in (old.inbox, old.outbox, old.stacks):
            conn.close()
        with self._hidden_main():
            new = self._start_worker(index)
        with self._lock:
            self._workers[index] = new
            self._give_slot(index)
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
        pid = self._workers[index].process.pid if index < len(self._workers) else None
        return (f"worker {self._ids[index]} (pid {pid}) of {self._label} "
                f"(source '{self._source_name}')")

    def slots_scarce(self) -> bool:
        """True when so few slots are free that views must not be lent to the consumer.

        A batch handed out as a view of a slot holds that slot until the consumer frees
        it. While plenty are free that costs nothing and saves a copy; once fewer than
        one per worker (plus two) are free, batches are copied out so that slots flow back
        even to a consumer that keeps every batch.
        """
        with self._lock:
            return self._slots - len(self._in_use) < len(self._ids) + 2

    # the watchdog ----------------------------------------------------------------------------

    def watch(self, now: float, fetch_timeout: float | None,
              stall_timeout: float | None) -> list[tuple[str, str]]:
        """Fail (and kill) a worker past fetch_timeout; describe stalled workers with stacks."""
        if self._activity is None or self._failed:
            return []
        states = list(self._states)
        timeouts, stalls = overdue(self._activity, states, (BLOCKED, DONE), now,
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
        return [w.process.pid for w in self._workers if w.process.pid is not None]

    def stats(self) -> WorkerPoolStats:
        states = [IDLE if s in _PHASES else s for s in self._states] \
            if self._states is not None else [IDLE] * len(self._ids)
        with self._lock:
            in_use = dict(self._in_use)
        return self._tally.stats(
            self.kind, states, (IDLE, FETCHING, BLOCKED, DONE), shm_slots=self._slots,
            shm_slot_bytes=self._slot_bytes, shm_slots_in_use=len(in_use),
            shm_bytes_in_use=sum(in_use.values()),
            pids=tuple(self.pids()), stalls=self._stalls,
            processors=self._processor_totals.stats(), **self._sup.failures.snapshot())


class _SlotRef(weakref.ref):  # type: ignore[type-arg]
    """A weak reference to the array every view of one slot keeps alive, and that slot."""

    __slots__ = ("slot",)

    def __init__(self, holder: Any, callback: Callable[[Any], None], slot: int) -> None:
        super().__init__(holder, callback)
        self.slot = slot

    def __new__(cls, holder: Any, callback: Callable[[Any], None], slot: int) -> _SlotRef:
        return super().__new__(cls, holder, callback)


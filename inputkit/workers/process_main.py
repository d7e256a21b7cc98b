"""What runs inside a worker process: build the source, fetch, write chunks into shared memory.

It imports little (numpy and inputkit's chunk, source and policy modules), so a
worker forked from the forkserver is ready in milliseconds. The parent hands it
one free slot at a time and, for index-range work, the items to read, through
its inbox pipe; so the parent always knows which slot and which samples a worker
holds, and can take them back when the worker dies. The worker answers through
its outbox pipe with typed outcomes (workers/outcome.py), made by the one worker
step (workers/step.py): :class:`InSlot` for each chunk piece (the slot and its
layout, never the arrays), :class:`Empty`, :class:`FetchSkipped`,
:class:`SamplesSkipped` (sent before the item's chunk, if any, so the parent drops
those samples first), :class:`Done`, or :class:`Error`. Retries travel on the
outcome they preceded; the processors' counts on a chunk, at most twice a second.
"""

from __future__ import annotations

import contextlib
import faulthandler
import logging
import multiprocessing
import pickle
import signal
import sys
import time
from collections import deque
from dataclasses import dataclass
from multiprocessing.connection import Connection
from typing import Any

import numpy as np

from inputkit.pipeline.chunk import Chunk, ChunkSchema
from inputkit.pipeline.failures import FailurePolicy
from inputkit.processors import ProcessorChain
from inputkit.sources.loader import build_source, rebind
from inputkit.workers.base import Activity
from inputkit.workers.outcome import (
    NO_RETRIES,
    Done,
    Error,
    Got,
    InSlot,
    SamplesSkipped,
    Stopped,
)
from inputkit.workers.shm import ArenaHandle, SlotAllocator, SlotArena, plan_pieces
from inputkit.workers.step import WorkerStep

# Worker states, written to a shared byte array the parent reads for stats and the watchdog.
IDLE, FETCHING, BLOCKED, DONE = 0, 1, 2, 3
BUILDING, SETUP = 4, 5  # inside the source's import and constructor, or its setup()


STACK_SIGNAL = signal.SIGUSR1  # dumps every thread's stack to the worker's stack pipe


class StopFlag:
    """The pool's stop signal, shared with its worker processes, that takes no lock.

    A worker can be SIGKILLed at any instant. A multiprocessing.Event takes a
    cross-process lock even in ``is_set()``, so a worker killed while holding it
    leaves every other process, the parent included, blocked on it forever. A shared
    byte is read and written without a lock.
    """

    def __init__(self, ctx: Any) -> None:
        self._flag = ctx.RawValue("b", 0)

    def set(self) -> None:
        self._flag.value = 1

    def is_set(self) -> bool:
        return bool(self._flag.value)

    def wait(self, timeout: float) -> bool:
        """Sleep until set or ``timeout`` seconds pass (for retry backoff); True if set."""
        deadline = time.monotonic() + timeout
        while not self._flag.value:
            left = deadline - time.monotonic()
            if left <= 0:
                return False
            time.sleep(min(left, 0.01))
        return True


@dataclass(frozen=True)
class WorkerArgs:
    """Everything a worker process needs; small and picklable (spawn/forkserver)."""

    worker_id: int
    slot_index: int  # this worker's position in its pool (state and activity arrays)
    num_workers: int
    batch_size_hint: int
    source_config: dict[str, Any]
    source_key: str
    arena: ArenaHandle  # the shared-memory segment's descriptor
    slots: int
    slot_bytes: int
    policy: FailurePolicy
    indexed: bool  # read index-range items from the inbox instead of calling fetch
    pool_size: int  # workers in the pool (the activity array holds 2 stamps per worker)
    processors: tuple[dict[str, Any], ...] = ()  # chunk transforms, built in the worker
    processors_seed: int = 0
    processors_key: str = "processors"
    built: bytes | None = None  # the source built in the parent, pickled (instead of the config)
    storage_env: tuple[tuple[str, str], ...] | None = None  # inputkit.storage.inherit.snapshot()


class Inbox:
    """What the parent sends this worker: one free slot at a time, and work items."""

    def __init__(self, conn: Connection, stop: Any) -> None:
        self._conn = conn
        self._stop = stop
        self._parent = multiprocessing.parent_process()
        self.slot: int | None = None
        self.items: deque[tuple[int, int, np.ndarray]] = deque()  # seq, epoch, indices

    def has_slot(self) -> bool:
        """Wait until a slot is in hand; False once the pipeline stops."""
        while self.slot is None:
            if not self._pump():
                return False
        return True

    def take_slot(self) -> int | None:
        """The slot in hand (waiting for one if needed); None once the pipeline stops."""
        if not self.has_slot():
            return None
        slot, self.slot = self.slot, None
        return slot

    def take_item(self) -> tuple[int, int, np.ndarray] | None:
        while not self.items:
            if not self._pump():
                return None
        return self.items.popleft()

    def _pump(self) -> bool:
        """Read one message (waiting up to 50 ms); False once the pipeline stops or the parent died."""
        if self._stop.is_set():
            return False
        if not self._conn.poll(0.05):
            # A killed parent: exit, so that the kernel can free the segment.
            return self._parent is None or self._parent.is_alive()
        kind, value = self._conn.recv()
        if kind == "slot":
            self.slot = value
        elif kind == "item":
            self.items.append(value)
        return True


def worker_main(args: WorkerArgs, inbox_conn: Connection, conn: Connection, stop: StopFlag,
                states: Any, stamps: Any, stack_conn: Connection) -> None:
    """Entry point of a worker process."""
    signal.signal(signal.SIGINT, signal.SIG_IGN)  # Ctrl-C is the parent's to handle
    # The parent logs what the policy did (it gets a message for each retry and skip).
    logging.getLogger("inputkit").addHandler(logging.NullHandler())
    logging.getLogger("inputkit").propagate = False
    faulthandler.register(STACK_SIGNAL, file=stack_conn.fileno(), all_threads=True)
    arena = None
    source = None
    index = args.slot_index
    activity = Activity(stamps, args.pool_size)
    activity.started(index)
    try:
        if args.storage_env is not None:  # the parent's endpoint, credentials and settings now
            from inputkit.storage.inherit import apply

            apply(args.storage_env)
        arena = SlotArena.attach(args.arena, args.slots, args.slot_bytes)
        limited = one_torch_thread()
        # Building the source and its setup() are timed like a fetch (failures.fetch_timeout).
        states[index] = BUILDING
        activity.fetching(index)
        source = rebind(args.source_config["_target_"], pickle.loads(args.built)) \
            if args.built is not None else build_source(args.source_config, key=args.source_key)
        if not limited:  # the source imported torch itself; setup() may still choose otherwise
            one_torch_thread()
        chain = ProcessorChain.from_config(list(args.processors), key=args.processors_key,
                                           seed=args.processors_seed) \
            if args.processors else None
        step = WorkerStep(source, worker_id=args.worker_id, num_workers=args.num_workers,
                          hint=args.batch_size_hint, policy=args.policy,
                          where=f"worker {args.worker_id} (source '{source.name}')", stop=stop,
                          schema=ChunkSchema(source.name), chain=chain,
                          out_schema=ChunkSchema(source.name), activity=activity, index=index,
                          report_processors=True)
        if step.has_setup:
            states[index] = SETUP
            step.setup()
        activity.started(index)
        states[index] = IDLE
        worker = _Worker(args, step, arena, Inbox(inbox_conn, stop), conn, stop, states)
        if args.indexed:
            worker.read_items()
        else:
            worker.fetch_chunks()
    except (BrokenPipeError, EOFError):
        return  # the parent is gone or closed the pipe: nothing left to tell
    except BaseException as exc:
        _send_error(conn, exc)
    finally:
        states[index] = DONE
        if source is not None:
            source.close()
        if arena is not None:
            arena.close()
        conn.close()


class _Worker:
    """One worker process's loop: run each unit of work through the step, ship its chunk
    into slots, send the outcomes."""

    def __init__(self, args: WorkerArgs, step: WorkerStep, arena: SlotArena, inbox: Inbox,
                 conn: Connection, stop: Any, states: Any) -> None:
        self.args = args
        self.step = step
        self.arena = arena
        self.inbox = inbox
        self.conn = conn
        self.stop = stop
        self.states = states

    def fetch_chunks(self) -> None:
        step, inbox, states, index = self.step, self.inbox, self.states, self.args.slot_index
        while not self.stop.is_set():
            allocator = None
            if step.fetch_into is not None:  # the source writes straight into a slot: no copy
                states[index] = BLOCKED
                if not inbox.has_slot():
                    return
                allocator = SlotAllocator(self.arena, inbox.slot)  # type: ignore[arg-type]
            states[index] = FETCHING
            outcome = step.fetch(allocator)
            if type(outcome) is not Got:  # Empty, FetchSkipped or Done: nothing to ship
                self.conn.send(outcome)
                if type(outcome) is Done:
                    return
                continue
            chunk = outcome.chunk
            if allocator is not None:
                layout = allocator.layout_of(chunk.fields)
                if layout is not None:
                    slot = inbox.take_slot()
                    self.conn.send(InSlot(slot, layout, chunk.n, chunk.nbytes, outcome.wall,
                                          outcome.cpu, True, -1, True, outcome.retries,
                                          outcome.processors))
                    states[index] = IDLE
                    continue
                chunk = _private(chunk)  # not all of it is in the slot: copies before reuse
            if not self._ship(outcome, chunk):
                return
            states[index] = IDLE

    def read_items(self) -> None:
        """Index-range work: read each item the parent sends; ship it in pieces that fit slots."""
        step, states, index = self.step, self.states, self.args.slot_index
        # A source with read_into writes each item straight into a slot (no copy), unless
        # processors transform it first or a bad sample must cost only itself.
        in_place = step.source_read_into is not None and self.args.policy.on_error != "skip"
        while not self.stop.is_set():
            states[index] = BLOCKED  # waiting for work is not a stall
            item = self.inbox.take_item()
            if item is None:
                return
            seq, epoch, indices = item
            if in_place:
                if not self._read_in_place(seq, epoch, indices):
                    return
                states[index] = IDLE
                continue
            states[index] = FETCHING
            outcome = step.read(seq, epoch, indices)
            if type(outcome) is Stopped:
                return
            if type(outcome) is SamplesSkipped:  # no sample of the item could be read
                self.conn.send(outcome)
                continue
            if type(outcome) is not Got:
                raise TypeError(f"{step.where}: unexpected outcome {outcome!r} of a read")
            if outcome.skipped is not None:
                # Reported before the chunk is shipped, so the parent drops them from the item
                # first: if this worker dies after that, the item is handed out again without
                # them; if it dies before, the report dies with it and the next worker makes it.
                self.conn.send(outcome.skipped)
            if not self._ship(outcome, outcome.chunk):
                return
            states[index] = IDLE

    def _read_in_place(self, seq: int, epoch: int, indices: np.ndarray) -> bool:
        """Item ``seq`` read by ``read_into(indices, allocate)`` into the slot in hand, with its
        indices beside it: shipped without a copy. What does not fit the slot comes back in
        private memory and takes the copy path. False once the pipeline stops."""
        self.states[self.args.slot_index] = BLOCKED
        if not self.inbox.has_slot():
            return False
        allocator = SlotAllocator(self.arena, self.inbox.slot)  # type: ignore[arg-type]
        self.states[self.args.slot_index] = FETCHING
        got = self.step.read_into(seq, epoch, indices, allocator)
        chunk = got.chunk
        layout = allocator.layout_of(chunk.fields)
        if layout is None:  # private copies first: the slot is written again by the next item
            return self._ship(got, _private(chunk))
        slot = self.inbox.take_slot()
        self.conn.send(InSlot(slot, layout, chunk.n, chunk.nbytes, got.wall, got.cpu, True, seq,
                              True, got.retries, got.processors))
        return True

    def _ship(self, got: Got, chunk: Chunk) -> bool:
        """Copy ``chunk`` into slots (pieces if it does not fit one) and tell the parent; the
        fetch's time, retries and processor counts come with the first piece."""
        pieces = plan_pieces(chunk.fields, chunk.n, self.args.slot_bytes)
        wall, cpu, retries, processors = got.wall, got.cpu, got.retries, got.processors
        for i, piece in enumerate(pieces):
            self.states[self.args.slot_index] = BLOCKED
            slot = self.inbox.take_slot()
            if slot is None:
                return False
            layout = self.arena.write(slot, chunk.fields, piece)
            nbytes = sum(arr[piece.start:piece.stop].nbytes for arr in chunk.fields.values())
            self.conn.send(InSlot(slot, layout, piece.stop - piece.start, nbytes, wall, cpu,
                                  False, got.seq, i == len(pieces) - 1, retries, processors))
            wall = cpu = 0.0
            retries, processors = NO_RETRIES, None
        return True


def _private(chunk: Chunk) -> Chunk:
    """``chunk`` in the worker's own memory (its arrays copied out of the slot)."""
    return Chunk(fields={k: v.copy() for k, v in chunk.fields.items()}, n=chunk.n,
                 nbytes=chunk.nbytes, worker_id=chunk.worker_id)


def one_torch_thread() -> bool:
    """Limit torch to one intra-op thread in this worker, as DataLoader does in each of its
    workers, if torch is imported here (never import it: most sources do not use it).

    A ``fork`` child inherits torch's thread pool without its threads: the first parallel
    op (a convolution in the source's constructor) waits for them forever. One thread also
    keeps N workers from starting N x cores threads. True if torch was imported.
    """
    torch = sys.modules.get("torch")
    if torch is None:
        return False
    torch.set_num_threads(1)
    return True


def _send_error(conn: Connection, exc: BaseException) -> None:
    # If the parent is gone, nobody is left to tell.
    with contextlib.suppress(BrokenPipeError, EOFError):
        conn.send(Error.of(exc))

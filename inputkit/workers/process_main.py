"""What runs inside a worker process: build the source, fetch, write chunks into shared memory.

It imports little (numpy and inputkit's chunk, source and policy modules), so a
worker forked from the forkserver is ready in milliseconds. The parent hands it
one free slot at a time and, for index-range work, the items to read, through
its inbox pipe; so the parent always knows which slot and which samples a worker
holds, and can take them back when the worker dies. The worker answers through
its outbox pipe with small tuples:

- ``("chunk", slot, n, layout, nbytes, wall_s, cpu_s, in_place, seq, last)``: a chunk
  (piece) is in ``slot``; ``in_place`` when the source wrote it there itself
  (``fetch_into``); ``seq``/``last`` place it in an index-range item (-1 for plain fetch);
- ``("empty", wall_s, cpu_s)``: fetch returned zero samples;
- ``("retry", text)``: a fetch failed and is being retried (``failures.on_error=retry``);
- ``("skip", text)``: a fetch failed and its chunk is skipped (``on_error=skip``);
- ``("samples", seq, bad, ok)``: index-range work under ``on_error=skip``: samples of item
  ``seq`` were skipped, ``(index, error)`` each in ``bad``; ``ok`` says for each sample
  of the item whether it is delivered. Sent before the item's chunk, if any (workers/samples.py);
- ``("processors", snapshot)``: the processors' cumulative counts, at most twice a second;
- ``("done",)``: the source is exhausted for this worker;
- ``("error", exception_pickle_or_None, type_name, message, traceback_text)``.
"""

from __future__ import annotations

import contextlib
import faulthandler
import functools
import logging
import multiprocessing
import pickle
import signal
import sys
import time
import traceback
from collections import deque
from dataclasses import dataclass
from multiprocessing.connection import Connection
from typing import Any

import numpy as np

from inputkit.chunk import Chunk, ChunkSchema, check_read, with_field
from inputkit.errors import SourceExhausted
from inputkit.failures import FailurePolicy, Skipped, call_with_policy
from inputkit.processors import ProcessorChain
from inputkit.sources.loader import build_source, rebind
from inputkit.sources.protocol import reads_epoch
from inputkit.work import INDEX_FIELD
from inputkit.workers.base import Activity, FetchClock
from inputkit.workers.samples import read_skipping
from inputkit.workers.shm import ArenaHandle, SlotAllocator, SlotArena, plan_pieces

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
        setup = getattr(source.obj, "setup", None)
        if callable(setup):
            states[index] = SETUP
            setup(args.worker_id, args.num_workers)
        activity.started(index)
        states[index] = IDLE
        worker = _Worker(args, source, arena, Inbox(inbox_conn, stop), conn, stop, states, activity)
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
    """One worker process's loop: fetch (or read items) under the failure policy, ship chunks."""

    def __init__(self, args: WorkerArgs, source: Any, arena: SlotArena, inbox: Inbox,
                 conn: Connection, stop: Any, states: Any, activity: Activity) -> None:
        self.args = args
        self.source = source
        self.arena = arena
        self.inbox = inbox
        self.conn = conn
        self.stop = stop
        self.states = states
        self.activity = activity
        self.clock = FetchClock()
        self.schema = ChunkSchema(source.name)
        self.where = f"worker {args.worker_id} (source '{source.name}')"
        self.chain = ProcessorChain.from_config(list(args.processors), key=args.processors_key,
                                                seed=args.processors_seed) \
            if args.processors else None
        self.out_schema = ChunkSchema(source.name) if self.chain is not None else None
        self._stats_sent = 0.0

    def _checked(self, raw: Any, expect: int | None, key: Any) -> Chunk:
        return self._finish(self._check_raw(raw, expect), key)

    def _check_raw(self, raw: Any, expect: int | None) -> Chunk:
        """What the source returned, checked (its schema; ``expect`` samples for a read)."""
        return check_read(self.schema.check(raw, self.args.worker_id), expect, self.source.name)

    def _finish(self, chunk: Chunk, key: Any) -> Chunk:
        """The processors, and their output checked; ``chunk`` itself without processors."""
        if self.chain is None or self.out_schema is None:
            return chunk
        wid = self.args.worker_id
        return self.out_schema.check(self.chain.apply(chunk.fields, wid, key), wid)

    def _send_processor_stats(self) -> None:
        """The processors' cumulative counts, at most twice a second (the parent adds them up)."""
        now = time.monotonic()
        if self.chain is not None and now - self._stats_sent > 0.5:
            self._stats_sent = now
            self.conn.send(("processors", self.chain.snapshot()))

    def _call(self, call: Any, expect: int | None = None,
              key: Any = None) -> tuple[Chunk, float, float]:
        """One fetch, its check and the processors under the policy: (chunk, wall, cpu);
        Skipped if skipped."""
        index = self.args.slot_index
        self.states[index] = FETCHING
        self.activity.fetching(index)
        self.clock.start()
        try:
            chunk = call_with_policy(
                lambda: self._checked(call(), expect, key),
                self.args.policy, self.where, self.stop,
                on_retry=lambda e: self.conn.send(("retry", describe_error(e))))
        except BaseException:
            self.activity.fetched(index, progress=False)
            raise
        self.activity.fetched(index, progress=chunk.n > 0)
        return (chunk, *self.clock.stop())

    def fetch_chunks(self) -> None:
        args, source, inbox = self.args, self.source, self.inbox
        fetch_into = getattr(source.obj, "fetch_into", None)
        wid, hint = args.worker_id, args.batch_size_hint
        while not self.stop.is_set():
            allocator = None
            if callable(fetch_into):  # the source writes straight into a slot: no copy
                self.states[args.slot_index] = BLOCKED
                if not inbox.has_slot():
                    return
                allocator = SlotAllocator(self.arena, inbox.slot)  # type: ignore[arg-type]
                call = functools.partial(fetch_into, wid, hint, allocator)
            else:
                call = functools.partial(source.fetch, wid, hint)
            try:
                chunk, wall, cpu = self._call(call)
            except (SourceExhausted, StopIteration):
                self.conn.send(("done",))
                return
            except Skipped as skipped:
                self.conn.send(("skip", describe_error(skipped.error)))
                continue
            if allocator is not None and chunk.n:
                layout = allocator.layout_of(chunk.fields)
                if layout is not None:
                    slot = inbox.take_slot()
                    self.conn.send(("chunk", slot, chunk.n, layout, chunk.nbytes, wall, cpu, True,
                                    -1, True))
                    self.states[args.slot_index] = IDLE
                    continue
                # Not all of it is in the slot: private copies before the slot is reused.
                chunk = Chunk(fields={k: v.copy() for k, v in chunk.fields.items()}, n=chunk.n,
                              nbytes=chunk.nbytes, worker_id=wid)
            if chunk.n == 0:
                self.conn.send(("empty", wall, cpu))
                continue
            if not self._ship(chunk, wall, cpu, -1):
                return
            self.states[args.slot_index] = IDLE

    def read_items(self) -> None:
        """Index-range work: read each item the parent sends; ship it in pieces that fit slots."""
        source_read = self.source.obj.read
        by_epoch = reads_epoch(source_read)
        skipping = self.args.policy.on_error == "skip"
        # A source with read_into writes each item straight into a slot (no copy), unless
        # processors transform it first.
        read_into = getattr(self.source.obj, "read_into", None)
        if not callable(read_into) or self.chain is not None:
            read_into = None
        while not self.stop.is_set():
            self.states[self.args.slot_index] = BLOCKED  # waiting for work is not a stall
            item = self.inbox.take_item()
            if item is None:
                return
            seq, epoch, indices = item
            key = (epoch, int(indices[0])) if len(indices) else None
            read = functools.partial(source_read, epoch=epoch) if by_epoch else source_read
            if skipping:  # a bad sample costs only itself
                got = self._read_skipping(read, seq, indices, key)
                if got is None:
                    return
                chunk, indices, wall, cpu = got
                if chunk is None:
                    continue
            elif read_into is not None:
                into = functools.partial(read_into, epoch=epoch) if by_epoch else read_into
                if not self._read_in_place(into, seq, indices, key):
                    return
                self.states[self.args.slot_index] = IDLE
                continue
            else:
                chunk, wall, cpu = self._call(functools.partial(read, indices),
                                              expect=len(indices), key=key)
            chunk = with_field(chunk, INDEX_FIELD, np.array(indices, dtype=np.int64))
            if not self._ship(chunk, wall, cpu, seq):
                return
            self.states[self.args.slot_index] = IDLE

    def _read_skipping(self, read: Any, seq: int, indices: np.ndarray, key: Any,
                       ) -> tuple[Chunk | None, np.ndarray, float, float] | None:
        """Item ``seq`` under on_error=skip (workers/samples.py), timed like one fetch: its good
        samples (or None) with their indices, wall and CPU seconds; None once stopped.

        The skipped samples are reported before the chunk is shipped, so the parent drops them
        from the item first: if this worker dies after that, the item is handed out again
        without them (nothing is counted twice); if it dies before, the report dies with it
        and the next worker makes it again."""
        index = self.args.slot_index
        self.states[index] = FETCHING
        self.activity.fetching(index)
        wall0, cpu0 = time.perf_counter(), time.thread_time()
        try:
            got = read_skipping(read, indices, self._check_raw,
                                lambda chunk: self._finish(chunk, key), self.args.policy,
                                self.where, self.stop,
                                begin=lambda: self.activity.fetching(index))
        except BaseException:
            self.activity.fetched(index, progress=False)
            raise
        self.activity.fetched(index, progress=got.chunk is not None)
        if got.stopped:
            return None
        if got.bad:
            self.conn.send(("samples", seq, got.bad, got.ok))
        return got.chunk, got.indices, time.perf_counter() - wall0, time.thread_time() - cpu0

    def _read_in_place(self, read_into: Any, seq: int, indices: np.ndarray, key: Any) -> bool:
        """Item ``seq`` read by ``read_into(indices, allocate)`` into the slot in hand, with its
        indices beside it: shipped without a copy. What does not fit the slot comes back in
        private memory and takes the copy path. False once the pipeline stops."""
        self.states[self.args.slot_index] = BLOCKED
        if not self.inbox.has_slot():
            return False
        allocator = SlotAllocator(self.arena, self.inbox.slot)  # type: ignore[arg-type]
        chunk, wall, cpu = self._call(functools.partial(read_into, indices, allocator),
                                      expect=len(indices), key=key)
        ids = allocator(INDEX_FIELD, (len(indices),), np.dtype(np.int64))
        ids[:] = indices
        chunk = with_field(chunk, INDEX_FIELD, ids)
        layout = allocator.layout_of(chunk.fields)
        if layout is None:  # private copies first: the slot is written again by the next item
            chunk = Chunk(fields={k: v.copy() for k, v in chunk.fields.items()}, n=chunk.n,
                          nbytes=chunk.nbytes, worker_id=chunk.worker_id)
            return self._ship(chunk, wall, cpu, seq)
        self._send_processor_stats()
        slot = self.inbox.take_slot()
        self.conn.send(("chunk", slot, chunk.n, layout, chunk.nbytes, wall, cpu, True, seq, True))
        return True

    def _ship(self, chunk: Chunk, wall: float, cpu: float, seq: int) -> bool:
        """Copy ``chunk`` into slots (pieces if it does not fit one) and tell the parent."""
        self._send_processor_stats()
        pieces = plan_pieces(chunk.fields, chunk.n, self.args.slot_bytes)
        for i, piece in enumerate(pieces):
            self.states[self.args.slot_index] = BLOCKED
            slot = self.inbox.take_slot()
            if slot is None:
                return False
            layout = self.arena.write(slot, chunk.fields, piece)
            nbytes = sum(arr[piece.start:piece.stop].nbytes for arr in chunk.fields.values())
            self.conn.send(("chunk", slot, piece.stop - piece.start, layout, nbytes, wall, cpu,
                            False, seq, i == len(pieces) - 1))
            wall = cpu = 0.0  # the fetch's time is counted with its first piece
        return True

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


def describe_error(exc: BaseException) -> str:
    return f"{type(exc).__name__}: {exc}"


def error_report(exc: BaseException) -> tuple[str, bytes | None, str, str, str]:
    """``("error", exception_pickle_or_None, type_name, message, traceback_text)``: an error
    that crosses a process boundary as the original exception where it pickles."""
    text = "".join(traceback.format_exception(type(exc), exc, exc.__traceback__))
    try:
        payload: bytes | None = pickle.dumps(exc)
        pickle.loads(payload)  # exceptions with custom __init__ may not round-trip
    except Exception:
        payload = None
    return ("error", payload, type(exc).__name__, str(exc), text)


def _send_error(conn: Connection, exc: BaseException) -> None:
    # If the parent is gone, nobody is left to tell.
    with contextlib.suppress(BrokenPipeError, EOFError):
        conn.send(error_report(exc))

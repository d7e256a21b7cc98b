"""What runs inside a worker process: build the source, fetch, write chunks into shared memory.

It imports little (numpy and inputkit's chunk and source modules), so a worker
forked from the forkserver is ready in milliseconds. It talks to the parent
through one pipe of small tuples:

- ``("chunk", slot, n, layout, nbytes, wall_s, cpu_s, in_place)``: a chunk (piece) is in
  ``slot``; ``in_place`` when the source wrote it there itself (``fetch_into``);
- ``("empty", wall_s, cpu_s)``: fetch returned zero samples;
- ``("done",)``: the source is exhausted for this worker;
- ``("error", exception_pickle_or_None, type_name, message, traceback_text)``.
"""

from __future__ import annotations

import contextlib
import multiprocessing
import pickle
import queue
import signal
import time
import traceback
from dataclasses import dataclass
from multiprocessing.connection import Connection
from typing import Any

from inputkit.chunk import Chunk, ChunkSchema
from inputkit.errors import SourceExhausted
from inputkit.sources.loader import build_source
from inputkit.workers.shm import SlotAllocator, SlotArena, plan_pieces

# Worker states, written to a shared byte array the parent reads for stats.
IDLE, FETCHING, BLOCKED, DONE = 0, 1, 2, 3


@dataclass(frozen=True)
class WorkerArgs:
    """Everything a worker process needs; small and picklable (spawn/forkserver)."""

    worker_id: int
    slot_index: int  # this worker's position in its pool (for the state array)
    num_workers: int
    batch_size_hint: int
    source_config: dict[str, Any]
    source_key: str
    arena_name: str
    slots: int
    slot_bytes: int


def worker_main(args: WorkerArgs, free_slots: Any, conn: Connection, stop: Any,
                states: Any) -> None:
    """Entry point of a worker process."""
    signal.signal(signal.SIGINT, signal.SIG_IGN)  # Ctrl-C is the parent's to handle
    arena = None
    source = None
    wid = args.worker_id
    try:
        arena = SlotArena.attach(args.arena_name, args.slots, args.slot_bytes)
        source = build_source(args.source_config, key=args.source_key)
        setup = getattr(source.obj, "setup", None)
        if callable(setup):
            setup(wid, args.num_workers)
        schema = ChunkSchema(source.name)
        fetch_into = getattr(source.obj, "fetch_into", None)
        while not stop.is_set():
            in_place = None
            if callable(fetch_into):  # the source writes straight into a slot: no copy
                states[args.slot_index] = BLOCKED
                slot = _take_slot(free_slots, stop)
                if slot is None:
                    return
                in_place = (slot, SlotAllocator(arena, slot))
            states[args.slot_index] = FETCHING
            wall0, cpu0 = time.perf_counter(), time.thread_time()
            try:
                if in_place is not None:
                    raw = fetch_into(wid, args.batch_size_hint, in_place[1])
                else:
                    raw = source.fetch(wid, args.batch_size_hint)
            except (SourceExhausted, StopIteration):
                conn.send(("done",))
                return
            wall, cpu = time.perf_counter() - wall0, time.thread_time() - cpu0
            chunk = schema.check(raw, wid)
            if in_place is not None:
                slot, allocator = in_place
                layout = allocator.layout_of(chunk.fields) if chunk.n else None
                if layout is not None:
                    conn.send(("chunk", slot, chunk.n, layout, chunk.nbytes, wall, cpu, True))
                    states[args.slot_index] = IDLE
                    continue
                # Empty, or not all of it fits the slot: take private copies of what is in
                # the slot before giving it back, then the copy path below.
                chunk = Chunk(fields={k: v.copy() for k, v in chunk.fields.items()}, n=chunk.n,
                              nbytes=chunk.nbytes, worker_id=wid)
                raw = None
                free_slots.put(slot)
            if chunk.n == 0:
                conn.send(("empty", wall, cpu))
                continue
            for piece in plan_pieces(chunk.fields, chunk.n, args.slot_bytes):
                states[args.slot_index] = BLOCKED
                slot = _take_slot(free_slots, stop)
                if slot is None:
                    return
                layout = arena.write(slot, chunk.fields, piece)
                nbytes = sum(arr[piece.start:piece.stop].nbytes for arr in chunk.fields.values())
                conn.send(("chunk", slot, piece.stop - piece.start, layout, nbytes, wall, cpu,
                           False))
                wall = cpu = 0.0  # the fetch's time is counted with its first piece
            states[args.slot_index] = IDLE
    except (BrokenPipeError, EOFError):
        return  # the parent is gone or closed the pipe: nothing left to tell
    except BaseException as exc:
        _send_error(conn, exc)
    finally:
        states[args.slot_index] = DONE
        if source is not None:
            source.close()
        if arena is not None:
            arena.close()
        conn.close()


def _take_slot(free_slots: Any, stop: Any) -> int | None:
    """A free slot, or None once the pipeline stops or the parent process is gone."""
    parent = multiprocessing.parent_process()
    while not stop.is_set():
        try:
            return int(free_slots.get(timeout=0.05))
        except queue.Empty:
            if parent is not None and not parent.is_alive():
                return None  # killed parent: exit, so the resource tracker can free the segment
    return None


def _send_error(conn: Connection, exc: BaseException) -> None:
    text = "".join(traceback.format_exception(type(exc), exc, exc.__traceback__))
    try:
        payload: bytes | None = pickle.dumps(exc)
        pickle.loads(payload)  # exceptions with custom __init__ may not round-trip
    except Exception:
        payload = None
    # If the parent is gone, nobody is left to tell.
    with contextlib.suppress(BrokenPipeError, EOFError):
        conn.send(("error", payload, type(exc).__name__, str(exc), text))

"""Process workers: fetch runs in separate processes, past the GIL; arrays come back in shared memory.

The parent owns everything: one shared-memory segment of slots, a queue of free
slot numbers, one pipe and one process per worker, and a receiver thread. The
receiver waits on every pipe *and* every process sentinel at once, so a worker
that dies (killed, ``os._exit``, a segfault) is noticed within 0.1 s and
reported with its pid and exit code or signal.

Shared memory is bounded by construction: a worker needs a free slot to write
a chunk, and a slot comes back only when every view of it (in the chunk queue,
the batcher, a batch) has been freed. ``slots`` is sized so that the queues
between the workers and the consumer can fill, and no more.
"""

from __future__ import annotations

import contextlib
import multiprocessing
import os
import pickle
import signal
import sys
import threading
import time
import types
import weakref
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from multiprocessing.connection import Connection, wait
from typing import Any

from inputkit.chunk import Chunk, ChunkSchema
from inputkit.errors import ConfigError, SourceError, WorkerFailure
from inputkit.messages import END, Failure
from inputkit.queues import BoundedQueue
from inputkit.workers.base import FetchTally, WorkerPoolStats
from inputkit.workers.process_main import BLOCKED, DONE, FETCHING, IDLE, WorkerArgs, worker_main
from inputkit.workers.shm import SlotArena

_PRELOAD = ["inputkit.workers.process_main", "numpy"]
_POLL_S = 0.1


def context(start_method: str) -> multiprocessing.context.BaseContext:
    """The multiprocessing context; forkserver preloads the worker module once."""
    ctx = multiprocessing.get_context(start_method)
    if start_method == "forkserver":
        ctx.set_forkserver_preload(_PRELOAD)  # type: ignore[attr-defined]
    return ctx


_MAIN_SWAP = threading.Lock()


@contextmanager
def main_module_hidden(needed: bool) -> Iterator[None]:
    """Start processes without making them re-run the main program, unless the source needs it.

    spawn and forkserver children re-execute ``__main__`` (a training script that imports
    torch costs each worker a second or more). Our workers only need it when the source's
    ``_target_`` lives in ``__main__``; otherwise multiprocessing briefly sees a bare
    ``__main__`` while the processes start, and the children skip the re-import.
    """
    if needed:
        main_file = getattr(sys.modules.get("__main__"), "__file__", None)
        forking = multiprocessing.get_start_method(allow_none=True)
        if main_file is not None and not os.path.isfile(main_file) and forking != "fork":
            raise ConfigError("workers.start_method", "the source lives in the main program, "
                              f"which new worker processes must re-import, but it was read from "
                              f"{main_file}; move the source into a module, or use "
                              "workers.start_method=fork")
        yield
        return
    with _MAIN_SWAP:
        real = sys.modules["__main__"]
        sys.modules["__main__"] = types.ModuleType("__main__")
        try:
            yield
        finally:
            sys.modules["__main__"] = real


def describe_exit(exitcode: int | None) -> str:
    if exitcode is None:
        return "is still running"
    if exitcode < 0:
        try:
            return f"was killed by signal {signal.Signals(-exitcode).name}"
        except ValueError:
            return f"was killed by signal {-exitcode}"
    return f"exited with code {exitcode}"


class ProcessWorkerPool:
    kind = "process"

    def __init__(self, *, source_config: dict[str, Any], source_key: str, source_name: str,
                 schema: ChunkSchema, worker_ids: list[int], num_workers: int,
                 batch_size_hint: int, out: BoundedQueue, label: str, thread_prefix: str,
                 on_failure: Callable[[Failure], None], start_method: str, slots: int,
                 slot_bytes: int) -> None:
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
        self._ctx = context(start_method)
        self._slots = slots
        self._slot_bytes = slot_bytes
        self._stop = self._ctx.Event()
        self._receiver_stop = threading.Event()
        self._lock = threading.Lock()
        self._arena: SlotArena | None = None
        self._free: Any = None
        self._states: Any = None
        self._processes: list[Any] = []
        self._conns: dict[Connection, int] = {}  # parent end of each pipe -> worker index
        self._finished: set[int] = set()  # workers that reported done or an error
        self._failed = False
        self._closed = False
        self._in_use: dict[int, int] = {}  # slot -> bytes, for stats
        self._tally = FetchTally()
        self._in_place = 0  # chunks the source wrote straight into a slot (fetch_into)
        self._receiver = threading.Thread(target=self._receive, name=f"{thread_prefix}-receiver",
                                          daemon=True)

    # lifecycle -------------------------------------------------------------------------------

    def start(self) -> None:
        ctx = self._ctx
        self._arena = SlotArena.create(self._slots, self._slot_bytes)
        self._free = ctx.Queue()
        for slot in range(self._slots):
            self._free.put(slot)
        self._states = ctx.RawArray("b", len(self._ids))
        # A forked child re-imports nothing: hiding the main module would only hide it from it.
        keep_main = self._source_name.startswith("__main__") or \
            self._ctx.get_start_method() == "fork"
        with main_module_hidden(needed=keep_main):
            self._start_processes(ctx, self._arena)
        self._receiver.start()

    def _start_processes(self, ctx: Any, arena: SlotArena) -> None:
        for index, wid in enumerate(self._ids):
            parent_end, child_end = ctx.Pipe(duplex=False)
            args = WorkerArgs(
                worker_id=wid, slot_index=index, num_workers=self._num_workers,
                batch_size_hint=self._hint, source_config=self._source_config,
                source_key=self._source_key, arena_name=arena.name, slots=self._slots,
                slot_bytes=self._slot_bytes)
            process = ctx.Process(target=worker_main, name=f"inputkit-worker-{wid}", daemon=True,
                                  args=(args, self._free, child_end, self._stop, self._states))
            process.start()
            child_end.close()  # the child holds its end; EOF then means the child is gone
            self._processes.append(process)
            self._conns[parent_end] = index

    def stop(self) -> None:
        self._stop.set()

    def join(self, deadline: float) -> list[str]:
        """Stop the receiver, then every process (terminate, then kill, past the deadline)."""
        self._stop.set()
        self._receiver_stop.set()
        if self._receiver.ident is not None:  # start() may have failed before starting it
            self._receiver.join(max(0.0, deadline - time.monotonic()))
        for process in self._processes:
            process.join(max(0.0, deadline - time.monotonic()))
        for process in self._processes:
            if process.is_alive():
                process.terminate()  # a fetch that does not return: processes can be stopped
        for process in self._processes:
            process.join(0.5)
            if process.is_alive():
                process.kill()
                process.join(0.5)
        stuck = [f"{p.name} (pid {p.pid})" for p in self._processes if p.is_alive()]
        if self._receiver.is_alive():
            stuck.append(self._receiver.name)
        self._release_resources()
        return stuck

    def _release_resources(self) -> None:
        with self._lock:
            if self._closed:
                return
            self._closed = True
        for conn in self._conns:
            conn.close()
        if self._free is not None:
            self._free.close()
            self._free.cancel_join_thread()  # slot numbers left in the pipe need no delivery
        if self._arena is not None:
            self._arena.close()

    # the receiver thread ---------------------------------------------------------------------

    def _receive(self) -> None:
        conns: dict[Connection, int] = dict(self._conns)
        sentinels = {p.sentinel: i for i, p in enumerate(self._processes)}
        try:
            while not self._receiver_stop.is_set() and (conns or sentinels):
                ready = wait([*conns, *sentinels], timeout=_POLL_S)
                for item in ready:
                    if item in conns:
                        if not self._read(item, conns):  # type: ignore[arg-type]
                            return
                for item in ready:
                    if item in sentinels:
                        index = sentinels.pop(item)  # type: ignore[arg-type]
                        self._reap(index, conns)
                if self._failed:
                    return
        except BaseException as exc:  # a bug here must reach the consumer, not hang it
            self._fail(Failure.capture(exc, f"the receiver of {self._label}"))

    def _read(self, conn: Connection, conns: dict[Connection, int]) -> bool:
        index = conns[conn]
        try:
            message = conn.recv()
        except (EOFError, OSError):
            del conns[conn]  # the process ended; its sentinel says how
            return True
        kind = message[0]
        if kind == "chunk":
            return self._chunk(index, *message[1:])
        if kind == "empty":
            self._tally.fetched(0, 0, message[1], message[2])
            return True
        if kind == "done":
            self._worker_finished(index)
            return True
        if kind == "error":
            self._finished.add(index)
            self._fail(self._error_failure(index, *message[1:]))
            return False
        raise WorkerFailure(f"unexpected message {kind!r} from {self._where(index)}")

    def _chunk(self, index: int, slot: int, n: int, layout: list[Any], nbytes: int,
               wall: float, cpu: float, in_place: bool) -> bool:
        arena = self._arena
        if arena is None:
            raise WorkerFailure(f"{self._label}: a chunk arrived before the pool started")
        holder, fields = arena.view(slot, layout)
        with self._lock:
            self._in_use[slot] = nbytes
        # The slot goes back to the workers when every view of it has been freed.
        weakref.finalize(holder, self._release_slot, slot).atexit = False
        del holder
        try:
            chunk = self._schema.check(fields, self._ids[index])  # the same fields across workers
        except SourceError as exc:
            self._finished.add(index)
            self._fail(Failure.capture(exc, self._where(index)))
            return False
        chunk = Chunk(fields=chunk.fields, n=n, nbytes=nbytes, worker_id=chunk.worker_id,
                      borrowed=True)
        self._tally.fetched(n, nbytes, wall, cpu, timed=bool(wall or cpu))
        if in_place:
            with self._lock:
                self._in_place += 1
        while not self._out.put(chunk, nbytes, self._receiver_stop, timeout=_POLL_S):
            if self._receiver_stop.is_set() or self._out.closed:
                return False
            self._check_deaths()  # the queue is full: still notice a worker that died
            if self._failed:
                return False
        return True

    def _check_deaths(self) -> None:
        """Fail for a worker killed or crashed (a non-zero exit); a clean exit has a message."""
        for index, process in enumerate(self._processes):
            if index not in self._finished and process.exitcode not in (None, 0):
                self._fail(self._death(index))
                return

    def _release_slot(self, slot: int) -> None:
        with self._lock:
            self._in_use.pop(slot, None)
            if self._closed:
                return
        # The pool may close between the check and the put: then nobody needs the slot.
        with contextlib.suppress(ValueError, OSError):
            self._free.put(slot)

    def _worker_finished(self, index: int) -> None:
        with self._lock:
            self._finished.add(index)
            last = len(self._finished) == len(self._ids) and not self._failed
        if last:
            self._out.put_control(END)

    def _reap(self, index: int, conns: dict[Connection, int]) -> None:
        """A worker process ended: fine if it said done or failed; a death otherwise."""
        for conn, i in list(conns.items()):  # read what it sent before it ended
            if i == index:
                while conn.poll() and self._read(conn, conns) and conn in conns:
                    pass
        if index in self._finished or self._stop.is_set():
            return
        self._processes[index].join(0.1)
        self._fail(self._death(index))

    def _death(self, index: int) -> Failure:
        exitcode = self._processes[index].exitcode
        return Failure(
            exc=WorkerFailure(f"{self._where(index)} {describe_exit(exitcode)} "
                              "(killed, os._exit, a crash in native code, or out of memory; "
                              "its stderr may say more)"),
            where=self._where(index), traceback_text="")

    def _error_failure(self, index: int, payload: bytes | None, type_name: str, message: str,
                       text: str) -> Failure:
        exc: BaseException
        try:
            exc = pickle.loads(payload) if payload is not None else None  # type: ignore[assignment]
        except Exception:
            exc = None  # type: ignore[assignment]
        if exc is None:
            exc = WorkerFailure(f"{type_name}: {message}")
        return Failure(exc=exc, where=self._where(index), traceback_text=text)

    def _fail(self, failure: Failure) -> None:
        with self._lock:
            first = not self._failed
            self._failed = True
        self._stop.set()
        if first:
            self._out.put_control(failure)
            self._on_failure(failure)

    def _where(self, index: int) -> str:
        pid = self._processes[index].pid if index < len(self._processes) else None
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

    # stats -----------------------------------------------------------------------------------

    def pids(self) -> list[int]:
        return [p.pid for p in self._processes if p.pid is not None]

    def stats(self) -> WorkerPoolStats:
        states = list(self._states) if self._states is not None else [IDLE] * len(self._ids)
        with self._lock:
            in_use = dict(self._in_use)
        return self._tally.stats(
            self.kind, states, (IDLE, FETCHING, BLOCKED, DONE), shm_slots=self._slots,
            shm_slot_bytes=self._slot_bytes, shm_slots_in_use=len(in_use),
            shm_bytes_in_use=sum(in_use.values()), shm_chunks_in_place=self._in_place,
            pids=tuple(self.pids()))

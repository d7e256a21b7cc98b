"""Ray workers: fetch and transforms run in Ray actors; chunks come back through the object store.

The trainer keeps every decision, as with process workers. Each actor builds its
own source (workers/ray_actor.py); this pool hands out the Dispatcher's numbered
work items, at most ``workers.ray.inflight`` per actor and, over all actors, no more
object-store bytes than ``workers.ray.inflight_bytes`` (results not yet received
plus received chunks this pipeline still references). One receiver thread waits
on every outstanding result at once and feeds the chunk queue; from there the
batcher and device stage do not know where a chunk was made.

Results arrive zero-copy, and what they pin in the object store is counted by the
pool's ObjectLedger (workers/ray_objects.py).

This pool is a transport (workers/transport.py) under the supervisor
(workers/supervisor.py), which keeps the ledger of which items each actor holds: an
actor that dies (its process killed, its node stopped) loses nothing: its unanswered
items are handed out again, a result for an item no longer open is dropped by its
sequence number, and under ``failures.on_worker_death=restart`` a new actor takes its
place. Creating, placing and killing actors is workers/ray_lifecycle.py's; the calls in
flight and the byte cap they are fed within, workers/ray_calls.py's; room checks and
death reasons, workers/ray_placement.py's. What is left here is the receiver: taking
answers in, turning them into chunks, the deaths, and the pool's watchdog and stats.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Callable
from typing import Any

from inputkit.errors import SourceError, WorkerFailure
from inputkit.pipeline.chunk import Chunk, ChunkSchema
from inputkit.pipeline.dispatcher import Dispatcher, WorkItem
from inputkit.pipeline.failures import FailurePolicy, FetchTimeout
from inputkit.pipeline.messages import Failure
from inputkit.pipeline.queues import BoundedQueue
from inputkit.processors import ProcessorTotals
from inputkit.workers.base import FailsOnce, FetchTally, RayStats, WorkerPoolStats
from inputkit.workers.outcome import Done, Empty, Error, Got, Outcome, SamplesSkipped
from inputkit.workers.ray_calls import Calls
from inputkit.workers.ray_lifecycle import DONE, FETCHING, IDLE, Actor, Call, RayActors
from inputkit.workers.ray_objects import ObjectLedger, spilled_bytes, writable
from inputkit.workers.ray_placement import death_reason
from inputkit.workers.supervisor import Supervisor

_POLL_S = 0.1


class RayWorkerPool(FailsOnce):
    kind = "ray"

    def __init__(self, *, spec: Any, schema: ChunkSchema, worker_ids: list[int], num_workers: int,
                 batch_size_hint: int, out: BoundedQueue, label: str, thread_prefix: str,
                 on_failure: Callable[[Failure], None], policy: FailurePolicy = FailurePolicy(),
                 dispatcher: Dispatcher | None = None, downstream: tuple[int, int] = (8, 0)) -> None:
        """``spec``: the InputSpec (its ``ray`` options and source); ``downstream``: how many
        received chunks, and bytes, the queues and batcher can hold (the default byte cap)."""
        self._source_name = spec.source["_target_"]
        self._schema = schema
        self._ids = list(worker_ids)
        self._num_workers = num_workers
        self._hint = batch_size_hint
        self._out = out
        self._label = label
        self._on_failure = on_failure
        self._policy = policy
        self._dispatcher = dispatcher
        self._lock = threading.Lock()
        self._stop = threading.Event()
        self._failed = False
        # The actors, where each runs, and the hold on the Ray session.
        self._actors = RayActors(spec=spec, worker_ids=self._ids, num_workers=num_workers,
                                 batch_size_hint=batch_size_hint, policy=policy,
                                 where=self._where)
        self._tally = FetchTally()
        # The ledger of items, the restart policy, skip tallies, duplicates and END.
        self._sup = Supervisor(self, len(self._ids), policy=policy, dispatcher=dispatcher,
                               pool=f"{label} (source '{self._source_name}')", put=self._put,
                               out=out, fail=self.fail, stopping=self._stop.is_set,
                               failed=lambda: self._failed)
        self._processor_totals = ProcessorTotals()
        # Object-store bytes: results asked for, and received ones still referenced.
        self._objects = ObjectLedger(
            spec.ray.inflight_bytes, len(worker_ids) * spec.ray.inflight, downstream,
            dispatcher.chunk_size if dispatcher is not None else None, len(worker_ids))
        # Every ref awaited; each actor fed up to workers.ray.inflight calls within the cap.
        self._calls = Calls(self._objects, spec.ray.inflight, self._sup, self._stop,
                            indexed=dispatcher is not None)
        self._busy = 0.0  # receiver time spent taking results in
        self._waited = 0.0  # ... of which it waited on a full chunk queue
        self._stalls: tuple[str, ...] = ()
        self._spill_read: tuple[float, int | None] = (float("-inf"), None)  # (when, bytes)
        self._receiver = threading.Thread(target=self._receive, name=f"{thread_prefix}-ray",
                                          daemon=True)

    # lifecycle ---------------------------------------------------------------------------------

    def start(self) -> None:
        """Reach Ray (starting a private local one if asked) and create the actors; they build
        their sources in the background, the receiver waits for them."""
        self._actors.connect()
        for index in range(len(self._ids)):
            self._calls.setup(self._actors.create(index))
        self._receiver.start()

    def stop(self) -> None:
        self._stop.set()

    def join(self, deadline: float) -> list[str]:
        """Stop the receiver, kill every actor this pool created, and let Ray go."""
        self._stop.set()
        if self._receiver.ident is not None:
            self._receiver.join(max(0.0, deadline - time.monotonic()))
        stuck = [self._receiver.name] if self._receiver.is_alive() else []
        self._actors.close()
        self._calls.clear()
        self._sup.repeats.flush()
        self._actors.release()
        return stuck

    # the receiver thread -----------------------------------------------------------------------

    def _receive(self) -> None:
        ray = self._actors.ray
        try:
            while not self._stop.is_set():
                self._objects.drain()
                self._calls.feed(self._actors.actors)
                refs = self._calls.refs()
                if not refs:
                    if all(self._sup.finished(a.index) for a in self._actors.actors):
                        return
                    self._stop.wait(0.02)
                    continue
                ready, _ = ray.wait(refs, num_returns=1, timeout=_POLL_S, fetch_local=False)
                if ready:  # take in everything that is ready
                    ready, _ = ray.wait(refs, num_returns=len(refs), timeout=0, fetch_local=False)
                begin, waited = time.perf_counter(), self._waited
                for ref in ready:
                    if not self._take(ref):
                        return
                self._busy += time.perf_counter() - begin - (self._waited - waited)
                self._check_start()
                if self._failed:
                    return
        except BaseException as exc:  # a bug here must reach the consumer, not hang it
            self.fail(Failure.capture(exc, f"the Ray receiver of {self._label}"))

    def _take(self, ref: Any) -> bool:
        """One answer: an actor's setup or a call. False when the receiver should end."""
        entry = self._calls.answered(ref)
        if entry is None:
            return True  # an answer of an actor already taken for dead
        actor, call = entry
        ray = self._actors.ray
        try:
            answer = ray.get(ref)
        except ray.exceptions.RayError as exc:  # its process or node died
            return self._died(actor, exc, call)
        if call is None:
            return self._setup_answer(actor, answer)
        return self._answer(actor, call, answer)

    def _setup_answer(self, actor: Actor, answer: tuple[Any, ...] | Error) -> bool:
        actor.setup_ref = None
        if type(answer) is Error:
            return self._sup.handle(actor.index, answer)
        self._actors.placed(actor, answer)
        return True

    def _answer(self, actor: Actor, call: Call, answer: Outcome) -> bool:
        kind = type(answer)
        if kind is Got:
            self._sup.retried(actor.index, answer.retries)
            return self._chunk(actor, call, answer)
        if kind is Empty:
            self._tally.fetched(0, 0, answer.wall, answer.cpu)
        elif kind is SamplesSkipped:  # no sample of the item could be read
            self._note_processors(actor, answer.processors)
        elif kind is Done and not self._sup.finished(actor.index):
            for pending in list(actor.calls):  # a fetch source: nothing more to ask for
                self._calls.forget(actor, pending)
        return self._sup.handle(actor.index, answer)

    def _chunk(self, actor: Actor, call: Call, got: Got) -> bool:
        self._note_processors(actor, got.processors)
        n, nbytes = got.chunk.n, got.chunk.nbytes
        actor.chunks += 1
        actor.samples += n
        actor.fetch_wall_s += got.wall
        item = None
        if call.item is not None:
            item = self._sup.current(actor.index, got.seq)
            if item is None:  # a duplicate: dropped before its bytes are counted
                return True
        fields = {name: writable(array) for name, array in got.chunk.fields.items()}
        self._objects.received(fields, n, nbytes)
        try:
            checked = self._schema.check(fields, self._ids[actor.index])
        except SourceError as exc:
            self.fail(Failure.capture(exc, self._where(actor)))
            return False
        chunk = Chunk(fields=checked.fields, n=n, nbytes=nbytes, worker_id=checked.worker_id,
                      borrowed=True)
        self._tally.fetched(n, nbytes, got.wall, got.cpu)
        if item is not None and got.skipped is not None \
                and not self._sup.samples(actor.index, item, got.skipped):
            return False
        return self._sup.deliver(actor.index, item, chunk, n, True)

    def _put(self, chunk: Chunk) -> bool:
        """Into the chunk queue, waiting while it is full (freed views are counted meanwhile).
        The wait is not the receive path's work: it is taken out of ``receive_busy_s``."""
        began = time.perf_counter()
        try:
            while not self._out.put(chunk, chunk.nbytes, self._stop, timeout=_POLL_S):
                if self._stop.is_set() or self._out.closed:
                    return False
                self._objects.drain()
            return True
        finally:
            self._waited += time.perf_counter() - began

    def _note_processors(self, actor: Actor, snapshot: Any) -> None:
        if snapshot is not None:
            self._processor_totals.add((actor.name, actor.pid), snapshot)

    # deaths ------------------------------------------------------------------------------------

    def _died(self, actor: Actor, exc: BaseException, call: Call | None) -> bool:
        """An actor's process or node died: forget its calls and let the supervisor hand its
        items out again and replace it or fail the run (``call``: the one that raised)."""
        if actor.dead:  # (its other calls were forgotten and handed out again already)
            return True
        actor.dead = True
        actor.reason = death_reason(exc)
        self._calls.forget_actor(actor)
        self.kill(actor.index)
        return self._sup.died(actor.index)

    # the transport (workers/transport.py), for the supervisor ----------------------------------

    def spawn(self, index: int) -> None:
        self._calls.setup(self._actors.create(index))

    def send(self, index: int, item: WorkItem) -> bool:
        self._calls.send(self._actors.actors[index], item)
        return True

    def kill(self, index: int) -> None:
        self._actors.kill(index)

    def alive(self, index: int) -> bool:
        return not self._actors.actors[index].dead

    def exit_reason(self, index: int) -> str:
        return f"died: {self._actors.actors[index].reason}"

    def where(self, index: int) -> str:
        return self._where(self._actors.actors[index])

    def _check_start(self) -> None:
        """Fail an actor not placed, or not done building its source, within start_timeout."""
        late = self._actors.late(self._sup.finished)
        if late is not None:
            actor, message = late
            self.fail(Failure(exc=WorkerFailure(message), where=self._where(actor),
                              traceback_text=""))

    def _where(self, actor: Actor) -> str:
        at = f"pid {actor.pid}, node {actor.node}" if actor.pid is not None else "not started yet"
        return f"{actor.name} (Ray actor, {at}) of {self._label} (source '{self._source_name}')"

    def slots_scarce(self) -> bool:
        """True when so little object-store room is left that batches must be copied out (so
        that a consumer keeping batches does not keep objects pinned)."""
        return self._objects.scarce()

    # the watchdog ------------------------------------------------------------------------------

    def watch(self, now: float, fetch_timeout: float | None,
              stall_timeout: float | None) -> list[tuple[str, str]]:
        """Fail (and kill) an actor past fetch_timeout in one call; describe stalled actors."""
        if self._failed:
            return []
        found = []
        for actor in list(self._actors.actors):
            since = actor.busy_since
            if self._sup.finished(actor.index) or not since:
                continue
            seconds = now - since
            if fetch_timeout is not None and seconds > fetch_timeout:
                exc = FetchTimeout(f"{self._where(actor)}: one call has not returned after "
                                   f"{seconds:.1f}s (failures.fetch_timeout={fetch_timeout:g}); "
                                   "the actor was killed")
                self._sup.finish(actor.index)
                self.fail(Failure(exc=exc, where=self._where(actor), traceback_text=""))
                self.kill(actor.index)
                return []
            if stall_timeout is not None and seconds > stall_timeout:
                found.append((self._where(actor),
                              f"inside one call for {seconds:.0f}s\n(a Ray actor: `ray stack` on "
                              f"node {actor.node} shows pid {actor.pid}'s stack)"))
        self._stalls = tuple(f"{where}: {text.splitlines()[0]}" for where, text in found)
        return found

    # stats -------------------------------------------------------------------------------------

    def pids(self) -> list[int]:
        """The actors' processes on this machine's node (their memory is this machine's)."""
        return self._actors.pids()

    def stats(self) -> WorkerPoolStats:
        actors = self._actors.stats(self._sup.finished)
        states = [s.state for s in actors]
        inflight, held = self._objects.snapshot()
        calls = sum(len(a.calls) for a in self._actors.actors)
        connected, started = self._actors.connected, self._actors.started
        ray_stats = RayStats(
            address=connected.address if connected else "", local=bool(connected and connected.local),
            connect_s=connected.started_s if connected else 0.0, ready_s=self._actors.ready_s,
            actors=tuple(actors), inflight_items=calls, inflight_bytes=inflight,
            held_bytes=held, cap_bytes=self._objects.cap(), receive_busy_s=self._busy,
            receive_wall_s=time.monotonic() - started if started else 0.0,
            duplicates=self._sup.duplicates, spilled_bytes=self._spilled())
        return self._tally.stats(
            self.kind, states, (IDLE, FETCHING, "blocked", DONE), pids=tuple(self.pids()),
            stalls=self._stalls, processors=self._processor_totals.stats(), ray=ray_stats,
            **self._sup.failures.snapshot())

    def _spilled(self) -> int | None:
        """What Ray spilled, read from disk at most once a second (stats() runs several times a
        second on a dashboard; the folder listing is the same in between)."""
        now = time.monotonic()
        if now - self._spill_read[0] >= 1.0:
            self._spill_read = (now, spilled_bytes(self._actors.ray))
        return self._spill_read[1]

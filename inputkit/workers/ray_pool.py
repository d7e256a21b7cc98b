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
place. Room checks and death reasons are workers/ray_placement.py's.
"""

from __future__ import annotations

import logging
import threading
import time
from collections import deque
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from inputkit.errors import SourceError, WorkerFailure
from inputkit.pipeline.chunk import Chunk, ChunkSchema
from inputkit.pipeline.dispatcher import Dispatcher, WorkItem
from inputkit.pipeline.failures import FailurePolicy, FetchTimeout
from inputkit.pipeline.messages import Failure
from inputkit.pipeline.queues import BoundedQueue
from inputkit.processors import ProcessorTotals
from inputkit.workers import ray_session
from inputkit.workers.base import ActorStats, FailsOnce, FetchTally, RayStats, WorkerPoolStats
from inputkit.workers.outcome import Done, Empty, Error, Got, Outcome, SamplesSkipped
from inputkit.workers.ray_actor import ActorArgs, FetchActor
from inputkit.workers.ray_objects import ObjectLedger, spilled_bytes, writable
from inputkit.workers.ray_placement import check_room, death_reason, placement_hint
from inputkit.workers.supervisor import Supervisor

log = logging.getLogger("inputkit.workers.ray")

_POLL_S = 0.1
IDLE, FETCHING, DONE = "idle", "reading", "done"


@dataclass
class _Call:
    """One call handed to an actor and not yet answered."""

    ref: Any
    item: WorkItem | None  # index-range work; None for a fetch call
    estimate: int  # the bytes its result is expected to pin
    sent: float


@dataclass
class _Actor:
    """The pool's view of one actor: its handle, where it runs, what it holds."""

    index: int
    name: str
    handle: Any
    setup_ref: Any  # None once setup() answered
    created: float
    pid: int | None = None
    node: str = "?"
    node_id: str = ""
    calls: deque[_Call] = field(default_factory=deque)
    busy_since: float = 0.0  # when the call it is in began (0: it holds none)
    dead: bool = False
    reason: str = ""  # why it died, from Ray's error
    chunks: int = 0
    samples: int = 0
    fetch_wall_s: float = 0.0


class RayWorkerPool(FailsOnce):
    kind = "ray"

    def __init__(self, *, spec: Any, schema: ChunkSchema, worker_ids: list[int], num_workers: int,
                 batch_size_hint: int, out: BoundedQueue, label: str, thread_prefix: str,
                 on_failure: Callable[[Failure], None], policy: FailurePolicy = FailurePolicy(),
                 dispatcher: Dispatcher | None = None, downstream: tuple[int, int] = (8, 0)) -> None:
        """``spec``: the InputSpec (its ``ray`` options and source); ``downstream``: how many
        received chunks, and bytes, the queues and batcher can hold (the default byte cap)."""
        self._spec = spec
        self._options = spec.ray
        self._key = f"{spec.key_prefix}workers."
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
        self._ray: Any = None
        self._connected: ray_session.Connected | None = None
        self._remote_class: Any = None
        self._actors: list[_Actor] = []
        self._by_ref: dict[Any, tuple[_Actor, _Call | None]] = {}  # every ref awaited
        self._started = 0.0
        self._ready_s: float | None = None
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
        self._busy = 0.0  # receiver time spent taking results in
        self._waited = 0.0  # ... of which it waited on a full chunk queue
        self._stalls: tuple[str, ...] = ()
        self._spill_read: tuple[float, int | None] = (float("-inf"), None)  # (when, bytes)
        self._session_held = False
        self._receiver = threading.Thread(target=self._receive, name=f"{thread_prefix}-ray",
                                          daemon=True)

    # lifecycle ---------------------------------------------------------------------------------

    def start(self) -> None:
        """Reach Ray (starting a private local one if asked) and create the actors; they build
        their sources in the background, the receiver waits for them."""
        options = self._options
        self._started = time.monotonic()
        # Every device's actors (num_workers counts them all) must fit a private local Ray.
        self._connected = ray_session.acquire(options.address, options.num_cpus,
                                              options.connect_timeout, self._key,
                                              needed_cpus=self._num_workers * options.cpus_per_actor)
        self._session_held = True
        import ray

        self._ray = ray
        if self._connected.local:
            check_room(self._ray, self._key, self._num_workers, options.cpus_per_actor)
        self._remote_class = ray.remote(FetchActor)
        for index in range(len(self._ids)):
            self._actors.append(self._create(index))
        self._receiver.start()

    def _create(self, index: int) -> _Actor:
        options, spec = self._options, self._spec
        wid = self._ids[index]
        args = ActorArgs(worker_id=wid, num_workers=self._num_workers,
                         batch_size_hint=self._hint, source_config=spec.source,
                         source_key=f"{spec.key_prefix}source", policy=self._policy,
                         processors=tuple(spec.processors), processors_seed=spec.epoch.seed,
                         processors_key=f"{spec.key_prefix}processors")
        extra: dict[str, Any] = {}
        if options.runtime_env:
            extra["runtime_env"] = dict(options.runtime_env)
        handle = self._remote_class.options(
            num_cpus=options.cpus_per_actor, max_restarts=0, max_task_retries=0,
            max_concurrency=1, scheduling_strategy=options.scheduling, **extra).remote(args)
        now = time.monotonic()  # building the source is timed like a call (fetch_timeout)
        actor = _Actor(index=index, name=f"ray worker {wid}", handle=handle,
                       setup_ref=handle.setup.remote(), created=now, busy_since=now)
        self._by_ref[actor.setup_ref] = (actor, None)
        return actor

    def stop(self) -> None:
        self._stop.set()

    def join(self, deadline: float) -> list[str]:
        """Stop the receiver, kill every actor this pool created, and let Ray go."""
        self._stop.set()
        if self._receiver.ident is not None:
            self._receiver.join(max(0.0, deadline - time.monotonic()))
        stuck = [self._receiver.name] if self._receiver.is_alive() else []
        ray = self._ray
        if ray is not None and ray.is_initialized():
            for actor in self._actors:
                try:
                    ray.kill(actor.handle, no_restart=True)
                except Exception as exc:  # already gone with its node
                    log.debug("killing %s: %s", actor.name, exc)
        self._by_ref.clear()
        self._sup.repeats.flush()
        if self._session_held:
            self._session_held = False
            ray_session.release()
        return stuck

    # handing out -------------------------------------------------------------------------------

    def _feed(self) -> None:
        """Give every live actor calls up to workers.ray.inflight, within the byte cap."""
        objects = self._objects
        limit = self._options.inflight if objects.sized else 1  # unsized: one call each
        if objects.sized:
            self._size_unsized_calls()
        for actor in self._actors:
            while not self._sup.finished(actor.index) and len(actor.calls) < limit \
                    and not self._stop.is_set():
                if self._dispatcher is not None:
                    # Room for a whole chunk first: an item taken is handed out.
                    if not objects.room_for(objects.estimate()):
                        return
                    item = self._sup.take(actor.index)  # entered in the actor's ledger
                    if item is None:
                        return
                    self.send(actor.index, item)
                    continue
                estimate = objects.estimate()
                if not objects.room_for(estimate):
                    return
                self._track(actor, actor.handle.fetch.remote(), None, estimate)

    def _track(self, actor: _Actor, ref: Any, item: WorkItem | None, estimate: int) -> None:
        call = _Call(ref=ref, item=item, estimate=estimate, sent=time.monotonic())
        if not actor.calls and actor.setup_ref is None:
            actor.busy_since = call.sent
        actor.calls.append(call)
        self._by_ref[ref] = (actor, call)
        self._objects.asked(estimate)

    def _size_unsized_calls(self) -> None:
        """Count the calls sent before any answer sized a chunk (estimated at 0 bytes then)
        at the size now known, before another call is weighed against the cap: otherwise
        each actor's first answer lands uncounted and the pool pins a chunk over its cap."""
        for actor in self._actors:
            for call in actor.calls:
                if call.estimate == 0:
                    call.estimate = self._objects.estimate(
                        None if call.item is None else len(call.item.remaining))
                    self._objects.asked(call.estimate)

    # the receiver thread -----------------------------------------------------------------------

    def _receive(self) -> None:
        ray = self._ray
        try:
            while not self._stop.is_set():
                self._objects.drain()
                self._feed()
                refs = list(self._by_ref)
                if not refs:
                    if all(self._sup.finished(a.index) for a in self._actors):
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
        entry = self._by_ref.pop(ref, None)
        if entry is None:
            return True  # an answer of an actor already taken for dead
        actor, call = entry
        if call is not None:
            actor.calls.remove(call)
            self._objects.answered(call.estimate)
            actor.busy_since = time.monotonic() if actor.calls else 0.0
        try:
            answer = self._ray.get(ref)
        except self._ray.exceptions.RayError as exc:  # its process or node died
            return self._died(actor, exc, call)
        if call is None:
            return self._setup_answer(actor, answer)
        return self._answer(actor, call, answer)

    def _setup_answer(self, actor: _Actor, answer: tuple[Any, ...] | Error) -> bool:
        actor.setup_ref = None
        if type(answer) is Error:
            return self._sup.handle(actor.index, answer)
        _, actor.pid, actor.node, actor.node_id, _ = answer
        if actor.calls:
            actor.busy_since = time.monotonic()
        if self._ready_s is None and all(a.setup_ref is None for a in self._actors):
            self._ready_s = time.monotonic() - self._started
        return True

    def _answer(self, actor: _Actor, call: _Call, answer: Outcome) -> bool:
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
                self._forget(actor, pending)
        return self._sup.handle(actor.index, answer)

    def _chunk(self, actor: _Actor, call: _Call, got: Got) -> bool:
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

    def _note_processors(self, actor: _Actor, snapshot: Any) -> None:
        if snapshot is not None:
            self._processor_totals.add((actor.name, actor.pid), snapshot)

    def _forget(self, actor: _Actor, call: _Call) -> None:
        actor.calls.remove(call)
        self._by_ref.pop(call.ref, None)
        self._objects.answered(call.estimate)

    # deaths ------------------------------------------------------------------------------------

    def _died(self, actor: _Actor, exc: BaseException, call: _Call | None) -> bool:
        """An actor's process or node died: forget its calls and let the supervisor hand its
        items out again and replace it or fail the run (``call``: the one that raised)."""
        if actor.dead:  # (its other calls were forgotten and handed out again already)
            return True
        actor.dead = True
        actor.reason = death_reason(exc)
        for pending in list(actor.calls):
            self._forget(actor, pending)
        if actor.setup_ref is not None:
            self._by_ref.pop(actor.setup_ref, None)
        self.kill(actor.index)
        return self._sup.died(actor.index)

    # the transport (workers/transport.py), for the supervisor ----------------------------------

    def spawn(self, index: int) -> None:
        self._actors[index] = self._create(index)

    def send(self, index: int, item: WorkItem) -> bool:
        actor = self._actors[index]
        estimate = self._objects.estimate(len(item.remaining))
        self._track(actor, actor.handle.read.remote(item.seq, item.epoch, item.remaining), item,
                    estimate)
        return True

    def kill(self, index: int) -> None:
        actor = self._actors[index]
        try:
            self._ray.kill(actor.handle, no_restart=True)
        except Exception as kill_error:  # gone with its node
            log.debug("killing %s: %s", actor.name, kill_error)

    def alive(self, index: int) -> bool:
        return not self._actors[index].dead

    def exit_reason(self, index: int) -> str:
        return f"died: {self._actors[index].reason}"

    def where(self, index: int) -> str:
        return self._where(self._actors[index])

    def _check_start(self) -> None:
        """Fail an actor not placed, or not done building its source, within start_timeout."""
        timeout = self._options.start_timeout
        now = time.monotonic()
        for actor in self._actors:
            if actor.setup_ref is not None and not self._sup.finished(actor.index) \
                    and now - actor.created > timeout:
                hint = placement_hint(self._ray, self._options.cpus_per_actor)
                self.fail(Failure(exc=WorkerFailure(
                    f"{self._where(actor)} did not start within {timeout:g}s "
                    f"(workers.ray.start_timeout): {hint}"),
                    where=self._where(actor), traceback_text=""))
                return

    def _where(self, actor: _Actor) -> str:
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
        for actor in list(self._actors):
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
        here = self._local_node()
        return [a.pid for a in self._actors if a.pid is not None and a.node_id == here
                and not a.dead]

    def _local_node(self) -> str:
        try:
            return str(self._ray.get_runtime_context().get_node_id()) if self._ray else ""
        except Exception:
            return ""

    def stats(self) -> WorkerPoolStats:
        actors = []
        for actor in list(self._actors):
            state = "dead" if actor.dead else DONE if self._sup.finished(actor.index) else \
                "starting" if actor.setup_ref is not None else FETCHING if actor.calls else IDLE
            actors.append(ActorStats(name=actor.name, node=actor.node, pid=actor.pid, state=state,
                                     chunks=actor.chunks, samples=actor.samples,
                                     fetch_wall_s=actor.fetch_wall_s, node_id=actor.node_id))
        states = [s.state for s in actors]
        inflight, held = self._objects.snapshot()
        calls = sum(len(a.calls) for a in self._actors)
        connected = self._connected
        ray_stats = RayStats(
            address=connected.address if connected else "", local=bool(connected and connected.local),
            connect_s=connected.started_s if connected else 0.0, ready_s=self._ready_s,
            actors=tuple(actors), inflight_items=calls, inflight_bytes=inflight,
            held_bytes=held, cap_bytes=self._objects.cap(), receive_busy_s=self._busy,
            receive_wall_s=time.monotonic() - self._started if self._started else 0.0,
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
            self._spill_read = (now, spilled_bytes(self._ray))
        return self._spill_read[1]

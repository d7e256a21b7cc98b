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

Because the pool knows which items each actor holds, an actor that dies (its
process killed, its node stopped) loses nothing: its unanswered items are handed
out again, a result for an item already delivered is dropped by its sequence
number, and under ``failures.on_worker_death=restart`` a new actor takes its place.
"""

from __future__ import annotations

import logging
import threading
import time
from collections import deque
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from inputkit.chunk import Chunk, ChunkSchema, private_copy
from inputkit.errors import ConfigError, SourceError, WorkerFailure
from inputkit.failures import (
    RETRY,
    SKIP,
    SKIP_SAMPLES,
    FailurePolicy,
    FailureTally,
    FetchTimeout,
    pool_log,
    samples_message,
)
from inputkit.messages import END, Failure
from inputkit.processors import ProcessorTotals
from inputkit.queues import BoundedQueue
from inputkit.work import Dispatcher, WorkItem
from inputkit.workers import ray_session
from inputkit.workers.base import ActorStats, FailsOnce, FetchTally, RayStats, WorkerPoolStats
from inputkit.workers.outcome import (
    Done,
    Empty,
    Error,
    FetchSkipped,
    Got,
    Outcome,
    SamplesSkipped,
    error_type,
)
from inputkit.workers.ray_actor import ActorArgs, FetchActor
from inputkit.workers.ray_objects import ObjectLedger, spilled_bytes, writable

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
    finished: bool = False  # done, failed or dead: it gets no more calls
    dead: bool = False
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
        pool = f"{label} (source '{self._source_name}')"
        self._failures = FailureTally(policy, pool, per_sample=dispatcher is not None)
        self._repeats = pool_log(pool)
        self._processor_totals = ProcessorTotals()
        # Object-store bytes: results asked for, and received ones still referenced.
        self._objects = ObjectLedger(
            spec.ray.inflight_bytes, len(worker_ids) * spec.ray.inflight, downstream,
            dispatcher.chunk_size if dispatcher is not None else None, len(worker_ids))
        self._duplicates = 0
        self._busy = 0.0  # receiver time spent taking results in
        self._waited = 0.0  # ... of which it waited on a full chunk queue
        self._stalls: tuple[str, ...] = ()
        self._spill_read: tuple[float, int | None] = (float("-inf"), None)  # (when, bytes)
        self._session_held = False
        self._receiver = threading.Thread(target=self._receive, name=f"{thread_prefix}-ray",
                                          daemon=True)
        if dispatcher is not None:
            dispatcher.bind(self._emit, hold=private_copy)

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
            self._check_room()
        self._remote_class = ray.remote(FetchActor)
        for index in range(len(self._ids)):
            self._actors.append(self._create(index))
        self._receiver.start()

    def _check_room(self) -> None:
        """A private local Ray too small for these actors fails now, not after start_timeout."""
        total = self._ray.cluster_resources().get("CPU", 0.0)
        needed = self._num_workers * self._options.cpus_per_actor
        if needed > total:
            raise ConfigError(f"{self._key}ray.num_cpus", f"the local Ray has {total:g} CPUs, but "
                              f"{self._num_workers} actors (workers.count on every device) x "
                              f"{self._options.cpus_per_actor:g} (workers.ray.cpus_per_actor) "
                              f"need {needed:g}; raise workers.ray.num_cpus or lower one of those")

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
        self._repeats.flush()
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
            while not actor.finished and len(actor.calls) < limit and not self._stop.is_set():
                item = None
                if self._dispatcher is not None:
                    # Room for a whole chunk first: an item taken is handed out.
                    if not objects.room_for(objects.estimate()):
                        return
                    item = self._dispatcher.try_take()
                    if item is None:
                        return
                    estimate = objects.estimate(len(item.remaining))
                    ref = actor.handle.read.remote(item.seq, item.epoch, item.remaining)
                else:
                    estimate = objects.estimate()
                    if not objects.room_for(estimate):
                        return
                    ref = actor.handle.fetch.remote()
                call = _Call(ref=ref, item=item, estimate=estimate, sent=time.monotonic())
                if not actor.calls and actor.setup_ref is None:
                    actor.busy_since = call.sent
                actor.calls.append(call)
                self._by_ref[ref] = (actor, call)
                objects.asked(estimate)

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
                    if all(a.finished for a in self._actors):
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
            actor.finished = True
            self.fail(answer.failure(self._where(actor)))
            return False
        _, actor.pid, actor.node, actor.node_id, _ = answer
        if actor.calls:
            actor.busy_since = time.monotonic()
        if self._ready_s is None and all(a.setup_ref is None for a in self._actors):
            self._ready_s = time.monotonic() - self._started
        return True

    def _answer(self, actor: _Actor, call: _Call, answer: Outcome) -> bool:
        kind = type(answer)
        if kind is Error:
            actor.finished = True
            self.fail(answer.failure(self._where(actor)))
            return False
        if kind is Done:
            return self._actor_done(actor)
        if kind is Got:
            self._retried(actor, answer.retries)
            return self._chunk(actor, call, answer)
        if kind is Empty:
            self._retried(actor, answer.retries)
            self._tally.fetched(0, 0, answer.wall, answer.cpu)
            self._failures.fetched()
            return True
        if kind is FetchSkipped:
            self._retried(actor, answer.retries)
            self._repeats.log(logging.WARNING, SKIP, error_type(answer.why),
                              f"{self._where(actor)}: {SKIP}: {answer.why}")
            limit = self._failures.skipped(answer.why)
            if limit is not None:
                self.fail(Failure(exc=limit, where=self._where(actor), traceback_text=""))
                return False
            return True
        if kind is SamplesSkipped:  # no sample of the item could be read
            self._note_processors(actor, answer.processors)
            if not self._current(call, answer.seq):
                return True
            if not self._skipped_samples(actor, answer):
                return False
            return self._dispatcher.skip(call.item)  # type: ignore[union-attr]
        raise WorkerFailure(f"unexpected answer {answer!r} from {self._where(actor)}")

    def _retried(self, actor: _Actor, retries: tuple[str, ...]) -> None:
        """Count and log the errors an actor retried before an answer (on_error=retry)."""
        for text in retries:
            self._failures.retried(text)
            self._repeats.log(logging.INFO, RETRY, error_type(text),
                              f"{self._where(actor)}: fetch failed ({text}); retrying "
                              "(failures.on_error=retry)")

    def _chunk(self, actor: _Actor, call: _Call, got: Got) -> bool:
        self._note_processors(actor, got.processors)
        n, nbytes = got.chunk.n, got.chunk.nbytes
        actor.chunks += 1
        actor.samples += n
        actor.fetch_wall_s += got.wall
        if call.item is not None and not self._current(call, got.seq):
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
        if call.item is None:
            self._failures.fetched()
            return self._put(chunk)
        if got.skipped is not None:
            if not self._skipped_samples(actor, got.skipped):
                return False
            if not self._dispatcher.drop(call.item, [i for i, _ in got.skipped.bad]):  # type: ignore[union-attr]
                return False
        else:
            self._failures.fetched(n)
        return self._dispatcher.deliver(call.item, chunk, n, True)  # type: ignore[union-attr]

    def _current(self, call: _Call, seq: int) -> bool:
        """Whether ``call``'s item still waits for its samples; a duplicate is counted and
        dropped (an item handed out again after a death whose first answer arrived too)."""
        item = call.item
        if item is not None and item.seq == seq and self._dispatcher is not None \
                and self._dispatcher.open(item):
            return True
        self._duplicates += 1
        return False

    def _emit(self, item: Any) -> bool:
        """The dispatcher's way downstream: chunks wait for room, control messages do not."""
        if isinstance(item, Chunk):
            return self._put(item)
        return self._out.put_control(item)

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

    def _skipped_samples(self, actor: _Actor, skipped: SamplesSkipped) -> bool:
        bad, ok = skipped.bad, skipped.ok
        self._repeats.log(logging.WARNING, SKIP_SAMPLES, error_type(bad[-1][1]),
                          samples_message(self._where(actor), bad, len(ok)))
        limit = self._failures.read_samples(bad, ok)
        if limit is not None:
            self.fail(Failure(exc=limit, where=self._where(actor), traceback_text=""))
            return False
        return True

    def _note_processors(self, actor: _Actor, snapshot: Any) -> None:
        if snapshot is not None:
            self._processor_totals.add((actor.name, actor.pid), snapshot)

    def _actor_done(self, actor: _Actor) -> bool:
        """A fetch source is exhausted for this actor; END once it is for all of them."""
        if not actor.finished:
            actor.finished = True
            for call in list(actor.calls):
                self._forget(actor, call)
            if all(a.finished for a in self._actors) and not self._failed:
                self._out.put_control(END)
        return True

    def _forget(self, actor: _Actor, call: _Call) -> None:
        actor.calls.remove(call)
        self._by_ref.pop(call.ref, None)
        self._objects.answered(call.estimate)

    # deaths ------------------------------------------------------------------------------------

    def _died(self, actor: _Actor, exc: BaseException, call: _Call | None) -> bool:
        """An actor's process or node died: hand its items out again; replace it or fail."""
        if actor.dead:  # (its other calls were forgotten and handed out again already)
            return True
        actor.dead = actor.finished = True
        reason = _death_reason(exc)
        lost = [call, *actor.calls] if call is not None else list(actor.calls)
        for pending in list(actor.calls):
            self._forget(actor, pending)
        if actor.setup_ref is not None:
            self._by_ref.pop(actor.setup_ref, None)
        if self._dispatcher is not None:
            for pending in lost:
                if pending is not None and pending.item is not None:
                    self._dispatcher.requeue(pending.item)
        try:
            self._ray.kill(actor.handle, no_restart=True)
        except Exception as kill_error:  # gone with its node
            log.debug("killing %s: %s", actor.name, kill_error)
        if self._stop.is_set():
            return True
        policy = self._policy
        restarts_left = policy.max_restarts is None or self._failures.restarts < policy.max_restarts
        if policy.on_worker_death != "restart" or not restarts_left:
            note = "" if restarts_left else \
                f"; it is not restarted: failures.max_restarts={policy.max_restarts} reached"
            self.fail(Failure(exc=WorkerFailure(f"{self._where(actor)} died: {reason}{note}"),
                              where=self._where(actor), traceback_text=""))
            return False
        self._failures.restarted(f"{self._where(actor)} died: {reason}")
        log.warning("%s died (%s); starting another (failures.on_worker_death=restart)",
                    self._where(actor), reason)
        self._actors[actor.index] = self._create(actor.index)
        return True

    def _check_start(self) -> None:
        """Fail an actor not placed, or not done building its source, within start_timeout."""
        timeout = self._options.start_timeout
        now = time.monotonic()
        for actor in self._actors:
            if actor.setup_ref is not None and not actor.finished and now - actor.created > timeout:
                self.fail(Failure(exc=WorkerFailure(
                    f"{self._where(actor)} did not start within {timeout:g}s "
                    f"(workers.ray.start_timeout): {self._placement_hint()}"),
                    where=self._where(actor), traceback_text=""))
                return

    def _placement_hint(self) -> str:
        try:
            free = self._ray.available_resources().get("CPU", 0.0)
            total = self._ray.cluster_resources().get("CPU", 0.0)
        except Exception:
            return "its source's constructor may be slow, or the cluster has no room for it"
        return (f"the cluster has {free:g} of {total:g} CPUs free and each actor asks for "
                f"{self._options.cpus_per_actor:g} (workers.ray.cpus_per_actor); lower "
                "workers.count or cpus_per_actor, add nodes, or the source's constructor is slow")

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
            if actor.finished or not since:
                continue
            seconds = now - since
            if fetch_timeout is not None and seconds > fetch_timeout:
                exc = FetchTimeout(f"{self._where(actor)}: one call has not returned after "
                                   f"{seconds:.1f}s (failures.fetch_timeout={fetch_timeout:g}); "
                                   "the actor was killed")
                actor.finished = True
                self.fail(Failure(exc=exc, where=self._where(actor), traceback_text=""))
                try:
                    self._ray.kill(actor.handle, no_restart=True)
                except Exception as kill_error:
                    log.debug("killing %s: %s", actor.name, kill_error)
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
            state = "dead" if actor.dead else DONE if actor.finished else \
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
            duplicates=self._duplicates, spilled_bytes=self._spilled())
        return self._tally.stats(
            self.kind, states, (IDLE, FETCHING, "blocked", DONE), pids=tuple(self.pids()),
            stalls=self._stalls, processors=self._processor_totals.stats(), ray=ray_stats,
            **self._failures.snapshot())


    def _spilled(self) -> int | None:
        """What Ray spilled, read from disk at most once a second (stats() runs several times a
        second on a dashboard; the folder listing is the same in between)."""
        now = time.monotonic()
        if now - self._spill_read[0] >= 1.0:
            self._spill_read = (now, spilled_bytes(self._ray))
        return self._spill_read[1]


def _death_reason(exc: BaseException) -> str:
    """Why an actor died, in one line, from Ray's error."""
    lines = [line.strip() for line in str(exc).splitlines() if line.strip()]
    for line in lines:
        if "because" in line or "died" in line.lower() and "unexpectedly" not in line:
            return line[:300]
    return f"{type(exc).__name__}: {lines[0] if lines else ''}"[:300]

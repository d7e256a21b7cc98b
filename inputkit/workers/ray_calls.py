"""The calls a Ray pool has handed to its actors: keeping each actor fed, within the byte cap.

Why a module of its own: feeding is one decision with one invariant. Each live actor
holds up to ``workers.ray.inflight`` calls (one while no answer has sized a chunk), and
a call is sent only while the object ledger (workers/ray_objects.py) has room for what
its answer will pin; every call is found again by the object ref it answers through, so
an answer, a death or a fetch source's end forgets it and gives its bytes back exactly
once. Which items to send is the supervisor's (workers/supervisor.py); what an answer
means is the pool's (workers/ray_pool.py).
"""

from __future__ import annotations

import threading
import time
from typing import Any

from inputkit.pipeline.dispatcher import WorkItem
from inputkit.workers.ray_lifecycle import Actor, Call
from inputkit.workers.ray_objects import ObjectLedger
from inputkit.workers.supervisor import Supervisor


class Calls:
    """Every object ref a pool awaits (an actor's setup, or a call) and the actor it is of.

    ``indexed``: the pool reads index-range work items (from the supervisor) rather than
    calling ``fetch``; ``stop``: the pool's stop event (no call is sent once it is set).
    """

    def __init__(self, objects: ObjectLedger, inflight: int, sup: Supervisor,
                 stop: threading.Event, *, indexed: bool) -> None:
        self.objects = objects
        self._inflight = inflight
        self._sup = sup
        self._stop = stop
        self._indexed = indexed
        self._by_ref: dict[Any, tuple[Actor, Call | None]] = {}  # every ref awaited

    def refs(self) -> list[Any]:
        return list(self._by_ref)

    def setup(self, actor: Actor) -> None:
        """Await ``actor``'s setup (building its source)."""
        self._by_ref[actor.setup_ref] = (actor, None)

    def feed(self, actors: list[Actor]) -> None:
        """Give every live actor calls up to workers.ray.inflight, within the byte cap."""
        objects = self.objects
        limit = self._inflight if objects.sized else 1  # unsized: one call each
        if objects.sized:
            self._size_unsized_calls(actors)
        for actor in actors:
            while not self._sup.finished(actor.index) and len(actor.calls) < limit \
                    and not self._stop.is_set():
                if self._indexed:
                    # Room for a whole chunk first: an item taken is handed out.
                    if not objects.room_for(objects.estimate()):
                        return
                    item = self._sup.take(actor.index)  # entered in the actor's ledger
                    if item is None:
                        return
                    self.send(actor, item)
                    continue
                estimate = objects.estimate()
                if not objects.room_for(estimate):
                    return
                self._track(actor, actor.handle.fetch.remote(), None, estimate)

    def send(self, actor: Actor, item: WorkItem) -> None:
        """Ask ``actor`` to read ``item``."""
        estimate = self.objects.estimate(len(item.remaining))
        self._track(actor, actor.handle.read.remote(item.seq, item.epoch, item.remaining), item,
                    estimate)

    def _track(self, actor: Actor, ref: Any, item: WorkItem | None, estimate: int) -> None:
        call = Call(ref=ref, item=item, estimate=estimate, sent=time.monotonic())
        if not actor.calls and actor.setup_ref is None:
            actor.busy_since = call.sent
        actor.calls.append(call)
        self._by_ref[ref] = (actor, call)
        self.objects.asked(estimate)

    def _size_unsized_calls(self, actors: list[Actor]) -> None:
        """Count the calls sent before any answer sized a chunk (estimated at 0 bytes then)
        at the size now known, before another call is weighed against the cap: otherwise
        each actor's first answer lands uncounted and the pool pins a chunk over its cap."""
        for actor in actors:
            for call in actor.calls:
                if call.estimate == 0:
                    call.estimate = self.objects.estimate(
                        None if call.item is None else len(call.item.remaining))
                    self.objects.asked(call.estimate)

    def answered(self, ref: Any) -> tuple[Actor, Call | None] | None:
        """``ref`` is ready: the actor and call it answers (None: a setup), forgotten; None for
        an answer of an actor already taken for dead."""
        entry = self._by_ref.pop(ref, None)
        if entry is None:
            return None
        actor, call = entry
        if call is not None:
            actor.calls.remove(call)
            self.objects.answered(call.estimate)
            actor.busy_since = time.monotonic() if actor.calls else 0.0
        return entry

    def forget(self, actor: Actor, call: Call) -> None:
        """A call that will not be answered (its actor died, or its fetch source ended)."""
        actor.calls.remove(call)
        self._by_ref.pop(call.ref, None)
        self.objects.answered(call.estimate)

    def forget_actor(self, actor: Actor) -> None:
        """``actor`` died: forget every call it holds, and its setup if unanswered."""
        for pending in list(actor.calls):
            self.forget(actor, pending)
        if actor.setup_ref is not None:
            self._by_ref.pop(actor.setup_ref, None)

    def clear(self) -> None:
        self._by_ref.clear()

"""The Ray actors of one pool: reaching Ray, creating each actor (again, after a death), killing them.

Why a module of its own: an actor's lifecycle (the session it needs, the options it
is created with, where it was placed, whether it started within
``workers.ray.start_timeout``, its kill, and the session let go at the end) does not
depend on what the pool asks of it. The calls in flight and the byte cap are
workers/ray_calls.py's; what the answers mean is the pool's (workers/ray_pool.py);
room checks, placement hints and death reasons are workers/ray_placement.py's.
"""

from __future__ import annotations

import logging
import time
from collections import deque
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from inputkit.pipeline.dispatcher import WorkItem
from inputkit.pipeline.failures import FailurePolicy
from inputkit.workers import ray_session
from inputkit.workers.base import ActorStats
from inputkit.workers.ray_actor import ActorArgs, FetchActor
from inputkit.workers.ray_placement import check_room, placement_hint

log = logging.getLogger("inputkit.workers.ray")

IDLE, FETCHING, DONE = "idle", "reading", "done"


@dataclass
class Call:
    """One call handed to an actor and not yet answered."""

    ref: Any
    item: WorkItem | None  # index-range work; None for a fetch call
    estimate: int  # the bytes its result is expected to pin
    sent: float


@dataclass
class Actor:
    """The pool's view of one actor: its handle, where it runs, what it holds."""

    index: int
    name: str
    handle: Any
    setup_ref: Any  # None once setup() answered
    created: float
    pid: int | None = None
    node: str = "?"
    node_id: str = ""
    calls: deque[Call] = field(default_factory=deque)
    busy_since: float = 0.0  # when the call it is in began (0: it holds none)
    dead: bool = False
    reason: str = ""  # why it died, from Ray's error
    chunks: int = 0
    samples: int = 0
    fetch_wall_s: float = 0.0


class RayActors:
    """One pool's actors by index (a restart reuses the index) and its hold on the Ray session.

    ``spec``: the InputSpec (its ``ray`` options, source and processors); ``where(actor)``
    names an actor for messages (the pool's label and source).
    """

    def __init__(self, *, spec: Any, worker_ids: list[int], num_workers: int,
                 batch_size_hint: int, policy: FailurePolicy,
                 where: Callable[[Actor], str]) -> None:
        self._spec = spec
        self._options = spec.ray
        self._key = f"{spec.key_prefix}workers."
        self._ids = worker_ids
        self._num_workers = num_workers
        self._hint = batch_size_hint
        self._policy = policy
        self._where = where
        self.ray: Any = None
        self.connected: ray_session.Connected | None = None
        self.started = 0.0
        self.ready_s: float | None = None  # when every actor had built its source
        self.actors: list[Actor] = []
        self._remote_class: Any = None
        self._session_held = False

    def connect(self) -> None:
        """Reach Ray (starting a private local one if asked) and check there is room."""
        options = self._options
        self.started = time.monotonic()
        # Every device's actors (num_workers counts them all) must fit a private local Ray.
        self.connected = ray_session.acquire(options.address, options.num_cpus,
                                             options.connect_timeout, self._key,
                                             needed_cpus=self._num_workers * options.cpus_per_actor)
        self._session_held = True
        import ray

        self.ray = ray
        if self.connected.local:
            check_room(self.ray, self._key, self._num_workers, options.cpus_per_actor)
        self._remote_class = ray.remote(FetchActor)

    def create(self, index: int) -> Actor:
        """Create actor ``index`` (a new one in its place after a death); it builds its source
        in the background, answering through ``setup_ref``."""
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
        actor = Actor(index=index, name=f"ray worker {wid}", handle=handle,
                      setup_ref=handle.setup.remote(), created=now, busy_since=now)
        if index == len(self.actors):
            self.actors.append(actor)
        else:
            self.actors[index] = actor
        return actor

    def placed(self, actor: Actor, answer: tuple[Any, ...]) -> None:
        """``actor`` built its source: where it runs, and when every actor was ready."""
        _, actor.pid, actor.node, actor.node_id, _ = answer
        if actor.calls:
            actor.busy_since = time.monotonic()
        if self.ready_s is None and all(a.setup_ref is None for a in self.actors):
            self.ready_s = time.monotonic() - self.started

    def late(self, finished: Callable[[int], bool]) -> tuple[Actor, str] | None:
        """An actor not placed, or not done building its source, within start_timeout, and
        why (the placement hint); None when every one is in time."""
        timeout = self._options.start_timeout
        now = time.monotonic()
        for actor in self.actors:
            if actor.setup_ref is not None and not finished(actor.index) \
                    and now - actor.created > timeout:
                hint = placement_hint(self.ray, self._options.cpus_per_actor)
                return actor, (f"{self._where(actor)} did not start within {timeout:g}s "
                               f"(workers.ray.start_timeout): {hint}")
        return None

    def kill(self, index: int) -> None:
        actor = self.actors[index]
        try:
            self.ray.kill(actor.handle, no_restart=True)
        except Exception as kill_error:  # gone with its node
            log.debug("killing %s: %s", actor.name, kill_error)

    def close(self) -> None:
        """Kill every actor this pool created, and let the Ray session go."""
        ray = self.ray
        if ray is not None and ray.is_initialized():
            for actor in self.actors:
                try:
                    ray.kill(actor.handle, no_restart=True)
                except Exception as exc:  # already gone with its node
                    log.debug("killing %s: %s", actor.name, exc)

    def release(self) -> None:
        """Let the Ray session go (once)."""
        if self._session_held:
            self._session_held = False
            ray_session.release()

    def pids(self) -> list[int]:
        """The actors' processes on this machine's node (their memory is this machine's)."""
        here = self._local_node()
        return [a.pid for a in self.actors if a.pid is not None and a.node_id == here
                and not a.dead]

    def _local_node(self) -> str:
        try:
            return str(self.ray.get_runtime_context().get_node_id()) if self.ray else ""
        except Exception:
            return ""

    def stats(self, finished: Callable[[int], bool]) -> list[ActorStats]:
        """Each actor: where it runs, its state, what it delivered."""
        actors = []
        for actor in list(self.actors):
            state = "dead" if actor.dead else DONE if finished(actor.index) else \
                "starting" if actor.setup_ref is not None else FETCHING if actor.calls else IDLE
            actors.append(ActorStats(name=actor.name, node=actor.node, pid=actor.pid, state=state,
                                     chunks=actor.chunks, samples=actor.samples,
                                     fetch_wall_s=actor.fetch_wall_s, node_id=actor.node_id))
        return actors

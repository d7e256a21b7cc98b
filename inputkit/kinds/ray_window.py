"""The Ray kind's figures over a window: per node and per actor, the receiver's busy share,
and what the Ray verdict rules read (kinds/ray_view.py shows and judges them).

Computed once per window by the Ray view's ``window`` hook, from two ``RayStats`` snapshots.
"""

from __future__ import annotations

from collections import Counter
from dataclasses import dataclass
from typing import Any

from inputkit.kinds.ray_stats import RayStats

_STATES = ("reading", "idle", "starting", "done", "dead")
_LIVE_STATES = ("reading", "idle")  # an actor that can take calls (not starting, done, dead)


@dataclass(frozen=True)
class ActorWindow:
    """One Ray actor over the window: its state now and what it delivered per second."""

    name: str
    pid: int | None
    state: str
    chunks_per_s: float
    samples_per_s: float


@dataclass(frozen=True)
class NodeWindow:
    """The actors of one node (by its address): totals since start, rates over the window."""

    node: str
    actors: tuple[ActorWindow, ...]
    chunks: int
    samples: int
    chunks_per_s: float
    samples_per_s: float

    @property
    def states(self) -> dict[str, int]:
        """How many actors are in each state (reading, idle, starting, done, dead, in that
        order; a state not in that list after them)."""
        found = Counter(a.state for a in self.actors)
        rank = {state: i for i, state in enumerate(_STATES)}
        return {state: found[state] for state in sorted(found, key=lambda s: rank.get(s, 99))}


@dataclass(frozen=True)
class RayWindow:
    """A Ray pool over the window: per node, and the receiver's busy share of the window."""

    stats: RayStats
    nodes: tuple[NodeWindow, ...]
    receive_busy: float

    def record(self) -> dict[str, Any]:
        """The ``ray`` entry of a coordinator in ``metrics.jsonl``."""
        s = self.stats
        return {"nodes": [{"node": n.node, "actors": len(n.actors), "states": n.states,
                           "chunks": n.chunks, "samples": n.samples,
                           "chunks_per_s": n.chunks_per_s, "samples_per_s": n.samples_per_s}
                          for n in self.nodes],
                "inflight_items": s.inflight_items, "inflight_bytes": s.inflight_bytes,
                "held_bytes": s.held_bytes, "cap_bytes": s.cap_bytes,
                "spilled_bytes": s.spilled_bytes, "duplicates": s.duplicates,
                "receive_busy": self.receive_busy}


@dataclass(frozen=True)
class RayEvidence:
    """What the Ray rules read: ``receive_busy``, the share of the span the trainer's receiver
    thread spent taking results in; ``actors_reading``, the share of live actors holding a
    call now; ``inflight_items`` and ``pinned_bytes`` (in flight plus held) now, against
    ``cap_bytes``; how many ``nodes`` the actors run on, and ``ray_local``: a private local
    Ray (this machine's idle cores are then the actors' too)."""

    receive_busy: float | None = None
    actors_reading: float = 0.0
    inflight_items: int = 0
    pinned_bytes: int = 0
    cap_bytes: int | None = None
    nodes: int = 0
    ray_local: bool = False


def _per_s(count: int, span: float) -> float:
    return max(0, count) / span if span > 0 else 0.0


def _share(value: float, span: float) -> float:
    return min(1.0, max(0.0, value / span)) if span > 0 else 0.0


def ray_window(now: RayStats, before: RayStats | None, span: float) -> RayWindow:
    """Per-node rates between two snapshots (since start without ``before``; ``span`` is the
    seconds between them). An actor is matched by name and pid: one that replaced a dead
    actor (under its name, in another process) counts from 0, and one gone from the list no
    longer counts. Without ``before`` the receiver's busy time is shared over the span, or
    its life when shorter: it took almost nothing in before the first batch."""
    then = {a.name: a for a in before.actors} if before is not None else {}
    nodes = []
    for node, actors in now.nodes.items():
        rows = []
        for a in actors:
            old = then.get(a.name)
            if old is not None and (old.pid not in (None, a.pid) or a.chunks < old.chunks):
                old = None  # a new actor under the old one's name
            chunks = a.chunks - (old.chunks if old is not None else 0)
            samples = a.samples - (old.samples if old is not None else 0)
            rows.append(ActorWindow(name=a.name, pid=a.pid, state=a.state,
                                    chunks_per_s=_per_s(chunks, span),
                                    samples_per_s=_per_s(samples, span)))
        nodes.append(NodeWindow(node=node, actors=tuple(rows),
                                chunks=sum(a.chunks for a in actors),
                                samples=sum(a.samples for a in actors),
                                chunks_per_s=sum(r.chunks_per_s for r in rows),
                                samples_per_s=sum(r.samples_per_s for r in rows)))
    if before is not None:
        busy = _share(now.receive_busy_s - before.receive_busy_s,
                      now.receive_wall_s - before.receive_wall_s)
    else:
        busy = _share(now.receive_busy_s, min(now.receive_wall_s, span))
    return RayWindow(stats=now, nodes=tuple(nodes), receive_busy=busy)


def live_actors(ray: RayStats) -> int:
    return sum(a.state in _LIVE_STATES for a in ray.actors)

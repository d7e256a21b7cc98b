"""What a Ray pool reports: the cluster, each actor, and what it pins in the object store.

The Ray kind's stats extension (``WorkerPoolStats.ray``), produced by
``workers/ray_pool.py`` and read by the kind's view (``kinds/ray_view.py``). Plain
dataclasses with no import of Ray, so snapshots read anywhere.
"""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True)
class ActorStats:
    """One Ray actor: where it runs and what it delivered (``state``: starting, reading,
    idle, done or dead)."""

    name: str
    node: str  # the node's address
    pid: int | None
    state: str
    chunks: int
    samples: int
    fetch_wall_s: float
    node_id: str = ""  # Ray's node id: two nodes on one machine share an address

    @property
    def node_label(self) -> str:
        """The node's address, with the start of its id when known (unique per node)."""
        return f"{self.node} ({self.node_id[:8]})" if self.node_id else self.node


@dataclass(frozen=True)
class RayStats:
    """A Ray pool: the cluster, each actor, and what this pool pins in the object store.

    ``inflight_*``: calls handed out and not yet received (their results are being made or
    wait in the object store); ``held_bytes``: received chunks still referenced in this
    pipeline (queues, batcher), which pin their objects; ``cap_bytes``: the most the two may
    reach (workers.ray.inflight_bytes, or what the queues hold). ``receive_busy_s``: the
    trainer's receiver thread's time spent taking results in (the receive path).
    """

    address: str
    local: bool  # a private local Ray, started for this run
    connect_s: float
    ready_s: float | None  # from start until every actor had built its source
    actors: tuple[ActorStats, ...]
    inflight_items: int
    inflight_bytes: int
    held_bytes: int
    cap_bytes: int | None
    receive_busy_s: float
    receive_wall_s: float
    duplicates: int  # results of items already delivered, dropped by sequence number
    spilled_bytes: int | None  # what the local node's Ray spilled to disk (None: unknown)

    @property
    def nodes(self) -> dict[str, list[ActorStats]]:
        """The actors by node (``ActorStats.node_label``: address and id)."""
        by_node: dict[str, list[ActorStats]] = {}
        for actor in self.actors:
            by_node.setdefault(actor.node_label, []).append(actor)
        return by_node

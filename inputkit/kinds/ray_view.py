"""What Ray workers show and how they are judged: the Ray kind's view (kinds/view.py).

Its window and evidence (kinds/ray_window.py: per node and per actor over the span, the
receiver's busy share, the object-store cap) go through its verdict rules (actors, receive path, in-flight
cap), its dashboard rows and plain lines, its ``ray`` entry in metrics.jsonl and
summary.json with the end-of-run lines, and the spill warning. Nothing here imports Ray.
"""

from __future__ import annotations

from typing import Any

from inputkit.config.sizes import format_size
from inputkit.kinds.ray_window import (
    NodeWindow,
    RayEvidence,
    RayWindow,
    live_actors,
    ray_window,
)
from inputkit.kinds.view import KindView
from inputkit.observe.evidence import Evidence
from inputkit.observe.rules import FETCH_WAITS, computes, no_spare_cpu
from inputkit.observe.verdict import Verdict
from inputkit.workers.base import WorkerPoolStats

# The actors feed the chunk queue through one receiver thread in the trainer's process.
ACTORS_IDLE = 0.5  # live actors inside fetch less than this share of their time: they wait
RECEIVE_BUSY = 0.5  # the receiver taking results in at least this share of the span
CAP_REACHED = 0.9  # in-flight plus held bytes at this share of the cap: no call goes out
SHOWN_ACTORS = 4  # a node with this many actors or fewer lists each one


# --- verdict rules -------------------------------------------------------------------------

def _cap_reached(r: RayEvidence) -> bool:
    return r.cap_bytes is not None and r.pinned_bytes >= CAP_REACHED * r.cap_bytes


def _receive_bound(e: Evidence, r: RayEvidence) -> bool:
    """The actors wait (not for the in-flight cap) while the receiver is busy."""
    return r.receive_busy is not None and r.receive_busy >= RECEIVE_BUSY \
        and e.in_fetch < ACTORS_IDLE and not _cap_reached(r)


def _actors_note(e: Evidence, r: RayEvidence) -> str:
    cap = f" of a {format_size(r.cap_bytes)} cap" if r.cap_bytes is not None else ""
    return (f"the Ray actors were inside fetch only {e.in_fetch:.0%} of their time "
            f"({r.actors_reading:.0%} of them holding a call now; {r.inflight_items:,} items in "
            f"flight, {format_size(r.pinned_bytes)} pinned{cap})")


def _receive_verdict(e: Evidence, r: RayEvidence, seen: str) -> Verdict:
    return Verdict("receive-bound", f"{seen}, while {_actors_note(e, r)} and the receiver thread "
                   f"in this process was busy taking results in {r.receive_busy or 0.0:.0%} of "
                   f"it: the trainer-side receive path (getting each chunk from the object "
                   f"store, checking it, handing it on), not the actors, sets the pace. Make "
                   f"fewer, larger chunks (epoch.chunk_size, or source.chunk_size for a fetch "
                   f"source), so that each receive brings more samples; where the data is on "
                   f"this machine, local workers (workers.kind=process) skip the object store.",
                   starved=True)


def _ray_slow(e: Evidence, r: RayEvidence, seen: str) -> Verdict:
    """Ray actors feed the chunk queue through one receiver thread: which of them is slow."""
    if e.in_fetch >= ACTORS_IDLE:  # the actors are busy: they are the slow side
        if r.ray_local and e.fetch_cpu_share >= FETCH_WAITS and no_spare_cpu(e):
            return Verdict("CPU-bound", f"{seen}, and {computes(e)}: the private local Ray "
                           f"has no CPU for more actors on this machine. Add nodes (ray start "
                           f"on more machines, then workers.ray.address=auto; docs/ray.md).",
                           starved=True)
        return Verdict("fetch-bound", f"{seen}, while the Ray actors were inside fetch "
                       f"{e.in_fetch:.0%} of their time (p50 {e.fetch_p50_ms:.1f} ms): the "
                       f"actors are the slowest stage. Add actors or nodes "
                       f"(workers.count={e.workers * 2} where the cluster has the CPUs, ray start "
                       f"on more machines).", starved=True)
    if _cap_reached(r):
        return Verdict("in-flight-bound", f"{seen}, while {_actors_note(e, r)}: this pipeline "
                       f"pins its whole object-store cap, so no more calls go out. Raise "
                       f"workers.ray.inflight_bytes where the object store has room (inputkit "
                       f"plan counts it).", starved=True)
    if _receive_bound(e, r):
        return _receive_verdict(e, r, seen)
    return Verdict("input-bound", f"{seen}, while {_actors_note(e, r)} and the receiver thread "
                   f"was busy only {r.receive_busy or 0.0:.0%}: neither the actors nor the "
                   f"receive path is clearly the limit (results may be slow to travel between "
                   f"nodes); no change to suggest.", starved=True)


def spill_text(spilled: int) -> str:
    return f"Ray spilled {format_size(spilled)} to disk: lower workers.ray.inflight_bytes or " \
        "the queues"


# --- what the dashboard and the CLI show -----------------------------------------------------

def _states(states: dict[str, int]) -> str:
    return ", ".join(f"{n} {state}" for state, n in states.items())


def _plural(n: int, word: str) -> str:
    return f"{n:,} {word}{'' if n == 1 else 's'}"


def ray_facts(ray: RayWindow) -> list[str]:
    """The pool's object-store and receive figures, as short phrases."""
    s = ray.stats
    cap = format_size(s.cap_bytes) if s.cap_bytes is not None else "not sized yet"
    facts = [f"in flight {s.inflight_items:,} items {format_size(s.inflight_bytes)}",
             f"held {format_size(s.held_bytes)} of cap {cap}",
             f"receiver busy {ray.receive_busy:.0%}"]
    if s.duplicates:
        facts.append(f"duplicates dropped {s.duplicates:,}")
    if s.spilled_bytes:
        facts.append(f"SPILLED {format_size(s.spilled_bytes)}")
    return facts


def _ray_cells(ray: RayWindow) -> tuple[str, str, str]:
    s = ray.stats
    where = "private local Ray" if s.local else "Ray cluster"
    ready = f"actors ready in {s.ready_s:.1f} s" if s.ready_s is not None else "actors starting"
    return f"{where} {s.address or '(address unknown)'}", f"connected in {s.connect_s:.1f} s", ready


def ray_where(ray: RayWindow) -> str:
    """``Ray cluster 10.0.0.1:6379, connected in 0.4 s, actors ready in 2.5 s``."""
    return ", ".join(_ray_cells(ray))


def node_name(node: NodeWindow) -> str:
    """``node 10.0.0.2``; the pool calls a node ``?`` until its actors have answered."""
    return "node not known yet (actors starting)" if node.node == "?" else f"node {node.node}"


def node_line(node: NodeWindow) -> str:
    """``3 actors (2 reading, 1 starting)``: what runs on one node now."""
    return f"{_plural(len(node.actors), 'actor')} ({_states(node.states)})"


def actors_line(node: NodeWindow) -> str:
    """Each actor's rate, for a node with few enough of them; empty otherwise."""
    if len(node.actors) > SHOWN_ACTORS:
        return ""
    return "  ".join(f"{a.name.removeprefix('ray ')} {a.chunks_per_s:,.1f}/s"
                     + ("" if a.state == "reading" else f" {a.state}") for a in node.actors)


def ray_lines(ray: RayWindow, where: str) -> list[str]:
    """A Ray pool as plain lines: where it runs and its object store, then one line a node."""
    lines = [f"  ray {where}: {ray_where(ray)}; {'; '.join(ray_facts(ray))}"]
    for node in ray.nodes:
        each = actors_line(node)
        lines.append(f"    {node_name(node)}: {node_line(node)} {node.chunks_per_s:,.1f} chunks/s "
                     f"{node.samples_per_s:,.0f} samples/s" + (f" [{each}]" if each else ""))
    return lines


def _ray_of(c: Any) -> RayWindow:
    """The window's Ray figures (since start when the window was made without them)."""
    ext = c.ext
    if isinstance(ext, RayWindow):
        return ext
    return ray_window(c.stats.workers.ray, None, c.stats.elapsed_s)


class RayView(KindView):
    """Ray workers' observability (see the module's docstring)."""

    key = "ray"
    restart_noun = ("Ray actor", "Ray actors")
    decodes = None  # which kind suits decoding on Ray is a question of CPUs, not the GIL

    def window(self, now: WorkerPoolStats, before: WorkerPoolStats | None,
               span: float) -> RayWindow | None:
        if now.ray is None:
            return None
        return ray_window(now.ray, before.ray if before is not None else None, span)

    def live_workers(self, now: WorkerPoolStats, ext: Any) -> int | None:
        return live_actors(now.ray) if now.ray is not None else None

    def evidence(self, ext: RayWindow) -> RayEvidence:
        s = ext.stats
        live = live_actors(s)
        reading = sum(a.state == "reading" for a in s.actors)
        return RayEvidence(receive_busy=ext.receive_busy,
                           actors_reading=reading / live if live else 0.0,
                           inflight_items=s.inflight_items,
                           pinned_bytes=s.inflight_bytes + s.held_bytes, cap_bytes=s.cap_bytes,
                           nodes=len(s.nodes), ray_local=s.local)

    def hand_over(self, e: Evidence) -> bool:
        return False  # Ray's cost per chunk is the receive path's, judged by its own rules

    def shared_limit(self, e: Evidence, both: str) -> Verdict | None:
        r = e.ext
        if isinstance(r, RayEvidence) and _receive_bound(e, r):
            return _receive_verdict(e, r, both)  # the receiver, beside the batcher, holds both
        return None

    def workers_slow(self, e: Evidence, seen: str) -> Verdict | None:
        r = e.ext
        if isinstance(r, RayEvidence) and r.receive_busy is not None:
            return _ray_slow(e, r, seen)
        return None

    def rows(self, c: Any) -> list[tuple[Any, ...]]:
        """Ray workers: the actors by node, what they deliver, and the object store."""
        w, ray = c.stats.workers, _ray_of(c)
        s = ray.stats
        pinned = "yellow" if s.cap_bytes and s.inflight_bytes + s.held_bytes >= \
            CAP_REACHED * s.cap_bytes else ""
        facts = ray_facts(ray)
        rows: list[tuple[Any, ...]] = [
            ("  workers", f"{_plural(w.workers, 'Ray actor')} on {_plural(len(ray.nodes), 'node')}",
             f"reading {w.fetching}", f"idle {w.idle}",
             f"fetch p50 {w.fetch_p50_ms:.1f} ms  p95 {w.fetch_p95_ms:.1f} ms"),
            ("  ray", *_ray_cells(ray), ""),
            ("  object store", facts[0], (facts[1], pinned), facts[2],
             ("  ".join(facts[3:]), "red" if s.spilled_bytes else ""))]
        rows += [(f"  {node_name(n)}", node_line(n), f"{n.chunks_per_s:,.1f} chunks/s",
                  f"{n.samples_per_s:,.0f} samples/s", actors_line(n)) for n in ray.nodes]
        return rows

    def lines(self, c: Any, where: str) -> list[str]:
        return ray_lines(_ray_of(c), where)

    def progress(self, c: Any) -> str:
        """Where the actors run, and what this input has in flight."""
        ray = c.workers.ray
        if ray is None:
            return ""
        return f" ray {len(ray.actors)} actors/{len(ray.nodes)} nodes in flight " \
               f"{format_size(ray.inflight_bytes)}"

    def record(self, ext: RayWindow) -> dict[str, Any]:
        return ext.record()

    def summary(self, c: Any) -> dict[str, Any] | None:
        """summary.json's ``ray`` entry: where the actors ran (the address, a private local
        Ray or not), how long connecting and starting them took, per node its actors (by
        state), chunks and samples, and the object-store figures."""
        ray = c.workers.ray
        if ray is None:
            return None
        nodes = ray_window(ray, None, c.elapsed_s).nodes
        return {"input": c.input, "device_index": c.device_index, "device": c.device,
                "address": ray.address, "local": ray.local, "connect_s": ray.connect_s,
                "ready_s": ray.ready_s, "first_batch_s": c.first_batch_s,
                "nodes": [{"node": n.node, "actors": len(n.actors), "states": n.states,
                           "chunks": n.chunks, "samples": n.samples} for n in nodes],
                "inflight_items": ray.inflight_items, "inflight_bytes": ray.inflight_bytes,
                "held_bytes": ray.held_bytes, "cap_bytes": ray.cap_bytes,
                "duplicates": ray.duplicates, "spilled_bytes": ray.spilled_bytes,
                "restarts": c.workers.restarts}

    def summary_lines(self, c: Any) -> list[str]:
        """Where the actors ran, how long start-up took, then one line a node (its actors,
        chunks and samples), then duplicates and spill."""
        ray = c.workers.ray
        if ray is None:
            return []
        window = ray_window(ray, None, c.elapsed_s)
        first = "" if c.first_batch_s is None else f", first batch at {_seconds(c.first_batch_s)}"
        lines = [f"ray of input '{c.input}' on {c.device_index}:{c.device}: "
                 f"{ray_where(window)}{first}"]
        for n in window.nodes:
            lines.append(f"  {node_name(n)}: {len(n.actors)} actor"
                         f"{'s' if len(n.actors) != 1 else ''}, {n.chunks:,} chunks, "
                         f"{n.samples:,} samples")
        spilled = "unknown" if ray.spilled_bytes is None else format_size(ray.spilled_bytes)
        lines.append(f"  duplicates dropped {ray.duplicates:,}, restarts "
                     f"{c.workers.restarts:,}, spilled to disk {spilled}")
        return lines

    def run_warnings(self, stats: Any) -> list[str]:
        """One spill warning per Ray address (its pools on each device share the figure)."""
        spilled: dict[str, int] = {}
        for c in stats.coordinators:
            ray = c.workers.ray
            if ray is not None and ray.spilled_bytes:
                where = ray.address or "Ray"
                spilled[where] = max(spilled.get(where, 0), ray.spilled_bytes)
        return [f"spill: {address}: {spill_text(n)}" for address, n in spilled.items()]

    def final_lines(self, c: Any, where: str) -> list[str]:
        ray = c.workers.ray
        return [f"{where}: {spill_text(ray.spilled_bytes)}."] \
            if ray is not None and ray.spilled_bytes else []


def _seconds(value: float) -> str:
    return f"{value * 1000:.0f} ms" if value < 1 else f"{value:.2f} s"


VIEW = RayView()

"""``workers.kind=auto`` (the shipped default): the kind and count chosen from a probe of fetch.

The runner resolves ``auto`` before it plans and builds anything: a few fetches of the
source are timed (wall and CPU time per chunk, and the GIL, read by a probe thread while
they run: inputkit/kinds/auto_probe.py), and :func:`decide` turns those figures into a
concrete kind and count with the thresholds the end-of-run verdict reads (inputkit.observe.rules,
the inline and hand-over rules), so that the verdict of a run auto chose never tells the
user to change what auto chose:

- fetch holds the GIL while it computes (pure Python): ``process``, one per core;
- fetch cheaper than ``INLINE_SLOW_MS`` and each batch a view of one chunk: ``inline``
  (a hand-over between threads would cost about what the fetch costs);
- fetch waits (on a CPU under ``FETCH_WAITS`` of its time: I/O, a remote service):
  ``thread``, enough of them to overlap the waits;
- otherwise (fetch computes in C code that releases the GIL: numpy, image decoding):
  ``thread``, one per core.

Ray is never chosen: it needs a cluster decision. ``workers.count`` given with
``kind=auto`` is kept as the count.
"""

from __future__ import annotations

import math
import os
from dataclasses import dataclass
from typing import Any

from inputkit.kinds import Kind, register
from inputkit.observe.rules import FETCH_WAITS, GIL_FETCH_CPU, GIL_HELD, GIL_WAIT_SHARE

__all__ = ["AutoChoice", "Measured", "decide", "machine_cores"]

# The inline verdict (kinds/local_views.py INLINE_SLOW_MS) calls a fetch from 1 ms "fetch-bound"
# and wants threads: auto chooses inline only below it.
INLINE_SLOW_MS = 1.0
MAX_WAIT_THREADS = 16  # threads that overlap a waiting fetch: at most this many
MAX_CORE_WORKERS = 8  # workers one per core: at most this many


@dataclass(frozen=True)
class Measured:
    """What the probe of one input's fetch found. ``fetch_ms``: the median wall time of a
    fetch (processors included); ``cpu_share``: its CPU time over its wall time; ``gil_held``
    and ``gil_wait_ms``: the share of GIL probes that found it held while fetch ran, and
    their mean wait (None: not measured); ``views``: each batch is a view of one chunk."""

    fetches: int
    fetch_ms: float
    cpu_share: float
    gil_held: float | None = None
    gil_wait_ms: float | None = None
    switch_interval_ms: float = 5.0
    views: bool = True
    cores: int = 1

    def holds_gil(self) -> bool:
        """Fetch holds the GIL: the rules of inputkit.observe.rules.gil_held, and fetch computes."""
        return self.gil_wait_ms is not None and self.gil_held is not None \
            and self.gil_held >= GIL_HELD \
            and self.gil_wait_ms >= GIL_WAIT_SHARE * self.switch_interval_ms \
            and self.cpu_share >= GIL_FETCH_CPU

    def text(self) -> str:
        gil = f", GIL held {self.gil_held:.0%} (mean wait {self.gil_wait_ms:.1f} ms)" \
            if self.gil_held is not None and self.gil_wait_ms is not None else ", GIL not measured"
        return (f"{self.fetches} fetches: {_ms(self.fetch_ms)} each (p50), on a CPU "
                f"{self.cpu_share:.0%} of it{gil}")

    def record(self) -> dict[str, Any]:
        return {"fetches": self.fetches, "fetch_ms": round(self.fetch_ms, 4),
                "cpu_share": round(self.cpu_share, 3),
                "gil_held": None if self.gil_held is None else round(self.gil_held, 3),
                "gil_wait_ms": None if self.gil_wait_ms is None else round(self.gil_wait_ms, 3),
                "batches_are_views": self.views, "cores": self.cores}


@dataclass(frozen=True)
class AutoChoice:
    """What ``workers.kind=auto`` chose for one input, and why (the banner, summary.json)."""

    kind: str
    count: int
    reason: str
    measured: Measured | None = None

    def text(self) -> str:
        return f"{self.kind} x{self.count}: {self.reason}"

    def record(self) -> dict[str, Any]:
        return {"kind": self.kind, "count": self.count, "reason": self.reason,
                "measured": self.measured.record() if self.measured else None}


def machine_cores() -> int:
    """The cores this process may run on."""
    try:
        return len(os.sched_getaffinity(0))
    except (AttributeError, OSError):
        return os.cpu_count() or 1


def decide(m: Measured, count: int | None = None) -> AutoChoice:
    """The kind and count for a fetch measured as ``m``; ``count`` (workers.count given with
    kind=auto) is kept. Never Ray."""
    seen = m.text()
    per_core = max(2, min(m.cores, MAX_CORE_WORKERS))
    if m.holds_gil():
        return _choice("process", count, per_core, f"fetch holds the GIL while it computes "
                       f"({seen}): threads would take turns, processes run side by side", m)
    if m.fetch_ms < INLINE_SLOW_MS and m.views:
        return _choice("inline", 1, 1, f"fetch is cheap ({seen}): handing its chunk between "
                       f"threads would cost about as much as the fetch", m)
    if m.cpu_share < FETCH_WAITS:
        overlap = math.ceil(1.0 / max(m.cpu_share, 1.0 / MAX_WAIT_THREADS))
        return _choice("thread", count, max(2, min(overlap, MAX_WAIT_THREADS)), f"fetch waits "
                       f"({seen}): threads overlap the waits", m)
    why = "batches are assembled from several chunks" if m.fetch_ms < INLINE_SLOW_MS \
        else "fetch computes with the GIL released"
    return _choice("thread", count, per_core, f"{why} ({seen}): threads work beside the "
                   f"consumer, one per core", m)


def _choice(kind: str, given: int | None, chosen: int, reason: str, m: Measured) -> AutoChoice:
    if given and kind != "inline":
        return AutoChoice(kind, given, f"{reason}; workers.count={given} as configured", m)
    return AutoChoice(kind, chosen, reason, m)


def _ms(ms: float) -> str:
    return f"{ms * 1000:.0f} us" if ms < 1 else f"{ms:.1f} ms"


def _unresolved(spec: Any, device: str, **_: Any) -> Any:
    from inputkit.errors import ConfigError

    raise ConfigError(f"{spec.key_prefix}workers.kind", "auto is resolved to a concrete kind "
                      "when the Runner starts (inputkit.kinds.auto_probe.resolve); a pipeline "
                      "built without the Runner must name the kind (thread, inline, process)")


KIND = register(Kind(name="auto", summary="chosen from a probe of fetch when the runner starts",
                     source_here=True, make_pool=_unresolved))

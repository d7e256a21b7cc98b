"""Readings of the evidence that the generic verdict and the kinds' own rules share.

:mod:`inputkit.observe.diagnosis` holds the judgement's order; a kind's view (``inputkit/kinds``)
holds the rules only that kind has. Both read these predicates and phrases, so a kind's
rule says "no spare CPU" or "fetch holds the GIL" exactly as the generic verdict does.
"""

from __future__ import annotations

from inputkit.observe.evidence import Evidence

STARVED = 0.5  # the consumer's queue empty from this share of the span: the input limits it
# The GIL is held (by fetch, in a fetch-bound span) when the probe finds it held at least
# GIL_HELD of the time and waits GIL_WAIT_SHARE of sys.getswitchinterval() on average. A free
# GIL reads under 10% and 0.25 ms; pure-Python fetch 80% and 5 ms or more; PNG decoding from
# tar shards in 4 threads (processes 2.6x faster) 36-44% and 1.1-4.4 ms. That reading is
# clean only with idle cores: on a saturated machine a thread that holds the GIL for a moment
# between two C calls is preempted while holding it, and the probe's own waits for a CPU hide
# its waits for the GIL, so the two meet (SHA-256 in 4 threads beside 4 busy processes read
# 42% and 2.9 ms, pure Python beside 2 read 53% and 3.0 ms). There the GIL is not judged.
GIL_WAIT_SHARE = 0.1
GIL_HELD = 0.2
GIL_FETCH_CPU = 0.05  # ... and fetch is what holds it when it spends this share on a CPU
FETCH_WAITS = 0.1  # fetch on a CPU less than this share of its time: it waits (I/O, sleep)
CPU_SPARE = 0.5  # fewer idle cores than this: more workers would find no CPU to run on


def gil_reading(e: Evidence) -> str:
    return (f"a thread that asked for it found it held {e.gil_held:.0%} of the time and waited "
            f"{e.gil_wait_ms:.1f} ms on average (a free GIL takes well under 0.5 ms)")


def use_processes(e: Evidence) -> str:
    return (f"Use workers.kind=process (workers.count={max(2, e.workers)}): the machine had "
            f"{idle_note(e)} for them.")


def computes(e: Evidence) -> str:
    return (f"fetch computes (it ran on a CPU {e.fetch_cpu_share:.0%} of its time, "
            f"{e.fetch_cores:.1f} cores in all) while the {e.cores}-core machine had "
            f"{idle_note(e)}")


def gil_note(e: Evidence) -> str:
    return f" (a thread waited {e.gil_wait_ms:.1f} ms for the GIL on average)" \
        if e.gil_wait_ms is not None else ""


def idle_note(e: Evidence) -> str:
    if e.idle_cores is not None:
        return f"{e.idle_cores:.1f} idle cores"
    return f"{e.fetch_cores:.1f} of its {e.cores} cores busy inside fetch"


def no_spare_cpu(e: Evidence) -> bool:
    """Whether the machine has no core left for more workers to run on."""
    if e.idle_cores is not None:
        return e.idle_cores < CPU_SPARE
    return e.fetch_cores > e.cores - CPU_SPARE


def gil_held(e: Evidence) -> bool:
    """Whether the GIL probe found the GIL held; never judged without idle cores (above)."""
    return e.gil_wait_ms is not None and not no_spare_cpu(e) and e.gil_held >= GIL_HELD \
        and e.gil_wait_ms >= GIL_WAIT_SHARE * e.switch_interval_ms

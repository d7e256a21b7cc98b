"""Evidence about CPUs for the diagnosis: a probe of the GIL, and the machine's idle time.

The GIL probe measures how long a thread that asks for the GIL waits to get it.

Thread workers whose fetch runs Python bytecode hold the GIL and take turns on
it; threads that wait in C code (I/O, numpy, Pillow decoding, hashing) release
it. Their CPU time does not tell the two apart (both keep cores busy), but a
thread that asks for the GIL does: it gets it at once while the GIL is free,
and waits about ``sys.getswitchinterval()`` (5 ms) while another thread runs
bytecode. The probe sleeps ``period_s``, wakes, and counts the time it took
beyond the sleep and beyond the time it spent runnable in the OS run queue
(``/proc/thread-self/schedstat``), so a machine whose cores are busy with other
processes does not read as a held GIL. Where schedstat cannot be read, the
probe does not run and reports no probes: the diagnosis then says nothing
about the GIL.

More workers (threads or processes) run faster only where the machine has
idle cores for them, so pools also report the machine's idle CPU time since
they started (:func:`machine_idle_s`, from ``/proc/stat``).
"""

from __future__ import annotations

import os
import threading
import time
from dataclasses import dataclass

# A probe that waits longer than this found the GIL held: a free GIL is taken in tens of
# microseconds (the rest of a probe's wait is the timer's slack, ~0.1 ms).
HELD_S = 0.0005
_SCHEDSTAT = "/proc/thread-self/schedstat"
_PROC_STAT = "/proc/stat"


def parse_schedstat(text: str) -> float:
    """Seconds spent runnable but waiting for a CPU, from a ``schedstat`` line.

    The line holds three numbers: nanoseconds on a CPU, nanoseconds waiting on a
    run queue, and time slices run.
    """
    fields = text.split()
    if len(fields) < 2:
        raise ValueError(f"schedstat: expected 3 numbers, got {text!r}")
    return int(fields[1]) / 1e9


def _run_queue_s() -> float:
    with open(_SCHEDSTAT) as f:
        return parse_schedstat(f.read())


def parse_idle(text: str, ticks_per_s: float) -> float:
    """Idle CPU seconds of the whole machine (idle + iowait, all cores) from ``/proc/stat``."""
    for line in text.splitlines():
        fields = line.split()
        if fields and fields[0] == "cpu" and len(fields) >= 6:
            return (int(fields[4]) + int(fields[5])) / ticks_per_s
    raise ValueError("/proc/stat: no 'cpu' line with idle and iowait times")


def machine_idle_s() -> float | None:
    """Idle CPU seconds of the machine since boot; None where /proc/stat cannot be read."""
    try:
        with open(_PROC_STAT) as f:
            return parse_idle(f.read(), float(os.sysconf("SC_CLK_TCK")))
    except (OSError, ValueError):
        return None


def schedstat_available() -> bool:
    try:
        _run_queue_s()
    except (OSError, ValueError):
        return False
    return True


@dataclass(frozen=True)
class GilReading:
    """Cumulative: probes taken, the seconds they waited for the GIL in all, and the probes
    that found it held (waited more than ``HELD_S``)."""

    probes: int = 0
    wait_s: float = 0.0
    held: int = 0


class GilProbe:
    """One thread that measures GIL waits until ``stop``; owned by the pool that starts it."""

    def __init__(self, name: str, period_s: float = 0.02) -> None:
        self.period_s = period_s
        self._stop = threading.Event()
        self._lock = threading.Lock()
        self._probes = 0
        self._wait_s = 0.0
        self._held = 0
        self._thread = threading.Thread(target=self._run, name=name, daemon=True)

    def start(self) -> None:
        if schedstat_available():
            self._thread.start()

    def stop(self) -> None:
        self._stop.set()

    def join(self, deadline: float) -> list[str]:
        if self._thread.ident is not None:
            self._thread.join(max(0.0, deadline - time.monotonic()))
        return [self._thread.name] if self._thread.is_alive() else []

    def reading(self) -> GilReading:
        with self._lock:
            return GilReading(self._probes, self._wait_s, self._held)

    def _run(self) -> None:
        period = self.period_s
        try:
            while not self._stop.is_set():
                queued0, began = _run_queue_s(), time.perf_counter()
                time.sleep(period)  # releases the GIL; waking up asks for it again
                took, queued = time.perf_counter() - began, _run_queue_s() - queued0
                waited = max(0.0, took - period - queued)
                with self._lock:
                    self._probes += 1
                    self._wait_s += waited
                    self._held += waited > HELD_S
        except (OSError, ValueError):
            return  # schedstat went away: the probes so far still count

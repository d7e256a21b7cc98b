"""FetchClock: when it reads the (system-call) CPU clock, and what it reports when it does not."""

from __future__ import annotations

import pytest

import inputkit.workers.base as base
from inputkit.workers.base import FetchClock


class FakeTime:
    """perf_counter and thread_time advanced by the test; thread_time reads are counted."""

    def __init__(self) -> None:
        self.wall = 0.0
        self.cpu = 0.0
        self.cpu_reads = 0

    def perf_counter(self) -> float:
        return self.wall

    def thread_time(self) -> float:
        self.cpu_reads += 1
        return self.cpu

    def monotonic(self) -> float:
        return self.wall


def _fetches(clock: FetchClock, fake: FakeTime, n: int, wall: float, cpu: float) -> list[tuple]:
    got = []
    for _ in range(n):
        clock.start()
        fake.wall += wall
        fake.cpu += cpu
        got.append(clock.stop())
    return got


@pytest.fixture
def fake(monkeypatch):
    fake = FakeTime()
    monkeypatch.setattr(base, "time", fake)
    return fake


def test_a_cheap_fetch_stretched_by_a_loaded_machine_reads_the_cpu_clock_once_in_every(fake):
    """10 us of CPU in 80 us of wall (waiting for a core): one read pair in EVERY fetches, and
    the fetches between are counted at the share that read measured."""
    clock = FetchClock()
    got = _fetches(clock, fake, 3 * FetchClock.EVERY, wall=80e-6, cpu=10e-6)
    assert fake.cpu_reads == 2 * 3
    for wall, cpu in got:
        assert wall == pytest.approx(80e-6)
        assert cpu == pytest.approx(10e-6)


@pytest.mark.parametrize(("wall", "cpu"), [(2e-3, 20e-6), (200e-6, 150e-6)])
def test_a_fetch_that_waits_or_computes_reads_the_cpu_clock_every_time(fake, wall, cpu):
    """I/O waits (wall past SLOW_WALL_S) and CPU-heavy fetches (CPU past FAST_S) vary too much
    from one fetch to the next for an estimate: each one is read."""
    clock = FetchClock()
    got = _fetches(clock, fake, 20, wall=wall, cpu=cpu)
    assert fake.cpu_reads == 2 * 20
    assert all(c == pytest.approx(cpu) for _, c in got)

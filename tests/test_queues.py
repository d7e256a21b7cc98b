"""The bounded queue: backpressure, statistics, and waking everyone on close."""

from __future__ import annotations

import threading
import time

import pytest

from inputkit.pipeline.queues import BoundedQueue, QueueClosed


def test_put_blocks_when_full_until_a_get():
    q = BoundedQueue("q", 2)
    assert q.put("a", 10) and q.put("b", 20)
    done = threading.Event()

    def producer():
        q.put("c", 30)
        done.set()

    t = threading.Thread(target=producer)
    t.start()
    assert not done.wait(0.2), "put must block on a full queue"
    assert q.get() == "a"
    assert done.wait(2.0)
    t.join()
    s = q.stats()
    assert (s.items, s.bytes, s.items_in, s.items_out) == (2, 50, 3, 1)
    assert s.peak_items == 2 and s.put_wait_s >= 0.15


def test_time_full_and_time_empty_are_accounted():
    q = BoundedQueue("q", 1)
    time.sleep(0.1)
    q.put(1)
    time.sleep(0.1)
    s = q.stats()
    assert 0.08 <= s.time_empty_s <= s.elapsed_s
    assert 0.08 <= s.time_full_s <= s.elapsed_s
    assert s.fill == 1.0 and 0 < s.full_fraction < 1


def test_control_items_bypass_capacity_and_do_not_count():
    q = BoundedQueue("q", 1)
    q.put("data", 5)
    assert q.put_control("END")
    assert q.stats().items == 1
    assert q.get() == "data" and q.get() == "END"


def test_close_wakes_blocked_producer_and_consumer():
    q = BoundedQueue("q", 1)
    q.put("x")
    results = {}

    def producer():
        results["put"] = q.put("y")

    empty = BoundedQueue("e", 1)

    def consumer():
        try:
            empty.get()
        except QueueClosed:
            results["get"] = "closed"

    threads = [threading.Thread(target=producer), threading.Thread(target=consumer)]
    for t in threads:
        t.start()
    time.sleep(0.1)
    q.close()
    empty.close()
    for t in threads:
        t.join(1.0)
        assert not t.is_alive()
    assert results == {"put": False, "get": "closed"}


def test_stop_event_ends_a_blocked_put():
    q = BoundedQueue("q", 1)
    q.put(1)
    stop = threading.Event()
    threading.Timer(0.1, stop.set).start()
    began = time.monotonic()
    assert q.put(2, stop=stop) is False
    assert time.monotonic() - began < 1.0


def test_capacity_must_be_positive():
    with pytest.raises(ValueError, match="capacity must be >= 1"):
        BoundedQueue("chunks", 0)


@pytest.mark.parametrize("capacity", [1, 3])
def test_handover_between_threads_keeps_order_counts_and_wakes_every_waiter(capacity):
    """Puts and gets notify only while a thread waits (a notify costs about a microsecond per
    item): 2 producers and 2 consumers on a tiny queue still hand over every item once, in
    each producer's order, and no waiter is left registered."""
    q = BoundedQueue("q", capacity)
    stop = threading.Event()
    got: list[list[tuple[int, int]]] = [[], []]

    def produce(who):
        for i in range(2000):
            assert q.put((who, i), 8, stop)

    def consume(into):
        while True:
            try:
                into.append(q.get(stop))
            except QueueClosed:
                return

    producers = [threading.Thread(target=produce, args=(w,)) for w in range(2)]
    consumers = [threading.Thread(target=consume, args=(got[c],)) for c in range(2)]
    for t in producers + consumers:
        t.start()
    for t in producers:
        t.join(30)
    q.close()
    for t in consumers:
        t.join(30)
    assert not any(t.is_alive() for t in producers + consumers)
    for into in got:  # each consumer sees each producer's items in order
        for who in range(2):
            mine = [i for w, i in into if w == who]
            assert mine == sorted(mine)
    assert sorted(got[0] + got[1]) == [(w, i) for w in range(2) for i in range(2000)]
    s = q.stats()
    assert (s.items, s.bytes, s.items_in, s.items_out, s.bytes_out) == (0, 0, 4000, 4000, 32000)
    assert s.peak_items <= capacity
    assert (q._putters, q._getters) == (0, 0)

"""The supervisor (workers/supervisor.py) over a small real transport: thread workers that read
index ranges and can die holding work. Requeue on death, the restart limit, skipped samples
and duplicate dropping are the supervisor's alone, whatever carries the work."""

from __future__ import annotations

import queue
import threading
from typing import Any

import numpy as np
import pytest

from inputkit.errors import WorkerFailure
from inputkit.pipeline.chunk import Chunk
from inputkit.pipeline.dispatcher import Dispatcher, EpochEnd, EpochSpec, WorkItem
from inputkit.pipeline.failures import FailurePolicy
from inputkit.pipeline.messages import END, Failure
from inputkit.workers.outcome import Got, SamplesSkipped
from inputkit.workers.supervisor import Supervisor


class ThreadTransport:
    """Each worker is a thread with an inbox; it answers each item with one Got on a shared
    outbox, tagged with its index and incarnation. ``dies[index]`` lists, per incarnation, the
    item number (0: its first) on which that incarnation ends without answering."""

    def __init__(self, count: int, dies: dict[int, list[int]] | None = None,
                 bad: frozenset[int] = frozenset()) -> None:
        self.outbox: queue.Queue[tuple[int, int, Any]] = queue.Queue()
        self.dies = dies or {}
        self.bad = bad  # sample indices that fail to read (on_error=skip)
        self.gen = [0] * count
        self.inboxes: list[queue.Queue[WorkItem | None]] = []
        self.threads: list[threading.Thread] = []
        for index in range(count):
            self.inboxes.append(queue.Queue())
            self.threads.append(self._thread(index))

    def _thread(self, index: int) -> threading.Thread:
        gen = self.gen[index]
        plan = self.dies.get(index, [])
        die_at = plan[gen] if gen < len(plan) else None
        thread = threading.Thread(target=self._work, args=(index, gen, die_at), daemon=True)
        thread.start()
        return thread

    def _work(self, index: int, gen: int, die_at: int | None) -> None:
        inbox = self.inboxes[index]
        for number in range(1_000_000):
            item = inbox.get(timeout=10)
            if item is None or number == die_at:
                return  # a death: the item it holds is never answered
            rest = item.remaining
            bad = np.isin(rest, list(self.bad))
            good = rest[~bad]
            skipped = None
            if bad.any():
                skipped = SamplesSkipped(seq=item.seq, bad=[(int(i), "OSError: bad sample")
                                                            for i in rest[bad]],
                                         ok=(~bad).tolist())
                if not good.size:
                    self.outbox.put((index, gen, skipped))
                    continue
            chunk = Chunk(fields={"i": good.copy()}, n=len(good), nbytes=good.nbytes,
                          worker_id=index)
            self.outbox.put((index, gen, Got(chunk=chunk, wall=0.0, cpu=0.0, seq=item.seq,
                                             skipped=skipped)))

    # the transport -----------------------------------------------------------------------

    def spawn(self, index: int) -> None:
        self.gen[index] += 1
        self.inboxes[index] = queue.Queue()
        self.threads[index] = self._thread(index)

    def send(self, index: int, item: WorkItem) -> bool:
        self.inboxes[index].put(item)
        return True

    def kill(self, index: int) -> None:
        self.inboxes[index].put(None)

    def alive(self, index: int) -> bool:
        return self.threads[index].is_alive()

    def exit_reason(self, index: int) -> str:
        return "ended without answering"

    def where(self, index: int) -> str:
        return f"thread worker {index} (incarnation {self.gen[index]})"

    def close(self) -> None:
        for index in range(len(self.threads)):
            self.kill(index)
        for thread in self.threads:
            thread.join(5)


def run(transport: ThreadTransport, length: int, policy: FailurePolicy,
        chunk_size: int = 10) -> tuple[list[int], Supervisor, list[Failure]]:
    """The receiver loop a real transport runs: hand out, take answers in, reap deaths."""
    out: list[Any] = []
    failures: list[Failure] = []
    stopped = threading.Event()

    class Out:
        def put_control(self, item: Any) -> bool:
            out.append(item)
            return True

    def fail(failure: Failure) -> None:
        failures.append(failure)
        stopped.set()

    dispatcher = Dispatcher(length, chunk_size, EpochSpec(count=1, chunk_size=chunk_size), 0, 1,
                            window=4)
    count = len(transport.threads)
    sup = Supervisor(transport, count, policy=policy, dispatcher=dispatcher, pool="test pool",
                     put=lambda chunk: out.append(chunk) or True, out=Out(), fail=fail,
                     stopping=stopped.is_set, failed=lambda: bool(failures))
    assert dispatcher.start()
    try:
        while END not in out and not failures:
            for index in range(count):
                if not sup.hand_out(index, 2):
                    break
            try:
                index, gen, outcome = transport.outbox.get(timeout=0.05)
            except queue.Empty:
                for index in range(count):  # deaths are noticed when nothing arrives
                    if not sup.finished(index) and not transport.alive(index):
                        if not sup.died(index):
                            break
                continue
            if gen != transport.gen[index]:
                continue  # a dead incarnation's answer: its items were handed out again
            if type(outcome) is Got:
                item = sup.current(index, outcome.seq)
                if item is None:
                    continue
                if outcome.skipped is not None and not sup.samples(index, item, outcome.skipped):
                    break
                sup.deliver(index, item, outcome.chunk, outcome.chunk.n, True)
            elif not sup.handle(index, outcome):
                break
    finally:
        transport.close()
    got = [int(i) for c in out if isinstance(c, Chunk) for i in c.fields["i"]]
    assert all(isinstance(c, (Chunk, EpochEnd)) or c is END for c in out)
    return got, sup, failures


@pytest.mark.timeout(30)
def test_a_death_hands_its_items_out_again_and_every_sample_arrives_once() -> None:
    """Worker 0 dies on its second item while holding two: both go to the others or to its
    replacement, and every sample arrives exactly once."""
    transport = ThreadTransport(3, dies={0: [1]})
    got, sup, failures = run(transport, 200, FailurePolicy(on_worker_death="restart"))
    assert not failures
    assert sorted(got) == list(range(200))
    assert sup.failures.restarts == 1
    assert "thread worker 0 (incarnation 0) ended without answering" in sup.failures.last_error
    assert transport.gen == [1, 0, 0]


@pytest.mark.timeout(30)
def test_deaths_past_max_restarts_fail_the_run_naming_the_worker() -> None:
    """Every incarnation of the only worker dies on its first item: one restart is allowed,
    the second death fails the run with the worker's name, how it ended and the limit."""
    transport = ThreadTransport(1, dies={0: [0, 0, 0]})
    _, sup, failures = run(transport, 200, FailurePolicy(on_worker_death="restart",
                                                          max_restarts=1))
    assert len(failures) == 1 and isinstance(failures[0].exc, WorkerFailure)
    message = str(failures[0].exc)
    assert message.startswith("thread worker 0 (incarnation 1) ended without answering")
    assert "failures.max_restarts=1 reached" in message
    assert sup.failures.restarts == 1


@pytest.mark.timeout(30)
def test_a_death_without_restart_fails_the_run() -> None:
    """on_worker_death=raise: the first death fails the run, naming the worker; no restart."""
    transport = ThreadTransport(2, dies={0: [0]})
    _, sup, failures = run(transport, 100, FailurePolicy(on_worker_death="raise"))
    assert [str(f.exc) for f in failures] == ["thread worker 0 (incarnation 0) ended without "
                                              "answering"]
    assert sup.failures.restarts == 0 and transport.gen == [0, 0]


@pytest.mark.timeout(30)
def test_skipped_samples_are_counted_and_never_read_again_after_a_death() -> None:
    """Bad samples are skipped and tallied (whole items and parts of items); with a death in
    the middle, the good samples still arrive exactly once and the bad ones never."""
    bad = frozenset({3, 4, *range(20, 30), 57})
    transport = ThreadTransport(2, dies={1: [2]}, bad=bad)
    got, sup, failures = run(transport, 100, FailurePolicy(on_error="skip",
                                                           on_worker_death="restart",
                                                           max_skip_share=None,
                                                           max_consecutive_skips=None))
    assert not failures
    assert sorted(got) == [i for i in range(100) if i not in bad]
    assert sup.failures.snapshot()["skipped_samples"] == len(bad)


@pytest.mark.timeout(30)
def test_an_answer_for_an_item_no_longer_open_is_counted_as_a_duplicate_and_dropped() -> None:
    """An item a worker holds but that was completed meanwhile (a second answer after a
    requeue): its answer is dropped and counted, the ledger forgets it, nothing is delivered."""
    out: list[Any] = []
    transport = ThreadTransport(1)
    try:
        dispatcher = Dispatcher(20, 10, EpochSpec(count=1, chunk_size=10), 0, 1, window=4)
        sup = Supervisor(transport, 1, policy=FailurePolicy(), dispatcher=dispatcher,
                         pool="test pool", put=lambda c: out.append(c) or True,
                         out=type("Out", (), {"put_control": lambda self, m: out.append(m)})(),
                         fail=lambda f: pytest.fail(str(f.exc)), stopping=lambda: False,
                         failed=lambda: False)
        item = sup.take(0)
        assert item is not None and list(sup.held(0)) == [item]
        dispatcher.skip(item)  # completed by another path while the worker still held it
        assert sup.current(0, item.seq) is None
        assert sup.duplicates == 1 and not sup.held(0)
        with pytest.raises(WorkerFailure, match=r"thread worker 0 .* does not hold"):
            sup.current(0, item.seq + 7)
        assert not [c for c in out if isinstance(c, Chunk)]
    finally:
        transport.close()

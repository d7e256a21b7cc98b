"""The verdict rules of the kinds that run on this machine: thread, process and inline.

Each is a small :class:`~inputkit.kinds.view.KindView` (they show the generic workers row):
threads judge the GIL, processes the hand-over through shared memory, inline the consumer's
own share inside fetch (it has no queues to read).
"""

from __future__ import annotations

from inputkit.kinds.view import KindView
from inputkit.observe.evidence import Evidence
from inputkit.observe.rules import GIL_FETCH_CPU, STARVED, gil_held, gil_note, gil_reading, use_processes
from inputkit.observe.verdict import Verdict

TRANSPORT = 0.5  # process workers inside fetch less than this share of their time
INLINE_SLOW_MS = 1.0  # inline: a fetch this slow, most of the consumer's time, wants workers


class ThreadView(KindView):
    """Thread workers share the GIL with the batcher: a fetch that holds it limits both."""

    between = "threads"

    def shared_limit(self, e: Evidence, both: str) -> Verdict | None:
        if gil_held(e) and e.fetch_cpu_share >= GIL_FETCH_CPU:
            return Verdict("GIL-bound", f"{both}, and fetch holds the GIL, which the batcher "
                           f"needs too: {gil_reading(e)}. {use_processes(e)}", starved=True)
        return None

    def fetch_slow(self, e: Evidence, seen: str) -> Verdict | None:
        if not gil_held(e):
            return None
        if e.fetch_cpu_share < GIL_FETCH_CPU:
            return Verdict("fetch-bound", f"{seen}: the workers are the slow side, and the GIL "
                           f"is busy{gil_note(e)}, though not with fetch (it waits): more "
                           f"threads would wait for it too; no change to suggest.", starved=True)
        return Verdict("GIL-bound", f"{seen}: the workers are the slow side, and fetch holds "
                       f"the GIL: {gil_reading(e)}, so the threads take turns and more of them "
                       f"will not help. {use_processes(e)}", starved=True)

    def more_workers_note(self, e: Evidence) -> str:
        if e.gil_wait_ms is None:  # the GIL was not measured
            return " If fetch runs Python code, more threads will not help: workers.kind=process."
        return ""


class ProcessView(KindView):
    """Process workers hand chunks over through shared memory and a pipe."""

    decodes = "process"

    def fetch_slow(self, e: Evidence, seen: str) -> Verdict | None:
        if e.in_fetch >= TRANSPORT:
            return None
        # No advice: thread workers were 0.5x to 2x as fast on the same run (4 MiB chunks,
        # 2 cores), so no change is known to help here.
        return Verdict("transport-bound", f"{seen}, yet the worker processes were inside fetch "
                       f"only {e.in_fetch:.0%} of their time: the rest went to handing chunks "
                       f"over (shared-memory slots, the pipe to this process), which more "
                       f"workers would share; no change is known to help here.", starved=True)


class InlineView(KindView):
    """Inline workers: the consumer runs fetch itself, so its share of the time is the figure."""

    between = "threads"
    consumer_fetches = True

    def first(self, e: Evidence) -> Verdict:
        p50 = f"{e.fetch_p50_ms * 1000:.0f} us" if e.fetch_p50_ms < 1 \
            else f"{e.fetch_p50_ms:.1f} ms"
        seen = f"The consumer spent {e.in_fetch:.0%} of {e.over} inside fetch (p50 {p50})"
        if e.in_fetch >= STARVED and e.fetch_p50_ms >= INLINE_SLOW_MS:
            return Verdict("fetch-bound", f"{seen}, which inline workers run in its thread, "
                           f"one fetch at a time and nothing beside the step: fetch sets the "
                           f"pace. Use workers.kind=thread (workers.count=2 or more; "
                           f"workers.kind=process where fetch computes in Python) to fetch "
                           f"beside the step.", starved=True)
        return Verdict("inline", f"{seen}: each batch costs its fetch and no hand-over between "
                       f"threads; nothing in the input needs to change.")


THREAD, PROCESS, INLINE = ThreadView(), ProcessView(), InlineView()

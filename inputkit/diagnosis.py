"""Warnings while it runs, and a diagnosis after: derived from the statistics, not guessed.

- **over-buffering**: a queue stays nearly full, so most of its capacity is memory
  spent for nothing; the warning says how much a smaller capacity would save.
- **starvation**: the consumer waits on an empty batch queue; the input pipeline
  is the bottleneck, and the warning says which part of it.
- **budget**: the measured process-tree memory nears ``memory.budget``.
- **empty chunks**: the source has returned only chunks with no samples.
- **stall**: the watchdog sees a worker stuck in one fetch or delivering no samples
  (``failures.stall_timeout``); one warning per stalled worker, while it lasts.
- **failures**: the failure policies have skipped chunks or restarted worker processes.
"""

from __future__ import annotations

from inputkit.config.sizes import format_size
from inputkit.metrics import CoordinatorWindow, QueueWindow, Window
from inputkit.stats import CoordinatorStats, RunnerStats
from inputkit.workers.base import WorkerPoolStats

FULL = 0.8  # "nearly always": share of the window a queue was full / empty
MIN_WINDOW_S = 1.0  # no warnings from the first moments of a run
BUDGET_SHARE = 0.8
# Thread workers that together keep this much of one core busy inside fetch are at the
# GIL's ceiling: one core is all Python bytecode gets, however many threads run it.
GIL_CORES = 0.7


def _where(c: CoordinatorWindow | CoordinatorStats) -> str:
    return f"input '{c.input}' on {c.device_index}:{c.device}"


def _capacity_key(q: QueueWindow) -> str:
    return {"chunk queue": "queue.capacity", "batch queue": "queue.batch_capacity",
            "device prefetch": "device.prefetch"}.get(q.stage, q.stage)


def _over_buffering(c: CoordinatorWindow, q: QueueWindow, window_s: float) -> str | None:
    if q.full < FULL or q.max_bytes is not None or q.capacity <= 2 or q.items == 0:
        return None
    smaller = max(2, q.capacity // 4)
    item = q.bytes / q.items
    saved = (q.capacity - smaller) * item
    return (f"over-buffering: {_where(c)}: the {q.stage} was full {q.full:.0%} of the last "
            f"{window_s:.0f} s, so its consumer is the slower side and {q.capacity} items "
            f"({format_size(q.capacity * item)}) wait for nothing; {_capacity_key(q)}={smaller} "
            f"would keep the throughput and save {format_size(saved)}")


def _starvation(c: CoordinatorWindow, window_s: float) -> str | None:
    queues = {q.stage: q for q in c.queues}
    last = queues.get("device prefetch") or queues.get("batch queue")
    chunks = queues.get("chunk queue")
    if last is None or last.empty < FULL:
        return None
    workers = c.stats.workers
    if chunks is not None and chunks.empty >= FULL:
        if workers.kind == "thread" and _fetch_cores(c.stats) >= GIL_CORES:
            fix = ("fetch is CPU-bound and thread workers share one GIL: use "
                   "workers.kind=process")
        else:
            fix = (f"the workers cannot keep up: add workers "
                   f"(workers.count={workers.workers * 2})")
            if workers.kind == "thread":
                fix += ", or workers.kind=process if fetch does CPU work in Python"
    else:
        fix = ("chunks are waiting but batches are not: the batcher is the bottleneck; "
               "make source chunks batch-sized so batches pass without a copy")
    return (f"starvation: {_where(c)}: the consumer waited on an empty {last.stage} "
            f"{last.empty:.0%} of the last {window_s:.0f} s; {fix}")


def _fetch_cores(c: CoordinatorStats) -> float:
    """Cores the workers kept busy inside fetch, on average (CPU seconds per second)."""
    return c.workers.fetch_cpu_s / c.elapsed_s if c.elapsed_s > 0 else 0.0


def _plural(n: int, word: str, many: str | None = None) -> str:
    return f"{n:,} {word if n == 1 else (many or word + 's')}"


def _policy_actions(w: WorkerPoolStats, retries: bool = True) -> list[str]:
    """What the failure policies did so far, e.g. ``skipped 3 chunks (failures.on_error=skip)``."""
    done = []
    if w.skipped_chunks:
        samples = f", {_plural(w.skipped_samples, 'sample')}" if w.skipped_samples else ""
        done.append(f"skipped {_plural(w.skipped_chunks, 'chunk')}{samples} (failures.on_error=skip)")
    if retries and w.retries:
        done.append(f"retried {_plural(w.retries, 'fetch', 'fetches')} (failures.on_error=retry)")
    if w.restarts:
        done.append(f"restarted {_plural(w.restarts, 'worker process', 'worker processes')} "
                    "(failures.on_worker_death=restart)")
    return done


def _last_error(w: WorkerPoolStats, limit: int = 200) -> str:
    lines = w.last_error.strip().splitlines()
    text = lines[0] if lines else ""
    return text if len(text) <= limit else text[:limit - 3] + "..."


def live_warnings(window: Window, budget_bytes: int | None = None) -> list[str]:
    """Problems visible in the last window; empty while the window is too short to judge."""
    if window.window_s < MIN_WINDOW_S:
        return []
    found: list[str] = []
    for c in window.coordinators:
        if c.stats.finished:
            continue
        for q in c.queues:
            text = _over_buffering(c, q, window.window_s)
            if text:
                found.append(text)
        workers = c.stats.workers
        if workers.chunks == 0 and workers.empty_chunks:
            # Starved, but more workers would not help: the source has nothing to give.
            found.append(f"empty chunks: {_where(c)}: the source returned only empty chunks "
                         f"({workers.empty_chunks:,} so far); check fetch")
        else:
            text = _starvation(c, window.window_s)
            if text:
                found.append(text)
        for stall in workers.stalls:
            lines = stall.strip().splitlines()
            if lines:
                found.append(f"stall: {lines[0]}")
        # Retries that succeed cost only time; skipped chunks lose data and restarts lose
        # workers, so those stay on show (their totals) while the run lasts.
        actions = _policy_actions(workers, retries=False)
        if actions:
            found.append(f"failures: {_where(c)}: {', '.join(actions)} so far")
    memory = window.stats.memory
    if budget_bytes and memory is not None and memory.total_rss >= BUDGET_SHARE * budget_bytes:
        found.append(f"budget: the process tree holds {format_size(memory.total_rss)}, "
                     f"{memory.total_rss / budget_bytes:.0%} of memory.budget "
                     f"({format_size(budget_bytes)}); lower queue capacities or raise the budget")
    return found


def _fetch_bound(c: CoordinatorStats, empty: float, busy: float) -> str:
    w = c.workers
    if w.kind == "thread" and _fetch_cores(c) >= GIL_CORES:
        return (f"{_where(c)}: fetch-bound and GIL-bound. The chunk queue was empty {empty:.0%} "
                f"of the run, and the {w.workers} thread(s) kept {_fetch_cores(c):.2f} of a core "
                f"busy inside fetch ({w.fetch_cpu_s / max(w.fetch_wall_s, 1e-9):.0%} of fetch's "
                f"wall time was CPU): that is the GIL's ceiling, so more threads will not help. "
                f"Try workers.kind=process.")
    if w.kind == "process" and busy < 0.5:
        return (f"{_where(c)}: transport-bound. The chunk queue was empty {empty:.0%} of the "
                f"run, yet the worker processes spent only {busy:.0%} of their time in fetch: "
                f"the rest went to moving bytes (into shared memory, waiting for free slots). "
                f"Make chunks batch-sized, write them in place (fetch_into), or try thread "
                f"workers if fetch releases the GIL.")
    return (f"{_where(c)}: fetch-bound. The chunk queue was empty {empty:.0%} of the run while "
            f"the workers were in fetch {busy:.0%} of the time (p50 {w.fetch_p50_ms:.1f} ms): "
            f"fetch is the slowest stage. Add workers (workers.count={w.workers * 2}).")


def diagnose(stats: RunnerStats) -> list[str]:
    """After a run: per coordinator, the bottleneck stage, why, and the one change to try.

    A coordinator whose failure policies skipped, retried or restarted anything gets a
    second line saying so, with the latest error they handled.
    """
    lines = []
    for c in stats.coordinators:
        lines.append(_bottleneck(c))
        actions = _policy_actions(c.workers)
        if actions:
            error = _last_error(c.workers)
            lines.append(f"{_where(c)}: {', '.join(actions)}" + (f"; last error: {error}" if error else ""))
    return lines


def _bottleneck(c: CoordinatorStats) -> str:
    w = c.workers
    if c.batches == 0 and w.chunks == 0 and w.empty_chunks:
        return (f"{_where(c)}: the source returned only empty chunks ({w.empty_chunks:,} in "
                f"{c.elapsed_s:.1f} s): check fetch; failures.stall_timeout reports this as a stall")
    if len(c.queues) < 2 or c.batches == 0:
        return f"{_where(c)}: no batches were delivered, nothing to diagnose"
    chunks, batches = c.queues[0], c.queues[1]
    # Share of the streaming time the workers spent in fetch. Streaming starts with the first
    # batch: before it, workers were starting (a worker that imports torch takes a second).
    streaming = c.elapsed_s - (c.first_batch_s or 0.0)
    busy = w.fetch_wall_s / (streaming * w.workers) if streaming > 0 else 0.0
    if batches.full_fraction >= 0.5:
        return (f"{_where(c)}: consumer-bound. The batch queue was full "
                f"{batches.full_fraction:.0%} of the run: the pipeline makes batches faster than "
                f"they are taken. The input is not the bottleneck; smaller capacities would save "
                f"memory at no cost.")
    if batches.empty_fraction < 0.5:
        return (f"{_where(c)}: balanced. The consumer seldom waited (batch queue empty "
                f"{batches.empty_fraction:.0%}, full {batches.full_fraction:.0%} of the run): "
                f"every stage keeps up with the next.")
    if chunks.empty_fraction >= 0.5 or (w.kind == "thread" and _fetch_cores(c) >= GIL_CORES):
        # Fetch holding the GIL slows every thread, the batcher's too, so a GIL-bound run
        # need not show a mostly empty chunk queue.
        return _fetch_bound(c, chunks.empty_fraction, busy)
    if chunks.empty_fraction < 0.2:
        return (f"{_where(c)}: batcher-bound. The consumer waited on an empty batch queue "
                f"{batches.empty_fraction:.0%} of the run while chunks were waiting (the chunk "
                f"queue was empty only {chunks.empty_fraction:.0%}, full "
                f"{chunks.full_fraction:.0%}): assembling batches ({c.copied_batches:,} copies) "
                f"is the slowest stage. Make source chunks batch-sized so batches pass as views.")
    return (f"{_where(c)}: fetch and batcher both limit it. The consumer waited on an empty "
            f"batch queue {batches.empty_fraction:.0%} of the run and the chunk queue was "
            f"empty {chunks.empty_fraction:.0%}: add workers first "
            f"(workers.count={w.workers * 2}), then look again.")

"""One judgement of what limits a pipeline, shown live and after the run, with the change to try.

:func:`judge` reads the :class:`~inputkit.observe.evidence.Evidence` of one coordinator
over a span (the live view's last seconds, or the run from its first batch)
and returns its :class:`Verdict`. The dashboard's verdict line, the live
starvation warning and the end-of-run diagnosis all come from it, so they
cannot contradict each other on the same figures. Each verdict gives advice
only where a test shows the advice helps (tests/test_diagnosis.py); where the
evidence cannot tell, the verdict says what it sees and suggests nothing.

Besides the verdict, live warnings report:

- **over-buffering**: a queue stays nearly full, so part of its capacity is memory
  spent for nothing, and that part matters: at least ``OVERBUFFER_BUDGET_SHARE`` of
  ``memory.budget`` (``OVERBUFFER_MIN_BYTES`` when no budget is known). A full batch
  queue in front of a slower training step is otherwise the state to be in.
- **budget**: the measured process-tree memory nears ``memory.budget``.
- **empty chunks**: the source has returned only chunks with no samples.
- **stall**: the watchdog sees a worker stuck in one fetch or delivering no samples
  (``failures.stall_timeout``); one warning per stalled worker, while it lasts.
- **failures**: the failure policies have skipped chunks or restarted worker processes
  (or Ray actors).
- a worker kind's own warnings (its view's ``run_warnings``): Ray's **spill**, when Ray
  spilled objects to disk on this machine's node.
"""

from __future__ import annotations

from typing import Any

from inputkit.config.sizes import format_size
from inputkit.kinds.view import view_of
from inputkit.observe.evidence import Evidence, QueueEvidence, evidence, of_window, where
from inputkit.observe.metrics import CoordinatorWindow, Window
from inputkit.observe.own_stages import decoding_note, delivery_bound, device_stage_bound
from inputkit.observe.rules import (  # noqa: F401 - the thresholds are read from here too
    CPU_SPARE,
    FETCH_WAITS,
    GIL_FETCH_CPU,
    GIL_HELD,
    GIL_WAIT_SHARE,
    STARVED,
    computes,
    gil_note,
    no_spare_cpu,
)
from inputkit.observe.stats import CoordinatorStats, RunnerStats
from inputkit.observe.verdict import Verdict
from inputkit.workers.base import WorkerPoolStats

# Shares of the span the consumer's queue (batch queue, or device prefetch on CUDA) was empty.
KEEPS_UP = 0.2  # below: the input keeps up, the consumer sets the pace
# (STARVED, from inputkit.observe.rules: from there the input is the bottleneck; the verdict names the stage)
# Shares of the span the chunk queue was empty, in a starved span.
WORKERS_SLOW = 0.5  # from here: the batcher waits for chunks, the workers are the slow side
BATCHER_SLOW = 0.2  # below: chunks wait for the batcher
FULL = 0.8  # over-buffering: a queue full at least this share of the span
OVERBUFFER_BUDGET_SHARE = 0.05
OVERBUFFER_MIN_BYTES = 256 * 2**20
# A fetch faster than this (ms, p50) costs less than handing its chunk between threads,
# about 30 us a batch here: inline workers do better (W1: docs/benchmarks.md), where batches
# pass as views. Not where the batcher copies chunks into batches: inline then does every fetch
# and the copy in one thread (the default config, 64-sample chunks into 256-sample batches:
# inline 0.45x the thread workers' samples/s, docs/configuration.md#inline-workers).
HANDOVER_FETCH_MS = 0.05
STORAGE_WAITS = 0.5  # workers blocked on the object store at least this share of their time
MIN_WINDOW_S = 1.0  # no live verdict or warnings from the first moments of a run
TOO_FEW_BATCHES = 8  # with a span under MIN_WINDOW_S: too little run for a final verdict
BUDGET_SHARE = 0.8


def judge(e: Evidence) -> Verdict | None:
    """The stage that limits this coordinator in the span, and why; None with nothing to judge."""
    if e.batches == 0 and e.chunks == 0:
        if e.empty_chunks:
            return Verdict("empty chunks", f"The source returned only empty chunks "
                           f"({e.empty_chunks:,} in {e.span_s:.1f} s): check fetch; "
                           f"failures.stall_timeout reports this as a stall", starved=True)
        return None
    view = view_of(e.kind)
    first = view.first(e)  # a kind judged before its queues (inline: it has none)
    if first is not None:
        return first
    last = e.consumer_queue
    if last is None:
        return None
    seen = f"The {last.stage} was empty {last.empty:.0%} of {e.over}"
    if last.empty < KEEPS_UP:  # the consumer's time inside next() is inputkit's, not the step's
        return delivery_bound(e, last) or Verdict(
            "consumer-bound", f"The {last.stage} was empty only {last.empty:.0%} of {e.over} "
            f"(full {last.full:.0%}) and the consumer spent {1 - e.in_next:.0%} of it outside "
            f"next(): the input keeps up, so the consumer (the training step) sets the pace. "
            f"Nothing in the input needs to change.")
    # (0: no fetch was timed; Ray's cost per chunk is the receive path's, judged below)
    if e.chunks and 0 < e.fetch_p50_ms < HANDOVER_FETCH_MS and view.hand_over(e) \
            and not e.copied_batches:
        return _hand_over_bound(e, last, seen)
    if last.empty < STARVED:
        return Verdict("balanced", f"{seen} (full {last.full:.0%}): the input about keeps pace "
                       f"with the consumer, and no stage stands out enough to name a change.")
    return _starved(e, last, seen)


def _hand_over_bound(e: Evidence, last: QueueEvidence, seen: str) -> Verdict:
    """Workers whose fetch is cheaper than handing its chunk on: inline is the answer."""
    between = view_of(e.kind).between
    return Verdict("hand-over-bound", f"{seen}, though each fetch took only "
                   f"{e.fetch_p50_ms * 1000:.0f} us (p50): handing its chunk between {between} "
                   f"(two queues, a wake-up at each) costs more than the fetch. Use "
                   f"workers.kind=inline: the consumer's thread fetches, re-chunks and makes "
                   f"the tensors, with no hand-over.", starved=last.empty >= STARVED)


def _starved(e: Evidence, last: QueueEvidence, seen: str) -> Verdict:
    """The consumer waits: which stage of the input holds it back."""
    chunks = e.queue("chunk queue")
    if chunks is None or chunks.empty >= WORKERS_SLOW:
        return _workers_slow(e, seen + (f" and the chunk queue {chunks.empty:.0%}" if chunks else ""))
    if chunks.empty < BATCHER_SLOW:
        batch = e.queue("batch queue")
        if last.stage == "device prefetch" and batch is not None and batch.empty < BATCHER_SLOW:
            return device_stage_bound(e, seen, batch)  # the copy, or normalize on CPU
        waiting = f"{seen} while chunks waited (the chunk queue was empty only {chunks.empty:.0%})"
        if e.copied_batches:
            return Verdict("batcher-bound", f"{waiting}: assembling batches from several chunks "
                           f"({e.copied_batches:,} copies) is the slowest stage. Make source "
                           f"chunks batch-sized (chunk size = batch_size) so that batches pass "
                           f"as views of one chunk, without a copy.", starved=True)
        return Verdict("batcher-bound", f"{waiting}, though every batch was a view of one chunk: "
                       f"the batcher waits for a CPU or the GIL{gil_note(e)}; no change to "
                       f"suggest.", starved=True)
    both = f"{seen} and the chunk queue {chunks.empty:.0%}: the workers and the batcher both hold it back"
    shared = _shared_limit(e, both)
    if shared is not None:
        return shared
    return Verdict("input-bound", f"{both}, neither clearly; no single change to suggest.",
                   starved=True)


def _shared_limit(e: Evidence, both: str) -> Verdict | None:
    """What holds back workers and batcher alike, when the chunk queue cannot tell them apart.

    Pure-Python fetch in two threads left the chunk queue empty only 49% to 72% of idle runs
    here: the batcher (a thread too) waited 10 to 30 ms for the GIL at each hand-over, so
    chunks sat in the queue while fetch was the slow side. The GIL fetch holds, or a machine
    with no core to spare, limits both stages, and the remedy is the worker-side one.
    """
    own = view_of(e.kind).shared_limit(e, both)  # Ray's receiver; the GIL threads hold
    if own is not None:
        return own
    if e.fetch_cpu_share >= FETCH_WAITS and no_spare_cpu(e):
        return Verdict("CPU-bound", f"{both}, and {computes(e)}: both stages wait for a CPU, "
                       f"and more workers would find none; only a cheaper fetch would help.",
                       starved=True)
    return None


def _workers_slow(e: Evidence, seen: str) -> Verdict:
    """The batcher waits for chunks: fetch, the GIL, the CPUs, or the hand-over from processes."""
    view = view_of(e.kind)
    own = view.workers_slow(e, seen)  # Ray: the actors, the receive path, the in-flight cap
    if own is not None:
        return own
    if e.storage_wait is not None and e.storage_wait >= STORAGE_WAITS:
        return storage_bound(e, seen)
    own = view.fetch_slow(e, seen)  # the GIL (threads), the hand-over (processes)
    if own is not None:
        return own
    if e.fetch_cpu_share >= FETCH_WAITS and no_spare_cpu(e):
        return Verdict("CPU-bound", f"{seen}, and {computes(e)}: more workers (threads or "
                       f"processes) would find no CPU to run on; only a cheaper fetch, or "
                       f"other machines' CPUs, would help: Ray workers run fetch on a cluster "
                       f"(workers=ray, docs/ray.md).", starved=True)
    advice = f"Add workers (workers.count={e.workers * 2}).{view.more_workers_note(e)}"
    return Verdict("fetch-bound", f"{seen}, while the workers were inside fetch {e.in_fetch:.0%} "
                   f"of their time (p50 {e.fetch_p50_ms:.1f} ms): fetch is the slowest stage. "
                   f"{advice}", starved=True)


def storage_bound(e: Evidence, seen: str) -> Verdict:
    """The workers wait on the object store (reads, or shards not yet in the disk cache)."""
    from inputkit import storage

    store, cache = storage.settings()
    failing = f", {e.storage_retries:,} retries" + \
        (f" and {e.storage_errors:,} errors" if e.storage_errors else "") if e.storage_retries \
        or e.storage_errors else ""
    return Verdict("storage-bound", f"{seen}: the workers spent {e.storage_wait:.0%} of their "
                   f"time waiting on the store {e.storage_where}{_endpoint(store)} "
                   f"({e.storage_mb_per_s:.1f} MB/s downloaded{failing}): raise "
                   f"storage.concurrency (now {store.concurrency}) or cache.read_ahead (now "
                   f"{cache.read_ahead}) so more is fetched ahead of the workers.", starved=True)


def _endpoint(store: Any) -> str:
    """`` at <endpoint>`` where one is set (storage.endpoint, else AWS_ENDPOINT_URL)."""
    import os

    endpoint = store.endpoint or os.environ.get("AWS_ENDPOINT_URL")
    return f" at {endpoint}" if endpoint else ""


def _capacity_key(stage: str) -> str:
    return {"chunk queue": "queue.capacity", "batch queue": "queue.batch_capacity",
            "device prefetch": "device.prefetch"}.get(stage, stage)


def overbuffer_threshold(budget_bytes: int | None) -> float:
    """Bytes a smaller queue must save before over-buffering is worth a warning."""
    return OVERBUFFER_BUDGET_SHARE * budget_bytes if budget_bytes else OVERBUFFER_MIN_BYTES


def over_buffering(e: Evidence, budget_bytes: int | None = None) -> list[str]:
    """Queues full most of the span whose spare capacity holds memory that matters."""
    found = []
    for q in e.queues:
        if q.max_bytes is not None or q.capacity <= 2 or q.items == 0 or q.full < FULL:
            continue
        smaller = max(2, q.capacity // 4)
        item = q.bytes / q.items
        saved = (q.capacity - smaller) * item
        if saved < overbuffer_threshold(budget_bytes):
            continue
        share = f" ({saved / budget_bytes:.0%} of memory.budget)" if budget_bytes else ""
        after = "the consumer (the training step)" if q is e.consumer_queue else \
            "the stage after it"
        found.append(f"the {q.stage} was full {q.full:.0%} of {e.over}: {after} is the slower "
                     f"side, so {q.capacity} items ({format_size(q.capacity * item)}) wait where "
                     f"{smaller} would keep it busy; {_capacity_key(q.stage)}={smaller} would "
                     f"save {format_size(saved)}{share}")
    return found


def _plural(n: int, word: str, many: str | None = None) -> str:
    return f"{n:,} {word if n == 1 else (many or word + 's')}"


def _policy_actions(w: WorkerPoolStats, retries: bool = True) -> list[str]:
    """What the failure policies did so far, e.g. ``skipped 3 chunks (failures.on_error=skip)``."""
    done = []
    if w.skipped_chunks or w.skipped_samples:  # index-range work may skip samples, no chunk
        parts = [_plural(w.skipped_chunks, 'chunk')] if w.skipped_chunks else []
        parts += [_plural(w.skipped_samples, 'sample')] if w.skipped_samples else []
        done.append(f"skipped {', '.join(parts)} (failures.on_error=skip)")
    if retries and w.retries:
        done.append(f"retried {_plural(w.retries, 'fetch', 'fetches')} (failures.on_error=retry)")
    if w.restarts:
        what = _plural(w.restarts, *view_of(w.kind).restart_noun)
        done.append(f"restarted {what} (failures.on_worker_death=restart)")
    return done


def _last_error(w: WorkerPoolStats, limit: int = 200) -> str:
    lines = w.last_error.strip().splitlines()
    text = lines[0] if lines else ""
    return text if len(text) <= limit else text[:limit - 3] + "..."


def window_evidence(window: Window, c: CoordinatorWindow) -> Evidence:
    """The evidence of ``c`` as the window computed it (the same figures the dashboard shows)."""
    return of_window(c, over=f"the last {window.window_s:.0f} s")


STARVATION = "starvation: "  # the prefix of the warning that repeats a starved verdict


def live_verdicts(window: Window) -> list[Verdict | None]:
    """Each coordinator's verdict over the window (None: too early, finished, or no data)."""
    if window.window_s < MIN_WINDOW_S:
        return [None] * len(window.coordinators)
    return [None if c.stats.finished else judge(window_evidence(window, c))
            for c in window.coordinators]


def live_warnings(window: Window, budget_bytes: int | None = None) -> list[str]:
    """Problems visible in the last window; empty while the window is too short to judge."""
    if window.window_s < MIN_WINDOW_S:
        return []
    found: list[str] = []
    for c, verdict in zip(window.coordinators, live_verdicts(window), strict=True):
        if c.stats.finished:
            continue
        place = where(c.stats)
        found += [f"over-buffering: {place}: {text}"
                  for text in over_buffering(window_evidence(window, c), budget_bytes)]
        workers = c.stats.workers
        if workers.chunks == 0 and workers.empty_chunks:
            # Starved, but more workers would not help: the source has nothing to give.
            found.append(f"empty chunks: {place}: the source returned only empty chunks "
                         f"({workers.empty_chunks:,} so far); check fetch")
        elif verdict is not None and verdict.starved:
            found.append(f"{STARVATION}{verdict.line(place)}")
        for stall in workers.stalls:
            lines = stall.strip().splitlines()
            if lines:
                found.append(f"stall: {lines[0]}")
        # Retries that succeed cost only time; skipped chunks lose data and restarts lose
        # workers, so those stay on show (their totals) while the run lasts.
        actions = _policy_actions(workers, retries=False)
        if actions:
            found.append(f"failures: {place}: {', '.join(actions)} so far")
    for kind in dict.fromkeys(c.stats.workers.kind for c in window.coordinators):
        found += view_of(kind).run_warnings(window.stats)
    memory = window.stats.memory
    if budget_bytes and memory is not None and memory.total_rss >= BUDGET_SHARE * budget_bytes:
        found.append(f"budget: the process tree holds {format_size(memory.total_rss)}, "
                     f"{memory.total_rss / budget_bytes:.0%} of memory.budget "
                     f"({format_size(budget_bytes)}); lower queue capacities or raise the budget")
    return found


def diagnose(stats: RunnerStats, budget_bytes: int | None = None,
             since: RunnerStats | None = None,
             sources: dict[str, dict[str, Any]] | None = None) -> list[str]:
    """After a run: per coordinator, the bottleneck stage, why, and the one change to try.

    The run is judged from ``since`` (a snapshot taken once batches flowed) to ``stats``,
    or from each coordinator's first batch. Over-buffered queues get a line each, and a
    coordinator whose failure policies skipped, retried or restarted anything gets a
    line saying so, with the latest error they handled. ``sources``: the runner's
    ``source_info`` (what each input's source reported: an image source's decoder).
    """
    before = {(c.input, c.device_index): c for c in since.coordinators} if since else {}
    lines = []
    for c in stats.coordinators:
        start = before.get((c.input, c.device_index))
        # A run that ended within its first snapshot (a small finite input) has no batches
        # after ``since``: it is judged from its first batch, not called empty.
        e = evidence(c, start if start is not None and 0 < start.batches < c.batches else None)
        decoder = (sources or {}).get(c.input, {}).get("decoder")
        lines.append(_final_line(c, e, decoder))
        lines += [f"{e.where}: over-buffered. {text[0].upper()}{text[1:]}"
                  for text in over_buffering(e, budget_bytes)]
        lines += view_of(c.workers.kind).final_lines(c, e.where)
        actions = _policy_actions(c.workers)
        if actions:
            error = _last_error(c.workers)
            lines.append(f"{e.where}: {', '.join(actions)}" + (f"; last error: {error}" if error else ""))
    return lines


def _final_line(c: CoordinatorStats, e: Evidence, decoder: str | None) -> str:
    verdict = judge(e)
    if verdict is None:
        return f"{e.where}: no batches were delivered, nothing to diagnose"
    if 0 < e.batches < TOO_FEW_BATCHES and e.span_s < MIN_WINDOW_S:
        # (a small finite input: shares of 71 ms over 2 batches name no stage, and a verdict
        # such as 'the training step sets the pace' would be made up)
        return f"{e.where}: {e.batches} batch{'es' if e.batches > 1 else ''} over " \
               f"{e.span_s * 1000:.0f} ms: too short to tell which stage sets " \
               f"the pace (a longer run or a larger epoch can: bench.seconds, epoch.count)"
    if verdict.kind == "empty chunks":  # the same words as the catalogue of errors shows
        return f"{e.where}: the source returned only empty chunks ({c.workers.empty_chunks:,} in " \
               f"{c.elapsed_s:.1f} s): check fetch; failures.stall_timeout reports this as a stall"
    return verdict.line(e.where) + decoding_note(c, e, verdict, decoder)

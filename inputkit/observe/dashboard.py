"""The live dashboard: what the pipeline does right now, per device, and what is wrong with it.

``render`` turns one :class:`~inputkit.observe.metrics.Window` into a rich renderable;
it only reads statistics. :class:`Dashboard` shows it live for a runner that a
training script embeds::

    with inputkit.Runner(cfg) as runner, inputkit.Dashboard(runner):
        for batch in runner.device(0):
            ...
"""

from __future__ import annotations

import threading
from types import TracebackType
from typing import Any

from rich.console import Console, Group, RenderableType
from rich.panel import Panel
from rich.progress_bar import ProgressBar
from rich.table import Table
from rich.text import Text

from inputkit.config.sizes import format_size
from inputkit.kinds.view import view_of
from inputkit.observe.diagnosis import STARVATION, Verdict, live_verdicts, live_warnings
from inputkit.observe.metrics import CoordinatorWindow, MovingWindow, QueueWindow, Window
from inputkit.workers.base import WorkerPoolStats


def _bar(q: QueueWindow) -> ProgressBar:
    if q.max_bytes is not None:
        return ProgressBar(total=q.max_bytes, completed=min(q.bytes, q.max_bytes), width=20)
    return ProgressBar(total=q.capacity, completed=q.items, width=20)


def _queue_rows(table: Table, c: CoordinatorWindow) -> None:
    for q in c.queues:
        limit = f"{format_size(q.max_bytes)} limit" if q.max_bytes is not None \
            else f"{q.items}/{q.capacity}"
        # A full queue is not a fault (in front of a slower consumer it is the goal), so only
        # an empty one is marked; what the fill means is the verdict's and the warnings' job.
        style = "yellow" if q.empty >= 0.8 else None
        table.add_row(f"  {q.stage}", _bar(q), limit, format_size(q.bytes),
                      Text(f"full {q.full:4.0%}  empty {q.empty:4.0%}", style=style or ""))


def _coordinators_table(coordinators: tuple[CoordinatorWindow, ...]) -> Table:
    """One grid for every coordinator, so their columns line up."""
    table = Table.grid(padding=(0, 2))
    for _ in range(5):
        table.add_column()
    for c in coordinators:
        _coordinator_rows(table, c)
    return table


def _coordinator_rows(table: Table, c: CoordinatorWindow) -> None:
    w = c.stats.workers
    table.add_row(Text(f"{c.input} @ {c.device_index}:{c.device}", style="bold"),
                  f"{c.samples_per_s:,.0f} samples/s", f"{c.batches_per_s:,.1f} batches/s",
                  f"{c.mb_per_s:,.1f} MB/s",
                  f"since start {c.stats.samples_per_s:,.0f} samples/s")
    _queue_rows(table, c)
    own = view_of(w.kind).rows(c)  # the kind's own rows (Ray: actors by node, object store)
    if own is not None:
        for row in own:
            table.add_row(*(Text(cell[0], style=cell[1]) if isinstance(cell, tuple) else cell
                            for cell in row))
    else:
        pids = f", pids {', '.join(map(str, w.pids[:4]))}" if w.pids else ""
        kind = w.kind if w.workers == 1 else ("processes" if w.kind == "process" else f"{w.kind}s")
        table.add_row("  workers", f"{w.workers} {kind}{pids}",
                      f"fetching {w.fetching}", f"idle {w.idle}  blocked {w.blocked}",
                      f"fetch p50 {w.fetch_p50_ms:.1f} ms  p95 {w.fetch_p95_ms:.1f} ms")
    if c.stats.components:  # a mixture: what the consumer received of each component
        table.add_row("  components", components_text(c.stats.components), "", "", "")
    if w.processors:  # which step is slow: each one's time per chunk, inside the workers
        steps = "  ".join(f"{p.name} {p.ms_per_chunk:.2f} ms" for p in w.processors)
        table.add_row("  processors", "per chunk:", steps, "", "")
    if w.retries or w.skipped_chunks or w.skipped_samples or w.restarts:
        skipped = f"skipped {w.skipped_chunks:,}" if not w.skipped_samples else \
            f"skipped {w.skipped_samples:,} samples" if not w.skipped_chunks else \
            f"skipped {w.skipped_chunks:,} chunk{'s' if w.skipped_chunks > 1 else ''}, " \
            f"{w.skipped_samples:,} samples"
        table.add_row("  failures", f"retries {w.retries:,}", skipped,
                      f"restarts {w.restarts:,}", Text(w.last_error[:60], style="yellow"))
    if w.skipped_samples:
        # No "see summary.json" here: an embedded dashboard has none (stats() has them all).
        table.add_row("  skipped", "", "", "", Text(skipped_text(w, more="") or "",
                                                    style="yellow"))


SHOWN_INDICES = 8  # skipped samples named on the dashboard and in the end-of-run lines


def components_text(counts: dict[str, int]) -> str:
    """``web 70.1% (7,010), code 29.9% (2,990)``: a mixture's samples received, by component."""
    total = sum(counts.values()) or 1
    return ", ".join(f"{name} {n / total:.1%} ({n:,})" for name, n in counts.items())


def skipped_text(w: WorkerPoolStats, more: str = "see summary.json") -> str | None:
    """``N samples skipped (indices 12, 345, ...; see summary.json)``, or None if none was.

    ``more`` says where the rest are (the first 1,000 and their errors are in the pool's
    stats, and so in bench's summary.json); empty: say nothing."""
    if not w.skipped_samples:
        return None
    kept = sorted(w.skipped_indices)[:SHOWN_INDICES]  # the smallest of those kept
    noun = "sample" if w.skipped_samples == 1 else "samples"
    what = ("index " if w.skipped_samples == 1 else "indices ") + ", ".join(map(str, kept)) \
        if kept else "indices not known"
    etc = ", ..." if kept and w.skipped_samples > len(kept) else ""
    tail = f"; {more}" if more else ""
    return f"{w.skipped_samples:,} {noun} skipped ({what}{etc}{tail})"


def _memory_line(window: Window, budget_bytes: int | None) -> Text:
    stats = window.stats
    text = Text("memory  ", style="bold")
    planned = format_size(stats.planned_host_bytes) if stats.planned_host_bytes else "unknown"
    text.append(f"buffered {format_size(stats.buffered_bytes)} (planned worst case {planned})")
    if stats.memory is not None:
        text.append(f"   process tree RSS {format_size(stats.memory.total_rss)}")
        if stats.memory.shared_bytes:
            text.append(f"   shared memory {format_size(stats.memory.shared_bytes)}")
        for device, used in sorted(stats.memory.gpu_bytes.items()):
            text.append(f"   {device} {format_size(used)}")
        if budget_bytes:
            share = stats.memory.total_rss / budget_bytes
            text.append(f"   budget {format_size(budget_bytes)} ({share:.0%} used)",
                        style="red" if share >= 0.8 else "")
    return text


def storage_lines(window: Window) -> list[str]:
    """One line per store the inputs read from: MB/s over the window, requests in flight,
    retries and errors, the disk cache's fill against cache.max_bytes, hits and misses."""
    from inputkit.observe.storage_stats import storage_line

    lines: dict[str, str] = {}
    for c in window.coordinators:
        now = c.stats.storage
        if now is None or now.where in lines:
            continue
        before = c.before.storage if c.before is not None else None
        span = c.stats.elapsed_s - c.before.elapsed_s if before is not None and c.before \
            else c.stats.elapsed_s
        lines[now.where] = storage_line(now, before, span)
    return list(lines.values())


def _storage_text(lines: list[str]) -> Text:
    text = Text()
    for i, line in enumerate(lines):
        if i:
            text.append("\n")
        head, _, rest = line.partition(": ")
        text.append("storage  ", style="bold")
        text.append(head.removeprefix("storage ") + ": ")
        text.append(rest, style="red" if ", 0 errors" not in rest else "")
    return text


def _verdict_lines(window: Window) -> Text:
    """One line per coordinator: what limits it over the window (diagnosis.judge)."""
    text = Text()
    for i, (c, verdict) in enumerate(zip(window.coordinators, live_verdicts(window), strict=True)):
        if i:
            text.append("\n")
        text.append("verdict  ", style="bold")
        text.append(f"{c.input} @ {c.device_index}:{c.device}: ")
        if verdict is None:
            text.append("finished" if c.stats.finished else "judging (needs 1 s of data)",
                        style="dim")
            continue
        text.append(verdict.kind, style="bold yellow" if verdict.starved else "bold green")
        text.append(f". {verdict.text}")
    return text


def verdict_line(c: CoordinatorWindow, verdict: Verdict | None) -> str:
    """The verdict as one plain line, for logs."""
    what = f"{verdict.kind}. {verdict.text}" if verdict is not None else \
        ("finished" if c.stats.finished else "judging (needs 1 s of data)")
    return f"  verdict {c.input}@{c.device_index}:{c.device}: {what}"


def render(window: Window, warnings: list[str], budget_bytes: int | None = None,
           title: str = "inputkit") -> RenderableType:
    """The whole dashboard for one moment: throughput, queues, workers, memory, the verdict
    on the window (the stage that limits each input, the same judgement as the diagnosis
    after the run), and warnings."""
    head = Text()
    head.append(f"{window.samples_per_s:,.0f} samples/s", style="bold green")
    head.append(f"   {window.batches_per_s:,.1f} batches/s   {window.mb_per_s:,.1f} MB/s", )
    head.append(f"   over the last {window.window_s:.1f} s", style="dim")
    head.append(f"   since start {window.stats.samples_per_s:,.0f} samples/s"
                f"   {window.stats.batches:,} batches", style="dim")
    parts: list[RenderableType] = [head]
    parts.append(_coordinators_table(window.coordinators))
    parts.append(_memory_line(window, budget_bytes))
    stored = storage_lines(window)
    if stored:  # an input reads from an object store
        parts.append(_storage_text(stored))
    parts.append(_verdict_lines(window))
    # A starvation warning is the verdict line above in other words: shown once, as the verdict.
    shown = [w for w in warnings if not w.startswith(STARVATION)]
    if shown:
        parts.append(Panel(Text("\n".join(shown), style="yellow"), title="warnings",
                           title_align="left", border_style="yellow"))
    return Panel(Group(*parts), title=f"{title}  {window.elapsed_s:.1f} s", title_align="left")


def plain_lines(window: Window) -> list[str]:
    """The same information as plain text, per coordinator a line and its verdict (for logs)."""
    lines = [f"t={window.elapsed_s:.1f}s {window.samples_per_s:,.0f} samples/s "
             f"{window.batches_per_s:,.1f} batches/s {window.mb_per_s:,.1f} MB/s "
             f"batches={window.stats.batches:,} buffered={format_size(window.stats.buffered_bytes)}"]
    for c in window.coordinators:
        queues = " ".join(f"{q.stage.replace(' ', '_')}={q.items}/{q.capacity}"
                          f"(full {q.full:.0%} empty {q.empty:.0%})" for q in c.queues)
        w = c.stats.workers
        lines.append(f"  {c.input}@{c.device_index}:{c.device} {c.samples_per_s:,.0f} samples/s "
                     f"{queues} workers fetching={w.fetching} blocked={w.blocked} "
                     f"p50={w.fetch_p50_ms:.1f}ms")
        lines += view_of(w.kind).lines(c, f"{c.input}@{c.device_index}:{c.device}")
    lines += [f"  {line}" for line in storage_lines(window)]
    for c, verdict in zip(window.coordinators, live_verdicts(window), strict=True):
        lines.append(verdict_line(c, verdict))
    for c in window.coordinators:
        text = skipped_text(c.stats.workers, more="")
        if text is not None:
            lines.append(f"  skipped {c.input}@{c.device_index}:{c.device}: {text}")
    return lines


class Dashboard:
    """A live view of a running :class:`~inputkit.Runner`, refreshed ``refresh_hz`` times a second.

    On a terminal it draws in place (rich Live); otherwise it prints plain lines every
    ``plain_every`` seconds. It reads ``runner.stats()`` from its own thread and never
    touches the pipeline.
    """

    def __init__(self, runner: Any, console: Console | None = None, refresh_hz: float = 4.0,
                 window_s: float = 5.0, plain_every: float = 5.0) -> None:
        from inputkit.planning.memory import parse_budget

        self.runner = runner
        self.console = console or Console()
        self.interval = 1.0 / refresh_hz
        self.plain_every = plain_every
        self.window = MovingWindow(window_s)
        self.budget = parse_budget(runner.spec.memory_budget, "memory.budget") \
            if runner.plan is not None else None
        self.last: Window | None = None
        self.warnings: list[str] = []
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, name="inputkit-dashboard", daemon=True)

    def update(self) -> Window:
        """Take a snapshot now: the window and its warnings (kept in ``last``/``warnings``)."""
        self.last = self.window.update(self.runner.stats())
        self.warnings = live_warnings(self.last, self.budget)
        return self.last

    def snapshot(self) -> RenderableType:
        """Take a snapshot now and return its rendering (what the live view shows)."""
        return render(self.update(), self.warnings, self.budget)

    def __enter__(self) -> Dashboard:
        self._thread.start()
        return self

    def __exit__(self, exc_type: type[BaseException] | None, exc: BaseException | None,
                 tb: TracebackType | None) -> None:
        self._stop.set()
        self._thread.join(2.0)

    def _run(self) -> None:
        if self.console.is_terminal:
            from rich.live import Live

            with Live(console=self.console, refresh_per_second=1 / self.interval,
                      transient=False) as live:
                while not self._stop.wait(self.interval):
                    live.update(self.snapshot())
            return
        waited = 0.0
        while not self._stop.wait(self.interval):
            window = self.update()  # the moving window needs every snapshot
            waited += self.interval
            if waited >= self.plain_every:
                waited = 0.0
                for line in plain_lines(window) + [f"warning: {w}" for w in self.warnings]:
                    self.console.print(line, markup=False, highlight=False, soft_wrap=True)

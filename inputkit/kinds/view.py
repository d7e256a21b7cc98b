"""What a worker kind adds to observability: its stats extension over a window, its verdict
rules, its dashboard rows, and its entries in metrics.jsonl and summary.json.

The one windowed pass (:mod:`inputkit.observe.metrics`), the verdict (:mod:`inputkit.observe.diagnosis`),
the dashboard and the CLI's renderer ask ``kinds.get(kind).view`` at fixed points instead of
testing the kind's name; a kind with nothing of its own leaves ``Kind.view`` None and gets
:data:`PLAIN`. ``Kind.view`` is a :class:`KindView`, or a function that returns one (imported
lazily). A kind's view subclasses :class:`KindView` and overrides only what it has.

The hooks, in the order the data flows:

- ``window(now, before, span)``: the kind's own figures over the window, from the pool's
  two snapshots (``WorkerPoolStats``; ``before`` None: since the first batch, the run), or
  None. The result travels as ``CoordinatorWindow.ext``; it is computed once per window and
  read by every view below.
- ``live_workers(now, ext)``: the workers the shares count (Ray: live actors), or None.
- ``evidence(ext)``: what the kind's verdict rules read (``Evidence.ext``).
- ``first``, ``hand_over``, ``shared_limit``, ``workers_slow``, ``fetch_slow``,
  ``more_workers_note``: the kind's verdict rules at the points of
  :func:`inputkit.observe.diagnosis.judge` where kinds differ (None: the generic rule).
- ``rows(c)``: dashboard rows for the pool (None: the generic workers row); each cell a
  string or ``(text, style)``. ``lines(c, where)``: the same as plain lines;
  ``progress(c)``: words for the CLI's progress line.
- ``record(ext)``: its entry in a ``metrics.jsonl`` coordinator, under ``key``;
  ``summary(c)``: its entry in ``summary.json``'s list under ``key``, from a final
  ``CoordinatorStats``; ``summary_lines(c)``: the end-of-run lines.
- ``run_warnings(stats)``: live warnings of its own over the whole run (once per kind, so
  that pools sharing a cluster warn once); ``final_lines(c, where)``: end-of-run lines.
"""

from __future__ import annotations

from typing import Any

from inputkit import kinds
from inputkit.errors import ConfigError

Cell = Any  # str, or (text, rich style)


class KindView:
    """The defaults: nothing of its own (the generic rows, rules and records apply)."""

    key: str | None = None  # its entry's name in metrics.jsonl and summary.json
    restart_noun: tuple[str, str] = ("worker process", "worker processes")
    between: str = "processes and threads"  # what a chunk is handed between
    consumer_fetches: bool = False  # the consumer's thread runs fetch (inline): no hand-over
    # Where images decode, for the image note (own_stages.decoding_note): "here" (threads in
    # this process), "process" (worker processes), None (no advice on the kind).
    decodes: str | None = "here"

    def window(self, now: Any, before: Any | None, span: float) -> Any:
        return None

    def live_workers(self, now: Any, ext: Any) -> int | None:
        return None

    def evidence(self, ext: Any) -> Any:
        return None

    def first(self, e: Any) -> Any:
        """A verdict judged before the queues are read (inline: it has none), or None."""
        return None

    def hand_over(self, e: Any) -> bool:
        """Whether a fetch cheaper than the hand-over can be what limits this kind."""
        return True

    def shared_limit(self, e: Any, both: str) -> Any:
        return None

    def workers_slow(self, e: Any, seen: str) -> Any:
        """The batcher waits for chunks: a rule judged before the store's and the generic ones."""
        return None

    def fetch_slow(self, e: Any, seen: str) -> Any:
        """The batcher waits for chunks, not on the store: a rule before the generic CPU and
        fetch-bound ones."""
        return None

    def more_workers_note(self, e: Any) -> str:
        """Words after the generic advice to add workers (empty: none)."""
        return ""

    def rows(self, c: Any) -> list[tuple[Cell, ...]] | None:
        return None

    def lines(self, c: Any, where: str) -> list[str]:
        return []

    def progress(self, c: Any) -> str:
        """Words added to a ``CoordinatorStats``' part of the CLI's progress line."""
        return ""

    def record(self, ext: Any) -> dict[str, Any] | None:
        return None

    def summary(self, c: Any) -> dict[str, Any] | None:
        return None

    def summary_lines(self, c: Any) -> list[str]:
        return []

    def run_warnings(self, stats: Any) -> list[str]:
        return []

    def final_lines(self, c: Any, where: str) -> list[str]:
        return []


PLAIN = KindView()


def view_of(kind: str) -> KindView:
    """The view of the kind called ``kind``; :data:`PLAIN` for one without (or unknown here:
    stats read back from another version's summary)."""
    try:
        found = kinds.get(kind)
    except ConfigError:  # an unknown kind (stats read back from elsewhere) is shown plainly
        return PLAIN
    view = found.view
    if view is None:
        return PLAIN
    if not isinstance(view, KindView):
        # A kind may name its view by a function that imports it, so that building a pool or
        # a plan does not import the observability code; resolved once, on first use.
        view = found.view = view()
    return view  # type: ignore[no-any-return]

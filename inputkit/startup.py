"""A command's start-up, step by step: each step timed, and a slow one shown while it runs.

``inputkit bench`` used to sit silent while a 200,000-file folder was indexed, then
report a start-up time that left out what happened before the runner and a
first batch counted from after it all. A :class:`StartupClock` times the steps
from the command's own start (the process's, when psutil knows it): ``config``
(interpreter, imports, composing and checking the config), ``index`` (building
sources: an image folder's file list), ``probe/plan`` (the memory probe's read
and the plan), ``devices`` (importing torch, resolving the devices), ``workers start``
and ``first batch``.

Work deep inside a step (a source indexing its files) says how far it got with
:func:`progress`; it costs nothing when no clock is in use (a training script).
A step still running after ``after_s`` (1 s) is shown: on a terminal as one
status line that is redrawn and then cleared ("indexing source.path ... 120,000
files, 2.1 s"); elsewhere (CI, a log file) only the first slow step that counts its
work (indexing) gets one line, when it ends: one line in all, and none for an error
to be mixed with when nothing was counted.
"""

from __future__ import annotations

import contextlib
import threading
import time
from collections.abc import Iterator
from contextvars import ContextVar
from typing import Any

STEPS = ("config", "index", "probe/plan", "devices", "workers start", "first batch")
_CURRENT: ContextVar[StartupClock | None] = ContextVar("inputkit_startup_clock", default=None)


def process_started() -> float:
    """When this process started, on the ``time.monotonic()`` clock (now, if unknown)."""
    now = time.monotonic()
    try:
        import psutil

        return now - max(0.0, time.time() - psutil.Process().create_time())
    except Exception:  # noqa: BLE001 - any failure to read it: count from now
        return now


class StartupClock:
    """The start-up steps of one command. ``console`` (rich, usually stderr) shows slow steps;
    None shows nothing. Steps nest: a step's own time leaves out the steps inside it."""

    def __init__(self, began: float | None = None, console: Any = None,
                 after_s: float = 1.0) -> None:
        self.began = time.monotonic() if began is None else began
        self.console = console
        self.after_s = after_s
        self.seconds: dict[str, float] = {}
        self._stack: list[list[Any]] = []  # [name, label, started, nested seconds, count, unit]
        self._lock = threading.Lock()
        self._shown = threading.Event()
        self._config_end: float | None = None
        self._said = False  # off a terminal, the one line was printed

    def elapsed(self, at: float | None = None) -> float:
        """Seconds from the command's start to ``at`` (default: now)."""
        return (time.monotonic() if at is None else at) - self.began

    @contextlib.contextmanager
    def step(self, name: str, label: str) -> Iterator[None]:
        """Time ``name`` (accumulated over calls); show ``label`` if it runs past ``after_s``."""
        started = time.monotonic()
        if self._config_end is None:  # everything before the first step is the config's
            self._config_end = started
            self.seconds["config"] = started - self.began
        frame = [name, label, started, 0.0, 0, ""]
        with self._lock:
            self._stack.append(frame)
        terminal = bool(getattr(self.console, "is_terminal", False))
        watcher = _Watcher(self) if terminal and len(self._stack) == 1 else None
        try:
            yield
        finally:
            took = time.monotonic() - started
            with self._lock:
                self._stack.remove(frame)
                if self._stack:
                    self._stack[-1][3] += took
            self.seconds[name] = self.seconds.get(name, 0.0) + took - frame[3]
            if watcher is not None:
                watcher.close()
            elif self.console is not None and not terminal and took >= self.after_s \
                    and frame[5] and not self._said:  # off a terminal: one line in all
                self._said = True
                _, label, _, _, done, unit = frame
                self.console.print(f"start-up: {label}: {done:,} {unit} in {took:.1f} s",
                                   markup=False, highlight=False, soft_wrap=True)

    def record(self, name: str, seconds: float) -> None:
        """A step timed elsewhere (the first batch, from the coordinators' stats)."""
        self.seconds[name] = self.seconds.get(name, 0.0) + seconds

    def progress(self, done: int, unit: str, label: str | None = None) -> None:
        with self._lock:
            if self._stack:
                frame = self._stack[-1]
                frame[4], frame[5] = done, unit
                if label:
                    frame[1] = label

    def status(self) -> str | None:
        """The innermost running step as a line, or None."""
        with self._lock:
            if not self._stack:
                return None
            top = self._stack[-1]
            outer = self._stack[0][2]
            label, done, unit = top[1], top[4], top[5]
        counted = f" ... {done:,} {unit}" if unit else " ..."
        return f"{label}{counted}, {time.monotonic() - outer:.1f} s"

    def breakdown(self, total: float | None = None) -> str:
        """``config 1.1 s, index 1.4 s, ...`` in the order of STEPS (steps that ran); with the
        ``total`` they are part of, what no step covered as ``other``."""
        parts = [f"{name} {_seconds(self.seconds[name])}" for name in STEPS if name in self.seconds]
        if total is not None:
            other = total - sum(self.seconds.values())
            if other >= 0.01:
                parts.append(f"other {_seconds(other)}")
        return ", ".join(parts)

    def record_dict(self) -> dict[str, float]:
        """For summary.json: each step's seconds, keys like ``index_s``."""
        return {name.replace("/", "_").replace(" ", "_") + "_s": round(seconds, 4)
                for name, seconds in self.seconds.items()}

    @contextlib.contextmanager
    def current(self) -> Iterator[StartupClock]:
        """Make this the clock that :func:`step` and :func:`progress` report to (this thread and
        the code it calls)."""
        token = _CURRENT.set(self)
        try:
            yield self
        finally:
            _CURRENT.reset(token)


class _Watcher:
    """On a terminal, redraws the running step's status line once the outermost step has run
    ``after_s``, and clears it when that step ends. Owned by the step; its thread ends with it."""

    def __init__(self, clock: StartupClock) -> None:
        self.clock = clock
        self.stop = threading.Event()
        self.thread = threading.Thread(target=self._run, name="inputkit-startup-status",
                                       daemon=True)
        self.thread.start()

    def _run(self) -> None:
        if self.stop.wait(self.clock.after_s):
            return
        from rich.live import Live
        from rich.text import Text

        live = Live(Text(self.clock.status() or ""), console=self.clock.console, transient=True,
                    auto_refresh=False)
        live.start()
        try:
            while not self.stop.wait(0.1):
                live.update(Text(self.clock.status() or ""), refresh=True)
        finally:
            live.stop()

    def close(self) -> None:
        self.stop.set()
        self.thread.join(timeout=2.0)
        if self.thread.is_alive():
            raise RuntimeError("inputkit's start-up status line did not stop within 2 s")


def _seconds(value: float) -> str:
    return f"{value * 1000:.0f} ms" if value < 1 else f"{value:.2f} s"


@contextlib.contextmanager
def step(name: str, label: str) -> Iterator[None]:
    """A step of the current clock's start-up; nothing without one."""
    clock = _CURRENT.get()
    if clock is None:
        yield
        return
    with clock.step(name, label):
        yield


def progress(done: int, unit: str, label: str | None = None) -> None:
    """How far the running start-up step got (``120_000, "files"``); ``label`` renames the
    step as its work knows it ("indexing source.path"). Nothing without a clock."""
    clock = _CURRENT.get()
    if clock is not None:
        clock.progress(done, unit, label)


def current() -> StartupClock | None:
    return _CURRENT.get()


class Prepared:
    """What a command built before its runner started: the checked spec, each input's sample
    sizes and the sources the memory probe built. The runner of the same inputs takes them
    instead of probing and building again (an index is built once per command). Whoever holds
    it closes it: the sources nobody took are closed then."""

    def __init__(self) -> None:
        self.inputs: dict[str, Any] = {}  # input name -> its InputSpec when planned
        self.layouts: dict[str, Any] = {}  # input name -> SampleLayout
        self.sources: dict[str, Any] = {}  # input name -> BoundSource
        # input name -> (its InputSpec with workers.kind=auto, the AutoChoice made for it)
        self.auto: dict[str, Any] = {}

    def __getstate__(self) -> dict[str, Any]:
        """Without the built sources: a sweep launcher that runs jobs in other processes
        (Hydra's joblib launcher pickles the task and what it holds) gets the checked sizes
        and auto's choices, and each job builds its own source; the copies (locks, open
        files, maps) stay with this process, which closes them."""
        return {**self.__dict__, "sources": {}}

    def keep(self, spec: Any, layouts: dict[str, Any], sources: dict[str, Any]) -> None:
        """What the plan of ``spec`` found; replaces (and closes) what was kept before."""
        self.close()
        self.inputs = {inp.name: inp for inp in spec.inputs}
        self.layouts, self.sources = dict(layouts), dict(sources)

    def take(self, spec: Any) -> tuple[dict[str, Any], dict[str, Any]]:
        """The sizes and sources of the inputs of ``spec`` that are configured exactly as when
        they were planned (the rest is closed); the caller owns the sources from now on."""
        same = {inp.name for inp in spec.inputs if self.inputs.get(inp.name) == inp}
        layouts = {n: layout for n, layout in self.layouts.items() if n in same}
        sources = {n: source for n, source in self.sources.items() if n in same}
        for name in [n for n in self.sources if n not in same]:
            self.sources.pop(name).close()
        self.inputs, self.layouts, self.sources = {}, {}, {}
        return layouts, sources

    def close(self) -> None:
        sources, self.sources = list(self.sources.values()), {}
        for source in sources:
            source.close()

"""The operating-system side of process workers: the multiprocessing context, starting
children without re-running the main program, how a child ended, and its stack.

Kept apart from the pool (workers/processes.py), which owns the pipes and slots.
"""

from __future__ import annotations

import multiprocessing
import os
import select
import signal
import sys
import threading
import time
import types
from collections.abc import Iterator
from contextlib import contextmanager

from inputkit.errors import ConfigError
from inputkit.workers.process_main import STACK_SIGNAL

_PRELOAD = ["inputkit.workers.process_main", "numpy"]


def context(start_method: str) -> multiprocessing.context.BaseContext:
    """The multiprocessing context; forkserver preloads the worker module once."""
    from inputkit.storage import counters

    # the run's storage folder (counters, settings) is named in the environment before the
    # forkserver starts: it and every worker it forks inherit that environment, not later ones
    counters.prepare()
    ctx = multiprocessing.get_context(start_method)
    if start_method == "forkserver":
        ctx.set_forkserver_preload(_PRELOAD)  # type: ignore[attr-defined]
    return ctx


_MAIN_SWAP = threading.Lock()


@contextmanager
def main_module_hidden(needed: bool) -> Iterator[None]:
    """Start processes without making them re-run the main program, unless the source needs it.

    spawn and forkserver children re-execute ``__main__`` (a training script that imports
    torch costs each worker a second or more). Our workers only need it when the source's
    ``_target_`` lives in ``__main__``; otherwise multiprocessing briefly sees a bare
    ``__main__`` while the processes start, and the children skip the re-import.
    """
    if needed:
        main_file = getattr(sys.modules.get("__main__"), "__file__", None)
        forking = multiprocessing.get_start_method(allow_none=True)
        if main_file is not None and not os.path.isfile(main_file) and forking != "fork":
            raise ConfigError("workers.start_method", "the source lives in the main program, "
                              f"which new worker processes must re-import, but it was read from "
                              f"{main_file}; move the source into a module, or use "
                              "workers.start_method=fork")
        yield
        return
    with _MAIN_SWAP:
        real = sys.modules["__main__"]
        sys.modules["__main__"] = types.ModuleType("__main__")
        try:
            yield
        finally:
            sys.modules["__main__"] = real


_STANDARD_METHODS = (None, "fork", "spawn", "forkserver")
_DEFAULT_SWAP = threading.Lock()


@contextmanager
def children_named_as(ctx: multiprocessing.context.BaseContext) -> Iterator[None]:
    """Start processes whose preparation names ``ctx``'s start method, not a launcher's own.

    A child started by spawn or forkserver first sets the start method its parent had as the
    default (``spawn.get_preparation_data``). Under a launcher that installed its own (a
    Hydra sweep on joblib runs each job in a loky worker, whose default is ``'loky'``), the
    child cannot find that method and dies ("cannot find context for 'loky'"). While our
    workers start, the default context is ours; any other start method is left as it is.
    """
    default = multiprocessing.context._default_context  # type: ignore[attr-defined]
    if default.get_start_method(allow_none=True) in _STANDARD_METHODS:
        yield
        return
    with _DEFAULT_SWAP:
        launcher = default._actual_context
        default._actual_context = ctx
        try:
            yield
        finally:
            default._actual_context = launcher


def describe_exit(exitcode: int | None) -> str:
    """How a child ended, as a predicate: ``"was killed by signal SIGKILL"``."""
    if exitcode is None:
        return "is still running"
    if exitcode < 0:
        try:
            return f"was killed by signal {signal.Signals(-exitcode).name}"
        except ValueError:
            return f"was killed by signal {-exitcode}"
    return f"exited with code {exitcode}"


def read_stack(pid: int | None, fd: int, timeout: float = 1.0) -> str:
    """Process ``pid``'s current stack (every thread): faulthandler dumps it into the pipe
    ``fd`` on STACK_SIGNAL (installed by workers/process_main.py)."""
    try:
        os.kill(pid, STACK_SIGNAL)  # type: ignore[arg-type]
    except (ProcessLookupError, TypeError):
        return "(the process is gone)"
    chunks: list[bytes] = []
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        ready, _, _ = select.select([fd], [], [], 0.05 if chunks else deadline - time.monotonic())
        if not ready:
            if chunks:
                break
            continue
        data = os.read(fd, 65536)
        if not data:
            break
        chunks.append(data)
    return b"".join(chunks).decode(errors="replace") or "(no stack within 1s)"

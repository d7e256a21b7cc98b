"""multiprocessing's helper processes, the forkserver and the resource tracker: stopped before
the program exits when a process pool of ours started them.

Both wait for their parent to close a pipe, which the kernel does when the parent's
process ends; each then takes a moment to exit (one to two seconds on a loaded
machine), so a supervisor that looks for leftovers right after the program exits
still sees them. When our pool is what started them, they are stopped at exit, after
multiprocessing has joined its own children: their pipes are closed and they are
waited for (at most ``_REAP_S`` each). Helpers that were running before (someone
else's) are left alone.
"""

from __future__ import annotations

import contextlib
import os
import threading
import time
from multiprocessing import forkserver, resource_tracker, util
from typing import Any

_REAP_S = 2.0  # how long exit waits for each helper
# multiprocessing's exit handler runs finalizers with a priority >= 0, then terminates and
# joins the children, then the rest, highest first: this one last.
_EXIT_PRIORITY = -100


def _forkserver() -> Any:
    return getattr(forkserver, "_forkserver", None)


def _tracker() -> Any:
    return getattr(resource_tracker, "_resource_tracker", None)


def running() -> tuple[int | None, int | None]:
    """The pids of the forkserver and the resource tracker this process started (None: none)."""
    return (getattr(_forkserver(), "_forkserver_pid", None), getattr(_tracker(), "_pid", None))


class _Ours:
    """The helpers our pools started, and the one exit hook that stops them."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self.forkserver: int | None = None
        self.tracker: int | None = None
        self._hook: Any = None

    def note(self, before: tuple[int | None, int | None]) -> None:
        """After starting worker processes: remember the helpers that were not running before."""
        server, tracker = running()
        with self._lock:
            if before[0] is None and server is not None:
                self.forkserver = server
            if before[1] is None and tracker is not None:
                self.tracker = tracker
            if self._hook is None and (self.forkserver or self.tracker):
                self._hook = util.Finalize(None, self.stop, exitpriority=_EXIT_PRIORITY)

    def stop(self) -> None:
        """Close the helpers' pipes and wait for them: the forkserver first, which holds none of
        the tracker's, then the tracker, which ends once every holder of its pipe has."""
        with self._lock:
            server, tracker, self.forkserver, self.tracker = self.forkserver, self.tracker, None, None
        if server is not None:
            _stop_forkserver(server)
        if tracker is not None:
            _stop_tracker(tracker)


OURS = _Ours()


def _stop_forkserver(pid: int) -> None:
    server = _forkserver()
    with server._lock:
        if server._forkserver_pid != pid:
            return  # it was restarted or stopped meanwhile
        os.close(server._forkserver_alive_fd)  # its end of file: the server exits
        address = server._forkserver_address
        server._forkserver_alive_fd = server._forkserver_pid = server._forkserver_address = None
    _reap(pid)
    if address and not util.is_abstract_socket_namespace(address):
        with contextlib.suppress(OSError):
            os.unlink(address)


def _stop_tracker(pid: int) -> None:
    tracker = _tracker()
    with tracker._lock:
        if tracker._pid != pid or tracker._fd is None:
            return
        os.close(tracker._fd)  # the last holder but any children still alive
        tracker._fd = tracker._pid = None
    _reap(pid)


def _reap(pid: int) -> None:
    """Wait up to _REAP_S for ``pid`` to exit (it is our child); leave it if it does not."""
    deadline = time.monotonic() + _REAP_S
    while True:
        try:
            done, _ = os.waitpid(pid, os.WNOHANG)
        except ChildProcessError:
            return
        if done or time.monotonic() > deadline:
            return
        time.sleep(0.005)

"""Storage counters summed over every process of a run, without touching the worker protocols.

Each process owns one small counter file (a few int64 slots, memory-mapped) in a per-run
folder; the first process to count creates the folder and names it in
``INPUTKIT_STORAGE_STATS_DIR``, which the worker processes it starts inherit. ``stats()`` sums
every file there, so a finished worker's counts still reach the parent. ``in_flight`` is a
gauge (each process adds while a request runs and takes away when it ends).
"""

from __future__ import annotations

import atexit
import contextlib
import glob
import mmap
import os
import shutil
import struct
import tempfile
import threading
import time
import uuid
from collections.abc import Iterator

ENV_DIR = "INPUTKIT_STORAGE_STATS_DIR"
NAMES = ("bytes_read", "requests", "in_flight", "retries", "errors", "cache_hits", "cache_misses",
         "cache_bytes", "wait_us")
# wait_us: microseconds readers spent blocked on the store (a Store read, or a worker waiting for
# a shard to reach the cache); the prefetcher's downloads are not waits. The verdict reads it.
_SLOT = struct.Struct("<q")
_SIZE = _SLOT.size * len(NAMES)
_INDEX = {name: i for i, name in enumerate(NAMES)}
_PREFIX = "inputkit-storage-stats-"


class _Counters:
    """This process's counter file: its own, never written by another process."""

    def __init__(self, folder: str) -> None:
        self.pid = os.getpid()
        # a name of its own even when the pid is reused within a run (a restarted worker):
        # "wb+" on '<pid>.counters' wiped a finished worker's counts
        path = os.path.join(folder, f"{self.pid}-{uuid.uuid4().hex[:12]}.counters")
        with open(path, "xb+") as handle:
            handle.write(b"\0" * _SIZE)
            handle.flush()
            self.map = mmap.mmap(handle.fileno(), _SIZE)
        self.lock = threading.Lock()

    def add(self, name: str, amount: int) -> None:
        offset = _INDEX[name] * _SLOT.size
        with self.lock:
            (value,) = _SLOT.unpack_from(self.map, offset)
            _SLOT.pack_into(self.map, offset, value + amount)


_lock = threading.Lock()
_mine: _Counters | None = None


def _folder(own: bool = False) -> str:
    folder = os.environ.get(ENV_DIR)
    if folder and os.path.isdir(folder) and not (own and _owner(folder) != os.getpid()):
        return folder
    _prune_orphans()
    folder = tempfile.mkdtemp(prefix=f"{_PREFIX}{os.getpid()}-")
    os.environ[ENV_DIR] = folder
    atexit.register(_remove, folder, os.getpid())
    return folder


def _owner(folder: str) -> int | None:
    """The pid of the process that made ``folder`` (its name says), or None."""
    name = os.path.basename(folder)
    if not name.startswith(_PREFIX):
        return None
    pid = name[len(_PREFIX):].split("-", 1)[0]
    return int(pid) if pid.isdigit() else None


def _prune_orphans() -> None:
    """Remove the counter folders of runs that ended without their exit hook (killed,
    crashed, os._exit): their maker's pid is gone. Otherwise /tmp gains one per such run,
    forever."""
    for folder in glob.glob(os.path.join(glob.escape(tempfile.gettempdir()), _PREFIX + "*")):
        owner = _owner(folder)
        if owner is not None and owner != os.getpid() and not _alive(owner):
            shutil.rmtree(folder, ignore_errors=True)


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:  # another user's process
        return True
    return True


def _remove(folder: str, owner: int) -> None:
    """At exit of the process that made the folder (a forked child inherits the hook: skip)."""
    if os.getpid() == owner:
        shutil.rmtree(folder, ignore_errors=True)


def _counters() -> _Counters:
    global _mine
    mine = _mine
    if mine is not None and mine.pid == os.getpid():
        return mine
    with _lock:
        if _mine is None or _mine.pid != os.getpid():  # first use, or a forked child
            _mine = _Counters(_folder())
        return _mine


def add(name: str, amount: int = 1) -> None:
    """Add ``amount`` to counter ``name`` (one of NAMES) for this process."""
    _counters().add(name, amount)


@contextlib.contextmanager
def waiting() -> Iterator[None]:
    """Count the time inside the block as a reader's wait on the store (``wait_us``)."""
    start = time.perf_counter()
    try:
        yield
    finally:
        add("wait_us", int((time.perf_counter() - start) * 1e6))


def prepare(own: bool = False) -> str:
    """Create this run's folder now (before worker processes start) and return it. With
    ``own`` (a process that configures a run of its own: the CLI, a runner), a folder that
    another process made and this one inherited (a test suite's, say) is replaced by a new
    one of this process's; workers never pass it, so they count into their parent's."""
    global _mine
    with _lock:
        before = os.environ.get(ENV_DIR)
        folder = _folder(own)
        if folder != before and _mine is not None and _mine.pid == os.getpid():
            _mine = None  # count into the new folder from now on
        return folder


def stats() -> dict[str, int]:
    """Every counter summed over the processes of this run (this one and the workers it
    started, finished ones included; the in_flight gauge of live ones only)."""
    totals = dict.fromkeys(NAMES, 0)
    folder = os.environ.get(ENV_DIR)
    if not folder or not os.path.isdir(folder):
        return totals
    for name in os.listdir(folder):
        if not name.endswith(".counters"):
            continue
        try:
            with open(os.path.join(folder, name), "rb") as handle:
                data = handle.read(_SIZE)
        except FileNotFoundError:  # removed as we listed: nothing to add
            continue
        if len(data) < _SIZE:
            continue
        pid = name.split("-", 1)[0].split(".", 1)[0]
        # a process that died mid-request (killed worker) left its in_flight gauge raised:
        # its counts stay, its requests are no longer in flight
        dead = pid.isdigit() and int(pid) != os.getpid() and not _alive(int(pid))
        for i, key in enumerate(NAMES):
            if not (dead and key == "in_flight"):
                totals[key] += _SLOT.unpack_from(data, i * _SLOT.size)[0]
    return totals

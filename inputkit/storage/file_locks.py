"""Exclusive locks on lock files (``fcntl.flock``) that exclude threads and processes alike.

The disk cache's promises (one download per object, a budget never passed) hold across
process workers only because every decision is taken under such a lock; the waits are bounded
and a wait that runs out is an error naming the lock file, never a silent hang. Each caller
opens the file anew, so two threads of one process exclude each other too.
"""

from __future__ import annotations

import contextlib
import errno
import fcntl
import os
import time
from collections.abc import Iterator

from inputkit.storage.errors import StorageError

POLL_S = 0.02  # how often a waiter tries again


@contextlib.contextmanager
def locked(path: str, seconds: float, what: str) -> Iterator[None]:
    """Hold the lock on ``path``, waiting up to ``seconds`` for it (``what`` names it in the
    error when the wait runs out)."""
    deadline = time.monotonic() + seconds
    while True:
        fd = try_lock(path)
        if fd is not None:
            break
        if time.monotonic() > deadline:
            raise StorageError(path, "other", f"waited {seconds:g} s for {what} ({path}): "
                               "another process holds it; is a stuck run using this cache.dir?")
        time.sleep(POLL_S)
    try:
        yield
    finally:
        unlock(fd)


def try_lock(path: str) -> int | None:
    """The open, locked file descriptor of ``path`` (created if missing), or None when
    another holder has it."""
    fd = os.open(path, os.O_RDWR | os.O_CREAT, 0o644)
    try:
        fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except OSError as exc:
        os.close(fd)
        if exc.errno in (errno.EWOULDBLOCK, errno.EAGAIN, errno.EACCES):
            return None
        raise
    return fd


def unlock(fd: int) -> None:
    """Release and close a descriptor from :func:`try_lock`."""
    try:
        fcntl.flock(fd, fcntl.LOCK_UN)
    finally:
        os.close(fd)

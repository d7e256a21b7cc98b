"""Tar shards indexed by a few child processes at once (the header walk holds the GIL).

Why plain subprocesses and not a multiprocessing pool: a pool started with spawn or
forkserver re-imports the user's ``__main__`` (a training script without an
``if __name__ == "__main__"`` guard would start itself again), and fork copies a process
that has threads. Each child here is ``python -m inputkit.sources.tar_index_pool``: it reads
its job (pickled) on stdin and writes one length-prefixed pickled frame per shard on stdout,
so the parent counts progress as shards finish. The parent owns the children: it waits
for each, and kills the rest when one fails.
"""

from __future__ import annotations

import contextlib
import os
import pickle
import selectors
import struct
import subprocess
import sys
from typing import Any

from inputkit.sources.tar_shard import _index_arrays

_FRAME = struct.Struct("<Q")


def index_in_children(shards: list[str], images: set[str], label: str | None, workers: int,
                      done: Any = None) -> list[Any]:
    """``_index_arrays`` of every shard, in ``workers`` child processes (shard i goes to child
    i % workers). ``done(count)`` is told how many shards are finished. A shard's error is
    raised here as the child raised it (ValueError, OSError...; the first failing shard of
    those reported)."""
    children = []
    results: dict[int, Any] = {}
    errors: dict[int, str] = {}
    selector = selectors.DefaultSelector()
    try:
        for k in range(workers):
            mine = list(range(k, len(shards), workers))
            child = subprocess.Popen([sys.executable, "-m", "inputkit.sources.tar_index_pool"],
                                     stdin=subprocess.PIPE, stdout=subprocess.PIPE)
            children.append(child)
            assert child.stdin is not None and child.stdout is not None
            child.stdin.write(pickle.dumps(([(i, shards[i]) for i in mine], images, label)))
            child.stdin.close()
            selector.register(child.stdout, selectors.EVENT_READ, bytearray())
        open_pipes = workers
        while open_pipes:
            for key, _ in selector.select():
                buffer: bytearray = key.data
                chunk = os.read(key.fd, 1 << 20)  # readable: returns what is there, b"" at EOF
                if not chunk:
                    selector.unregister(key.fileobj)
                    open_pipes -= 1
                    continue
                buffer += chunk
                while len(buffer) >= _FRAME.size:
                    (length,) = _FRAME.unpack_from(buffer)
                    if len(buffer) < _FRAME.size + length:
                        break
                    number, ok, value = pickle.loads(bytes(buffer[_FRAME.size:_FRAME.size + length]))
                    del buffer[:_FRAME.size + length]
                    if ok:
                        results[number] = value
                    else:
                        errors[number] = value
                    if done is not None:
                        done(len(results) + len(errors))
                if errors:
                    first = errors[min(errors)]
                    raise first if isinstance(first, BaseException) else ValueError(first)
        for child in children:
            if child.wait(timeout=60) != 0:
                raise RuntimeError(f"a tar-indexing child process exited with {child.returncode}")
        missing = [i for i in range(len(shards)) if i not in results]
        if missing:
            raise RuntimeError(f"a tar-indexing child process did not index shard "
                               f"'{shards[missing[0]]}'")
        return [results[i] for i in range(len(shards))]
    finally:
        selector.close()
        for child in children:
            if child.poll() is None:
                child.kill()
            with contextlib.suppress(subprocess.TimeoutExpired):
                child.wait(timeout=10)
            if child.stdout is not None:
                child.stdout.close()


def _main() -> None:
    jobs, images, label = pickle.loads(sys.stdin.buffer.read())
    out = sys.stdout.buffer
    for number, path in jobs:
        try:
            frame, failed = pickle.dumps((number, True, _index_arrays(path, images, label))), False
        except Exception as exc:  # noqa: BLE001 - sent to the parent, raised there as it is
            # any error, not only a damaged tar's ValueError: an unreadable shard (OSError)
            # used to end the child with a traceback, and the parent said only "exited with 1"
            try:
                frame = pickle.dumps((number, False, exc))
                pickle.loads(frame)
            except Exception:  # noqa: BLE001 - an exception that does not pickle: its text
                frame = pickle.dumps((number, False, f"{path}: {type(exc).__name__}: {exc}"))
            failed = True
        out.write(_FRAME.pack(len(frame)) + frame)
        out.flush()
        if failed:
            return  # the parent stops at the first error


if __name__ == "__main__":
    _main()

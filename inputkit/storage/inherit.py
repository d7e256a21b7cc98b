"""The storage environment a worker process takes from its parent when it starts.

A forkserver (and every worker it forks) keeps the environment the server started with, so a
second run in the same process, with another AWS_ENDPOINT_URL, other credentials or other
``storage.*`` settings, would otherwise reach its workers with the first run's: a worker
reading from a store that is gone, or with stale timeouts. The parent takes a snapshot when
it starts each worker; the worker applies it before it builds its source.
"""

from __future__ import annotations

import os

# the variables a store is built from (store.py) and inputkit's own storage variables
_PREFIXES = ("AWS_", "GOOGLE_", "AZURE_", "INPUTKIT_STORAGE_", "INPUTKIT_CACHE_DIR")

Snapshot = tuple[tuple[str, str], ...]


def snapshot() -> Snapshot:
    """This process's storage variables, to hand to a worker it starts."""
    return tuple(sorted((k, v) for k, v in os.environ.items() if k.startswith(_PREFIXES)))


def apply(env: Snapshot) -> None:
    """Make this (worker) process's storage variables exactly ``env`` and forget settings
    read from the old ones."""
    wanted = dict(env)
    for name in [k for k in os.environ if k.startswith(_PREFIXES) and k not in wanted]:
        del os.environ[name]
    os.environ.update(wanted)
    from inputkit.storage import settings

    settings._current = None  # read again from INPUTKIT_STORAGE_SETTINGS on first use

"""Stopping a runner's pipeline: every stage stopped, joined by one deadline, sources closed.

A runner is stopped from three places (its close(), the watchdog's thread when the runner
was dropped without close(), interpreter exit); this module is the one teardown they share.
It holds the stages and sources, never the runner, so that it does not keep the runner alive.
"""

from __future__ import annotations

import atexit
import logging
import threading
import time
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from inputkit.pipeline.coordinator import Stages
    from inputkit.pipeline.watchdog import Watchdog
    from inputkit.sources.loader import BoundSource

# The warning is about a runner: logged under its name, as before this module was split out.
log = logging.getLogger("inputkit.runner")


def shut_down(stages: list[Stages | Watchdog], sources: list[BoundSource],
              timeout: float) -> list[str]:
    """Stop every coordinator's stages, wait until the deadline, close the sources; list what is
    stuck. Takes the stages, not the coordinators, so the runner's cleanup holds nothing that
    leads back to the runner."""
    deadline = time.monotonic() + timeout
    for stage in stages:
        stage.stop()
    stuck: list[str] = []
    for stage in stages:
        stuck.extend(stage.join(deadline))
    for source in sources:
        source.close()
    return stuck


class Cleanup:
    """Stops a runner's stages and closes its sources, once: from close(), from the watchdog's
    thread when the runner is garbage-collected without close(), or at interpreter exit.

    Holds the stages and sources, not the runner, so that it does not keep the runner alive.
    """

    def __init__(self, stages: list[Stages | Watchdog], sources: list[BoundSource]) -> None:
        self._stages = stages
        self._sources = sources
        self._lock = threading.Lock()
        self._done = False

    def __call__(self, timeout: float, unregister: bool = True) -> list[str]:
        """Shut down (the first call only); the threads still running after ``timeout``."""
        with self._lock:
            if self._done:
                return []
            self._done = True
        if unregister:  # not from inside atexit's own call of at_exit
            atexit.unregister(self.at_exit)
        return shut_down(self._stages, self._sources, timeout)

    def orphaned(self) -> None:
        """The watchdog's call for a runner dropped without close()."""
        self._quietly(self(2.0))

    def at_exit(self) -> None:
        """atexit's call for a runner still open when the interpreter exits."""
        self._quietly(self(2.0, unregister=False))

    @staticmethod
    def _quietly(stuck: list[str]) -> None:
        if stuck:
            log.warning("a runner that was never closed left %d thread(s) running: %s",
                        len(stuck), ", ".join(s.splitlines()[0] for s in stuck))

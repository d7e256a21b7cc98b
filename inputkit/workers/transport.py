"""What the supervisor needs of a cross-process worker kind: the transport interface.

A transport moves work to workers that live outside this process and outcomes
back (process workers: pipes and shared-memory slots; Ray: actor calls, object
refs and the object ledger). It does not decide anything: which worker holds
what, whether a death is repaired or fails the run, what counts as a skip or a
duplicate, are the supervisor's (workers/supervisor.py), written once for every
transport.

A transport runs its own receive loop (waiting on pipes, or on object refs) and
hands each outcome to the supervisor with the index of the worker it came from;
a new cross-process kind is a new transport plus that loop.
"""

from __future__ import annotations

from typing import Protocol

from inputkit.pipeline.dispatcher import WorkItem


class Transport(Protocol):
    """One pool's workers, addressed by index (0 .. count-1; a restart reuses the index)."""

    def spawn(self, index: int) -> None:
        """Start worker ``index`` again after a death, taking back what the dead one held of
        the transport's own (a shared-memory slot, its pipes, its object refs)."""

    def send(self, index: int, item: WorkItem) -> bool:
        """Hand ``item`` to worker ``index``; False when it cannot be reached (it died: its
        death will be reported and the item, already in its ledger, handed out again)."""

    def kill(self, index: int) -> None:
        """End worker ``index`` now (a fetch past its timeout, or a death being cleaned up)."""

    def alive(self, index: int) -> bool:
        """Whether worker ``index`` still runs."""

    def exit_reason(self, index: int) -> str:
        """How worker ``index`` ended, as a predicate for messages: ``"was killed by signal
        SIGKILL"``, ``"died: the node was stopped"``."""

    def where(self, index: int) -> str:
        """Worker ``index`` named for messages: its id, pid or node, its pool and source."""

"""Failure policies: what a failed fetch does (raise, skip, retry), shared by every worker kind.

The policy runs where the fetch runs (a worker thread, or inside a worker
process), so a retried or skipped chunk costs no trip to the parent; the pool
counts what happened in its stats. Imports nothing heavy: worker processes load it.
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any, TypeVar

from inputkit.errors import InputkitError, SourceExhausted

log = logging.getLogger("inputkit.failures")
T = TypeVar("T")


class FetchTimeout(InputkitError):
    """A fetch took longer than ``failures.fetch_timeout``; the message names the worker."""


class StallError(InputkitError):
    """A stage made no progress for ``failures.stall_timeout`` and ``failures.on_stall=raise``."""


@dataclass(frozen=True)
class FailurePolicy:
    """The checked ``failures`` config of one input (picklable, for worker processes)."""

    on_error: str = "raise"
    retries: int = 3
    retry_backoff: float = 0.05
    on_worker_death: str = "raise"
    max_restarts: int | None = 10
    fetch_timeout: float | None = None
    stall_timeout: float | None = 60.0
    on_stall: str = "warn"


class Skipped(Exception):  # noqa: N818 - a signal between the policy and its pool
    """A fetch failed and ``on_error=skip``: the chunk is dropped, counted and logged."""

    def __init__(self, error: BaseException) -> None:
        super().__init__(f"{type(error).__name__}: {error}")
        self.error = error


def call_with_policy(call: Callable[[], T], policy: FailurePolicy, where: str,
                     stop: Any = None, on_retry: Callable[[BaseException], None] | None = None) -> T:
    """``call()`` under ``policy``: its result, or the error (raise), or Skipped (skip).

    ``call`` is one fetch and its check, so a bad chunk counts as a failed fetch too.
    SourceExhausted/StopIteration always pass through: the end of an epoch is not an error.
    retry waits ``retry_backoff`` seconds before the first new call and doubles it each
    time, and gives up early when ``stop`` (an Event) is set.
    """
    attempt = 0
    while True:
        try:
            return call()
        except (SourceExhausted, StopIteration, KeyboardInterrupt, SystemExit):
            raise
        except Exception as exc:
            if policy.on_error == "skip":
                log.warning("%s: skipped a chunk (failures.on_error=skip): %s: %s", where,
                            type(exc).__name__, exc)
                raise Skipped(exc) from exc
            if policy.on_error != "retry" or attempt >= policy.retries:
                if attempt:
                    _add_note(exc, f"[inputkit] raised again after {attempt} retr"
                                   f"{'y' if attempt == 1 else 'ies'} (failures.retries={policy.retries})")
                raise
            delay = policy.retry_backoff * (2 ** attempt)
            attempt += 1
            log.info("%s: fetch failed (%s: %s); retry %d of %d in %.3gs", where,
                        type(exc).__name__, exc, attempt, policy.retries, delay)
            if on_retry is not None:
                on_retry(exc)
            if _wait(stop, delay):
                raise


def _wait(stop: Any, seconds: float) -> bool:
    """Sleep ``seconds``; True if ``stop`` was set meanwhile."""
    if stop is None:
        time.sleep(seconds)
        return False
    return bool(stop.wait(seconds))


def _add_note(exc: BaseException, note: str) -> None:
    if hasattr(exc, "add_note") and note not in getattr(exc, "__notes__", []):
        exc.add_note(note)


class FailureTally:
    """What a pool's failure policy did: retries, skipped chunks and samples, restarts."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self.retries = 0
        self.skipped_chunks = 0
        self.skipped_samples = 0  # known for index-range work; 0 for plain fetch
        self.restarts = 0
        self.last_error = ""

    def retried(self, error: str) -> None:
        with self._lock:
            self.retries += 1
            self.last_error = error

    def skipped(self, error: str, samples: int = 0) -> None:
        with self._lock:
            self.skipped_chunks += 1
            self.skipped_samples += samples
            self.last_error = error

    def restarted(self, reason: str) -> None:
        with self._lock:
            self.restarts += 1
            self.last_error = reason

    def snapshot(self) -> dict[str, Any]:
        with self._lock:
            return dict(retries=self.retries, skipped_chunks=self.skipped_chunks,
                        skipped_samples=self.skipped_samples, restarts=self.restarts,
                        last_error=self.last_error)

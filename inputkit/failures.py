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
from inputkit.repeats import RepeatedLog

log = logging.getLogger("inputkit.failures")
T = TypeVar("T")
# failures.max_skip_share is judged only once a pool has made this many fetches: the first
# few say little about a source (one bad file among the first three is not two thirds).
SHARE_MIN_FETCHES = 100
SKIP = "skipped a chunk (failures.on_error=skip)"
RETRY = "fetch failed, retrying (failures.on_error=retry)"


class FetchTimeout(InputkitError):
    """A fetch took longer than ``failures.fetch_timeout``; the message names the worker."""


class StallError(InputkitError):
    """A stage made no progress for ``failures.stall_timeout`` and ``failures.on_stall=raise``."""


class SkipLimitExceeded(InputkitError):
    """``failures.on_error=skip`` dropped more than its ceiling allows.

    ``key`` is the limit that tripped (``failures.max_consecutive_skips`` or
    ``failures.max_skip_share``); ``skipped_chunks``/``skipped_samples`` count what was
    dropped (samples are known for index-range work) and ``last_error`` is the latest
    error, ``Type: message``.
    """

    def __init__(self, message: str, key: str, skipped_chunks: int, skipped_samples: int,
                 last_error: str) -> None:
        super().__init__(message)
        self.key = key
        self.skipped_chunks = skipped_chunks
        self.skipped_samples = skipped_samples
        self.last_error = last_error

    def __reduce__(self) -> tuple[type, tuple[str, str, int, int, str]]:
        return (type(self), (str(self), self.key, self.skipped_chunks, self.skipped_samples,
                             self.last_error))


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
    max_consecutive_skips: int | None = 100
    max_skip_share: float | None = 0.5


class Skipped(Exception):  # noqa: N818 - a signal between the policy and its pool
    """A fetch failed and ``on_error=skip``: the chunk is dropped, counted and logged."""

    def __init__(self, error: BaseException) -> None:
        super().__init__(f"{type(error).__name__}: {error}")
        self.error = error


def call_with_policy(call: Callable[[], T], policy: FailurePolicy, where: str,
                     stop: Any = None, on_retry: Callable[[BaseException], None] | None = None,
                     repeats: RepeatedLog | None = None) -> T:
    """``call()`` under ``policy``: its result, or the error (raise), or Skipped (skip).

    ``call`` is one fetch and its check, so a bad chunk counts as a failed fetch too.
    SourceExhausted/StopIteration always pass through: the end of an epoch is not an error.
    retry waits ``retry_backoff`` seconds before the first new call and doubles it each
    time, and gives up early when ``stop`` (an Event) is set. Skips and retries are logged
    through ``repeats`` (the pool's: the first of a kind in full, then counted) if given.
    """
    attempt = 0
    while True:
        try:
            return call()
        except (SourceExhausted, StopIteration, KeyboardInterrupt, SystemExit):
            raise
        except Exception as exc:
            if policy.on_error == "skip":
                _log(repeats, logging.WARNING, SKIP, exc,
                     f"{where}: {SKIP}: {type(exc).__name__}: {exc}")
                raise Skipped(exc) from exc
            if policy.on_error != "retry" or attempt >= policy.retries:
                if attempt:
                    _add_note(exc, f"[inputkit] raised again after {attempt} retr"
                                   f"{'y' if attempt == 1 else 'ies'} (failures.retries={policy.retries})")
                raise
            delay = policy.retry_backoff * (2 ** attempt)
            attempt += 1
            _log(repeats, logging.INFO, RETRY, exc,
                 f"{where}: fetch failed ({type(exc).__name__}: {exc}); retry {attempt} of "
                 f"{policy.retries} in {delay:.3g}s")
            if on_retry is not None:
                on_retry(exc)
            if _wait(stop, delay):
                raise


def _log(repeats: RepeatedLog | None, level: int, what: str, exc: BaseException,
         message: str) -> None:
    if repeats is None:
        log.log(level, "%s", message)
    else:
        repeats.log(level, what, type(exc).__name__, message)


def pool_log(where: str) -> RepeatedLog:
    """The rate-limited log of one pool's skips and retries (``where`` names it in summaries)."""
    return RepeatedLog(log, where)


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
    """What a pool's failure policy did: retries, skipped chunks and samples, restarts.

    It also holds skipping to its ceiling: ``skipped()`` returns a SkipLimitExceeded once
    ``policy.max_consecutive_skips`` fetches in a row, or more than ``policy.max_skip_share``
    of all fetches (from SHARE_MIN_FETCHES on), were skipped; the pool fails with it.
    ``where`` names the pool (input, device and source) in that error.
    """

    def __init__(self, policy: FailurePolicy | None = None, where: str = "") -> None:
        self._lock = threading.Lock()
        self._policy = policy or FailurePolicy()
        self._where = where
        self.retries = 0
        self.skipped_chunks = 0
        self.skipped_samples = 0  # known for index-range work; 0 for plain fetch
        self.restarts = 0
        self.last_error = ""
        self._fetched = 0  # fetches that delivered a chunk (empty ones too)
        self._in_a_row = 0  # skips since the last fetch that delivered

    def fetched(self) -> None:
        """A fetch delivered a chunk: the run of skips is broken."""
        with self._lock:
            self._fetched += 1
            self._in_a_row = 0

    def retried(self, error: str) -> None:
        with self._lock:
            self.retries += 1
            self.last_error = error

    def skipped(self, error: str, samples: int = 0) -> SkipLimitExceeded | None:
        """Count a skip (``error``: ``Type: message``); the error to fail with past the ceiling."""
        with self._lock:
            self.skipped_chunks += 1
            self.skipped_samples += samples
            self._in_a_row += 1
            self.last_error = error
            return self._over_limit()

    def _over_limit(self) -> SkipLimitExceeded | None:
        policy, skipped = self._policy, self.skipped_chunks
        fetches = skipped + self._fetched
        samples = f" ({self.skipped_samples:,} samples)" if self.skipped_samples else ""
        limit = policy.max_consecutive_skips
        if limit is not None and self._in_a_row >= limit:
            key = "failures.max_consecutive_skips"
            in_all = f"; {skipped:,} of {fetches:,} fetches skipped in all" \
                if skipped != self._in_a_row else ""
            text = (f"{self._in_a_row} fetches in a row{samples} were skipped "
                    f"(failures.on_error=skip); the limit is {key}={limit}{in_all}")
        elif policy.max_skip_share is not None and fetches >= SHARE_MIN_FETCHES \
                and skipped > policy.max_skip_share * fetches:
            key = "failures.max_skip_share"
            text = (f"{skipped:,} of {fetches:,} fetches ({skipped / fetches:.0%}) were skipped "
                    f"(failures.on_error=skip){samples}; the limit is "
                    f"{key}={policy.max_skip_share:g} (judged from {SHARE_MIN_FETCHES} fetches on)")
        else:
            return None
        where = f"{self._where}: " if self._where else ""
        return SkipLimitExceeded(
            f"{where}{text}; the last error: {self.last_error}. Fix the source (or the data it "
            f"reads), or raise {key} (null: no limit)",
            key=key, skipped_chunks=skipped, skipped_samples=self.skipped_samples,
            last_error=self.last_error)

    def restarted(self, reason: str) -> None:
        with self._lock:
            self.restarts += 1
            self.last_error = reason

    def snapshot(self) -> dict[str, Any]:
        with self._lock:
            return dict(retries=self.retries, skipped_chunks=self.skipped_chunks,
                        skipped_samples=self.skipped_samples, restarts=self.restarts,
                        last_error=self.last_error)

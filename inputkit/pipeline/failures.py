"""Failure policies: what a failed fetch does (raise, skip, retry), shared by every worker kind.

The policy runs where the fetch runs (a worker thread, or inside a worker
process), so a retried or skipped chunk costs no trip to the parent; the pool
counts what happened in its stats. Imports nothing heavy: worker processes load it.
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable, Sequence
from typing import Any, TypeVar

from inputkit.config.records import FailurePolicy  # declared once there; public here too
from inputkit.errors import InputkitError, SourceExhausted
from inputkit.observe.repeats import RepeatedLog

log = logging.getLogger("inputkit.pipeline.failures")
T = TypeVar("T")
# failures.max_skip_share is judged only once a pool has made this many fetches: the first
# few say little about a source (one bad file among the first three is not two thirds).
SHARE_MIN_FETCHES = 100
SKIP = "skipped a chunk (failures.on_error=skip)"
SKIP_SAMPLES = "skipped samples (failures.on_error=skip)"
RETRY = "fetch failed, retrying (failures.on_error=retry)"
# The skipped samples a pool keeps by index with their error (the count goes on past it).
KEPT_SKIPS = 1000
ERROR_CHARS = 200  # a kept error: its first line, cut to this many characters


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


class Skipped(Exception):  # noqa: N818 - a signal between the policy and its pool
    """A fetch failed and ``on_error=skip``: the chunk is dropped, counted and logged."""

    def __init__(self, error: BaseException) -> None:
        super().__init__(f"{type(error).__name__}: {error}")
        self.error = error


def call_with_policy(call: Callable[[], T], policy: FailurePolicy, where: str,
                     stop: Any = None, on_retry: Callable[[BaseException], None] | None = None,
                     repeats: RepeatedLog | None = None, quiet: bool = False) -> T:
    """``call()`` under ``policy``: its result, or the error (raise), or Skipped (skip).

    ``call`` is one fetch and its check, so a bad chunk counts as a failed fetch too.
    SourceExhausted/StopIteration always pass through: the end of an epoch is not an error.
    retry waits ``retry_backoff`` seconds before the first new call and doubles it each
    time, and gives up early when ``stop`` (an Event) is set. Skips and retries are logged
    through ``repeats`` (the pool's: the first of a kind in full, then counted) if given;
    ``quiet`` leaves a skip to the caller to log (per-sample reads log one line per item).
    """
    attempt = 0
    while True:
        try:
            return call()
        except (SourceExhausted, StopIteration, KeyboardInterrupt, SystemExit):
            raise
        except Exception as exc:
            if policy.on_error == "skip":
                if quiet:
                    raise Skipped(exc) from exc
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


def describe(exc: BaseException) -> str:
    """``Type: message`` of a failure, as the pools count and log it."""
    return f"{type(exc).__name__}: {exc}"


def short_error(text: str) -> str:
    """The first line of an error, cut to ERROR_CHARS: what is kept for a skipped sample."""
    lines = text.strip().splitlines()
    line = lines[0] if lines else ""
    return line if len(line) <= ERROR_CHARS else line[:ERROR_CHARS - 3] + "..."


def samples_message(where: str, bad: Sequence[tuple[int, str]], of: int) -> str:
    """One log line for the samples of one item that were skipped: the first three by index."""
    shown = "; ".join(f"sample {index}: {error}" for index, error in bad[:3])
    more = f"; and {len(bad) - 3:,} more" if len(bad) > 3 else ""
    return (f"{where}: skipped {len(bad):,} of {of:,} samples (failures.on_error=skip): "
            f"{shown}{more}")


class FailureTally:
    """What a pool's failure policy did: retries, skipped chunks and samples, restarts.

    It also holds skipping to its ceiling: ``skipped()`` returns a SkipLimitExceeded once
    ``policy.max_consecutive_skips`` fetches in a row, or more than ``policy.max_skip_share``
    of all fetches (from SHARE_MIN_FETCHES on), were skipped; the pool fails with it.
    ``where`` names the pool (input, device and source) in that error.

    ``per_sample`` (index-range work): a bad sample costs only itself, so the ceilings count
    samples: each skipped sample is one skipped fetch and each delivered sample one that
    delivered. A source whose every sample fails trips max_consecutive_skips after that many
    samples, and a chunk of 64 with one bad sample is 1 skip in 64, not 1 in 2. The first
    KEPT_SKIPS skipped samples are kept by index with their error, for stats and summary.json.
    """

    def __init__(self, policy: FailurePolicy | None = None, where: str = "",
                 per_sample: bool = False) -> None:
        self._lock = threading.Lock()
        self._policy = policy or FailurePolicy()
        self._where = where
        self._per_sample = per_sample
        self.retries = 0
        self.skipped_chunks = 0  # fetches dropped whole (index-range: items with no good sample)
        self.skipped_samples = 0  # known for index-range work; 0 for plain fetch
        self.restarts = 0
        self.last_error = ""
        self._indices: list[int] = []  # the first KEPT_SKIPS skipped samples...
        self._errors: list[str] = []  # ...and each one's error (short_error)
        self._skips = 0  # skipped fetches, in the ceilings' unit (samples when per_sample)
        self._fetched = 0  # fetches that delivered a chunk (empty ones too), in the same unit
        self._in_a_row = 0  # skips since the last fetch that delivered

    def fetched(self, samples: int = 1) -> None:
        """A fetch delivered a chunk (of ``samples``, for per-sample counting): the run of skips
        is broken."""
        with self._lock:
            self._fetched += samples if self._per_sample else 1
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
            units = max(1, samples) if self._per_sample else 1
            self._skips += units
            self._in_a_row += units
            self.last_error = error
            return self._over_limit()

    def read_samples(self, bad: Sequence[tuple[int, str]],
                     ok: Sequence[bool]) -> SkipLimitExceeded | None:
        """Count one item read sample by sample: ``bad`` holds ``(index, error)`` for each
        skipped sample, ``ok`` says for each sample in the item's order whether it was
        delivered (they count as delivered fetches here: do not count the chunk again). An item
        with no good sample counts as a skipped chunk. The error to fail with past the ceiling.

        Runs of skips are exact inside the item: the bad samples before its first good one
        extend the current run, and those after its last good one begin the next.
        """
        lead, longest, trail = _bad_runs(ok)
        with self._lock:
            self.skipped_samples += len(bad)
            self._skips += len(bad)
            delivered = sum(map(bool, ok))
            self._fetched += delivered
            if bad:
                self.last_error = bad[-1][1]
            room = KEPT_SKIPS - len(self._indices)
            for index, error in bad[:max(0, room)]:
                self._indices.append(int(index))
                self._errors.append(short_error(error))
            if not delivered:
                self.skipped_chunks += 1
                self._in_a_row += len(bad)
                return self._over_limit() if bad else None
            run = max(self._in_a_row + lead, longest, trail)
            self._in_a_row = trail
            return self._over_limit(run) if bad else None

    def _over_limit(self, run: int | None = None) -> SkipLimitExceeded | None:
        """The error past a ceiling; ``run``: the longest run of skips just seen (default: the
        current one)."""
        run = self._in_a_row if run is None else run
        policy, skipped = self._policy, self._skips
        fetches = skipped + self._fetched
        unit = "samples" if self._per_sample else "fetches"
        samples = f" ({self.skipped_samples:,} samples)" \
            if self.skipped_samples and not self._per_sample else ""
        limit = policy.max_consecutive_skips
        if limit is not None and run >= limit:
            key = "failures.max_consecutive_skips"
            in_all = f"; {skipped:,} of {fetches:,} {unit} skipped in all" \
                if skipped != run else ""
            text = (f"{run:,} {unit} in a row{samples} were skipped "
                    f"(failures.on_error=skip); the limit is {key}={limit}{in_all}")
        elif policy.max_skip_share is not None and fetches >= SHARE_MIN_FETCHES \
                and skipped > policy.max_skip_share * fetches:
            key = "failures.max_skip_share"
            text = (f"{skipped:,} of {fetches:,} {unit} ({skipped / fetches:.0%}) were skipped "
                    f"(failures.on_error=skip){samples}; the limit is "
                    f"{key}={policy.max_skip_share:g} (judged from {SHARE_MIN_FETCHES} {unit} on)")
        else:
            return None
        where = f"{self._where}: " if self._where else ""
        return SkipLimitExceeded(
            f"{where}{text}; the last error: {self.last_error}. Fix the source (or the data it "
            f"reads), or raise {key} (null: no limit)",
            key=key, skipped_chunks=self.skipped_chunks, skipped_samples=self.skipped_samples,
            last_error=self.last_error)

    def restarted(self, reason: str) -> None:
        with self._lock:
            self.restarts += 1
            self.last_error = reason

    def snapshot(self) -> dict[str, Any]:
        with self._lock:
            return dict(retries=self.retries, skipped_chunks=self.skipped_chunks,
                        skipped_samples=self.skipped_samples, restarts=self.restarts,
                        last_error=self.last_error, skipped_indices=tuple(self._indices),
                        skipped_errors=tuple(self._errors))


def _bad_runs(ok: Sequence[bool]) -> tuple[int, int, int]:
    """Runs of False in ``ok``: before the first True, the longest between two Trues, after
    the last True (all of it counts as leading when there is no True)."""
    runs, current = [], 0
    for good in ok:
        if good:
            runs.append(current)
            current = 0
        else:
            current += 1
    if not runs:
        return current, current, current
    return runs[0], max(runs[1:], default=0), current

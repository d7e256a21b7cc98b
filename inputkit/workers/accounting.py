"""What a pool does with the outcome of its worker step, where the step ran in this process.

Thread workers and the inline pool run the one worker step (workers/step.py) in the
consumer's process and account its typed outcome the same way: count the chunk or the
empty fetch, the retries and skips (held to the skip ceiling), and hand index-range
chunks to the dispatcher, telling it which samples are lost. Written once here; each
pool supplies ``_tally``, ``_failures``, ``_repeats``, ``_dispatcher``, ``_states``,
``_source`` and ``_where(wid)``.
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from typing import Any

from inputkit.errors import SourceExhausted, WorkerFailure
from inputkit.pipeline.chunk import Chunk
from inputkit.pipeline.dispatcher import WorkItem
from inputkit.pipeline.failures import SKIP_SAMPLES, samples_message
from inputkit.workers.outcome import (
    Done,
    Empty,
    FetchSkipped,
    Got,
    Outcome,
    SamplesSkipped,
    Stopped,
    error_type,
)

# A worker's state, as the pools' stats and the watchdog read it.
IDLE, FETCHING, BLOCKED, DONE = "idle", "fetching", "blocked", "done"
SETUP = "setup"  # inside the shared source's setup() for this worker id
PHASES = {SETUP: "setup()"}  # states inside a call of the source other than fetch


class OutcomeAccounting:
    """The accounting of outcomes, shared by the thread and inline pools."""

    _tally: Any
    _failures: Any
    _repeats: Any
    _dispatcher: Any
    _states: dict[int, str]
    _source: Any
    _where: Callable[[int], str]  # the worker's description, for errors and logs

    def _fetched(self, wid: int, outcome: Outcome) -> Chunk | None:
        """Account one fetch's outcome: its chunk, or None (empty, skipped); SourceExhausted at
        the end; past the skip ceiling, raise."""
        if type(outcome) is Got:
            chunk = outcome.chunk
            if outcome.retries:
                self._retried(outcome.retries)
            self._tally.fetched(chunk.n, chunk.nbytes, outcome.wall, outcome.cpu)
            self._failures.fetched(chunk.n)
            return chunk
        if type(outcome) is Empty:
            self._retried(outcome.retries)
            self._tally.fetched(0, 0, outcome.wall, outcome.cpu)
            self._failures.fetched(0)
            return None
        if type(outcome) is FetchSkipped:  # logged by the step (it has the pool's log)
            limit = self._failures.skipped(outcome.why)
            if limit is not None:
                raise limit
            return None
        if type(outcome) is Done:
            raise SourceExhausted(self._source.name)
        raise WorkerFailure(f"{self._where(wid)}: unexpected outcome {outcome!r}")

    def _delivered(self, wid: int, item: WorkItem, outcome: Outcome) -> bool:
        """Account what reading ``item`` came to and hand its chunk to the dispatcher; past the
        skip ceiling, raise. False once the pipeline stops."""
        dispatcher = self._dispatcher
        assert dispatcher is not None
        if type(outcome) is Got:
            chunk = outcome.chunk
            self._retried(outcome.retries)
            if outcome.skipped is not None:
                if not self._samples_skipped(wid, item, outcome.skipped):
                    return False
            else:
                self._failures.fetched(chunk.n)
            self._tally.fetched(chunk.n, chunk.nbytes, outcome.wall, outcome.cpu)
            self._states[wid] = BLOCKED
            return dispatcher.deliver(item, chunk, chunk.n, last=True)
        if type(outcome) is SamplesSkipped:
            return self._samples_skipped(wid, item, outcome)
        if type(outcome) is Stopped:
            return False
        raise WorkerFailure(f"{self._where(wid)}: unexpected outcome {outcome!r}")

    def _samples_skipped(self, wid: int, item: WorkItem, skipped: SamplesSkipped) -> bool:
        """Count the samples of ``item`` skipped, and tell the dispatcher which it loses (all of
        them: the item is skipped); past the skip ceiling, raise."""
        dispatcher = self._dispatcher
        assert dispatcher is not None
        bad = skipped.bad
        self._repeats.log(logging.WARNING, SKIP_SAMPLES, error_type(bad[-1][1]),
                          samples_message(self._where(wid), bad, len(skipped.ok)))
        limit = self._failures.read_samples(bad, skipped.ok)
        if limit is not None:
            raise limit
        if skipped.whole_item:
            return dispatcher.skip(item)
        return dispatcher.drop(item, [index for index, _ in bad])

    def _retried(self, retries: tuple[str, ...]) -> None:
        """Count the retries an outcome reports (the step logged them: it has the pool's log)."""
        for text in retries:
            self._failures.retried(text)

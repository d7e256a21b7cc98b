"""What one unit of worker work came to: a typed, picklable outcome.

Every worker kind runs the same step (workers/step.py) and gets one of these back;
process workers send them through their outbox pipe, Ray actors return them, thread
workers hand them to their own pool in the same thread. The parent side dispatches
on the type, never on a position in a tuple.

- :class:`Got`: a chunk, checked and through the processors (with its index field for
  index-range work); for index-range work under ``failures.on_error=skip`` it may
  carry the samples that were skipped (``skipped``), to be accounted before the chunk;
- :class:`InSlot`: a process worker's chunk (or one piece of it) lying in a
  shared-memory slot: the slot and its layout instead of the arrays;
- :class:`Empty`: a fetch returned zero samples;
- :class:`SamplesSkipped`: samples of work item ``seq`` could not be read, each with
  its error; ``ok`` says for each sample of the item whether it is delivered
  (workers/samples.py); when none is, the whole item is skipped;
- :class:`FetchSkipped`: a fetch failed and, under ``on_error=skip``, its chunk is skipped;
- :class:`Done` (:data:`DONE`): the source is exhausted for this worker;
- :class:`Stopped` (:data:`STOPPED`): the pool stopped in the middle; ship nothing;
- :class:`Error`: an exception that crosses a process boundary (the original where it
  pickles, else its type, message and traceback).

``retries`` lists, as ``"Type: message"``, the errors retried under
``on_error=retry`` before the outcome. ``processors`` is the chain's cumulative
snapshot (workers that report it across a boundary, at most twice a second) or None.

Not frozen: like :class:`inputkit.pipeline.chunk.Chunk`, one is made per chunk, and a frozen
dataclass costs twice as much to make. Nothing changes one once made.
"""

from __future__ import annotations

import pickle
import traceback
from dataclasses import dataclass
from typing import Any

from inputkit.pipeline.chunk import Chunk
from inputkit.pipeline.messages import Failure

NO_RETRIES: tuple[str, ...] = ()


@dataclass(slots=True)
class SamplesSkipped:
    """Samples of work item ``seq`` skipped: ``(index, error)`` each in ``bad``, in the
    item's order; ``ok[i]`` whether the item's i-th sample is delivered."""

    seq: int
    bad: list[tuple[int, str]]
    ok: list[bool]
    retries: tuple[str, ...] = NO_RETRIES
    processors: Any = None

    @property
    def whole_item(self) -> bool:
        """No sample of the item was good: the item is skipped, no chunk follows."""
        return not any(self.ok)


@dataclass(slots=True)
class Got:
    """A chunk: ``seq`` is its work item's number (-1 for a fetch); ``wall``/``cpu`` the
    seconds the fetch (or read) and the processors took."""

    chunk: Chunk
    wall: float
    cpu: float
    seq: int = -1
    retries: tuple[str, ...] = NO_RETRIES
    skipped: SamplesSkipped | None = None  # samples of the same item that were skipped
    processors: Any = None


@dataclass(slots=True)
class InSlot:
    """A process worker's chunk, or one piece of it, in shared-memory ``slot``.

    ``in_place``: the source wrote it there itself (``fetch_into``/``read_into``);
    ``last``: the last piece of its fetch or item; the fetch's time comes with the first.
    """

    slot: int
    layout: list[Any]
    n: int
    nbytes: int
    wall: float
    cpu: float
    in_place: bool
    seq: int
    last: bool
    retries: tuple[str, ...] = NO_RETRIES
    processors: Any = None


@dataclass(slots=True)
class Empty:
    """A fetch returned zero samples (counted as a fetch, delivers nothing)."""

    wall: float
    cpu: float
    retries: tuple[str, ...] = NO_RETRIES


@dataclass(slots=True)
class FetchSkipped:
    """A fetch failed and was skipped (``on_error=skip``): ``why`` is ``"Type: message"``."""

    why: str
    retries: tuple[str, ...] = NO_RETRIES


@dataclass(slots=True)
class Done:
    """The source is exhausted for this worker."""


@dataclass(slots=True)
class Stopped:
    """The pool stopped while the work was under way: nothing of it may be shipped."""


DONE = Done()
STOPPED = Stopped()


@dataclass(slots=True)
class Error:
    """An exception raised in a worker, in a form that crosses a process boundary."""

    payload: bytes | None  # the exception pickled, None where it does not round-trip
    type_name: str
    message: str
    traceback_text: str

    @classmethod
    def of(cls, exc: BaseException) -> Error:
        text = "".join(traceback.format_exception(type(exc), exc, exc.__traceback__))
        try:
            payload: bytes | None = pickle.dumps(exc)
            pickle.loads(payload)  # exceptions with a custom __init__ may not round-trip
        except Exception:
            payload = None
        return cls(payload, type(exc).__name__, str(exc), text)

    def failure(self, where: str) -> Failure:
        """The Failure the consumer re-raises (the original exception where it unpickles)."""
        return Failure.from_report(where, self.payload, self.type_name, self.message,
                                   self.traceback_text)


Outcome = Got | InSlot | Empty | SamplesSkipped | FetchSkipped | Done | Stopped | Error


def error_type(text: str) -> str:
    """``OSError`` of ``OSError: message`` (how skips and retries are keyed in the logs)."""
    return text.split(":", 1)[0]

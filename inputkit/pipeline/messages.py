"""Control messages that travel through the queues beside the data.

``END`` marks the end of an input's epoch; a :class:`Failure` carries a stage's
exception, with its traceback text, to the consumer, which re-raises it.
"""

from __future__ import annotations

import pickle
import traceback
from dataclasses import dataclass

from inputkit.errors import WorkerFailure


class _End:
    def __repr__(self) -> str:
        return "END"


END = _End()


@dataclass(frozen=True)
class Failure:
    """An exception raised in a pipeline thread, and where: ``worker 3 of input 'main' on cpu``."""

    exc: BaseException
    where: str
    traceback_text: str

    @classmethod
    def capture(cls, exc: BaseException, where: str) -> Failure:
        text = "".join(traceback.format_exception(type(exc), exc, exc.__traceback__))
        return cls(exc=exc, where=where, traceback_text=text)

    @classmethod
    def from_report(cls, where: str, payload: bytes | None, type_name: str, message: str,
                    text: str) -> Failure:
        """The failure another process reported (workers/outcome.Error): the
        original exception where it unpickles, else a WorkerFailure with its type and message."""
        exc: BaseException | None
        try:
            exc = pickle.loads(payload) if payload is not None else None
        except Exception:
            exc = None
        if exc is None:
            exc = WorkerFailure(f"{type_name}: {message}")
        return cls(exc=exc, where=where, traceback_text=text)

    def reraise(self) -> None:
        """Raise the original exception (same type and message) with a note saying where."""
        text = self.traceback_text.rstrip()
        # A worker process that died has no traceback to send: then the note only says where.
        note = f"[inputkit] raised in {self.where}" + (f"; its traceback:\n{text}" if text else "")
        notes = getattr(self.exc, "__notes__", [])
        if hasattr(self.exc, "add_note") and note not in notes:
            self.exc.add_note(note)
        raise self.exc

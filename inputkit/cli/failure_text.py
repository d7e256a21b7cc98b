"""How the CLI prints an error: the message, where it was raised, what to do next.

A ``SourceError`` or ``ConfigError`` says everything in its message (the file, the
sample, the key), so a worker's traceback under it is inputkit's own plumbing: it is
left out, with one line saying how to get it (``INPUTKIT_TRACEBACK=1`` or
``--traceback``). Any other exception (a bug in a user's fetch, say) keeps its
traceback, which is where its answer is. A bad sample read by a worker or the memory
probe also gets the hint that ``failures.on_error=skip`` skips such samples.
"""

from __future__ import annotations

import os
import re
from typing import Any

TRACEBACK_ENV = "INPUTKIT_TRACEBACK"
TRACEBACK_FLAG = "--traceback"
SKIP_HINT = ("hint: if the data is bad rather than the source, failures.on_error=skip skips the "
             "bad samples and counts them (summary.json lists them) instead of stopping the run")
_WHERE_NOTES = ("[inputkit] raised in worker", "[inputkit] found by the memory planner's probe")
# A note's first line before the traceback it holds: "...; its traceback:", "... the probe's
# traceback:" (the words naming the traceback are dropped with it).
_TRACEBACK_HEAD = re.compile(r"[;,]?\s*(?:its|the probe's)?\s*traceback:$")


def traceback_wanted(argv: list[str]) -> tuple[list[str], bool]:
    """``argv`` without ``--traceback``, and whether a traceback was asked for (the flag, or
    ``INPUTKIT_TRACEBACK`` set to anything but empty or 0)."""
    rest = [a for a in argv if a != TRACEBACK_FLAG]
    env = os.environ.get(TRACEBACK_ENV, "").strip().lower()
    return rest, len(rest) != len(argv) or env not in ("", "0", "false", "no")


def report(err: Any, exc: BaseException, text: str, code: int, traceback: bool) -> int:
    """Print ``error: text``, the exception's notes (tracebacks only where they help, or when
    asked for) and the hints that apply, on ``err``; return ``code``."""
    from inputkit.errors import ConfigError, SourceError

    err.print(f"error: {text}", markup=False)
    notes = [str(n) for n in getattr(exc, "__notes__", [])]
    trim = not traceback and isinstance(exc, (SourceError, ConfigError)) and not _foreign(exc)
    left_out = False
    for note in notes:
        first, newline, _rest = note.partition("\n")
        if trim and newline and _TRACEBACK_HEAD.search(first):
            where = _TRACEBACK_HEAD.sub("", first).strip()
            if where != "[inputkit]":
                err.print(where, markup=False)
            left_out = True
        else:
            err.print(note, markup=False)
    if isinstance(exc, SourceError) and "failures.on_error=skip" not in text and \
            any(n.startswith(_WHERE_NOTES) for n in notes):
        err.print(SKIP_HINT, markup=False)
    if left_out:
        err.print(f"(the traceback is left out: {TRACEBACK_ENV}=1 or {TRACEBACK_FLAG} prints it)",
                  markup=False)
    return code


def _foreign(exc: BaseException) -> bool:
    """Whether an exception that is not inputkit's own caused ``exc`` (its traceback then
    shows where, in the user's code or a library)."""
    seen = set()
    cause = exc.__cause__ or (None if exc.__suppress_context__ else exc.__context__)
    while cause is not None and id(cause) not in seen:
        seen.add(id(cause))
        if not type(cause).__module__.startswith("inputkit."):
            return True
        cause = cause.__cause__ or (None if cause.__suppress_context__ else cause.__context__)
    return False

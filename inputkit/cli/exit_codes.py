"""The CLI's exit codes and its one way of reporting an error, shared by every command.

Its own module so that a command module (``cli/tune.py``) and the typer app that registers
it (``cli/__init__.py``) both import it, instead of the command importing the app's package.
"""

from __future__ import annotations

from typing import Any

EXIT_CONFIG = 2  # a bad config, override or option: the message names the key
EXIT_INTERRUPTED = 130  # Ctrl-C: stopped cleanly
EXIT_TERMINATED = 143  # SIGTERM (a scheduler, `kill`): Ctrl-C's clean path


def report_error(err: Any, exc: BaseException, text: str, code: int,
                 traceback: bool | None = None) -> int:
    """Print ``error: text``, the exception's notes and hints on ``err`` (cli.failure_text) and
    return ``code``; ``traceback`` None: as INPUTKIT_TRACEBACK says."""
    from inputkit.cli.failure_text import report, traceback_wanted

    return report(err, exc, text, code, traceback_wanted([])[1] if traceback is None else traceback)

"""The exceptions a user of inputkit can meet, in one small tree.

Every message names the config key, source or field at fault and says what to
do; the CLI prints them as one line (exit code 2 for configuration errors).
"""

from __future__ import annotations

import os


class InputkitError(Exception):
    """Base class of every error inputkit raises on purpose."""


class ConfigError(InputkitError, ValueError):
    """A configuration value is missing, unknown, of the wrong type or out of range.

    ``key`` is the dotted config path at fault (``workers.count``), so tools can
    point at it; the message already names it.
    """

    def __init__(self, key: str, message: str) -> None:
        self.key = key
        self.message = message
        super().__init__(f"{key}: {message}" if key else message)

    def __reduce__(self) -> tuple[type, tuple[str, str]]:  # survives the trip from a worker process
        return (type(self), (self.key, self.message))


class SourceError(InputkitError):
    """A source returned something that is not a valid chunk of samples.

    ``source`` is the source's name, ``field`` the offending field (or None).
    """

    def __init__(self, source: str, message: str, field: str | None = None) -> None:
        self.source = source
        self.field = field
        self.message = message
        where = f"source '{source}'" + (f", field '{field}'" if field is not None else "")
        super().__init__(f"{where}: {message}")

    def __reduce__(self) -> tuple[type, tuple[str, str, str | None]]:
        return (type(self), (self.source, self.message, self.field))


class SourceExhausted(Exception):  # noqa: N818 - reads as a signal, like StopIteration
    """Raised by a finite source's ``fetch`` when it has no more samples this epoch.

    Each worker that sees it stops; when every worker of a coordinator has
    stopped, the pipeline flushes its last (partial) batch and ends the epoch.
    ``StopIteration`` raised from ``fetch`` means the same.
    """


class WorkerFailure(InputkitError):
    """Carries a worker's exception, with its traceback text, to the consumer."""


class ShutdownError(InputkitError):
    """A thread did not stop within the close timeout (it is named, with its stack)."""


def shown_name(name: str | bytes) -> str:
    """A file or member name for a message: one that is not UTF-8 (``b"caf\\xe9.jpg"``) shows its
    odd bytes escaped (``caf\\xe9.jpg``), so the message prints and serializes anywhere."""
    return os.fsencode(name).decode("utf-8", "backslashreplace")

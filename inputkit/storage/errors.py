"""The one error the storage layer raises: which URL failed, how (``kind``), and what to do."""

from __future__ import annotations

from inputkit.errors import SourceError

KINDS = ("not_found", "denied", "unreachable", "transient", "other")


class StorageError(SourceError):
    """Reading ``url`` failed. ``kind`` is one of not_found, denied, unreachable, transient, other.

    not_found and denied are never retried; unreachable and transient are retried first, so
    seeing them means the retries (counted in ``storage.stats()``) ran out. ``key`` is the
    config key that named the URL, where known.
    """

    def __init__(self, url: str, kind: str, message: str, key: str | None = None) -> None:
        if kind not in KINDS:
            raise ValueError(f"StorageError kind must be one of {KINDS}, got {kind!r}")
        self.url = url
        self.kind = kind
        self.key = key
        self.source = url
        self.field = None
        self.message = message
        where = f"{key}: " if key else ""
        Exception.__init__(self, f"{where}{url}: {message}")

    def __reduce__(self) -> tuple[type, tuple[str, str, str, str | None]]:  # type: ignore[override]
        return (type(self), (self.url, self.kind, self.message, self.key))

"""Which store failures are worth another try, and the retry loop that counts every one.

obstore's own retries are switched off (``max_retries=0``) so that each retry passes through
here: counted in ``storage.stats()``, backed off with full jitter, and bounded so that an
endpoint that does not answer fails within ``storage.connect_timeout_s``.
"""

from __future__ import annotations

import asyncio
import random
import re
import time
from collections.abc import Awaitable, Callable
from typing import TypeVar

from inputkit.storage import counters
from inputkit.storage.errors import StorageError
from inputkit.storage.settings import StorageSettings

T = TypeVar("T")
MAX_BACKOFF_S = 10.0
_STATUS = re.compile(r"status code: (\d{3})")
_TRANSIENT_WORDS = ("kind: Timeout", "kind: Request", "kind: Body", "kind: Decode",
                    "connection reset", "Connection reset", "broken pipe", "Broken pipe",
                    "timed out", "incomplete", "IncompleteMessage", "connection closed",
                    "error reading a body", "unexpected EOF", "SlowDown", "Throttl")


class LocalFailure(Exception):
    """A local OSError inside a request (writing a download to the cache disk): not the
    store's doing, so never classified (a read-only cache folder is not "access denied;
    check the credentials", a full disk not "the store refused"), never retried, raised as
    the OSError itself with a note naming the URL."""

    def __init__(self, error: OSError, url: str) -> None:
        super().__init__(str(error))
        self.error = error
        error.add_note(f"while writing the download of {url} to the local disk; free space "
                       "in cache.dir or point cache.dir at a writable folder")


def classify(exc: BaseException) -> str:
    """The StorageError kind of a client exception: not_found, denied, unreachable (the
    endpoint refused or never answered the connection), transient (5xx, 429, throttling,
    resets, timeouts) or other."""
    if isinstance(exc, StorageError):
        return exc.kind
    text = str(exc)
    name = type(exc).__name__
    if isinstance(exc, FileNotFoundError) or name == "NotFoundError":
        return "not_found"
    if name in ("PermissionDeniedError", "UnauthenticatedError") or isinstance(exc,
                                                                               PermissionError):
        return "denied"
    status = _STATUS.search(text)
    if status:
        code = int(status.group(1))
        if code == 404:
            return "not_found"
        if code in (401, 403):
            return "denied"
        if code in (408, 429) or code >= 500:
            return "transient"
        return "other"
    if "kind: Connect" in text or "Connection refused" in text or "dns error" in text:
        return "unreachable"
    if isinstance(exc, (TimeoutError, ConnectionError)) or \
            any(word in text for word in _TRANSIENT_WORDS):
        return "transient"
    return "other"


def describe(exc: BaseException, kind: str) -> str:
    """What went wrong and what to do, in one line (the client's multi-line debug dump cut)."""
    text = str(exc)
    first = text.split("\n\nDebug source:", 1)[0].strip()
    first = re.sub(r":?\s*<\?xml.*", "", first, flags=re.S).strip() or type(exc).__name__
    code = re.search(r"<Code>(\w+)</Code>", text)
    if code:
        first += f" ({code.group(1)})"
    advice = {
        "not_found": "no such object or bucket; check the URL (and storage.endpoint / "
                     "AWS_ENDPOINT_URL for an S3-compatible server)",
        "denied": "access denied; check the credentials (AWS_ACCESS_KEY_ID / "
                  "AWS_SECRET_ACCESS_KEY / AWS_PROFILE, GOOGLE_APPLICATION_CREDENTIALS, "
                  "AZURE_STORAGE_*) or set storage.anonymous=true for a public bucket",
        "unreachable": "the endpoint does not answer; check storage.endpoint / "
                       "AWS_ENDPOINT_URL and the network, or raise storage.connect_timeout_s",
        "transient": "the store kept failing; raise storage.retries or storage.backoff_s, "
                     "or lower storage.concurrency if it throttles",
        "other": "the store refused the request",
    }[kind]
    return f"{advice} ({first[:300]})"


def backoff(attempt: int, first_s: float) -> float:
    """Full-jitter exponential backoff: uniform in [0, min(10 s, first_s * 2**attempt)]."""
    return random.uniform(0.0, min(MAX_BACKOFF_S, first_s * (2 ** attempt)))


class _Attempts:
    """The bookkeeping of one request's tries: what to raise, how long to wait before the next."""

    def __init__(self, url: str, cfg: StorageSettings) -> None:
        self.url = url
        self.cfg = cfg
        self.tries = 0
        self.unreachable_since: float | None = None

    def next_wait(self, exc: BaseException) -> float:
        """Seconds to wait before trying again, or raise the StorageError that ends it."""
        kind = classify(exc)
        now = time.monotonic()
        if kind == "unreachable":
            if self.unreachable_since is None:
                self.unreachable_since = now
            out_of_time = now - self.unreachable_since >= self.cfg.connect_timeout_s
        else:
            self.unreachable_since = None
            out_of_time = False
        retryable = kind == "transient" or kind == "unreachable"
        # an unreachable endpoint is bounded by time (connect_timeout_s), not by a count: a
        # store that comes back within it loses no read, however fast the refusals come
        spent = out_of_time if kind == "unreachable" else self.tries >= self.cfg.retries
        if not retryable or spent:
            counters.add("errors")
            message = describe(exc, kind)
            if retryable and self.tries:
                message += f"; gave up after {self.tries} retries"
            raise StorageError(self.url, kind, message) from exc
        wait = backoff(self.tries, self.cfg.backoff_s)
        if kind == "unreachable":  # look again at least every second, never past the deadline
            left = self.cfg.connect_timeout_s - (now - self.unreachable_since)  # type: ignore[operator]
            wait = max(0.0, min(wait, left, 1.0))
        self.tries += 1
        counters.add("retries")
        return wait


def call(url: str, cfg: StorageSettings, request: Callable[[], T]) -> T:
    """Run ``request`` (one call into the client) with counted retries; raise StorageError."""
    attempts = _Attempts(url, cfg)
    while True:
        counters.add("requests")
        counters.add("in_flight")
        try:
            return request()
        except LocalFailure as exc:
            raise exc.error from None
        except Exception as exc:  # noqa: BLE001 - every client failure is classified
            wait = attempts.next_wait(exc)
        finally:
            counters.add("in_flight", -1)
        time.sleep(wait)


async def call_async(url: str, cfg: StorageSettings, request: Callable[[], Awaitable[T]]) -> T:
    """``call`` for a coroutine-returning request."""
    attempts = _Attempts(url, cfg)
    while True:
        counters.add("requests")
        counters.add("in_flight")
        try:
            return await request()
        except LocalFailure as exc:
            raise exc.error from None
        except Exception as exc:  # noqa: BLE001 - every client failure is classified
            wait = attempts.next_wait(exc)
        finally:
            counters.add("in_flight", -1)
        await asyncio.sleep(wait)

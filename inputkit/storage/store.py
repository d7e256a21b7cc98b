"""One object store per scheme + bucket (or host) + settings, over obstore.

A Store pickles as its base URL and settings; the client is rebuilt lazily in each process,
so a source holding one can travel to a worker process. Every request goes through
``retry.call`` (counted, backed off, bounded) and is counted in ``storage.stats()``. How each
cloud's client is configured lives in ``clients.py``; the process's bound on requests in
flight in ``request_gate.py``.
"""

from __future__ import annotations

import asyncio
import bisect
import contextlib
import os
import threading
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

from inputkit.storage import clients, counters, retry
from inputkit.storage.clients import obstore_module
from inputkit.storage.errors import StorageError
from inputkit.storage.request_gate import acquire, request_slots, run_async
from inputkit.storage.settings import StorageSettings, settings
from inputkit.storage.urls import Location, parse


@dataclass(frozen=True)
class ObjectInfo:
    """One object: its full URL, size in bytes and entity tag (None where the store has none)."""

    url: str
    size: int
    etag: str | None


class Store:
    """Reads objects under one base URL (``s3://bucket``, ``https://host:port``)."""

    kind = "store"

    def __init__(self, base: Location, cfg: StorageSettings) -> None:
        self.base = base
        self.settings = cfg
        self._client: Any = None
        self._lock = threading.Lock()

    def __reduce__(self) -> tuple[Any, tuple[str, StorageSettings]]:
        return (_rebuild, (self.base.base + "/", self.settings))

    def __repr__(self) -> str:
        return f"{type(self).__name__}({self.base.base!r})"

    # the client -------------------------------------------------------------------------------

    def client(self) -> Any:
        """The obstore store, built on first use in this process."""
        if self._client is None:
            with self._lock:
                if self._client is None:
                    self._client = self._build()
        return self._client

    def _build(self) -> Any:
        raise NotImplementedError(f"{type(self).__name__} does not build a client")

    # requests ---------------------------------------------------------------------------------

    def _path(self, url: str) -> str:
        where = parse(url)
        if where.base != self.base.base:
            raise ValueError(f"{url} is not in the store {self.base.base}")
        return where.key

    def _call(self, url: str, request: Any) -> Any:
        with request_slots(self.settings.concurrency):
            return retry.call(url, self.settings, request)

    def list(self, url_prefix: str) -> list[ObjectInfo]:
        """Every object whose URL starts with ``url_prefix``, sorted by URL."""
        obs = obstore_module()
        key = self._path(url_prefix)
        folder = key.rsplit("/", 1)[0] if "/" in key else ""
        client = self.client()

        def listing() -> list[dict[str, Any]]:
            from inputkit.startup import progress

            metas: list[dict[str, Any]] = []
            for batch in obs.list(client, prefix=folder or None):
                metas += batch  # a page of up to 1,000: start-up shows the count as it grows
                progress(len(metas), "objects", f"listing {url_prefix}")
            return metas

        found = sorted((self._info(meta) for meta in self._call(url_prefix, listing)),
                       key=lambda info: info.url)
        urls = [info.url for info in found]
        return [info for info in found if info.url.startswith(url_prefix)
                and not (info.size == 0 and self._is_marker(info.url, urls))]

    def _is_marker(self, url: str, urls: list[str]) -> bool:
        """Whether a listed empty object is a "folder" marker (``data/sub/``, made by a
        console's "create folder"): the client lists it without its slash, and that name
        answers 404, so a glob or a prefix would hand a source a URL nobody can read. One
        with objects below it (``urls``, sorted) is a marker without asking; an empty
        folder's costs one HEAD."""
        below = bisect.bisect_left(urls, url + "/")
        if below < len(urls) and urls[below].startswith(url + "/"):
            return True
        obs = obstore_module()
        path, client = self._path(url), self.client()

        def probe() -> bool:
            try:
                obs.head(client, path)
            except Exception as exc:  # noqa: BLE001 - a 404 is the answer, not an error
                if retry.classify(exc) == "not_found":
                    return True
                raise
            return False

        return bool(self._call(url, probe))

    def head(self, url: str) -> ObjectInfo:
        """The object's size and etag (one HEAD request)."""
        obs = obstore_module()
        path, client = self._path(url), self.client()
        return self._info(self._call(url, lambda: obs.head(client, path)))

    def read(self, url: str) -> bytes:
        """The whole object."""
        obs = obstore_module()
        path, client = self._path(url), self.client()
        with counters.waiting():
            data = self._call(url, lambda: bytes(obs.get(client, path).bytes()))
        counters.add("bytes_read", len(data))
        return data

    def read_range(self, url: str, start: int, length: int) -> bytes:
        """``length`` bytes from ``start``; a range past the object's end is an error."""
        _check_range(url, start, length)
        obs = obstore_module()
        path, client = self._path(url), self.client()
        with counters.waiting():
            data = self._call(url, lambda: bytes(obs.get_range(client, path, start=start,
                                                                   length=length)))
        _check_length(url, start, length, len(data))
        counters.add("bytes_read", len(data))
        return data

    def read_ranges(self, url: str, starts: Sequence[int], lengths: Sequence[int]) -> list[bytes]:
        """Several ranges of one object, fetched concurrently (near ranges coalesced)."""
        if len(starts) != len(lengths):
            raise ValueError(f"read_ranges({url}): {len(starts)} starts but {len(lengths)} lengths")
        for start, length in zip(starts, lengths, strict=True):
            _check_range(url, start, length)
        if not starts:
            return []
        obs = obstore_module()
        path, client = self._path(url), self.client()
        with counters.waiting():
            parts = self._call(url, lambda: [bytes(b) for b in obs.get_ranges(
                client, path, starts=list(starts), lengths=list(lengths))])
        for start, length, part in zip(starts, lengths, parts, strict=True):
            _check_length(url, start, length, len(part))
        counters.add("bytes_read", sum(len(p) for p in parts))
        return parts

    def read_many(self, urls: Sequence[str]) -> list[bytes | StorageError]:
        """Many whole objects, up to ``storage.concurrency`` in flight; each failure is returned
        in its place as a StorageError (retries done), so one bad object fails alone."""
        if not urls:
            return []
        obs = obstore_module()
        client = self.client()
        paths = [self._path(u) for u in urls]
        with counters.waiting():
            return run_async(lambda: self._gather(obs, client, list(urls), paths))

    async def _gather(self, obs: Any, client: Any, urls: list[str],
                      paths: list[str]) -> list[bytes | StorageError]:
        gate = asyncio.Semaphore(self.settings.concurrency)
        # the process's gate too: several threads each in read_many (thread workers) or
        # beside blocking reads must together keep storage.concurrency requests in flight
        slots = request_slots(self.settings.concurrency)

        async def one(url: str, path: str) -> bytes | StorageError:
            async def request() -> bytes:
                response = await obs.get_async(client, path)
                return bytes(await response.bytes_async())

            async with gate:
                await acquire(slots)
                try:
                    data = await retry.call_async(url, self.settings, request)
                except StorageError as exc:
                    return exc
                finally:
                    slots.release()
            counters.add("bytes_read", len(data))
            return data

        return list(await asyncio.gather(*(one(u, p) for u, p in zip(urls, paths, strict=True))))

    def download(self, url: str, dest_path: str, etag: str | None = None) -> int:
        """Stream the object into ``dest_path`` (written under a temporary name, size-checked,
        then renamed: never a partial file at ``dest_path``); return the bytes written.

        ``etag``: the version the caller listed and indexed. The store then sends only that
        version (If-Match): an object replaced since, even by one of the same size, is a
        StorageError naming the URL, never other bytes under an index built for the old ones.
        """
        obs = obstore_module()
        path, client = self._path(url), self.client()
        partial = f"{dest_path}.part-{os.getpid()}-{threading.get_ident()}"
        # a web server's etags may be weak (W/"..."), which If-Match never matches
        options = {"if_match": etag} if etag and self.kind != "http" else None

        def fetch() -> int:
            try:
                response = obs.get(client, path, options=options)
            except Exception as exc:
                if type(exc).__name__ == "PreconditionError":
                    raise StorageError(url, "other", f"changed in the store since it was listed "
                                       f"(etag {etag} was listed); start again to list and "
                                       "index it anew") from exc
                raise
            expected = int(response.meta["size"])
            written = 0
            out = _local(url, lambda: open(partial, "wb"))
            try:
                for chunk in response.stream(min_chunk_size=8 * 2**20):
                    _local(url, lambda chunk=chunk: out.write(chunk))
                    written += len(chunk)
                    counters.add("bytes_read", len(chunk))
                _local(url, out.close)
                if written != expected:
                    raise ConnectionError(f"body ended after {written} of {expected} bytes "
                                          "(connection reset)")
            except BaseException:
                with contextlib.suppress(OSError):
                    out.close()
                _unlink(partial)
                raise
            return written

        written = self._call(url, fetch)
        os.replace(partial, dest_path)
        return written

    def _info(self, meta: dict[str, Any]) -> ObjectInfo:
        etag = meta.get("e_tag")
        return ObjectInfo(self.base.url(meta["path"]), int(meta["size"]),
                          etag.strip('"') if etag else None)


class S3Store(Store):
    """s3:// (and S3-compatible servers via AWS_ENDPOINT_URL or storage.endpoint)."""

    kind = "s3"

    def _build(self) -> Any:
        return clients.s3_client(self.base, self.settings)


class GCSStore(Store):
    """gs:// (credentials: GOOGLE_APPLICATION_CREDENTIALS / GOOGLE_SERVICE_ACCOUNT*)."""

    kind = "gcs"

    def _build(self) -> Any:
        return clients.gcs_client(self.base, self.settings)


class AzureStore(Store):
    """az:// azure:// abfs[s]:// (AZURE_STORAGE_ACCOUNT_NAME / _KEY / _CONNECTION_STRING / SAS)."""

    kind = "azure"

    def _build(self) -> Any:
        return clients.azure_client(self.base, self.settings)


class HTTPStore(Store):
    """http:// https:// (plain GETs and ranged GETs; a web server cannot be listed)."""

    kind = "http"

    def _build(self) -> Any:
        return clients.http_client(self.base, self.settings)

    def list(self, url_prefix: str) -> list[ObjectInfo]:
        """Refused: a web server has no listing; name the files (brace ranges expand locally)."""
        raise StorageError(url_prefix, "other", "an http(s) server cannot be listed; name the "
                           "files, e.g. with a brace range 'shard-{000..127}.tar'")


_KINDS: dict[str, type[Store]] = {"s3": S3Store, "gcs": GCSStore, "azure": AzureStore,
                                  "http": HTTPStore}
_open: dict[tuple[str, str], Store] = {}
_ENV_PREFIXES = ("AWS_", "GOOGLE_", "AZURE_")
_open_lock = threading.Lock()


def open_store(url: str) -> Store:
    """The store that holds ``url`` under the current settings (one per scheme + bucket/host +
    settings in this process)."""
    return _store_for(url, settings()[0])


def _store_for(url: str, cfg: StorageSettings) -> Store:
    where = parse(url)
    root = Location(where.kind, where.scheme, where.bucket, "")
    # the environment's credentials and endpoints too: a store built before they changed
    # must not answer for the new ones
    env = sorted((k, v) for k, v in os.environ.items() if k.startswith(_ENV_PREFIXES))
    key = (root.base, repr((cfg, env)))
    with _open_lock:
        store = _open.get(key)
        if store is None:
            store = _open[key] = _KINDS[where.kind](root, cfg)
        return store


def _rebuild(base_url: str, cfg: StorageSettings) -> Store:
    return _store_for(base_url, cfg)


def _check_range(url: str, start: int, length: int) -> None:
    if start < 0 or length < 0:
        raise ValueError(f"{url}: a range needs start >= 0 and length >= 0, got {start}, {length}")


def _check_length(url: str, start: int, length: int, got: int) -> None:
    if got != length:
        raise StorageError(url, "other", f"asked for {length} bytes at {start}, got {got}: the "
                           "object is shorter than the index says; rebuild the index (it may "
                           "have changed)")


def _local(url: str, step: Any) -> Any:
    """Run one local file step of a download; an OSError there is the disk's (see
    retry.LocalFailure), kept apart from the store's failures."""
    try:
        return step()
    except OSError as exc:
        raise retry.LocalFailure(exc, url) from exc


def _unlink(path: str) -> None:
    try:
        os.remove(path)
    except FileNotFoundError:
        pass

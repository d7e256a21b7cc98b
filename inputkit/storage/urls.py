"""What a remote URL names: its scheme, the store (bucket or host) and the object's key.

Parsing a URL is its own module because both sides need it and must not need each other: the
store (``storage/store.py``) parses the URLs it is asked for, and the pattern expansion
(``storage/locations.py``) parses a glob's URL before it lists the store. No client is
imported here.
"""

from __future__ import annotations

import re
from dataclasses import dataclass

from inputkit.storage.errors import StorageError

#: scheme -> the kind of store that serves it
SCHEMES = {
    "s3": "s3", "s3a": "s3",
    "gs": "gcs", "gcs": "gcs",
    "az": "azure", "azure": "azure", "abfs": "azure", "abfss": "azure",
    "http": "http", "https": "http",
}
_SCHEME = re.compile(r"^([A-Za-z][A-Za-z0-9+.-]*)://")


@dataclass(frozen=True)
class Location:
    """A remote URL split into what picks the store (``kind``, ``scheme``, ``bucket``) and the
    object's ``key`` inside it. For http(s) the bucket is ``host[:port]``."""

    kind: str
    scheme: str
    bucket: str
    key: str

    @property
    def base(self) -> str:
        """The URL of the store's root: ``s3://bucket``, ``https://host:port``."""
        return f"{self.scheme}://{self.bucket}"

    def url(self, key: str) -> str:
        """The URL of ``key`` in the same store."""
        return f"{self.base}/{key}"


def is_remote(path: str) -> bool:
    """True for a URL a store serves (s3, gs, az/azure/abfs[s], http[s]); False for a local path.

    Any other ``scheme://`` is neither: ``parse`` refuses it naming the schemes it knows."""
    match = _SCHEME.match(path) if isinstance(path, str) else None
    return match is not None and match.group(1).lower() in SCHEMES


def has_scheme(path: str) -> bool:
    """True when ``path`` starts with some ``scheme://``, known or not."""
    return isinstance(path, str) and _SCHEME.match(path) is not None


def parse(url: str, key: str | None = None) -> Location:
    """Split ``url`` into its store and object key; an unknown scheme or a missing bucket is a
    StorageError naming the URL (and ``key``, the config key that set it)."""
    match = _SCHEME.match(url)
    if match is None:
        raise StorageError(url, "other", "not a URL; remote data is written scheme://bucket/path "
                           f"(schemes: {', '.join(sorted(SCHEMES))})", key)
    scheme = match.group(1).lower()
    if scheme not in SCHEMES:
        raise StorageError(url, "other", f"unknown scheme '{scheme}://'; use one of "
                           f"{', '.join(s + '://' for s in sorted(SCHEMES))} or a local path", key)
    rest = url[match.end():]
    bucket, _, object_key = rest.partition("/")
    if not bucket:
        what = "host" if SCHEMES[scheme] == "http" else "bucket (or container)"
        raise StorageError(url, "other", f"names no {what}; write {scheme}://<{what.split()[0]}>/"
                           "<path>", key)
    return Location(SCHEMES[scheme], scheme, bucket, object_key)

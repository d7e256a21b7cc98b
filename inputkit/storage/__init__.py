"""Where data lives: local paths and s3://, gs://, az://, http(s):// objects behind one small API.

Local paths never import a client; obstore is imported only when a remote URL is read.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from inputkit.storage.counters import stats
from inputkit.storage.errors import StorageError
from inputkit.storage.locations import expand
from inputkit.storage.settings import (
    CacheSettings,
    StorageSettings,
    cache_dir,
    configure,
    settings,
)
from inputkit.storage.urls import is_remote

if TYPE_CHECKING:
    from inputkit.storage.store import ObjectInfo, Store

__all__ = ["CacheSettings", "ObjectInfo", "Store", "StorageError", "StorageSettings", "cache_dir",
           "configure", "expand", "is_remote", "open_store", "settings", "stats"]


def open_store(url: str) -> Store:
    """The Store that holds ``url`` (see ``inputkit.storage.store``)."""
    from inputkit.storage.store import open_store as _open

    return _open(url)


def __getattr__(name: str) -> Any:
    if name in ("ObjectInfo", "Store"):
        from inputkit.storage import store

        return getattr(store, name)
    raise AttributeError(f"module 'inputkit.storage' has no attribute {name!r}")

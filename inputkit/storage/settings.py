"""The process's storage and cache settings: from the config's ``storage`` and ``cache`` groups,
else defaults plus the standard environment variables.

``configure`` also writes them into the environment (``INPUTKIT_STORAGE_SETTINGS``), so worker
processes, forked or spawned, read the same settings as their parent without any change to
the worker protocols.
"""

from __future__ import annotations

import contextlib
import dataclasses
import json
import math
import os
import shutil
import threading
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

from inputkit.config.sizes import parse_size
from inputkit.errors import ConfigError

ENV_SETTINGS = "INPUTKIT_STORAGE_SETTINGS"
SETTINGS_FILE = "settings.json"
#: the cache's budget when cache.max_bytes is null: a demanding user's default (a few epochs
#: of an ImageNet-sized shard set), but never more than half the free space of its disk
DEFAULT_MAX_BYTES = 20 * 2**30


@dataclass(frozen=True)
class StorageSettings:
    """How to reach the store. None means "what the environment says" (AWS_ENDPOINT_URL,
    AWS_REGION, ...)."""

    endpoint: str | None = None
    region: str | None = None
    anonymous: bool = False
    concurrency: int = 32          # requests in flight per process
    timeout_s: float = 60.0        # one request, start to last byte
    connect_timeout_s: float = 10.0  # an endpoint that does not answer fails within this
    retries: int = 8               # transient failures retried per request, each counted
    backoff_s: float = 0.2         # first backoff; doubles up to 10 s, with full jitter
    options: dict[str, str] = field(default_factory=dict)  # passed to the client as config


@dataclass(frozen=True)
class CacheSettings:
    """Where downloaded shards live on local disk and how much of it they may take."""

    dir: str = ""
    max_bytes: int = DEFAULT_MAX_BYTES
    read_ahead: int = 4            # shards fetched ahead of need, per worker


_current: tuple[StorageSettings, CacheSettings] | None = None


def default_cache_dir() -> str:
    """$INPUTKIT_CACHE_DIR, else $XDG_CACHE_HOME/inputkit, else ~/.cache/inputkit."""
    if os.environ.get("INPUTKIT_CACHE_DIR"):
        return os.environ["INPUTKIT_CACHE_DIR"]
    base = os.environ.get("XDG_CACHE_HOME") or os.path.join(os.path.expanduser("~"), ".cache")
    return os.path.join(base, "inputkit")


def free_bytes(path: str) -> int:
    """Free space of the disk that holds ``path`` (or would, once created)."""
    probe = os.path.abspath(path)
    while not os.path.exists(probe):
        parent = os.path.dirname(probe)
        if parent == probe:
            break
        probe = parent
    return shutil.disk_usage(probe).free


def configure(storage_cfg: Mapping[str, Any] | None, cache_cfg: Mapping[str, Any] | None) -> None:
    """Set this process's settings (and its future workers') from the config groups; a bad
    value is a ConfigError naming ``storage.X`` or ``cache.X``."""
    global _current
    current = (storage_settings(storage_cfg), cache_settings(cache_cfg))
    _current = current
    text = json.dumps([dataclasses.asdict(current[0]), dataclasses.asdict(current[1])])
    os.environ[ENV_SETTINGS] = text  # spawned and forked workers
    # a forkserver started earlier passes on its own (older) environment, but the run's
    # folder it names is this process's for its whole life: the latest settings live there
    from inputkit.storage import counters

    path = os.path.join(counters.prepare(own=True), SETTINGS_FILE)
    temp = f"{path}.{os.getpid()}.{threading.get_ident()}.tmp"  # runs configured from threads
    with open(temp, "w") as out:
        out.write(text)
    os.replace(temp, path)


def settings() -> tuple[StorageSettings, CacheSettings]:
    """The current settings: those ``configure`` set here or in the parent process, else the
    defaults."""
    global _current
    if _current is None:
        inherited = _parents_settings() or os.environ.get(ENV_SETTINGS)
        if inherited:
            storage, cache = json.loads(inherited)
            _current = (StorageSettings(**storage), CacheSettings(**cache))
        else:
            _current = (storage_settings(None), cache_settings(None))
    return _current


def _parents_settings() -> str | None:
    """The settings the process that owns this run's folder configured last, if any."""
    from inputkit.storage.counters import ENV_DIR

    folder = os.environ.get(ENV_DIR)
    if not folder:
        return None
    try:
        with open(os.path.join(folder, SETTINGS_FILE)) as handle:
            return handle.read()
    except FileNotFoundError:
        return None


def cache_dir() -> str:
    """The folder downloaded objects are cached in (created by the cache when first used)."""
    return settings()[1].dir


def reset() -> None:
    """Forget configured settings (tests; a new run in the same process calls configure)."""
    global _current
    _current = None
    os.environ.pop(ENV_SETTINGS, None)
    from inputkit.storage.counters import ENV_DIR

    if os.environ.get(ENV_DIR):
        with contextlib.suppress(FileNotFoundError):
            os.remove(os.path.join(os.environ[ENV_DIR], SETTINGS_FILE))


def storage_settings(storage_cfg: Mapping[str, Any] | None) -> StorageSettings:
    """The config's ``storage`` group checked (a ConfigError names ``storage.X``)."""
    cfg = dict(storage_cfg or {})
    known = {f.name for f in dataclasses.fields(StorageSettings)}
    _refuse_unknown(cfg, known, "storage")
    defaults = StorageSettings()
    endpoint = cfg.get("endpoint")
    if endpoint is not None and (not isinstance(endpoint, str) or "://" not in endpoint):
        raise ConfigError("storage.endpoint", f"expected a URL such as http://127.0.0.1:9000, "
                          f"got {endpoint!r}")
    region = cfg.get("region")
    if region is not None and not isinstance(region, str):
        raise ConfigError("storage.region", f"expected a region name such as us-east-1, got "
                          f"{region!r}")
    anonymous = cfg.get("anonymous", defaults.anonymous)
    if not isinstance(anonymous, bool):
        raise ConfigError("storage.anonymous", f"expected true or false, got {anonymous!r}")
    options = cfg.get("options") or {}
    if not isinstance(options, Mapping) or not all(isinstance(k, str) for k in options):
        raise ConfigError("storage.options", f"expected a mapping of client option names to "
                          f"values, got {options!r}")
    return StorageSettings(
        endpoint=endpoint or None, region=region or None, anonymous=anonymous,
        concurrency=_int(cfg, "concurrency", defaults.concurrency, 1, "storage"),
        timeout_s=_seconds(cfg, "timeout_s", defaults.timeout_s, "storage"),
        connect_timeout_s=_seconds(cfg, "connect_timeout_s", defaults.connect_timeout_s,
                                   "storage"),
        retries=_int(cfg, "retries", defaults.retries, 0, "storage"),
        backoff_s=_seconds(cfg, "backoff_s", defaults.backoff_s, "storage", allow_zero=True),
        options={str(k): str(v) for k, v in options.items()})


def cache_settings(cache_cfg: Mapping[str, Any] | None) -> CacheSettings:
    """The config's ``cache`` group checked (a ConfigError names ``cache.X``); a null
    max_bytes becomes 20GiB or half the free space of the cache's disk, whichever is less."""
    cfg = dict(cache_cfg or {})
    known = {f.name for f in dataclasses.fields(CacheSettings)}
    _refuse_unknown(cfg, known, "cache")
    folder = cfg.get("dir")
    if folder is not None and (not isinstance(folder, str) or not folder):
        raise ConfigError("cache.dir", f"expected a folder path, got {folder!r}")
    folder = os.path.abspath(os.path.expanduser(folder)) if folder else default_cache_dir()
    raw = cfg.get("max_bytes")
    if raw is None:
        max_bytes = min(DEFAULT_MAX_BYTES, free_bytes(folder) // 2)
        if max_bytes <= 0:
            raise ConfigError("cache.max_bytes", f"the disk of cache.dir '{folder}' has no free "
                              "space; free some or point cache.dir at another disk")
    else:
        max_bytes = parse_size(raw, "cache.max_bytes")
    return CacheSettings(dir=folder, max_bytes=max_bytes,
                         read_ahead=_int(cfg, "read_ahead", CacheSettings.read_ahead, 0, "cache"))


def _refuse_unknown(cfg: Mapping[str, Any], known: set[str], group: str) -> None:
    unknown = sorted(set(cfg) - known)
    if unknown:
        raise ConfigError(f"{group}.{unknown[0]}", f"unknown key; {group} takes "
                          f"{', '.join(sorted(known))}")


def _int(cfg: Mapping[str, Any], name: str, default: int, least: int, group: str) -> int:
    value = cfg.get(name)
    if value is None:
        return default
    if isinstance(value, bool) or not isinstance(value, int) or value < least:
        raise ConfigError(f"{group}.{name}", f"expected a whole number >= {least}, got {value!r}")
    return value


def _seconds(cfg: Mapping[str, Any], name: str, default: float, group: str,
             allow_zero: bool = False) -> float:
    value = cfg.get(name)
    if value is None:
        return default
    ok = isinstance(value, (int, float)) and not isinstance(value, bool) and math.isfinite(value)
    if not ok or value < 0 or (value == 0 and not allow_zero):
        least = ">= 0" if allow_zero else "> 0"
        raise ConfigError(f"{group}.{name}", f"expected seconds {least}, got {value!r}")
    return float(value)

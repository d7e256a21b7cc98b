"""Build a source from its config: import ``_target_``, construct it, check it can fetch."""

from __future__ import annotations

import functools
import importlib
import inspect
import logging
import pickle
from collections.abc import Callable, Mapping
from dataclasses import InitVar, dataclass, field
from typing import Any

from inputkit.errors import ConfigError
from inputkit.sources.capabilities import NONE, Capabilities, capabilities_of
from inputkit.sources.protocol import FetchResult, ships_built
from inputkit.sources.source_names import BUILTIN, plugin_targets, resolve_short_name

log = logging.getLogger(__name__)

# Keys of a source config that are about the source, not arguments to it: what to build,
# and the sizes of its fields declared for the memory planner (docs/memory.md).
NOT_ARGUMENTS = ("_target_", "_fields_")


@dataclass(frozen=True)
class BoundSource:
    """A ready source: its display ``name`` (the ``_target_``), its ``fetch``, the object, and
    what it can do beyond fetch/read (``caps``, computed and checked once, here: the rest of
    the pipeline reads it instead of looking methods up on ``obj``)."""

    name: str
    fetch: Callable[[int, int], FetchResult]
    obj: Any
    caps: Capabilities = field(default=NONE, compare=False)
    key: InitVar[str] = "source._target_"

    def __post_init__(self, key: str) -> None:
        if self.caps is NONE:
            object.__setattr__(self, "caps", capabilities_of(self.obj, self.name, key))

    def setup(self, worker_id: int, num_workers: int) -> None:
        """The source's own per-worker ``setup``, if it has one."""
        if self.caps.setup:
            self.obj.setup(worker_id, num_workers)

    def close(self) -> None:
        """Call the source's own ``close()`` if it has one (files, connections)."""
        if self.caps.close:
            self.obj.close()


def import_target(target: str, key: str = "source._target_") -> Any:
    """Import ``pkg.module:attr`` or ``pkg.module.attr``; a ConfigError names ``key`` on failure.

    A bare name (``synthetic``, or a plugin's entry-point name) is looked up among the
    built-in sources and the ``inputkit.sources`` entry points (``inputkit sources``).
    """
    if ":" not in target and "." not in target and key.endswith("source._target_"):
        resolved = resolve_short_name(target)
        if resolved is None:
            known = ", ".join(sorted({*BUILTIN, *plugin_targets()}))
            raise ConfigError(key, f"'{target}' is neither an importable name (pkg.module:fn, "
                              f"pkg.module.Class) nor a known source ({known}); `inputkit sources` "
                              "lists them")
        target = resolved
    if ":" in target:
        module_name, _, attr_path = target.partition(":")
    else:
        module_name, _, attr_path = target.rpartition(".")
    if not module_name or not attr_path:
        raise ConfigError(key, f"'{target}' is not an importable name; write it as "
                          "pkg.module:function or pkg.module.Class")
    try:
        module = importlib.import_module(module_name)
    except ImportError as exc:
        raise ConfigError(key, f"cannot import module '{module_name}' for '{target}': {exc}. "
                          "Is the package installed, or its folder on PYTHONPATH?") from exc
    except Exception as exc:
        raise ConfigError(key, f"importing module '{module_name}' for '{target}' failed: "
                          f"{type(exc).__name__}: {exc}") from exc
    obj: Any = module
    for part in attr_path.split("."):
        try:
            obj = getattr(obj, part)
        except AttributeError as exc:
            raise ConfigError(key, f"module '{module_name}' has no attribute '{attr_path}' "
                              f"(from '{target}')") from exc
    return obj


def construct(cls: type, kwargs: dict[str, Any], target: str, key: str) -> Any:
    """``cls(**kwargs)``; what goes wrong is a ConfigError naming ``key`` and ``target``."""
    try:
        return cls(**kwargs)
    except TypeError as exc:
        raise ConfigError(key, f"{target} rejected its arguments: {exc}") from exc
    except (ValueError, ConfigError) as exc:
        raise ConfigError(key, f"{target}: {exc}") from exc
    except Exception as exc:
        raise ConfigError(key, f"constructing {target} failed: {type(exc).__name__}: {exc}") from exc


def build_source(config: Mapping[str, Any], key: str = "source") -> BoundSource:
    """Construct the source named by ``config['_target_']`` with the other keys as arguments.

    - a class is instantiated with the keys as keyword arguments and must have ``fetch``;
    - a function is the fetch itself; extra keys are passed to every call as keywords;
    - an object with ``fetch`` (e.g. a module-level instance) is used as it is.

    ``_fields_`` (sizes declared for the memory planner) is never passed on.
    """
    target = config.get("_target_")
    if not isinstance(target, str):
        raise ConfigError(f"{key}._target_", "missing; name the fetch plugin, e.g. mypkg.data:fetch")
    kwargs = {k: _instantiate_nested(v) for k, v in config.items() if k not in NOT_ARGUMENTS}
    obj = import_target(target, key=f"{key}._target_")
    if inspect.isclass(obj):
        instance = construct(obj, kwargs, target, key)
        fetch = getattr(instance, "fetch", None)
        if not callable(fetch):
            if callable(getattr(instance, "read", None)):  # indexable: read by index range
                return _bind(target, _fetch_by_index_only(target), instance, key)
            raise ConfigError(f"{key}._target_", f"{target} has neither fetch(worker_id, "
                              "batch_size_hint) nor read(indices) with __len__; see docs/plugins.md")
        return _bind(target, fetch, instance, key)
    fetch = getattr(obj, "fetch", None)
    if not callable(fetch) and not inspect.isfunction(obj) and callable(getattr(obj, "read", None)):
        return BoundSource(name=target, fetch=_fetch_by_index_only(target), obj=obj, key=f"{key}._target_")
    if callable(fetch) and not inspect.isfunction(obj):
        if kwargs:
            raise ConfigError(key, f"{target} is an existing object; it takes no arguments "
                              f"(got {', '.join(sorted(kwargs))})")
        return BoundSource(name=target, fetch=fetch, obj=obj, key=f"{key}._target_")
    if callable(obj):
        _check_fetch_signature(obj, target, kwargs, key)
        bound = functools.partial(obj, **kwargs) if kwargs else obj
        return BoundSource(name=target, fetch=bound, obj=obj)
    raise ConfigError(f"{key}._target_", f"{target} is a {type(obj).__name__}, not a class, "
                      "function or object with fetch(worker_id, batch_size_hint)")


def _bind(target: str, fetch: Callable[[int, int], FetchResult], obj: Any, key: str) -> BoundSource:
    """A BoundSource for ``obj``, an instance built here: when its capabilities are refused, it
    is closed first (it may hold files)."""
    try:
        return BoundSource(name=target, fetch=fetch, obj=obj, key=f"{key}._target_")
    except ConfigError:
        close = getattr(obj, "close", None)
        if callable(close) and not inspect.isclass(obj):
            close()
        raise


def component_names(config: Mapping[str, Any]) -> tuple[str | None, tuple[str, ...]]:
    """A composite source's component field and component names, from its config without
    building it (capabilities.ReportsComponents); ``None, ()`` for any other source. A target
    that cannot be imported also gives ``None, ()``: building the source reports that."""
    target = config.get("_target_")
    if not isinstance(target, str):
        return None, ()
    try:
        obj = import_target(target)
    except ConfigError:
        return None, ()
    if not (callable(getattr(obj, "component_names", None))
            and callable(getattr(obj, "component_positions", None))):
        return None, ()
    return obj.component_names(config)


def built_copy(source: BoundSource | None) -> bytes | None:
    """``source`` pickled for the worker processes, if it ships built (its index is then built
    once, in the parent); None: each worker builds its own from the config."""
    if source is None or not ships_built(source.obj):
        return None
    try:
        return pickle.dumps(source.obj, protocol=pickle.HIGHEST_PROTOCOL)
    except Exception as exc:  # noqa: BLE001 - any pickling failure: the workers build their own
        log.warning("source '%s' could not be pickled for its worker processes (%s: %s); each "
                    "builds its own", source.name, type(exc).__name__, exc)
        return None


def rebind(name: str, obj: Any) -> BoundSource:
    """A BoundSource around an instance that build_source made elsewhere (the copy a worker
    process receives from its parent, see protocol.ships_built)."""
    fetch = getattr(obj, "fetch", None)
    return BoundSource(name=name, fetch=fetch if callable(fetch) else _fetch_by_index_only(name),
                       obj=obj)


def _fetch_by_index_only(target: str) -> Callable[[int, int], Any]:
    def fetch(worker_id: int, batch_size_hint: int) -> Any:
        raise TypeError(f"{target} is read by index (read(indices)) and has no fetch(); it needs "
                        "a length: len() of it raised TypeError")
    return fetch


def _check_fetch_signature(fn: Callable[..., Any], target: str, kwargs: dict[str, Any],
                           key: str) -> None:
    try:
        signature = inspect.signature(fn)
    except (TypeError, ValueError):
        return  # builtins without a signature: trust them
    try:
        signature.bind(0, 1, **kwargs)
    except TypeError as exc:
        raise ConfigError(key, f"{target} cannot be called as fetch(worker_id, batch_size_hint"
                          f"{''.join(', ' + k + '=...' for k in kwargs)}): {exc}") from exc


def _instantiate_nested(value: Any) -> Any:
    if isinstance(value, Mapping) and "_target_" in value:
        from hydra.utils import instantiate

        return instantiate(dict(value))
    return value

"""Build processor steps from their configs: import ``_target_``, construct, check the call.

Mirrors :mod:`inputkit.sources.loader`: a class is instantiated with the other keys,
a function is used as it is (the other keys become keyword arguments of every call),
an existing callable object is used as it is and takes no keys. Every failure is a
ConfigError naming ``processors[i]``.
"""

from __future__ import annotations

import functools
import inspect
from collections.abc import Callable, Mapping
from typing import Any

from inputkit.errors import ConfigError
from inputkit.sources.loader import construct, import_target

_CALL = "proc(fields, rng)"


def build_processor(config: Any, key: str) -> Callable[..., Any]:
    """The step that ``config`` (a mapping with ``_target_``) names; ``key`` is e.g. ``processors[1]``."""
    if not isinstance(config, Mapping):
        raise ConfigError(key, f"expected a mapping with _target_, got {type(config).__name__} "
                          f"({config!r}); write e.g. {{_target_: inputkit.processors.Cast, field: x, "
                          "dtype: float32}")
    target = config.get("_target_")
    if not isinstance(target, str) or not target:
        raise ConfigError(f"{key}._target_", "missing; name the processor, e.g. "
                          "inputkit.processors.Normalize or mypkg.augment:jitter")
    kwargs = {str(k): v for k, v in config.items() if k != "_target_"}
    obj = import_target(target, key=f"{key}._target_")
    if inspect.isclass(obj):
        step = construct(obj, kwargs, target, key)
        if not callable(step):
            raise ConfigError(f"{key}._target_", f"{target} instances are not callable; a processor "
                              f"class needs __call__(self, fields, rng) returning the fields")
        _check_signature(step, target, {}, key)
        return step
    if not callable(obj):
        raise ConfigError(f"{key}._target_", f"{target} is a {type(obj).__name__}, not a class or "
                          f"a function {_CALL}")
    if kwargs and not (inspect.isfunction(obj) or inspect.isbuiltin(obj)
                       or isinstance(obj, functools.partial)):
        raise ConfigError(key, f"{target} is an existing object; it takes no arguments "
                          f"(got {', '.join(sorted(kwargs))})")
    _check_signature(obj, target, kwargs, key)
    return functools.partial(obj, **kwargs) if kwargs else obj


def _check_signature(fn: Callable[..., Any], target: str, kwargs: dict[str, Any], key: str) -> None:
    try:
        signature = inspect.signature(fn)
    except (TypeError, ValueError):
        return  # builtins without a signature: trust them
    try:
        signature.bind(None, None, **kwargs)
    except TypeError as exc:
        extra = "".join(f", {k}=..." for k in kwargs)
        raise ConfigError(key, f"{target} cannot be called as proc(fields, rng{extra}): {exc}") from exc

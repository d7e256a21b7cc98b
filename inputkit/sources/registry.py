"""Which sources exist: the built-ins, and third-party plugins registered as entry points.

A package makes its source available to every inputkit user by declaring an entry
point in the ``inputkit.sources`` group::

    [project.entry-points."inputkit.sources"]
    parquet = "mypkg.sources:ParquetSource"

``inputkit sources`` then lists it with its config keys, and a config may name it
by its short name: ``source._target_=parquet``. The table of names is
``source_names.py`` (the loader reads it too); this module describes each source.
"""

from __future__ import annotations

import inspect
import re
from dataclasses import dataclass
from typing import Any

from inputkit.sources.source_names import (
    BUILTIN,
    GROUP,
    plugin_targets,
    resolve_short_name,  # noqa: F401 - its old home, re-exported
)

_FETCH_ARGS = ("worker_id", "batch_size_hint", "batch_size")


@dataclass(frozen=True)
class SourceInfo:
    """One available source: its short name, ``_target_``, where it comes from, what it reads."""

    name: str
    target: str
    origin: str  # "built-in", or "entry point (distribution x.y)"
    kind: str = ""  # "fetch", "indexable", or both
    summary: str = ""
    keys: tuple[tuple[str, str], ...] = ()  # (key, default or "required")
    error: str | None = None  # why it could not be imported, if it could not


def available_sources() -> list[SourceInfo]:
    """Every built-in and plugin source, described (importing each; failures are reported)."""
    entries = [(name, target, "built-in") for name, target in BUILTIN.items()]
    entries += [(name, target, f"entry point ({dist})")
                for name, (target, dist) in sorted(plugin_targets().items())]
    return [describe(name, target, origin) for name, target, origin in entries]


def describe(name: str, target: str, origin: str) -> SourceInfo:
    from inputkit.sources.loader import import_target

    try:
        obj = import_target(target, key=f"{GROUP}:{name}")
    except Exception as exc:  # a broken plugin is listed with its error, not fatal
        return SourceInfo(name, target, origin, error=f"{type(exc).__name__}: {exc}")
    doc = inspect.getdoc(obj) or ""
    summary = plain_text(doc.split("\n\n", 1)[0].replace("\n", " "))
    return SourceInfo(name, target, origin, kind=_kind(obj), summary=summary, keys=_keys(obj))


_ROLE = re.compile(r":[a-z]+:`~?([^`]+)`")
_LITERAL = re.compile(r"``([^`]+)``")


def plain_text(doc: str) -> str:
    """A docstring line without reST markup: ``x`` and :class:`x` become x."""
    return _LITERAL.sub(r"\1", _ROLE.sub(r"\1", doc))


def _kind(obj: Any) -> str:
    kinds = []
    if callable(getattr(obj, "fetch", None)) or (inspect.isfunction(obj)):
        kinds.append("fetch")
    if callable(getattr(obj, "read", None)):
        kinds.append("indexable" if hasattr(obj, "__len__") else "read")
    return ", ".join(kinds)


def _keys(obj: Any) -> tuple[tuple[str, str], ...]:
    """The config keys a source takes: its constructor's (a class) or extra keywords (a fetch)."""
    try:
        signature = inspect.signature(obj)
    except (TypeError, ValueError):
        return ()
    keys = []
    for param in signature.parameters.values():
        if param.name in ("self", *_FETCH_ARGS) and inspect.isfunction(obj) or param.name == "self":
            continue
        if param.kind in (param.VAR_POSITIONAL, param.VAR_KEYWORD):
            keys.append((("*" if param.kind == param.VAR_POSITIONAL else "**") + param.name, ""))
            continue
        default = "required" if param.default is param.empty else repr(param.default)
        keys.append((param.name, default))
    return tuple(keys)

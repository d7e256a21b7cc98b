"""How ``--help`` shows our options: a flag (``--version``, ``--help``, ``--json``) without
the ``<bool>`` type that typer puts beside every option, since a flag takes no value."""

from __future__ import annotations

from typing import Any

from typer.core import TyperCommand, TyperGroup


def _untyped_flags(params: list[Any]) -> list[Any]:
    for param in params:
        # typer shows an option's metavar in place of its type; an empty one shows nothing.
        if getattr(param, "is_flag", False) and param.metavar is None:
            param.metavar = ""
    return params


class Command(TyperCommand):
    """A command whose flags show no ``<bool>`` in its help."""

    def get_params(self, ctx: Any) -> list[Any]:
        return _untyped_flags(super().get_params(ctx))


class Group(TyperGroup):
    """The ``inputkit`` group: its flags (``--version``, ``--help``) show no ``<bool>``."""

    def get_params(self, ctx: Any) -> list[Any]:
        return _untyped_flags(super().get_params(ctx))

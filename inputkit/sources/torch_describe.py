"""How the torch-dataset source names things in its messages: a class, a value, a raiser.

Shared by the dataset's checks (``torch_build.py``), its collation (``torch_collate.py``) and
its reading (``torch_dataset.py``, ``torch_workers.py``), so a dataset or a bad value is
written the same way in every error. Imports nothing heavy.
"""

from __future__ import annotations

from typing import Any


def note(exc: BaseException, text: str) -> None:
    """Add ``text`` to the traceback of an exception the dataset's code raised (3.11+)."""
    if hasattr(exc, "add_note"):  # Python >= 3.11
        exc.add_note(text)


def describe_type(obj: Any) -> str:
    """The qualified name of ``obj``'s class (or of ``obj``, a class), short for builtins."""
    cls = obj if isinstance(obj, type) else type(obj)
    module = cls.__module__
    return cls.__qualname__ if module in ("builtins", "__main__") else f"{module}.{cls.__qualname__}"


def describe_value(value: Any) -> str:
    """``value`` for a message: its type and a short repr."""
    if value is None:
        return "None"
    if isinstance(value, type):
        return f"the class {describe_type(value)} (an instance is needed)"
    text = repr(value)
    if len(text) > 60:
        text = text[:57] + "..."
    return f"a {describe_type(value)} ({text})"

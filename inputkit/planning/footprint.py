"""The bytes a built source object holds (its index: file names, offsets, labels), by walking it.

The memory probe used to trace the source's construction with tracemalloc, which
slows every allocation down: indexing a folder of 200,000 files took 7 s traced
against 1.4 s untraced. The probe measures reading, not indexing (DESIGN.md), so
the built object is measured instead: numpy arrays by the bytes they own,
strings, bytes and containers by ``sys.getsizeof``, objects through their
attributes, each object once. Memory-mapped data is page cache, not the
source's (the plan shows it apart, from ``mapped_bytes()``), and modules,
classes and functions are code shared by everyone: neither is counted. Memory
that a C library allocates on its own (an Arrow buffer) is invisible here, as
it was to tracemalloc.
"""

from __future__ import annotations

import mmap
import sys
import types
from typing import Any

import numpy as np

# Walking stops after this many objects (an index of Python objects per sample, millions
# of them, is estimated from those seen: what is past the cap is not counted).
MAX_OBJECTS = 2_000_000
_SHARED = (type, types.ModuleType, types.FunctionType, types.BuiltinFunctionType,
           types.MethodType, types.CodeType)
_LEAVES = (str, bytes, bytearray, int, float, complex, bool, type(None))


def object_bytes(obj: Any) -> int:
    """Bytes held by ``obj`` and everything it refers to, each object counted once."""
    seen: set[int] = set()
    stack = [obj]
    total = 0
    while stack and len(seen) < MAX_OBJECTS:
        item = stack.pop()
        if id(item) in seen:
            continue
        seen.add(id(item))
        if isinstance(item, _SHARED) or isinstance(item, (np.memmap, mmap.mmap, memoryview)):
            continue
        if isinstance(item, np.ndarray):
            total += sys.getsizeof(item)  # with its data when it owns it
            if item.base is not None:  # a view: the bytes belong to its base (counted once)
                stack.append(item.base)
            continue
        total += sys.getsizeof(item, 0)
        if isinstance(item, _LEAVES):
            continue
        if isinstance(item, dict):
            stack.extend(item.keys())
            stack.extend(item.values())
        elif isinstance(item, (list, tuple, set, frozenset)):
            stack.extend(item)
        else:
            attributes = getattr(item, "__dict__", None)
            if isinstance(attributes, dict):
                stack.append(attributes)
            for name in getattr(type(item), "__slots__", ()):
                if isinstance(name, str) and hasattr(item, name):
                    stack.append(getattr(item, name))
    return total

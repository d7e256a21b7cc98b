"""Parse byte sizes written by people: ``512MiB``, ``1.5GB``, ``4096``, and budgets (``60%``)."""

from __future__ import annotations

import re
from typing import Any

from inputkit.errors import ConfigError

_UNITS = {
    "": 1, "b": 1,
    "kb": 10**3, "mb": 10**6, "gb": 10**9, "tb": 10**12,
    "kib": 2**10, "mib": 2**20, "gib": 2**30, "tib": 2**40,
    "k": 2**10, "m": 2**20, "g": 2**30,
}
_SIZE = re.compile(r"^\s*(\d+(?:\.\d+)?)\s*([A-Za-z]*)\s*$")


def parse_size(value: object, key: str) -> int:
    """Bytes in ``value`` (an int, or a number with a unit); a ConfigError names ``key``."""
    if isinstance(value, bool):
        raise ConfigError(key, f"expected a size such as 64MiB, got {value!r}")
    if isinstance(value, int):
        number, unit = float(value), ""
    else:
        match = _SIZE.match(str(value))
        if not match or match.group(2).lower() not in _UNITS:
            raise ConfigError(key, f"cannot read {value!r} as a size; write e.g. 4096, 64MiB, "
                              "1.5GB (units: B, KB, MB, GB, KiB, MiB, GiB)")
        number, unit = float(match.group(1)), match.group(2).lower()
    size = int(number * _UNITS[unit])
    if size <= 0:
        raise ConfigError(key, f"must be a positive size, got {value!r}")
    return size


def format_size(size: float) -> str:
    """``12.6 MB``-style, for messages and tables."""
    for unit, scale in (("GB", 1e9), ("MB", 1e6), ("kB", 1e3)):
        if abs(size) >= scale:
            return f"{size / scale:.1f} {unit}"
    return f"{int(size)} B"


_BINARY = (("GiB", 2**30), ("MiB", 2**20), ("KiB", 2**10))


def size_setting(size: int) -> str:
    """``size`` as a config value that parses back to exactly it: ``64GiB``, ``1536KiB``,
    ``1000``."""
    for unit, scale in _BINARY:
        if size >= scale and size % scale == 0:
            return f"{size // scale}{unit}"
    return str(int(size))


def size_setting_at_most(size: int) -> str:
    """A round config value of at most ``size`` bytes (within a tenth of it): ``11GiB`` for
    11.8 GiB, ``740MiB``, ``4096``."""
    for unit, scale in _BINARY:
        if size >= 10 * scale:
            return f"{size // scale}{unit}"
    return str(max(0, int(size)))


def parse_budget(value: Any, key: str, available: int | None = None) -> int:
    """``16GiB`` or ``60%`` (of the RAM available now, read with psutil) -> bytes."""
    text = str(value).strip()
    if text.endswith("%"):
        try:
            share = float(text[:-1])
        except ValueError:
            raise ConfigError(key, f"cannot read {value!r} as a percentage; write e.g. 60%") \
                from None
        if not 0 < share <= 100:
            raise ConfigError(key, f"must be a percentage in (0, 100], got {value!r}")
        if available is None:
            import psutil

            available = int(psutil.virtual_memory().available)
        return int(available * share / 100)
    return parse_size(value, key)

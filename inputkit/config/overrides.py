"""One key, one override: a key given twice is refused, never silently the last one.

Hydra applies overrides in order, so ``batch_size=32 batch_size=64`` quietly runs with
64. The usual way to get there by accident is a shell brace expansion: unquoted,
``source.urls=train-{000..007}.tar`` reaches us as eight ``source.urls=...`` arguments,
of which Hydra would keep the last (one shard of eight, with no warning). Every command
that takes overrides (bench, plan, tune, compare) and :func:`inputkit.compose` check them
here first; code that layers its own overrides under a user's uses :func:`layered`.
"""

from __future__ import annotations

import re
from collections.abc import Sequence
from typing import Any

from inputkit.errors import ConfigError

# A run of digits: where the values that a brace range expanded into differ.
_DIGITS = re.compile(r"\d+")
# A path: a folder in it, or a file name with an extension (not a number such as 0.1).
_PATH_LIKE = re.compile(r"/|\.[A-Za-z]\w*$")


def override_key(override: str) -> str | None:
    """The key (or config group, with its ``@package``) that one override sets or deletes;
    None when Hydra cannot parse it (the caller's parse check names that one)."""
    from hydra.core.override_parser.overrides_parser import OverridesParser
    from hydra.errors import HydraException

    try:
        [parsed] = OverridesParser.create().parse_overrides([override])
    except (HydraException, ValueError):
        return None
    return _key_of(parsed)


def _key_of(parsed: Any) -> str | None:
    key = parsed.key_or_group
    if not key:
        return None
    return f"{key}@{parsed.package}" if parsed.package is not None else key


def _keys(overrides: Sequence[str]) -> list[str | None]:
    from hydra.core.override_parser.overrides_parser import OverridesParser
    from hydra.errors import HydraException

    parser = OverridesParser.create()
    keys: list[str | None] = []
    for override in overrides:
        try:
            [parsed] = parser.parse_overrides([override])
        except (HydraException, ValueError):
            keys.append(None)  # malformed: named by the parse check, not here
            continue
        keys.append(_key_of(parsed))
    return keys


def check_repeated(overrides: Sequence[str], where: str = "on the command line") -> None:
    """Raise a ConfigError naming the first key that ``overrides`` set (or delete) more than
    once, with every value given and the fix. ``where`` says where the overrides came from."""
    seen: dict[str, list[str]] = {}
    for override, key in zip(overrides, _keys(overrides), strict=True):
        if key is not None:
            seen.setdefault(key, []).append(override)
    for key, given in seen.items():
        if len(given) > 1:
            raise ConfigError(key, _repeated_message(key, given, where))


def _repeated_message(key: str, given: list[str], where: str) -> str:
    shown = given if len(given) <= 4 else [*given[:2], "...", given[-1]]
    times = "twice" if len(given) == 2 else f"{len(given)} times"
    text = f"given {times} {where} ({', '.join(shown)})"
    values = [_value(o) for o in given]
    pattern = brace_pattern(values)
    if pattern is None:
        return f"{text}: which one is meant is ambiguous (Hydra would silently keep the last); " \
               f"give {key} once"
    name = key.partition("@")[0]
    ranged = ".." in pattern  # values counting up by one: a range the shell expanded, surely
    if name.rpartition(".")[2] == "urls":  # the shard sources expand brace patterns themselves
        fix = f"quote the argument so that inputkit expands it: '{name}={pattern}'"
    else:
        fix = f"give the values as one list: '{name}=[{','.join(values)}]'"
    if ranged:
        return (f"{text}: the shell expanded an unquoted brace pattern into one argument per "
                f"value, and only the last one would be read; {fix}")
    return (f"{text}: only the last one would be read (a shell expands an unquoted brace "
            f"pattern into one argument per value); to read them all, {fix}")


def _value(override: str) -> str:
    return override.partition("=")[2]


def brace_pattern(values: Sequence[str]) -> str | None:
    """The brace pattern a shell expanded into ``values``, when they look like one.

    Values that differ only in one run of digits of the same width, counting up by one,
    came from a range (``train-{000..007}.tar``); values with a common text before and
    after the part that differs, from a list (``{a,b,c}.tar``). Only paths are read so
    (brace patterns name files); None otherwise: values that are not paths, the same value
    twice, a value with quotes, brackets or braces of its own.
    """
    if len(values) < 2 or len(set(values)) != len(values) or \
            any(not _PATH_LIKE.search(v) or set(v) & set("'\"[]{}=,") for v in values):
        return None
    prefix = _common_prefix(values)
    suffix = _common_prefix([v[len(prefix):][::-1] for v in values])[::-1]
    # Keep whole digit runs in the varying part (train-00{0..7} reads worse than {000..007}).
    while prefix and prefix[-1].isdigit():
        prefix = prefix[:-1]
    while suffix and suffix[0].isdigit():
        suffix = suffix[1:]
    middles = [v[len(prefix):len(v) - len(suffix)] for v in values]
    if not (prefix or suffix) or any(not m for m in middles):
        return None
    padded = len({len(m) for m in middles}) == 1  # {000..007}; or none padded: {8..12}
    if all(_DIGITS.fullmatch(m) for m in middles) and \
            (padded or not any(len(m) > 1 and m.startswith("0") for m in middles)):
        numbers = [int(m) for m in middles]
        if numbers == list(range(numbers[0], numbers[0] + len(numbers))):
            return f"{prefix}{{{middles[0]}..{middles[-1]}}}{suffix}"
    return f"{prefix}{{{','.join(middles)}}}{suffix}"


def _common_prefix(values: Sequence[str]) -> str:
    first, last = min(values), max(values)
    n = 0
    while n < min(len(first), len(last)) and first[n] == last[n]:
        n += 1
    return first[:n]


def layered(*groups: Sequence[str]) -> list[str]:
    """Overrides from several layers, later layers winning: an override whose key a later
    layer sets is dropped. Each layer on its own must not repeat a key (checked)."""
    checked = [(list(group), _keys(group)) for group in groups]
    for group, _ in checked:
        check_repeated(group, "in one list of overrides")
    result: list[str] = []
    for i, (group, keys) in enumerate(checked):
        later = {k for _, ks in checked[i + 1:] for k in ks if k is not None}
        result += [o for o, k in zip(group, keys, strict=True) if k is None or k not in later]
    return result

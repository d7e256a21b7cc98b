"""Translate Hydra's and OmegaConf's composition errors into one-line ConfigErrors."""

from __future__ import annotations

import re
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from typing import Any

from inputkit.errors import ConfigError

_QUOTED_KEY = re.compile(r"(?:override|Key|key) '([^']+)'")
_MISSING_OPTION = re.compile(r"Could not find '([^']+)'")
_SEE_URL = re.compile(r"^See (\S+) for details$")
_EXPECTING_SET = re.compile(r" expecting \{[^}]*\}")
_LEXER = "LexerNoViableAltException: "
OVERRIDE_FORMS = "write key=value (+key=value adds a key, ~key deletes one)"
_EMPTY_KEY = "Config group override must be a string or a list"


def _override_parse_error(exc: Any) -> ConfigError:
    """``override: cannot parse 'OVERRIDE': what is wrong; see <grammar>`` from Hydra's parser."""
    override = getattr(exc, "override", None)
    lines = [line for line in str(getattr(exc, "message", exc)).splitlines() if line.strip()]
    url = None
    if lines and (see := _SEE_URL.match(lines[-1].strip())):
        url = see.group(1)
        lines.pop()
    if lines and lines[0].startswith("Error parsing override "):
        lines.pop(0)
    if lines and lines[0].startswith(_LEXER) and override is not None:
        # Hydra marks the character its lexer stopped at with a caret on the next line.
        position = (lines[1].index("^") - len(_LEXER)) if len(lines) > 1 and "^" in lines[1] else -1
        if 0 <= position < len(override):
            detail = f"unexpected character {override[position]!r} at position {position + 1}"
        else:
            detail = "an unexpected character"
    else:
        detail = _EXPECTING_SET.sub("", " ".join(" ".join(lines).split()))
    what = "cannot parse"
    if override is not None:
        what += f" {override!r}"
        if "missing EQUAL" in detail:
            detail = f"no '='; {OVERRIDE_FORMS}"
        elif override.count("[") != override.count("]") or override.count("{") != override.count("}"):
            what += " (its brackets do not balance)"
    return ConfigError("override", f"{what}: {detail}" + (f"; see {url}" if url else ""))


# A value that is a path with a shell-style brace pattern (train-{000..127}.tar, {a,b}.tar):
# Hydra's grammar reads braces as a dict and cannot parse it unless the value is quoted.
_BRACED_PATH = re.compile(r"^[^'\"\[][^'\"]*\{[^{}:'\"]+\}[^'\"]*$|^\{[^{}:'\"]+\}[^'\"]*$")


def quote_brace_patterns(overrides: Sequence[str]) -> list[str]:
    """``source.urls=a/train-{000..009}.tar`` as ``source.urls="a/train-{000..009}.tar"``, so
    that a brace pattern can be typed as the shell would take it (quoted values stay as they
    are)."""
    quoted = []
    for override in overrides:
        key, sep, value = override.partition("=")
        if sep and _BRACED_PATH.match(value):
            override = f'{key}="{value}"'
        quoted.append(override)
    return quoted


def check_overrides(overrides: Sequence[str]) -> None:
    """Parse each override on its own and raise a ConfigError naming the first bad one.

    Hydra reports a parse error without the override, and an override without a key
    (``=3``) only later, as an internal ValueError; checking them one at a time first
    puts the override itself in the message.
    """
    from hydra.core.override_parser.overrides_parser import OverridesParser
    from hydra.errors import OverrideParseException

    parser = OverridesParser.create()
    for override in overrides:
        try:
            [parsed] = parser.parse_overrides([override])
        except OverrideParseException as exc:
            raise _override_parse_error(exc) from exc
        if not parsed.key_or_group:
            raise ConfigError("override", f"{override!r} has no key; {OVERRIDE_FORMS}")


def config_error_from(exc: BaseException, prefix: str = "",
                      config_dir: str = "--config-dir") -> ConfigError:
    """Best one-line ConfigError for a Hydra/OmegaConf exception, naming the key when known.

    ``prefix`` is prepended to the key (``inputs.val.``) when the failing node is nested;
    ``config_dir`` is how the caller names the user's config folder (``--config-dir``, or
    ``compose(config_dir=...) folder`` from Python).
    """
    from hydra.errors import MissingConfigException, OverrideParseException
    from omegaconf.errors import ConfigAttributeError, ConfigKeyError, OmegaConfBaseException

    cause = exc.__cause__
    if isinstance(exc, OmegaConfBaseException):
        omega = exc
    elif isinstance(cause, OmegaConfBaseException):
        omega = cause
    else:
        omega = None
    text = " ".join(str(exc).split())
    if isinstance(exc, OverrideParseException):
        return _override_parse_error(exc)
    if isinstance(exc, MissingConfigException):
        missing = _MISSING_OPTION.search(str(exc))
        if missing and "/" in missing.group(1):
            group, _, option = missing.group(1).rpartition("/")
            # base_* entries are the schemas that the group's options build on, not options.
            known = ", ".join(o for o in exc.options or [] if not o.startswith("base_")) or "none found"
            return ConfigError(group.replace("/", "."), f"no config named '{option}' in group "
                               f"'{group}' (available: {known}); add {group}/{option}.yaml to "
                               f"your {config_dir}")
        return ConfigError("--config-name", str(exc).splitlines()[0])
    key = getattr(omega, "full_key", None) if omega is not None else None
    if not key:
        match = _QUOTED_KEY.search(text)
        key = match.group(1) if match else ""
    key = prefix + key
    if "does not support deletion" in f"{text} {omega}":
        return ConfigError(key, "is part of inputkit's schema and cannot be deleted; set a value "
                           "instead (docs/configuration.md lists each key). ~key removes free-form "
                           "keys: source arguments, source fields, inputs")
    if isinstance(omega, (ConfigKeyError, ConfigAttributeError)) or "not in struct" in text \
            or "Could not override" in text:
        return ConfigError(key, "unknown key; check the spelling, or run `inputkit bench --cfg job` "
                           "to see the keys this config has (+key=value adds a new key, e.g. a "
                           "source argument)")
    if omega is not None and str(omega):
        first = str(omega).splitlines()[0]
        if re.fullmatch(r"field '[^']*' is not Optional", first.strip()):
            return ConfigError(key, "must be set (null is not allowed)")
        if first.startswith("Missing mandatory value"):
            return ConfigError(key, f"required (??? in the config); set it, e.g. {key}=VALUE")
        return ConfigError(key, first)
    return ConfigError(key, text)


@contextmanager
def translate_config_errors(overrides: Sequence[str] = (),
                            config_dir: str = "--config-dir") -> Iterator[None]:
    """Re-raise Hydra/OmegaConf composition failures as ConfigError (the cause is chained).

    With ``overrides``, a failure is first blamed on a malformed override if there is
    one, so the message names it (see :func:`check_overrides`).
    """
    from hydra.errors import HydraException
    from omegaconf.errors import OmegaConfBaseException

    try:
        yield
    except (HydraException, OmegaConfBaseException) as exc:
        if overrides:
            check_overrides(overrides)
        raise config_error_from(exc, config_dir=config_dir) from exc
    except ValueError as exc:
        if _EMPTY_KEY not in str(exc):
            raise
        if overrides:
            check_overrides(overrides)
        # Hydra's internal error for an override with no key, e.g. '=3'.
        raise ConfigError("override", f"an override has no key (such as '=3'); {OVERRIDE_FORMS}") \
            from exc

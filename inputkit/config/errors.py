"""Translate Hydra's and OmegaConf's composition errors into one-line ConfigErrors."""

from __future__ import annotations

import re
from collections.abc import Iterator
from contextlib import contextmanager

from inputkit.errors import ConfigError

_QUOTED_KEY = re.compile(r"(?:override|Key|key) '([^']+)'")
_MISSING_OPTION = re.compile(r"Could not find '([^']+)'")


def config_error_from(exc: BaseException, prefix: str = "") -> ConfigError:
    """Best one-line ConfigError for a Hydra/OmegaConf exception, naming the key when known.

    ``prefix`` is prepended to the key (``inputs.val.``) when the failing node is nested.
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
        return ConfigError("override", f"cannot parse {text}")
    if isinstance(exc, MissingConfigException):
        missing = _MISSING_OPTION.search(str(exc))
        if missing and "/" in missing.group(1):
            group, _, option = missing.group(1).rpartition("/")
            known = ", ".join(exc.options or []) or "none found"
            return ConfigError(group.replace("/", "."), f"no config named '{option}' in group "
                               f"'{group}' (available: {known}); add {group}/{option}.yaml to "
                               "your --config-dir")
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
        return ConfigError(key, first)
    return ConfigError(key, text)


@contextmanager
def translate_config_errors() -> Iterator[None]:
    """Re-raise Hydra/OmegaConf composition failures as ConfigError (the cause is chained)."""
    from hydra.errors import HydraException
    from omegaconf.errors import OmegaConfBaseException

    try:
        yield
    except (HydraException, OmegaConfBaseException) as exc:
        raise config_error_from(exc) from exc

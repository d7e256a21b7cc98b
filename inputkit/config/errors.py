"""Translate Hydra's and OmegaConf's composition errors into one-line ConfigErrors."""

from __future__ import annotations

import re
from collections.abc import Iterator
from contextlib import contextmanager

from inputkit.errors import ConfigError

_QUOTED_KEY = re.compile(r"(?:override|Key|key) '([^']+)'")


def config_error_from(exc: BaseException) -> ConfigError:
    """Best one-line ConfigError for a Hydra/OmegaConf exception, naming the key when known."""
    from hydra.errors import MissingConfigException, OverrideParseException
    from omegaconf.errors import OmegaConfBaseException

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
        first = str(exc).splitlines()[0]
        return ConfigError("config", f"{first} (options: {', '.join(exc.options or [])})"
                           if exc.options else first)
    key = getattr(omega, "full_key", None) if omega is not None else None
    if not key:
        match = _QUOTED_KEY.search(text)
        key = match.group(1) if match else ""
    if "not in struct" in text or "is not in struct" in text:
        return ConfigError(key, "unknown key; check the spelling, or run `inputkit bench --cfg job` "
                           "to see the keys this config has (use +key=value to add a source argument)")
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

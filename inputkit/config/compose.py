"""Compose inputkit configs with Hydra, from the shipped ``conf/`` and a user's folder.

The shipped configs install as the package ``inputkit.conf`` (top-level
``conf/`` in the source tree), so composition works the same from a checkout,
an editable install and a wheel. A user's ``config_dir`` is searched *before*
ours: a file there with the same name as one of ours wins.
"""

from __future__ import annotations

import os
from collections.abc import Sequence
from typing import TYPE_CHECKING

from omegaconf import DictConfig, open_dict

if TYPE_CHECKING:
    from hydra.core.config_search_path import ConfigSearchPath

SHIPPED_CONFIGS = "pkg://inputkit.conf"
DEFAULT_CONFIG_NAME = "config"


def shipped_configs() -> str:
    """Where our configs are: the installed package, or ``conf/`` beside a source checkout."""
    import importlib.util

    if importlib.util.find_spec("inputkit.conf") is not None:
        return SHIPPED_CONFIGS
    checkout = os.path.join(os.path.dirname(os.path.dirname(os.path.abspath(__file__))), "..", "conf")
    return f"file://{os.path.abspath(checkout)}"


CLI_CONFIG_DIR = "--config-dir"
PYTHON_CONFIG_DIR = "compose(config_dir=...)"


def search_path(config_dir: str | os.PathLike[str] | None = None,
                key: str = CLI_CONFIG_DIR) -> ConfigSearchPath:
    """Hydra's search path: Hydra's own configs, the user's folder, then ours, then schemas.

    ``key`` names ``config_dir`` in errors the way the caller was given it (the CLI's flag,
    or compose's argument)."""
    from hydra._internal.utils import create_config_search_path
    from hydra.core.config_search_path import SearchPathQuery

    from inputkit.config.schema import register_configs
    from inputkit.errors import ConfigError

    register_configs()
    path = create_config_search_path(shipped_configs())
    if config_dir is not None:
        absolute = os.path.abspath(os.fspath(config_dir))
        if not os.path.isdir(absolute):
            raise ConfigError(key, f"folder {absolute} does not exist")
        path.prepend(provider="command-line", path=f"file://{absolute}",
                     anchor=SearchPathQuery(provider="main"))
    return path


def compose(
    overrides: Sequence[str] = (),
    *,
    config_name: str = DEFAULT_CONFIG_NAME,
    config_dir: str | os.PathLike[str] | None = None,
) -> DictConfig:
    """Compose a config the way ``inputkit bench`` does, for use in a training script.

    ``overrides`` use Hydra's grammar (``batch_size=32``, ``+source.noise=1``,
    ``~bench.steps``, ``experiment=images``). A key given twice is a ConfigError (to
    layer your overrides over defaults, see :func:`inputkit.config.overrides.layered`).
    The result has no ``hydra`` node and can be passed straight to :class:`inputkit.Runner`.
    """
    from hydra.types import RunMode

    from inputkit.config.errors import quote_brace_patterns, translate_config_errors
    from inputkit.config.overrides import check_repeated
    from inputkit.config.targets import TargetReplacingConfigLoader

    check_repeated(overrides or (), "in compose(overrides=...)")
    with translate_config_errors(overrides or (), config_dir=f"{PYTHON_CONFIG_DIR} folder"):
        # The loader is used directly (not through GlobalHydra) so compose() also works
        # inside a user's own @hydra.main application without disturbing it.
        loader = TargetReplacingConfigLoader(search_path(config_dir, key=PYTHON_CONFIG_DIR))
        cfg = loader.load_configuration(
            config_name=config_name,
            overrides=quote_brace_patterns(overrides),
            run_mode=RunMode.RUN,
            from_shell=True,
        )
    with open_dict(cfg):
        cfg.pop("hydra", None)
    return cfg

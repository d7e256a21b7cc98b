"""Run a task under Hydra's own machinery: overrides, --cfg, --config-dir, -m sweeps.

We use Hydra's argument parser, config loader, run directories, sweeper and
launcher plugins as they are. What differs from ``@hydra.main``: the shipped
configs come from the installed package, a user's ``--config-dir`` is searched
*before* them, and failures come back as exceptions (a ConfigError for bad
configuration) so the CLI can print one line and choose the exit code.
"""

from __future__ import annotations

import argparse
from collections.abc import Callable
from typing import Any

from omegaconf import DictConfig

from inputkit.config.compose import DEFAULT_CONFIG_NAME, search_path
from inputkit.config.errors import check_overrides, quote_brace_patterns, translate_config_errors
from inputkit.config.overrides import check_repeated
from inputkit.config.targets import TargetReplacingConfigLoader


def hydra_parser(prog: str) -> argparse.ArgumentParser:
    from hydra._internal.utils import get_args_parser

    parser = get_args_parser()
    parser.prog = prog
    return parser


def run_with_hydra(argv: list[str], task: Callable[[DictConfig], Any], prog: str,
                   check: Callable[[DictConfig], None] | None = None) -> list[Any] | None:
    """Parse Hydra's command line and run ``task`` once, or once per sweep point with -m.

    ``check`` validates the composed config of a single run before Hydra starts the
    job, so a bad value fails fast with one line. Returns the task's return values
    (one per job), or None when nothing ran (``--cfg``, ``--info``).
    """
    from hydra import version
    from hydra._internal.hydra import Hydra
    from hydra.core.global_hydra import GlobalHydra
    from hydra.types import RunMode

    version.setbase("1.3")  # Hydra 1.3 defaults: no chdir into the run directory
    args = hydra_parser(prog).parse_args(argv)
    config_name = args.config_name or DEFAULT_CONFIG_NAME
    overrides = quote_brace_patterns(args.overrides)
    commands = bool(args.cfg) + bool(args.multirun) + bool(args.info)
    if commands > 1:
        from inputkit.errors import ConfigError

        raise ConfigError("command line", "use only one of --cfg, --info and --multirun")
    check_overrides(overrides)  # a malformed override is named before Hydra sees it
    check_repeated(overrides)  # a key given twice (an unquoted brace range) is refused
    GlobalHydra.instance().clear()
    try:
        with translate_config_errors():
            # As Hydra.create_main_hydra2, with our loader: a new _target_ replaces the node.
            hydra = Hydra(task_name="bench",
                          config_loader=TargetReplacingConfigLoader(search_path(args.config_dir)))
            GlobalHydra.instance().initialize(hydra)
        if args.cfg:
            with translate_config_errors():
                hydra.show_cfg(config_name=config_name, overrides=overrides, cfg_type=args.cfg,
                               package=args.package, resolve=args.resolve)
            return None
        if args.info:
            hydra.show_info(args.info, config_name=config_name, overrides=overrides)
            return None
        if args.multirun:
            if check is not None:
                _check_sweep_points(hydra, config_name, overrides, check)
            with translate_config_errors():
                batches = hydra.multirun(config_name=config_name, task_function=task,
                                         overrides=overrides + ["hydra.mode=MULTIRUN"])
            return [job.return_value for batch in batches for job in
                    (batch if isinstance(batch, (list, tuple)) else [batch])]
        if check is not None:
            with translate_config_errors():
                composed = hydra.compose_config(config_name=config_name, overrides=overrides,
                                                run_mode=RunMode.RUN)
            check(composed)
        with translate_config_errors():
            job = hydra.run(config_name=config_name, task_function=task,
                            overrides=overrides + ["hydra.mode=RUN"])
        return [job.return_value]
    finally:
        GlobalHydra.instance().clear()


def _check_sweep_points(hydra: Any, config_name: str, overrides: list[str],
                        check: Callable[[DictConfig], None]) -> None:
    """Compose and check every point of a sweep before the first job starts."""
    from hydra._internal.core_plugins.basic_sweeper import BasicSweeper
    from hydra.core.override_parser.overrides_parser import OverridesParser
    from hydra.types import RunMode

    with translate_config_errors():
        parsed = OverridesParser.create().parse_overrides(overrides)
        batches = BasicSweeper.split_arguments(parsed, None)
    for batch in batches:
        for point in batch:
            with translate_config_errors():
                composed = hydra.compose_config(config_name=config_name, overrides=list(point),
                                                run_mode=RunMode.RUN)
            check(composed)

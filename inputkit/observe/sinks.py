"""Metric sinks: the records of ``metrics.jsonl`` written where people already look.

``metrics.tensorboard=DIR`` writes them as TensorBoard scalars (torch's event file writer),
``metrics.wandb=true`` logs them to the active W&B run (``inputkit bench`` starts one when
none is). A sink receives the very record ``metrics.jsonl`` gets (:mod:`records`) and
:func:`flatten` names its figures by their path in it, so every view shows the same numbers
under the same names; nothing here computes a figure. Sinks are written by the bench's
watch loop or the runner's reporter thread (:mod:`reporter`), never by a worker or the
consumer. See docs/metrics.md.
"""

from __future__ import annotations

import importlib
import logging
from collections.abc import Iterable, Mapping
from pathlib import Path
from typing import Any, Protocol

from inputkit.errors import ConfigError
from inputkit.observe.metric_names import PREFIX, flatten

log = logging.getLogger(__name__)

# key -> (the package to import, the pip extra that brings it)
PACKAGES = {"metrics.tensorboard": ("tensorboard", "tensorboard"),
            "metrics.wandb": ("wandb", "wandb")}


class Sink(Protocol):
    """Where records go: ``write`` one record (a ``metrics.jsonl`` line), ``close`` once."""

    def write(self, record: Mapping[str, Any]) -> None: ...

    def close(self) -> None: ...


def wanted(metrics: Mapping[str, Any]) -> list[str]:
    """The keys of the ``metrics`` group that ask for a sink."""
    keys = []
    if metrics.get("tensorboard"):
        keys.append("metrics.tensorboard")
    if metrics.get("wandb"):
        keys.append("metrics.wandb")
    return keys


def check(metrics: Mapping[str, Any]) -> None:
    """Refuse a sink whose package is missing, naming the key and the extra to install."""
    tensorboard = metrics.get("tensorboard")
    if tensorboard is not None and not isinstance(tensorboard, str | Path):
        raise ConfigError("metrics.tensorboard", f"expected a directory or null, got "
                          f"{tensorboard!r}")
    if not isinstance(metrics.get("wandb", False), bool):
        raise ConfigError("metrics.wandb", f"expected true or false, got {metrics['wandb']!r}")
    for key in wanted(metrics):
        package, extra = PACKAGES[key]
        try:
            importlib.import_module(package)
        except ImportError as exc:
            raise ConfigError(key, f"is set, but the {package} package is not installed: "
                              f"pip install 'inputkit-ml[{extra}]' (or unset {key})") from exc


def open_sinks(metrics: Mapping[str, Any], *, start_wandb: bool = False,
               run_dir: Path | None = None, config: Any = None) -> list[Sink]:
    """The sinks ``metrics`` asks for, open. ``start_wandb``: start a W&B run when none is
    active (``inputkit bench``: in ``run_dir``, with ``config``); otherwise an active run is
    required. On a failure, the sinks already opened are closed."""
    check(metrics)
    sinks: list[Sink] = []
    try:
        if metrics.get("tensorboard"):
            from inputkit.observe.tensorboard_sink import TensorBoardSink

            sinks.append(TensorBoardSink(Path(metrics["tensorboard"])))
        if metrics.get("wandb"):
            from inputkit.observe.wandb_sink import WandbSink

            sinks.append(WandbSink(start=start_wandb, run_dir=run_dir, config=config))
    except BaseException:
        close_sinks(sinks)
        raise
    return sinks


def per_sweep_point(metrics: Mapping[str, Any]) -> dict[str, Any]:
    """``metrics`` for one point of a Hydra sweep (``inputkit bench -m``): its event files in
    ``metrics.tensorboard``'s subfolder named for the job's number, as its run directory is,
    so TensorBoard shows each point as a run of its own instead of mixing their steps. Outside
    a sweep, unchanged."""
    out = dict(metrics)
    if not out.get("tensorboard"):
        return out
    from hydra.core.hydra_config import HydraConfig
    from hydra.types import RunMode

    if HydraConfig.initialized() and HydraConfig.get().mode == RunMode.MULTIRUN:
        out["tensorboard"] = str(Path(out["tensorboard"]) / str(HydraConfig.get().job.num))
    return out


def close_sinks(sinks: Iterable[Sink]) -> None:
    """Close every sink; one that fails is logged, and the others still close."""
    for sink in sinks:
        try:
            sink.close()
        except Exception:
            log.exception("closing the metric sink %s failed", type(sink).__name__)


__all__ = ["PREFIX", "Sink", "check", "close_sinks", "flatten", "open_sinks", "per_sweep_point",
           "wanted"]

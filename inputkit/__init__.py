"""inputkit: configuration-driven, observable, memory-safe training input.

The public API is what ``__all__`` lists; every other module may change.
Names are imported on first use (PEP 562): ``import inputkit`` costs almost
nothing, a worker process that needs only the fetch machinery never loads
Hydra or OmegaConf, and nothing here imports torch (the device stage does, on
start).
"""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING, Any

__version__ = "0.1.0"

_EXPORTS = {
    "compose": "inputkit.config.compose",
    "InputSpec": "inputkit.config.spec",
    "RunSpec": "inputkit.config.spec",
    "load_spec": "inputkit.config.spec",
    "ConfigError": "inputkit.errors",
    "InputkitError": "inputkit.errors",
    "ShutdownError": "inputkit.errors",
    "SourceError": "inputkit.errors",
    "SourceExhausted": "inputkit.errors",
    "WorkerFailure": "inputkit.errors",
    "Runner": "inputkit.runner",
    "Source": "inputkit.sources.protocol",
    "SyntheticSource": "inputkit.sources.synthetic",
    "CoordinatorStats": "inputkit.observe.stats",
    "Dashboard": "inputkit.observe.dashboard",
    "QueueStats": "inputkit.pipeline.queues",
    "RunnerStats": "inputkit.observe.stats",
    "WorkerPoolStats": "inputkit.workers.base",
    "IndexableSource": "inputkit.sources.protocol",
    "ArraySource": "inputkit.sources.arrays",
    "ShardSource": "inputkit.sources.shards",
    "TorchDatasetSource": "inputkit.sources.torch_dataset",
    "InputkitIterableDataset": "inputkit.torch_adapter",
    "ProcessorChain": "inputkit.processors",
    "FailurePolicy": "inputkit.pipeline.failures",
    "FetchTimeout": "inputkit.pipeline.failures",
    "StallError": "inputkit.pipeline.failures",
    "SkipLimitExceeded": "inputkit.pipeline.failures",
    "MemoryBudgetError": "inputkit.planning.memory",
    "EpochEnd": "inputkit.pipeline.epochs",
    "tune": "inputkit.tuning",
    "TuneResult": "inputkit.tuning",
}

__all__ = [
    "ArraySource",
    "ConfigError",
    "CoordinatorStats",
    "Dashboard",
    "EpochEnd",
    "FailurePolicy",
    "FetchTimeout",
    "IndexableSource",
    "InputSpec",
    "InputkitIterableDataset",
    "InputkitError",
    "MemoryBudgetError",
    "ProcessorChain",
    "QueueStats",
    "RunSpec",
    "Runner",
    "RunnerStats",
    "ShardSource",
    "ShutdownError",
    "SkipLimitExceeded",
    "Source",
    "SourceError",
    "SourceExhausted",
    "StallError",
    "SyntheticSource",
    "TorchDatasetSource",
    "TuneResult",
    "WorkerFailure",
    "WorkerPoolStats",
    "__version__",
    "compose",
    "load_spec",
    "tune",
]

if TYPE_CHECKING:
    from inputkit.config.compose import compose
    from inputkit.config.spec import InputSpec, RunSpec, load_spec
    from inputkit.errors import (
        ConfigError,
        InputkitError,
        ShutdownError,
        SourceError,
        SourceExhausted,
        WorkerFailure,
    )
    from inputkit.observe.dashboard import Dashboard
    from inputkit.observe.stats import CoordinatorStats, RunnerStats
    from inputkit.pipeline.epochs import EpochEnd
    from inputkit.pipeline.failures import FailurePolicy, FetchTimeout, SkipLimitExceeded, StallError
    from inputkit.pipeline.queues import QueueStats
    from inputkit.planning.memory import MemoryBudgetError
    from inputkit.processors import ProcessorChain
    from inputkit.runner import Runner
    from inputkit.sources.arrays import ArraySource
    from inputkit.sources.protocol import IndexableSource, Source
    from inputkit.sources.shards import ShardSource
    from inputkit.sources.synthetic import SyntheticSource
    from inputkit.sources.torch_dataset import TorchDatasetSource
    from inputkit.torch_adapter import InputkitIterableDataset
    from inputkit.tuning import TuneResult, tune
    from inputkit.workers.base import WorkerPoolStats


def __getattr__(name: str) -> Any:
    module = _EXPORTS.get(name)
    if module is None:
        raise AttributeError(f"module 'inputkit' has no attribute {name!r}")
    value = getattr(importlib.import_module(module), name)
    globals()[name] = value  # later lookups skip this function
    return value


def __dir__() -> list[str]:
    return __all__

"""inputkit: configuration-driven, observable, memory-safe training input.

The public API is what ``__all__`` lists; every other module may change.
Importing inputkit does not import torch (the device stage does, on start).
"""

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
from inputkit.runner import Runner
from inputkit.sources import Source, SyntheticSource
from inputkit.stats import CoordinatorStats, QueueStats, RunnerStats, WorkerPoolStats

__version__ = "0.1.0"

__all__ = [
    "ConfigError",
    "CoordinatorStats",
    "InputSpec",
    "InputkitError",
    "QueueStats",
    "RunSpec",
    "Runner",
    "RunnerStats",
    "ShutdownError",
    "Source",
    "SourceError",
    "SourceExhausted",
    "SyntheticSource",
    "WorkerFailure",
    "WorkerPoolStats",
    "__version__",
    "compose",
    "load_spec",
]

"""Structured configs: the schema every inputkit config is checked against.

The dataclasses are registered in Hydra's ConfigStore (``base_config``,
``workers/base_workers``) and referenced from the YAML defaults lists in
``conf/``, so a misspelt key or a wrong type fails at composition with the key
named. The ``failures``, ``epoch`` and ``workers.ray`` groups are derived from their
checked records (config/records.py) by :func:`schema_of`. Range checks (a positive batch
size, a known device) live in config/spec.py and config/groups.py.
"""

from __future__ import annotations

import dataclasses
import typing
from dataclasses import dataclass, field
from enum import Enum
from typing import Any

from omegaconf import MISSING

from inputkit.config.records import CONFIG_TYPE, EpochSpec, FailurePolicy, RaySpec


class WorkerKind(str, Enum):
    """How fetch calls run: a thread pool in this process, separate worker processes, inline:
    in the consumer's own thread when it asks for a batch (no threads, no queues; for a fetch
    so cheap that handing chunks between threads would cost more than it), or Ray actors,
    on this machine or a cluster (docs/ray.md)."""

    thread = "thread"
    process = "process"
    inline = "inline"
    ray = "ray"
    auto = "auto"  # chosen from a probe of the fetch when the runner starts (kinds/auto.py)


def schema_of(record: type, name: str) -> type:
    """The Hydra structured config of a checked record (config/records.py): the same keys,
    types and defaults, in the same order, but mutable (overrides write into it), and with
    the looser config type a field declares (``CONFIG_TYPE``: a size where the record holds
    bytes). Deriving it keeps one field list per concept."""
    hints = typing.get_type_hints(record)
    fields = [(f.name, f.metadata.get(CONFIG_TYPE, hints[f.name]), field(default=f.default))
              for f in dataclasses.fields(record)]
    schema = dataclasses.make_dataclass(name, fields)
    # Where pickle (Hydra's joblib launcher pickles composed configs) and messages find it.
    schema.__module__, schema.__qualname__, schema.__doc__ = __name__, name, record.__doc__
    return schema


class StartMethod(str, Enum):
    """How worker processes start. forkserver (the default) forks each worker from a clean
    server process that has preloaded numpy and the worker code: fast, and it inherits no
    threads, locks or CUDA state from the training process (plain fork can deadlock on a
    lock held by another thread at fork time). spawn starts fresh interpreters: slowest."""

    fork = "fork"
    forkserver = "forkserver"
    spawn = "spawn"


RayConfig = schema_of(RaySpec, "RayConfig")


@dataclass
class WorkersConfig:
    # A registered worker kind (inputkit.kinds.names(): the built-in WorkerKind values, and any
    # a plugin or test registers); a string checked by the spec against the registry.
    kind: str = WorkerKind.thread.value
    # null: workers.kind=auto chooses it (with another kind: DEFAULT_WORKER_COUNT)
    count: int | None = 4
    # Process workers only: how they start, and the size of one shared-memory slot.
    start_method: StartMethod = StartMethod.forkserver
    slot_bytes: Any = "16MiB"
    ray: RayConfig = field(default_factory=RayConfig)


# The failure policies are strings checked by the spec (not Enums: OmegaConf spells an
# Enum by member name, and ``raise`` cannot be one).
ON_ERROR = ("raise", "skip", "retry")
ON_WORKER_DEATH = ("raise", "restart")
ON_STALL = ("warn", "raise")


# The groups whose checked record is declared once in config/records.py.
FailuresConfig = schema_of(FailurePolicy, "FailuresConfig")
EpochConfig = schema_of(EpochSpec, "EpochConfig")


@dataclass
class QueueConfig:
    # Chunks (fetch results) buffered between the workers and the batcher: a count (16)
    # or a size (256MiB), which bounds the bytes however large each chunk is.
    capacity: Any = 16
    # Exact batches buffered between the batcher and the device stage: a count or a size.
    batch_capacity: Any = 4


@dataclass
class MemoryConfig:
    # The most host memory the pipeline may plan to hold: a size (16GiB) or a share of
    # the RAM available when it starts (50%).
    budget: Any = "50%"
    # The most GPU memory per device for batches prefetched to it (a size), or null.
    gpu_budget: Any = None
    # Start even when the plan exceeds the budget (you have been warned).
    allow_over_budget: bool = False
    # Fetch one chunk from a private copy of the source to learn sample sizes when the
    # source config declares no fields.
    probe: bool = True


@dataclass
class DeviceStageConfig:
    # Batches already copied to the device ahead of the consumer (CUDA only;
    # on CPU the tensors share the batch's memory and nothing is copied).
    prefetch: int = 2
    # Convert fields to float32 after the copy (on the GPU with CUDA, in the device stage on
    # CPU), so batches travel as uint8: {mean: [...], std: [...], fields: [image], scale: 255.0}
    # gives (x / scale - mean) / std per channel (dim 1 of the batch); null: no conversion.
    normalize: Any = None
    # Make those fields (default: image) channels-last in memory; they must be 4-D (N, C, H, W).
    channels_last: bool = False


@dataclass
class BenchConfig:
    # Stop after this many seconds of streaming (null: no time limit).
    seconds: float | None = 10.0
    # Stop after this many batches per device and input (null: no step limit).
    steps: int | None = None
    # Only run this named input (null: every input).
    input: str | None = None
    # Seconds between progress updates (plain lines when stdout is not a TTY).
    progress_interval: float = 0.25
    # On a terminal, the full live dashboard (false: one progress line).
    dashboard: bool = True
    # Write every snapshot as a JSON line to metrics.jsonl in the run directory.
    json: bool = True
    # Save metrics.png (throughput and queue fill over time) when matplotlib is installed.
    plot: bool = True
    # html: write report.html beside summary.json (one self-contained page); null: none.
    report: str | None = "html"


@dataclass
class MetricsConfig:
    """Where the run's figures go besides metrics.jsonl (run-wide; docs/metrics.md)."""

    # A directory for TensorBoard event files (needs the tensorboard extra); null: none.
    tensorboard: str | None = None
    # Log to the active W&B run (bench starts one when none is; needs the wandb extra).
    wandb: bool = False
    # Seconds between writes from an embedded Runner; null: bench.progress_interval
    # (inputkit bench writes at its dashboard's rate, with metrics.jsonl).
    interval: float | None = None


@dataclass
class StorageConfig:
    """How to reach s3://, gs://, az:// and http(s):// data (run-wide; docs/storage.md).
    Unset keys come from the standard environment variables (AWS_ENDPOINT_URL, AWS_REGION...)."""

    # An S3-compatible server (MinIO, moto, R2...): http://127.0.0.1:9000; null: the environment.
    endpoint: str | None = None
    region: str | None = None
    # true: unsigned requests, for public buckets (no credentials looked up).
    anonymous: bool = False
    # Requests in flight per process (a folder of small objects wants many; shards few).
    concurrency: int = 32
    # One request, start to last byte; and the most an endpoint that does not answer may take.
    timeout_s: float = 60.0
    connect_timeout_s: float = 10.0
    # Transient failures (5xx, throttling, resets, timeouts) retried per request, each counted;
    # backoff_s is the first wait, doubled each retry up to 10 s, with full jitter.
    retries: int = 8
    backoff_s: float = 0.2
    # Passed to the client as its config (obstore's S3/GCS/Azure keys), over the environment.
    options: dict[str, Any] = field(default_factory=dict)


@dataclass
class CacheConfig:
    """The local disk cache of downloaded objects (run-wide; docs/storage.md)."""

    # null: $INPUTKIT_CACHE_DIR, else $XDG_CACHE_HOME/inputkit, else ~/.cache/inputkit.
    dir: str | None = None
    # A size (20GiB); null: 20GiB, but never more than half the free space of dir's disk.
    max_bytes: Any = None
    # Shards each worker fetches ahead of need.
    read_ahead: int = 4


@dataclass
class InputConfig:
    """One named input: a source, its workers, its queues and its batch size."""

    source: Any = MISSING
    batch_size: int = 256
    drop_last: bool = False
    workers: WorkersConfig = field(default_factory=WorkersConfig)
    queue: QueueConfig = field(default_factory=QueueConfig)
    device: DeviceStageConfig = field(default_factory=DeviceStageConfig)
    failures: FailuresConfig = field(default_factory=FailuresConfig)
    epoch: EpochConfig = field(default_factory=EpochConfig)
    # Chunk transforms run inside the workers after each fetch, in order: a list of
    # {_target_: ..., their arguments} (docs/processors.md). Seeded from epoch.seed.
    processors: list[Any] = field(default_factory=list)


@dataclass
class InputkitConfig(InputConfig):
    """The root config: a single input at the top level, or several under ``inputs``.

    Entries of ``inputs`` start from the top-level input keys and override what
    they set, so ``inputs.val.batch_size=64`` changes only the val input.
    """

    devices: Any = "auto"
    # auto: under torchrun (RANK/WORLD_SIZE/LOCAL_RANK set), read only this rank's share of
    # every epoch and default to its own GPU; off: ignore those variables.
    distributed: str = "auto"
    inputs: dict[str, Any] = field(default_factory=dict)
    bench: BenchConfig = field(default_factory=BenchConfig)
    memory: MemoryConfig = field(default_factory=MemoryConfig)
    storage: StorageConfig = field(default_factory=StorageConfig)
    cache: CacheConfig = field(default_factory=CacheConfig)
    metrics: MetricsConfig = field(default_factory=MetricsConfig)


INPUT_KEYS = ("source", "batch_size", "drop_last", "workers", "queue", "device", "failures", "epoch",
              "processors")


def register_configs() -> None:
    """Register the schemas in Hydra's ConfigStore (idempotent)."""
    from hydra.core.config_store import ConfigStore
    from omegaconf import OmegaConf

    # ${cpus:}: the cores this process may run on (its affinity), e.g. workers.count=${cpus:}.
    OmegaConf.register_new_resolver("cpus", usable_cpus, replace=True)
    store = ConfigStore.instance()
    store.store(name="base_config", node=InputkitConfig)
    store.store(group="workers", name="base_workers", node=WorkersConfig)


def usable_cpus() -> int:
    """The cores this process may run on: its CPU affinity, not the machine's core count."""
    import os

    try:
        return len(os.sched_getaffinity(0))
    except AttributeError:  # not Linux
        return os.cpu_count() or 1

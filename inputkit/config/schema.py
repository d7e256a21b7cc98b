"""Structured configs: the schema every inputkit config is checked against.

The dataclasses are registered in Hydra's ConfigStore (``base_config``,
``workers/base_workers``) and referenced from the YAML defaults lists in
``conf/``, so a misspelt key or a wrong type fails at composition with the key
named. Range checks (a positive batch size, a known device) live in
:mod:`inputkit.config.validate`.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from enum import Enum
from typing import Any

from omegaconf import MISSING


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


class StartMethod(str, Enum):
    """How worker processes start. forkserver (the default) forks each worker from a clean
    server process that has preloaded numpy and the worker code: fast, and it inherits no
    threads, locks or CUDA state from the training process (plain fork can deadlock on a
    lock held by another thread at fork time). spawn starts fresh interpreters: slowest."""

    fork = "fork"
    forkserver = "forkserver"
    spawn = "spawn"


@dataclass
class RayConfig:
    """Ray workers (``workers=ray``): where the actors run and how much they may have in flight."""

    # null: start a private local Ray for this run (never attach to a cluster a leftover
    # /tmp/ray file points at); auto: the cluster `ray start` made on this machine (or
    # RAY_ADDRESS); host:port: a cluster's head (GCS); ray://host:port: through Ray Client.
    address: str | None = None
    # The private local Ray only: the CPUs it may use (null: the cores this process may run on).
    num_cpus: float | None = None
    # CPUs each actor asks Ray for (a fraction packs more actors than cores).
    cpus_per_actor: float = 1.0
    # SPREAD: actors over as many nodes as have room; DEFAULT: Ray's own placement (packs).
    scheduling: str = "SPREAD"
    # Work items (or fetch calls) each actor holds at once: one it reads, the rest queued.
    inflight: int = 2
    # The most object-store bytes this input on one device may pin: results not yet received
    # plus received chunks still referenced (null: what the queues can hold anyway).
    inflight_bytes: Any = None
    # Passed to each actor as Ray's runtime_env (pip, env_vars, working_dir...).
    runtime_env: dict[str, Any] | None = None
    # Seconds to reach the cluster, and for every actor to be placed and build its source.
    connect_timeout: float = 15.0
    start_timeout: float = 120.0


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


@dataclass
class FailuresConfig:
    # A fetch that raises: raise (stop with the original exception), skip or retry.
    on_error: str = "raise"
    # retry: how many more calls before the error is raised, and the wait before the
    # first of them (doubled after each).
    retries: int = 3
    retry_backoff: float = 0.05
    # A worker process that dies: raise, or restart a new one in its place.
    on_worker_death: str = "raise"
    # restart: the most restarts per input and device before a death is raised (null: no limit).
    max_restarts: int | None = 10
    # Seconds one fetch may take before it fails as a FetchTimeout naming the worker (null: none).
    fetch_timeout: float | None = None
    # Seconds a stage may make no progress (stuck in one fetch, only empty chunks) before it
    # is reported with its stack (null: no watchdog).
    stall_timeout: float | None = 60.0
    on_stall: str = "warn"
    # skip: the run fails with SkipLimitExceeded after this many skipped fetches in a row
    # (null: no limit) ...
    max_consecutive_skips: int | None = 100
    # ... or when more than this share of all fetches were skipped, judged from 100
    # fetches on (null: no limit).
    max_skip_share: float | None = 0.5


@dataclass
class EpochConfig:
    """Indexable sources (``__len__`` and ``read(indices)``) are read by index range."""

    # Epochs to stream (null: endless); each `for batch in runner.device(i)` is one epoch.
    count: int | None = 1
    # Samples per read() call (null: the batch size).
    chunk_size: int | None = None
    # A new order each epoch, drawn from (seed, epoch): false (index order), true (a global
    # permutation) or shards (a block shuffle that keeps reads within a few of the source's
    # shards: for shards in object storage; see docs/storage.md).
    shuffle: Any = False
    # shuffle=shards: shards per block; a block's samples are shuffled among themselves, so
    # a cache holds about 2x this many shards.
    shuffle_window: int = 8
    seed: int = 0
    # Deliver chunks in index order: same config + seed -> same batches, whatever the
    # worker count or timing.
    ordered: bool = False


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

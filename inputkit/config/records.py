"""The checked records of the ``failures``, ``epoch`` and ``workers.ray`` groups, each declared once.

Each group is one frozen dataclass here: the record that pools, worker processes and the
dispatcher receive (picklable, and light to import: worker processes load it). Its key names,
types, defaults and the comments that explain them are written only here: the Hydra schema
of the group (``FailuresConfig``, ``EpochConfig``, ``RayConfig`` in config/schema.py) is
derived from the record, and config/groups.py checks a composed node and builds the record
from every one of its fields. A key the config spells more loosely than the record holds it
(a size such as 512MiB for a byte count) declares its config type with :func:`loose`.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

# A field's metadata key: the type the config accepts for it, where the record holds a
# checked, narrower one (config/schema.py gives that type to Hydra).
CONFIG_TYPE = "inputkit.config_type"


def loose(default: Any, config_type: Any = Any) -> Any:
    """A record field whose config value is ``config_type`` (default Any) until it is checked."""
    return field(default=default, metadata={CONFIG_TYPE: config_type})


@dataclass(frozen=True)
class FailurePolicy:
    """The checked ``failures`` config of one input (picklable, for worker processes)."""

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


@dataclass(frozen=True)
class EpochSpec:
    """The checked ``epoch`` config of one input: indexable sources (``__len__`` and
    ``read(indices)``) are read by index range."""

    # Epochs to stream (null: endless); each `for batch in runner.device(i)` is one epoch.
    count: int | None = 1
    # Samples per read() call (null: the batch size).
    chunk_size: int | None = None
    # A new order each epoch, drawn from (seed, epoch): false (index order), true (a global
    # permutation) or shards (a block shuffle that keeps reads within a few of the source's
    # shards: for shards in object storage; see docs/storage.md). Checked: False, True or "shards".
    shuffle: bool | str = loose(False)
    # shuffle=shards: shards per block; a block's samples are shuffled among themselves, so
    # a cache holds about 2x this many shards.
    shuffle_window: int = 8
    seed: int = 0
    # Deliver chunks in index order: same config + seed -> same batches, whatever the
    # worker count or timing.
    ordered: bool = False

    @property
    def shuffle_mode(self) -> str:
        """"none", "global" or "shards" (see inputkit/pipeline/shuffle.py)."""
        if self.shuffle == "shards":
            return "shards"
        return "global" if self.shuffle in (True, "global") else "none"


@dataclass(frozen=True)
class RaySpec:
    """The checked ``workers.ray`` config (``workers=ray``): where the actors run and how much
    they may have in flight (docs/ray.md)."""

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
    # plus received chunks still referenced (null: what the queues can hold anyway). A size
    # in the config, bytes once checked.
    inflight_bytes: int | None = loose(None)
    # Passed to each actor as Ray's runtime_env (pip, env_vars, working_dir...).
    runtime_env: dict[str, Any] | None = None
    # Seconds to reach the cluster, and for every actor to be placed and build its source.
    connect_timeout: float = 15.0
    start_timeout: float = 120.0

"""Check one composed config group and build its record (config/records.py) from it.

The ``failures``, ``epoch`` and ``workers.ray`` nodes arrive merged into their schema, so
every key is there with the type Hydra checked. Each builder checks ranges and the keys the
config spells loosely, raising a :class:`~inputkit.errors.ConfigError` that names the key
under ``p`` (``""`` or ``inputs.<name>.``), then hands :func:`record` only those values:
every other field is copied by name, so a field added to a record reaches it unedited.
"""

from __future__ import annotations

import dataclasses
from typing import Any, TypeVar

from omegaconf import DictConfig, OmegaConf

from inputkit.config.records import EpochSpec, FailurePolicy, RaySpec
from inputkit.config.schema import ON_ERROR, ON_STALL, ON_WORKER_DEATH
from inputkit.config.sizes import parse_size
from inputkit.errors import ConfigError

R = TypeVar("R")


def record(cls: type[R], node: DictConfig, **checked: Any) -> R:
    """``cls`` built from every one of its fields: ``checked`` where given, else the node's
    value of that key as composed (plain containers, not OmegaConf nodes)."""
    values = {f.name: checked[f.name] if f.name in checked else plain(node[f.name])
              for f in dataclasses.fields(cls)}
    return cls(**values)


def plain(value: Any) -> Any:
    """An OmegaConf node as plain Python (resolved); anything else as it is."""
    return OmegaConf.to_container(value, resolve=True) if OmegaConf.is_config(value) else value


def failure_policy(node: DictConfig, p: str) -> FailurePolicy:
    """``failures``: the policies by name, counts and seconds in range."""
    for key, value, allowed in (("on_error", node.on_error, ON_ERROR),
                                ("on_worker_death", node.on_worker_death, ON_WORKER_DEATH),
                                ("on_stall", node.on_stall, ON_STALL)):
        if value not in allowed:
            raise ConfigError(p + key, f"unknown policy '{value}'; use one of: {', '.join(allowed)}")
    if node.retries < 0:
        raise ConfigError(p + "retries", f"must be >= 0, got {node.retries}")
    if node.retry_backoff < 0:
        raise ConfigError(p + "retry_backoff", f"must be >= 0 seconds, got {node.retry_backoff}")
    if node.max_restarts is not None and node.max_restarts < 0:
        raise ConfigError(p + "max_restarts", f"must be >= 0 or null (no limit), got {node.max_restarts}")
    for key in ("fetch_timeout", "stall_timeout"):
        value = node[key]
        if value is not None and value <= 0:
            raise ConfigError(p + key, f"must be a positive number of seconds or null (off), got {value}")
    if node.max_consecutive_skips is not None and node.max_consecutive_skips < 1:
        raise ConfigError(p + "max_consecutive_skips",
                          f"must be at least 1, or null (no limit), got {node.max_consecutive_skips}")
    share = node.max_skip_share
    if share is not None and not 0 < share <= 1:
        raise ConfigError(p + "max_skip_share", "must be more than 0 and at most 1, or null "
                          f"(no limit), got {share:g}")
    return record(FailurePolicy, node)


def epoch_spec(node: DictConfig, p: str) -> EpochSpec:
    """``epoch``: counts in range; ``shuffle`` as False, True or "shards"."""
    if node.count is not None and node.count < 1:
        raise ConfigError(p + "count", f"must be at least 1, or null for endless, got {node.count}")
    if node.chunk_size is not None and node.chunk_size < 1:
        raise ConfigError(p + "chunk_size", f"must be at least 1, or null for the batch size, "
                          f"got {node.chunk_size}")
    shuffle = node.shuffle
    if isinstance(shuffle, str) and shuffle.strip().lower() in ("shards", "global"):
        shuffle = True if shuffle.strip().lower() == "global" else "shards"
    if not isinstance(shuffle, bool) and shuffle != "shards":
        raise ConfigError(p + "shuffle", f"expected false (index order), true (a global "
                          f"permutation) or shards (a block shuffle over the source's shards), "
                          f"got {shuffle!r}")
    window = node.shuffle_window
    if isinstance(window, bool) or not isinstance(window, int) or window < 1:
        raise ConfigError(p + "shuffle_window", f"must be a whole number of shards, at least 1, "
                          f"got {window!r}")
    return record(EpochSpec, node, shuffle=shuffle)


def ray_spec(node: DictConfig, p: str) -> RaySpec:
    """``workers.ray``: positive sizes and timeouts, a known placement, an address that
    does not contradict ``num_cpus``; ``inflight_bytes`` parsed from a size."""
    for key, low in (("cpus_per_actor", 0.0), ("connect_timeout", 0.0), ("start_timeout", 0.0)):
        if not node[key] > low:
            raise ConfigError(p + key, f"must be more than {low:g}, got {node[key]}")
    if node.inflight < 1:
        raise ConfigError(p + "inflight", f"must be at least 1, got {node.inflight}")
    if node.num_cpus is not None and not node.num_cpus > 0:
        raise ConfigError(p + "num_cpus", f"must be more than 0 (or null), got {node.num_cpus}")
    if node.scheduling not in ("SPREAD", "DEFAULT"):
        raise ConfigError(p + "scheduling", f"must be SPREAD or DEFAULT, got {node.scheduling!r}")
    address = node.address
    if address is not None and not str(address).strip():
        raise ConfigError(p + "address", "is empty; use null (a private local Ray), auto, "
                          "host:port or ray://host:port")
    if address is not None and node.num_cpus is not None:
        raise ConfigError(p + "num_cpus", f"sizes the private local Ray, but address={address} "
                          "names a cluster; set the CPUs where the cluster starts (ray start "
                          "--num-cpus), or drop one of the two")
    inflight_bytes = None if node.inflight_bytes is None else \
        parse_size(node.inflight_bytes, p + "inflight_bytes")
    return record(RaySpec, node, address=None if address is None else str(address).strip(),
                  inflight_bytes=inflight_bytes)

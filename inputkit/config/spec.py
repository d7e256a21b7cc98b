"""Turn a composed config into a checked, typed run specification.

Whatever the config came from (Hydra on the command line, ``inputkit.compose``,
a user's own DictConfig or plain dict), it goes through :func:`load_spec`
before anything starts: unknown keys, wrong types and out-of-range values fail
here with a :class:`~inputkit.errors.ConfigError` naming the key.
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

from omegaconf import DictConfig, OmegaConf, open_dict
from omegaconf.errors import OmegaConfBaseException

from inputkit.config.errors import config_error_from
from inputkit.config.groups import epoch_spec, failure_policy, plain, ray_spec
from inputkit.config.normalize import NormalizeSpec, parse_normalize
from inputkit.config.records import EpochSpec, FailurePolicy, RaySpec
from inputkit.config.schema import INPUT_KEYS, InputConfig, InputkitConfig
from inputkit.config.sizes import parse_budget, parse_size
from inputkit.errors import ConfigError

DEFAULT_INPUT = "main"
DEFAULT_WORKER_COUNT = 4  # workers.count=null with a kind other than auto
_DEVICE_RE = re.compile(r"^(cpu|cuda(:\d+)?)$")
_INPUT_NAME_RE = re.compile(r"^[A-Za-z_][A-Za-z0-9_-]*$")


@dataclass(frozen=True)
class InputSpec:
    """One named input, checked. ``source`` is the plain source config (with ``_target_``)."""

    name: str
    source: dict[str, Any]
    batch_size: int
    drop_last: bool
    worker_kind: str
    worker_count: int
    start_method: str
    slot_bytes: int
    chunk_capacity: int  # items; with a byte limit, effectively unbounded
    batch_capacity: int
    chunk_capacity_bytes: int | None  # set when queue.capacity is a size
    batch_capacity_bytes: int | None
    device_prefetch: int
    key_prefix: str  # where this input's keys live: "" or "inputs.<name>."
    failures: FailurePolicy = FailurePolicy()
    epoch: EpochSpec = EpochSpec()
    processors: tuple[dict[str, Any], ...] = ()  # plain configs, each with _target_
    normalize: NormalizeSpec | None = None  # device.normalize: float32 after the copy
    channels_last: bool = False
    ray: RaySpec = RaySpec()


@dataclass(frozen=True)
class RunSpec:
    """Everything a Runner needs: the inputs, the requested devices and the bench limits."""

    inputs: tuple[InputSpec, ...]
    devices: tuple[str, ...]  # as configured; "auto" is resolved when the runner starts
    bench_seconds: float | None
    bench_steps: int | None
    bench_input: str | None
    progress_interval: float
    bench_dashboard: bool = True
    bench_json: bool = True
    bench_plot: bool = True
    bench_report: str | None = "html"
    memory_budget: Any = "50%"
    memory_gpu_budget: Any = None
    allow_over_budget: bool = False
    probe: bool = True
    distributed: str = "auto"
    # the run-wide storage and cache groups, checked; storage.configure() takes them
    storage: Mapping[str, Any] = field(default_factory=dict)
    cache: Mapping[str, Any] = field(default_factory=dict)
    # the metrics group: TensorBoard / W&B sinks (inputkit.observe.sinks), checked
    metrics: Mapping[str, Any] = field(default_factory=dict)

    def input(self, name: str, key: str = "bench.input") -> InputSpec:
        """The input called ``name``; a ConfigError naming ``key`` lists the known ones."""
        for spec in self.inputs:
            if spec.name == name:
                return spec
        known = ", ".join(s.name for s in self.inputs)
        raise ConfigError(key, f"no input named '{name}'; this config declares: {known}")


def load_spec(cfg: DictConfig | Mapping[str, Any] | InputkitConfig) -> RunSpec:
    """Check ``cfg`` against the schema and ranges; return the typed :class:`RunSpec`."""
    root = _merge_into_schema(OmegaConf.structured(InputkitConfig), _without_hydra(cfg), prefix="")
    inputs_node = root.inputs
    if len(inputs_node) == 0:
        specs = [_input_spec(DEFAULT_INPUT, root, key_prefix="")]
    else:
        specs = []
        top = {k: OmegaConf.to_container(root[k]) if OmegaConf.is_config(root[k]) else root[k]
               for k in INPUT_KEYS if not OmegaConf.is_missing(root, k)}
        for name in inputs_node:
            name = str(name)
            prefix = f"inputs.{name}."
            if not _INPUT_NAME_RE.match(name):
                raise ConfigError(f"inputs.{name}", "input names must be identifiers (e.g. train, val)")
            entry = inputs_node[name]
            if entry is None:
                entry = {}
            elif not OmegaConf.is_dict(entry) and not isinstance(entry, Mapping):
                raise ConfigError(f"inputs.{name}", f"expected a mapping of input keys, got {entry!r}")
            schema = OmegaConf.structured(InputConfig)
            base = _merge_into_schema(schema, top, prefix="")
            entry_source = entry.get("source") if "source" in entry else None
            if entry_source is not None and "_target_" in entry_source:
                # A named input that names its own _target_ replaces the top-level source
                # instead of merging into it: the new plugin does not inherit keys it may
                # not accept. Without _target_, its keys tweak the top-level source.
                base.source = None
            node = _merge_into_schema(base, entry, prefix=prefix)
            specs.append(_input_spec(name, node, key_prefix=prefix))
    devices = _devices(root.devices)
    bench = root.bench
    seconds = bench.seconds
    steps = bench.steps
    if seconds is not None and seconds <= 0:
        raise ConfigError("bench.seconds", f"must be positive or null, got {seconds}")
    if steps is not None and steps <= 0:
        raise ConfigError("bench.steps", f"must be a positive number of batches or null, got {steps}")
    if bench.progress_interval <= 0:
        raise ConfigError("bench.progress_interval", f"must be positive, got {bench.progress_interval}")
    spec = RunSpec(
        inputs=tuple(specs),
        devices=devices,
        bench_seconds=seconds,
        bench_steps=steps,
        bench_input=bench.input,
        progress_interval=float(bench.progress_interval),
        bench_dashboard=bool(bench.dashboard),
        bench_json=bool(bench.json),
        bench_plot=bool(bench.plot),
        bench_report=_report(bench.report),
        memory_budget=root.memory.budget,
        memory_gpu_budget=root.memory.gpu_budget,
        allow_over_budget=bool(root.memory.allow_over_budget),
        probe=bool(root.memory.probe),
        distributed=str(root.distributed),
        storage=_group(root, "storage"),
        cache=_group(root, "cache"),
        metrics=_group(root, "metrics"),
    )
    from inputkit.storage.settings import cache_settings, storage_settings

    storage_settings(spec.storage)  # a bad value is a ConfigError naming storage.X now
    cache_settings(spec.cache)
    interval = spec.metrics.get("interval")
    if interval is not None and interval <= 0:
        raise ConfigError("metrics.interval", f"must be positive seconds or null, got {interval}")
    if spec.distributed not in ("auto", "off"):
        raise ConfigError("distributed", f"unknown mode '{spec.distributed}'; use auto or off")
    parse_budget(spec.memory_budget, "memory.budget", available=2**40)  # check the syntax now
    if spec.memory_gpu_budget is not None:
        parse_size(spec.memory_gpu_budget, "memory.gpu_budget")
    if bench.input is not None:
        spec.input(bench.input)  # raises a ConfigError naming the known inputs
    return spec


def _report(value: Any) -> str | None:
    """bench.report: ``html`` (report.html beside summary.json) or none (null or ``none``)."""
    if value is None or str(value).lower() in ("none", "false"):
        return None
    if str(value).lower() != "html":
        raise ConfigError("bench.report", f"must be html or null (no report), got {value!r}")
    return "html"


def _group(root: DictConfig, name: str) -> dict[str, Any]:
    return dict(OmegaConf.to_container(root[name], resolve=True))  # type: ignore[arg-type]


def _without_hydra(cfg: Any) -> Any:
    if isinstance(cfg, InputkitConfig):
        return OmegaConf.structured(cfg)
    if OmegaConf.is_config(cfg):
        if "hydra" in cfg:  # a job's config: resolve ours without Hydra's run-time keys
            cfg = cfg.copy()
            with open_dict(cfg):
                del cfg["hydra"]
        cfg = OmegaConf.to_container(cfg, resolve=True)
    elif isinstance(cfg, Mapping):
        cfg = dict(cfg)
    else:
        raise ConfigError("", f"expected a DictConfig or a mapping, got {type(cfg).__name__}")
    cfg.pop("hydra", None)
    return cfg


def _merge_into_schema(schema: DictConfig, values: Any, prefix: str) -> DictConfig:
    try:
        return OmegaConf.merge(schema, values)  # type: ignore[return-value]
    except OmegaConfBaseException as exc:
        raise config_error_from(exc, prefix) from exc


def _input_spec(name: str, node: DictConfig, key_prefix: str) -> InputSpec:
    p = key_prefix
    if OmegaConf.is_missing(node, "source") or node.source is None:
        raise ConfigError(p + "source", "no source configured; pick one with source=synthetic "
                          "or set source._target_ to a fetch plugin")
    try:  # a mandatory value left as ??? (e.g. source=arrays without source.path) is named here
        source = OmegaConf.to_container(node.source, resolve=True, throw_on_missing=True)
    except OmegaConfBaseException as exc:
        raise config_error_from(exc, p) from exc
    if not isinstance(source, dict):
        raise ConfigError(p + "source", f"expected a mapping with _target_, got {source!r}")
    if not isinstance(source.get("_target_"), str) or not source["_target_"]:
        raise ConfigError(p + "source._target_", "missing; name the fetch plugin to use, "
                          "e.g. source._target_=mypkg.data:fetch")
    chunk_count, chunk_bytes = _capacity(node.queue.capacity, p + "queue.capacity")
    batch_count, batch_bytes = _capacity(node.queue.batch_capacity, p + "queue.batch_capacity")
    checks = [
        ("batch_size", node.batch_size, 1),
        ("workers.count", 1 if node.workers.count is None else node.workers.count, 1),
        ("device.prefetch", node.device.prefetch, 1),
    ]
    for key, value, low in checks:
        if value < low:
            raise ConfigError(p + key, f"must be at least {low}, got {value}")
    kind = _worker_kind(node.workers.kind, p + "workers.kind")
    # Inline, the consumer's thread is the one worker: workers.count (an experiment's, say)
    # does not apply, so workers=inline works on top of any config.
    inline = kind == "inline"
    return InputSpec(
        name=name,
        source=source,
        batch_size=int(node.batch_size),
        drop_last=bool(node.drop_last),
        worker_kind=kind,
        worker_count=1 if inline else _worker_count(node.workers.count, kind),
        start_method=node.workers.start_method.value,
        slot_bytes=parse_size(node.workers.slot_bytes, p + "workers.slot_bytes"),
        chunk_capacity=chunk_count,
        batch_capacity=batch_count,
        chunk_capacity_bytes=chunk_bytes,
        batch_capacity_bytes=batch_bytes,
        device_prefetch=int(node.device.prefetch),
        key_prefix=key_prefix,
        failures=failure_policy(node.failures, p + "failures."),
        epoch=epoch_spec(node.epoch, p + "epoch."),
        processors=_processors(node.processors, p + "processors"),
        normalize=parse_normalize(plain(node.device.normalize), p + "device.normalize"),
        channels_last=bool(node.device.channels_last),
        ray=ray_spec(node.workers.ray, p + "workers.ray."),
    )


def _worker_count(value: int | None, kind: str) -> int:
    """``workers.count``; null (the shipped ``workers: auto``): 0 with ``kind=auto``, which
    chooses it when the runner starts (inputkit.kinds.auto), else ``DEFAULT_WORKER_COUNT``."""
    if value is None:
        return 0 if kind == "auto" else DEFAULT_WORKER_COUNT
    return int(value)


def _worker_kind(value: Any, key: str) -> str:
    """``workers.kind``: any registered kind (the built-in ones, or one a plugin registered)."""
    from inputkit import kinds

    value = getattr(value, "value", value)  # a WorkerKind member, from code that builds configs
    known = kinds.names()
    if not isinstance(value, str) or value not in known:
        raise ConfigError(key, f"Invalid value {value!r}, expected one of [{', '.join(known)}]")
    return value


def _processors(node: Any, key: str) -> tuple[dict[str, Any], ...]:
    configs = OmegaConf.to_container(node, resolve=True) if OmegaConf.is_config(node) else node
    out = []
    for i, config in enumerate(configs or []):
        if not isinstance(config, dict) or not isinstance(config.get("_target_"), str):
            raise ConfigError(f"{key}[{i}]", "expected {_target_: pkg.module.Processor, ...its "
                              f"arguments}}, got {config!r}; see docs/processors.md")
        out.append(config)
    return tuple(out)


def _devices(value: Any) -> tuple[str, ...]:
    if OmegaConf.is_config(value):
        value = OmegaConf.to_container(value)
    items = [value] if isinstance(value, str) else value
    if not isinstance(items, list) or not items:
        raise ConfigError("devices", f"expected auto, cpu, cuda:N or a non-empty list of them, got {value!r}")
    out = []
    for item in items:
        text = str(item).strip()
        if text == "auto":
            if len(items) != 1:
                raise ConfigError("devices", "'auto' picks the devices itself and cannot be combined "
                                  "with others; use devices=auto or a list such as "
                                  "devices=[cuda:0,cuda:1]")
            out.append(text)
        elif _DEVICE_RE.match(text):
            out.append("cuda:0" if text == "cuda" else text)
        else:
            raise ConfigError("devices", f"unknown device {item!r}; use auto, cpu, cuda:N "
                              "or a list such as devices=[cuda:0,cuda:1]")
    return tuple(out)


UNBOUNDED_ITEMS = 1 << 30  # the item limit of a queue bounded by bytes


def _capacity(value: Any, key: str) -> tuple[int, int | None]:
    """A queue capacity: a count of items (>= 1), or a size such as 256MiB."""
    if isinstance(value, bool):
        raise ConfigError(key, f"expected a count (16) or a size (256MiB), got {value!r}")
    if isinstance(value, int) or (isinstance(value, str) and value.strip().isdigit()):
        count = int(value)
        if count < 1:
            raise ConfigError(key, f"must be at least 1, got {count}")
        return count, None
    if isinstance(value, float):
        raise ConfigError(key, f"expected a whole count (16) or a size (256MiB), got {value!r}")
    return UNBOUNDED_ITEMS, parse_size(value, key)

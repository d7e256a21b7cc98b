"""The Runner: every coordinator of a config (input x device), started and stopped together.

::

    cfg = inputkit.compose(overrides=["batch_size=32"])
    with inputkit.Runner(cfg) as runner:
        for batch in runner.device(0):       # dict of tensors on device 0
            ...
        for step in runner.steps():          # one batch per device, for data parallelism
            ...
"""

from __future__ import annotations

import atexit
import dataclasses
import logging
import threading
import time
from collections.abc import Callable, Iterator, Sequence
from types import TracebackType
from typing import TYPE_CHECKING, Any

from inputkit import kinds, startup
from inputkit.config.spec import RunSpec, load_spec
from inputkit.errors import InputkitError, ShutdownError
from inputkit.observe.run_snapshot import run_snapshot
from inputkit.observe.stats import RunnerStats
from inputkit.pipeline.chunk import ChunkSchema
from inputkit.pipeline.coordinator import Abort, Coordinator, Stages
from inputkit.pipeline.distributed import RankInfo, rank_info
from inputkit.pipeline.input_setup import (
    check_epoch_keys,
    epoch_orders,
    expect_prefetcher,
    shard_prefetcher,
)
from inputkit.pipeline.resume import VERSION, Resume, check_resume, input_state, read_state
from inputkit.pipeline.shutdown import Cleanup
from inputkit.pipeline.watchdog import Watchdog, Watched
from inputkit.sources.loader import BoundSource, build_source, import_target
from inputkit.sources.protocol import indexed_length
from inputkit.startup import Prepared

if TYPE_CHECKING:
    from inputkit.planning.memory import MemoryPlan

Batch = dict[str, Any]
log = logging.getLogger(__name__)


class Runner:
    """Builds one coordinator per input x device from ``cfg`` and hands out their batches.

    ``cfg`` is a composed DictConfig (``inputkit.compose``), a plain mapping, or a
    :class:`RunSpec`. ``inputs`` restricts which named inputs start (default: all).
    Use it as a context manager, or call :meth:`start` and :meth:`close`.
    """

    def __init__(self, cfg: Any, *, inputs: Sequence[str] | None = None,
                 prepared: Prepared | None = None) -> None:
        """``prepared``: sizes and sources an earlier plan of the same config found (the
        ``inputkit bench`` command plans before it starts the runner); taken, not built again."""
        self.spec: RunSpec = cfg if isinstance(cfg, RunSpec) else load_spec(cfg)
        self._prepared = prepared
        names = [s.name for s in self.spec.inputs]
        if inputs is not None:
            for name in inputs:
                self.spec.input(name, key="Runner(inputs=...)")  # lists the known inputs
            names = [n for n in names if n in set(inputs)]
        self.input_names: tuple[str, ...] = tuple(names)
        self.devices: tuple[str, ...] = ()
        self.rank = RankInfo()  # under torchrun: this process's rank (set by start())
        self._coordinators: dict[tuple[str, int], Coordinator] = {}
        self._sources: list[BoundSource] = []
        # What each input's source says about itself (run_info(): an image folder's classes),
        # for the run's summary; from whichever copy of the source this process builds.
        self.source_info: dict[str, dict[str, Any]] = {}
        self._source_of: dict[str, BoundSource] = {}  # input -> the source this process holds
        # input -> its composite source's component_positions (capabilities.ReportsComponents)
        self._components_of: dict[str, Callable[..., dict[str, Any]]] = {}
        self._abort = Abort()
        self._lock = threading.Lock()
        self._state = "new"
        self._started_at = 0.0
        self.plan: MemoryPlan | None = None  # the memory plan checked by start()
        self.auto: dict[str, Any] = {}  # input -> what workers.kind=auto chose (kinds/auto.py)
        self._resume: dict[str, Resume] = {}  # load_state_dict()
        # A runner dropped without close() (garbage-collected, or still open at interpreter
        # exit) stops its threads and processes all the same. The cleanup holds the stages
        # and sources, not the runner, so it does not keep the runner alive.
        self._stages: list[Stages | Watchdog] = []
        self._cleanup = Cleanup(self._stages, self._sources)
        # metrics.tensorboard / metrics.wandb written from a thread (observe/reporter.py);
        # inputkit bench sets False: it writes the same records from its watch loop.
        self.report_metrics = True

    # lifecycle -------------------------------------------------------------------------------

    def start(self) -> Runner:
        """Resolve devices, build the sources and start every coordinator."""
        from inputkit.pipeline.device import resolve_devices

        with self._lock:
            if self._state != "new":
                raise InputkitError(f"Runner.start(): the runner is already {self._state}; "
                                    "create a new Runner to start again")
            self._state = "starting"
        try:
            from inputkit import storage

            # before any source is built; process workers inherit it through the environment
            storage.configure(self.spec.storage, self.spec.cache)
            with startup.step("devices", "importing torch, resolving devices"):
                self.rank = rank_info(self.spec.distributed)
                self.devices = tuple(resolve_devices(
                    self.spec.devices, self.rank.local_rank if self.rank.world_size > 1 else None))
            first_slot, slots = self.rank.device_slots(len(self.devices))
            # workers.kind=auto: a concrete kind and count, before anything is planned or built
            from inputkit.kinds.auto_probe import resolve

            # The probes' copies (auto's and the memory probe's, or the command's plan's):
            # built once, used here.
            probed: dict[str, BoundSource] = {}
            try:
                with startup.step("probe/plan", "probing fetch for workers.kind=auto"):
                    self.spec, self.auto = resolve(self.spec, self._prepared.auto if self._prepared
                                                   else None, self.input_names, keep=probed)
                known, taken = self._prepared.take(self.spec) if self._prepared else ({}, {})
                for name, copy in taken.items():  # the plan's copy; one probed here is spare
                    spare = probed.pop(name, None)
                    if spare is not None:
                        spare.close()
                    probed[name] = copy
                with startup.step("probe/plan", "planning memory"):
                    self.plan = self._check_memory(probed, known)
            finally:
                self._sources.extend(probed.values())  # closed by close() unless used below
            for name in self.input_names:
                spec = self.spec.input(name)
                key = f"{spec.key_prefix}source"
                source: BoundSource | None = probed.get(name)
                self._note_info(name, source)
                if kinds.get(spec.worker_kind, f"{spec.key_prefix}workers.kind").source_here:
                    # (thread, inline, or a registered kind of the same sort): one source object
                    if source is not None and indexed_length(source.obj) is None:
                        self._drop_source(source)  # a fetch source: the probe consumed a chunk
                        source = None
                    if source is None:
                        with startup.step("index", f"building {key} ({spec.source['_target_']})"):
                            source = build_source(spec.source, key=key)
                        self._sources.append(source)
                        self._note_info(name, source)
                    self._source_of[name] = source
                    length = indexed_length(source.obj)
                    orders = epoch_orders(spec, source, length)
                else:  # processes (or actors) build their own, or take a copy of this one
                    if source is None:  # fail here, not in every worker
                        target = import_target(spec.source["_target_"], key=f"{key}._target_")
                        if callable(getattr(target, "read", None)):
                            with startup.step("index", f"building {key} ({spec.source['_target_']})"):
                                source = build_source(spec.source, key=key)
                            self._sources.append(source)
                    length = indexed_length(source.obj) if source is not None else None
                    orders = epoch_orders(spec, source, length)
                    if source is not None and not (spec.worker_kind == "process"
                                                   and source.caps.ships_built):
                        self._drop_source(source)  # the workers build their own from the config
                        source = None
                    if source is not None:  # the copy the workers take: runner.source() answers
                        self._source_of[name] = source
                check_epoch_keys(spec, length)
                if spec.processors:  # a bad processor config fails here, naming processors[i]
                    from inputkit.processors import ProcessorChain

                    ProcessorChain.from_config(list(spec.processors),
                                               key=f"{spec.key_prefix}processors")
                schema = ChunkSchema(spec.source["_target_"])
                resume = check_resume(self._resume.get(name), name, length)
                if length is not None:  # (then every device has a dispatcher: a prefetcher runs)
                    expect_prefetcher(source)  # before process workers take a pickled copy
                for index, device in enumerate(self.devices):
                    coordinator = Coordinator(spec, device, index, source, schema, self._abort,
                                              slots, length, slot=first_slot + index,
                                              resume=resume, orders=orders)
                    # A stream outlives the expression that made it: Runner(cfg).start().device(0)
                    # keeps its runner (and so its pipeline) alive while the stream is in use.
                    coordinator.owner = self
                    if self.plan is not None:
                        coordinator.planned = {t.stage: t.bytes for t in self.plan.terms
                                               if t.input == name}
                    self._coordinators[(name, index)] = coordinator
                    self._stages.append(coordinator.stages)
                prefetcher = shard_prefetcher(name, source, [
                    self._coordinators[(name, i)].dispatcher for i in range(len(self.devices))])
                if prefetcher is not None:  # before the workers start (and take the source)
                    self._stages.append(prefetcher.start())
            self._watchdog = Watchdog([
                Watched(c.workers, c.spec.failures, c.label) for c in self._coordinators.values()])
            self._stages.insert(0, self._watchdog)  # first to stop: it looks at the pools
            # Dropped without close(): the watchdog's thread stops the rest, never the thread
            # that dropped the runner (a Ctrl-C there would be lost inside a finalizer).
            self._watchdog.guard(self, self._cleanup.orphaned)
            atexit.register(self._cleanup.at_exit)
            self._started_at = time.monotonic()
            for coordinator in self._coordinators.values():
                coordinator.start()
            self._watchdog.start()
            if self.report_metrics and any(self.spec.metrics.get(k)
                                           for k in ("tensorboard", "wandb")):
                from inputkit.observe.reporter import MetricsReporter

                self._stages.insert(0, MetricsReporter.start_for(self))  # type: ignore[arg-type]
        except BaseException:
            self._state = "running"
            self.close()
            raise
        self._state = "running"
        return self

    def _note_info(self, name: str, source: BoundSource | None) -> None:
        if source is None or not source.caps.run_info or name in self.source_info:
            return
        self.source_info[name] = source.obj.run_info()
        if source.caps.components:  # a composite source places its components in the state
            self._components_of[name] = type(source.obj).component_positions

    def _drop_source(self, source: BoundSource) -> None:
        self._sources.remove(source)
        source.close()

    def _check_memory(self, probed: dict[str, BoundSource],
                      known: dict[str, Any]) -> MemoryPlan | None:
        """Plan the worst case first; refuse a plan over ``memory.budget`` unless allowed.
        ``probed`` receives the sources the probe built, which start() uses instead of building
        them again; ``known``: sizes planned before (not probed again)."""
        from inputkit.planning.memory import MemoryBudgetError, UnknownSampleSizes, plan_memory

        selected = dataclasses.replace(
            self.spec, inputs=tuple(s for s in self.spec.inputs if s.name in self.input_names))
        try:
            plan = plan_memory(selected, devices=self.devices, keep=probed, known=known)
        except UnknownSampleSizes as exc:
            log.warning("no memory plan, so no budget check: %s", exc)
            return None
        if plan.over_budget:
            if not self.spec.allow_over_budget:
                raise MemoryBudgetError(plan)
            log.warning("starting over memory.budget because memory.allow_over_budget=true: %s",
                        MemoryBudgetError(plan))
        return plan

    def close(self, timeout: float = 2.0) -> None:
        """Stop every thread and free every buffer; idempotent and safe from any thread.

        Raises ShutdownError naming the threads (with their stacks) that did not stop
        within ``timeout`` seconds, e.g. a fetch that never returns.
        """
        with self._lock:
            if self._state in ("closed", "closing", "new"):
                self._state = "closed" if self._state == "new" else self._state
                return
            self._state = "closing"
        try:
            stuck = self._cleanup(timeout)
        finally:
            self._state = "closed"
        if stuck:
            raise ShutdownError(f"{len(stuck)} thread(s) did not stop within {timeout:g}s:\n"
                                + "\n".join(stuck))

    def __enter__(self) -> Runner:
        return self.start() if self._state == "new" else self

    def __exit__(self, exc_type: type[BaseException] | None, exc: BaseException | None,
                 tb: TracebackType | None) -> None:
        try:
            self.close()
        except ShutdownError as stuck:
            if exc is None:
                raise
            # The block's own exception (a Ctrl-C, a worker's error) is the one to raise; the
            # stuck threads are daemons, named here so that they are not a silent mystery.
            log.warning("while the runner closed after %s: %s", type(exc).__name__, stuck)

    # batches ---------------------------------------------------------------------------------

    def device(self, index: int = 0, input: str | None = None) -> Coordinator:
        """The iterator of batches (dicts of tensors on the device) for device ``index``."""
        return self._coordinator(self._input_name(input), index)

    def source(self, input: str | None = None) -> Any:
        """The source object of ``input``, to ask it about its samples (an image source's
        ``describe(index)``: which file a batch's ``id`` came from). With thread or inline
        workers it is the object they read; where each worker process builds its own, a copy
        built here on the first call (closed with the runner)."""
        name = self._input_name(input)
        with self._lock:  # close() takes it too: a copy built here is always closed
            self._coordinator(name, 0)  # started and not closed
            bound = self._source_of.get(name)
            if bound is None:
                spec = self.spec.input(name)
                bound = build_source(spec.source, key=f"{spec.key_prefix}source")
                self._source_of[name] = bound
                self._sources.append(bound)
        return bound.obj

    def steps(self, input: str | None = None) -> Iterator[list[Batch | None]]:
        """One batch per device per step, for data-parallel loops.

        Ends when every device has finished its epoch (finite sources); the next call
        goes on with the next epoch. Devices' shares of an epoch can differ by a batch
        or more (a resumed epoch, chunks that do not divide evenly): a device whose
        share has ended contributes None to the remaining steps and is not asked again
        in this pass, so no batch is dropped and none of the next epoch slips in.
        """
        name = self._input_name(input)
        coordinators = [self._coordinator(name, i) for i in range(len(self.devices))]
        ended = [False] * len(coordinators)
        while True:
            step: list[Batch | None] = []
            for index, coordinator in enumerate(coordinators):
                # Asking again after its epoch ended would start this device's next epoch.
                batch = None if ended[index] else next(coordinator, None)
                ended[index] = batch is None
                step.append(batch)
            if all(ended):
                return
            yield step

    # resuming -------------------------------------------------------------------------------

    def state_dict(self) -> dict[str, Any]:
        """Where every input stands: for index-range inputs, the epoch and the samples the
        consumer has received in it (as bit masks). Save it with your checkpoint; a new
        Runner given it by :meth:`load_state_dict` reads only the rest, with any worker or
        device count. Inputs read by ``fetch`` cannot be resumed (``resumable: False``).

        Under torchrun every rank saves its own; together they cover the epoch."""
        if self._state == "new":
            raise InputkitError("state_dict(): the runner has not started")
        inputs = {name: input_state(self.spec.input(name), self.coordinators(name),
                                    self.source_info.get(name, {}), self._components_of.get(name))
                  for name in self.input_names}
        return {"version": VERSION, "inputs": inputs}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        """Resume from :meth:`state_dict` (call before start()): each index-range input starts
        in the saved epoch and reads only the samples not yet received."""
        if self._state != "new":
            raise InputkitError("load_state_dict(): call it before start(), on a new Runner")
        self._resume.update(read_state(state, self.input_names))

    def stats(self) -> RunnerStats:
        """A snapshot of every coordinator's statistics (cheap; any thread)."""
        elapsed = time.monotonic() - self._started_at if self._started_at else 0.0
        return run_snapshot(self._coordinators.values(), self.spec.inputs, self.plan,
                            self.devices, elapsed)

    def coordinators(self, input: str | None = None) -> list[Coordinator]:
        """The coordinators of one input (or all), in device order."""
        return [c for (name, _), c in self._coordinators.items() if input in (None, name)]

    def _input_name(self, input: str | None) -> str:
        if input is None:
            if len(self.input_names) == 1:
                return self.input_names[0]
            raise InputkitError(f"this runner has inputs {', '.join(self.input_names)}; "
                                "pass input=<name> to choose one")
        if input not in self.input_names:
            raise InputkitError(f"no running input named '{input}'; running: "
                                f"{', '.join(self.input_names)}")
        return input

    def _coordinator(self, name: str, index: int) -> Coordinator:
        if self._state == "new":
            raise InputkitError("the runner has not started; use `with Runner(cfg) as runner:` "
                                "or call runner.start() first")
        if self._state != "running":
            raise InputkitError(f"the runner is {self._state}; a Runner runs once, create a new "
                                "one to start again")
        if not 0 <= index < len(self.devices):
            raise InputkitError(f"device index {index} is out of range; this runner feeds "
                                f"{len(self.devices)} device(s): {', '.join(self.devices)}")
        return self._coordinators[(name, index)]


"""One input on one device: workers -> chunk queue -> batcher -> batch queue -> device stage.

The coordinator owns every thread and queue of its chain: it starts them, is
iterated by the consumer, and stops them (bounded joins; a thread that will not
stop is reported by name with its stack). A failure in any stage reaches the
consumer as the original exception and aborts the whole runner.
"""

from __future__ import annotations

import threading
import time
import weakref
from collections.abc import Callable, Iterator
from typing import Any

import numpy as np

from inputkit import kinds
from inputkit.config.spec import InputSpec
from inputkit.errors import InputkitError, WorkerFailure
from inputkit.observe.stats import CoordinatorStats
from inputkit.pipeline.batcher import Batcher, BatcherThread
from inputkit.pipeline.chunk import ChunkSchema
from inputkit.pipeline.device import DeviceTransform, make_device_stage
from inputkit.pipeline.dispatcher import Dispatcher, EpochEnd, EpochOrders
from inputkit.pipeline.inline_stage import InlineStage
from inputkit.pipeline.messages import END, Failure
from inputkit.pipeline.queues import BoundedQueue, QueueClosed, Stage
from inputkit.processors import ProcessorChain
from inputkit.sources.loader import BoundSource, component_names
from inputkit.workers import WorkerPool, make_worker_pool


class Abort:
    """Shared by a runner's coordinators: the first failure stops every worker of the runner.

    The consumer of the coordinator where it happened re-raises the original
    exception; every other consumer raises a WorkerFailure that names it.
    """

    def __init__(self) -> None:
        self.event = threading.Event()
        self.failure: Failure | None = None
        self._origin: Callable[[], Coordinator | None] = lambda: None
        self._pools: list[WorkerPool] = []
        self._lock = threading.Lock()

    def join(self, pool: WorkerPool) -> None:
        with self._lock:
            self._pools.append(pool)

    @property
    def origin(self) -> Coordinator | None:
        return self._origin()

    def fail(self, failure: Failure, origin: Coordinator | None) -> None:
        with self._lock:
            if self.failure is not None:
                return
            self.failure = failure
            # Weak: nothing a finalizer may hold should lead back to a coordinator.
            self._origin = weakref.ref(origin) if origin is not None else (lambda: None)
            pools = list(self._pools)
        self.event.set()
        for pool in pools:
            pool.stop()


class Stages:
    """One coordinator's threads and queues: what stopping it takes, and no reference back to
    the coordinator or its runner, so the runner's finalizer can hold it."""

    def __init__(self, stop: threading.Event, workers: WorkerPool, batcher: BatcherThread | None,
                 device_stage: Any, queues: list[BoundedQueue]) -> None:
        self.stop_event = stop
        self.workers = workers
        self.batcher = batcher
        self.device_stage = device_stage
        self.queues = queues
        self.closed = False

    def stop(self) -> None:
        """Ask every stage to stop; does not wait."""
        self.stop_event.set()
        self.workers.stop()
        for queue in self.queues:
            queue.close()
            queue.clear()  # free buffered memory now; wakes producers blocked on put

    def join(self, deadline: float) -> list[str]:
        """Wait for every thread until ``deadline``; describe the ones still running."""
        stuck = self.workers.join(deadline)
        if self.batcher is not None:
            stuck.extend(self.batcher.join(deadline))
        stuck.extend(self.device_stage.join(deadline))
        self.closed = True
        return stuck


class Coordinator(Iterator[dict[str, Any]]):
    """Feeds one device from one input. Iterate it for batches (dicts of tensors)."""

    def __init__(self, spec: InputSpec, device: str, device_index: int,
                 source: BoundSource | None, schema: ChunkSchema, abort: Abort,
                 num_devices: int, length: int | None = None, slot: int | None = None,
                 resume: tuple[int, dict[int, np.ndarray]] | None = None,
                 orders: EpochOrders | None = None) -> None:
        """``num_devices``: device slots sharing each epoch (over every rank); ``slot``: this
        coordinator's one among them (default: ``device_index``); ``resume``: the epoch to
        start in and the samples already delivered (epoch -> mask), from Runner.state_dict;
        ``orders``: the input's epoch orders, shared by its devices (default: this one's own)."""
        self.spec = spec
        self.device = device
        self.device_index = device_index
        self.label = f"input '{spec.name}' on device {device_index} ({device})"
        name = f"{spec.name}-{device_index}"
        count = spec.worker_count
        self._abort = abort
        self._stop = threading.Event()
        kind = kinds.get(spec.worker_kind, f"{spec.key_prefix}workers.kind")
        # In the consumer's thread (inline): the pool is the chunk stream; no queue, no thread.
        inline = kind.plan is not None and kind.plan.in_consumer
        self.chunk_queue = None if inline else BoundedQueue(
            f"{spec.name}/{device}/chunks", spec.chunk_capacity, spec.chunk_capacity_bytes,
            stage=Stage.CHUNKS)
        self.batch_queue = None if inline else BoundedQueue(
            f"{spec.name}/{device}/batches", spec.batch_capacity, spec.batch_capacity_bytes,
            stage=Stage.BATCHES)
        # An indexable source (length known) is read by index range: exactly once per epoch.
        slot = device_index if slot is None else slot
        first_epoch, consumed = resume if resume is not None else (0, {})
        self.length = length
        self.dispatcher = None if length is None else Dispatcher(
            length, spec.batch_size, spec.epoch, slot, num_devices, window=2 * count,
            first_epoch=first_epoch, consumed={e: m.copy() for e, m in consumed.items()},
            orders=orders)
        # Kinds whose source is built here (thread, inline) share this coordinator's chain;
        # processes and Ray actors build their own.
        chain = ProcessorChain.from_config(list(spec.processors), key=f"{spec.key_prefix}processors",
                                           seed=spec.epoch.seed) \
            if spec.processors and kind.source_here else None
        self.workers = make_worker_pool(
            spec, device, source=source, schema=schema, dispatcher=self.dispatcher,
            processors=chain,
            worker_ids=list(range(slot * count, (slot + 1) * count)),
            num_workers=count * num_devices, out=self.chunk_queue, label=self.label,
            thread_prefix=f"inputkit-{name}",
            on_failure=lambda failure, me=weakref.ref(self): abort.fail(failure, me()),
        )
        transform = DeviceTransform(spec.normalize, spec.channels_last, spec.key_prefix)
        self.batcher: Batcher
        self.device_stage: Any
        if inline:
            self.batcher = Batcher(spec.batch_size, spec.drop_last)
            self.device_stage = InlineStage(self.workers, self.batcher, device,  # type: ignore[arg-type]
                                            transform)
            thread = None
        else:
            assert self.chunk_queue is not None and self.batch_queue is not None
            self.batcher = thread = BatcherThread(
                name=f"inputkit-{name}-batcher", chunks=self.chunk_queue, batches=self.batch_queue,
                batch_size=spec.batch_size, drop_last=spec.drop_last, stop=self._stop,
                where=f"the batcher of {self.label}",
                # CUDA staging copies every batch anyway; on CPU a view is lent while slots last.
                copy_borrowed=self.workers.slots_scarce if device == "cpu" else lambda: False,
            )
            self.device_stage = make_device_stage(
                device, spec.device_prefetch, self.batch_queue, self._stop, name,
                f"the device stage of {self.label}", transform)
        self.stages = Stages(self._stop, self.workers, thread, self.device_stage, self._queues())
        abort.join(self.workers)
        self.planned: dict[str, int] = {}  # the memory plan's stage -> bytes, set by the runner
        self.owner: Any = None  # the runner, kept alive while this stream is
        self._started_at: float | None = None
        self._finished_at: float | None = None
        self._first_batch_s: float | None = None
        self._batches = self._samples = self._bytes = 0
        # The consumer's seconds inside __next__ (for a batch): inputkit's share of its thread.
        self._next_s = 0.0
        self._finished = False
        self.epoch = first_epoch  # the epoch the consumer is in (index-range sources)
        # A composite source (a mixture): the field naming each sample's component, and the
        # samples received of each (sources.capabilities.ReportsComponents).
        self._component_field, self._component_names = component_names(spec.source)
        self._component_counts: Any = None  # a tensor beside the batches' (no sync on CUDA)
        # Index-range sources: the samples the consumer has received, per epoch (bool masks,
        # starting from what a resumed run had already received).
        self.consumed: dict[int, np.ndarray] = {e: m.copy() for e, m in consumed.items()}
        # The sample indices of the batch handed out last (None: not index-range work), so an
        # integration that counts batches trained (inputkit.lightning) can take one back.
        self.last_indices: np.ndarray | None = None

    def start(self) -> None:
        self._started_at = time.monotonic()
        self.device_stage.start()
        if isinstance(self.batcher, BatcherThread):
            self.batcher.start()
        if self.dispatcher is not None:
            self.dispatcher.start()
        self.workers.start()

    def __iter__(self) -> Coordinator:
        return self

    def __next__(self) -> dict[str, Any]:
        if self._finished:
            raise StopIteration
        if self.stages.closed:
            raise InputkitError(f"{self.label}: the runner is closed; no more batches")
        entered = time.perf_counter()
        stop = self._abort.event
        try:
            item = None if stop.is_set() else self.device_stage.get(stop)
        except QueueClosed:
            item = None
        if isinstance(item, tuple):
            tensors, n, nbytes, indices = item
            if indices is not None and self.length is not None:
                mask = self.consumed.get(self.epoch)
                if mask is None:
                    mask = self.consumed[self.epoch] = np.zeros(self.length, dtype=bool)
                mask[indices] = True
            # A copy: the batch's index field may be a view of its chunk, and a view kept
            # here would pin that chunk (a Ray object, a shared-memory slot) until the next
            # batch; a batch's indices are a few hundred integers.
            self.last_indices = None if indices is None else indices.copy()
            if self._first_batch_s is None and self._started_at is not None:
                self._first_batch_s = time.monotonic() - self._started_at
            self._batches += 1
            self._samples += n
            self._bytes += nbytes
            if self._component_field is not None:
                which = tensors.get(self._component_field)
                if which is not None:  # counted on the batch's device: a GPU batch is not synced
                    counts = which.bincount(minlength=len(self._component_names))
                    self._component_counts = counts if self._component_counts is None else \
                        self._component_counts + counts
            if self._batches > 1:  # the first batch's wait is start-up, outside every span
                self._next_s += time.perf_counter() - entered
            return tensors  # type: ignore[no-any-return]
        if item is END:
            if self.dispatcher is not None:
                self.epoch += 1  # past the last epoch: everything was delivered
            self._finished = True
            self._finished_at = time.monotonic()
            raise StopIteration
        if isinstance(item, EpochEnd):  # iterating again goes on with the next epoch
            self.epoch = item.epoch + 1
            self._forget_old_epochs()
            raise StopIteration
        if isinstance(item, Failure):  # from the batcher or the device stage
            self._abort.fail(item, self)
        failure = self._abort.failure
        if failure is not None and self._abort.origin is self:
            failure.reraise()
        if failure is not None:
            raise WorkerFailure(f"{self.label} stopped because {failure.where} failed: "
                                f"{type(failure.exc).__name__}: {failure.exc}") from failure.exc
        raise InputkitError(f"{self.label}: the runner was closed while waiting for a batch")

    def _forget_old_epochs(self) -> None:
        """Drop the masks no state can need again, so they do not grow by a byte per sample
        per epoch: ``state_dict`` saves from the least epoch of this input's devices on, and
        an integration taking a handed-out batch back (inputkit.lightning) reads at most the
        epoch before it."""
        group = self.owner.coordinators(self.spec.name) if self.owner is not None else [self]
        keep_from = min(c.epoch for c in group) - 1
        for c in group:
            for epoch in [e for e in list(c.consumed) if e < keep_from]:
                c.consumed.pop(epoch, None)

    @property
    def first_batch_at(self) -> float | None:
        """When the consumer received its first batch (``time.monotonic()``), or None."""
        if self._first_batch_s is None or self._started_at is None:
            return None
        return self._started_at + self._first_batch_s

    @property
    def finished(self) -> bool:
        """True once the epoch of a finite source has been fully delivered."""
        return self._finished

    def stop(self) -> None:
        """Ask every stage to stop; does not wait."""
        self.stages.stop()

    def join(self, deadline: float) -> list[str]:
        """Wait for every thread until ``deadline``; describe the ones still running."""
        return self.stages.join(deadline)

    def _queues(self) -> list[BoundedQueue]:
        queues = [q for q in (self.chunk_queue, self.batch_queue, self.device_stage.queue())
                  if q is not None]
        return queues

    def stats(self) -> CoordinatorStats:
        now = self._finished_at or time.monotonic()  # a finished input's rates stop diluting
        return CoordinatorStats(
            input=self.spec.name, device=self.device,
            device_index=self.device_index, batch_size=self.spec.batch_size,
            batches=self._batches, samples=self._samples, bytes=self._bytes,
            elapsed_s=(now - self._started_at) if self._started_at is not None else 0.0,
            first_batch_s=self._first_batch_s, finished=self._finished,
            workers=self.workers.stats(),
            queues=tuple(q.stats() for q in self._queues()),
            copied_batches=self.batcher.copied_batches, view_batches=self.batcher.view_batches,
            dropped_samples=self.batcher.rechunker.dropped, planned=dict(self.planned),
            source=str(self.spec.source.get("_target_", "")),
            components=self._components(), next_s=self._next_s,
            device_busy_s=self.device_stage.busy_s,
        )


    def _components(self) -> dict[str, int]:
        """A mixture's samples received, by component (zeros before the first batch)."""
        counts = self._component_counts
        values = counts.tolist() if counts is not None else [0] * len(self._component_names)
        return dict(zip(self._component_names, values, strict=False))

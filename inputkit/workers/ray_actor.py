"""What runs inside one Ray actor: its own source and processors, one call at a time.

The trainer's pool (workers/ray_pool.py) keeps every decision: which work item an
actor reads, how many it holds, what a failure means. An actor only builds its
source (``setup``), then answers each call with the typed outcome of the one
worker step (workers/step.py, workers/outcome.py), whose arrays travel through
Ray's object store (zero-copy into the trainer on the same node):

- ``read(seq, epoch, indices)`` (index-range work): :class:`Got` (its chunk, with the
  samples skipped under ``failures.on_error=skip`` if any) or :class:`SamplesSkipped`;
- ``fetch()`` (fetch sources): :class:`Got`, :class:`Empty`, :class:`FetchSkipped` or
  :class:`Done`;
- any call: :class:`Error` when it raised.

Retries travel on the outcome; the processors' counts too, at most twice a second.

The module imports no Ray: the pool wraps :class:`FetchActor` with ``ray.remote``.
"""

from __future__ import annotations

import logging
import os
import threading
import time
from dataclasses import dataclass
from typing import Any

import numpy as np

from inputkit.pipeline.chunk import ChunkSchema
from inputkit.pipeline.failures import FailurePolicy
from inputkit.processors import ProcessorChain
from inputkit.sources.loader import build_source
from inputkit.workers.outcome import Error, Outcome
from inputkit.workers.process_main import one_torch_thread
from inputkit.workers.step import WorkerStep


@dataclass(frozen=True)
class ActorArgs:
    """What one actor needs to build its source; small and picklable."""

    worker_id: int
    num_workers: int
    batch_size_hint: int
    source_config: dict[str, Any]
    source_key: str
    policy: FailurePolicy
    processors: tuple[dict[str, Any], ...] = ()
    processors_seed: int = 0
    processors_key: str = "processors"


class FetchActor:
    """One worker on Ray. Built empty; ``setup`` builds the source, so that its errors come
    back as values (a constructor that raises would leave only a dead actor)."""

    def __init__(self, args: ActorArgs) -> None:
        self.args = args
        self.source: Any = None
        self.step: WorkerStep | None = None
        self._never = threading.Event()  # retries wait on it; the pool kills the actor to stop

    def setup(self) -> tuple[Any, ...] | Error:
        """Build the source (and processors): ``("ready", pid, node_ip, node_id, seconds)``."""
        begin = time.monotonic()
        # The trainer logs what the policy did (each outcome lists the retries).
        logging.getLogger("inputkit").addHandler(logging.NullHandler())
        logging.getLogger("inputkit").propagate = False
        try:
            one_torch_thread()
            args = self.args
            self.source = build_source(args.source_config, key=args.source_key)
            one_torch_thread()
            chain = ProcessorChain.from_config(list(args.processors), key=args.processors_key,
                                               seed=args.processors_seed) \
                if args.processors else None
            self.step = WorkerStep(
                self.source, worker_id=args.worker_id, num_workers=args.num_workers,
                hint=args.batch_size_hint, policy=args.policy,
                where=f"worker {args.worker_id} (source '{self.source.name}')",
                stop=self._never, schema=ChunkSchema(self.source.name), chain=chain,
                out_schema=ChunkSchema(self.source.name), report_processors=True)
            self.step.setup()
        except BaseException as exc:
            return Error.of(exc)
        import ray  # inside an actor, Ray is there

        context = ray.get_runtime_context()
        return ("ready", os.getpid(), ray.util.get_node_ip_address(), context.get_node_id(),
                time.monotonic() - begin)

    def read(self, seq: int, epoch: int, indices: np.ndarray) -> Outcome:
        """Read one work item's samples (and run the processors on them)."""
        try:
            return self.step.read(seq, epoch, indices)  # type: ignore[union-attr]
        except BaseException as exc:
            return Error.of(exc)

    def fetch(self) -> Outcome:
        """One fetch of a fetch source."""
        try:
            return self.step.fetch()  # type: ignore[union-attr]
        except BaseException as exc:
            return Error.of(exc)

    def close(self) -> None:
        if self.source is not None:
            self.source.close()
            self.source = None

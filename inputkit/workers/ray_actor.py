"""What runs inside one Ray actor: its own source and processors, one call at a time.

The trainer's pool (workers/ray_pool.py) keeps every decision: which work item an
actor reads, how many it holds, what a failure means. An actor only builds its
source (``setup``), then answers each call with one small tuple whose arrays travel
through Ray's object store (zero-copy into the trainer on the same node):

- ``read(seq, epoch, indices)`` (index-range work) and ``fetch()`` (fetch sources) answer
  ``("chunk", seq, fields, n, nbytes, wall_s, cpu_s, retries, bad, ok, processors)``:
  ``retries`` lists the errors retried (``failures.on_error=retry``); under ``skip``,
  ``bad`` holds ``(index, error)`` for each sample skipped and ``ok`` says which samples
  of the item were delivered (workers/samples.py); ``processors`` is the chain's
  cumulative snapshot at most twice a second (or None);
- ``("skipped", seq, retries, bad, ok, processors)``: no sample of the item could be read;
- ``("empty", wall_s, cpu_s, retries)``, ``("skip", text, retries)``, ``("done",)``: a fetch
  source returned no samples, failed and was skipped, or is exhausted;
- ``("error", exception_pickle_or_None, type_name, message, traceback_text)``.

The module imports no Ray: the pool wraps :class:`FetchActor` with ``ray.remote``.
"""

from __future__ import annotations

import functools
import logging
import os
import threading
import time
from dataclasses import dataclass
from typing import Any

import numpy as np

from inputkit.chunk import Chunk, ChunkSchema, check_read, with_field
from inputkit.errors import SourceExhausted
from inputkit.failures import FailurePolicy, Skipped, call_with_policy
from inputkit.processors import ProcessorChain
from inputkit.sources.loader import build_source
from inputkit.sources.protocol import reads_epoch
from inputkit.work import INDEX_FIELD
from inputkit.workers.process_main import describe_error, error_report, one_torch_thread
from inputkit.workers.samples import read_skipping

_STATS_EVERY_S = 0.5


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
        self.chain: ProcessorChain | None = None
        self._stats_sent = 0.0
        self._never = threading.Event()  # retries wait on it; the pool kills the actor to stop
        self.where = f"worker {args.worker_id}"

    def setup(self) -> tuple[Any, ...]:
        """Build the source (and processors): ``("ready", pid, node_ip, node_id, seconds)``."""
        begin = time.monotonic()
        # The trainer logs what the policy did (each result lists the retries).
        logging.getLogger("inputkit").addHandler(logging.NullHandler())
        logging.getLogger("inputkit").propagate = False
        try:
            one_torch_thread()
            args = self.args
            self.source = build_source(args.source_config, key=args.source_key)
            one_torch_thread()
            setup = getattr(self.source.obj, "setup", None)
            if callable(setup):
                setup(args.worker_id, args.num_workers)
            self.where = f"worker {args.worker_id} (source '{self.source.name}')"
            self.schema = ChunkSchema(self.source.name)
            if args.processors:
                self.chain = ProcessorChain.from_config(list(args.processors),
                                                        key=args.processors_key,
                                                        seed=args.processors_seed)
                self.out_schema = ChunkSchema(self.source.name)
        except BaseException as exc:
            return error_report(exc)
        import ray  # inside an actor, Ray is there

        context = ray.get_runtime_context()
        return ("ready", os.getpid(), ray.util.get_node_ip_address(), context.get_node_id(),
                time.monotonic() - begin)

    # calls -------------------------------------------------------------------------------------

    def read(self, seq: int, epoch: int, indices: np.ndarray) -> tuple[Any, ...]:
        """Read one work item's samples (and run the processors on them)."""
        try:
            return self._read(seq, epoch, indices)
        except BaseException as exc:
            return error_report(exc)

    def fetch(self) -> tuple[Any, ...]:
        """One fetch of a fetch source."""
        args, retries = self.args, []
        wall0, cpu0 = time.perf_counter(), time.thread_time()
        try:
            chunk = call_with_policy(
                lambda: self._finish(self._check(self.source.fetch(args.worker_id,
                                                                   args.batch_size_hint), None),
                                     None),
                args.policy, self.where, self._never,
                on_retry=lambda e: retries.append(describe_error(e)))
        except (SourceExhausted, StopIteration):
            return ("done",)
        except Skipped as skipped:
            return ("skip", describe_error(skipped.error), retries)
        except BaseException as exc:
            return error_report(exc)
        wall, cpu = time.perf_counter() - wall0, time.thread_time() - cpu0
        if chunk.n == 0:
            return ("empty", wall, cpu, retries)
        return ("chunk", -1, dict(chunk.fields), chunk.n, chunk.nbytes, wall, cpu, retries, [], [],
                self._processor_stats())

    def _read(self, seq: int, epoch: int, indices: np.ndarray) -> tuple[Any, ...]:
        source_read = self.source.obj.read
        read = functools.partial(source_read, epoch=epoch) if reads_epoch(source_read) \
            else source_read
        key = (epoch, int(indices[0])) if len(indices) else None
        retries: list[str] = []
        wall0, cpu0 = time.perf_counter(), time.thread_time()
        bad: list[tuple[int, str]] = []
        ok: list[bool] = []
        if self.args.policy.on_error == "skip":  # a bad sample costs only itself
            got = read_skipping(read, indices, self._check, lambda c: self._finish(c, key),
                                self.args.policy, self.where, self._never)
            bad, ok = got.bad, got.ok
            if got.chunk is None:
                return ("skipped", seq, retries, bad, ok, self._processor_stats())
            chunk, indices = got.chunk, got.indices
        else:
            chunk = call_with_policy(
                lambda: self._finish(self._check(read(indices), len(indices)), key),
                self.args.policy, self.where, self._never,
                on_retry=lambda e: retries.append(describe_error(e)))
        wall, cpu = time.perf_counter() - wall0, time.thread_time() - cpu0
        chunk = with_field(chunk, INDEX_FIELD, np.array(indices, dtype=np.int64))
        return ("chunk", seq, dict(chunk.fields), chunk.n, chunk.nbytes, wall, cpu, retries, bad,
                ok, self._processor_stats())

    # helpers -----------------------------------------------------------------------------------

    def _check(self, raw: Any, expect: int | None) -> Chunk:
        """What the source returned, checked (its schema; ``expect`` samples for a read)."""
        return check_read(self.schema.check(raw, self.args.worker_id), expect, self.source.name)

    def _finish(self, chunk: Chunk, key: Any) -> Chunk:
        """The processors, and their output checked; ``chunk`` itself without processors."""
        if self.chain is None:
            return chunk
        wid = self.args.worker_id
        return self.out_schema.check(self.chain.apply(chunk.fields, wid, key), wid)

    def _processor_stats(self) -> Any:
        now = time.monotonic()
        if self.chain is None or now - self._stats_sent < _STATS_EVERY_S:
            return None
        self._stats_sent = now
        return self.chain.snapshot()

    def close(self) -> None:
        if self.source is not None:
            self.source.close()
            self.source = None

"""The probe behind ``workers.kind=auto``: a few timed fetches, then the spec with a real kind.

:func:`resolve` is called by whoever plans or starts inputs (the Runner, ``inputkit bench``'s
config check, ``inputkit plan``) before the memory plan, so the plan and the pipeline are
those of the kind chosen. Each ``auto`` input's source is built once more as a private copy
(like the memory probe's), set up as worker 0 of 1, fetched once untimed (files opened,
caches warmed), then timed for up to ``PROBE_S`` (at least ``MIN_FETCHES`` fetches, at most
``MAX_FETCHES``) while a :class:`~inputkit.observe.probes.GilProbe` thread reads the GIL. The copy is
closed: the pipeline's source is untouched.
"""

from __future__ import annotations

import dataclasses
import sys
import threading
import time
from typing import Any

import numpy as np

from inputkit.errors import SourceError
from inputkit.kinds.auto import AutoChoice, Measured, decide, machine_cores

__all__ = ["PROBE_TIMEOUT_S", "ProbeInterrupted", "ProbeTimeout", "measure", "plan_choices",
           "resolve"]

PROBE_S = 0.25
MIN_FETCHES = 3
MAX_FETCHES = 32
GIL_PERIOD_S = 0.002
MIN_GIL_PROBES = 8  # fewer GIL probes than this over the timed fetches: the GIL is not read
# The untimed fetch and the timed ones together: past this, the probe stops the start with an
# error naming the source (a remote call that never answers must not hang `inputkit bench`).
PROBE_TIMEOUT_S = 30.0


def measure(source: Any, inp: Any, probe_s: float = PROBE_S,
            timeout_s: float | None = None) -> Measured:
    """Time fetches of ``source`` (a BoundSource, set up here as worker 0 of 1) as the workers
    of input ``inp`` (an InputSpec) would run them, processors included. The fetches run on a
    thread of their own, waited for at most ``timeout_s`` (PROBE_TIMEOUT_S): a fetch that hangs raises a
    SourceError (name the kind to skip the probe), and Ctrl-C raises ProbeInterrupted at once."""
    from inputkit.errors import SourceExhausted
    from inputkit.observe.probes import GilProbe, schedstat_available
    from inputkit.pipeline.chunk import ChunkSchema
    from inputkit.sources.protocol import indexed_length

    chain = None
    if inp.processors:
        from inputkit.processors import ProcessorChain

        chain = ProcessorChain.from_config(list(inp.processors), key=f"{inp.key_prefix}processors",
                                           seed=inp.epoch.seed)
    schema = ChunkSchema(inp.source.get("_target_", "?"))
    length = indexed_length(source.obj)
    size = inp.epoch.chunk_size or inp.batch_size

    def fetch(i: int) -> int:
        if length is not None:
            start = (i * size) % max(length, 1)
            raw = source.obj.read(np.arange(start, min(start + size, length)))
        else:
            raw = source.fetch(0, inp.batch_size)
        chunk = schema.check(raw, 0)
        if chain is not None:
            chain.apply(chunk.fields, 0)
        return int(chunk.n)

    queued = _run_queue_s if schedstat_available() else _never_queued
    timed = _Timed()
    gil = GilProbe("inputkit-auto-gil", period_s=GIL_PERIOD_S)

    def run() -> None:  # on the probe's own thread: a stuck fetch cannot hold up the start
        try:
            source.setup(0, 1)
            timed.n = fetch(0)  # untimed: opens files, fills caches
            with timed.guard:
                if timed.stop.is_set():
                    return
                gil.start()
                timed.gil_started = True
            ends = time.monotonic() + probe_s
            for i in range(1, MAX_FETCHES + 1):
                if timed.stop.is_set() or (i > MIN_FETCHES and time.monotonic() >= ends):
                    break
                q0, w0, c0 = queued(), time.perf_counter(), time.thread_time()
                try:
                    fetch(i)
                except (SourceExhausted, StopIteration):
                    break  # a short stream: what was timed stands
                took = time.perf_counter() - w0
                timed.cpu += time.thread_time() - c0
                # A loaded machine's run queue is not the fetch's own wait: a fetch that computes
                # but waited for a CPU must not read as one that waits (I/O).
                took = max(took - (queued() - q0), 1e-9)
                timed.wall += took
                timed.walls.append(took)
        except BaseException as exc:  # noqa: BLE001 - handed to the waiting thread, raised there
            timed.error = exc
        finally:
            timed.done.set()

    where = inp.source.get("_target_", "?")
    timeout_s = PROBE_TIMEOUT_S if timeout_s is None else timeout_s
    thread = threading.Thread(target=run, name=f"inputkit-auto-probe-{inp.name}", daemon=True)
    thread.start()
    try:
        if not timed.done.wait(timeout_s):
            done = len(timed.walls) + (timed.n is not None)
            raise ProbeTimeout(where, f"workers.kind=auto's probe of {inp.key_prefix}source: a fetch "
                               f"did not return within {timeout_s:g} s ({done} "
                               "fetch(es) done before it), so the start was stopped rather than "
                               f"left to hang; name the kind to skip the probe ({inp.key_prefix}"
                               "workers.kind=thread, process or inline), or fix the source")
    except KeyboardInterrupt:
        raise ProbeInterrupted(f"while workers.kind=auto probed {where} (input {inp.name}); "
                               "a fetch in progress was left to end with the process") from None
    finally:
        with timed.guard:
            timed.stop.set()
            if timed.gil_started:
                gil.stop()
        if timed.gil_started:
            gil.join(time.monotonic() + 2.0)
    if timed.error is not None:
        raise timed.error
    n, walls, cpu, wall = timed.n or 0, timed.walls, timed.cpu, timed.wall
    reading = gil.reading() if timed.gil_started else None
    if reading is not None and reading.probes < MIN_GIL_PROBES:
        reading = None  # 32 fetches of 13 us: one or two probes, one unlucky wait reads as 50%
    walls.sort()
    p50 = walls[len(walls) // 2] if walls else 0.0
    batch = inp.batch_size
    return Measured(
        fetches=len(walls), fetch_ms=p50 * 1e3, cpu_share=min(1.0, cpu / wall) if wall else 0.0,
        gil_held=reading.held / reading.probes if reading and reading.probes else None,
        gil_wait_ms=reading.wait_s / reading.probes * 1e3 if reading and reading.probes else None,
        switch_interval_ms=sys.getswitchinterval() * 1e3,
        views=n >= batch and n % batch == 0, cores=machine_cores())


class ProbeTimeout(SourceError):
    """A fetch of auto's probe did not return in time: the start stops here (no fallback: the
    memory probe and the workers would hang on the same fetch)."""


class ProbeInterrupted(KeyboardInterrupt):
    """Ctrl-C while auto's probe waited on a fetch: the CLI says where it was (exit 130)."""


@dataclasses.dataclass
class _Timed:
    """What the probe's thread measured, read by the thread that waits for it."""

    n: int | None = None
    walls: list[float] = dataclasses.field(default_factory=list)
    cpu: float = 0.0
    wall: float = 0.0
    error: BaseException | None = None
    gil_started: bool = False
    done: threading.Event = dataclasses.field(default_factory=threading.Event)
    stop: threading.Event = dataclasses.field(default_factory=threading.Event)
    guard: threading.Lock = dataclasses.field(default_factory=threading.Lock)


def _never_queued() -> float:
    return 0.0


def _run_queue_s() -> float:
    from inputkit.observe.probes import _run_queue_s as run_queue_s

    return run_queue_s()


def _probe(inp: Any, keep: dict[str, Any] | None = None) -> AutoChoice:
    """The choice for one input. A source that fails to build or fetch here is not reported
    here: the input falls back to thread workers (the reason says why), and the memory probe or
    the workers then raise the error with their own context (the key, the policy, the sample).
    ``keep``: the copy measured is left there by input name (the memory probe and the runner
    use it: one build per command) instead of closed."""
    from inputkit import startup
    from inputkit.config.spec import DEFAULT_WORKER_COUNT
    from inputkit.sources.loader import build_source

    try:
        key = f"{inp.key_prefix}source"
        with startup.step("index", f"building {key} ({inp.source.get('_target_', '?')})"):
            source = build_source(inp.source, key=key)
        try:
            measured = measure(source, inp)
        except (ProbeTimeout, ProbeInterrupted):
            raise  # the copy is left open: a fetch is still inside it
        except BaseException:
            source.close()
            raise
        if keep is not None and inp.name not in keep:
            keep[inp.name] = source
        else:
            source.close()
    except (ProbeTimeout, ProbeInterrupted):
        raise
    except Exception as exc:  # noqa: BLE001 - raised again, with context, by the pipeline
        count = inp.worker_count or DEFAULT_WORKER_COUNT
        return AutoChoice("thread", count, f"the probe's fetch failed ({type(exc).__name__}: "
                          f"{exc}), so nothing was measured: thread workers, the usual kind")
    return decide(measured, inp.worker_count or None)


def resolve(spec: Any, earlier: dict[str, tuple[Any, AutoChoice]] | None = None,
            names: Any = None, keep: dict[str, Any] | None = None) -> tuple[Any, dict[str, AutoChoice]]:
    """``spec`` (a RunSpec) with every ``workers.kind=auto`` input given its chosen kind and
    count, and the choices by input name. ``earlier``: choices made before for inputs
    configured exactly the same (input name -> (its unresolved InputSpec, choice)), reused
    rather than probed again; ``names``: only these inputs are probed (the rest stay auto);
    ``keep``: receives the probe's copies by input name, for the memory probe to read
    (plan_memory's ``keep``) and the runner to run: the caller closes what nobody takes."""
    choices: dict[str, AutoChoice] = {}
    inputs = []
    for inp in spec.inputs:
        if inp.worker_kind != "auto" or (names is not None and inp.name not in names):
            inputs.append(inp)
            continue
        before = (earlier or {}).get(inp.name)
        if before is not None and before[0] == inp:
            choice = before[1]
        else:
            choice = _probe(inp, keep)
        choices[inp.name] = choice
        inputs.append(dataclasses.replace(inp, worker_kind=choice.kind, worker_count=choice.count))
    return dataclasses.replace(spec, inputs=tuple(inputs)), choices


def plan_choices(spec: Any, keep: dict[str, Any] | None = None) -> tuple[Any, list[str]]:
    """For ``inputkit plan``: ``spec`` resolved, and a line per ``auto`` input saying what was
    measured and chosen (``keep``: as resolve's). With the probe off (``--no-probe``,
    memory.probe=false) nothing is fetched: such an input is planned as thread workers, and
    the line says so."""
    if spec.probe:
        resolved, choices = resolve(spec, keep=keep)
        return resolved, [f"workers.kind=auto for input {name}: {choice.text()}"
                          for name, choice in choices.items()]
    from inputkit.config.spec import DEFAULT_WORKER_COUNT

    inputs, lines = [], []
    for inp in spec.inputs:
        if inp.worker_kind == "auto":
            count = inp.worker_count or DEFAULT_WORKER_COUNT
            inp = dataclasses.replace(inp, worker_kind="thread", worker_count=count)
            lines.append(f"workers.kind=auto for input {inp.name}: not probed (the probe is off), "
                         f"planned as thread x{count}; the runner probes fetch and may choose "
                         f"another kind")
        inputs.append(inp)
    return dataclasses.replace(spec, inputs=tuple(inputs)), lines

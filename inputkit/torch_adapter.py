"""An inputkit pipeline as a ``torch.utils.data.IterableDataset``, for code that wants a DataLoader.

::

    ds = InputkitIterableDataset(cfg)                         # builds nothing yet
    loader = torch.utils.data.DataLoader(ds, batch_size=None)  # inputkit batches and runs workers
    for epoch in range(3):
        for batch in loader:                                   # one epoch per pass
            ...

The Runner starts on the first pass and stays up between passes, so worker
processes are not restarted every epoch; it stops when a pass is abandoned
(``break``), when the stream ends, on :meth:`close`, or when the object is
garbage-collected. ``state_dict()``/``load_state_dict()`` resume mid-epoch (torchdata's
``StatefulDataLoader`` calls them). See docs/torch.md.
"""

from __future__ import annotations

import dataclasses
import logging
import threading
from collections.abc import Iterator
from types import TracebackType
from typing import Any

from torch.utils.data import IterableDataset, get_worker_info

try:  # where DataLoader's default_collate looks up a collate function by element type
    from torch.utils.data._utils.collate import default_collate_fn_map
except ImportError:  # pragma: no cover - an older or newer torch without the registry
    default_collate_fn_map = None

from inputkit.config.spec import InputSpec, RunSpec, load_spec
from inputkit.errors import ConfigError, InputkitError, ShutdownError
from inputkit.pipeline.epochs import batches_in, epoch_share
from inputkit.runner import Runner

log = logging.getLogger(__name__)
_STATE_KIND = "inputkit.InputkitIterableDataset"  # marks the dicts state_dict() returns
_UNKNOWN = object()  # a length not yet asked for


class InputkitBatch(dict):  # type: ignore[type-arg]
    """One batch from an :class:`InputkitIterableDataset`: a plain dict of tensors, with a type
    of its own so that torch's ``default_collate`` can refuse to batch batches (a DataLoader
    whose ``batch_size`` is not None); ``batch_size=None`` passes it through unchanged."""


def _refuse_collation(batch: list[InputkitBatch], *, collate_fn_map: Any = None) -> Any:
    first = next(iter(batch[0].values()), None)
    shape = list(getattr(first, "shape", []))
    raise InputkitError(
        f"a DataLoader is collating {len(batch)} batch(es) of InputkitIterableDataset into one "
        f"(each field would get a new leading dimension, e.g. {[len(batch), *shape]} instead of "
        f"{shape}): DataLoader's batch_size defaults to 1, but inputkit batches itself "
        "(batch_size in the inputkit config), so use DataLoader(dataset, batch_size=None)")


if default_collate_fn_map is not None:  # torch's documented way to extend default_collate
    default_collate_fn_map[InputkitBatch] = _refuse_collation


class InputkitIterableDataset(IterableDataset):
    """Batches of ``input`` on device ``device`` of the Runner that ``cfg`` configures.

    ``cfg``: anything :class:`inputkit.Runner` accepts (a composed DictConfig, a plain
    dict, a RunSpec). ``device``: the index of the device in the config's ``devices``.
    ``input``: the named input to stream; only that input's pipeline starts. Each
    item is one batch (a dict of tensors already on the device), so wrap it in
    ``DataLoader(ds, batch_size=None)``: inputkit batches, and ``num_workers`` must stay 0.
    A DataLoader with another ``batch_size`` (its default is 1) raises an InputkitError
    when it collates the first batch (:class:`InputkitBatch`).

    Each pass (``iter()``) is one epoch of an indexable source. For such an input the
    Runner streams epochs without end (``epoch.count`` is replaced by null): the loop
    that iterates decides how many epochs run. A ``fetch`` source is streamed as it
    is: an endless one for ever, a finite one once per Runner (the next pass starts a
    new Runner, so the source is built again).

    :meth:`state_dict` says what has been delivered (the Runner's own state), and
    :meth:`load_state_dict` on a new dataset makes its next pass deliver only the rest
    of that epoch: the ``Stateful`` protocol of torchdata's ``StatefulDataLoader`` (the loader
    to give Lightning, whose checkpoints then resume mid-epoch). ``len()`` is the batches of
    one pass on this device, for an indexable source (see :meth:`__len__`).
    """

    def __init__(self, cfg: Any, device: int = 0, input: str | None = None) -> None:
        super().__init__()
        if isinstance(device, bool) or not isinstance(device, int) or device < 0:
            raise ConfigError("InputkitIterableDataset(device=...)",
                              f"expected the index of a device in the config (0, 1, ...), got {device!r}")
        spec = cfg if isinstance(cfg, RunSpec) else load_spec(cfg)
        if input is None:
            if len(spec.inputs) != 1:
                raise ConfigError("InputkitIterableDataset(input=...)",
                                  f"this config declares inputs {', '.join(s.name for s in spec.inputs)}; "
                                  "pass input=<name> to choose the one to stream")
            input = spec.inputs[0].name
        else:
            spec.input(input, key="InputkitIterableDataset(input=...)")  # lists the known ones
        self.spec = spec
        self.device = device
        self.input = input
        self._pipeline = _Pipeline(spec, device, input)
        # Dropping the dataset drops its Runner, whose own guard stops it in the Runner's
        # watchdog thread: no finalizer here, which would run close() (Python code, joins) in
        # whichever thread drops the dataset, where a Ctrl-C would be lost.

    # pickling (a copy starts its own Runner) --------------------------------------------------

    def __getstate__(self) -> dict[str, Any]:
        return {"spec": self.spec, "device": self.device, "input": self.input}

    def __setstate__(self, state: dict[str, Any]) -> None:
        self.__init__(state["spec"], device=state["device"], input=state["input"])  # type: ignore[misc]

    # iteration ----------------------------------------------------------------------------------

    def __iter__(self) -> Iterator[dict[str, Any]]:
        if get_worker_info() is not None:
            raise InputkitError(
                "InputkitIterableDataset is iterated in a DataLoader worker process; inputkit runs "
                "its own workers (workers.count, workers.kind) and batches itself, so use "
                "DataLoader(dataset, batch_size=None, num_workers=0)")
        return self._pipeline.epoch()

    # resuming (torchdata's Stateful protocol) --------------------------------------------------

    def state_dict(self) -> dict[str, Any]:
        """Where the stream stands: the running Runner's ``state_dict()``; between Runners, the
        position when the last one stopped (a ``break``), or the one loaded and not yet used.
        Every batch this dataset has handed out counts as delivered."""
        return {"kind": _STATE_KIND, "version": 1, "input": self.input,
                "runner": self._pipeline.position()}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        """Make the next pass resume from ``state`` (from :meth:`state_dict`): the rest of the
        saved epoch, then the epochs after it. A Runner running now is closed first."""
        if not isinstance(state, dict) or state.get("kind") != _STATE_KIND:
            raise InputkitError("InputkitIterableDataset.load_state_dict(): not an "
                                "InputkitIterableDataset state (expected the dict that its "
                                f"state_dict() returned), got {_describe(state)}")
        if state.get("version") != 1:
            raise InputkitError("InputkitIterableDataset.load_state_dict(): state version "
                                f"{state.get('version')!r}; this inputkit reads version 1")
        if state.get("input") != self.input:
            raise InputkitError(f"InputkitIterableDataset.load_state_dict(): the state is of input "
                                f"'{state.get('input')}', this dataset streams '{self.input}'")
        self._pipeline.resume_from(state["runner"])

    def __len__(self) -> int:
        """Batches one pass yields on this device and rank, for progress bars (a DataLoader's
        ``len()``): this device's share of a whole epoch, cut into batches as the batcher
        does (``drop_last``). A resumed pass yields only the rest, and skipped samples
        (``failures.on_error=skip``) make fewer, never more. A source read by ``fetch`` (an
        endless stream, an iterable dataset) has no length: TypeError, as for any unsized
        iterable."""
        return self._pipeline.batches_per_epoch()

    @property
    def runner(self) -> Runner | None:
        """The running Runner (for ``stats()``), or None between Runners."""
        return self._pipeline.runner

    def close(self) -> None:
        """Stop the Runner now (idempotent); a later pass starts a new one."""
        self._pipeline.close()

    def __enter__(self) -> InputkitIterableDataset:
        return self

    def __exit__(self, exc_type: type[BaseException] | None, exc: BaseException | None,
                 tb: TracebackType | None) -> None:
        if exc is None:
            self.close()
        else:
            self._pipeline.close_quietly()

    def __repr__(self) -> str:
        state = "running" if self._pipeline.runner is not None else "not running"
        return f"InputkitIterableDataset(input={self.input!r}, device={self.device}, {state})"


class _Pipeline:
    """The Runner of one InputkitIterableDataset and the passes over it; no reference back to
    the dataset, so dropping the dataset frees it (and its Runner)."""

    def __init__(self, spec: RunSpec, device: int, input: str) -> None:
        self.spec = spec
        self.device = device
        self.input = input
        self.runner: Runner | None = None
        self._stream: Any = None
        self._run_spec: RunSpec | None = None  # spec with epochs made endless, once known
        self._lock = threading.RLock()
        self._pass = 0  # the newest pass; an older one that is resumed ends at once
        self._open: int | None = None  # the pass in the middle of an epoch, if any
        self._resume: dict[str, Any] | None = None  # loaded; given to the next Runner
        self._stopped_at: dict[str, Any] | None = None  # the last Runner's state when it closed
        self._length: Any = _UNKNOWN  # samples per epoch (None: read by fetch), for len()

    def batches_per_epoch(self) -> int:
        """The batches of one whole epoch on this device of this rank (see the dataset's len())."""
        with self._lock:
            runner = self.runner
        if runner is not None:  # what the running pipeline itself uses
            length = runner.coordinators(self.input)[0].length
            devices, rank = len(runner.devices), runner.rank
        else:
            from inputkit.pipeline.device import resolve_devices
            from inputkit.pipeline.distributed import rank_info

            if self._length is _UNKNOWN:  # a Runner's state says; else a copy of the source
                self._length = _saved_length(self.position(), self.input)
            if self._length is _UNKNOWN:
                self._length = _epoch_length(self.spec.input(self.input))
            length = self._length
            rank = rank_info(self.spec.distributed)
            devices = len(resolve_devices(
                self.spec.devices, rank.local_rank if rank.world_size > 1 else None))
        spec = self.spec.input(self.input)
        if length is None:
            raise TypeError(
                f"InputkitIterableDataset has no len(): input '{self.input}' reads "
                f"'{spec.source['_target_']}' by fetch (an endless stream or an iterable "
                "dataset), so the batches of a pass are not known in advance; only a source "
                "with __len__ and read(indices) has a length")
        if self.device >= devices:
            raise InputkitError(f"InputkitIterableDataset(device={self.device}): device index "
                                f"{self.device} is out of range; this config feeds {devices} "
                                f"device(s); use an index below {devices}")
        first, slots = rank.device_slots(devices)
        samples = epoch_share(length, spec.epoch.chunk_size or spec.batch_size,
                              first + self.device, slots)
        return batches_in(samples, spec.batch_size, spec.drop_last)

    def position(self) -> dict[str, Any] | None:
        """The Runner state to resume from (None: the start)."""
        with self._lock:
            if self.runner is not None:
                return self.runner.state_dict()
            return self._resume if self._resume is not None else self._stopped_at

    def resume_from(self, state: dict[str, Any] | None) -> None:
        with self._lock:
            self.close()
            self._resume, self._stopped_at = state, None

    def epoch(self) -> Iterator[dict[str, Any]]:
        with self._lock:
            if self._open is not None:  # an earlier pass stopped mid-epoch: its batches are stale
                self.close()
            self._pass += 1
            mine = self._pass
        return self._batches(mine)

    def _batches(self, mine: int) -> Iterator[dict[str, Any]]:
        try:
            while True:
                with self._lock:
                    if self._pass != mine:
                        return  # a newer pass (or close()) took over
                    stream = self._start()
                    self._open = mine
                try:
                    batch = next(stream)
                except StopIteration:
                    with self._lock:
                        if self._pass == mine:
                            self._open = None
                            if stream.finished:  # no epoch follows: free everything now
                                self.close()
                    return
                yield InputkitBatch(batch)
        except GeneratorExit:  # break, or the pass was dropped: the rest of the epoch is stale
            with self._lock:
                if self._pass == mine:
                    self._open = None
                    self.close_quietly()
            raise
        except BaseException:
            with self._lock:
                if self._pass == mine:
                    self._open = None
                    self.close_quietly()
            raise

    def _start(self) -> Any:
        if self._stream is not None:
            return self._stream
        if self._run_spec is None:
            self._run_spec = _endless_epochs(self.spec, self.input)
        runner = Runner(self._run_spec, inputs=[self.input])
        if self._resume is not None:
            runner.load_state_dict(self._resume)
        runner.start()
        try:
            self._stream = runner.device(self.device)
        except BaseException:
            runner.close()
            raise
        self.runner, self._resume = runner, None
        return self._stream

    def close(self) -> None:
        with self._lock:
            runner, self.runner, self._stream = self.runner, None, None
            self._open = None
            self._pass += 1  # passes in flight end at their next batch
            if runner is not None:  # what was delivered, for state_dict() between Runners
                self._stopped_at = runner.state_dict()
        if runner is not None:
            runner.close()

    def close_quietly(self) -> None:
        try:
            self.close()
        except ShutdownError as exc:  # stuck threads are daemons; say so, do not raise
            log.warning("closing the inputkit Runner of an InputkitIterableDataset: %s", exc)


def _describe(value: Any) -> str:
    text = repr(value)
    return text if len(text) <= 80 else text[:77] + "..."


def _endless_epochs(spec: RunSpec, name: str) -> RunSpec:
    """``spec`` with ``epoch.count`` null for input ``name`` when its source is indexable, so one
    Runner serves every pass; a fetch source keeps its spec (epoch keys need an index)."""
    chosen = spec.input(name)
    if chosen.epoch.count is None or not _indexable(chosen):
        return spec
    endless = dataclasses.replace(chosen, epoch=dataclasses.replace(chosen.epoch, count=None))
    return dataclasses.replace(spec, inputs=tuple(endless if s.name == name else s for s in spec.inputs))


def _saved_length(state: dict[str, Any] | None, name: str) -> Any:
    """Samples per epoch as a Runner state records them (resumable inputs only), or _UNKNOWN."""
    saved = (state or {}).get("inputs", {}).get(name, {})
    return int(saved["length"]) if saved.get("resumable") else _UNKNOWN


def _epoch_length(spec: InputSpec) -> int | None:
    """Samples per epoch of the input's source (None: read by fetch), from a private copy;
    an iterable torch dataset is known as such without building it."""
    from inputkit.sources.loader import build_source, import_target
    from inputkit.sources.protocol import indexed_length
    from inputkit.sources.torch_dataset import TorchDatasetSource, dataset_kind

    key = f"{spec.key_prefix}source"
    target = import_target(spec.source["_target_"], key=f"{key}._target_")
    if not callable(getattr(target, "read", None)):
        return None
    if target is TorchDatasetSource and dataset_kind(spec.source) == "iterable":
        return None
    source = build_source(spec.source, key=key)
    try:
        return indexed_length(source.obj)
    finally:
        source.close()


def _indexable(spec: InputSpec) -> bool:
    """Whether the input's source is read by index, building a private copy only when the
    class alone does not tell (as Runner.start does for process workers)."""
    from inputkit.sources.loader import build_source, import_target
    from inputkit.sources.protocol import indexed_length

    key = f"{spec.key_prefix}source"
    target = import_target(spec.source["_target_"], key=f"{key}._target_")
    if not callable(getattr(target, "read", None)):
        return False
    from inputkit.sources.torch_dataset import TorchDatasetSource, dataset_kind

    if target is TorchDatasetSource:  # the dataset's class tells, without building it
        kind = dataset_kind(spec.source)
        if kind is not None:
            return kind == "map"
    source = build_source(spec.source, key=key)
    try:
        return indexed_length(source.obj) is not None
    finally:
        source.close()

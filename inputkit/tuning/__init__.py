"""``inputkit tune``: the cheapest configuration that keeps up, found under the memory budget.

::

    cfg = inputkit.compose(["experiment=images"])
    result = inputkit.tune(cfg, seconds=2, warmup=1)
    print(result.overrides())        # ['workers.kind=thread', 'workers.count=4', ...]
    with inputkit.Runner(result.config) as runner: ...

The tuner is a client of the core, like ``inputkit bench``: the memory planner checks
every point first (a point over ``memory.budget`` is never started), short trials run
through :class:`~inputkit.Runner`, their ``stats()`` and the diagnosis steer the search
(:mod:`inputkit.tuning.search`), and the answer is re-measured against the starting config
in the same run. Ctrl-C stops the search cleanly: ``tune`` then returns the best answer
so far with ``interrupted=True`` (and writes it, given an ``output_dir``). ``budget``
(``"5m"``) bounds the search's wall time (:mod:`inputkit.tuning.budget`); every answer
says where its ranking is within the noise (:mod:`inputkit.tuning.noise`).
"""

from __future__ import annotations

import time
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from inputkit.tuning.budget import Budget
from inputkit.tuning.ledger import Measure, Progress, Trial
from inputkit.tuning.space import Grids, Point
from inputkit.tuning.trial import Step

__all__ = ["Budget", "Grids", "InputAnswer", "Point", "Trial", "TuneResult", "tune"]


@dataclass(frozen=True)
class InputAnswer:
    """The answer for one input: the chosen trial, the start's, and both re-measured.

    ``final`` and ``final_start`` are the re-measurements at the end of the search (None
    when it was interrupted). ``start_within``: the starting config measured within 5% of
    the answer, so the answer saves memory rather than time. ``target_reached``: the
    answer reaches ``--target`` (True without a target). ``kept_start``: the search's answer
    (``displaced``) and the start measured within 5% of each other at the end, and the
    start plans less memory (or as much, with fewer workers): the start is kept.
    ``doubts``: where the ranking that chose it is within the noise of the readings (empty:
    it is not); ``notes``: what else the search did that the report names."""

    input: str
    chosen: Trial | None
    start: Trial | None
    final: Trial | None = None
    final_start: Trial | None = None
    target: float | None = None
    target_reached: bool = True
    start_within: bool | None = None
    kept_start: bool = False
    displaced: Trial | None = None
    doubts: tuple[str, ...] = ()
    notes: tuple[str, ...] = ()

    @property
    def point(self) -> Point | None:
        return self.chosen.point if self.chosen is not None else None


@dataclass(frozen=True)
class TuneResult:
    """What ``tune`` found: the tuned config (plain, every key), the answers, every trial."""

    config: dict[str, Any]
    start_config: dict[str, Any]
    answers: tuple[InputAnswer, ...]
    trials: tuple[Trial, ...]
    interrupted: bool = False
    trial_limit_reached: bool = False
    grid_points: int = 0  # the full grid's size: what an exhaustive sweep would run
    wall_s: float = 0.0
    files: dict[str, Path] = field(default_factory=dict)
    command: str = ""
    budget: str = ""  # "--budget 5m 00s, spent 4m 52s"; empty without a budget

    @property
    def skipped(self) -> list[Trial]:
        """Trials not started because what was left of ``--budget`` did not cover them."""
        from inputkit.tuning.ledger import SKIPPED

        return [t for t in self.trials if t.status == SKIPPED]

    @property
    def measured(self) -> int:
        """Trials started (the re-measurements at the end included)."""
        return sum(1 for t in self.trials if t.runs)

    def overrides(self) -> list[str]:
        """The tuned settings as Hydra overrides."""
        return [o for a in self.answers if a.point is not None for o in a.point.overrides()]


def plain_config(cfg: Any) -> dict[str, Any]:
    """A plain, resolved copy of ``cfg`` (DictConfig, mapping or InputkitConfig), no ``hydra``."""
    from omegaconf import OmegaConf

    from inputkit.config.schema import InputkitConfig

    if isinstance(cfg, InputkitConfig):
        node = OmegaConf.structured(cfg)
    elif OmegaConf.is_config(cfg):
        node = cfg
    elif isinstance(cfg, Mapping):
        node = OmegaConf.create(dict(cfg))
    else:
        from inputkit.errors import ConfigError

        raise ConfigError("", f"expected a DictConfig or a mapping, got {type(cfg).__name__}")
    out = OmegaConf.to_container(node, resolve=True, enum_to_str=True)
    if not isinstance(out, dict):
        from inputkit.errors import ConfigError

        raise ConfigError("", f"expected a mapping of config keys, got {out!r}")
    out.pop("hydra", None)
    return {str(k): v for k, v in out.items()}


def tune(cfg: Any, *, seconds: float = 2.0, warmup: float = 1.0, repeats: int = 3,
         target: float | None = None, max_trials: int | None = None, grids: Grids | None = None,
         output_dir: str | Path | None = None, step: Step | None = None,
         progress: Progress | None = None, command: str = "inputkit.tune()",
         runner_class: Any = None, budget: float | str | Budget | None = None,
         measure: Measure | None = None) -> TuneResult:
    """Search worker kind, count and queue sizes of every input (``bench.input``: that one).

    ``seconds``/``warmup``: each trial's measured span and the warm-up before it;
    ``repeats``: the most runs of a trial whose measurements spread beyond the noise;
    ``target``: batches/s the training step consumes (the cheapest point reaching it
    wins); ``max_trials``: the most trials the search measures (the two re-measurements
    at the end come on top); ``grids``: the values searched; ``step``: called on every
    batch as the training step would be (default: batches are taken as fast as they
    come); ``output_dir``: where the tuned config, the table and the plot go;
    ``budget``: the search's wall time (``"5m"``, seconds, or a :class:`Budget` on a clock
    of your own): trials that do not fit are skipped and listed; ``measure``: a stand-in
    for the trial runner, ``(spec, input, settings) -> Measurement`` (tests, simulations).
    """
    from inputkit.config.schema import usable_cpus
    from inputkit.config.spec import load_spec
    from inputkit.errors import ConfigError
    from inputkit.runner import Runner
    from inputkit.tuning.budget import parse_duration
    from inputkit.tuning.ledger import Ledger, TrialLimit
    from inputkit.tuning.report import write_outputs
    from inputkit.tuning.search import upper_bound
    from inputkit.tuning.space import input_space
    from inputkit.tuning.trial import Settings

    if not isinstance(budget, Budget):
        budget = Budget(parse_duration(budget) if budget is not None else None)
    began = time.monotonic()
    settings = Settings(seconds=seconds, warmup=warmup, repeats=repeats, step=step).check()
    grids = (grids or Grids()).checked()
    if target is not None and not target > 0:
        raise ConfigError("--target", f"must be a positive number of batches/s, got {target:g}")
    if max_trials is not None and max_trials < 1:
        raise ConfigError("--max-trials", f"must be at least 1, got {max_trials}")
    start = plain_config(cfg)
    spec = load_spec(start)
    devices = _devices(spec)
    on_cuda = any(d.startswith("cuda") for d in devices)
    names = [spec.bench_input] if spec.bench_input else [s.name for s in spec.inputs]
    spec, start, auto_lines = _resolve_auto(spec, start, names)
    spaces = [input_space(spec.input(n), start, grids, usable_cpus(), on_cuda) for n in names]
    ledger = Ledger(start, devices, settings, max_trials, progress, runner_class or Runner,
                    budget=budget, measure_fn=measure)
    for name, text in auto_lines:
        ledger.note(name, text)
    ledger.expected = sum(upper_bound(s) for s in spaces)
    ledger.finals_left = 2 * len(spaces)  # the re-measurements' runs are kept aside
    interrupted = limited = False
    try:
        _search(spaces, ledger, target)
    except TrialLimit:
        limited = True
    except KeyboardInterrupt:
        interrupted = True
    answers, tuned = _answers(spaces, ledger, start, target)
    if not interrupted:
        try:
            answers = _remeasure(answers, spaces, ledger, start, tuned)
        except KeyboardInterrupt:
            interrupted = True
        tuned = start
        for answer in answers:  # a kept start changes nothing for its input
            if answer.chosen is not None:
                tuned = answer.chosen.point.apply(tuned)
    answers = [_with_doubts(a, ledger) for a in answers]
    result = TuneResult(config=tuned, start_config=start, answers=tuple(answers),
                        trials=tuple(ledger.trials), interrupted=interrupted,
                        trial_limit_reached=limited, grid_points=sum(s.grid_size() for s in spaces),
                        wall_s=time.monotonic() - began, command=command,
                        budget=budget.describe())
    if output_dir is not None:
        result = write_outputs(result, Path(output_dir), ledger)
    return result


def _resolve_auto(spec: Any, start: dict[str, Any],
                  names: list[str]) -> tuple[Any, dict[str, Any], list[tuple[str, str]]]:
    """``workers.kind=auto`` inputs given the kind and count auto chooses (its probe, or thread
    workers with the probe off), in the spec and in the starting config: the search measures
    concrete kinds only and starts from auto's choice, and a kept start writes it out."""
    import dataclasses

    from inputkit.kinds.auto_probe import plan_choices
    from inputkit.tuning.space import Point

    wanted = [inp for inp in spec.inputs if inp.name in names and inp.worker_kind == "auto"]
    if not wanted:
        return spec, start, []
    resolved, lines = plan_choices(dataclasses.replace(spec, inputs=tuple(wanted)))
    inputs = {inp.name: inp for inp in resolved.inputs}
    for inp in inputs.values():
        start = Point(inp.name, inp.key_prefix, inp.worker_kind, inp.worker_count).apply(start)
    spec = dataclasses.replace(spec, inputs=tuple(inputs.get(i.name, i) for i in spec.inputs))
    notes = [(inp.name, f"{line}; the search starts there")
             for inp, line in zip(wanted, lines, strict=True)]
    return spec, start, notes


def _with_doubts(answer: InputAnswer, ledger: Any) -> InputAnswer:
    """The answer with the search's notes and the doubts of its ranking (noise.doubts)."""
    from dataclasses import replace

    from inputkit.tuning.noise import doubts

    mine = [text for name, text in ledger.doubts if name == answer.input]
    found = doubts(ledger.trials, answer.chosen, answer.final, answer.target, mine)
    return replace(answer, doubts=found,
                   notes=tuple(text for name, text in ledger.notes if name == answer.input))


def _devices(spec: Any) -> tuple[str, ...]:
    """The devices a Runner of ``spec`` would feed (so each plan is the one it checks)."""
    from inputkit.pipeline.device import resolve_devices
    from inputkit.pipeline.distributed import rank_info

    rank = rank_info(spec.distributed)
    return tuple(resolve_devices(spec.devices, rank.local_rank if rank.world_size > 1 else None))


def _search(spaces: list[Any], ledger: Any, target: float | None) -> None:
    """Each input in turn; its answer goes into the config before the next input's search,
    so every later plan counts it."""
    from inputkit.tuning.search import choose, search_input

    for space in spaces:
        search_input(space, ledger, target)
        chosen, _ = choose(ledger.trials, space.input, target)
        if chosen is not None:
            ledger.base = chosen.point.apply(ledger.base)


def _answers(spaces: list[Any], ledger: Any, start: dict[str, Any],
             target: float | None) -> tuple[list[InputAnswer], dict[str, Any]]:
    from inputkit.tuning.search import choose

    answers, tuned = [], start
    for space in spaces:
        chosen, reached = choose(ledger.trials, space.input, target)
        first = next((t for t in ledger.trials if t.point.input == space.input
                      and t.phase == "start"), None)
        if chosen is not None:
            tuned = chosen.point.apply(tuned)
        answers.append(InputAnswer(space.input, chosen, first, target=target,
                                   target_reached=reached))
    return answers, tuned


def _remeasure(answers: list[InputAnswer], spaces: list[Any], ledger: Any,
               start: dict[str, Any], tuned: dict[str, Any]) -> list[InputAnswer]:
    """The start and the answer of each input, measured again one after the other."""
    from dataclasses import replace

    from inputkit.tuning.search import TOLERANCE

    out = []
    for answer, space in zip(answers, spaces, strict=True):
        if answer.chosen is None:
            out.append(answer)
            continue
        ledger.base = tuned
        final = ledger.evaluate(answer.chosen.point, "final", fresh=True)
        final_start = final
        if answer.chosen.phase != "start":
            ledger.base = start
            final_start = ledger.evaluate(space.start, "final", fresh=True)
        within = None
        if final.measured and final_start.measured:
            within = (final_start.rate or 0.0) >= (1.0 - TOLERANCE) * (final.rate or 0.0)
        if within and answer.start is not None and _cheaper(final_start, final):
            # Side by side the start is as fast and cheaper: the search's pick was a lucky
            # reading, and the start is the answer.
            out.append(replace(answer, chosen=answer.start, final=final_start,
                               final_start=final_start, start_within=True, kept_start=True,
                               displaced=final))
            continue
        out.append(replace(answer, final=final, final_start=final_start, start_within=within))
    return out


def _cheaper(a: Trial, b: Trial) -> bool:
    """Less planned memory, or as much with fewer workers."""
    if a.planned_bytes is None or b.planned_bytes is None:
        return False
    return (a.planned_bytes, a.point.count) < (b.planned_bytes, b.point.count)

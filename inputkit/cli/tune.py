"""``inputkit tune``: search the settings of the configured input(s), write and print the answer.

``inputkit tune [OVERRIDES] [--seconds S] [--warmup S] [--repeats N] [--target N]
[--max-trials N] [--budget 5m] [--config-dir DIR]``. The overrides and ``--config-dir`` /
``--config-name`` go to Hydra as for ``inputkit bench``, and the run directory is
Hydra's (``outputs/<date>/<time>``). Progress is a live view on a terminal and plain
lines otherwise (a pipe, a file, ``CI=true``). Ctrl-C or SIGTERM stop the search
cleanly, write the best answer so far and exit 130 (143).
"""

from __future__ import annotations

import os
import signal
from typing import Any

import typer


def _ints(text: str | None, option: str) -> tuple[int, ...] | None:
    if text is None:
        return None
    from inputkit.errors import ConfigError

    try:
        return tuple(int(v) for v in text.replace(" ", "").split(",") if v)
    except ValueError:
        raise ConfigError(option, f"expected whole numbers separated by commas (1,2,4), got "
                          f"{text!r}") from None


def tune_command(
    ctx: typer.Context,
    seconds: float = typer.Option(2.0, help="measured seconds per trial (after the warm-up)"),
    warmup: float = typer.Option(1.0, help="seconds of batches taken, not measured, per trial"),
    repeats: int = typer.Option(3, help="the most runs of a trial whose measurements spread "
                                        "beyond the noise (the median is kept)"),
    target: float = typer.Option(None, help="batches/s the training step consumes: the "
                                            "cheapest point that reaches it wins"),
    max_trials: int = typer.Option(None, "--max-trials", help="stop the search after this many "
                                   "measured trials (the two re-measurements come on top)"),
    budget: str = typer.Option(None, help="wall time the search may take, e.g. 5m, 90s, 1h30m: "
                                          "trials that do not fit are skipped and listed"),
    kinds: str = typer.Option(None, help="worker kinds to search, e.g. thread,process "
                                         "(default: every kind)"),
    counts: str = typer.Option(None, help="worker counts, e.g. 1,2,4,8 (default: 1, 2, 4, ... "
                                          "up to twice the usable cores, then on doubling "
                                          "while it pays for a fetch that waits)"),
    capacities: str = typer.Option("1,2,4,8,16", help="chunk queue capacities (queue.capacity)"),
    batch_capacities: str = typer.Option("1,2,4", "--batch-capacities",
                                         help="batch queue capacities (queue.batch_capacity)"),
    prefetch: str = typer.Option("1,2,4", help="device.prefetch values (searched on CUDA only)"),
) -> None:
    """Find the cheapest configuration that keeps up, under memory.budget, and prove it.

    Arguments are Hydra overrides, as for bench, for example:

    \b
      inputkit tune experiment=imagenet_train source.path=/data/train
      inputkit tune experiment=images --seconds 3 --target 120
      inputkit tune --config-dir ./conf experiment=mine --counts 1,2,4
      inputkit tune experiment=remote --budget 5m

    Every point is checked by the memory planner first; a point over
    memory.budget is never started. The answer (the least planned memory, then
    the fewest workers, within 5% of the best measured; with --target, the
    cheapest point reaching it) is measured again beside the starting config,
    then written to tuned/experiment/tuned.yaml in the run directory with
    trials.csv and tune.png: run it with
    inputkit bench --config-dir RUN_DIR/tuned experiment=tuned. Where the
    ranking rests on differences smaller than the noise of the readings, the
    output says so.
    """
    raise typer.Exit(run_tune(list(ctx.args), {
        "seconds": seconds, "warmup": warmup, "repeats": repeats, "target": target,
        "max_trials": max_trials, "budget": budget, "kinds": kinds, "counts": counts,
        "capacities": capacities,
        "batch_capacities": batch_capacities, "prefetch": prefetch}))


def run_tune(argv: list[str], options: dict[str, Any]) -> int:
    """The command's body: exit code 0, 1 (a failure), 2 (a bad config), 130/143 (stopped)."""
    from rich.console import Console

    from inputkit.cli.exit_codes import EXIT_CONFIG, EXIT_INTERRUPTED, EXIT_TERMINATED
    from inputkit.cli.exit_codes import report_error as _report
    from inputkit.cli.failure_text import traceback_wanted
    from inputkit.errors import ConfigError, InputkitError

    err = Console(stderr=True, soft_wrap=True, highlight=False)
    argv, traceback = traceback_wanted(argv)  # --traceback: a failed worker's whole traceback
    terminated: list[int] = []

    def on_sigterm(signum: int, frame: Any) -> None:
        terminated.append(signum)  # the same clean path as Ctrl-C
        raise KeyboardInterrupt

    previous = signal.signal(signal.SIGTERM, on_sigterm)
    try:
        if options.get("budget") is not None:  # a bad duration fails before Hydra starts
            from inputkit.tuning.budget import parse_duration

            options = {**options, "budget": parse_duration(options["budget"], "--budget")}
        if any(a in ("-m", "--multirun") for a in argv):
            raise ConfigError("--multirun", "inputkit tune searches by itself; drop -m (the "
                              "grids are --kinds, --counts, --capacities, --batch-capacities)")
        results = _tune_with_hydra(argv, options)
        if results is None:  # --cfg / --info: printed, nothing ran
            return 0
        [result] = results
        if isinstance(result, dict):
            raise result["error"]
    except ConfigError as exc:
        return _report(err, exc, str(exc), EXIT_CONFIG, traceback)
    except KeyboardInterrupt:
        err.print(f"{'terminated' if terminated else 'interrupted'} before the first trial; "
                  "nothing was written", markup=False)
        return EXIT_TERMINATED if terminated else EXIT_INTERRUPTED
    except InputkitError as exc:
        return _report(err, exc, str(exc), 1, traceback)
    except Exception as exc:  # a source's own error, with its worker traceback in the notes
        return _report(err, exc, f"{type(exc).__name__}: {exc}", 1, traceback)
    finally:
        signal.signal(signal.SIGTERM, previous)
    if result.interrupted:
        word = "terminated" if terminated else "interrupted"
        where = result.files.get("config")
        err.print(f"{word}: the search was stopped cleanly"
                  + (f"; the best answer so far is in {where}" if where else
                     "; no trial had finished, nothing was written"), markup=False)
        return EXIT_TERMINATED if terminated else EXIT_INTERRUPTED
    return 0


def _tune_with_hydra(argv: list[str], options: dict[str, Any]) -> list[Any] | None:
    from inputkit.cli.hydra_app import run_with_hydra
    from inputkit.tuning.space import Grids

    grids = Grids(kinds=tuple(options["kinds"].replace(" ", "").split(","))
                  if options["kinds"] else None,
                  counts=_ints(options["counts"], "--counts"),
                  capacities=_ints(options["capacities"], "--capacities") or (),
                  batch_capacities=_ints(options["batch_capacities"], "--batch-capacities") or (),
                  prefetch=_ints(options["prefetch"], "--prefetch") or ()).checked()
    os.environ["HYDRA_FULL_ERROR"] = "1"
    command = "inputkit tune " + " ".join(argv)

    def task(cfg: Any) -> Any:
        return tune_task(cfg, options, grids, command)

    return run_with_hydra(argv, task, prog="inputkit tune", check=_check)


def _check(cfg: Any) -> None:
    """Fail fast on a bad config or an unimportable source. No budget check: the starting
    config may be over budget, and the tuner may find one that fits."""
    from inputkit.config.spec import load_spec
    from inputkit.sources.loader import import_target

    spec = load_spec(cfg)
    for input_spec in spec.inputs:
        import_target(input_spec.source["_target_"], key=f"{input_spec.key_prefix}source._target_")


def tune_task(cfg: Any, options: dict[str, Any], grids: Any, command: str) -> Any:
    """The Hydra task: search with a progress display, then print the table and the answer."""
    from pathlib import Path

    from hydra.core.hydra_config import HydraConfig

    from inputkit.cli.bench import make_console
    from inputkit.cli.tune_display import Display
    from inputkit.tuning import tune
    from inputkit.tuning.report import answer_lines, bench_command, trials_table

    run_dir = Path(HydraConfig.get().runtime.output_dir) if HydraConfig.initialized() else None
    console = make_console()
    try:
        with Display(console) as display:
            result = tune(cfg, seconds=options["seconds"], warmup=options["warmup"],
                          repeats=options["repeats"], target=options["target"],
                          max_trials=options["max_trials"], grids=grids, output_dir=run_dir,
                          progress=display, command=command, budget=options.get("budget"))
    except Exception as exc:  # returned, not raised: Hydra would print its own error line
        return {"error": exc}
    console.print(trials_table(result))
    for line in answer_lines(result):
        console.print(line, markup=False, highlight=False, soft_wrap=True)
    for name, path in result.files.items():
        console.print(f"{name}: {path}", markup=False, highlight=False, soft_wrap=True)
    if run_dir is not None and "config" in result.files:
        console.print(f"run it: {bench_command(run_dir)}", markup=False, highlight=False,
                      soft_wrap=True)
    return result

"""The ``inputkit`` command line (typer). Heavy imports (torch, hydra) wait for a command.

``inputkit bench [OVERRIDES] [--cfg job] [--config-dir DIR] [--config-name NAME] [-m]``
"""

from __future__ import annotations

import os
import signal
import sys
from contextvars import ContextVar
from typing import Any

import typer

from inputkit.cli.exit_codes import EXIT_CONFIG, EXIT_INTERRUPTED, EXIT_TERMINATED
from inputkit.cli.exit_codes import report_error as _report
from inputkit.cli.help_format import Command, Group
from inputkit.cli.tune import tune_command

# Set by main() (the console script, ``python -m inputkit``): start-up counts from the process's
# start. Unset when the typer app is called in-process (tests, a notebook).
_AS_COMMAND: ContextVar[bool] = ContextVar("inputkit_as_command", default=False)

app = typer.Typer(
    name="inputkit",
    cls=Group,
    help="Configuration-driven, observable, memory-safe training input.",
    no_args_is_help=True,
    add_completion=False,
    pretty_exceptions_enable=False,
)

_PASS_THROUGH = {"allow_extra_args": True, "ignore_unknown_options": True,
                 "help_option_names": ["--help", "-h"]}


def _print_version(value: bool) -> None:
    if value:
        from inputkit import __version__

        print(f"inputkit {__version__}")
        raise typer.Exit(0)


@app.callback()
def _root(
    version: bool = typer.Option(False, "--version", callback=_print_version, is_eager=True,
                                 help="print the installed version and exit"),
) -> None:
    """inputkit feeds training input: declared in Hydra configs, measured, memory-safe."""


@app.command(cls=Command, context_settings=_PASS_THROUGH)
def bench(ctx: typer.Context) -> None:
    """Stream batches from the configured input(s) and report throughput per device.

    Arguments are Hydra overrides and flags, for example:

    \b
      inputkit bench batch_size=64 workers.count=8 devices=\\[cpu,cpu]
      inputkit bench experiment=images bench.seconds=30
      inputkit bench +source.fields.y={dtype:int64} ~source.fields.label
      inputkit bench --cfg job              print the composed config, run nothing
      inputkit bench --config-dir ./conf    your configs, searched before ours
      inputkit bench --config-name NAME     start from your own primary config
      inputkit bench -m workers.count=1,2,4 sweep, then one comparison table
      inputkit bench --json                 snapshots to metrics.jsonl
      inputkit bench --traceback            a failed worker's traceback too

    Config groups: source, workers, experiment (inputkit sources lists the
    sources). inputkit bench --cfg job prints every key with its value;
    docs/configuration.md in inputkit's source repository describes each one.
    """
    from inputkit.cli.failure_text import traceback_wanted

    args, traceback = traceback_wanted(list(ctx.args))  # ours too: a worker's whole traceback
    if "--json" in args:  # our flag, not Hydra's: every snapshot to metrics.jsonl
        args = [a for a in args if a != "--json"] + ["bench.json=true"]
    raise typer.Exit(_run_bench(args, traceback))


@app.command(cls=Command, context_settings=_PASS_THROUGH)
def plan(
    ctx: typer.Context,
    config_dir: str = typer.Option(None, "--config-dir", "-cd",
                                   help="your config folder, searched before ours"),
    config_name: str = typer.Option("config", "--config-name", "-cn",
                                    help="the primary config to start from"),
    no_probe: bool = typer.Option(False, "--no-probe",
                                  help="never fetch from a source to learn sample sizes"),
) -> None:
    """Show the memory every stage may hold at its worst, against memory.budget.

    Takes the same overrides as bench (e.g. inputkit plan experiment=caffe2_oom
    queue.capacity=64). Exit code 0: it fits; 3: over budget (with the fixes
    that fit); 2: a bad config. Does not import torch.
    """
    raise typer.Exit(_run_plan(list(ctx.args), config_dir, config_name, not no_probe))


def _run_plan(overrides: list[str], config_dir: str | None, config_name: str,
              probe: bool) -> int:
    from rich.console import Console

    from inputkit.errors import ConfigError, SourceError

    err = Console(stderr=True, soft_wrap=True, highlight=False)
    try:
        from dataclasses import replace

        from inputkit.cli.bench import make_console
        from inputkit.cli.plan import EXIT_OVER_BUDGET, print_plan
        from inputkit.config.compose import compose
        from inputkit.config.overrides import check_repeated
        from inputkit.config.spec import load_spec
        from inputkit.planning.memory import plan_memory

        check_repeated(overrides)  # named as the command line's, before compose() sees them
        spec = load_spec(compose(overrides, config_name=config_name, config_dir=config_dir))
        if not probe:
            spec = replace(spec, probe=False)
        from inputkit.kinds.auto_probe import plan_choices
        from inputkit.startup import StartupClock

        built: dict[str, Any] = {}  # auto's probe's copies, read again by the memory probe
        try:
            with StartupClock(console=err).current():  # a slow index is shown while it is built
                # workers.kind=auto: the chosen kind's plan
                spec, auto_lines = plan_choices(spec, keep=built)
                memory_plan = plan_memory(spec, keep=built)
        finally:
            for copy in built.values():
                copy.close()
    except (ConfigError, SourceError) as exc:
        return _report(err, exc, str(exc), EXIT_CONFIG)
    for line in auto_lines:
        make_console().print(line, markup=False, highlight=False, soft_wrap=True)
    print_plan(make_console(), memory_plan)
    return EXIT_OVER_BUDGET if memory_plan.over_budget else 0


app.command(name="tune", cls=Command, context_settings=_PASS_THROUGH)(tune_command)


@app.command(cls=Command)
def sources(as_json: bool = typer.Option(False, "--json", help="print JSON instead of a table")) -> None:
    """List every available source, built-in or plugin, with its config keys.

    Plugins are registered under the 'inputkit.sources' entry-point group. A
    table on a terminal; one block of plain lines per source otherwise (a pipe,
    a file).
    """
    import json
    from dataclasses import asdict

    from rich.console import Console

    from inputkit.cli.render import sources_lines, sources_table
    from inputkit.sources.registry import available_sources

    found = available_sources()
    if as_json:
        print(json.dumps([asdict(s) for s in found], indent=2))
        raise typer.Exit(0)
    console = Console(soft_wrap=False, highlight=False)
    hint = ("Use one with source._target_=NAME (a new _target_ starts from none of the old "
            "source's keys: add its own with +source.KEY=VALUE), or in a config file with "
            "'defaults: [override /source: NAME]' for a file in the source group. Register your "
            "own under the 'inputkit.sources' entry-point group (docs/plugins.md in inputkit's "
            "source repository).")
    if console.is_terminal:
        console.print(sources_table(found))
        console.print(hint, markup=False)
    else:  # whole names on whole lines, whatever the width
        print("\n".join(sources_lines(found)))
        print(hint)
    raise typer.Exit(0)


@app.command(cls=Command, context_settings=_PASS_THROUGH)
def compare(
    ctx: typer.Context,
    workload: list[str] = typer.Option(
        None, "--workload", "-w", help="w1, w2, w3, w4 or w5 (repeat it; default: all five)"),
    seconds: float = typer.Option(3.0, help="steady-state seconds per loader and workload"),
    repeats: int = typer.Option(1, help="runs per loader, interleaved; the median is shown"),
    startup: bool = typer.Option(True, help="also time the first batch of 4 process workers x 2 "
                                            "devices (cold start)"),
    images: str = typer.Option(None, "--images", help="W5's JPEG folder (ImageFolder layout, or "
                               "a folder holding train/); default: 2,000 images cut from "
                               "scikit-image's photographs, written once into the cache"),
) -> None:
    """Run the same fetch work through inputkit and its peers, side by side.

    Peers: DataLoader in-process (num_workers=0) and with worker processes,
    and torchdata.nodes with threads. Workloads are the shipped experiments:
    w1 = tiny, w2 = images, w3 = remote, w4 = cpu; w5 = real JPEGs through
    imagenet_train, against DataLoader with torchvision's Pillow recipe,
    with that recipe in OpenCV and with albumentations, and SPDL. Extra
    arguments are Hydra overrides applied to every workload (e.g.
    workers.count=4). Prints throughput, time to first batch, peak
    memory, the ratio to the fastest peer and to the physical limit.
    """
    raise typer.Exit(_run_compare(workload or ["w1", "w2", "w3", "w4", "w5"], seconds, repeats,
                                  startup, list(ctx.args), images))


def _run_compare(workloads: list[str], seconds: float, repeats: int, startup: bool,
                 overrides: list[str], images: str | None = None) -> int:
    from rich.console import Console

    from inputkit.errors import ConfigError

    err = Console(stderr=True, soft_wrap=True, highlight=False)
    try:
        from inputkit.cli.bench import make_console
        from inputkit.cli.compare import print_report
        from inputkit.peers.compare import WORKLOADS, first_batch_latency, run_workload
        from inputkit.peers.realimages import IMAGES, run_images_workload

        choices = [*WORKLOADS, IMAGES.key]
        unknown = [w for w in workloads if w.lower() not in choices]
        if unknown:
            raise ConfigError("--workload", f"unknown workload(s) {', '.join(unknown)}; "
                              f"choose from {', '.join(choices)}")
        if seconds <= 0:
            raise ConfigError("--seconds", f"must be positive, got {seconds:g}")
        if repeats < 1:
            raise ConfigError("--repeats", f"must be at least 1, got {repeats}")
        from inputkit.config.overrides import check_repeated

        check_repeated(overrides)  # layered over each workload's own, so checked here
        console = make_console()

        def say(text: str) -> None:
            err.print(f"measuring {text}", markup=False)

        startup_s = None
        if startup:
            say("first batch, 4 process workers x 2 devices (cold start)")
            startup_s = first_batch_latency(overrides)
        results = [run_images_workload(images, overrides, seconds, say, repeats)
                   if w.lower() == IMAGES.key else
                   run_workload(WORKLOADS[w.lower()], overrides, seconds, say, repeats)
                   for w in workloads]
    except ConfigError as exc:
        return _report(err, exc, str(exc), EXIT_CONFIG)
    except KeyboardInterrupt:
        err.print("interrupted", markup=False)
        return EXIT_INTERRUPTED
    print_report(console, results, startup_s)
    return 0


def _run_bench(argv: list[str], traceback: bool | None = None) -> int:
    from rich.console import Console

    from inputkit.errors import ConfigError, InputkitError
    from inputkit.planning.memory import MemoryBudgetError

    err = Console(stderr=True, soft_wrap=True, highlight=False)
    terminated = []

    def on_sigterm(signum: int, frame: Any) -> None:
        # SIGTERM (a scheduler, `kill`) takes Ctrl-C's clean path: stop, summarise, exit 143.
        terminated.append(signum)
        raise KeyboardInterrupt

    previous = signal.signal(signal.SIGTERM, on_sigterm)
    try:
        results = _bench_with_hydra(argv)
        if results is not None and len(results) == 1 and "error" in results[0]:
            raise results[0]["error"]
    except MemoryBudgetError as exc:
        from inputkit.cli.bench import make_console
        from inputkit.cli.plan import EXIT_OVER_BUDGET, print_plan

        print_plan(make_console(), exc.plan)
        err.print("error: refused to start: the memory plan is over memory.budget "
                  "(see `inputkit plan`)", markup=False)
        return EXIT_OVER_BUDGET
    except ConfigError as exc:
        return _report(err, exc, str(exc), EXIT_CONFIG, traceback)
    except KeyboardInterrupt as exc:
        word = "terminated" if terminated else "interrupted"
        from inputkit.kinds.auto_probe import ProbeInterrupted

        if isinstance(exc, ProbeInterrupted):  # before the pipeline: auto's probe was waiting
            err.print(f"{word} {exc}", markup=False)
        elif exc.args:  # bench names the threads that did not stop (stuck inside a fetch)
            err.print(f"{word}: the pipeline was stopped, except {len(exc.args)} thread(s) "
                      "stuck in the source, left to end with the process", markup=False)
        else:
            err.print(f"{word}: the pipeline was stopped cleanly", markup=False)
        return EXIT_TERMINATED if terminated else EXIT_INTERRUPTED
    except InputkitError as exc:
        return _report(err, exc, str(exc), 1, traceback)
    except Exception as exc:  # a user's fetch raised: its type, message and worker traceback
        return _report(err, exc, f"{type(exc).__name__}: {exc}", 1, traceback)
    finally:
        signal.signal(signal.SIGTERM, previous)
    if results is not None and len(results) > 1:
        from inputkit.cli.bench import make_console
        from inputkit.cli.render import sweep_table

        points = [(r.get("overrides", []), r) for r in results]
        console = make_console()
        console.print(sweep_table(points))
        _sweep_plot(console, points)
        failed = [r for r in results if "error" in r]
        for r in failed:
            err.print(f"error in sweep point {' '.join(r.get('overrides', []))}: "
                      f"{type(r['error']).__name__}: {r['error']}", markup=False)
        return 1 if failed else 0
    return 0


def _sweep_plot(console: Any, points: list[tuple[list[str], dict[str, Any]]]) -> None:
    """sweep.png beside the points' run directories: throughput against peak buffered bytes."""
    from pathlib import Path

    from inputkit.observe import plots

    done = [(o, r) for o, r in points if "stats" in r and r.get("run_dir")]
    if len(done) < 2:
        return
    if not plots.matplotlib_available():
        console.print(f"no sweep plot: matplotlib is not installed ({plots.INSTALL_HINT})",
                      markup=False, highlight=False)
        return
    path = Path(done[0][1]["run_dir"]).parent / "sweep.png"
    common = set.intersection(*(set(o) for o, _ in done))  # label points by what varies
    plots.plot_sweep([{"label": " ".join(x for x in o if x not in common) or "(defaults)",
                       "samples_per_s": r["stats"]["samples_per_s"],
                       "peak_buffered_bytes": r["peak_buffered_bytes"]} for o, r in done], path)
    console.print(f"sweep plot: {path}", markup=False, highlight=False)


def _bench_with_hydra(argv: list[str]) -> list[Any] | None:
    from rich.console import Console

    from inputkit.cli.bench import bench_task, check_config
    from inputkit.cli.hydra_app import run_with_hydra
    from inputkit.startup import Prepared, StartupClock, process_started

    # Hydra raises instead of printing and exiting, so errors get our one-line form.
    os.environ["HYDRA_FULL_ERROR"] = "1"
    # Start-up is timed from the process's start, its slow steps shown on stderr; what the
    # config check builds (the probe's sources, each input's sizes) is the run's, not rebuilt.
    # (From the process's start only when this process is the command: called in-process, as
    # typer's CliRunner does, the process may have started long before: count from now.)
    began = process_started() if _AS_COMMAND.get() else None
    clock = StartupClock(began=began, console=Console(stderr=True, highlight=False))
    prepared = Prepared()

    def check(cfg: Any) -> None:
        check_config(cfg, prepared)

    def task(cfg: Any) -> dict[str, Any]:
        return bench_task(cfg, prepared)

    try:
        with clock.current():
            return run_with_hydra(argv, task, prog="inputkit bench", check=check)
    finally:
        prepared.close()


def main(argv: list[str] | None = None) -> None:
    """Console entry point (``inputkit`` and ``python -m inputkit``)."""
    token = _AS_COMMAND.set(argv is None)  # this process runs the command line it started with
    try:
        app(args=argv if argv is not None else sys.argv[1:], prog_name="inputkit")
    finally:
        _AS_COMMAND.reset(token)

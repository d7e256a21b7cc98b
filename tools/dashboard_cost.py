"""What the live dashboard costs: bench throughput with it on and off, in one run.

The dashboard renders into a terminal console (to memory, so the terminal itself
is not measured) 4 times a second, like ``inputkit bench`` on a TTY. Runs are
interleaved and repeated; the medians are compared. Goal: within noise, <= 2%.

    python tools/dashboard_cost.py
    python tools/dashboard_cost.py --seconds 5 --repeats 5 experiment=images
"""

from __future__ import annotations

import argparse
import io
import statistics
import time

from rich.console import Console

import inputkit
from inputkit.config.overrides import layered
from inputkit.observe.dashboard import Dashboard


def run_once(overrides: list[str], seconds: float, dashboard: bool) -> float:
    cfg = inputkit.compose(layered(["devices=cpu"], overrides))
    with inputkit.Runner(cfg) as runner:
        stream = runner.device(0)
        next(stream)
        view = Dashboard(runner, console=Console(file=io.StringIO(), force_terminal=True,
                                                 width=160), refresh_hz=4) if dashboard else None
        if view is not None:
            view.__enter__()
        try:
            count, began = 0, time.perf_counter()
            end = began + seconds
            for _ in stream:
                count += 1
                if time.perf_counter() >= end:
                    break
            return count / (time.perf_counter() - began)
        finally:
            if view is not None:
                view.__exit__(None, None, None)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--seconds", type=float, default=4.0)
    parser.add_argument("--repeats", type=int, default=5)
    parser.add_argument("overrides", nargs="*", help="config overrides, e.g. experiment=images")
    args = parser.parse_args()
    rates: dict[bool, list[float]] = {False: [], True: []}
    for repeat in range(args.repeats):
        for on in (False, True):
            rates[on].append(run_once(args.overrides, args.seconds, on))
            print(f"run {repeat + 1}: dashboard {'on ' if on else 'off'} "
                  f"{rates[on][-1]:,.1f} batches/s", flush=True)
    off, on = statistics.median(rates[False]), statistics.median(rates[True])
    spread = (max(rates[False]) - min(rates[False])) / off
    print(f"median batches/s: off {off:,.1f}, on {on:,.1f}: the dashboard costs "
          f"{(off - on) / off:+.1%} (run-to-run spread with it off: {spread:.1%})")
    frame = render_cost(args.overrides)
    print(f"one refresh takes {frame * 1000:.2f} ms of CPU: at 4 refreshes/s that is "
          f"{4 * frame:.1%} of one core")


def render_cost(overrides: list[str], frames: int = 200) -> float:
    """Seconds of CPU one refresh takes (snapshot, warnings, render to a terminal console)."""
    cfg = inputkit.compose(layered(["devices=cpu"], overrides))
    with inputkit.Runner(cfg) as runner:
        next(runner.device(0))
        view = Dashboard(runner, console=Console(file=io.StringIO(), force_terminal=True,
                                                 width=160))
        began = time.thread_time()
        for _ in range(frames):
            view.console.print(view.snapshot())
        return (time.thread_time() - began) / frames


if __name__ == "__main__":
    main()

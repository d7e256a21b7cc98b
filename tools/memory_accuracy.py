"""How close is the memory plan to what the pipeline really holds? W1-W5, planned vs measured.

For each workload the consumer takes a batch only every ``--consume-every`` seconds,
so every queue fills to its limit: the worst case the plan describes. Measured is
the peak proportional set size (PSS, shared memory counted once) of this process
and every worker, minus this process's PSS just before the runner started (the
interpreter, numpy and torch are not the pipeline's). Each workload runs in a
fresh process. Goal: within +-10% (or 5 MB where the plan is small).

W5 (real images) is ``experiment=imagenet_train`` over the JPEG set that
``inputkit compare`` cuts from scikit-image's photographs (``--images DIR`` for
your own folder), once with thread and once with process workers; normalised
on the CPU device stage, so the float batches count too.

    python tools/memory_accuracy.py
    python tools/memory_accuracy.py --workload w2 --seconds 5
    python tools/memory_accuracy.py --workload w5-threads --workload w5-processes
"""

from __future__ import annotations

import argparse
import gc
import importlib
import json
import subprocess
import sys
import threading
import time

import psutil
import torch  # noqa: F401  (imported before the baseline: the runner would import it)
from rich.console import Console
from rich.table import Table

import inputkit
from inputkit.config.overrides import layered
from inputkit.config.sizes import format_size
from inputkit.peers.compare import WORKLOADS
from inputkit.planning.memory import plan_memory


def tree_pss() -> int:
    me = psutil.Process()
    total = 0
    for proc in [me, *me.children(recursive=True)]:
        try:
            total += proc.memory_full_info().pss
        except (psutil.NoSuchProcess, psutil.AccessDenied):
            continue
    return total


def measure(overrides: list[str], seconds: float, consume_every: float) -> tuple[int, int, str]:
    import numpy as np

    cfg = inputkit.compose(layered(overrides, ["devices=cpu"]))
    spec = inputkit.load_spec(cfg)
    plan = plan_memory(spec, devices=("cpu",))
    top = plan.dominating()
    torch.from_numpy(np.zeros(4)) + 1  # torch's one-time set-up is not the pipeline's
    importlib.import_module("inputkit.runner")  # nor is loading inputkit's own code
    importlib.import_module("inputkit.pipeline.device")
    importlib.import_module("inputkit.workers.processes")
    gc.collect()
    baseline = tree_pss()
    peak = 0
    with inputkit.Runner(spec) as runner:
        stream = runner.device(0)
        end = time.monotonic() + seconds
        stop = threading.Event()

        def sample() -> None:
            nonlocal peak
            while not stop.wait(0.25):
                peak = max(peak, tree_pss())

        sampler = threading.Thread(target=sample, daemon=True)
        sampler.start()
        while time.monotonic() < end:
            batch = next(stream)  # held while we wait: the consumer's batch is in the plan
            # Right after next(): the old batch and the new one both exist (a moment the
            # sampler's 0.25 s rarely catches when the device stage makes float batches).
            peak = max(peak, tree_pss())
            time.sleep(consume_every)
            del batch
        stop.set()
        sampler.join()
    return plan.host_bytes, peak - baseline, f"{top.stage} ({format_size(top.bytes)})"


# The real-image workload, with each worker kind: name -> (title, overrides past the folder)
IMAGES = {
    "w5-threads": ("W5 real JPEGs, RandomResizedCrop 224, normalized", ["workers=threads"]),
    "w5-processes": ("W5 real JPEGs, RandomResizedCrop 224, normalized", ["workers=processes"]),
}


def overrides_of(key: str, images: str | None) -> list[str]:
    if key in WORKLOADS:
        return [f"experiment={WORKLOADS[key].experiment}"]
    if images is None:
        from inputkit.peers.imageset import cached_image_set

        images = str(cached_image_set().train)
    return ["experiment=imagenet_train", f"source.path={images}", "workers.count=2",
            *IMAGES[key][1]]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--workload", choices=sorted([*WORKLOADS, *IMAGES]), action="append")
    parser.add_argument("--images", help="an ImageFolder tree for W5 (default: the generated set)")
    parser.add_argument("--seconds", type=float, default=4.0)
    parser.add_argument("--consume-every", type=float, default=0.5)
    parser.add_argument("--one", help=argparse.SUPPRESS)  # measure one workload, print JSON
    args = parser.parse_args()
    if args.one:
        planned, measured, top = measure(overrides_of(args.one, args.images), args.seconds,
                                         args.consume_every)
        print(json.dumps({"planned": planned, "measured": measured, "top": top}))
        return
    console = Console()
    table = Table(title="memory plan vs measured peak (process tree PSS above the baseline)")
    for column in ["workload", "workers", "planned", "measured", "measured / planned",
                   "largest planned term"]:
        table.add_column(column, justify="left" if column in ("workload", "workers",
                                                              "largest planned term") else "right")
    for key in args.workload or [*sorted(WORKLOADS), *IMAGES]:
        title = WORKLOADS[key].title if key in WORKLOADS else IMAGES[key][0]
        console.print(f"measuring {title}", style="dim")
        images = ["--images", args.images] if args.images else []
        # Each workload in a fresh process, so one cannot inherit another's freed memory.
        out = subprocess.run([sys.executable, __file__, "--one", key, "--seconds",
                              str(args.seconds), "--consume-every", str(args.consume_every),
                              *images], capture_output=True, text=True, check=True)
        result = json.loads(out.stdout.strip().splitlines()[-1])
        planned, measured, top = result["planned"], result["measured"], result["top"]
        spec = inputkit.load_spec(inputkit.compose(overrides_of(key, args.images)))
        workers = f"{spec.inputs[0].worker_count} {spec.inputs[0].worker_kind} workers"
        table.add_row(title, workers, format_size(planned), format_size(measured),
                      f"{measured / planned:.2f}", top)
    console.print(table)


if __name__ == "__main__":
    main()

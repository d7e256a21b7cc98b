"""Start-up and memory at ImageNet scale, side by side with DataLoader: folder and shards.

For each form of the data (an ImageNet-shaped folder, 128 uncompressed tar shards
of the same samples: tools/scale_data.py builds both) and each loader (inputkit
with 2 thread workers, with 2 process workers, and DataLoader with 2 workers over
an ImageFolder-like Dataset or WebDataset), runs fresh processes and measures:

- ``cold``: no index cached anywhere (a new, empty cache dir; index files beside the
  data removed first). The OS page cache is warm (the data was just built or
  read): this is a cold *process*, not a cold disk.
- ``cached``: a second start with the same cache dir (for DataLoader: ``second``,
  which has nothing to cache). It saves ``Runner.state_dict()`` after the batches.
- ``resume``: a new process loading that state, then its first batch.

Each row: seconds from the command's start (before the interpreter) to the first
batch; PSS of the parent and of each worker (smaps_rollup: shared pages counted
once) after ``--batches`` more batches; the index in memory (bytes per sample, the
source object walked by inputkit.planning.footprint, threads rows) and on disk (new files in
the cache dir or beside the data). Images are 64 x 64 JPEGs, resized to 72 and
center-cropped to 64 (Pillow on both sides), batches of 64, shuffled.

    python tools/startup_scale.py /work/scale_data --samples 320000 1281167 --json out.json
    python tools/startup_scale.py --merge a.json b.json          # the table and projection again

With two or more sizes it projects every figure to 100M samples from the growth
measured between the smallest and the largest (linear).
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import subprocess
import sys
import tempfile
import time
from typing import Any

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from scale_data import build  # noqa: E402

CHILD = os.path.join(os.path.dirname(os.path.abspath(__file__)), "startup_scale_child.py")
LOADERS = ("inputkit-threads", "inputkit-processes", "dataloader")
FORMS = ("folder", "shards")
PHASES = ("cold", "cached", "resume", "second")
PROJECT_TO = 100_000_000
MiB = 2**20


def _builder_names(built: dict[str, Any]) -> dict[str, set[str]]:
    """What the builder wrote at the top of each folder (anything else is an index cache)."""
    return {built["root"]: {"jpegs", "folder", "shards", "built.json"},
            built["folder"]: {n for n in os.listdir(built["folder"]) if n.startswith("n")
                              and os.path.isdir(os.path.join(built["folder"], n))},
            os.path.dirname(built["shards"][0]): {os.path.basename(p) for p in built["shards"]}}


def _strays(built: dict[str, Any], known: dict[str, set[str]]) -> list[str]:
    return [os.path.join(folder, name) for folder, names in known.items()
            for name in sorted(set(os.listdir(folder)) - names)]


def _tree_bytes(path: str) -> int:
    if os.path.isfile(path):
        return os.path.getsize(path)
    return sum(os.path.getsize(os.path.join(d, f)) for d, _, fs in os.walk(path) for f in fs)


def run_child(spec: dict[str, Any], cache: str, timeout: float, src: str | None) -> dict[str, Any]:
    """One fresh process: its RESULT, or the error it ended with."""
    env = {**os.environ, "INPUTKIT_CACHE_DIR": cache}
    if src:  # measure another checkout's code (a baseline exported with git archive)
        env["PYTHONPATH"] = src + os.pathsep + env.get("PYTHONPATH", "")
    spec = {**spec, "launch": time.time()}
    try:
        out = subprocess.run([sys.executable, CHILD, json.dumps(spec)], capture_output=True,
                             text=True, timeout=timeout, env=env, check=False)
    except subprocess.TimeoutExpired:
        return {"error": f"no first batch within {timeout:g} s"}
    for line in out.stdout.splitlines():
        if line.startswith("RESULT "):
            return json.loads(line[len("RESULT "):])
    tail = (out.stderr or out.stdout).strip().splitlines()[-3:]
    return {"error": f"exit {out.returncode}: {' | '.join(tail)}"}


def summarize(result: dict[str, Any]) -> dict[str, Any]:
    """The figures of one row: first batch, parent and per-worker PSS (after the batches)."""
    if "error" in result:
        return {"error": result["error"]}
    row: dict[str, Any] = {"first_batch_s": result["first_batch_s"],
                           "first_batch_cpu_s": result.get("first_batch_cpu_s")}
    for when in ("first", "after"):
        procs = result[f"memory_{when}"]
        workers = [p["pss"] for p in procs if p["role"] == "worker"]
        row[f"parent_pss_mib_{when}"] = round(procs[0]["pss"] / MiB, 1)
        row[f"worker_pss_mib_{when}"] = round(max(workers) / MiB, 1) if workers else None
        row[f"workers_{when}"] = len(workers)
    for key in ("state_bytes", "index_memory_bytes"):
        if key in result:
            row[key] = result[key]
    return row


def measure(built: dict[str, Any], args: argparse.Namespace) -> list[dict[str, Any]]:
    rows = []
    known = _builder_names(built)
    n = built["samples"]
    common = {"data": {"folder": built["folder"], "shards": built["shards"]},
              "batch_size": args.batch_size, "workers": args.workers, "size": 64,
              "batches": args.batches}
    for form in args.forms:
        for loader in args.loaders:
            scratch = tempfile.mkdtemp(prefix="startup-scale-", dir=args.scratch)
            cache, state = os.path.join(scratch, "cache"), os.path.join(scratch, "state.pkl")
            os.makedirs(cache)
            removed = _strays(built, known)
            for path in removed:  # an index cached beside the data by an earlier run
                shutil.rmtree(path) if os.path.isdir(path) else os.remove(path)
            phases = (("cold", {"footprint": loader == "inputkit-threads"}),
                      ("cached", {"state_out": state}), ("resume", {"state_in": state})) \
                if loader.startswith("inputkit") else (("cold", {"footprint": True}),
                                                       ("second", {}))
            for phase, extra in phases:
                if phase not in args.phases:
                    continue
                if phase == "resume" and not os.path.exists(state):
                    rows.append({"samples": n, "form": form, "loader": loader, "phase": phase,
                                 "error": "no saved state (the cached run failed)"})
                    continue
                print(f"  {n:,} {form} {loader} {phase} ...", file=sys.stderr, flush=True)
                result = run_child({**common, "form": form, "loader": loader, **extra},
                                   cache, args.timeout, args.src)
                row = {"samples": n, "form": form, "loader": loader, "phase": phase,
                       **summarize(result)}
                if phase == "cold":
                    new = _strays(built, known) + [os.path.join(cache, f) for f in os.listdir(cache)]
                    row["index_files"] = [os.path.relpath(p, built["root"]) if
                                          p.startswith(built["root"]) else p for p in new]
                    row["index_disk_bytes"] = sum(_tree_bytes(p) for p in new)
                    if removed:
                        row["removed_before"] = [os.path.basename(p) for p in removed]
                rows.append(row)
                print(f"    {_cells(row)}", file=sys.stderr, flush=True)
            shutil.rmtree(scratch, ignore_errors=True)
    return rows


def _fmt(value: Any, spec: str = ".1f") -> str:
    return "-" if value is None else format(value, spec)


def _cells(row: dict[str, Any]) -> str:
    if "error" in row:
        return f"ERROR {row['error']}"
    n = row["samples"]
    mem = row.get("index_memory_bytes")
    disk = row.get("index_disk_bytes")
    return (f"first batch {row['first_batch_s']:7.2f} s ({_fmt(row.get('first_batch_cpu_s'), '.1f')} CPU-s)"
            f" | parent PSS {row['parent_pss_mib_after']:7.1f} MiB"
            f" | worker PSS {_fmt(row['worker_pss_mib_after']):>6} MiB (x{row['workers_after']})"
            f" | index {_fmt(mem / n if mem else None, '.0f'):>4} B/sample in memory,"
            f" {_fmt(disk / n if disk else None, '.0f'):>4} on disk")


def table(rows: list[dict[str, Any]]) -> str:
    lines = [f"{'samples':>10} {'form':7} {'loader':19} {'phase':7} figures"]
    for row in rows:
        lines.append(f"{row['samples']:>10,} {row['form']:7} {row['loader']:19} {row['phase']:7} "
                     f"{_cells(row)}")
    return "\n".join(lines)


def projection(rows: list[dict[str, Any]]) -> str:
    """Each figure at 100M samples, linear in N through the smallest and largest size measured."""
    sizes = sorted({r["samples"] for r in rows})
    if len(sizes) < 2:
        return "(one size measured: no projection)"
    small, large = sizes[0], sizes[-1]
    keyed = {(r["samples"], r["form"], r["loader"], r["phase"]): r for r in rows if "error" not in r}
    lines = [f"projected to {PROJECT_TO:,} samples from {small:,} -> {large:,} (linear):"]
    for (n, form, loader, phase), big in keyed.items():
        low = keyed.get((small, form, loader, phase))
        if n != large or low is None:
            continue
        parts = []
        for key, unit in (("first_batch_s", "s first batch"), ("first_batch_cpu_s", "CPU-s"),
                          ("parent_pss_mib_after", "MiB parent"),
                          ("worker_pss_mib_after", "MiB/worker")):
            a, b = low.get(key), big.get(key)
            if a is None or b is None:
                continue
            slope = (b - a) / (large - small)
            parts.append(f"{b + slope * (PROJECT_TO - large):,.0f} {unit} "
                         f"({slope * 1e6:+.2f}/M)")
        lines.append(f"  {form:7} {loader:19} {phase:7} " + ", ".join(parts))
    return "\n".join(lines)


def _save(args: argparse.Namespace, rows: list[dict[str, Any]]) -> None:
    if args.json and not args.merge:
        meta = {"argv": sys.argv[1:], "src": args.src, "loadavg": os.getloadavg(),
                "cpus": os.cpu_count(), "when": time.strftime("%Y-%m-%d %H:%M:%S")}
        with open(args.json, "w") as f:
            json.dump({"meta": meta, "rows": rows}, f, indent=1)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("out", nargs="?", help="where tools/scale_data.py keeps the data sets")
    parser.add_argument("--samples", type=int, nargs="+", default=[1_281_167])
    parser.add_argument("--classes", type=int, default=1000)
    parser.add_argument("--shards", type=int, default=128)
    parser.add_argument("--forms", nargs="+", choices=FORMS, default=list(FORMS))
    parser.add_argument("--loaders", nargs="+", choices=LOADERS, default=list(LOADERS))
    parser.add_argument("--phases", nargs="+", choices=PHASES, default=list(PHASES),
                        help="which starts to measure (resume needs cached; second is "
                        "DataLoader's cached)")
    parser.add_argument("--workers", type=int, default=2)
    parser.add_argument("--batch-size", type=int, default=64)
    parser.add_argument("--batches", type=int, default=20, help="batches after the first, "
                        "before memory is read again (default 20)")
    parser.add_argument("--timeout", type=float, default=900.0, help="seconds a start may take")
    parser.add_argument("--src", help="import inputkit from this checkout (e.g. a git archive "
                        "of an older commit) instead of the installed one")
    parser.add_argument("--scratch", help="where the cache dirs of the runs live (default: tmp)")
    parser.add_argument("--json", help="write the rows here")
    parser.add_argument("--merge", nargs="+", help="print the table and projection of earlier "
                        "--json outputs instead of measuring")
    args = parser.parse_args(argv)
    if args.merge:
        rows = [r for path in args.merge for r in json.load(open(path))["rows"]]
    else:
        if not args.out:
            parser.error("give the data folder (or --merge)")
        rows = []
        for n in args.samples:
            began = time.monotonic()
            built = build(args.out, n, args.classes, args.shards).__dict__
            print(f"{n:,} samples ready in {time.monotonic() - began:.1f} s", file=sys.stderr)
            rows += measure(built, args)
            _save(args, rows)  # each size as soon as it is measured
    print(table(rows))
    print(projection(rows))
    _save(args, rows)
    return 1 if any("error" in r for r in rows) else 0


if __name__ == "__main__":
    sys.exit(main())

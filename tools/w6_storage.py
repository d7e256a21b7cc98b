"""W6: the 2,000-photo image set on a local S3 server (moto, 127.0.0.1), read by inputkit,
WebDataset, Mosaic Streaming and LitData, each in its own format and fastest shape.

    python tools/w6_storage.py                      # 2,000 images, 2 workers, every row
    python tools/w6_storage.py --count 512 --peer litdata --peer inputkit-thread

Every row runs in a child process of its own (``--child``), two epochs in one process:
epoch 1 starts with an empty cache folder (cold), epoch 2 reads what epoch 1 left (warm).
Epoch 1 is timed from the loader's construction (after imports), so a loader that downloads
while it builds (inputkit indexes every shard from its downloaded copy) pays for it there.
Per epoch: images/s, CPU-ms per image (the child's process tree: its own CPU, its live
descendants', and its reaped children's), and the peaks the parent samples every 50 ms:
RSS of the child's process tree and the size of its cache folder. Time to first batch is
from the loader's construction (after imports) to its first batch. The S3 server's own
CPU is not counted in any row (it is the parent's child, not the row's).

Rows: the W6 peers (inputkit/peers/storage_peers.py), inputkit's image_shards over
``s3://`` with thread and process workers (``cache.dir``/``cache.max_bytes`` set), and
inputkit on the local tar shards (the rate the warm epoch is held against). A row that
cannot run here prints why.
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import psutil

sys.path.insert(0, str(Path(__file__).resolve().parent.parent / "tests"))

BUCKET = "w6-bench"
CACHE_BUDGET = 512 << 20  # inputkit's cache.max_bytes in W6 (the whole set is ~90 MB)


# -- the inputkit rows: a loader factory like the peers' ---------------------------------------
def inputkit_factory(kind: str, remote: bool) -> Callable[..., Any]:
    """inputkit's ``image_shards`` source with W5's recipe (RandomResizedCrop 224, flip, uint8,
    no normalize), ``kind`` workers, reading the shards from S3 (``remote``) or from the local
    folder; returns a factory with the peers' signature (remote, data, cache, workers, seed)."""

    def open_inputkit(remote_url: str, data: Path, cache: str, workers: int, seed: int) -> Any:
        import inputkit
        from inputkit.peers.storage_peers import Loader

        names = sorted(p.name for p in data.glob("*.tar"))
        base = remote_url.rstrip("/") if remote else str(data)
        urls = "[" + ",".join(f"'{base}/{n}'" for n in names) + "]"
        cfg = inputkit.compose(["experiment=imagenet_train", "source=image_shards", "transforms=train_224",
                                f"source.urls={urls}", "batch_size=64", f"workers.count={workers}",
                                f"workers.kind={kind}", "devices=cpu", "epoch.count=null",
                                "device.normalize=null", f"source.seed={seed}",
                                f"cache.dir='{cache}'", f"cache.max_bytes={CACHE_BUDGET}"])
        runner = inputkit.Runner(inputkit.load_spec(cfg))
        runner.__enter__()

        def epoch() -> Any:
            for batch in runner.device(0):
                yield batch["image"], batch["label"]

        return Loader(epoch, lambda: runner.close(timeout=60.0))

    return open_inputkit


def rows() -> dict[str, tuple[str, str, Callable[..., Any], Callable[[], str | None]]]:
    """key -> (title, format folder, loader factory, why it cannot run or None)."""
    from inputkit.peers.storage_peers import STORAGE_PEERS

    found: dict[str, tuple[str, str, Callable[..., Any], Callable[[], str | None]]] = {}
    for peer in STORAGE_PEERS:
        found[peer.key] = (peer.title, peer.fmt, peer.opener, peer.missing)
    for kind, shape in (("thread", "threads"), ("process", "procs")):
        found[f"inputkit-{kind}"] = (f"inputkit image_shards s3:// ({{n}} {shape})", "wds",
                                     inputkit_factory(kind, remote=True), lambda: None)
    found["inputkit-local"] = ("inputkit image_shards, local disk ({n} threads)", "wds",
                               inputkit_factory("thread", remote=False), lambda: None)
    return found


# -- the child: one row, two epochs -------------------------------------------------------------
def tree_cpu() -> float:
    """CPU seconds of this process, its live descendants and its reaped children."""
    me = psutil.Process()
    total = sum(me.cpu_times()[:2])
    for child in me.children(recursive=True):
        try:
            total += sum(child.cpu_times()[:2])
        except psutil.Error:
            pass
    reaped = resource.getrusage(resource.RUSAGE_CHILDREN)
    return total + reaped.ru_utime + reaped.ru_stime


def storage_stats() -> dict[str, int] | None:
    """inputkit's storage counters so far (every process of the run), or None for a peer."""
    if "inputkit.storage" not in sys.modules:
        return None
    from inputkit import storage

    return storage.stats()


def child(args: argparse.Namespace) -> None:
    def say(**event: Any) -> None:
        print(json.dumps(event), flush=True)

    title, _, factory, _ = rows()[args.child]
    # epoch 1 is timed from the loader's construction: inputkit downloads every shard while
    # indexing it there, a peer while iterating; both count in the cold epoch
    began, cpu_began = time.perf_counter(), tree_cpu()
    loader = factory(args.remote, Path(args.data), args.cache, args.workers, 0)
    try:
        for epoch in (1, 2):
            say(event="epoch", epoch=epoch)
            cpu0, t0, images, first = tree_cpu(), time.perf_counter(), 0, None
            if epoch == 1:
                cpu0, t0 = cpu_began, began
            for batch_images, _labels in loader.epoch():
                if first is None:
                    first = time.perf_counter() - t0
                images += len(batch_images)
            say(event="done", epoch=epoch, images=images, seconds=time.perf_counter() - t0,
                cpu_s=tree_cpu() - cpu0, first_batch_s=first, storage=storage_stats())
    finally:
        loader.close()


# -- the parent: server, data, one child per row, the table -------------------------------------
def folder_bytes(path: str) -> int:
    total = 0
    for root, _, files in os.walk(path):
        for name in files:
            try:
                total += os.stat(os.path.join(root, name)).st_size
            except OSError:
                pass
    return total


def tree_rss(proc: psutil.Process) -> int:
    total = 0
    try:
        tree = [proc, *proc.children(recursive=True)]
    except psutil.Error:  # the child (or one of its own) ended while we listed them
        return 0
    for p in tree:
        try:
            total += p.memory_info().rss
        except psutil.Error:
            pass
    return total


def run_row(key: str, remote: str, data: Path, cache: str, workers: int, env: dict[str, str]) -> dict:
    """Run one row in a child process, sampling its tree's RSS and its cache folder."""
    proc = subprocess.Popen([sys.executable, __file__, "--child", key, "--remote", remote, "--data",
                             str(data), "--cache", cache, "--workers", str(workers)],
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
                            env={**os.environ, **env})
    watched = psutil.Process(proc.pid)
    epoch = [0]
    peaks: dict[int, dict[str, int]] = {1: {"rss": 0, "cache": 0}, 2: {"rss": 0, "cache": 0}}
    stop = threading.Event()

    def sample() -> None:
        while not stop.wait(0.05):
            if epoch[0] in peaks:
                peak = peaks[epoch[0]]
                peak["rss"] = max(peak["rss"], tree_rss(watched))
                peak["cache"] = max(peak["cache"], folder_bytes(cache))

    sampler = threading.Thread(target=sample, name="w6-sampler")
    sampler.start()
    results: dict[int, dict] = {}
    try:
        assert proc.stdout is not None
        for line in proc.stdout:
            if not line.startswith("{"):
                continue
            event = json.loads(line)
            if event["event"] == "epoch":
                epoch[0] = event["epoch"]
            else:
                results[event["epoch"]] = event
        proc.wait(600)
    finally:
        stop.set()
        sampler.join(5)
    if proc.returncode != 0 or len(results) < 2:
        err = proc.stderr.read() if proc.stderr else ""
        return {"error": f"exit {proc.returncode}: {err.strip().splitlines()[-1] if err.strip() else ''}"}
    for e in (1, 2):
        results[e].update(peak_rss=peaks[e]["rss"], peak_cache=peaks[e]["cache"])
    return {"epochs": results}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--count", type=int, default=2000, help="images in the set (default 2000)")
    parser.add_argument("--workers", type=int, default=2, help="workers/processes per loader")
    parser.add_argument("--peer", action="append", help="rows to run (default: all)")
    parser.add_argument("--work", default=None, help="folder for the formats (default: a tmp folder)")
    parser.add_argument("--json", default=None, help="also write every row's figures here")
    parser.add_argument("--child", help=argparse.SUPPRESS)
    parser.add_argument("--remote", help=argparse.SUPPRESS)
    parser.add_argument("--data", help=argparse.SUPPRESS)
    parser.add_argument("--cache", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.child:
        child(args)
        return

    from storage_servers import S3Server

    from inputkit.peers.imageset import cached_image_set
    from inputkit.peers.storage_formats import prepare
    from inputkit.peers.storage_peers import peer_env

    work = Path(args.work or tempfile.mkdtemp(prefix="inputkit-w6-"))
    images = cached_image_set(count=args.count, root=work / "sets",
                              say=lambda m: print(m, file=sys.stderr))
    shards = images.root / "shards"
    print(f"{images.count:,} JPEGs, {images.mean_bytes / 1024:.0f} KiB each; load: "
          f"{os.getloadavg()[0]:.2f} (1 min)", file=sys.stderr)
    table = rows()
    keys = args.peer or list(table)
    measured: dict[str, dict] = {}
    with S3Server() as server:
        server.make_bucket(BUCKET)
        env = {**server.env(), **peer_env(server.endpoint)}
        uploaded: set[str] = set()
        for key in keys:
            title, fmt, _, missing = table[key]
            why = missing()
            if why is not None:
                measured[key] = {"error": f"skipped: {why}"}
                continue
            data = prepare(fmt, shards, work / "formats")
            if fmt not in uploaded:
                server.upload_tree(data, f"s3://{BUCKET}/{fmt}")
                uploaded.add(fmt)
            cache = tempfile.mkdtemp(prefix=f"cache-{key}-", dir=work)
            print(f"measuring {key} ...", file=sys.stderr)
            measured[key] = run_row(key, f"s3://{BUCKET}/{fmt}", data, cache, args.workers, env)
    if args.json:
        Path(args.json).write_text(json.dumps(measured, indent=1))
    print_table(table, measured, args.workers)


def print_table(table: dict, measured: dict[str, dict], workers: int) -> None:
    ok = {k: m["epochs"] for k, m in measured.items() if "epochs" in m}
    peers = [k for k in ok if not k.startswith("inputkit")]

    def rate(k: str, e: int) -> float:
        return ok[k][e]["images"] / ok[k][e]["seconds"]

    best = {e: max((rate(k, e) for k in peers), default=None) for e in (1, 2)}
    print("| loader | epoch | images | img/s | vs best peer | CPU-ms/img | first batch s | "
          "peak cache MB | peak RSS MB |")
    print("| --- | --- | --- | --- | --- | --- | --- | --- | --- |")
    for key, result in measured.items():
        title = table[key][0].format(n=workers)
        if "epochs" not in result:
            print(f"| {title} | - | {result['error']} | | | | | | |")
            continue
        for e in (1, 2):
            r = result["epochs"][e]
            ratio = f"{rate(key, e) / best[e]:.2f}x" if best[e] else "-"
            first = f"{r['first_batch_s']:.2f}" if r["first_batch_s"] is not None else "-"
            print(f"| {title} | {e} ({'cold' if e == 1 else 'warm'}) | {r['images']} | {rate(key, e):.0f} | "
                  f"{ratio} | {r['cpu_s'] * 1000 / max(r['images'], 1):.2f} | {first} | "
                  f"{r['peak_cache'] / 1e6:.0f} | {r['peak_rss'] / 1e6:.0f} |")


if __name__ == "__main__":
    main()

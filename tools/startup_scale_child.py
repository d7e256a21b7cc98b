"""One cold start, measured from inside: run by tools/startup_scale.py in a fresh process.

Reads a JSON spec (argv[1]): which loader (inputkit threads or processes, or a
DataLoader), which form of the data (folder or shards), and ``launch``, the
wall-clock time just before the parent started this process. It builds the
loader the way a training script would, takes the first batch (the time from
``launch``: interpreter, imports, listing, indexing, the memory probe, worker
start, the batch), reads the memory of this process and every worker (PSS from
/proc/<pid>/smaps_rollup: pages the workers share with the parent counted once),
takes ``batches`` more and reads it again, optionally saves ``Runner.state_dict``
(or resumes from one), and prints one JSON line.
"""

from __future__ import annotations

import json
import os
import pickle
import sys
import time
from typing import Any


def parse_rollup(text: str) -> dict[str, int]:
    """The kB figures of /proc/<pid>/smaps_rollup (or /proc/<pid>/status), in bytes."""
    out = {}
    for line in text.splitlines():
        name, _, rest = line.partition(":")
        parts = rest.split()
        if len(parts) == 2 and parts[1] == "kB" and parts[0].isdigit():
            out[name.strip()] = int(parts[0]) * 1024
    return out


def memory_of(pid: int) -> dict[str, int]:
    """PSS and RSS of ``pid`` in bytes (PSS equals RSS where smaps_rollup is missing)."""
    try:
        with open(f"/proc/{pid}/smaps_rollup") as f:
            rollup = parse_rollup(f.read())
        return {"pss": rollup["Pss"], "rss": rollup["Rss"]}
    except (OSError, KeyError):
        with open(f"/proc/{pid}/status") as f:
            rss = parse_rollup(f.read()).get("VmRSS", 0)
        return {"pss": rss, "rss": rss}


def processes() -> list[dict[str, Any]]:
    """This process and its descendants, each with a role and its memory."""
    import psutil

    me = psutil.Process()
    found = [{"pid": me.pid, "role": "parent", **memory_of(me.pid)}]
    for child in me.children(recursive=True):
        try:
            line = " ".join(child.cmdline())
            if "resource_tracker" in line:
                role = "tracker"
            elif "forkserver" in line and child.ppid() == me.pid:
                role = "forkserver"
            else:
                role = "worker"
            found.append({"pid": child.pid, "role": role, **memory_of(child.pid)})
        except (psutil.Error, OSError):
            continue  # it ended while we looked
    return found


def cpu_seconds() -> float:
    """CPU time (user + system) of this process and its live descendants: a start-up figure
    that a loaded machine inflates far less than the wall clock."""
    import psutil

    me = psutil.Process()
    total = sum(me.cpu_times()[:2])
    for child in me.children(recursive=True):
        try:
            total += sum(child.cpu_times()[:2])
        except psutil.Error:
            continue
    return total


def _transforms(size: int) -> list[dict[str, int]]:
    return [{"resize": size + size // 8}, {"center_crop": size}]


def inputkit_loader(spec: dict[str, Any]) -> tuple[Any, Any, Any]:
    import inputkit

    data = spec["data"]
    if spec["form"] == "folder":
        source = ["source=image_folder", f"source.path={data['folder']}"]
    else:
        first, last = data["shards"][0], data["shards"][-1]
        source = ["source=image_shards",
                  f"source.urls={_brace(first, last, len(data['shards']))}"]
    size = spec["size"]
    resize, crop = _transforms(size)
    overrides = [*source, f"workers={spec['loader'].split('-')[1]}",
                 f"workers.count={spec['workers']}", f"batch_size={spec['batch_size']}",
                 "devices=cpu", "epoch.shuffle=true", "source.decode.backend=pillow",
                 f"source.transforms=[{{resize:{resize['resize']}}},{{center_crop:{crop['center_crop']}}}]",
                 *spec.get("overrides", [])]
    runner = inputkit.Runner(inputkit.compose(overrides))
    if spec.get("state_in"):
        with open(spec["state_in"], "rb") as f:
            runner.load_state_dict(pickle.load(f))
    runner.start()
    return runner, iter(runner.device(0)), runner


def _brace(first: str, last: str, count: int) -> str:
    """``.../train-{000..127}.tar`` from the first and last shard's paths."""
    head, tail = first.rsplit("-", 1)
    width = len(tail.split(".")[0])
    return f"{head}-{{{0:0{width}d}..{count - 1:0{width}d}}}.tar"


def dataloader(spec: dict[str, Any]) -> tuple[Any, Any, Any]:
    """What a user writes: an ImageFolder-like Dataset (listing each class folder with
    os.scandir, as torchvision does) or WebDataset over the shards; DataLoader, 2 workers."""
    import numpy as np
    import torch
    from PIL import Image
    from torch.utils.data import DataLoader, Dataset

    size = spec["size"]
    resize = _transforms(size)[0]["resize"]

    def transform(image: Image.Image) -> torch.Tensor:
        image = image.convert("RGB")
        w, h = image.size
        scale = resize / min(w, h)
        image = image.resize((max(resize, round(w * scale)), max(resize, round(h * scale))),
                             Image.BILINEAR)
        left, top = (image.size[0] - size) // 2, (image.size[1] - size) // 2
        image = image.crop((left, top, left + size, top + size))
        return torch.from_numpy(np.asarray(image).copy()).permute(2, 0, 1)

    class FolderDataset(Dataset):
        def __init__(self, root: str) -> None:
            self.classes = sorted(e.name for e in os.scandir(root) if e.is_dir())
            self.samples = []
            for label, name in enumerate(self.classes):
                folder = os.path.join(root, name)
                for entry in sorted(os.scandir(folder), key=lambda e: e.name):
                    if entry.name.lower().endswith((".jpg", ".jpeg", ".png")):
                        self.samples.append((entry.path, label))

        def __len__(self) -> int:
            return len(self.samples)

        def __getitem__(self, i: int) -> tuple[torch.Tensor, int]:
            path, label = self.samples[i]
            with Image.open(path) as image:
                return transform(image), label

    if spec["form"] == "folder":
        dataset = FolderDataset(spec["data"]["folder"])
        loader = DataLoader(dataset, batch_size=spec["batch_size"], shuffle=True,
                            num_workers=spec["workers"])
    else:
        import webdataset as wds

        dataset = (wds.WebDataset(spec["data"]["shards"], shardshuffle=len(spec["data"]["shards"]),
                                  empty_check=False)
                   .shuffle(1000).decode("pil").to_tuple("jpg", "cls").map_tuple(transform, int))
        loader = DataLoader(dataset, batch_size=spec["batch_size"], num_workers=spec["workers"])
    return loader, iter(loader), dataset


def measure(spec: dict[str, Any]) -> dict[str, Any]:
    """One start as ``spec`` says, measured: the RESULT figures (what main() prints)."""
    inputkit_side = spec["loader"].startswith("inputkit")
    owner, batches, index_owner = (inputkit_loader if inputkit_side else dataloader)(spec)
    try:
        next(batches)
        first_s = time.time() - spec["launch"]
        first_cpu = cpu_seconds()
        at_first = processes()
        for _ in range(spec["batches"]):
            next(batches)
        after = processes()
        result: dict[str, Any] = {"first_batch_s": round(first_s, 3),
                                  "first_batch_cpu_s": round(first_cpu, 3),
                                  "memory_first": at_first, "memory_after": after,
                                  "batches_after": spec["batches"]}
        if inputkit_side and spec.get("state_out"):
            state = owner.state_dict()
            with open(spec["state_out"], "wb") as f:
                pickle.dump(state, f)
            result["state_bytes"] = os.path.getsize(spec["state_out"])
        if spec.get("footprint"):
            from inputkit.planning.footprint import object_bytes

            held = owner.source() if inputkit_side else index_owner
            result["index_memory_bytes"] = object_bytes(held)
    finally:
        if inputkit_side:
            owner.close()
        else:
            del batches  # DataLoader's workers end with their iterator
    return result


def main() -> None:
    print("RESULT " + json.dumps(measure(json.loads(sys.argv[1]))), flush=True)


if __name__ == "__main__":
    main()

"""Start-up on a large image folder: time to the first batch from the command's start, by step.

Writes ``--files`` tiny JPEGs (one 16 x 16 image, the same bytes each, in 100 class
folders) into a temporary folder, runs ``inputkit bench`` on it once per worker kind
(20 steps), prints bench's own start-up line ("first batch N s after the command
started: config ..., index ..., ...") and the wall time of the whole command, and
deletes the folder. Indexing cost grows with the file count, not the file size, so
tiny files are enough.

    python tools/startup_bench.py                     # 200,000 files, threads and processes
    python tools/startup_bench.py --files 50000 --kinds threads
"""

from __future__ import annotations

import argparse
import io
import os
import shutil
import subprocess
import sys
import tempfile
import time

from PIL import Image


def write_folder(root: str, files: int, classes: int = 100) -> None:
    buffer = io.BytesIO()
    Image.new("RGB", (16, 16), (120, 60, 30)).save(buffer, format="JPEG")
    data = buffer.getvalue()
    for c in range(classes):
        folder = os.path.join(root, f"class_{c:03d}")
        os.makedirs(folder)
        for i in range(files // classes):
            with open(os.path.join(folder, f"img_{i:06d}.jpg"), "wb") as f:
                f.write(data)


def run(root: str, kind: str, steps: int) -> tuple[float, list[str]]:
    """``inputkit bench`` on ``root``: its wall time and its start-up lines."""
    command = [sys.executable, "-m", "inputkit", "bench", "source=image_folder",
               f"source.path={root}", f"workers={kind}", f"bench.steps={steps}",
               "bench.plot=false", "bench.json=false", f"hydra.run.dir={root}-runs/{kind}"]
    began = time.monotonic()
    out = subprocess.run(command, capture_output=True, text=True, check=False,
                         env={**os.environ, "COLUMNS": "400"})
    wall = time.monotonic() - began
    if out.returncode != 0:
        raise SystemExit(f"{' '.join(command)} failed ({out.returncode}):\n{out.stderr}")
    lines = [line for line in (out.stdout + out.stderr).splitlines()
             if line.startswith(("start-up:", "first batch ")) or "(start-up took" in line]
    return wall, lines


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--files", type=int, default=200_000)
    parser.add_argument("--kinds", nargs="+", default=["threads", "processes"])
    parser.add_argument("--steps", type=int, default=20)
    args = parser.parse_args()
    scratch = tempfile.mkdtemp(prefix="inputkit-startup-")
    root = os.path.join(scratch, "images")
    try:
        began = time.monotonic()
        write_folder(root, args.files)
        print(f"{args.files:,} files written in {time.monotonic() - began:.1f} s under {root}")
        for kind in args.kinds:
            wall, lines = run(root, kind, args.steps)
            print(f"workers={kind}: the command took {wall:.2f} s")
            for line in lines:
                print(f"  {line}")
    finally:
        shutil.rmtree(scratch, ignore_errors=True)


if __name__ == "__main__":
    main()

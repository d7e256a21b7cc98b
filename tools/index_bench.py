"""The image sources' index at scale: bytes per sample, first build against a cached start,
the pickled source's size, and tar indexing per sample (serial and in child processes).

    python tools/scale_data.py /data/scale --samples 100000
    python tools/index_bench.py /data/scale/n100000

Uses a fresh cache folder of its own (nothing is read from or left in ~/.cache).
"""

from __future__ import annotations

import argparse
import glob
import os
import pickle
import shutil
import tempfile
import time

VAL = [{"resize": 40}, {"center_crop": 32}]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("root", help="a data set written by tools/scale_data.py (folder/, shards/)")
    args = parser.parse_args()
    cache = tempfile.mkdtemp(prefix="inputkit-index-bench-")
    os.environ["INPUTKIT_CACHE_DIR"] = cache
    from inputkit.sources.image_shards import ImageShardSource
    from inputkit.sources.images import EXTENSIONS, ImageFolderSource
    from inputkit.sources.tar_index import index_shards

    try:
        makers = (("folder", lambda: ImageFolderSource(os.path.join(args.root, "folder"), VAL)),
                  ("shards", lambda: ImageShardSource(os.path.join(args.root, "shards", "*.tar"), VAL)))
        for what, make in makers:
            for run in ("first", "cached"):
                wall, cpu = time.perf_counter(), time.process_time()
                source = make()
                wall, cpu = time.perf_counter() - wall, time.process_time() - cpu
                info = source.run_info()["index"]
                print(f"{what} {run}: {len(source):,} samples in {wall:.2f} s ({cpu:.2f} s CPU here), "
                      f"from_cache={info['from_cache']}, index {info['bytes_per_sample']} B/sample, "
                      f"pickled source {len(pickle.dumps(source)):,} B")
        shards = sorted(glob.glob(os.path.join(args.root, "shards", "*.tar")))
        for parallel in (1, 2):
            wall, cpu = time.perf_counter(), time.process_time()
            n = len(index_shards(shards, EXTENSIONS, "cls", parallel=parallel)["offsets"])
            wall, cpu = time.perf_counter() - wall, time.process_time() - cpu
            print(f"tar index, {parallel} process(es): {wall / n * 1e6:.2f} us/sample wall, "
                  f"{cpu / n * 1e6:.2f} us/sample CPU in this process")
    finally:
        shutil.rmtree(cache, ignore_errors=True)


if __name__ == "__main__":
    main()

"""source=parquet against pyarrow alone and a DataLoader, side by side in one run.

The data: ``--rows`` rows (1M by default) of a click log, written once to ``--data`` when
it is missing: four float32 dense features, an int64 label and a 16 x int64 fixed-size
list of sparse ids (152 B a row), in ``--files`` files of ``--row-group`` rows per row group.
Every peer reads the same columns in batches of ``--batch`` rows and ends with torch
tensors:

- **pyarrow alone (the limit)**: one thread looping over ``ParquetFile.iter_batches(
  batch_size, columns)`` file by file, each column made a tensor with ``to_numpy`` (no
  copy) and ``torch.from_numpy``; no shuffling, no exactly-once bookkeeping, no queues;
- **inputkit**: ``source=parquet`` through the Runner, inline (the consumer's thread
  reads), 1 and 2 thread workers and 2 process workers, unshuffled (2 threads
  should never be slower than 1);
- **DataLoader, per row**: a map-style Dataset over the table loaded whole into numpy
  arrays (its fastest reasonable shape: nothing decoded per row), ``__getitem__`` returning
  one row, ``batch_size`` with the default collate, ``num_workers`` 0 and 2;
- **DataLoader, batched sampler**: the same Dataset given a whole batch of indices per call
  (``sampler=BatchSampler(...)``, ``batch_size=None``): one fancy index per field.

Each peer runs until it has read every row once or ``--seconds`` have passed; rows/s
counts the rows read after its first batch arrived (start-up is shown apart). Ratios:
inputkit's best against pyarrow alone (goal >= 0.7) and against the best DataLoader per
row (goal >= 5x). Figures from a machine busy with other work mean little: rerun on an
idle one.

    python tools/parquet_bench.py                       # 1M rows, 10 s per peer at most
    python tools/parquet_bench.py --rows 200000 --seconds 3
"""

from __future__ import annotations

import argparse
import glob
import os
import time
from collections.abc import Callable, Iterator
from typing import Any

import numpy as np

COLUMNS = ["f0", "f1", "f2", "f3", "label", "sparse_ids"]
SPARSE = 16


def write_data(folder: str, rows: int, files: int, row_group: int) -> list[str]:
    """The click log, written once (kept if it is already there with ``rows`` rows)."""
    import pyarrow as pa
    import pyarrow.parquet as pq

    paths = sorted(glob.glob(os.path.join(folder, "*.parquet")))
    if paths and sum(pq.read_metadata(p).num_rows for p in paths) == rows:
        return paths
    os.makedirs(folder, exist_ok=True)
    for p in paths:
        os.remove(p)
    rng = np.random.default_rng(0)
    per_file = -(-rows // files)
    for k, start in enumerate(range(0, rows, per_file)):
        n = min(per_file, rows - start)
        dense = {f"f{j}": pa.array(rng.standard_normal(n, dtype=np.float32)) for j in range(4)}
        ids = rng.integers(0, 10_000_000, size=n * SPARSE, dtype=np.int64)
        table = pa.table({**dense, "label": pa.array(rng.integers(0, 2, n, dtype=np.int64)),
                          "sparse_ids": pa.FixedSizeListArray.from_arrays(pa.array(ids), SPARSE)})
        path = os.path.join(folder, f"clicks-{k:03d}.parquet")
        pq.write_table(table, path, row_group_size=row_group)
        paths.append(path)
    return sorted(paths)


def timed(batches: Iterator[dict[str, Any]], seconds: float, rows_total: int
          ) -> dict[str, float]:
    """Rows per second after the first batch, until every row or ``seconds``."""
    began = time.perf_counter()
    first = None
    rows = 0
    for batch in batches:
        n = len(batch["label"])
        now = time.perf_counter()
        if first is None:
            first, start_rows = now, n
        rows += n
        if rows >= rows_total or now - began > seconds:
            break
    end = time.perf_counter()
    if first is None:
        raise RuntimeError("no batch arrived")
    steady = (rows - start_rows) / max(end - first, 1e-9)
    return {"rows": rows, "rows_per_s": steady, "first_batch_s": first - began}


def pyarrow_alone(paths: list[str], batch: int) -> Iterator[dict[str, Any]]:
    import pyarrow.parquet as pq
    import torch

    for path in paths:
        handle = pq.ParquetFile(path)
        for record in handle.iter_batches(batch_size=batch, columns=COLUMNS):
            out = {}
            for name in COLUMNS:
                column = record.column(name)
                if name == "sparse_ids":
                    values = column.flatten().to_numpy(zero_copy_only=False)
                    out[name] = torch.from_numpy(values.reshape(len(column), SPARSE))
                else:
                    out[name] = torch.from_numpy(column.to_numpy(zero_copy_only=False))
            yield out


def inputkit_batches(paths: list[str], batch: int, workers: str, box: list[Any]
                     ) -> Iterator[dict[str, Any]]:
    import inputkit

    kind = {"inline": ["workers.kind=inline"],
            "threads x1": ["workers.kind=thread", "workers.count=1"],
            "threads x2": ["workers.kind=thread", "workers.count=2"],
            "processes x2": ["workers.kind=process", "workers.count=2"]}[workers]
    folder = os.path.dirname(paths[0])
    cfg = inputkit.compose(["source=parquet", f"source.files={folder}",
                            f"source.columns=[{','.join(COLUMNS)}]", "devices=cpu",
                            f"batch_size={batch}", "epoch.count=1", *kind])
    began = time.perf_counter()
    with inputkit.Runner(cfg) as runner:
        box.append(time.perf_counter() - began)  # start-up: footers, probe, workers
        yield from runner.device(0)


class RowTable:
    """A map-style Dataset over the table loaded whole into numpy: row ``i`` as a dict
    (``__getitem__(int)``), or a batch of rows for a list of indices (batched sampler)."""

    def __init__(self, paths: list[str]) -> None:
        import pyarrow.parquet as pq

        tables = [pq.read_table(p, columns=COLUMNS) for p in paths]
        self.arrays: dict[str, np.ndarray] = {}
        for name in COLUMNS:
            parts = []
            for t in tables:
                column = t.column(name).combine_chunks()
                if name == "sparse_ids":
                    parts.append(column.flatten().to_numpy().reshape(len(column), SPARSE))
                else:
                    parts.append(column.to_numpy())
            self.arrays[name] = np.concatenate(parts)
        self.length = len(self.arrays["label"])

    def __len__(self) -> int:
        return self.length

    def __getitem__(self, index: Any) -> dict[str, Any]:
        if isinstance(index, list):  # a batch, from BatchSampler with batch_size=None
            import torch

            picked = np.asarray(index)
            return {name: torch.from_numpy(arr[picked]) for name, arr in self.arrays.items()}
        return {name: arr[index] for name, arr in self.arrays.items()}


def dataloader(dataset: RowTable, batch: int, workers: int, batched: bool
               ) -> Iterator[dict[str, Any]]:
    from torch.utils.data import BatchSampler, DataLoader, SequentialSampler

    if batched:
        sampler = BatchSampler(SequentialSampler(dataset), batch_size=batch, drop_last=False)
        loader = DataLoader(dataset, sampler=sampler, batch_size=None, num_workers=workers)
    else:
        loader = DataLoader(dataset, batch_size=batch, num_workers=workers)
    return iter(loader)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n", 1)[0])
    parser.add_argument("--data", default="/tmp/inputkit-parquet-bench")
    parser.add_argument("--rows", type=int, default=1_000_000)
    parser.add_argument("--files", type=int, default=4)
    parser.add_argument("--row-group", type=int, default=65_536)
    parser.add_argument("--batch", type=int, default=4096)
    parser.add_argument("--seconds", type=float, default=10.0)
    parser.add_argument("--skip", default="", help="comma-separated peers to leave out: "
                        "pyarrow,inputkit,dataloader")
    args = parser.parse_args()
    skip = set(filter(None, args.skip.split(",")))
    import warnings

    import torch  # noqa: F401 - imported before any peer is timed

    # pyarrow's buffers are read-only: torch warns once, and the limit's tensors stay views
    warnings.filterwarnings("ignore", message="The given NumPy array is not writable")
    paths = write_data(args.data, args.rows, args.files, args.row_group)
    print(f"{args.rows:,} rows in {len(paths)} files, row groups of {args.row_group:,}, "
          f"batch {args.batch:,}; {os.cpu_count()} CPUs, load average "
          f"{os.getloadavg()[0]:.2f}")
    results: dict[str, dict[str, float]] = {}

    def run(name: str, make: Callable[[], Iterator[dict[str, Any]]]) -> None:
        results[name] = timed(make(), args.seconds, args.rows)
        r = results[name]
        print(f"  {name:<34} {r['rows_per_s']:>12,.0f} rows/s  ({r['rows']:,} rows, first "
              f"batch {r['first_batch_s']:.2f} s{r.get('note', '')})", flush=True)

    if "pyarrow" not in skip:
        run("pyarrow iter_batches (the limit)", lambda: pyarrow_alone(paths, args.batch))
    if "inputkit" not in skip:
        for workers in ("inline", "threads x1", "threads x2", "processes x2"):
            box: list[Any] = []
            run(f"inputkit {workers}", lambda w=workers, b=box: inputkit_batches(
                paths, args.batch, w, b))
            results[f"inputkit {workers}"]["start_s"] = box[0] if box else float("nan")
            print(f"  {'':<34} start-up {box[0] if box else float('nan'):.2f} s")
    if "dataloader" not in skip:
        began = time.perf_counter()
        dataset = RowTable(paths)
        print(f"  (the DataLoader's table loaded in {time.perf_counter() - began:.2f} s)")
        for workers in (0, 2):
            run(f"DataLoader per row, workers={workers}",
                lambda w=workers: dataloader(dataset, args.batch, w, batched=False))
        for workers in (0, 2):
            run(f"DataLoader batched sampler, w={workers}",
                lambda w=workers: dataloader(dataset, args.batch, w, batched=True))
    ours = {k: v["rows_per_s"] for k, v in results.items() if k.startswith("inputkit")}
    if ours:
        best_name = max(ours, key=ours.__getitem__)
        best = ours[best_name]
        print(f"best inputkit: {best_name}, {best:,.0f} rows/s")
        limit = results.get("pyarrow iter_batches (the limit)")
        if limit:
            print(f"  vs pyarrow alone:        {best / limit['rows_per_s']:.2f}x (goal >= 0.7)")
        per_row = [v["rows_per_s"] for k, v in results.items() if k.startswith("DataLoader per")]
        if per_row:
            print(f"  vs best DataLoader/row:  {best / max(per_row):.1f}x (goal >= 5x)")
        batched = [v["rows_per_s"] for k, v in results.items() if "batched" in k]
        if batched:
            print(f"  vs best batched sampler: {best / max(batched):.2f}x")


if __name__ == "__main__":
    main()

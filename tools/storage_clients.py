"""Which client reads object storage faster here: obstore (inputkit's Store) or fsspec (s3fs).

Both read the same objects from moto's S3 server on 127.0.0.1 (tests/storage_servers.py), and
optionally from the ranged HTTP server (tests/http_range_server.py), in the shapes inputkit
asks for: many small objects with 32 in flight (a folder of JPEGs), one big object whole and
in 8 MiB ranges (a shard). CPU-ms per MB is this process's CPU time (all its threads, the
clients' own included) over the bytes read; moto runs in its own process, but the HTTP server
runs in this one, so the HTTP rows' CPU includes the server's. moto and the HTTP server are pure Python: where
both clients hit the same ceiling, the server is the limit, not the client.

    python tools/storage_clients.py                      # 2,000 x 100 KB, 256 MiB
    python tools/storage_clients.py --small 500 --big-mib 64 --http
"""

from __future__ import annotations

import argparse
import asyncio
import os
import sys
import tempfile
import time
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor

sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", "tests"))

RANGE = 8 * 2**20
IN_FLIGHT = 32


def measure(fn: Callable[[], int]) -> tuple[float, float, int]:
    """(seconds, CPU seconds of this process, bytes) of one call of ``fn``."""
    wall, cpu = time.perf_counter(), time.process_time()
    nbytes = fn()
    return time.perf_counter() - wall, time.process_time() - cpu, nbytes


def obstore_cases(small: list[str], big: str, big_size: int) -> dict[str, Callable[[], int]]:
    from inputkit import storage

    storage.configure({"concurrency": IN_FLIGHT}, None)
    store = storage.open_store(big)
    small_store = storage.open_store(small[0])
    starts = list(range(0, big_size, RANGE))
    lengths = [min(RANGE, big_size - s) for s in starts]

    def many() -> int:
        got = small_store.read_many(small)
        bad = [g for g in got if not isinstance(g, bytes)]
        if bad:
            raise bad[0]
        return sum(len(g) for g in got)  # type: ignore[arg-type]

    return {
        "warm": lambda: len(small_store.read(small[0])),
        "small objects": many,
        "big, whole": lambda: len(store.read(big)),
        "big, 8 MiB ranges": lambda: sum(map(len, store.read_ranges(big, starts, lengths))),
    }


def fsspec_cases(small: list[str], big: str, big_size: int, endpoint: str | None,
                 checksums: bool = True) -> dict[str, Callable[[], int]]:
    import fsspec

    if big.startswith("s3://"):
        # botocore (>= 1.36) validates a CRC of every GET body by default, in Python unless
        # awscrt is installed; checksums=False turns that off (obstore checks none)
        config = {} if checksums else {"response_checksum_validation": "when_required",
                                       "request_checksum_calculation": "when_required"}
        fs = fsspec.filesystem("s3", client_kwargs={"endpoint_url": endpoint},
                               config_kwargs=config, skip_instance_cache=True)
    else:
        fs = fsspec.filesystem("http", skip_instance_cache=True)
    starts = list(range(0, big_size, RANGE))
    ends = [min(s + RANGE, big_size) for s in starts]

    def many() -> int:
        got = fs.cat(small, batch_size=IN_FLIGHT)
        return sum(len(v) for v in got.values())

    return {
        "warm": lambda: len(fs.cat_file(small[0])),
        "small objects": many,
        "big, whole": lambda: len(fs.cat_file(big)),
        "big, 8 MiB ranges": lambda: sum(map(len, fs.cat_ranges([big] * len(starts), starts, ends,
                                                                 batch_size=IN_FLIGHT))),
    }


def run(label: str, cases: dict[str, Callable[[], int]], count: int, rows: list[tuple]) -> None:
    cases["warm"]()  # untimed: the session, credentials and a first connection
    for name, fn in cases.items():
        if name == "warm":
            continue
        seconds, cpu, nbytes = measure(fn)
        mb = nbytes / 1e6
        rate = f"{count / seconds:,.0f} obj/s" if name == "small objects" else f"{mb / seconds:,.0f} MB/s"
        rows.append((label, name, rate, f"{mb / seconds:,.0f}", f"{1000 * cpu / mb:.2f}"))
        print(f"  {label:<22} {name:<18} {rate:>14}  {1000 * cpu / mb:6.2f} CPU-ms/MB", flush=True)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--small", type=int, default=2000, help="small objects (default 2000)")
    parser.add_argument("--small-kb", type=int, default=100, help="their size in KB (100)")
    parser.add_argument("--big-mib", type=int, default=256, help="the big object in MiB (256)")
    parser.add_argument("--http", action="store_true", help="also read from the HTTP server")
    args = parser.parse_args()

    from storage_servers import S3Server

    small_data = os.urandom(args.small_kb * 1000)
    big_data = os.urandom(args.big_mib * 2**20)
    rows: list[tuple] = []
    with S3Server() as server:
        os.environ.update(server.env())
        bucket = server.make_bucket("clients")
        print(f"uploading {args.small} x {args.small_kb} KB and {args.big_mib} MiB to moto ...",
              flush=True)
        client = server.client()
        keys = [f"small/{i:06d}.bin" for i in range(args.small)]
        with ThreadPoolExecutor(8) as pool:
            list(pool.map(lambda k: client.put_object(Bucket=bucket, Key=k, Body=small_data), keys))
        client.put_object(Bucket=bucket, Key="big.bin", Body=big_data)
        small = [f"s3://{bucket}/{k}" for k in keys]
        big = f"s3://{bucket}/big.bin"
        run("obstore, moto S3", obstore_cases(small, big, len(big_data)), len(small), rows)
        run("s3fs, moto S3", fsspec_cases(small, big, len(big_data), server.endpoint), len(small),
            rows)
        run("s3fs no CRC, moto S3", fsspec_cases(small, big, len(big_data), server.endpoint,
                                                 checksums=False), len(small), rows)
    if args.http:
        from http_range_server import HttpServer

        with tempfile.TemporaryDirectory() as root:
            os.makedirs(os.path.join(root, "small"))
            for k in keys:
                with open(os.path.join(root, k), "wb") as out:
                    out.write(small_data)
            with open(os.path.join(root, "big.bin"), "wb") as out:
                out.write(big_data)
            with HttpServer(root) as http:
                small = [http.url(k) for k in keys]
                big = http.url("big.bin")
                run("obstore, HTTP", obstore_cases(small, big, len(big_data)), len(small), rows)
                run("fsspec, HTTP", fsspec_cases(small, big, len(big_data), None), len(small), rows)
    print()
    print("| client, server | workload | rate | MB/s | CPU-ms per MB |")
    print("| --- | --- | ---: | ---: | ---: |")
    for row in rows:
        print("| " + " | ".join(row) + " |")


if __name__ == "__main__":
    asyncio.set_event_loop_policy(None)
    main()

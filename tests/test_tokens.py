"""source=tokens: flat token files as seq_len+1 windows, through the source and the real Runner."""

from __future__ import annotations

import os
import pickle
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
from conftest import make_cfg

import inputkit
from inputkit import ConfigError, Runner, SourceError
from inputkit.memory import PAGE_CACHE, plan_memory
from inputkit.sources.tokens import TokenSource

TOKENS = "inputkit.sources.tokens.TokenSource"
THREADS = {"count": 3}
PROCESSES = {"kind": "process", "count": 2}


def write_tokens(folder: Path, sizes: list[int], dtype: str = "uint16", npy: bool = False,
                 start: int = 0) -> tuple[list[str], np.ndarray]:
    """Files of consecutive token ids (so a token's value is its stream position + start)."""
    folder.mkdir(parents=True, exist_ok=True)
    paths, pos = [], start
    for i, n in enumerate(sizes):
        arr = np.arange(pos, pos + n).astype(dtype)
        path = folder / (f"part{i:02d}.npy" if npy else f"part{i:02d}.bin")
        np.save(path, arr) if npy else arr.tofile(path)
        paths.append(str(path))
        pos += n
    return paths, np.arange(start, pos).astype(dtype)


def drain_ids(runner: Runner) -> list[int]:
    """Every window id device 0 delivers until the runner finishes (all its epochs)."""
    stream, got = runner.device(0), []
    while not stream.finished:
        got.extend(i for b in stream for i in b["id"].tolist())
    return got


# the windows ----------------------------------------------------------------------------------

def test_non_overlapping_windows_tile_the_stream_exactly(tmp_path):
    """Every token is in exactly one window's input_ids (bar the tail that fills no window),
    labels are input_ids shifted by one, and windows span file boundaries in stream mode."""
    paths, stream = write_tokens(tmp_path, [1000, 37, 2500])
    src = TokenSource(str(tmp_path / "*.bin"), seq_len=64, dtype="uint16",
                      fields=["input_ids", "labels", "tokens"])
    assert src.paths == paths
    assert len(src) == (3537 - 65) // 64 + 1 == 55
    got = src.read(np.arange(len(src)))
    assert got["input_ids"].dtype == np.int64 and got["input_ids"].shape == (55, 64)
    assert np.array_equal(got["input_ids"].ravel(), stream[:55 * 64])
    assert np.array_equal(got["labels"].ravel(), stream[1:55 * 64 + 1])
    assert np.array_equal(got["tokens"][:, :-1], got["input_ids"])
    assert np.array_equal(got["tokens"][:, 1:], got["labels"])
    assert src.run_info()["tokens_left_out"] == 3537 - 55 * 64 - 1
    # window 15 starts at 960 and ends at 1024: it spans the first two files
    assert np.array_equal(src.read(np.array([15]))["tokens"][0], stream[960:1025])


def test_shuffled_and_repeated_reads_match_the_windows_in_order(tmp_path):
    write_tokens(tmp_path, [3000, 3000], dtype="uint32")
    src = TokenSource([str(tmp_path / "part00.bin"), str(tmp_path / "part01.bin")], seq_len=50,
                      dtype="uint32", stride=30)
    every = src.read(np.arange(len(src)))
    assert np.array_equal(every["input_ids"][:, 0], np.arange(len(src)) * 30), "stride"
    order = np.random.default_rng(0).permutation(len(src))
    for indices in (order, [7, 8, 9, 3, 4, 4, 100], [len(src) - 1], []):
        got = src.read(np.asarray(indices, dtype=np.int64))
        assert np.array_equal(got["input_ids"], every["input_ids"][indices])
        assert np.array_equal(got["labels"], every["labels"][indices])


def test_per_file_windows_never_cross_a_file(tmp_path):
    write_tokens(tmp_path, [500, 130, 777])
    src = TokenSource(str(tmp_path / "*.bin"), seq_len=64, dtype="uint16", mode="per_file",
                      fields=["tokens"])
    per_file = [(500 - 65) // 64 + 1, (130 - 65) // 64 + 1, (777 - 65) // 64 + 1]
    assert len(src) == sum(per_file)
    tokens = src.read(np.arange(len(src)))["tokens"]
    bounds = np.array([0, 500, 630, 1407])
    file_of_first = np.searchsorted(bounds, tokens[:, 0], side="right") - 1
    file_of_last = np.searchsorted(bounds, tokens[:, -1], side="right") - 1
    assert np.array_equal(file_of_first, file_of_last), "no window crosses a file"
    assert np.array_equal(np.bincount(file_of_first), per_file)
    assert np.all(np.diff(tokens, axis=1) == 1)
    firsts = [int(tokens[i, 0]) for i in np.cumsum([0, *per_file[:-1]])]
    assert firsts == [0, 500, 630], "each file's windows start at its first token"


def test_npy_files_one_field_and_the_file_dtype_kept(tmp_path):
    _, stream = write_tokens(tmp_path, [400, 400], dtype="int32", npy=True)
    src = TokenSource(str(tmp_path / "*.npy"), seq_len=32, fields="labels", output_dtype=None,
                      vocab_size=1000)
    got = src.read(np.arange(3))
    assert list(got) == ["labels"] and got["labels"].dtype == np.int32
    assert np.array_equal(got["labels"].ravel(), stream[1:97])
    assert src.run_info()["dtype"] == "int32"


def test_the_source_pickles_without_its_maps_and_plans_them_as_page_cache(tmp_path):
    write_tokens(tmp_path, [20_000])
    src = TokenSource(str(tmp_path / "part00.bin"), seq_len=128, dtype="uint16")
    src.read(np.arange(4))
    assert len(pickle.dumps(src)) < 2000
    assert np.array_equal(pickle.loads(pickle.dumps(src)).read(np.arange(4))["labels"],
                          src.read(np.arange(4))["labels"])
    spec = inputkit.load_spec(make_cfg({"_target_": TOKENS, "files": str(tmp_path / "*.bin"),
                                        "dtype": "uint16", "seq_len": 128}, batch_size=8))
    plan = plan_memory(spec, devices=("cpu",))
    mapped = [t for t in plan.terms if t.memory == PAGE_CACHE]
    assert [(t.stage, t.bytes) for t in mapped] == [("memory-mapped files", 40_000)]
    assert plan.layouts["main"].sample_bytes == 2 * 128 * 8, "input_ids + labels, int64"
    assert plan.host_bytes == sum(t.bytes for t in plan.terms if t.memory != PAGE_CACHE)
    assert plan.dominating().memory != PAGE_CACHE


# through the Runner -----------------------------------------------------------------------------

@pytest.mark.parametrize("workers", [THREADS, PROCESSES, {"kind": "inline"}],
                         ids=["threads", "processes", "inline"])
def test_every_window_once_over_two_devices(tmp_path, workers):
    _, stream = write_tokens(tmp_path, [3000, 1000, 2100])
    source = {"_target_": TOKENS, "files": str(tmp_path / "*.bin"), "dtype": "uint16",
              "seq_len": 32, "fields": ["input_ids", "labels", "id"]}
    cfg = make_cfg(source, batch_size=8, devices=["cpu", "cpu"], workers=workers,
                   epoch={"shuffle": True, "seed": 1, "chunk_size": 6})
    seen, rows = [], {}
    with Runner(cfg) as runner:
        for step in runner.steps():
            for b in step:
                if b is None:
                    continue
                for i, x, y in zip(b["id"].tolist(), b["input_ids"].numpy(), b["labels"].numpy(),
                                   strict=True):
                    seen.append(i)
                    rows[i] = (x.copy(), y.copy())
    n = (6100 - 33) // 32 + 1
    assert sorted(seen) == list(range(n)), "every window exactly once"
    assert seen != sorted(seen), "shuffled"
    for i, (x, y) in rows.items():
        assert np.array_equal(x, stream[i * 32:i * 32 + 32]) and np.array_equal(y, x + 1)


def resume_cfg(tmp_path: Path, workers: dict) -> dict:
    source = {"_target_": TOKENS, "files": str(tmp_path / "*.bin"), "dtype": "uint16",
              "seq_len": 16, "fields": ["input_ids", "id"]}
    return make_cfg(source, batch_size=8, workers=workers,
                    epoch={"count": 2, "shuffle": True, "ordered": True, "seed": 7, "chunk_size": 8})


@pytest.mark.parametrize("after", [THREADS, PROCESSES], ids=["threads", "processes"])
def test_resume_mid_epoch_gives_the_uninterrupted_sequence(tmp_path, after):
    write_tokens(tmp_path, [2000, 1500])
    with Runner(resume_cfg(tmp_path, THREADS)) as runner:
        whole = drain_ids(runner)
    n = (3500 - 17) // 16 + 1
    assert sorted(whole) == sorted(list(range(n)) * 2), "two epochs, each window once in each"
    with Runner(resume_cfg(tmp_path, {"count": 2})) as runner:
        first = []
        for b in runner.device(0):
            first.extend(b["id"].tolist())
            if len(first) >= 120:
                break
        state = pickle.loads(pickle.dumps(runner.state_dict()))
    resumed = Runner(resume_cfg(tmp_path, after))
    resumed.load_state_dict(state)
    with resumed:
        rest = drain_ids(resumed)
    assert first + rest == whole, "the same windows in the same order as one uninterrupted run"


def test_a_token_beyond_vocab_size_is_a_source_error_naming_file_and_offset(tmp_path):
    paths, _ = write_tokens(tmp_path, [1000, 1000])
    bad = np.fromfile(paths[1], dtype=np.uint16)
    bad[123] = 60_000
    bad.tofile(paths[1])
    source = {"_target_": TOKENS, "files": str(tmp_path / "*.bin"), "dtype": "uint16",
              "seq_len": 64, "vocab_size": 50_000}
    src = TokenSource(**{k: v for k, v in source.items() if k != "_target_"})
    src.read(np.arange(0, 15))  # windows 0..14 end at token 960: clean
    message = (r"'.*part01\.bin': token id 60000 at token offset 123 \(byte 246\) is "
               r">= vocab_size=50000; check source.vocab_size")
    with pytest.raises(SourceError, match=message):
        src.read(np.array([3, 17, 5]))  # window 17 holds stream tokens 1088..1152
    with pytest.raises(SourceError, match=message):
        with Runner(make_cfg(source, batch_size=4)) as runner:
            list(runner.device(0))


def test_a_negative_token_in_a_signed_file_names_the_file(tmp_path):
    arr = np.arange(300, dtype=np.int32)
    arr[100] = -1
    np.save(tmp_path / "t.npy", arr)
    src = TokenSource(str(tmp_path / "t.npy"), seq_len=20)
    with pytest.raises(SourceError, match=r"'.*t\.npy': token id -1 at token offset 100 "
                                          r"\(byte 528\) is negative"):
        src.read(np.arange(len(src)))


# bad input ---------------------------------------------------------------------------------------

def _bad(tmp_path: Path, case: str) -> dict:
    files = str(tmp_path / "*.bin")
    np.arange(1000, dtype=np.uint16).tofile(tmp_path / "a.bin")
    args: dict = {"files": files, "dtype": "uint16", "seq_len": 64}
    if case == "odd size":
        (tmp_path / "b.bin").write_bytes(b"\x01\x02\x03")
    elif case == "no match":
        args["files"] = str(tmp_path / "*.tok")
    elif case == "no file":
        args["files"] = str(tmp_path / "missing.bin")
    elif case == "directory":
        args["files"] = str(tmp_path)
    elif case == "short file":
        np.arange(10, dtype=np.uint16).tofile(tmp_path / "b.bin")
        args["mode"] = "per_file"
    elif case == "short stream":
        args["seq_len"] = 1000
    elif case == "no dtype":
        del args["dtype"]
    elif case == "npy dtype":
        np.save(tmp_path / "c.npy", np.arange(100, dtype=np.uint32))
        args["files"] = [files, str(tmp_path / "c.npy")]
    elif case == "float npy":
        np.save(tmp_path / "c.npy", np.arange(100, dtype=np.float32))
        args = {"files": str(tmp_path / "c.npy"), "seq_len": 8}
    elif case == "2-d npy":
        np.save(tmp_path / "c.npy", np.zeros((10, 10), np.uint16))
        args = {"files": str(tmp_path / "c.npy"), "seq_len": 8}
    elif case == "mode":
        args["mode"] = "docs"
    elif case == "field":
        args["fields"] = ["input_ids", "attention_mask"]
    elif case == "seq_len":
        args["seq_len"] = 0
    return args


@pytest.mark.parametrize("case, message", [
    ("odd size", r"'.*b\.bin' holds 3 bytes, not a multiple of uint16's 2; check source\.dtype"),
    ("no match", r"files: no files match '.*\*\.tok'"),
    ("no file", r"files: no such file: '.*missing\.bin'"),
    ("directory", r"files: '.*' is a directory; name its files, e\.g\. '.*\*\.bin'"),
    ("short file", r"seq_len: 64 \+ 1 tokens do not fit in '.*b\.bin', which holds 10 tokens "
                   r"\(1 file\(s\) are that short\); with mode=per_file .* or use mode=stream"),
    ("short stream", r"seq_len: 1000 \+ 1 tokens do not fit in the 1,000 tokens of all 1 file"),
    ("no dtype", r"dtype: required for the raw token file '.*a\.bin'.*source\.dtype=uint16"),
    ("npy dtype", r"dtype: '.*c\.npy' holds uint32 tokens but source\.dtype is uint16"),
    ("float npy", r"'.*c\.npy' holds float32; token ids are integers"),
    ("2-d npy", r"'.*c\.npy' holds an array of shape \(10, 10\); a token file is flat"),
    ("mode", r"mode: expected stream .* or per_file .*, got 'docs'"),
    ("field", r"fields: 'attention_mask' is not a field of token windows"),
    ("seq_len", r"seq_len: expected a whole number >= 1, got 0"),
])
def test_bad_token_files_are_config_errors_naming_the_file_or_key(tmp_path, case, message):
    args = _bad(tmp_path, case)
    cfg = make_cfg({"_target_": TOKENS, **args}, batch_size=4)
    with pytest.raises(ConfigError, match=r"^source: inputkit\.sources\.tokens\.TokenSource: "
                       + message):
        Runner(cfg).start()


def test_an_unreadable_file_is_named(tmp_path, monkeypatch):
    import inputkit.sources.tokens as tokens

    np.arange(1000, dtype=np.uint16).tofile(tmp_path / "a.bin")

    def refuse(path, *args, **kwargs):  # as open() does without read permission (not as root)
        raise PermissionError(13, "Permission denied", path)

    monkeypatch.setattr(tokens, "open", refuse, raising=False)
    with pytest.raises(ValueError, match=r"cannot read '.*a\.bin': PermissionError: .*Permission "
                                         r"denied.*; check that the file exists and is readable"):
        TokenSource(str(tmp_path / "a.bin"), seq_len=8, dtype="uint16")


def test_cli_bench_reads_token_files(tmp_path):
    write_tokens(tmp_path, [20_000, 20_000])
    env = {**os.environ, "COLUMNS": "200"}
    out = subprocess.run([sys.executable, "-m", "inputkit", "bench", "source=tokens",
                          f"source.files={tmp_path}/*.bin", "source.dtype=uint16",
                          "source.seq_len=256", "batch_size=8", "bench.seconds=1", "devices=cpu"],
                         cwd=tmp_path, env=env, capture_output=True, text=True, timeout=60,
                         stdin=subprocess.DEVNULL)
    assert out.returncode == 0, out.stdout + out.stderr
    assert "156" in out.stdout, out.stdout  # one epoch: (40,000 - 257) // 256 + 1 windows

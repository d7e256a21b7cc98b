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
from inputkit.planning.memory import PAGE_CACHE, plan_memory
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


@pytest.mark.parametrize("mode", ["stream", "per_file"])
def test_a_shuffled_chunk_gathered_per_file_equals_the_windows_read_one_by_one(tmp_path, mode):
    """A chunk of many runs is gathered per file (windows crossing a file copied apart, in
    stream mode); every field equals the window read alone, which is copied run by run."""
    write_tokens(tmp_path, [700, 40, 1300, 66, 900])
    src = TokenSource(str(tmp_path / "*.bin"), seq_len=32, stride=20, dtype="uint16", mode=mode,
                      fields=["tokens", "labels", "id", "input_ids"])
    order = np.random.default_rng(1).permutation(len(src))
    got = src.read(order)
    alone = [src.read(np.array([i])) for i in order.tolist()]
    for name in ("tokens", "labels", "input_ids", "id"):
        assert np.array_equal(got[name], np.concatenate([a[name] for a in alone])), name
    assert np.array_equal(got["tokens"][:, 0], src._starts(order)), "each window at its start"
    if mode == "stream":
        width = src.seq_len + 1
        bounds = np.cumsum([700, 40, 1300, 66, 900])
        crossing = [i for i in order.tolist() if np.any((i * 20 < bounds)
                                                        & (bounds < i * 20 + width))]
        assert crossing, "the data has windows that span files"
    one_file = src.read(order[src.sample_groups()[order] == 2])  # every window from one file
    assert np.all(np.diff(one_file["tokens"], axis=1) == 1)


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
    import inputkit.sources.token_checks as tokens  # where the files are inspected

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


# ids that do not fit the declared keys ----------------------------------------------------------

@pytest.mark.parametrize("dtype, vocab_size, output_dtype, message", [
    ("uint16", 50_000, "int16", r"output_dtype: int16 holds ids up to 32,767, but "
                                r"source\.vocab_size=50000 means ids up to 49,999, and a cast "
                                r"would wrap them \(id 49,999 becomes -15,537\)"),
    ("uint16", None, "int16", r"output_dtype: int16 holds ids up to 32,767, but the file's "
                              r"source\.dtype=uint16 holds ids up to 65,535 and "
                              r"source\.vocab_size is not set"),
    ("uint16", None, "uint8", r"output_dtype: uint8 holds ids up to 255, but the file's "
                              r"source\.dtype=uint16"),
    ("uint32", 300, "int8", r"output_dtype: int8 holds ids up to 127, but source\.vocab_size=300"),
])
def test_an_output_dtype_that_cannot_hold_every_id_is_a_config_error_naming_both_keys(
        tmp_path, dtype, vocab_size, output_dtype, message):
    """uint16 ids 44725 used to arrive as int16 -20811: a cast that can wrap is refused."""
    write_tokens(tmp_path, [1000], dtype=dtype)
    source = {"_target_": TOKENS, "files": str(tmp_path / "*.bin"), "dtype": dtype,
              "seq_len": 16, "vocab_size": vocab_size, "output_dtype": output_dtype}
    with pytest.raises(ConfigError, match=r"^source: inputkit\.sources\.tokens\.TokenSource: "
                                          + message):
        Runner(make_cfg(source, batch_size=4)).start()


def test_cli_bench_exits_2_on_an_output_dtype_that_wraps_ids(tmp_path):
    np.array([44725, 23658, 37099] * 100, dtype=np.uint16).tofile(tmp_path / "a.bin")
    out = subprocess.run([sys.executable, "-m", "inputkit", "bench", "source=tokens",
                          "source.files=a.bin", "source.dtype=uint16", "source.seq_len=8",
                          "source.vocab_size=50000", "source.output_dtype=int16",
                          "bench.seconds=1", "devices=cpu"],
                         cwd=tmp_path, env={**os.environ, "COLUMNS": "200"}, capture_output=True,
                         text=True, timeout=60, stdin=subprocess.DEVNULL)
    assert out.returncode == 2, out.stdout + out.stderr
    assert "output_dtype: int16 holds ids up to 32,767" in out.stdout + out.stderr


def test_a_narrowing_output_dtype_that_fits_vocab_size_checks_ids_before_the_cast(tmp_path):
    """int16 holds every id below vocab_size=30000, so the cast is allowed; an id the file holds
    past vocab_size would wrap in it (40000 -> -25536, 65535 -> -1), so the ids are checked as
    the file holds them and the error names the true id."""
    ids = np.arange(2000, dtype=np.uint16) * 15
    ids.tofile(tmp_path / "a.bin")
    src = TokenSource(str(tmp_path / "a.bin"), dtype="uint16", seq_len=16, vocab_size=30_000,
                      output_dtype="int16")
    got = src.read(np.arange(len(src)))["input_ids"]
    assert got.dtype == np.int16 and np.array_equal(got.ravel(), ids[:got.size].astype(np.int16))
    ids[1500] = 40_000
    ids.tofile(tmp_path / "a.bin")
    src = TokenSource(str(tmp_path / "a.bin"), dtype="uint16", seq_len=16, vocab_size=30_000,
                      output_dtype="int16")
    src.read(np.arange(0, 90))  # windows 0..89 end at token 1440: clean
    # a run, shuffled windows, and a chunk of many runs (gathered, then read run by run)
    for indices in (np.arange(80, 100), np.array([95, 3, 93]), np.array([1, 95, 3, 7, 93, 9])):
        with pytest.raises(SourceError, match=r"'.*a\.bin': token id 40000 at token offset "
                                              r"1,500 \(byte 3,000\) is >= vocab_size=30000"):
            src.read(indices)
    signed = np.arange(300, dtype=np.int32)
    signed[100] = -1
    np.save(tmp_path / "s.npy", signed)
    src = TokenSource(str(tmp_path / "s.npy"), seq_len=20, output_dtype="uint32")
    with pytest.raises(SourceError, match=r"token id -1 at token offset 100 .* is negative"):
        src.read(np.arange(len(src)))  # not 4294967295, what -1 becomes as uint32


def test_a_uint16_file_read_as_uint32_is_refused_naming_dtype_and_vocab_size(tmp_path):
    """uint16 pairs read as uint32 are ids like 1,550,495,413; with no vocab_size, a sample
    of the file's ids at 2**24 or more is a config error."""
    rng = np.random.default_rng(0)
    ids = rng.integers(0, 50_000, 100_000, dtype=np.uint16)
    ids.tofile(tmp_path / "a.bin")
    source = {"_target_": TOKENS, "files": str(tmp_path / "a.bin"), "dtype": "uint32",
              "seq_len": 64}
    with pytest.raises(ConfigError, match=r"dtype: '.*a\.bin' read as source\.dtype=uint32 holds "
                                          r"token id [\d,]+ \(token offset [\d,]+\), and no "
                                          r"tokenizer has that many ids .*set source\.vocab_size"):
        Runner(make_cfg(source, batch_size=4)).start()
    big = np.zeros(50_000, np.uint32)  # clean but for one id past 2**24, in the last block
    big[-10] = 2 ** 24
    big.tofile(tmp_path / "b.bin")
    with pytest.raises(ValueError, match=r"holds token id 16,777,216 \(token offset 49,990\)"):
        TokenSource(str(tmp_path / "b.bin"), dtype="uint32", seq_len=64)
    big[-10] = 2 ** 24 - 1  # the largest id accepted without vocab_size
    big.tofile(tmp_path / "b.bin")
    assert TokenSource(str(tmp_path / "b.bin"), dtype="uint32", seq_len=64).total_tokens == 50_000
    # with vocab_size, every id read is checked instead: the misread ids fail the first read
    src = TokenSource(str(tmp_path / "a.bin"), dtype="uint32", seq_len=64, vocab_size=50_000)
    with pytest.raises(SourceError, match=r">= vocab_size=50000"):
        src.read(np.arange(4))


def test_a_uint32_file_read_as_uint16_is_refused(tmp_path):
    """uint32 ids below 65,536 read as uint16 are id, 0, id, 0, ...: a zero at every odd
    position of the sample (and ids at the even ones) is a config error naming the dtype."""
    ids = np.random.default_rng(1).integers(1, 50_000, 20_000).astype(np.uint32)
    ids.tofile(tmp_path / "a.bin")
    with pytest.raises(ValueError, match=r"dtype: '.*a\.bin' read as source\.dtype=uint16 holds 0 "
                                         r"at every odd position of the [\d,]+ tokens sampled.*"
                                         r"looks like uint32 tokens read as uint16"):
        TokenSource(str(tmp_path / "a.bin"), dtype="uint16", seq_len=64, vocab_size=50_000)
    assert TokenSource(str(tmp_path / "a.bin"), dtype="uint32", seq_len=64).total_tokens == 20_000
    ids.astype(np.uint16).tofile(tmp_path / "b.bin")  # the same ids as uint16: no zeros
    assert TokenSource(str(tmp_path / "b.bin"), dtype="uint16", seq_len=64).total_tokens == 20_000


def test_a_big_endian_npy_file_names_its_byte_order(tmp_path):
    np.save(tmp_path / "b.npy", np.arange(100, dtype=">u2"))
    with pytest.raises(ValueError, match=r"dtype: '.*b\.npy' holds uint16 \(big-endian, '>u2'\) "
                                         r"tokens but source\.dtype is uint16; set "
                                         r"source\.dtype=null"):
        TokenSource(str(tmp_path / "b.npy"), dtype="uint16", seq_len=8)
    src = TokenSource(str(tmp_path / "b.npy"), seq_len=8)  # the header's dtype, read right
    assert src.read(np.array([1]))["input_ids"][0].tolist() == \
        list(range(8, 16))

"""Small things of the command line: help layout, wording, output kept clean, honest titles."""

from __future__ import annotations

import inspect
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

TESTS = Path(__file__).resolve().parent
COMMANDS = [[], ["bench"], ["plan"], ["tune"], ["sources"], ["compare"]]


def _invoke(args: list[str], columns: str = "200", env: dict[str, str] | None = None):
    """The CLI in-process through typer's CliRunner (stdout and stderr together)."""
    from typer.testing import CliRunner

    from inputkit.cli import app

    return CliRunner().invoke(app, args, env={"COLUMNS": columns, **(env or {})},
                              prog_name="inputkit")


@pytest.mark.parametrize("command", COMMANDS, ids=lambda c: " ".join(c) or "inputkit")
def test_flags_show_no_bool_type_in_help(command):
    """A flag takes no value: --help, --version, --json, --no-probe show no <bool>."""
    result = _invoke([*command, "--help"], columns="80")
    assert result.exit_code == 0, result.output
    assert "<bool>" not in result.output, result.output
    assert "--help" in result.output


def test_version_flag_is_listed_and_works():
    assert "--version" in _invoke(["--help"], columns="80").output
    result = _invoke(["--version"])
    assert result.exit_code == 0 and result.output.startswith("inputkit "), result.output


def _docstring_lines(name: str) -> list[str]:
    """The lines of a command's docstring after its first paragraph (the first paragraph
    is joined into one line and wrapped by rich), as --help shows them."""
    from inputkit.cli import app

    [callback] = [c.callback for c in app.registered_commands
                  if (c.name or c.callback.__name__.replace("_command", "")) == name]
    doc = inspect.cleandoc(callback.__doc__ or "")
    rest = doc.split("\n\n", 1)[1] if "\n\n" in doc else ""
    return [line.replace("\\[", "[").strip() for line in rest.splitlines()
            if line.strip() and line.strip() != "\b"]


@pytest.mark.parametrize("name", ["bench", "plan", "tune", "sources", "compare"])
def test_help_keeps_every_docstring_line_whole_at_80_columns(name):
    """Typer keeps a docstring's own line breaks: a line wider than the terminal is broken
    again, leaving one or two words on a line of their own in mid-sentence."""
    result = _invoke([name, "--help"], columns="80")
    assert result.exit_code == 0, result.output
    shown = {line.strip() for line in result.output.splitlines()}
    lines = _docstring_lines(name)
    assert lines, name
    broken = [line for line in lines if line not in shown]
    assert not broken, f"broken at 80 columns: {broken}\n{result.output}"


def test_sources_says_how_each_source_is_read_in_words():
    from inputkit.cli.render import reads_by

    assert reads_by("fetch") == "fetch()"
    assert reads_by("indexable") == "index"
    assert reads_by("fetch, indexable") == "fetch() or by index"
    result = _invoke(["sources"])
    assert result.exit_code == 0, result.output
    lines = {line.split(":")[0]: line for line in result.output.splitlines() if ": inputkit." in line}
    assert lines["arrays"].endswith("(built-in; reads by index)"), lines["arrays"]
    assert lines["shards"].endswith("(built-in; reads by fetch())"), lines["shards"]
    assert lines["synthetic"].endswith("(built-in; reads by fetch() or by index)")
    assert "reads by indexable" not in result.output


@pytest.mark.timeout(180)
def test_matplotlib_building_its_font_cache_leaves_no_line_in_the_output(tmp_path):
    """A fresh MPLCONFIGDIR: matplotlib builds its font cache on first import and logs
    'generated new fontManager' at INFO, which Hydra's logging would print."""
    config = tmp_path / "mplconfig"
    config.mkdir()
    env = {**os.environ, "PYTHONPATH": str(TESTS), "COLUMNS": "200", "MPLCONFIGDIR": str(config)}
    env.pop("HYDRA_FULL_ERROR", None)
    out = subprocess.run([sys.executable, "-m", "inputkit", "bench", "bench.seconds=1.5",
                          "devices=cpu", "source.latency_ms=1"], cwd=tmp_path, env=env,
                         capture_output=True, text=True, timeout=150, stdin=subprocess.DEVNULL)
    assert out.returncode == 0, out.stderr
    assert "plot: " in out.stdout, out.stdout  # matplotlib was imported and drew
    assert list(config.glob("fontlist-*.json")), "the font cache was built in this run"
    assert "fontManager" not in out.stdout + out.stderr, out.stdout + out.stderr


@pytest.fixture
def tokens(tmp_path: Path) -> Path:
    """A token file of 20,000 uint16 tokens: 312 windows of 64 (+1) tokens."""
    path = tmp_path / "train.bin"
    np.random.default_rng(0).integers(0, 1000, 20_000, dtype=np.uint16).tofile(path)
    return path


def _title(output: str) -> str:
    [title] = [line.strip() for line in output.splitlines() if line.strip().startswith(
        ("inputkit bench ran", "inputkit bench interrupted"))]
    return title


@pytest.mark.timeout(180)
def test_a_finite_tokens_bench_says_it_ran_to_the_end_of_its_epoch(tokens, tmp_path, monkeypatch):
    """The header names the epoch as a limit beside bench.seconds; the summary says the
    input ended (not the time limit), with its real duration."""
    monkeypatch.chdir(tmp_path)
    result = _invoke(["bench", "source=tokens", f"source.files={tokens}", "source.dtype=uint16",
                      "source.seq_len=64", "batch_size=8", "epoch.count=1", "devices=cpu",
                      "bench.seconds=60", "bench.plot=false"])
    assert result.exit_code == 0, result.output
    assert "until 60 s or the end of its 1 epoch of 312 samples (epoch.count=1)" in result.output
    title = _title(result.output)
    assert title.startswith("inputkit bench ran ") and \
        title.endswith(": the input ended (epoch.count=1), before bench.seconds=60"), title
    assert " 0.0 s" not in title, title
    assert "no batches were delivered" not in result.output, result.output


@pytest.mark.timeout(180)
@pytest.mark.parametrize("limit, ended", [("bench.steps=3", "bench.steps=3 reached"),
                                          ("bench.seconds=1", "bench.seconds=1 reached")])
def test_the_summary_names_the_limit_that_ended_an_endless_run(limit, ended, tmp_path,
                                                               monkeypatch):
    monkeypatch.chdir(tmp_path)
    result = _invoke(["bench", limit, "devices=cpu", "source.latency_ms=1", "bench.plot=false"])
    assert result.exit_code == 0, result.output
    assert _title(result.output).endswith(f": {ended}"), result.output
    assert "the end of its" not in result.output  # synthetic is endless: no epoch in the header


@pytest.mark.timeout(180)
def test_a_fetch_source_that_ends_is_said_to_have_ended(tmp_path, monkeypatch):
    """A fetch source ends when it raises SourceExhausted: unknown beforehand, so the header
    has no epoch; the summary says it ended, with no epoch.count (it does not apply)."""
    monkeypatch.chdir(tmp_path)
    monkeypatch.syspath_prepend(str(TESTS))
    result = _invoke(["bench", "~source", "+source._target_=fakes:RandomChunks",
                      "+source.length=500", "devices=cpu", "batch_size=16", "bench.seconds=60",
                      "bench.plot=false", "memory.probe=false",
                      "+source._fields_={id: {dtype: int64}, x: {shape: [3], dtype: float32}}"])
    assert result.exit_code == 0, result.output
    assert "until 60 s (start-up took" in result.output, result.output
    assert _title(result.output).endswith(": the input ended, before bench.seconds=60"), \
        result.output


@pytest.mark.parametrize("seconds, text", [(0.03, "30 ms"), (0.0004, "0 ms"), (0.2, "0.2 s"),
                                           (10.06, "10.1 s")])
def test_a_short_run_is_shown_in_milliseconds_not_as_zero_seconds(seconds, text):
    from inputkit.cli.bench_report import duration

    assert duration(seconds) == text


@pytest.fixture
def corrupt_folder(tmp_path: Path) -> Path:
    """An ImageFolder tree of 2 classes x 3 JPEGs, one of them not an image at all."""
    from imagefiles import write_folder

    root = write_folder(tmp_path / "images", classes=2, per_class=3)
    (root / "class_0" / "img_001.jpg").write_bytes(b"this is not a JPEG")
    return root


IMAGES = ["source=image_folder", "devices=cpu", "batch_size=2", "workers.count=1",
          "memory.probe=false", "bench.plot=false",
          "source.transforms=[{resize: 16}, {center_crop: 16}]"]


@pytest.mark.timeout(180)
def test_a_bad_file_prints_its_name_and_the_skip_hint_not_a_traceback(corrupt_folder, tmp_path,
                                                                      monkeypatch):
    monkeypatch.chdir(tmp_path)
    result = _invoke(["bench", f"source.path={corrupt_folder}", *IMAGES])
    assert result.exit_code == 1, result.output
    assert "error: source 'inputkit.sources.images.ImageFolderSource', field 'image': file " \
           f"'{corrupt_folder}/class_0/img_001.jpg'" in result.output, result.output
    assert "[inputkit] raised in worker 0 of input 'main'" in result.output
    assert "failures.on_error=skip skips the bad samples" in result.output
    assert "INPUTKIT_TRACEBACK=1 or --traceback" in result.output
    assert "Traceback (most recent call last)" not in result.output, result.output

    asked = _invoke(["bench", f"source.path={corrupt_folder}", *IMAGES, "--traceback"])
    assert asked.exit_code == 1 and "Traceback (most recent call last)" in asked.output, \
        asked.output
    by_env = _invoke(["bench", f"source.path={corrupt_folder}", *IMAGES],
                     env={"INPUTKIT_TRACEBACK": "1"})
    assert by_env.exit_code == 1 and "Traceback (most recent call last)" in by_env.output

    skipped = _invoke(["bench", f"source.path={corrupt_folder}", *IMAGES,
                       "failures.on_error=skip"])
    assert skipped.exit_code == 0, skipped.output
    assert "1 sample" in skipped.output and "skipped" in skipped.output, skipped.output


def test_a_bug_in_a_users_fetch_keeps_its_traceback(tmp_path, monkeypatch):
    """Not inputkit's own error: the traceback is where its answer is, so it stays."""
    monkeypatch.chdir(tmp_path)
    monkeypatch.syspath_prepend(str(TESTS))
    result = _invoke(["bench", "~source", "+source._target_=fakes:Raising", "workers.count=1",
                      "devices=cpu", "bench.steps=10", "memory.probe=false", "bench.plot=false"])
    assert result.exit_code == 1, result.output
    assert "error: KeyError: 'record 3 is corrupt'" in result.output
    assert "Traceback (most recent call last)" in result.output, result.output
    assert "failures.on_error=skip" not in result.output

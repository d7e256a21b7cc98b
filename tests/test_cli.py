"""The real command line, run as a subprocess from a folder outside the checkout."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
import time
from pathlib import Path

import pytest
import yaml

TESTS = Path(__file__).resolve().parent


def run(args: list[str], cwd: Path, timeout: float = 120) -> subprocess.CompletedProcess[str]:
    env = {**os.environ, "PYTHONPATH": str(TESTS), "COLUMNS": "200"}
    env.pop("HYDRA_FULL_ERROR", None)
    return subprocess.run([sys.executable, "-m", "inputkit", *args], cwd=cwd, env=env,
                          capture_output=True, text=True, timeout=timeout, stdin=subprocess.DEVNULL)


def summaries(root: Path) -> list[dict]:
    return [json.loads(p.read_text()) for p in sorted(root.rglob("summary.json"))]


def test_bench_with_overrides_streams_and_summarises_per_device(tmp_path):
    out = run(["bench", "bench.steps=5", "batch_size=32", "workers.count=2",
               "devices=[cpu,cpu]", "source.latency_ms=1"], tmp_path)
    assert out.returncode == 0, out.stderr
    assert "0:cpu" in out.stdout and "1:cpu" in out.stdout and "samples/s" in out.stdout
    [summary] = summaries(tmp_path / "outputs")
    assert [c["batches"] for c in summary["stats"]["coordinators"]] == [5, 5]
    assert summary["config"]["batch_size"] == 32
    assert "devices=[cpu,cpu]" in summary["overrides"]
    assert list((tmp_path / "outputs").rglob(".hydra/config.yaml"))
    assert not list((tmp_path / "outputs").rglob("*.log")), "no empty log files in the run dir"


def test_bench_prints_plain_progress_lines_when_not_a_tty(tmp_path):
    out = run(["bench", "bench.seconds=2.5", "source.latency_ms=2"], tmp_path)
    assert out.returncode == 0, out.stderr
    progress = [line for line in out.stdout.splitlines() if "batches/s" in line and "of 2.5s" in line]
    assert progress, out.stdout
    assert "\x1b[" not in out.stdout, "no terminal escape codes in plain output"


def test_finite_experiment_ends_with_the_epoch(tmp_path):
    out = run(["bench", "experiment=finite", "source.length=5000", "batch_size=64"], tmp_path)
    assert out.returncode == 0, out.stderr
    [summary] = summaries(tmp_path / "outputs")
    [coordinator] = summary["stats"]["coordinators"]
    assert coordinator["samples"] == 5000 and coordinator["finished"]
    assert coordinator["batches"] == 79  # 78 full batches of 64 and one of 8


def test_cfg_job_prints_the_composed_config_and_runs_nothing(tmp_path):
    out = run(["bench", "--cfg", "job", "batch_size=8", "+source.noise=0.5",
               "~source.fields.label"], tmp_path)
    assert out.returncode == 0, out.stderr
    cfg = yaml.safe_load(out.stdout)
    assert cfg["batch_size"] == 8 and cfg["source"]["noise"] == 0.5
    assert list(cfg["source"]["fields"]) == ["image"]
    assert "hydra" not in cfg
    assert not (tmp_path / "outputs").exists()


def test_user_config_dir_and_config_name(tmp_path):
    conf = tmp_path / "myconf"
    (conf / "source").mkdir(parents=True)
    (conf / "source" / "ones.yaml").write_text("_target_: fakes:fetch_ones\nwidth: 3\n")
    (conf / "train.yaml").write_text(
        "defaults:\n  - base_config\n  - source: ones\n  - workers: single\n  - _self_\n"
        "batch_size: 10\ndevices: cpu\nbench:\n  steps: 4\n")
    out = run(["bench", "--config-dir", str(conf), "--config-name", "train"], tmp_path)
    assert out.returncode == 0, out.stderr
    [summary] = summaries(tmp_path / "outputs")
    [coordinator] = summary["stats"]["coordinators"]
    assert coordinator["batches"] == 4 and coordinator["bytes"] == 4 * 10 * (3 * 4 + 8)
    # and a shipped config with a user group option
    out = run(["bench", "--config-dir", str(conf), "source=ones", "--cfg", "job"], tmp_path)
    assert out.returncode == 0, out.stderr
    assert yaml.safe_load(out.stdout)["source"]["_target_"] == "fakes:fetch_ones"


def test_multirun_sweep_ends_with_one_comparison_table(tmp_path):
    out = run(["bench", "-m", "workers.count=1,2", "bench.steps=3", "batch_size=16"], tmp_path)
    assert out.returncode == 0, out.stderr
    assert "inputkit bench sweep" in out.stdout
    table = out.stdout[out.stdout.index("inputkit bench sweep"):]
    assert "workers.count=1" in table and "workers.count=2" in table and "100%" in table
    points = summaries(tmp_path / "multirun")
    assert len(points) == 2
    assert sorted(p["config"]["workers"]["count"] for p in points) == [1, 2]


def test_a_bad_sweep_point_is_refused_before_any_point_runs(tmp_path):
    out = run(["bench", "-m", "workers.count=2,0", "bench.steps=2"], tmp_path)
    assert out.returncode == 2
    assert out.stderr.strip() == "error: workers.count: must be at least 1, got 0"
    assert not summaries(tmp_path)


@pytest.mark.parametrize("override, message", [
    ("batch_size=0", "error: batch_size: must be at least 1, got 0"),
    ("workers.count=0", "error: workers.count: must be at least 1, got 0"),
    ("devices=tpu", "error: devices: unknown device 'tpu'"),
    ("source._target_=nowhere.mod:fetch", "error: source._target_: cannot import module 'nowhere.mod'"),
    ("batchsize=3", "error: batchsize: unknown key"),
    ("batch_size=many", "error: batch_size: Value 'many'"),
    ("+source.colour=red", "error: source: inputkit.sources.synthetic.SyntheticSource rejected"),
    ("source=missing", "error: source: no config named 'missing'"),
])
def test_bad_overrides_exit_2_with_one_line_naming_the_key(tmp_path, override, message):
    out = run(["bench", override], tmp_path)
    assert out.returncode == 2, (out.stdout, out.stderr)
    lines = out.stderr.strip().splitlines()
    assert lines == [lines[0]] and lines[0].startswith(message), out.stderr
    assert "Traceback" not in out.stderr
    assert not (tmp_path / "outputs").exists() or not summaries(tmp_path / "outputs")


def test_a_failing_fetch_exits_1_with_its_error_and_worker_traceback(tmp_path):
    (tmp_path / "conf" / "source").mkdir(parents=True)
    (tmp_path / "conf" / "source" / "raising.yaml").write_text("_target_: fakes:Raising\nafter: 2\n")
    out = run(["bench", "--config-dir", str(tmp_path / "conf"), "source=raising", "devices=cpu"],
              tmp_path)
    assert out.returncode == 1
    assert out.stderr.startswith("error: KeyError: 'record")
    assert "raised in worker" in out.stderr and "fakes.py" in out.stderr


def test_help_lists_bench_and_does_not_import_torch(tmp_path):
    env = {**os.environ, "PYTHONPATH": str(TESTS)}
    out = subprocess.run([sys.executable, "-X", "importtime", "-m", "inputkit", "--help"],
                         cwd=tmp_path, env=env, capture_output=True, text=True, timeout=60)
    assert out.returncode == 0
    assert "bench" in out.stdout
    imported = [line.rsplit("|", 1)[-1].strip() for line in out.stderr.splitlines() if "|" in line]
    assert "inputkit.cli" in imported
    assert not [m for m in imported if m == "torch" or m.startswith("torch.")]
    out = run(["bench", "--help"], tmp_path)
    assert out.returncode == 0 and "--config-dir" in out.stdout


def test_console_script_entry_point(tmp_path):
    exe = shutil.which("inputkit", path=str(Path(sys.executable).parent))
    assert exe, "the inputkit console script is installed beside this python"
    out = subprocess.run([exe, "bench", "bench.steps=2", "devices=cpu"], cwd=tmp_path,
                         capture_output=True, text=True, timeout=120, stdin=subprocess.DEVNULL)
    assert out.returncode == 0, out.stderr
    assert summaries(tmp_path / "outputs")


@pytest.mark.parametrize("sig, code, word", [("SIGINT", 130, "interrupted"),
                                           ("SIGTERM", 143, "terminated")])
def test_a_signal_stops_cleanly_prints_the_partial_summary_and_exits(tmp_path, sig, code, word):
    import signal
    import time

    env = {**os.environ, "PYTHONPATH": str(TESTS), "PYTHONUNBUFFERED": "1", "COLUMNS": "200"}
    proc = subprocess.Popen([sys.executable, "-m", "inputkit", "bench", "bench.seconds=60",
                             "devices=cpu"], cwd=tmp_path, env=env, stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE, text=True, stdin=subprocess.DEVNULL)
    try:
        assert proc.stdout is not None
        banner = proc.stdout.readline()
        assert banner.startswith("inputkit bench:"), banner
        time.sleep(0.5)
        proc.send_signal(getattr(signal, sig))
        stdout, stderr = proc.communicate(timeout=10)
    finally:
        proc.kill()
    assert proc.returncode == code, stderr
    assert "interrupted after" in stdout and "0:cpu" in stdout
    assert f"{word}: the pipeline was stopped cleanly" in stderr and "Traceback" not in stderr


def test_a_process_worker_sweep_runs_through_multirun(tmp_path):
    out = run(["bench", "-m", "workers=processes", "workers.count=1,2", "bench.steps=5",
               "batch_size=32", "devices=cpu"], tmp_path)
    assert out.returncode == 0, out.stderr
    points = summaries(tmp_path / "multirun")
    assert sorted(p["config"]["workers"]["count"] for p in points) == [1, 2]
    for point in points:
        [coordinator] = point["stats"]["coordinators"]
        assert coordinator["workers"]["kind"] == "process" and coordinator["batches"] == 5
        assert len(coordinator["workers"]["pids"]) == point["config"]["workers"]["count"]


@pytest.mark.timeout(180)
def test_compare_prints_inputkit_every_peer_and_the_limit(tmp_path):
    out = run(["compare", "-w", "w1", "-w", "w3", "--seconds", "0.3", "--no-startup"], tmp_path,
              timeout=170)
    assert out.returncode == 0, out.stderr
    table = out.stdout
    for text in ["inputkit (2 thread workers)", "inputkit (inline: the consumer's thread fetches)",
                 "DataLoader in-process (num_workers=0)",
                 "DataLoader per-item (2 procs)", "DataLoader chunks (8 procs)",
                 "torchdata.nodes (8 threads)",
                 "limit: 8 workers x 256 samples / 20 ms", "vs best peer"]:
        assert text in table, text
    assert "goal" not in table and "MISSED" not in table
    assert "measuring W1" in out.stderr


def test_compare_rejects_an_unknown_workload(tmp_path):
    out = run(["compare", "-w", "w9"], tmp_path)
    assert out.returncode == 2
    assert out.stderr.strip() == "error: --workload: unknown workload(s) w9; choose from w1, w2, w3, w4, w5"


@pytest.mark.parametrize("extra, batches, samples", [
    (["epoch.count=3", "bench.seconds=600"], 3 * 8, 3 * 500),  # every epoch, then the end
    (["epoch.count=null", "bench.seconds=null", "bench.steps=35"], 35, 4 * 500 + 3 * 64),
], ids=["three-epochs", "endless-epochs-until-steps"])
def test_bench_runs_every_epoch_of_a_finite_indexable_source(tmp_path, extra, batches, samples):
    """500 samples in batches of 64 (7 full and one of 52 per epoch): bench goes on past the
    first epoch until the last one, or bench.steps when the epochs never end."""
    out = run(["bench", "experiment=finite", "source.length=500", "batch_size=64",
               "devices=cpu", *extra], tmp_path)
    assert out.returncode == 0, out.stderr
    [summary] = summaries(tmp_path / "outputs")
    [coordinator] = summary["stats"]["coordinators"]
    assert (coordinator["batches"], coordinator["samples"]) == (batches, samples)
    assert coordinator["finished"] == ("epoch.count=3" in extra)


def test_a_new_source_target_from_an_experiment_or_the_command_line_runs(tmp_path):
    """Item 9: the new _target_ does not inherit the synthetic source's fields, chunk_size..."""
    conf = tmp_path / "conf"
    (conf / "experiment").mkdir(parents=True)
    (conf / "experiment" / "mine.yaml").write_text(
        "# @package _global_\nsource:\n  _target_: fakes:fetch_ones\n  width: 3\n"
        "devices: cpu\nbench:\n  steps: 3\n")
    out = run(["bench", "--config-dir", str(conf), "experiment=mine"], tmp_path)
    assert out.returncode == 0, out.stderr
    [summary] = summaries(tmp_path / "outputs")
    assert summary["config"]["source"] == {"_target_": "fakes:fetch_ones", "width": 3}
    out = run(["bench", "--cfg", "job", "source._target_=fakes.RandomChunks", "+source.length=50"],
              tmp_path)
    assert out.returncode == 0, out.stderr
    assert yaml.safe_load(out.stdout)["source"] == {"_target_": "fakes.RandomChunks", "length": 50}


@pytest.mark.timeout(120)
def test_ctrl_c_with_a_thread_stuck_in_fetch_exits_130_with_the_summary(tmp_path):
    """The stuck thread cannot be stopped; Ctrl-C still gives the partial summary and 130,
    and the thread is named in a warning instead of turning the run into an error."""
    import signal

    marker = tmp_path / "stuck"
    (tmp_path / "conf" / "source").mkdir(parents=True)
    (tmp_path / "conf" / "source" / "hangs.yaml").write_text(
        f"_target_: fakes:HangsAfter\nafter: 3\nmarker: {marker}\n")
    env = {**os.environ, "PYTHONPATH": str(TESTS), "PYTHONUNBUFFERED": "1", "COLUMNS": "200"}
    env.pop("HYDRA_FULL_ERROR", None)
    proc = subprocess.Popen([sys.executable, "-m", "inputkit", "bench", "--config-dir",
                             str(tmp_path / "conf"), "source=hangs", "devices=cpu",
                             "workers.kind=thread", "workers.count=1", "batch_size=4",
                             "bench.seconds=300", "bench.plot=false"],
                            cwd=tmp_path, env=env, stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE, text=True, stdin=subprocess.DEVNULL)
    try:
        assert proc.stdout is not None
        banner = proc.stdout.readline()
        assert banner.startswith("inputkit bench:"), banner
        seen = [banner]
        for line in proc.stdout:  # a progress line: the bench is watching the pipeline
            seen.append(line)
            if "batches/s" in line and marker.exists():
                break
        assert marker.exists(), ("the fetch never got stuck", seen)
        proc.send_signal(signal.SIGINT)
        stdout, stderr = proc.communicate(timeout=40)
    finally:
        proc.kill()
    assert proc.returncode == 130, stderr
    assert "interrupted after" in stdout and "0:cpu" in stdout, (stdout, stderr)
    assert "did not stop" in stdout and "inputkit-main-0-fetch-0" in stdout, stdout
    assert "still inside fetch of fakes:HangsAfter" in stdout
    assert "interrupted" in stderr and "Traceback" not in stderr
    assert "stopped cleanly" not in stderr and "1 thread(s) stuck in the source" in stderr, stderr


@pytest.mark.timeout(90)
def test_ctrl_c_while_the_auto_probe_waits_on_a_stuck_fetch_exits_130_at_once(tmp_path):
    """workers.kind=auto times fetches before the run; one that never returns must not take
    Ctrl-C with it: exit 130 with a line saying where it was, and no traceback."""
    import signal

    marker = tmp_path / "stuck"
    (tmp_path / "conf" / "source").mkdir(parents=True)
    (tmp_path / "conf" / "source" / "hangs.yaml").write_text(
        f"_target_: fakes:HangsAfter\nafter: 1\nmarker: {marker}\n")
    env = {**os.environ, "PYTHONPATH": str(TESTS), "PYTHONUNBUFFERED": "1", "COLUMNS": "200"}
    env.pop("HYDRA_FULL_ERROR", None)
    proc = subprocess.Popen([sys.executable, "-m", "inputkit", "bench", "--config-dir",
                             str(tmp_path / "conf"), "source=hangs", "devices=cpu",
                             "workers.kind=auto", "batch_size=4", "bench.seconds=300",
                             "bench.plot=false"],
                            cwd=tmp_path, env=env, stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE, text=True, stdin=subprocess.DEVNULL)
    try:
        deadline = time.monotonic() + 60
        while not marker.exists() and proc.poll() is None and time.monotonic() < deadline:
            time.sleep(0.05)  # polling for the stuck fetch's marker, not a barrier
        assert marker.exists(), proc.communicate(timeout=5)
        proc.send_signal(signal.SIGINT)
        stdout, stderr = proc.communicate(timeout=30)
    finally:
        proc.kill()
        proc.communicate()
    assert proc.returncode == 130, (stdout, stderr)
    assert "interrupted while workers.kind=auto probed fakes:HangsAfter" in stderr, stderr
    assert "Traceback" not in stderr, stderr


def _invoke(args: list[str], columns: str = "80"):
    """The CLI in-process through typer's CliRunner: stdout is not a terminal."""
    from typer.testing import CliRunner

    from inputkit.cli import app

    return CliRunner().invoke(app, args, env={"COLUMNS": columns}, prog_name="inputkit")


@pytest.mark.parametrize("command", [[], ["bench"], ["plan"], ["sources"], ["compare"]])
def test_help_shows_no_doc_markup_and_no_file_a_pip_install_lacks(command):
    """Item 12: no reST double backticks in --help, and no pointer to docs/ as if it were there."""
    result = _invoke([*command, "--help"], columns="200")
    assert result.exit_code == 0, result.output
    assert "``" not in result.output and ":class:" not in result.output, result.output
    for line in result.output.splitlines():
        if "docs/" in line:
            assert "source repository" in line, line


def test_version_flag_prints_the_installed_version():
    import inputkit

    result = _invoke(["--version"])
    assert result.exit_code == 0, result.output
    assert result.output.strip() == f"inputkit {inputkit.__version__}"


def test_sources_off_a_terminal_prints_whole_names_one_source_per_block():
    """Item 12: a narrow non-terminal output does not fold targets into fragments."""
    result = _invoke(["sources"], columns="40")
    assert result.exit_code == 0, result.output
    lines = result.output.splitlines()
    assert any(line.startswith("synthetic: inputkit.sources.synthetic.SyntheticSource")
               for line in lines), result.output
    assert "inputkit.sources.arrays.ArraySource" in result.output
    assert "``" not in result.output and "┃" not in result.output
    assert any("chunk_size=64" in line for line in lines)


def test_sources_through_a_pipe_is_plain_too(tmp_path):
    out = run(["sources"], tmp_path)
    assert out.returncode == 0, out.stderr
    assert "shards: inputkit.sources.shards.ShardSource" in out.stdout

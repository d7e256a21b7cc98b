"""Signals and exits: Ctrl-C is never swallowed by inputkit's cleanup, SIGTERM leaves no warning,
and multiprocessing's helper processes do not outlive the program that started them."""

from __future__ import annotations

import contextlib
import gc
import os
import random
import select
import signal
import subprocess
import sys
import time
from pathlib import Path

import psutil
import pytest
from conftest import alive, make_cfg, wait_for_no_pipeline_threads

from inputkit import Runner

SYN = "inputkit.sources.synthetic.SyntheticSource"
ROOT = Path(__file__).resolve().parent.parent


def proc_cfg(**top):
    # Exact chunks: each batch is a view of one shared-memory slot, freed by the consumer.
    source = {"_target_": SYN, "fields": {"x": {"shape": [4]}}, "chunk_size": 8}
    return make_cfg(source, batch_size=8, workers={"kind": "process", "count": 2,
                                                   "start_method": "forkserver"}, **top)


class PythonCalls:
    """Records the Python functions of inputkit (and weakref's finalizers) called in this thread.

    A signal handler runs between two Python bytecodes of the main thread. Code that runs
    in a finalizer, ``__del__`` or a weakref callback cannot let a KeyboardInterrupt out
    (Python prints "Exception ignored in ..." and goes on), so cleanup that a consumer's
    ``del batch`` or a garbage collection triggers must run no Python code there at all.
    """

    def __init__(self) -> None:
        self.calls: list[str] = []

    def __enter__(self) -> PythonCalls:
        sys.setprofile(self._profile)
        return self

    def __exit__(self, *exc: object) -> None:
        sys.setprofile(None)

    def _profile(self, frame, event, arg) -> None:
        if event == "call":
            path = frame.f_code.co_filename
            if "inputkit" in path or path.endswith("weakref.py"):
                self.calls.append(f"{Path(path).name}:{frame.f_code.co_name}")


def test_freeing_a_batch_that_views_a_slot_runs_no_python_code_in_the_consumer():
    with Runner(proc_cfg()) as runner:
        stream = runner.device(0)
        batch = next(stream)
        assert runner.stats().coordinators[0].copied_batches == 0, "the batch views a slot"
        with PythonCalls() as seen:
            del batch  # the last view of its slot: the slot goes back to the workers
        assert seen.calls == []
        for _ in range(50):  # and slots do come back: the workers keep producing
            next(stream)


def test_a_garbage_collected_runner_is_stopped_without_python_code_in_the_collecting_thread():
    runner = Runner(proc_cfg()).start()
    next(runner.device(0))
    pids = list(runner.coordinators()[0].workers.stats().pids)
    with PythonCalls() as seen:
        del runner
        gc.collect()  # the runner is in reference cycles (its streams point back to it)
    assert seen.calls == []
    assert wait_for_no_pipeline_threads(10) == [], "the pipeline is stopped all the same"
    deadline = time.monotonic() + 10
    while time.monotonic() < deadline and alive(pids):
        time.sleep(0.05)
    assert alive(pids) == [], "its worker processes are gone"


SCRIPT_CFG = """
import inputkit
cfg = {"source": {"_target_": "inputkit.sources.synthetic.SyntheticSource",
                  "fields": {"x": {"shape": [4]}}, "chunk_size": 8},
       "devices": "cpu", "batch_size": 8,
       "workers": {"kind": "process", "count": 2, "start_method": "forkserver"}}
"""  # the pipeline the scripts below run: 2 process workers

LOOP = SCRIPT_CFG + """
import sys
if __name__ == "__main__":
    for round in range(int(sys.argv[1])):
        with inputkit.Runner(cfg) as runner:
            kept = []
            try:
                for step, batch in enumerate(runner.device(0)):
                    if step == 1:
                        print("ready", round, flush=True)
                    kept.append(batch)  # a loop that keeps a few batches, then drops them
                    if len(kept) > 4:
                        kept.clear()
            except KeyboardInterrupt:
                print("interrupted", round, flush=True)
    print("done", flush=True)
"""


def _line(stream, seconds: float) -> str:
    ready, _, _ = select.select([stream], [], [], seconds)
    return stream.readline() if ready else ""


def test_every_ctrl_c_interrupts_a_loop_fed_by_process_workers(tmp_path):
    """Repeated SIGINT at random moments into an embedded loop: each one interrupts it."""
    script = tmp_path / "loop.py"
    script.write_text(LOOP)
    rounds = 10
    lost = []
    with subprocess.Popen([sys.executable, str(script), str(rounds)], cwd=tmp_path,
                          stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True) as child:
        try:
            for round in range(rounds):
                assert _line(child.stdout, 30) == f"ready {round}\n"
                time.sleep(random.uniform(0.0, 0.3))
                child.send_signal(signal.SIGINT)
                line = _line(child.stdout, 2.0)
                if line == "":  # swallowed: the loop went on; interrupt it again to go on testing
                    lost.append(round)
                    child.send_signal(signal.SIGINT)
                    line = _line(child.stdout, 30)
                assert line == f"interrupted {round}\n"
            assert _line(child.stdout, 30) == "done\n"
        finally:
            child.kill()
            stderr = child.stderr.read()
    assert lost == [], f"Ctrl-C was lost in rounds {lost}:\n{stderr}"
    assert "Exception ignored" not in stderr, stderr


TERM = """
import sys
import inputkit
cfg = {"source": {"_target_": "inputkit.sources.synthetic.SyntheticSource",
                  "fields": {"x": {"shape": [4]}}, "chunk_size": 8},
       "devices": "cpu", "batch_size": 8,
       "workers": {"kind": "process", "count": 2, "start_method": sys.argv[1]}}
if __name__ == "__main__":
    with inputkit.Runner(cfg) as runner:
        for step, batch in enumerate(runner.device(0)):
            if step == 1:
                print("ready", flush=True)
"""


@pytest.mark.parametrize("method", ["forkserver", "fork"])
def test_sigterm_to_an_embedding_script_leaves_no_warning_and_no_segment(tmp_path, method):
    """SIGTERM's default action ends the script at once, with no cleanup: nothing may be left
    for the resource tracker to unlink (it warns about "leaked shared_memory" when it does)."""
    script = tmp_path / "train.py"
    script.write_text(TERM)
    with subprocess.Popen([sys.executable, str(script), method], cwd=tmp_path, text=True,
                          stdout=subprocess.PIPE, stderr=subprocess.PIPE) as child:
        assert _line(child.stdout, 30) == "ready\n"
        pids = [p.pid for p in psutil.Process(child.pid).children(recursive=True)]
        child.send_signal(signal.SIGTERM)
        # Read until every process that shares the pipes (workers, tracker) has closed them.
        _, stderr = child.communicate(timeout=30)
    assert child.returncode == -signal.SIGTERM
    assert "leaked" not in stderr and "resource_tracker" not in stderr, stderr
    left = [n for n in os.listdir("/dev/shm") if n.startswith(f"inputkit_{child.pid}_")]
    assert left == [], "the segment was freed"
    deadline = time.monotonic() + 10
    while time.monotonic() < deadline and alive(pids):
        time.sleep(0.05)
    assert alive(pids) == [], "the workers noticed their parent was gone and exited"


# multiprocessing's helpers ----------------------------------------------------------------------

def _helpers_of(pid: int) -> dict[int, str]:
    """The forkserver and resource tracker ``pid`` started: {pid: which}. (Workers forked by
    the forkserver are its children and share its command line.)"""
    found = {}
    try:
        for child in psutil.Process(pid).children():
            with contextlib.suppress(psutil.Error):
                line = " ".join(child.cmdline())
                for which in ("forkserver", "resource_tracker"):
                    if which in line:
                        found[child.pid] = which
    except psutil.NoSuchProcess:
        pass
    return found


def _helpers_left_after_run(args: list[str], cwd: Path) -> tuple[dict[int, str], dict[int, str]]:
    """Run ``args``; the helpers seen while it ran, and those still alive the moment it exited."""
    seen: dict[int, str] = {}
    with subprocess.Popen(args, cwd=cwd, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE,
                          stdin=subprocess.DEVNULL, text=True) as child:
        deadline = time.monotonic() + 120
        while child.poll() is None and time.monotonic() < deadline:
            seen.update(_helpers_of(child.pid))
            time.sleep(0.02)
        assert child.wait(5) == 0, child.stderr.read()
        left = {pid: which for pid, which in seen.items() if alive([pid])}
    return seen, left


EXITS = SCRIPT_CFG + """
if __name__ == "__main__":
    with inputkit.Runner(cfg) as runner:
        for step, batch in enumerate(runner.device(0)):
            if step == 200:
                break
"""


def test_the_forkserver_and_resource_tracker_end_before_an_embedding_script_exits(tmp_path):
    script = tmp_path / "train.py"
    script.write_text(EXITS)
    seen, left = _helpers_left_after_run([sys.executable, str(script)], tmp_path)
    assert sorted(seen.values()) == ["forkserver", "resource_tracker"], "inputkit started both"
    assert left == {}, "they were stopped before the script exited"


def test_the_forkserver_and_resource_tracker_end_before_inputkit_bench_exits(tmp_path):
    seen, left = _helpers_left_after_run(
        [sys.executable, "-m", "inputkit", "bench", "workers=processes", "bench.seconds=1",
         "devices=cpu", "hydra.run.dir=.", "hydra.output_subdir=null"], tmp_path)
    assert "forkserver" in seen.values()
    assert left == {}, "they were stopped before inputkit exited"

"""Ray workers beyond one local Ray: a Ray that inputkit starts and stops itself (the CLI, Ctrl-C),
addresses that do not answer, Ray missing, and a two-node cluster on this machine
(``ray.cluster_utils.Cluster``) where an actor is killed and a node stopped mid-epoch.

Every Ray here runs on this machine; no test points at another host.
"""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import sys
import threading
import time
from pathlib import Path
from typing import Any

import numpy as np
import psutil
import pytest
from conftest import alive, make_cfg, ray_processes

ray = pytest.importorskip("ray", reason="Ray is not installed: pip install 'inputkit-ml[ray]'")

from inputkit import Runner  # noqa: E402
from inputkit.errors import ConfigError, InputkitError  # noqa: E402

pytestmark = pytest.mark.timeout(150)

TESTS = str(Path(__file__).parent)


def env() -> dict[str, str]:
    return {**os.environ, "PYTHONPATH": TESTS, "PYTHONUNBUFFERED": "1", "COLUMNS": "200"}


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def descendants(pid: int) -> set[int]:
    try:
        return {p.pid for p in psutil.Process(pid).children(recursive=True)}
    except psutil.Error:
        return set()


def cmdline(pid: int) -> str:
    try:
        return " ".join(psutil.Process(pid).cmdline())
    except psutil.Error:
        return ""


def shm() -> set[str]:
    return set(os.listdir("/dev/shm"))


# -- addresses, and Ray missing (no Ray is started) ------------------------------------------


def test_an_address_that_does_not_answer_fails_in_seconds_naming_the_key():
    assert not ray.is_initialized()
    port = free_port()  # nothing listens there
    cfg = make_cfg({"_target_": "inputkit.sources.synthetic.SyntheticSource",
                    "fields": {"x": {"shape": [2]}}},
                   workers={"kind": "ray", "count": 1,
                            "ray": {"address": f"127.0.0.1:{port}", "connect_timeout": 1.5}})
    begin = time.monotonic()
    with pytest.raises(InputkitError, match=r"workers\.ray\.address.*no Ray cluster answers"):
        Runner(cfg).start()
    assert time.monotonic() - begin < 30
    assert not ray.is_initialized()


def test_num_cpus_with_a_cluster_address_is_a_config_error():
    from inputkit.config.spec import load_spec

    with pytest.raises(ConfigError, match=r"workers\.ray\.num_cpus"):
        load_spec(make_cfg({"_target_": "x:y"}, workers={"kind": "ray",
                                                         "ray": {"address": "auto", "num_cpus": 4}}))
    with pytest.raises(ConfigError, match=r"workers\.ray\.inflight_bytes: must be a positive size"):
        load_spec(make_cfg({"_target_": "x:y"}, workers={"kind": "ray", "ray": {"inflight_bytes": 0}}))


def test_ray_missing_says_how_to_install_it(tmp_path):
    script = ("import sys; sys.modules['ray'] = None\n"
              "from inputkit import Runner\n"
              "cfg = {'source': {'_target_': 'inputkit.sources.synthetic.SyntheticSource', "
              "'fields': {'x': {'shape': [2]}}}, 'devices': 'cpu', "
              "'workers': {'kind': 'ray', 'count': 1}}\n"
              "try:\n    Runner(cfg).start()\nexcept Exception as exc:\n    print(exc)\n")
    out = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True,
                         timeout=60, env=env(), cwd=tmp_path)
    assert "pip install 'inputkit-ml[ray]'" in out.stdout and "workers.kind" in out.stdout, out


# -- a Ray that inputkit starts itself --------------------------------------------------------


def test_bench_starts_a_private_local_ray_and_ctrl_c_leaves_nothing_behind(tmp_path):
    before = shm()
    proc = subprocess.Popen(
        [sys.executable, "-m", "inputkit", "bench", "workers=ray", "workers.count=2",
         "bench.seconds=60", "devices=cpu", "source.latency_ms=1"],
        cwd=tmp_path, env=env(), stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
        stdin=subprocess.DEVNULL)
    spawned: set[int] = set()
    seen = []
    try:
        assert proc.stdout is not None
        deadline = time.monotonic() + 90
        while time.monotonic() < deadline:
            line = proc.stdout.readline()
            seen.append(line)
            spawned |= descendants(proc.pid)
            if "batches/s" in line:
                break
        assert any("batches/s" in line for line in seen), seen
        spawned |= descendants(proc.pid)
        names = set()
        for pid in spawned:
            try:
                names.add(" ".join(psutil.Process(pid).cmdline()))
            except psutil.Error:
                continue
        assert any("raylet" in n for n in names), "the run started its own local Ray"
        proc.send_signal(signal.SIGINT)
        stdout, stderr = proc.communicate(timeout=60)
    finally:
        proc.kill()
    assert proc.returncode == 130, stderr[-3000:]
    assert "interrupted after" in stdout
    deadline = time.monotonic() + 30
    while alive(list(spawned)) and time.monotonic() < deadline:
        time.sleep(0.2)
    assert not alive(list(spawned)), "Ray processes left behind: " + ", ".join(
        map(str, alive(list(spawned))))
    assert shm() - before == set(), "shared-memory files left in /dev/shm"


def test_an_embedded_runner_shuts_down_the_ray_it_started(tmp_path):
    script = """
import ray
from inputkit import Runner
cfg = {'source': {'_target_': 'faulty:Indexed', 'length': 400}, 'devices': 'cpu',
       'batch_size': 50, 'epoch': {'chunk_size': 50},
       'workers': {'kind': 'ray', 'count': 2, 'ray': {'num_cpus': 2}}}
with Runner(cfg) as runner:
    assert ray.is_initialized()
    ids = sorted(int(i) for b in runner.device(0) for i in b['id'])
    stats = runner.stats().coordinators[0].workers.ray
print('ids', ids == list(range(400)), 'local', stats.local, 'up-after', ray.is_initialized())
print('first batch', runner.stats().coordinators[0].first_batch_s is not None)
"""
    out = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True,
                         timeout=120, env=env(), cwd=tmp_path)
    assert "ids True local True up-after False" in out.stdout, out.stderr[-3000:]
    assert "first batch True" in out.stdout


# -- a two-node cluster on this machine -------------------------------------------------------


@pytest.fixture(scope="module")
def cluster() -> Any:
    """A head node and one worker node (2 CPUs each), both on this machine."""
    from ray.cluster_utils import Cluster

    old = os.environ.get("PYTHONPATH")
    os.environ["PYTHONPATH"] = TESTS  # the nodes' workers import the tests' sources
    try:
        made = Cluster(initialize_head=True,
                       head_node_args={"num_cpus": 2, "include_dashboard": False})
        worker = made.add_node(num_cpus=2)
        made.wait_for_nodes()
    finally:
        if old is None:
            os.environ.pop("PYTHONPATH", None)
        else:
            os.environ["PYTHONPATH"] = old
    ray.init(address=made.address, log_to_driver=False, configure_logging=False)
    yield made, worker
    started = ray_processes()
    ray.shutdown()
    made.shutdown()
    deadline = time.monotonic() + 30
    while alive(list(started)) and time.monotonic() < deadline:
        time.sleep(0.2)
    assert not alive(list(started)), "the cluster's processes left running: " + "; ".join(
        f"{pid} {cmdline(pid)[:150]}" for pid in alive(list(started)))


def cluster_cfg(length: int, **extra: Any) -> dict[str, Any]:
    return make_cfg({"_target_": "faulty:Indexed", "length": length, "sleep_ms": 15},
                    batch_size=50, epoch={"chunk_size": 50, "shuffle": True},
                    queue={"capacity": 2, "batch_capacity": 1},
                    workers={"kind": "ray", "count": 2, "ray": {"cpus_per_actor": 1}}, **extra)


def test_work_spreads_over_both_nodes(cluster):
    _, worker = cluster
    with Runner(cluster_cfg(1500)) as runner:
        ids = np.concatenate([b["id"].numpy() for b in runner.device(0)])
        stats = runner.stats().coordinators[0].workers.ray
    assert sorted(ids.tolist()) == list(range(1500))
    nodes = {a.node_id for a in stats.actors if a.samples}
    assert len(nodes) == 2 and worker.node_id in nodes, stats.actors
    assert len(stats.nodes) == 2


def test_an_actor_killed_and_a_node_stopped_mid_epoch_lose_and_repeat_nothing(cluster):
    made, worker = cluster
    cfg = cluster_cfg(4000, failures={"on_worker_death": "restart"})
    seen = []
    killed: int | None = None
    removed = threading.Event()
    with Runner(cfg) as runner:
        for batch in runner.device(0):
            seen.append(batch["id"].numpy().copy())
            if len(seen) == 5:  # one actor's process dies
                actors = runner.stats().coordinators[0].workers.ray.actors
                killed = next(a.pid for a in actors if a.node_id == made.head_node.node_id)
                os.kill(killed, signal.SIGKILL)
            if len(seen) == 20:  # then the whole worker node stops
                made.remove_node(worker)
                removed.set()
        workers = runner.stats().coordinators[0].workers
    ids = np.concatenate(seen)
    assert killed is not None and removed.is_set()
    assert len(ids) == 4000 and sorted(ids.tolist()) == list(range(4000)), \
        "a sample was lost or delivered twice"
    assert workers.restarts >= 2, workers.last_error
    assert {a.node_id for a in workers.ray.actors if a.state != "dead"} == {made.head_node.node_id}


def test_spilling_is_reported_in_the_stats(tmp_path):
    # A Ray whose object store (80 MiB) is too small for what the program holds spills the
    # rest to disk; the pool's stats say how much.
    script = """
import numpy as np, ray
from inputkit import Runner
ray.init(address='local', num_cpus=2, include_dashboard=False, log_to_driver=False,
         object_store_memory=80 * 2**20)
held = [ray.put(np.ones(30 * 2**20, np.uint8)) for _ in range(5)]
cfg = {'source': {'_target_': 'faulty:Indexed', 'length': 200}, 'devices': 'cpu',
       'batch_size': 50, 'epoch': {'chunk_size': 50},
       'workers': {'kind': 'ray', 'count': 1, 'ray': {'cpus_per_actor': 0.5}}}
with Runner(cfg) as runner:
    n = sum(len(b['id']) for b in runner.device(0))
    spilled = runner.stats().coordinators[0].workers.ray.spilled_bytes
print('samples', n, 'spilled', spilled)
ray.shutdown()
"""
    out = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True,
                         timeout=120, env=env(), cwd=tmp_path)
    words = out.stdout.split()
    assert words[:2] == ["samples", "200"], out.stderr[-3000:]
    assert int(words[3]) >= 30 * 2**20, out.stdout

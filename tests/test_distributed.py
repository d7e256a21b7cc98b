"""Ranks under torchrun: each rank reads a disjoint share, and together they cover every sample."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
from conftest import make_cfg

from inputkit import ConfigError, Runner
from inputkit.pipeline.distributed import RankInfo, rank_info

ROOT = Path(__file__).resolve().parent.parent
SOURCE = {"_target_": "inputkit.sources.synthetic.SyntheticSource", "fields": {"x": {"shape": [2]}},
          "length": 1000, "id_field": "id"}


@pytest.mark.timeout(120)
def test_torchrun_ddp_example_trains_on_disjoint_complete_shards(tmp_path):
    out = subprocess.run(
        [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node=2",
         str(ROOT / "examples" / "train_ddp.py"), "--out", str(tmp_path), "--length", "3000",
         "--epochs", "2", "--batch-size", "50"],
        capture_output=True, text=True, timeout=300, cwd=tmp_path)
    assert out.returncode == 0, out.stdout[-2000:] + out.stderr[-3000:]
    for epoch in range(2):
        shares = [np.load(tmp_path / f"ids_rank{r}_epoch{epoch}.npy") for r in range(2)]
        assert all(len(s) for s in shares), "both ranks trained"
        assert not set(shares[0].tolist()) & set(shares[1].tolist()), "disjoint"
        assert sorted(np.concatenate(shares).tolist()) == list(range(3000)), "complete"
    assert "rank 1/2 epoch 1" in out.stdout


def ids_of_rank(monkeypatch, rank: int, world: int, devices: int, workers: str = "thread"):
    monkeypatch.setenv("RANK", str(rank))
    monkeypatch.setenv("WORLD_SIZE", str(world))
    monkeypatch.setenv("LOCAL_RANK", str(rank))
    cfg = make_cfg(SOURCE, batch_size=32, devices=["cpu"] * devices,
                   workers={"kind": workers, "count": 2}, epoch={"chunk_size": 13})
    got = []
    with Runner(cfg) as runner:
        assert runner.rank == RankInfo(rank, world, rank)
        for step in runner.steps():
            got.extend(i for b in step if b is not None for i in b["id"].tolist())
    return got


@pytest.mark.parametrize("world,devices", [(2, 1), (3, 2)])
def test_ranks_and_their_devices_split_an_epoch_exactly(monkeypatch, world, devices):
    shares = [ids_of_rank(monkeypatch, r, world, devices) for r in range(world)]
    assert sorted(sum(shares, [])) == list(range(1000))
    assert all(shares)


def test_fetch_sources_shard_worker_ids_across_ranks(monkeypatch):
    seen = []
    for rank in range(2):
        monkeypatch.setenv("RANK", str(rank))
        monkeypatch.setenv("WORLD_SIZE", "2")
        endless = {k: v for k, v in SOURCE.items() if k != "length"}  # a fetch source
        cfg = make_cfg(endless, batch_size=10, distributed="auto")
        with Runner(cfg) as runner:
            seen.append([w for c in runner.coordinators() for w in c.workers._ids])
    assert seen == [[0, 1, 2, 3], [4, 5, 6, 7]], "rank r's workers take ids r*count .. of 2*count"


def test_distributed_off_ignores_the_environment(monkeypatch):
    monkeypatch.setenv("RANK", "1")
    monkeypatch.setenv("WORLD_SIZE", "2")
    assert rank_info("off") == RankInfo()
    cfg = make_cfg(SOURCE, batch_size=100, distributed="off")
    with Runner(cfg) as runner:
        ids = [i for b in runner.device(0) for i in b["id"].tolist()]
    assert sorted(ids) == list(range(1000))


def test_a_bad_rank_environment_names_the_variable(monkeypatch):
    monkeypatch.setenv("WORLD_SIZE", "two")
    with pytest.raises(ConfigError, match=r"distributed: environment variable WORLD_SIZE='two'"):
        rank_info()
    monkeypatch.setenv("WORLD_SIZE", "2")
    monkeypatch.setenv("RANK", "5")
    with pytest.raises(ConfigError, match=r"RANK=5 is not in 0..WORLD_SIZE-1"):
        rank_info()
    with pytest.raises(ConfigError, match="distributed: unknown mode 'on'"):
        Runner(make_cfg(SOURCE, distributed="on"))


# Three interpreters (the sweep and two joblib workers) each import torch and Hydra: 51 s idle
# in a fresh CI venv, over 110 s while the rest of the suite loads both cores. A hang guard.
@pytest.mark.timeout(330)
def test_a_sweep_runs_through_hydras_joblib_launcher(tmp_path):
    out = subprocess.run(
        [sys.executable, "-m", "inputkit", "bench", "-m", "hydra/launcher=joblib",
         "hydra.launcher.n_jobs=2", "workers.count=1,2", "bench.seconds=0.5", "devices=cpu",
         f"hydra.sweep.dir={tmp_path}/sweep"],
        capture_output=True, text=True, timeout=110, cwd=tmp_path)
    assert out.returncode == 0, out.stderr[-3000:]
    launcher = (tmp_path / "sweep" / "0" / ".hydra" / "hydra.yaml").read_text()
    assert "hydra_plugins.hydra_joblib_launcher" in launcher, "Hydra's joblib launcher ran it"
    assert "workers.count=1" in out.stdout and "workers.count=2" in out.stdout  # the sweep table

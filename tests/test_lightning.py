"""inputkit.lightning under a real Lightning Trainer on CPU: resuming from a checkpoint trains
on every sample of the epoch exactly once (one process, and two DDP processes over gloo),
the loader's len(), and the metrics callback's figures read back from a CSVLogger."""

import csv
import os
import subprocess
import sys
from collections import Counter
from pathlib import Path

import numpy as np
import pytest

pl = pytest.importorskip("lightning.pytorch")
import torch  # noqa: E402

from inputkit.errors import InputkitError  # noqa: E402
from inputkit.lightning import InputkitDataModule, InputkitMetricsCallback  # noqa: E402
from inputkit.lightning.position import merge_ranks, take_back, trained_batches  # noqa: E402

# Lightning 2.6 calls a torch.utils._pytree API that torch 2.13 deprecates.
# The resumed fits leave out the first fit's ModelCheckpoint on purpose (Lightning notes it).
pytestmark = [pytest.mark.filterwarnings("ignore:.*isinstance.treespec, LeafSpec.:FutureWarning"),
              pytest.mark.filterwarnings("ignore:Be aware that when using `ckpt_path`:UserWarning")]

LENGTH, BATCH = 96, 8  # 12 batches an epoch


def cfg(length: int = LENGTH) -> dict:
    return {"source": {"_target_": "synthetic", "length": length, "id_field": "id",
                       "fields": {"x": {"shape": [4]}}},
            "batch_size": BATCH, "devices": "cpu", "epoch": {"shuffle": True, "seed": 5},
            "workers": {"kind": "thread", "count": 2}}


class Recorder(pl.LightningModule):
    """Records (epoch, ids) of every batch its training step finished; raises at one step."""

    def __init__(self, fail_at: int | None = None) -> None:
        super().__init__()
        self.layer = torch.nn.Linear(4, 1)
        self.seen: list[tuple[int, list[int]]] = []
        self.fail_at = fail_at

    def training_step(self, batch, batch_idx):
        if self.global_step == self.fail_at:
            raise RuntimeError("interrupted inside a training step")
        self.seen.append((self.current_epoch, batch["id"].tolist()))
        return self.layer(batch["x"].float()).mean()

    def configure_optimizers(self):
        return torch.optim.SGD(self.parameters(), lr=0.01)


class SaveOnInterrupt(pl.Callback):
    def __init__(self, path: Path) -> None:
        self.path = path

    def on_exception(self, trainer, pl_module, exception):
        trainer.save_checkpoint(self.path)


def trainer(tmp_path: Path, **kw) -> "pl.Trainer":
    options = dict(accelerator="cpu", devices=1, logger=False, enable_progress_bar=False,
                   enable_model_summary=False, default_root_dir=str(tmp_path),
                   num_sanity_val_steps=0)
    options.update(kw)
    return pl.Trainer(**options)


def per_epoch(*runs: list[tuple[int, list[int]]]) -> dict[int, Counter]:
    counts: dict[int, Counter] = {}
    for seen in runs:
        for epoch, ids in seen:
            counts.setdefault(epoch, Counter()).update(ids)
    return counts


def assert_exactly_once(counts: dict[int, Counter], epochs: int, length: int = LENGTH) -> None:
    assert sorted(counts) == list(range(epochs))
    for epoch, c in counts.items():
        twice = sorted(i for i, n in c.items() if n > 1)
        assert not twice, f"epoch {epoch}: samples trained twice: {twice[:10]}"
        assert sorted(c) == list(range(length)), \
            f"epoch {epoch}: {length - len(c)} samples never trained"


@pytest.mark.timeout(120)
def test_fit_resumed_from_a_step_checkpoint_trains_every_sample_once(tmp_path):
    """Stopped at step 15 (epoch 1, batch 3) by max_steps, with a checkpoint written there;
    a new fit from it finishes both epochs: each sample once per epoch across the two runs."""
    ckpt = pl.callbacks.ModelCheckpoint(dirpath=tmp_path / "ckpt", every_n_train_steps=15,
                                        save_top_k=-1)
    first, dm = Recorder(), InputkitDataModule(cfg())
    trainer(tmp_path, max_epochs=2, max_steps=15, callbacks=[ckpt]).fit(first, datamodule=dm)
    assert [len(ids) for _, ids in first.seen] == [BATCH] * 15
    path = tmp_path / "ckpt" / "epoch=1-step=15.ckpt"
    saved = torch.load(path, weights_only=False)
    assert saved["InputkitDataModule"]["trained"] == 3
    assert saved["loops"]["fit_loop"]["state_dict"]["combined_loader"] == \
        [{"kind": "inputkit.lightning.InputkitLoader", "position": "InputkitDataModule.state_dict"}]

    second = Recorder()
    trainer(tmp_path, max_epochs=2).fit(second, datamodule=InputkitDataModule(cfg()),
                                        ckpt_path=str(path))
    assert len(second.seen) == 24 - 15
    assert_exactly_once(per_epoch(first.seen, second.seen), epochs=2)


@pytest.mark.timeout(120)
def test_a_checkpoint_written_inside_a_step_takes_that_batch_back(tmp_path):
    """Interrupted inside step 5 (its batch handed out, not trained), a checkpoint written
    from on_exception (as OnExceptionCheckpoint does): the resumed fit trains that batch, so
    no sample is lost and none comes twice."""
    first = Recorder(fail_at=5)
    saver = SaveOnInterrupt(tmp_path / "interrupted.ckpt")
    dm = InputkitDataModule(cfg())
    with pytest.raises(RuntimeError, match="interrupted inside a training step"):
        trainer(tmp_path, max_epochs=1, callbacks=[saver]).fit(first, datamodule=dm)
    dm.teardown("fit")  # Lightning calls teardown after a successful fit only
    assert len(first.seen) == 5
    state = torch.load(tmp_path / "interrupted.ckpt", weights_only=False)["InputkitDataModule"]
    assert state["trained"] == 5
    entry = state["train"]["runner"]["inputs"]["main"]
    assert entry["samples"] == {0: 5 * BATCH}, "the handed-out, untrained batch is not counted"

    second = Recorder()
    trainer(tmp_path, max_epochs=1).fit(second, datamodule=InputkitDataModule(cfg()),
                                        ckpt_path=str(tmp_path / "interrupted.ckpt"))
    assert_exactly_once(per_epoch(first.seen, second.seen), epochs=1)


@pytest.mark.timeout(240)
def test_ddp_two_processes_resume_every_sample_once(tmp_path):
    """Two ranks under strategy=ddp (gloo, CPU), stopped at step 3 and resumed from the
    checkpoint: the ranks' shares are disjoint and, over both runs, cover the epoch once."""
    script = Path(__file__).with_name("lightning_ddp_script.py")
    env = {k: v for k, v in os.environ.items()
           if k not in ("RANK", "WORLD_SIZE", "LOCAL_RANK", "NODE_RANK", "MASTER_PORT")}
    env["PYTHONPATH"] = os.pathsep.join([str(script.parent.parent), env.get("PYTHONPATH", "")])

    def run(*args: str) -> None:
        done = subprocess.run([sys.executable, str(script), str(tmp_path), *args], env=env,
                              capture_output=True, text=True, timeout=200)
        assert done.returncode == 0, done.stderr[-3000:]

    run("first", "3")
    run("second", "-1", str(tmp_path / "ckpt" / "epoch=0-step=3.ckpt"))
    ids = {}
    for tag in ("first", "second"):
        for rank in (0, 1):
            lines = (tmp_path / f"ids-{tag}-rank{rank}.txt").read_text().split("\n")
            ids[tag, rank] = [int(i) for line in lines if line for i in line.split()]
    assert [len(ids["first", r]) for r in (0, 1)] == [3 * BATCH] * 2
    assert [len(ids["second", r]) for r in (0, 1)] == [5 * BATCH] * 2
    rank0 = ids["first", 0] + ids["second", 0]
    rank1 = ids["first", 1] + ids["second", 1]
    assert not set(rank0) & set(rank1), "both ranks trained on the same samples"
    everything = Counter(rank0 + rank1)
    assert sorted(everything) == list(range(128)) and set(everything.values()) == {1}


@pytest.mark.timeout(60)
def test_len_is_the_batches_of_an_epoch_on_this_rank():
    dm = InputkitDataModule(cfg(100))
    assert len(dm.train_dataloader()) == 13  # 100 samples in batches of 8: 12 and one of 4
    dm.teardown("fit")


@pytest.mark.timeout(120)
def test_the_callback_logs_the_inputs_figures_to_a_csv_logger(tmp_path):
    logger = pl.loggers.CSVLogger(tmp_path, name="run")
    callback = InputkitMetricsCallback(every_s=0)
    trainer(tmp_path, max_epochs=1, logger=logger, log_every_n_steps=1,
            callbacks=[callback]).fit(Recorder(), datamodule=InputkitDataModule(cfg()))
    with open(Path(logger.log_dir) / "metrics.csv") as f:
        rows = list(csv.DictReader(f))
    assert len(rows) == 12, "one row per step (every_s=0)"
    rates = [float(r["input/samples_per_s"]) for r in rows]
    assert all(rate > 0 for rate in rates)
    fills = [float(r["input/main/0/batches/fill"]) for r in rows]
    assert all(0.0 <= fill <= 1.0 for fill in fills)
    waits = [float(r["input/main/0/consumer_wait"]) for r in rows]
    assert all(0.0 <= w <= 1.0 for w in waits)


def test_the_callback_refuses_negative_seconds():
    with pytest.raises(Exception, match=r"InputkitMetricsCallback\(every_s=...\)"):
        InputkitMetricsCallback(every_s=-1)


# the position's pure parts ----------------------------------------------------------------

def _state(epoch: int, masks: dict[int, np.ndarray]) -> dict:
    length = len(next(iter(masks.values())))
    return {"version": 1, "inputs": {"input": {
        "resumable": True, "length": length, "epoch": epoch, "shuffle": True, "seed": 0,
        "consumed": {e: np.packbits(m).tobytes() for e, m in masks.items()},
        "samples": {e: int(m.sum()) for e, m in masks.items()}}}}


def test_take_back_clears_the_batches_samples_and_can_go_back_an_epoch():
    mask = np.zeros(16, bool)
    mask[:8] = True
    back = take_back(_state(0, {0: mask}), "input", [(0, np.array([6, 7]))], lambda e: None)
    assert back["inputs"]["input"]["samples"] == {0: 6}
    # the epoch ended after the batch was handed out: the state returns to epoch 0
    full = np.ones(16, bool)
    back = take_back(_state(1, {1: np.zeros(16, bool)}), "input", [(0, np.array([15]))],
                     lambda e: full)
    entry = back["inputs"]["input"]
    assert entry["epoch"] == 0 and entry["samples"] == {0: 15, 1: 0}


def test_merge_ranks_unions_the_masks_and_refuses_different_epochs():
    a, b = np.zeros(8, bool), np.zeros(8, bool)
    a[:2], b[4:6] = True, True
    merged = merge_ranks([_state(0, {0: a}), _state(0, {0: b})])
    assert merged["inputs"]["input"]["samples"] == {0: 4}
    with pytest.raises(InputkitError, match="ranks stand in different epochs"):
        merge_ranks([_state(0, {0: a}), _state(1, {1: b})])


def test_trained_batches_follows_lightnings_restart_rule():
    class P:
        def __init__(self, ready, started, processed, completed):
            self.ready, self.started, self.processed, self.completed = \
                ready, started, processed, completed

    assert trained_batches(P(5, 5, 5, 4)) == 5  # written in on_train_batch_end
    assert trained_batches(P(5, 5, 5, 5)) == 5  # written after the step's end
    assert trained_batches(P(6, 6, 5, 5)) == 5  # written inside step 6


def test_without_rank_or_a_process_group_the_rank_is_refused(monkeypatch):
    """Lightning's launcher sets WORLD_SIZE and LOCAL_RANK but no RANK: the rank then comes
    from torch.distributed; with no process group either, guessing rank 0 would be wrong."""
    from inputkit.errors import ConfigError
    from inputkit.pipeline.distributed import rank_info

    monkeypatch.delenv("RANK", raising=False)
    monkeypatch.setenv("WORLD_SIZE", "2")
    with pytest.raises(ConfigError, match="WORLD_SIZE=2 is set but RANK is not"):
        rank_info("auto")

"""Embedding: a training script composes a config and trains from runner.device(0)."""

from __future__ import annotations

import torch

import inputkit


def test_train_a_tiny_model_from_runner_device_0():
    torch.manual_seed(0)
    cfg = inputkit.compose(overrides=[
        "batch_size=32", "devices=cpu", "workers.count=2",
        "source=tiny", "source.fields.x.shape=[8]", "source.chunk_size=24",
        "+source.fields.label={shape:[],dtype:int64}",
    ])
    model = torch.nn.Linear(8, 4)
    optimiser = torch.optim.SGD(model.parameters(), lr=0.1)
    losses = []
    with inputkit.Runner(cfg) as runner:
        for step, batch in enumerate(runner.device(0)):
            assert set(batch) == {"x", "label"}
            x = batch["x"]
            # A learnable target: a function of which inputs exceed 0.5.
            y = (x[:, 0] > 0.5).long() + 2 * (x[:, 1] > 0.5).long()
            loss = torch.nn.functional.cross_entropy(model(x), y)
            optimiser.zero_grad()
            loss.backward()
            optimiser.step()
            losses.append(loss.item())
            if step == 199:
                break
        stats = runner.stats()
    assert len(losses) == 200
    assert sum(losses[-20:]) / 20 < sum(losses[:20]) / 20, "the model learned from the batches"
    assert stats.coordinators[0].batches == 200


def test_data_parallel_steps_give_one_batch_per_device():
    cfg = inputkit.compose(overrides=["devices=[cpu,cpu]", "batch_size=16",
                                      "source.fields.image.shape=[2]", "bench.steps=3"])
    with inputkit.Runner(cfg) as runner:
        for step, batches in enumerate(runner.steps()):
            assert len(batches) == 2
            assert all(b["image"].shape == (16, 2) for b in batches)
            if step == 10:
                break


def test_a_users_own_dictconfig_works_without_hydra():
    from omegaconf import OmegaConf

    cfg = OmegaConf.create({
        "source": {"_target_": "inputkit.sources.synthetic.SyntheticSource",
                   "fields": {"x": {"shape": [3], "dtype": "float32"}},
                   "length": 100, "id_field": "id"},
        "batch_size": 25, "devices": "cpu",
    })
    with inputkit.Runner(cfg) as runner:
        ids = torch.cat([b["id"] for b in runner.device(0)])
    assert sorted(ids.tolist()) == list(range(100))

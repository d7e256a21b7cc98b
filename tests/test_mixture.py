"""source=mixture: proportions, each component's own epochs, determinism, resume, bad input."""

from __future__ import annotations

import numpy as np
import pytest
from conftest import make_cfg

from inputkit import ConfigError, Runner, SourceError
from inputkit.sources.mixture import Mixture, Schedule

SYN = "inputkit.sources.synthetic.SyntheticSource"
MIX = "inputkit.sources.mixture.Mixture"


def part(length: int, weight: float, name: str, dim: int = 2) -> dict:
    return {"name": name, "weight": weight,
            "source": {"_target_": SYN, "fields": {"x": {"shape": [dim], "dtype": "float32"}},
                       "length": length, "id_field": "id"}}


def mixture_cfg(parts: list[dict], **top) -> dict:
    source = {"_target_": MIX, "components": parts, "seed": top.pop("seed", 0)}
    source.update(top.pop("source", {}))
    return make_cfg(source, **top)


def stream(cfg: dict, epochs: int = 1) -> list[tuple[int, int]]:
    """(component, id) of every sample of ``epochs`` epochs, in the order received."""
    out = []
    with Runner(cfg) as runner:
        for _ in range(epochs):
            for batch in runner.device(0):
                out.extend(zip(batch["component"].tolist(), batch["id"].tolist(), strict=True))
    return out


def test_proportions_over_10000_batches_are_within_sampling_error():
    weights = [0.6, 0.3, 0.1]
    schedule = Schedule(weights, [50_000, 20_000, 7_000], length=100_000, seed=3)
    batches, batch_size = 10_000, 32
    positions = np.arange(batches * batch_size)
    epochs, within = np.divmod(positions, 100_000)
    which = np.concatenate([schedule.locate(within[epochs == e], int(e))[0]
                            for e in np.unique(epochs)])
    counts = np.bincount(which, minlength=3)
    n = len(positions)
    for c, w in enumerate(weights):
        sigma = np.sqrt(n * w * (1 - w))
        assert abs(counts[c] - n * w) < 4 * sigma, (c, counts[c], n * w, sigma)
    # and over short spans too: every 1,000 batches
    spans = which.reshape(10, -1)
    for span in spans:
        share = np.bincount(span, minlength=3) / len(span)
        assert np.all(np.abs(share - weights) < 4 * np.sqrt(np.array(weights) * 0.9 / len(span)))


def test_the_consumer_sees_the_weights_and_stats_count_each_component():
    cfg = mixture_cfg([part(4000, 0.75, "web"), part(1000, 0.25, "code")], batch_size=50)
    with Runner(cfg) as runner:
        seen = [c for b in runner.device(0) for c in b["component"].tolist()]
        counts = runner.stats().coordinators[0].components
    assert counts == {"web": seen.count(0), "code": seen.count(1)}
    assert len(seen) == 5334  # ceil(4000 / 0.75): web read about once
    assert abs(seen.count(1) / len(seen) - 0.25) < 4 * np.sqrt(0.25 * 0.75 / len(seen))


def test_each_component_keeps_its_own_epochs():
    mixture = Mixture([part(1000, 0.5, "big"), part(100, 0.5, "small")], seed=1)
    assert len(mixture) == 2000  # the big corpus is read about once an epoch
    out = mixture.read(np.arange(len(mixture)), epoch=0)
    small = np.bincount(out["id"][out["component"] == 1], minlength=100)
    big = np.bincount(out["id"][out["component"] == 0], minlength=1000)
    assert small.max() - small.min() <= 1 and small.min() >= 8, "whole rounds of the small one"
    assert big.max() <= 2 and (big > 0).sum() >= 950
    # The next mixture epoch goes on where this one left the components.
    after = mixture.schedule.positions(1, None, mixture.names)
    assert after["small"]["samples_read"] == int((out["component"] == 1).sum())
    assert after["small"]["epoch"] == after["small"]["samples_read"] // 100


def test_the_sequence_does_not_depend_on_workers(tmp_path):
    parts = [part(600, 0.5, "a"), part(300, 0.3, "b"), part(90, 0.2, "c")]
    one = stream(mixture_cfg(parts, batch_size=32, workers={"kind": "thread", "count": 1},
                             epoch={"ordered": True, "shuffle": True, "seed": 4}))
    two = stream(mixture_cfg(parts, batch_size=32, workers={"kind": "process", "count": 2},
                             epoch={"ordered": True, "shuffle": True, "seed": 4}))
    assert one == two and len(one) == 1200


def test_resume_mid_epoch_continues_the_exact_sequence():
    parts = [part(500, 0.6, "web"), part(80, 0.4, "code")]
    common = {"batch_size": 25, "workers": {"kind": "thread", "count": 2},
              "epoch": {"ordered": True, "shuffle": True, "count": 2}}
    whole = stream(mixture_cfg(parts, **common), epochs=2)
    first = []
    with Runner(mixture_cfg(parts, **common)) as runner:
        for i, batch in enumerate(runner.device(0)):
            first.extend(zip(batch["component"].tolist(), batch["id"].tolist(), strict=True))
            if i == 11:
                break
        state = runner.state_dict()
    positions = state["inputs"]["main"]["components"]
    assert positions["web"]["samples_read"] + positions["code"]["samples_read"] == len(first)
    assert positions["code"]["epoch"] == positions["code"]["samples_read"] // 80
    resumed = Runner(mixture_cfg(parts, **common))
    resumed.load_state_dict(state)
    rest = []
    with resumed:
        for _ in range(2):
            for batch in resumed.device(0):
                rest.extend(zip(batch["component"].tolist(), batch["id"].tolist(), strict=True))
    assert first + rest == whole


@pytest.mark.parametrize("parts, key, text", [
    ([{**part(10, 1.0, "a"), "weight": -1}], r"components\[0\]\.weight", "0 or more"),
    ([{**part(10, 1.0, "a"), "weight": "lots"}], r"components\[0\]\.weight", "a number"),
    ([part(10, 0.0, "a"), part(10, 0.0, "b")], r"source\.components", "sum to 0"),
    ([part(10, 1.0, "a"), part(10, 1.0, "a")], r"source\.components", "share a name"),
    ([{"name": "a", "weight": 1.0, "source": {"_target_": SYN, "fields": {"x": {"shape": [2]}}}}],
     r"components\[0\]\.source", "read by fetch"),
    ([{"name": "a", "weight": 1.0}], r"components\[0\]\.source", "source config"),
])
def test_bad_components_are_config_errors_naming_the_key(parts, key, text):
    with pytest.raises(ConfigError, match=key) as info:
        Mixture(parts)
    assert text in str(info.value)


def test_an_empty_component_or_different_fields_name_the_component(tmp_path):
    empty = {"name": "void", "weight": 1.0,
             "source": {"_target_": "faulty:Indexed", "length": 0}}
    with pytest.raises(SourceError, match=r"components\[1\] \(void\) is empty"):
        Mixture([part(10, 1.0, "a"), empty])
    with pytest.raises(SourceError, match=r"components\[1\] \(wide\) gives fields"):
        Mixture([part(10, 1.0, "a"), part(10, 1.0, "wide", dim=3)])
    with pytest.raises(ConfigError, match="component_field"):
        Mixture([part(10, 1.0, "a")], component_field="id")


@pytest.mark.timeout(240)  # three runs of the example in subprocesses: 51-67 s at load ~11
def test_the_pretraining_example_resumes_with_exactly_the_windows_of_an_uninterrupted_run(
        tmp_path):
    import subprocess
    import sys
    from pathlib import Path

    script = Path(__file__).resolve().parents[1] / "examples" / "pretrain_mixture.py"

    def run(out: Path, *extra: str) -> str:
        done = subprocess.run([sys.executable, str(script), "--data", str(tmp_path / "tok"),
                               "--out", str(out), "--steps", "30", *extra],
                              capture_output=True, text=True, timeout=120)
        assert done.returncode == 0, done.stderr[-3000:]
        return done.stdout

    def steps(out: Path) -> dict[int, str]:  # a step redone after the checkpoint: the last one
        lines = (out / "steps.txt").read_text().splitlines()
        return {int(line.split(" ", 1)[0]): line.split(" ", 1)[1] for line in lines}

    whole = run(tmp_path / "whole")
    assert "done: 30 steps" in whole and "'web'" in whole
    assert "stopped at step 17" in run(tmp_path / "crashed", "--stop-at", "17")
    resumed = run(tmp_path / "crashed")
    assert "resumed at step 15" in resumed and "done: 30 steps" in resumed
    assert steps(tmp_path / "crashed") == steps(tmp_path / "whole")

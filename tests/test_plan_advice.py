"""Every fix the memory plan prints is valid for the source in use, and fits (issue item 12).

``inputkit plan queue.capacity=64GiB`` used to print its chunk queue as "1 byte limit x
68.7 GB" and a fix "keep queue.capacity=1 with chunks of at most 78,092 samples
(source.chunk_size)": a key the user never set, that image_folder rejects, and a
capacity of one chunk where the user had set a byte limit. Here each printed fix is
applied as a command-line override and the plan made again: it must build and fit.
"""

from __future__ import annotations

import re
from pathlib import Path

import pytest
from imagefiles import write_folder

import inputkit
from inputkit.config.compose import compose
from inputkit.planning.memory import plan_memory

FIX = re.compile(r"\b[Ss]et (\S+)=(\S+) or less\b")
BUDGET = "memory.budget=2GB"


def plan_of(overrides: list[str], devices: tuple[str, ...] | None = None):
    """The plan on the config's devices (auto: the CPU here), or on ``devices``."""
    return plan_memory(inputkit.load_spec(compose(overrides)), devices=devices)


def fixes(plan) -> list[tuple[str, str]]:
    """The ``key=value`` of every printed fix; each sentence names exactly one."""
    found = []
    for tip in plan.suggestions:
        settings = FIX.findall(tip)
        assert len(settings) == 1, f"a fix without exactly one 'set KEY=VALUE or less': {tip!r}"
        found.append(settings[0])
    return found


@pytest.fixture(scope="module")
def images(tmp_path_factory) -> Path:
    return write_folder(tmp_path_factory.mktemp("plan_images"), classes=2, per_class=3)


def cases(images: Path) -> dict[str, list[str]]:
    folder = ["source=image_folder", f"source.path={images}"]
    indexed = ["source._target_=faulty.Indexed", "+source.length=100000", "+source.dim=4000"]
    return {
        "synthetic, byte capacity": ["queue.capacity=64GiB", BUDGET],
        "image folder, byte capacity": [*folder, "queue.capacity=64GiB", BUDGET],
        "image folder, count capacity": [*folder, "queue.capacity=600", BUDGET],
        "image folder, processes": [*folder, "workers=processes", "queue.capacity=600", BUDGET],
        "caffe2 incident": ["experiment=caffe2_oom", "memory.budget=64GiB"],
        "finite synthetic": ["source.length=100000", "epoch.chunk_size=50000", BUDGET],
        "indexable, big chunks": [*indexed, "epoch.chunk_size=20000", "batch_size=64", BUDGET],
        "many workers": [*indexed, "workers.count=400", "queue.capacity=1", "batch_size=1024",
                         BUDGET],
        "byte batch queue": ["queue.batch_capacity=64GiB", BUDGET],
    }


CASES = ["synthetic, byte capacity", "image folder, byte capacity", "image folder, count capacity",
         "image folder, processes", "caffe2 incident", "finite synthetic",
         "indexable, big chunks", "many workers", "byte batch queue"]


@pytest.mark.parametrize("case", CASES)
def test_each_printed_fix_applied_on_the_command_line_fits(case, images):
    overrides = cases(images)[case]
    plan = plan_of(overrides)
    assert plan.over_budget
    found = fixes(plan)
    assert found, f"no fix offered: {plan.suggestions}"
    for key, value in found:
        fixed = plan_of([*[o for o in overrides if not o.startswith(f"{key}=")], f"{key}={value}"])
        assert not fixed.over_budget, f"{key}={value} does not fit: {fixed.host_bytes:,} B"


def test_a_byte_capacity_reads_as_a_limit_and_gets_a_byte_limit_fix(images):
    plan = plan_of(["source=image_folder", f"source.path={images}", "queue.capacity=64GiB",
                    BUDGET])
    queue = next(t for t in plan.terms if t.stage == "chunk queue")
    assert queue.holds() == "up to 68.7 GB (queue.capacity=64GiB, at least one chunk)"
    assert queue.formula() == queue.holds()
    keys = [key for key, _ in fixes(plan)]
    assert keys == ["queue.capacity"]
    assert not any("chunk_size" in tip for tip in plan.suggestions)


def test_smaller_chunks_are_offered_through_the_key_the_source_takes(images):
    caffe2 = fixes(plan_of(["experiment=caffe2_oom", "memory.budget=64GiB"]))
    assert [key for key, _ in caffe2] == ["queue.capacity", "source.chunk_size"]
    finite = fixes(plan_of(["source.length=100000", "epoch.chunk_size=50000", BUDGET]))
    assert "epoch.chunk_size" in [key for key, _ in finite]
    folder = plan_of(["source=image_folder", f"source.path={images}", "queue.capacity=600",
                      BUDGET])
    assert not any("source.chunk_size" in tip for tip in folder.suggestions)


def test_a_gpu_budget_fix_lowers_device_prefetch():
    overrides = ["device.prefetch=8", "memory.gpu_budget=20MB", "memory.budget=64GiB"]
    plan = plan_of(overrides, devices=("cuda:0",))
    assert plan.over_budget and plan.host_bytes <= plan.budget_bytes
    (key, value), = fixes(plan)
    assert key == "device.prefetch"
    fixed = plan_of([o for o in overrides if not o.startswith("device.prefetch")]
                    + [f"device.prefetch={value}"], devices=("cuda:0",))
    assert not fixed.over_budget
    higher = plan_of([o for o in overrides if not o.startswith("device.prefetch")]
                     + [f"device.prefetch={int(value) + 1}"], devices=("cuda:0",))
    assert higher.over_budget, "the fix is the largest prefetch that fits"

"""A kind registered by a test or plugin is configured and planned without edits elsewhere.

``workers.kind`` is checked against the kind registry (not a schema Enum), and the planner
asks the kind for its memory terms (inputkit.kinds.plan.KindPlan).
"""

from __future__ import annotations

from collections.abc import Iterator, Sequence

import pytest

from inputkit import ConfigError, compose, kinds, load_spec
from inputkit.config.spec import InputSpec
from inputkit.kinds.plan import shared_source
from inputkit.planning.memory import plan_memory
from inputkit.planning.plan_lines import HOST, SampleLayout, Term

SOURCE = ["source=synthetic", "devices=cpu", "batch_size=8", "+source.chunk_size=8"]


class SpoolPlan:
    """A test kind's own terms: a spool of 3 chunks per worker, and one line per run."""

    in_consumer = False
    worker_processes = False

    def worker_terms(self, inp: InputSpec, layout: SampleLayout, on_gpu: bool) -> list[Term]:
        return [Term(inp.name, "spool", HOST, 3 * inp.worker_count, "chunks", layout.chunk_bytes,
                     inp.key_prefix + "workers.count", layout.chunk_detail),
                shared_source(inp, layout)]

    def run_terms(self, inputs: Sequence[InputSpec]) -> list[Term]:
        return [Term(inputs[0].name, "spool daemon", HOST, 1, "set", 1000, "workers.kind",
                     "one per run", per_device=False)]


def _unused_pool(*args: object, **kwargs: object) -> None:
    raise AssertionError("the planner must not build a pool")


@pytest.fixture
def test_kinds() -> Iterator[None]:
    kinds.register(kinds.Kind(name="spool", summary="test kind with its own plan",
                              source_here=True, make_pool=_unused_pool, plan=SpoolPlan()))
    kinds.register(kinds.Kind(name="borrowed", summary="test kind planned as threads",
                              source_here=True, make_pool=_unused_pool))
    kinds.register(kinds.Kind(name="remote", summary="test kind elsewhere, no plan",
                              source_here=False, make_pool=_unused_pool))
    yield
    for name in ("spool", "borrowed", "remote"):
        kinds.unregister(name)


def test_unknown_kind_names_the_key_and_the_registered_kinds(test_kinds: None) -> None:
    with pytest.raises(ConfigError) as info:
        load_spec(compose([*SOURCE, "workers.kind=fiber"]))
    assert info.value.key == "workers.kind"
    for name in ("thread", "inline", "process", "ray", "spool", "borrowed"):
        assert name in str(info.value)


def test_a_named_input_names_its_own_key() -> None:
    with pytest.raises(ConfigError) as info:
        load_spec({"source": {"_target_": "inputkit.sources.synthetic.SyntheticSource"},
                   "inputs": {"train": {"workers": {"kind": "fiber"}}}})
    assert info.value.key == "inputs.train.workers.kind"


def test_a_registered_kind_is_configured_and_planned_with_its_own_terms(test_kinds: None) -> None:
    spec = load_spec(compose([*SOURCE, "workers.kind=spool", "workers.count=2"]))
    assert spec.inputs[0].worker_kind == "spool"
    plan = plan_memory(spec, devices=("cpu",))
    stages = [t.stage for t in plan.terms]
    assert stages[:2] == ["spool", "source"]
    spool = plan.terms[0]
    assert spool.count == 6 and spool.unit_bytes == plan.layouts["main"].chunk_bytes > 0
    assert "spool daemon" in stages and "batch queue" in stages
    assert "chunk queue" not in stages


def test_a_kind_without_a_plan_is_planned_as_threads_when_its_workers_are_here(
        test_kinds: None) -> None:
    borrowed = plan_memory(load_spec(compose([*SOURCE, "workers.kind=borrowed"])),
                           devices=("cpu",))
    thread = plan_memory(load_spec(compose([*SOURCE, "workers.kind=thread"])), devices=("cpu",))
    assert [(t.stage, t.bytes) for t in borrowed.terms] == \
        [(t.stage, t.bytes) for t in thread.terms]


def test_a_kind_elsewhere_without_a_plan_is_refused_by_the_planner(test_kinds: None) -> None:
    spec = load_spec(compose([*SOURCE, "workers.kind=remote"]))
    with pytest.raises(ConfigError, match="declares no memory terms") as info:
        plan_memory(spec, devices=("cpu",))
    assert info.value.key == "workers.kind"


def test_builtin_overrides_still_compose() -> None:
    assert load_spec(compose([*SOURCE, "workers=ray"])).inputs[0].worker_kind == "ray"
    assert load_spec(compose([*SOURCE, "workers.kind=inline"])).inputs[0].worker_kind == "inline"

"""Sources: the synthetic source, the _target_ loader, and chunk checking."""

from __future__ import annotations

import threading

import numpy as np
import pytest

from inputkit import ConfigError, SourceError, SourceExhausted, SyntheticSource
from inputkit.pipeline.chunk import ChunkSchema
from inputkit.sources import build_source

SYN = "inputkit.sources.synthetic.SyntheticSource"


def test_synthetic_chunks_have_declared_fields_and_fresh_memory():
    src = SyntheticSource(fields={"img": {"shape": [3, 4], "dtype": "uint8"},
                                  "y": {"shape": [], "dtype": "int64"}}, chunk_size=5)
    a, b = src.fetch(0, 99), src.fetch(1, 99)
    assert a["img"].shape == (5, 3, 4) and a["img"].dtype == np.uint8
    assert a["y"].shape == (5,) and a["y"].dtype == np.int64
    assert not np.shares_memory(a["img"], b["img"])


def test_synthetic_chunk_size_none_uses_the_hint_and_ranges_include_zero():
    src = SyntheticSource(fields={"x": {"shape": [1]}}, chunk_size=None)
    assert len(src.fetch(0, 13)["x"]) == 13
    ranged = SyntheticSource(fields={"x": {"shape": [1]}}, chunk_size=0, chunk_size_max=3, seed=1)
    sizes = {len(ranged.fetch(0, 8)["x"]) for _ in range(200)}
    assert sizes == {0, 1, 2, 3}


def test_finite_synthetic_hands_out_every_id_once_across_threads():
    src = SyntheticSource(fields={}, id_field="id", length=5000, chunk_size=0, chunk_size_max=37)
    seen: list[np.ndarray] = []
    lock = threading.Lock()

    def worker(wid: int) -> None:
        while True:
            try:
                ids = src.fetch(wid, 16)["id"]
            except SourceExhausted:
                return
            with lock:
                seen.append(ids)

    threads = [threading.Thread(target=worker, args=(i,)) for i in range(4)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(10)
    assert sorted(np.concatenate(seen).tolist()) == list(range(5000))


@pytest.mark.parametrize("kwargs, text", [
    ({"fields": {"x": {"dtype": "flot32"}}}, "fields.x.dtype: 'flot32' is not a numpy dtype"),
    ({"fields": {"x": {"shape": [-1]}}}, "fields.x.shape: dimensions must be >= 0"),
    ({"fields": {"x": {"shap": [1]}}}, "fields.x: unknown keys"),
    ({"fields": {}}, "declare at least one field"),
    ({"fields": {"x": {}}, "chunk_size": 0}, "chunk_size: 0 makes every chunk empty"),
    ({"fields": {"x": {}}, "length": -5}, "length: must be >= 0"),
    ({"fields": {"x": {}}, "id_field": "x"}, "id_field 'x' is also declared"),
])
def test_synthetic_rejects_bad_arguments_naming_them(kwargs, text):
    with pytest.raises(ValueError, match=text):
        SyntheticSource(**kwargs)


def test_loader_builds_classes_functions_and_passes_extra_keys():
    cls = build_source({"_target_": SYN, "fields": {"x": {"shape": [2]}}, "chunk_size": 3})
    assert cls.name == SYN and cls.fetch(0, 8)["x"].shape == (3, 2)
    fn = build_source({"_target_": "fakes:fetch_ones", "width": 5})
    assert fn.fetch(7, 4)["x"].shape == (4, 5)
    assert fn.fetch(7, 4)["w"].tolist() == [7, 7, 7, 7]
    dotted = build_source({"_target_": "fakes.fetch_tuple"})
    assert len(dotted.fetch(0, 1)) == 2


@pytest.mark.parametrize("config, key, text", [
    ({"_target_": "no_such_pkg.mod:fetch"}, "source._target_", "cannot import module 'no_such_pkg.mod'"),
    ({"_target_": "fakes:nope"}, "source._target_", "has no attribute 'nope'"),
    ({"_target_": "fakes"}, "source._target_", "neither an importable name"),
    ({"_target_": "fakes:NOT_CALLABLE"}, "source._target_", "is a int"),
    ({"_target_": "fakes:ChunkSchemaless"}, "source._target_", "has no attribute"),
    ({"_target_": SYN, "fields": {"x": {}}, "bogus": 1}, "source", "unexpected keyword argument 'bogus'"),
    ({"_target_": "fakes:fetch_ones", "colour": 1}, "source", "cannot be called as fetch"),
    ({"_target_": "fakes:Returns"}, "source", "rejected its arguments"),
])
def test_loader_errors_name_the_key(config, key, text):
    with pytest.raises(ConfigError, match=text) as info:
        build_source(config)
    assert info.value.key == key


def test_class_without_fetch_is_rejected():
    with pytest.raises(ConfigError, match="has neither fetch"):
        build_source({"_target_": "threading:Lock".replace("Lock", "Event")})


GOOD = {"x": np.zeros((4, 2), np.float32), "y": np.zeros(4, np.int64)}


@pytest.mark.parametrize("kind, field, text", [
    ("none", None, "fetch returned None"),
    ("scalar", "x", "is a scalar"),
    ("list_value", "x", "expected a numpy array, got list"),
    ("ragged", None, r"different leading lengths \(x=4, y=3\)"),
    ("dtype_change", "x", "dtype changed from float32 to float64"),
    ("shape_change", "x", r"per-sample shape changed from \[2\] to \[3\]"),
    ("missing_field", "y", "missing from a chunk"),
    ("object_dtype", "y", "holds Python objects"),
    ("string_dtype", "y", "dtype <U3, which cannot become a tensor"),
])
def test_chunk_schema_explains_bad_fetch_results(kind, field, text):
    from fakes import BAD_OUTPUTS

    schema = ChunkSchema("src")
    assert schema.check(GOOD, 0).n == 4
    with pytest.raises(SourceError, match=text) as info:
        schema.check(BAD_OUTPUTS[kind](), 2)
    assert info.value.source == "src" and info.value.field == field


def test_sequences_become_numbered_fields_and_bare_arrays_are_refused():
    schema = ChunkSchema("s")
    chunk = schema.check((np.zeros((3, 1)), np.ones(3)), 0)
    assert list(chunk.fields) == ["0", "1"] and chunk.n == 3
    with pytest.raises(SourceError, match="bare array"):
        ChunkSchema("s").check(np.zeros((3, 1)), 0)


def test_cpu_ms_spends_thread_cpu_time_so_threads_take_turns():
    import time

    src = SyntheticSource(fields={"x": {"shape": [1]}}, chunk_size=1, cpu_ms=20)
    spent = []

    def work() -> None:
        began = time.thread_time()
        for _ in range(3):
            src.fetch(0, 1)
        spent.append(time.thread_time() - began)

    threads = [threading.Thread(target=work) for _ in range(2)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(10)
    assert len(spent) == 2 and all(s >= 0.06 for s in spent), spent


@pytest.mark.parametrize("target", ["fakes:fetch_ones", "fakes.Slow", "fakes:SHARED_INSTANCE"])
def test_the_probes_advice_to_declare_sizes_works_for_every_source_form(target):
    """Item 10: the advice of an unknown-sizes error, followed as it says, plans and runs for a
    function, a class and an existing object (declared sizes are not passed to the source)."""
    from inputkit import compose, load_spec
    from inputkit.planning.memory import UnknownSampleSizes, plan_memory

    base = [f"source={{_target_:'{target}'}}", "devices=cpu", "memory.probe=false"]
    with pytest.raises(UnknownSampleSizes) as info:
        plan_memory(load_spec(compose(base)))
    advice = "source._fields_={x:{shape:[2],dtype:float32}}"
    assert "source._fields_" in str(info.value), info.value
    spec = load_spec(compose([*base, "+" + advice]))
    plan = plan_memory(spec)
    assert plan.layouts["main"].fields["x"][2] == 8 and plan.layouts["main"].source == "declared"
    source = build_source(spec.inputs[0].source)  # the declaration is not an argument
    assert source.fetch(0, 4)["x"].shape == (4, 2)
    source.close()

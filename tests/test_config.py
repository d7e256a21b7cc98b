"""Composition, overrides and checking: bad values fail with the key named."""

from __future__ import annotations

import pytest

import inputkit
from inputkit import ConfigError, compose, load_spec


def test_default_config_composes_into_a_single_main_input():
    spec = load_spec(compose())
    assert [s.name for s in spec.inputs] == ["main"]
    main = spec.inputs[0]
    # workers: auto (conf/workers/auto.yaml): the runner chooses the kind and count
    assert main.batch_size == 256 and main.worker_kind == "auto" and main.worker_count == 0
    assert main.source["_target_"] == "inputkit.sources.synthetic.SyntheticSource"
    assert spec.devices == ("auto",) and spec.bench_seconds == 10


def test_overrides_with_hydra_grammar():
    cfg = compose(["batch_size=64", "workers.count=2", "devices=[cpu,cpu]",
                   "source.latency_ms=5", "+source.fields.extra={shape:[2],dtype:float32}",
                   "~source.fields.label"])
    spec = load_spec(cfg)
    main = spec.inputs[0]
    assert (main.batch_size, main.worker_count) == (64, 2)
    assert spec.devices == ("cpu", "cpu")
    assert main.source["latency_ms"] == 5
    assert set(main.source["fields"]) == {"image", "extra"}


def test_experiment_group_sets_several_keys():
    spec = load_spec(compose(["experiment=images"]))
    assert spec.inputs[0].batch_size == 64
    assert spec.inputs[0].source["fields"]["image"]["shape"] == [3, 224, 224]
    tiny = load_spec(compose(["experiment=tiny"])).inputs[0]
    assert list(tiny.source["fields"]) == ["x"], "an experiment's source replaces the fields"


def test_named_inputs_inherit_top_level_keys_and_override_their_own():
    spec = load_spec(compose(["experiment=train_val", "workers.count=3"]))
    train, val = spec.input("train"), spec.input("val")
    assert (train.batch_size, train.worker_count) == (256, 3)
    assert (val.batch_size, val.worker_count) == (512, 1)
    assert val.source["length"] == 20000 and train.source["length"] is None
    assert val.key_prefix == "inputs.val."


def test_input_names_must_be_identifiers():
    with pytest.raises(ConfigError, match="must be identifiers") as info:
        load_spec({"source": {"_target_": "a.b:c"}, "inputs": {"bad name": {}}})
    assert info.value.key == "inputs.bad name"


def test_named_input_with_its_own_target_replaces_the_source():
    spec = load_spec({"source": {"_target_": "a.b:c", "x": 1},
                      "inputs": {"val": {"source": {"_target_": "d.e:f"}}}})
    assert spec.input("val").source == {"_target_": "d.e:f"}


@pytest.mark.parametrize("overrides, key, text", [
    (["batch_size=0"], "batch_size", "must be at least 1, got 0"),
    (["workers.count=-2"], "workers.count", "must be at least 1"),
    (["queue.capacity=0"], "queue.capacity", "must be at least 1"),
    (["devices=tpu"], "devices", "unknown device 'tpu'"),
    (["devices=[cpu,gpu7]"], "devices", "unknown device 'gpu7'"),
    (["bench.seconds=-1"], "bench.seconds", "must be positive"),
    (["bench.input=nope"], "bench.input", "no input named 'nope'"),
    (["experiment=train_val", "inputs.val.batch_size=0"], "inputs.val.batch_size",
     "must be at least 1"),
])
def test_out_of_range_values_name_the_key(overrides, key, text):
    with pytest.raises(ConfigError, match=text) as info:
        load_spec(compose(overrides))
    assert info.value.key == key
    assert str(info.value).startswith(f"{key}: ")


@pytest.mark.parametrize("overrides, key, text", [
    (["batchsize=3"], "batchsize", "unknown key"),
    (["+bogus=1"], "bogus", "unknown key"),
    (["workers.cont=3"], "workers.cont", "unknown key"),
    (["batch_size=abc"], "batch_size", "could not be converted to Integer"),
    (["workers.kind=fiber"], "workers.kind", "fiber"),
    (["source=nope"], "source", "no config named 'nope' in group 'source'"),
    (["~bench.seconds"], "bench.seconds", "cannot be deleted"),
    (["batch_size=[1"], "override", "cannot parse"),
])
def test_unknown_keys_wrong_types_and_bad_overrides_name_the_key(overrides, key, text):
    with pytest.raises(ConfigError, match=text) as info:
        load_spec(compose(overrides))
    assert info.value.key == key


def test_plain_dict_config_is_checked_the_same_way():
    with pytest.raises(ConfigError, match="unknown key") as info:
        load_spec({"source": {"_target_": "x.y:z"}, "wokers": {"count": 2}})
    assert info.value.key == "wokers"
    with pytest.raises(ConfigError, match="source._target_: missing"):
        load_spec({"source": {"fields": {}}})


def test_user_config_dir_is_searched_before_ours(tmp_path):
    (tmp_path / "source").mkdir()
    # A user file with the same name as a shipped one wins.
    (tmp_path / "source" / "synthetic.yaml").write_text(
        "_target_: inputkit.sources.synthetic.SyntheticSource\n"
        "fields: {z: {shape: [2], dtype: int32}}\nchunk_size: 3\n")
    (tmp_path / "mine.yaml").write_text(
        "defaults:\n  - base_config\n  - source: synthetic\n  - workers: single\n  - _self_\n"
        "batch_size: 7\n")
    spec = load_spec(compose(config_dir=tmp_path, config_name="mine"))
    assert spec.inputs[0].batch_size == 7 and spec.inputs[0].worker_count == 1
    assert set(spec.inputs[0].source["fields"]) == {"z"}


def test_missing_config_dir_is_a_config_error(tmp_path):
    with pytest.raises(ConfigError, match="does not exist"):
        compose(config_dir=tmp_path / "nope")


def test_importing_inputkit_does_not_import_torch():
    import subprocess
    import sys

    code = "import sys, inputkit; inputkit.compose(); print('torch' in sys.modules)"
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=60)
    assert out.returncode == 0, out.stderr
    assert out.stdout.strip() == "False"
    assert inputkit.__version__


def test_public_api_names_resolve_and_match_all():
    from inputkit import _EXPORTS

    assert set(inputkit.__all__) == set(_EXPORTS) | {"__version__"}
    for name in inputkit.__all__:
        assert getattr(inputkit, name) is not None
    with pytest.raises(AttributeError, match="no attribute 'Nope'"):
        inputkit.Nope  # noqa: B018


def test_worker_processes_import_neither_hydra_omegaconf_nor_torch():
    import subprocess
    import sys

    code = ("import sys, inputkit.workers.process_main\n"
            "print(sorted(m for m in ('hydra', 'omegaconf', 'torch', 'rich', 'typer')"
            " if m in sys.modules))")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=60)
    assert out.returncode == 0, out.stderr
    assert out.stdout.strip() == "[]"


def test_schema_defaults_match_the_runtime_policy_and_epoch_types():
    """The config schema and the checked types that worker processes use declare one default each."""
    import dataclasses

    from inputkit.config.schema import EpochConfig, FailuresConfig
    from inputkit.pipeline.dispatcher import EpochSpec
    from inputkit.pipeline.failures import FailurePolicy

    for schema, runtime in ((FailuresConfig, FailurePolicy), (EpochConfig, EpochSpec)):
        assert dataclasses.asdict(schema()) == dataclasses.asdict(runtime())


# Item 9: a _target_ that changes the source replaces it; it does not inherit the old
# source's arguments (fields, chunk_size, ... of the default synthetic source).

def _experiment(tmp_path, body: str) -> str:
    (tmp_path / "experiment").mkdir(exist_ok=True)
    (tmp_path / "experiment" / "mine.yaml").write_text("# @package _global_\n" + body)
    return "experiment=mine"


def test_experiment_with_a_new_source_target_does_not_inherit_the_default_source(tmp_path):
    choice = _experiment(tmp_path, "source:\n  _target_: fakes.RandomChunks\n  length: 40\n")
    spec = load_spec(compose([choice], config_dir=tmp_path))
    assert spec.inputs[0].source == {"_target_": "fakes.RandomChunks", "length": 40}
    from inputkit.sources.loader import build_source

    build_source(spec.inputs[0].source).close()  # constructs: no unexpected 'fields'


@pytest.mark.parametrize("overrides, expected", [
    (["source._target_=fakes:fetch_ones"], {"_target_": "fakes:fetch_ones"}),
    (["+source.width=3", "source._target_=fakes:fetch_ones"],
     {"_target_": "fakes:fetch_ones", "width": 3}),
    (["source._target_=fakes:fetch_ones", "+source.width=3"],
     {"_target_": "fakes:fetch_ones", "width": 3}),
    (["source={_target_:fakes.RandomChunks,length:9}"],
     {"_target_": "fakes.RandomChunks", "length": 9}),
])
def test_command_line_target_override_replaces_the_source(overrides, expected):
    assert load_spec(compose(overrides)).inputs[0].source == expected


def test_command_line_target_replaces_an_experiments_source(tmp_path):
    choice = _experiment(tmp_path, "source:\n  _target_: fakes.RandomChunks\n  length: 40\n")
    spec = load_spec(compose([choice, "source._target_=fakes:fetch_ones"], config_dir=tmp_path))
    assert spec.inputs[0].source == {"_target_": "fakes:fetch_ones"}


@pytest.mark.parametrize("target", ["synthetic", "inputkit.sources.synthetic.SyntheticSource",
                                    "inputkit.sources.synthetic:SyntheticSource"])
def test_naming_the_same_source_again_keeps_its_arguments(target):
    source = load_spec(compose([f"source._target_={target}", "source.chunk_size=5"])).inputs[0].source
    assert source["_target_"] == target
    assert set(source["fields"]) == {"image", "label"} and source["chunk_size"] == 5


def test_override_source_group_in_an_experiment_file(tmp_path):
    (tmp_path / "source").mkdir()
    (tmp_path / "source" / "ones.yaml").write_text("_target_: fakes:fetch_ones\nwidth: 4\n")
    choice = _experiment(tmp_path, "defaults:\n  - override /source: ones\nbatch_size: 8\n")
    spec = load_spec(compose([choice], config_dir=tmp_path))
    assert spec.inputs[0].source == {"_target_": "fakes:fetch_ones", "width": 4}


def test_a_missing_config_dir_is_named_the_way_the_caller_gave_it(tmp_path):
    """Item 14: from Python the error names compose(config_dir=...), not the CLI's flag."""
    with pytest.raises(ConfigError) as info:
        compose(config_dir=tmp_path / "nope")
    assert info.value.key == "compose(config_dir=...)", str(info.value)
    assert str(info.value).startswith(f"compose(config_dir=...): folder {tmp_path / 'nope'} does not")
    with pytest.raises(ConfigError, match=r"add source/nope\.yaml to your compose\(config_dir=\.\.\.\) "
                       "folder$"):
        compose(["source=nope"])


def _optional_schema_keys() -> list[str]:
    import dataclasses
    import typing

    from inputkit.config.schema import InputkitConfig

    def walk(cls: type, prefix: str) -> typing.Iterator[str]:
        hints = typing.get_type_hints(cls)
        for f in dataclasses.fields(cls):
            kind = hints[f.name]
            if dataclasses.is_dataclass(kind):
                yield from walk(kind, f"{prefix}{f.name}.")
            elif type(None) in typing.get_args(kind):
                yield prefix + f.name
    return [*walk(InputkitConfig, ""), "memory.gpu_budget"]


@pytest.mark.parametrize("key", _optional_schema_keys())
def test_every_key_that_accepts_null_says_so_in_the_configuration_reference(key):
    """Item 14: the docs' list of keys that take null is the schema's (errors.md points here)."""
    from pathlib import Path

    load_spec(compose([f"{key}=null"]))  # accepted
    reference = (Path(__file__).resolve().parent.parent / "docs" / "configuration.md").read_text()
    rows = [line for line in reference.splitlines() if line.startswith(f"| `{key}` |")]
    assert rows and "null" in rows[0], f"docs/configuration.md: no row for {key} that mentions null"

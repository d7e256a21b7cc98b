"""One record per config group: ``failures``, ``epoch`` and ``workers.ray`` are each declared once
(inputkit/config/records.py); the Hydra schema is derived from the record, and the checked
record is built from every key. These tests fail if the two drift apart again: a schema key
that never reaches the record, a default or type written twice, a key order that changes."""

from __future__ import annotations

import dataclasses
import pickle
import typing
from typing import Any

import pytest
from omegaconf import OmegaConf

from inputkit.config.compose import compose
from inputkit.config.records import CONFIG_TYPE, EpochSpec, FailurePolicy, RaySpec
from inputkit.config.schema import EpochConfig, FailuresConfig, InputkitConfig, RayConfig
from inputkit.config.spec import load_spec
from inputkit.errors import ConfigError

SOURCE = {"_target_": "inputkit.sources.synthetic.SyntheticSource"}
# (record, its schema, where its keys live, where InputSpec holds it)
GROUPS = [(FailurePolicy, FailuresConfig, ("failures",), "failures"),
          (EpochSpec, EpochConfig, ("epoch",), "epoch"),
          (RaySpec, RayConfig, ("workers", "ray"), "ray")]
# Per record field: a config value other than the default, and what the record holds for it.
# A field added to a record without a row here fails test_every_field_has_a_case.
CASES: dict[type, dict[str, tuple[Any, Any]]] = {
    FailurePolicy: {"on_error": ("skip", "skip"), "retries": (5, 5), "retry_backoff": (1, 1.0),
                    "on_worker_death": ("restart", "restart"), "max_restarts": (None, None),
                    "fetch_timeout": (2, 2.0), "stall_timeout": (None, None),
                    "on_stall": ("raise", "raise"), "max_consecutive_skips": (7, 7),
                    "max_skip_share": (0.25, 0.25)},
    EpochSpec: {"count": (None, None), "chunk_size": (5, 5), "shuffle": ("SHARDS", "shards"),
                "shuffle_window": (3, 3), "seed": (11, 11), "ordered": (True, True)},
    RaySpec: {"address": (" auto ", "auto"), "num_cpus": (2, 2.0), "cpus_per_actor": (0.5, 0.5),
              "scheduling": ("DEFAULT", "DEFAULT"), "inflight": (4, 4),
              "inflight_bytes": ("1MiB", 1 << 20), "runtime_env": ({"env_vars": {"A": "1"}},
                                                                    {"env_vars": {"A": "1"}}),
              "connect_timeout": (3, 3.0), "start_timeout": (9, 9.0)},
}


def _config(path: tuple[str, ...], key: str, value: Any, named: bool) -> dict[str, Any]:
    cfg: dict[str, Any] = {"source": SOURCE}
    node = cfg.setdefault("inputs", {}).setdefault("train", {}) if named else cfg
    for part in path:
        node = node.setdefault(part, {})
    node[key] = value
    return cfg


@pytest.mark.parametrize(("record", "schema"), [(r, s) for r, s, _, _ in GROUPS])
def test_schema_is_the_record_keys_types_and_defaults(record, schema):
    """The schema has the record's keys in its order, its defaults, and its types except where
    the record declares a looser config type (a size for a byte count)."""
    r_fields, s_fields = dataclasses.fields(record), dataclasses.fields(schema)
    assert [f.name for f in s_fields] == [f.name for f in r_fields]
    assert dataclasses.asdict(schema()) == dataclasses.asdict(record())
    r_hints, s_hints = typing.get_type_hints(record), typing.get_type_hints(schema)
    for f in r_fields:
        assert s_hints[f.name] == f.metadata.get(CONFIG_TYPE, r_hints[f.name]), f.name
    assert not schema.__dataclass_params__.frozen, "Hydra overrides write into the schema"


@pytest.mark.parametrize("record", list(CASES))
def test_every_field_has_a_case(record):
    assert set(CASES[record]) == {f.name for f in dataclasses.fields(record)}


@pytest.mark.parametrize("named", [False, True], ids=["top", "inputs.train"])
@pytest.mark.parametrize(("record", "path", "attr", "key"),
                         [(r, p, a, k) for r, _, p, a in GROUPS for k in CASES[r]])
def test_every_key_reaches_the_record(record, path, attr, key, named):
    """A key set in the config arrives in the checked record; every other field keeps its default."""
    value, expected = CASES[record][key]
    assert expected != getattr(record(), key), "a case must differ from the default"
    built = getattr(load_spec(_config(path, key, value, named)).inputs[0], attr)
    assert isinstance(built, record)
    assert built == dataclasses.replace(record(), **{key: expected})
    assert type(getattr(built, key)) is type(expected), f"{key}: {getattr(built, key)!r}"


def test_the_records_are_the_public_and_pipeline_names():
    """``inputkit.FailurePolicy`` and the names the pipeline imports are the one record."""
    import inputkit
    from inputkit.config import spec
    from inputkit.pipeline import dispatcher, failures

    assert inputkit.FailurePolicy is failures.FailurePolicy is FailurePolicy
    assert dispatcher.EpochSpec is EpochSpec and spec.RaySpec is RaySpec
    assert inputkit.FailurePolicy(on_error="skip", retries=1).retries == 1
    with pytest.raises(dataclasses.FrozenInstanceError):
        FailurePolicy().retries = 2  # type: ignore[misc]


def test_a_bad_key_in_a_derived_group_is_named():
    """Hydra still checks the derived schemas: a misspelt key and a wrong type name the key."""
    with pytest.raises(ConfigError, match=r"^failures\.retrys: unknown key"):
        load_spec({"source": SOURCE, "failures": {"retrys": 2}})
    with pytest.raises(ConfigError, match=r"workers\.ray\.inflight"):
        load_spec(compose(["workers.ray.inflight=many"]))
    with pytest.raises(ConfigError, match=r"^inputs\.val\.epoch\.shuffle: expected false"):
        load_spec({"source": SOURCE, "inputs": {"val": {"epoch": {"shuffle": "sometimes"}}}})


def test_a_composed_config_pickles_with_its_derived_schemas():
    """Hydra's joblib launcher pickles composed configs: the derived classes resolve by name."""
    cfg = OmegaConf.structured(InputkitConfig)
    back = pickle.loads(pickle.dumps(cfg))
    assert OmegaConf.get_type(back.failures) is FailuresConfig
    assert OmegaConf.get_type(back.workers.ray) is RayConfig
    assert pickle.loads(pickle.dumps(EpochConfig())) == EpochConfig()

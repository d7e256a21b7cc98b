"""Source capabilities: declared once (sources/capabilities.py), computed when a source is
bound, refused when misspelt or uncallable, and listed in docs/plugins.md as declared."""

from __future__ import annotations

import re
from pathlib import Path
from typing import Any

import numpy as np
import pytest

from inputkit.errors import ConfigError
from inputkit.sources.capabilities import CAPABILITIES, NAMES, Capabilities
from inputkit.sources.loader import BoundSource, build_source, component_names

DOCS = Path(__file__).resolve().parents[1] / "docs" / "plugins.md"


class Everything:
    """A source with every optional method."""

    def __init__(self) -> None:
        self.calls: list[str] = []

    def __len__(self) -> int:
        return 4

    def read(self, indices: np.ndarray, epoch: int = 0) -> dict[str, np.ndarray]:
        return {"x": np.asarray(indices, np.int64) + epoch}

    def read_into(self, indices: np.ndarray, allocate: Any, epoch: int = 0) -> dict[str, Any]:
        out = allocate("x", (len(indices),), np.int64)
        out[:] = np.asarray(indices) + epoch
        return {"x": out}

    def fetch_into(self, worker_id: int, batch_size_hint: int, allocate: Any) -> dict[str, Any]:
        return {"x": allocate("x", (1,), np.int64)}

    def setup(self, worker_id: int, num_workers: int) -> None:
        self.calls.append(f"setup {worker_id}/{num_workers}")

    def close(self) -> None:
        self.calls.append("close")

    def read_scratch(self) -> tuple[int, str]:
        return 8, "a row"

    def mapped_bytes(self) -> tuple[int, str]:
        return 16, "a file"

    def run_info(self) -> dict[str, Any]:
        return {"n": 4}

    def sample_groups(self) -> np.ndarray:
        return np.zeros(4, np.int64)

    def remote_shards(self) -> None:
        return None

    @classmethod
    def component_names(cls, config: Any) -> tuple[str | None, tuple[str, ...]]:
        return "part", ("a", "b")

    @classmethod
    def component_positions(cls, info: Any, epoch: int, consumed: Any) -> dict[str, Any]:
        return {}


class Plain:
    def __len__(self) -> int:
        return 2

    def read(self, indices: np.ndarray) -> dict[str, np.ndarray]:
        return {"x": np.asarray(indices)}


class Misspelt(Plain):
    def readInto(self, indices: np.ndarray, allocate: Any) -> dict[str, Any]:  # noqa: N802
        return self.read(indices)


class SetUp(Plain):
    def set_up(self, worker_id: int, num_workers: int) -> None:
        pass


class WrongSetup(Plain):
    def setup(self, worker_id: int) -> None:
        pass


class NotAMethod(Plain):
    run_info = {"n": 2}


class EpochOnReadOnly:
    def __len__(self) -> int:
        return 2

    def read(self, indices: np.ndarray, epoch: int = 0) -> dict[str, np.ndarray]:
        return {"x": np.asarray(indices)}

    def read_into(self, indices: np.ndarray, allocate: Any) -> dict[str, Any]:
        return self.read(indices)


class Closes(WrongSetup):
    closed: list[bool] = []

    def close(self) -> None:
        Closes.closed.append(True)


def fetch_fn(worker_id: int, batch_size_hint: int) -> dict[str, np.ndarray]:
    return {"x": np.full(batch_size_hint, worker_id)}


def _build(cls: type) -> BoundSource:
    return build_source({"_target_": f"{__name__}.{cls.__name__}"})


def test_a_source_with_every_optional_method_is_seen_to_have_each() -> None:
    """Every declared capability is found, plus read with an epoch keyword."""
    source = _build(Everything)
    for name in NAMES:
        assert getattr(source.caps, name), name
    assert source.caps.reads and source.caps.takes_epoch and source.caps.components
    assert not source.caps.ships_built
    source.setup(2, 3)
    source.close()
    assert source.obj.calls == ["setup 2/3", "close"]


def test_a_plain_source_has_none_and_setup_and_close_do_nothing() -> None:
    """No optional method: the record says so, and BoundSource.setup/close are no-ops."""
    source = _build(Plain)
    assert source.caps == Capabilities(reads=True)
    assert source.caps.names() == ("reads",)
    source.setup(0, 1)
    source.close()


def test_a_fetch_function_has_no_capabilities() -> None:
    """A plain fetch function is its own fetch: nothing else to look up."""
    source = build_source({"_target_": f"{__name__}:fetch_fn"})
    assert source.caps == Capabilities()
    assert source.fetch(0, 2)["x"].tolist() == [0, 0]


@pytest.mark.parametrize("cls, attr, meant", [(Misspelt, "readInto", "read_into"),
                                               (SetUp, "set_up", "setup")])
def test_a_misspelt_capability_is_refused_naming_the_source_and_method(
        cls: type, attr: str, meant: str) -> None:
    """A method spelt like a capability but not as one would never be called: refused."""
    with pytest.raises(ConfigError, match=rf"source\._target_.*{cls.__name__} has a method "
                                          rf"'{attr}' but the pipeline calls '{meant}'"):
        _build(cls)


def test_a_capability_with_the_wrong_signature_is_refused() -> None:
    """setup(worker_id) cannot take setup(worker_id, num_workers): refused at build, not in a worker."""
    with pytest.raises(ConfigError, match=r"WrongSetup\.setup cannot be called as "
                                          r"setup\(worker_id, num_workers\).*too many"):
        _build(WrongSetup)


def test_a_capability_that_is_not_a_method_is_refused() -> None:
    with pytest.raises(ConfigError, match=r"NotAMethod\.run_info is a dict, not a method"):
        _build(NotAMethod)


def test_read_taking_epoch_needs_read_into_to_take_it_too() -> None:
    """Process workers read through read_into: without epoch every epoch would read the same."""
    with pytest.raises(ConfigError, match=r"read takes epoch but .*read_into does not"):
        _build(EpochOnReadOnly)


def test_a_refused_source_is_closed() -> None:
    """The instance built before its capabilities were refused does not leak its files."""
    Closes.closed.clear()
    with pytest.raises(ConfigError):
        _build(Closes)
    assert Closes.closed == [True]


def test_built_in_sources_declare_what_they_have() -> None:
    """The built-ins' capabilities as the pipeline relies on them."""
    synthetic = build_source({"_target_": "synthetic", "fields": {"x": {"shape": [1]}}})
    assert synthetic.caps.setup and synthetic.caps.fetch_into and synthetic.caps.reads
    assert not synthetic.caps.read_into and not synthetic.caps.components
    names = component_names({"_target_": "mixture", "components": [{"name": "web"}, {}]})
    assert names == ("component", ("web", "component 1"))
    assert component_names({"_target_": "synthetic"}) == (None, ())
    assert component_names({"_target_": "no.such.module:thing"}) == (None, ())


def _documented() -> list[str]:
    text = DOCS.read_text()
    section = text.split("<!-- capabilities -->")
    assert len(section) == 3, f"{DOCS} must hold the capability list between two " \
                              "'<!-- capabilities -->' markers"
    return re.findall(r"^- `(\w+\([^`]*\))`", section[1], flags=re.M)


def test_the_plugin_guide_lists_the_declared_capabilities_in_order() -> None:
    """docs/plugins.md and sources/capabilities.CAPABILITIES agree, name for name."""
    assert _documented() == [c.call for c in CAPABILITIES]

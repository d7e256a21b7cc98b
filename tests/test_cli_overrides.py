"""A key given twice in the overrides is refused, naming the key, both values and the fix.

The case that matters: an unquoted brace range, which the shell turns into one
``source.urls=...`` argument per shard (Hydra would keep the last: one shard of eight).
"""

from __future__ import annotations

import json
import os
import re
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from inputkit.config.overrides import brace_pattern, check_repeated, layered
from inputkit.errors import ConfigError

TESTS = Path(__file__).resolve().parent


def _invoke(args: list[str]):
    """The CLI in-process through typer's CliRunner (stdout and stderr together)."""
    from typer.testing import CliRunner

    from inputkit.cli import app

    return CliRunner().invoke(app, args, env={"COLUMNS": "200"}, prog_name="inputkit")


@pytest.mark.parametrize("overrides, key", [
    (["batch_size=1", "batch_size=2"], "batch_size"),
    (["+a=1", "a=2"], "a"),
    (["+a=1", "++a=2"], "a"),
    (["~source.fields.label", "source.fields.label={dtype:int64}"], "source.fields.label"),
    (["source=tokens", "source=image_shards"], "source"),
    (["workers.count=1", "batch_size=3", "workers.count=1"], "workers.count"),
])
def test_a_key_given_twice_is_a_config_error_naming_it_and_both_values(overrides, key):
    with pytest.raises(ConfigError) as info:
        check_repeated(overrides)
    assert info.value.key == key
    first, last = overrides[0], overrides[-1]
    assert first in str(info.value) and last in str(info.value), info.value
    assert f"give {key} once" in str(info.value)


def test_different_keys_and_packages_are_not_repeats():
    check_repeated(["batch_size=1", "source=tiny", "source@inputs.val.source=tiny",
                    "workers.count=1,2,4", "+workers.extra=1", "~source.fields.label"])


@pytest.mark.parametrize("values, pattern", [
    ([f"/d/train-{i:03d}.tar" for i in range(8)], "/d/train-{000..007}.tar"),
    ([f"/d/s{i}.tar" for i in range(8, 12)], "/d/s{8..11}.tar"),
    (["/d/a.tar", "/d/b.tar"], "/d/{a,b}.tar"),
    (["/d/train-000.tar", "/d/train-002.tar"], "/d/train-{000,002}.tar"),
    (["1", "2"], None),  # nothing in common around them: not a pattern
    (["/d/a.tar", "/d/a.tar"], None),
])
def test_brace_pattern_rebuilds_what_the_shell_expanded(values, pattern):
    assert brace_pattern(values) == pattern


def test_compose_refuses_a_repeated_key():
    import inputkit

    with pytest.raises(ConfigError, match=r"batch_size: given twice in compose\(overrides=\.\.\.\)"):
        inputkit.compose(["batch_size=8", "devices=cpu", "batch_size=16"])


def test_layered_lets_later_layers_win_and_checks_each_layer():
    assert layered(["experiment=cpu", "workers.count=4", "devices=cpu"],
                   ["workers.count=2"], ["+x=1"]) == \
        ["experiment=cpu", "devices=cpu", "workers.count=2", "+x=1"]
    with pytest.raises(ConfigError, match="workers.count"):
        layered(["devices=cpu"], ["workers.count=1", "workers.count=2"])


EXPANDED = [f"source.urls=/data/shards/train-{i:03d}.tar" for i in range(8)]


@pytest.mark.parametrize("command", [["bench"], ["plan"], ["tune"], ["bench", "-m"],
                                     ["compare", "-w", "w1"]])
def test_every_command_refuses_an_expanded_brace_range_with_the_quoted_form(command):
    """Exit 2 before anything runs, naming the key, the shard count and the argument to type."""
    result = _invoke([*command, "source=image_shards", *EXPANDED])
    assert result.exit_code == 2, result.output
    text = " ".join(result.output.split())
    assert "error: source.urls: given 8 times on the command line" in text, text
    assert "source.urls=/data/shards/train-000.tar" in text and \
        "source.urls=/data/shards/train-007.tar" in text, text
    assert "quote the argument so that inputkit expands it: " \
           "'source.urls=/data/shards/train-{000..007}.tar'" in text, text


def test_a_list_key_gets_the_list_to_type():
    result = _invoke(["plan", "source=tokens", "source.files=t1.bin", "source.files=t2.bin",
                      "source.files=t3.bin"])
    assert result.exit_code == 2, result.output
    assert "give the values as one list: 'source.files=[t1.bin,t2.bin,t3.bin]'" in \
        " ".join(result.output.split()), result.output


@pytest.fixture
def shards(tmp_path: Path) -> Path:
    """4 image shards of 5 small JPEGs each (20 samples)."""
    from imagefiles import jpeg_bytes, photo, write_shards

    images = [jpeg_bytes(photo(40, 32, i)) for i in range(20)]
    write_shards(tmp_path / "shards", images, [i % 3 for i in range(20)], per_shard=5)
    return tmp_path / "shards"


@pytest.mark.timeout(180)
@pytest.mark.skipif(shutil.which("bash") is None, reason="needs bash for its brace expansion")
def test_the_shells_expansion_is_refused_and_the_advice_reads_every_shard(shards, tmp_path,
                                                                          monkeypatch):
    """Through bash, as a user types it: unquoted, exit 2 with the quoted argument; that
    argument, run as given, reads all 20 samples of the 4 shards (not 5 of the last)."""
    env = {**os.environ, "PYTHONPATH": str(TESTS), "COLUMNS": "200"}
    env.pop("HYDRA_FULL_ERROR", None)
    line = (f"{sys.executable} -m inputkit bench source=image_shards "
            f"source.urls={shards}/train-{{000..003}}.tar devices=cpu")
    out = subprocess.run(["bash", "-c", line], cwd=tmp_path, env=env, capture_output=True,
                         text=True, timeout=120, stdin=subprocess.DEVNULL)
    assert out.returncode == 2, (out.stdout, out.stderr)
    assert "source.urls: given 4 times on the command line" in out.stderr, out.stderr
    [advice] = re.findall(r"'(source\.urls=[^']+)'", out.stderr)
    assert advice == f"source.urls={shards}/train-{{000..003}}.tar"
    assert not list(tmp_path.rglob("summary.json")), "nothing ran"

    monkeypatch.chdir(tmp_path)
    result = _invoke(["bench", "source=image_shards", advice, "devices=cpu", "batch_size=4",
                      "epoch.count=1", "workers.count=1", "bench.plot=false",
                      "source.transforms=[{resize: 16}, {center_crop: 16}]"])
    assert result.exit_code == 0, result.output
    [summary] = [json.loads(p.read_text()) for p in tmp_path.rglob("summary.json")]
    [coordinator] = summary["stats"]["coordinators"]
    assert coordinator["samples"] == 20 and coordinator["finished"], coordinator

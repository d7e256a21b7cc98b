"""Third-party sources registered under the ``inputkit.sources`` entry-point group."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import textwrap

import pytest

PLUGIN = '''
import numpy as np


class Const:
    """Chunks of one constant value (a test plugin)."""

    def __init__(self, value: float = 1.0, size: int = 8) -> None:
        self.value, self.size = value, size

    def fetch(self, worker_id, batch_size_hint):
        return {"x": np.full((self.size, 2), self.value, np.float32)}
'''


@pytest.fixture
def plugin_path(tmp_path):
    """A real installed distribution (a .dist-info with entry_points.txt) on PYTHONPATH."""
    (tmp_path / "myplugin").mkdir()
    (tmp_path / "myplugin" / "__init__.py").write_text(PLUGIN)
    info = tmp_path / "myplugin-0.1.dist-info"
    info.mkdir()
    (info / "METADATA").write_text("Metadata-Version: 2.1\nName: myplugin\nVersion: 0.1\n")
    (info / "entry_points.txt").write_text(textwrap.dedent("""\
        [inputkit.sources]
        const = myplugin:Const
        broken = myplugin:Missing
        """))
    return tmp_path


def run(args, plugin_path, cwd):
    env = dict(os.environ, COLUMNS="250",
               PYTHONPATH=f"{plugin_path}{os.pathsep}{os.environ.get('PYTHONPATH', '')}")
    return subprocess.run([sys.executable, "-m", "inputkit", *args], capture_output=True, text=True,
                          env=env, cwd=cwd, timeout=60)


def test_inputkit_sources_lists_builtins_and_plugins_with_their_keys(plugin_path, tmp_path):
    out = run(["sources", "--json"], plugin_path, tmp_path)
    assert out.returncode == 0, out.stderr
    found = {s["name"]: s for s in json.loads(out.stdout)}
    assert {"synthetic", "arrays", "shards", "torch_dataset", "const", "broken"} <= set(found)
    const = found["const"]
    assert const["target"] == "myplugin:Const" and const["origin"] == "entry point (myplugin 0.1)"
    assert const["keys"] == [["value", "1.0"], ["size", "8"]] and const["kind"] == "fetch"
    assert const["summary"] == "Chunks of one constant value (a test plugin)."
    assert "has no attribute 'Missing'" in found["broken"]["error"], "listed, not fatal"
    assert found["arrays"]["kind"] == "indexable"
    table = run(["sources"], plugin_path, tmp_path)
    assert table.returncode == 0 and "const" in table.stdout and "cannot import" in table.stdout


def test_a_config_names_a_plugin_by_its_short_name(plugin_path, tmp_path):
    out = run(["bench", "~source", "+source._target_=const", "+source.value=3", "bench.steps=3",
               "batch_size=8", "devices=cpu", "workers.count=1"], plugin_path, tmp_path)
    assert out.returncode == 0, out.stderr
    assert "batches" in out.stdout


def test_an_unknown_short_name_lists_the_known_ones(plugin_path, tmp_path):
    out = run(["bench", "~source", "+source._target_=nosuch", "bench.steps=1", "devices=cpu"],
              plugin_path, tmp_path)
    assert out.returncode == 2
    assert "source._target_: 'nosuch' is neither an importable name" in out.stderr
    assert ("known source (arrays, broken, const, hf, image_folder, image_list, image_shards, "
            "mixture, parquet, shards, synthetic, tokens, torch_dataset)") in out.stderr

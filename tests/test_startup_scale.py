"""tools/startup_scale.py keeps working: its data builder and one small measurement.

The figures themselves are machine-dependent and live in docs/storage.md; these
tests only check that the builder writes what it says and that every row of a
tiny run measured something (no timing is asserted).
"""

from __future__ import annotations

import json
import os
import sys
import tarfile
import time
from pathlib import Path

import pytest

TOOLS = Path(__file__).resolve().parent.parent / "tools"
sys.path.insert(0, str(TOOLS))

from scale_data import build  # noqa: E402
from startup_scale_child import parse_rollup  # noqa: E402


def test_builder_writes_the_folder_and_shards_with_the_same_samples(tmp_path: Path) -> None:
    """1,003 samples over 10 classes and 4 shards: every sample once in each form, labels by
    class folder order, hard links rather than copies, and a second call reuses the set."""
    built = build(str(tmp_path), 1003, classes=10, shards=4)
    classes = sorted(os.listdir(built.folder))
    assert len(classes) == 10
    files = {name: label for label, c in enumerate(classes)
             for name in os.listdir(os.path.join(built.folder, c))}
    assert len(files) == 1003
    assert os.stat(os.path.join(built.folder, classes[0], sorted(os.listdir(
        os.path.join(built.folder, classes[0])))[0])).st_nlink > 1
    in_shards = {}
    for path in built.shards:
        with tarfile.open(path) as tar:
            for member in tar:
                if member.name.endswith(".cls"):
                    key = member.name[:-4] + ".jpg"
                    in_shards[key] = int(tar.extractfile(member).read())
    assert in_shards == files
    assert build(str(tmp_path), 1003, classes=10, shards=4) == built


def test_parse_rollup_reads_kilobytes_as_bytes() -> None:
    text = ("55d0c0a3c000-7ffd5b3f1000 ---p 00000000 00:00 0  [rollup]\n"
            "Rss:              123456 kB\nPss:               65432 kB\nPss_Anon:  1 kB\n")
    assert parse_rollup(text) == {"Rss": 123456 * 1024, "Pss": 65432 * 1024,
                                  "Pss_Anon": 1024}


@pytest.mark.timeout(120)
def test_a_tiny_run_measures_every_row(tmp_path: Path, monkeypatch: pytest.MonkeyPatch,
                                       capsys: pytest.CaptureFixture[str]) -> None:
    """The tool's main() over 200 samples in 2 shards, inputkit (threads: cold, cached, resume)
    and DataLoader with WebDataset (cold; its second start is the same code): every row has a
    first batch and memory, the workers are seen, the resume row loaded the state the cached
    row saved.

    DataLoader's row is a fresh process, as in a real run (its workers are counted and the
    RESULT line parsed). inputkit's thread rows run startup_scale_child.measure in this process
    with the row's own cache dir: the same code without a fresh interpreter (no figure is
    asserted), which keeps the test to seconds."""
    pytest.importorskip("torch")
    pytest.importorskip("webdataset")
    import startup_scale
    from startup_scale_child import measure

    from inputkit.storage.settings import reset

    real_run_child = startup_scale.run_child
    ran_here: list[str] = []

    def run_child(spec: dict, cache: str, timeout: float, src: str | None) -> dict:
        if spec["loader"] != "inputkit-threads":
            return real_run_child(spec, cache, timeout, src)
        ran_here.append(cache)
        with monkeypatch.context() as env:
            env.setenv("INPUTKIT_CACHE_DIR", cache)
            try:
                return measure({**spec, "launch": time.time()})
            finally:
                reset()  # the next row (and test) configures its own settings

    monkeypatch.setattr(startup_scale, "run_child", run_child)
    out = tmp_path / "rows.json"
    code = startup_scale.main([str(tmp_path / "data"), "--samples", "200", "--classes", "4",
                               "--shards", "2", "--forms", "shards",
                               "--loaders", "inputkit-threads", "dataloader", "--batches", "1",
                               "--phases", "cold", "cached", "resume",
                               "--batch-size", "16", "--timeout", "100",
                               "--scratch", str(tmp_path), "--json", str(out)])
    printed = capsys.readouterr().out
    rows = json.loads(out.read_text())["rows"]
    assert code == 0, rows
    assert len(ran_here) == 3 and len(set(ran_here)) == 1  # one cache dir for the three phases
    assert [(r["loader"], r["phase"]) for r in rows] == [
        ("inputkit-threads", "cold"), ("inputkit-threads", "cached"),
        ("inputkit-threads", "resume"), ("dataloader", "cold")]
    for row in rows:
        assert row["samples"] == 200 and row["form"] == "shards"
        assert row["first_batch_s"] > 0
        assert row["parent_pss_mib_after"] > 0
    assert all(r["workers_after"] == 2 and r["worker_pss_mib_after"] > 0
               for r in rows if r["loader"] == "dataloader")
    assert rows[1]["state_bytes"] > 0
    assert rows[0]["index_memory_bytes"] > 0 and rows[3]["index_memory_bytes"] > 0
    assert rows[0]["index_disk_bytes"] > 0  # the cold run cached its index in its cache dir
    assert "first batch" in printed and "inputkit-threads" in printed

"""Static checks that can fail: ruff over the package, tests and tools."""

from __future__ import annotations

import shutil
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent


@pytest.mark.timeout(120)
def test_ruff_is_clean():
    ruff = shutil.which("ruff", path=str(Path(sys.executable).parent)) or shutil.which("ruff")
    assert ruff, "ruff is part of the test extra: pip install '.[test]'"
    targets = [str(ROOT / d) for d in ("inputkit", "tests", "tools") if (ROOT / d).exists()]
    out = subprocess.run([ruff, "check", *targets], capture_output=True, text=True, timeout=110,
                         cwd=ROOT)
    assert out.returncode == 0, out.stdout + out.stderr

"""The wheel carries the shipped configs (YAML silently left out of wheels is a classic bug)."""

from __future__ import annotations

import subprocess
import sys
import zipfile
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent


@pytest.mark.timeout(300)
def test_wheel_contains_every_shipped_config(tmp_path):
    shipped = sorted(p.relative_to(ROOT / "conf").as_posix() for p in (ROOT / "conf").rglob("*.yaml"))
    assert "config.yaml" in shipped and "source/synthetic.yaml" in shipped
    # Built the way `pip install .` builds it: in an isolated build environment.
    out = subprocess.run([sys.executable, "-m", "pip", "wheel", "--no-deps", "-w", str(tmp_path),
                          str(ROOT)],
                         capture_output=True, text=True, timeout=280)
    assert out.returncode == 0, out.stdout + out.stderr
    [wheel] = tmp_path.glob("inputkit_ml-*.whl")
    names = set(zipfile.ZipFile(wheel).namelist())
    missing = [f for f in shipped if f"inputkit/conf/{f}" not in names]
    assert not missing, f"configs missing from the wheel: {missing}"
    modules = sorted(p.relative_to(ROOT).as_posix() for p in (ROOT / "inputkit").rglob("*.py"))
    left_out = [m for m in modules if m not in names]
    assert not left_out, f"modules missing from the wheel (add their package to pyproject): {left_out}"


def test_installed_package_finds_its_configs_inside_itself():
    import inputkit
    from inputkit.config.compose import SHIPPED_CONFIGS, shipped_configs

    assert shipped_configs() == SHIPPED_CONFIGS
    assert inputkit.load_spec(inputkit.compose()).inputs[0].name == "main"


def _distribution_name() -> str:
    import tomllib

    return tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]["name"]


def test_the_distribution_name_is_not_the_unrelated_project_on_pypi():
    """`inputkit` on PyPI is someone else's package: `pip install inputkit` must never be our advice."""
    assert _distribution_name() == "inputkit-ml"


def test_every_install_hint_names_this_projects_distribution():
    """An error that says `pip install 'X[extra]'` must install this project, from every file we ship."""
    import re

    name = _distribution_name()
    hint = re.compile(r"pip install\s+['\"]?([A-Za-z0-9_.-]+)\[")
    wrong = []
    for path in [ROOT / "README.md", *ROOT.glob("docs/*.md"), *ROOT.glob("inputkit/**/*.py"),
                 *ROOT.glob("conf/**/*.yaml"), *ROOT.glob("tools/*.py")]:
        for lineno, line in enumerate(path.read_text(encoding="utf-8").splitlines(), 1):
            for found in hint.findall(line):
                if found not in (name, "."):
                    wrong.append(f"{path.relative_to(ROOT)}:{lineno}: {found}")
    assert not wrong, f"install hints that name another distribution than {name!r}: {wrong}"
    from inputkit.observe.plots import INSTALL_HINT

    assert f"{name}[plot]" in INSTALL_HINT

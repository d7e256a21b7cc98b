"""The docs' examples, run: every block marked ``<!-- check -->`` must print what the docs show.

How to mark an example in a Markdown file under docs/ (or the README):

- ``<!-- check -->`` on the line before a fenced console block: each ``$ COMMAND`` line is
  run and the lines after it, up to the next ``$``, are its expected output. Commands:
  ``inputkit ...`` (in-process through typer's CliRunner, stdout and stderr together),
  ``python FILE ARGS`` (a subprocess), ``echo $?`` (the previous exit code) and
  ``cat FILE`` (its lines are *written* to FILE: the example's own files). ``VAR=value``
  before a command sets it for that command (``PYTHONPATH=.`` puts the folder on the path).
- ``<!-- check -->`` before a fenced ``python`` block: the code runs in-process; when the
  next fenced block follows with only blank lines between, it is the expected output.
- In expected output ``...`` stands for any text (also several lines). ``<!-- check
  numbers -->`` also reads every number as equal to any other and every run of spaces
  as one, for output with timings in it.

Each block runs in its own empty folder, with tests/ on the path (``fakes:...`` sources).
"""

from __future__ import annotations

import contextlib
import io
import os
import re
import shlex
import subprocess
import sys
from dataclasses import dataclass
from pathlib import Path

import pytest

TESTS = Path(__file__).resolve().parent
ROOT = TESTS.parent
DOCS = [ROOT / "README.md", *sorted((ROOT / "docs").glob("*.md"))]
_MARK = re.compile(r"^<!-- check(?P<options>[^>]*)-->\s*$")
_FENCE = re.compile(r"^```(?P<lang>[\w-]*)\s*$")
_NUMBER = re.compile(r"\d[\d,]*(?:\.\d+)?")
_ENV = re.compile(r"^[A-Z_][A-Z0-9_]*=\S*$")


@dataclass(frozen=True)
class Example:
    """One marked block: where it is, its language, its text, and its expected output."""

    path: Path
    line: int
    lang: str
    body: str
    expected: str | None  # python blocks: the output block after it, if any
    options: frozenset[str]

    @property
    def id(self) -> str:
        return f"{self.path.relative_to(ROOT)}:{self.line}"


def _fence_end(lines: list[str], start: int) -> int:
    for i in range(start + 1, len(lines)):
        if lines[i].startswith("```"):
            return i
    raise AssertionError(f"unclosed code block at line {start + 1}")


def examples(path: Path) -> list[Example]:
    """The marked blocks of one Markdown file."""
    lines = path.read_text().splitlines()
    found = []
    i = 0
    while i < len(lines):
        mark = _MARK.match(lines[i])
        if not mark:
            i += 1
            continue
        fence = _FENCE.match(lines[i + 1]) if i + 1 < len(lines) else None
        assert fence, f"{path}:{i + 1}: <!-- check --> must be followed by a fenced block"
        end = _fence_end(lines, i + 1)
        body = "\n".join(lines[i + 2:end])
        expected = None
        j = end + 1
        while j < len(lines) and not lines[j].strip():
            j += 1
        if fence["lang"] == "python" and j < len(lines) and _FENCE.match(lines[j]):
            out_end = _fence_end(lines, j)
            expected = "\n".join(lines[j + 1:out_end])
        found.append(Example(path, i + 2, fence["lang"], body, expected,
                             frozenset(mark["options"].split())))
        i = end + 1
    return found


ALL = [example for path in DOCS for example in examples(path)]


def normalize(text: str, numbers: bool) -> str:
    lines = [line.rstrip() for line in text.strip("\n").splitlines()]
    text = "\n".join(lines)
    if numbers:
        text = re.sub(r"[ \t]+", " ", _NUMBER.sub("N", text))
    return text


def matches(expected: str, actual: str, numbers: bool = False) -> bool:
    """Whether ``actual`` is ``expected`` with each ``...`` standing for any text."""
    want, got = normalize(expected, numbers), normalize(actual, numbers)
    pattern = ".*?".join(re.escape(part) for part in want.split("..."))
    return re.fullmatch(pattern, got, re.DOTALL) is not None


def _commands(body: str) -> list[tuple[str, list[str]]]:
    """``$ command`` lines, each with the output lines that follow it."""
    steps: list[tuple[str, list[str]]] = []
    for line in body.splitlines():
        if line.startswith("$ "):
            steps.append((line[2:], []))
        else:
            assert steps, f"output before the first $ command: {line!r}"
            steps[-1][1].append(line)
    return steps


def _run_inputkit(args: list[str], env: dict[str, str], cwd: Path) -> tuple[int, str]:
    from typer.testing import CliRunner

    from inputkit.cli import app

    path = [str(cwd)]  # the example's own files (cat FILE) import from its folder
    sys.path[:0] = path
    try:
        result = CliRunner().invoke(app, args, env={"COLUMNS": "200", **env}, prog_name="inputkit")
    finally:
        del sys.path[:len(path)]
        os.environ.pop("HYDRA_FULL_ERROR", None)  # bench sets it for its own process
    return result.exit_code, result.output


def _run_python(args: list[str], env: dict[str, str], cwd: Path) -> tuple[int, str]:
    paths = [str(TESTS), str(cwd)]
    full_env = {**os.environ, "COLUMNS": "200", **env,
                "PYTHONPATH": os.pathsep.join(paths + [p for p in [os.environ.get("PYTHONPATH")] if p])}
    done = subprocess.run([sys.executable, *args], cwd=cwd, env=full_env, capture_output=True,
                          text=True, timeout=120, stdin=subprocess.DEVNULL)
    return done.returncode, done.stdout + done.stderr


def run_console(example: Example, cwd: Path) -> None:
    code = 0
    for command, output in _commands(example.body):
        words = shlex.split(command, comments=True)
        env = {}
        while words and _ENV.match(words[0]):
            name, _, value = words.pop(0).partition("=")
            env[name] = value
        if words[:2] == ["echo", "$?"]:
            actual = str(code)
        elif words[0] == "cat" and len(words) == 2:
            (cwd / words[1]).write_text("\n".join(output) + "\n")
            continue
        elif words[0] == "inputkit":
            code, actual = _run_inputkit(words[1:], env, cwd)
        elif words[0] == "python":
            code, actual = _run_python(words[1:], env, cwd)
        else:
            raise AssertionError(f"{example.id}: cannot run {command!r} (inputkit, python, cat "
                                 "and echo $? are supported)")
        expected = "\n".join(output)
        assert matches(expected, actual, "numbers" in example.options), (
            f"{example.id}: `{command}` printed\n{actual}\n--- the docs show\n{expected}")


def run_python(example: Example, cwd: Path) -> None:
    printed = io.StringIO()
    sys.path[:0] = [str(cwd)]
    try:
        with contextlib.redirect_stdout(printed):
            exec(compile(example.body, example.id, "exec"), {"__name__": "__docs__"})  # noqa: S102
    finally:
        del sys.path[0]
    if example.expected is not None:
        assert matches(example.expected, printed.getvalue(), "numbers" in example.options), (
            f"{example.id} printed\n{printed.getvalue()}\n--- the docs show\n{example.expected}")


@pytest.mark.timeout(120)
@pytest.mark.parametrize("example", ALL, ids=[e.id for e in ALL])
def test_docs_example_prints_what_the_docs_show(example, tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    if example.lang == "python":
        run_python(example, tmp_path)
    else:
        run_console(example, tmp_path)


def test_the_docs_have_checked_examples():
    """The marker is in use where the issue found drift (embedding.md, errors.md)."""
    files = {e.path.name for e in ALL}
    assert {"embedding.md", "errors.md"} <= files, files


@pytest.mark.parametrize("expected, actual, numbers, ok", [
    ("a\nb", "a\nb  \n", False, True),
    ("start-up took ... s", "start-up took 0.88 s", False, True),
    ("a\n...\nz", "a\nb\nc\nz", False, True),
    ("[256, 144]", "[256, 232]", False, False),
    ("ran 0.3 s,   12 batches", "ran 12.5 s, 7 batches", True, True),
    ("exit 1", "exit 2", False, False),
])
def test_the_matcher_reads_ellipses_and_numbers(expected, actual, numbers, ok):
    assert matches(expected, actual, numbers) is ok

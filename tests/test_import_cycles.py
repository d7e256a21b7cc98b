"""No import cycles in ``inputkit/``, function-level imports included.

A cycle hidden inside a function still ties two layers together: the planner cannot be read,
tested or moved without the workers, and the import order decides which half sees a partly
initialised module. The walk reads every module's source with ``ast`` (nothing is imported),
resolves ``from x import y`` to the module ``x.y`` when ``y`` is one (else to ``x``) and
relative imports to absolute names, and finds the strongly connected parts of the graph.

An import under ``if TYPE_CHECKING:`` is left out: it never runs, it only names types.
Importing ``a.b.c`` runs the packages ``a`` and ``a.b`` first; those edges are left out too
(every module imports its package root, which in turn re-exports the public API). So is
``importlib.import_module`` by a computed name: the kind registry loads its built-in kinds by
name, as plugins load from entry points, and depends on none of them.
"""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1] / "inputkit"

# Cycles allowed, each with why it is there. The five found when this test was written are
# all broken (issue 23); the test fails on any cycle. An entry here needs its reason.
KNOWN: dict[frozenset[str], str] = {}


def _module_name(path: Path) -> str:
    parts = list(path.relative_to(ROOT.parent).with_suffix("").parts)
    if parts[-1] == "__init__":
        parts.pop()
    return ".".join(parts)


def _is_type_checking(test: ast.expr) -> bool:
    return (isinstance(test, ast.Name) and test.id == "TYPE_CHECKING") or \
        (isinstance(test, ast.Attribute) and test.attr == "TYPE_CHECKING")


def _imports(tree: ast.AST, module: str, is_package: bool) -> list[tuple[str, list[str], int]]:
    """(base, names, line) for every import that runs: module level and inside functions."""
    found: list[tuple[str, list[str], int]] = []
    package = module if is_package else module.rpartition(".")[0]

    def visit(node: ast.AST) -> None:
        if isinstance(node, ast.If) and _is_type_checking(node.test):
            for child in node.orelse:  # the else branch does run
                visit(child)
            return
        if isinstance(node, ast.Import):
            for alias in node.names:
                found.append((alias.name, [], node.lineno))
        elif isinstance(node, ast.ImportFrom):
            if node.level:
                parts = package.split(".")
                base = ".".join(parts[:len(parts) - node.level + 1])
                base = f"{base}.{node.module}" if node.module else base
            else:
                base = node.module or ""
            found.append((base, [a.name for a in node.names], node.lineno))
        for child in ast.iter_child_nodes(node):
            visit(child)

    visit(tree)
    return found


def import_graph() -> dict[str, dict[str, int]]:
    """module -> {imported inputkit module: first line that imports it}."""
    files = {_module_name(p): p for p in ROOT.rglob("*.py")}
    graph: dict[str, dict[str, int]] = {}
    for module, path in files.items():
        tree = ast.parse(path.read_text(encoding="utf-8"), filename=str(path))
        edges: dict[str, int] = {}
        for base, names, line in _imports(tree, module, path.name == "__init__.py"):
            targets = [f"{base}.{n}" for n in names if f"{base}.{n}" in files]
            if len(targets) < len(names) or not names:
                targets.append(base)  # a name defined in the module (or a plain import)
            for target in targets:
                if target in files and target != module:
                    edges.setdefault(target, line)
        graph[module] = edges
    return graph


def strongly_connected(graph: dict[str, dict[str, int]]) -> list[list[str]]:
    """Tarjan's algorithm, iterative; the parts with more than one module."""
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    on_stack: set[str] = set()
    parts: list[list[str]] = []
    counter = 0
    for start in sorted(graph):
        if start in index:
            continue
        work = [(start, iter(sorted(graph[start])))]
        index[start] = low[start] = counter
        counter += 1
        stack.append(start)
        on_stack.add(start)
        while work:
            node, children = work[-1]
            child = next(children, None)
            if child is not None:
                if child not in index:
                    index[child] = low[child] = counter
                    counter += 1
                    stack.append(child)
                    on_stack.add(child)
                    work.append((child, iter(sorted(graph[child]))))
                elif child in on_stack:
                    low[node] = min(low[node], index[child])
                continue
            work.pop()
            if work:
                low[work[-1][0]] = min(low[work[-1][0]], low[node])
            if low[node] == index[node]:
                part = []
                while True:
                    member = stack.pop()
                    on_stack.discard(member)
                    part.append(member)
                    if member == node:
                        break
                if len(part) > 1:
                    parts.append(sorted(part))
    return parts


def one_cycle(graph: dict[str, dict[str, int]], part: list[str]) -> list[str]:
    """A shortest cycle through the part's first module, as module:line -> ... steps."""
    members = set(part)
    start = part[0]
    previous: dict[str, str] = {}
    frontier = [start]
    while frontier:
        following = []
        for node in frontier:
            for child in sorted(graph[node]):
                if child not in members:
                    continue
                if child == start:
                    path = [node]
                    while path[-1] != start:
                        path.append(previous[path[-1]])
                    path.reverse()
                    path.append(start)
                    return [f"{a} (line {graph[a][b]}) -> {b}" for a, b in zip(path, path[1:], strict=False)]
                if child not in previous:
                    previous[child] = node
                    following.append(child)
        frontier = following
    return part


def test_the_walk_sees_function_level_and_relative_imports() -> None:
    """The walk itself: a function-level import and a relative one are edges; TYPE_CHECKING is
    not; ``from pkg import module`` points at the module."""
    source = (
        "from typing import TYPE_CHECKING\n"
        "from . import sibling\n"
        "from .other import name\n"
        "if TYPE_CHECKING:\n"
        "    from inputkit.hidden import Type\n"
        "def f():\n"
        "    import inputkit.lazy\n"
    )
    found = _imports(ast.parse(source), "inputkit.pkg.mod", is_package=False)
    bases = {(base, tuple(names)) for base, names, _ in found}
    assert ("inputkit.pkg", ("sibling",)) in bases
    assert ("inputkit.pkg.other", ("name",)) in bases
    assert ("inputkit.lazy", ()) in bases
    assert not any(base == "inputkit.hidden" for base, _ in bases)


def test_strongly_connected_finds_a_cycle() -> None:
    graph = {"a": {"b": 1}, "b": {"c": 2}, "c": {"a": 3}, "d": {"a": 4}}
    assert strongly_connected(graph) == [["a", "b", "c"]]
    assert one_cycle(graph, ["a", "b", "c"]) == ["a (line 1) -> b", "b (line 2) -> c",
                                                 "c (line 3) -> a"]


@pytest.mark.timeout(60)
def test_no_import_cycles_in_inputkit() -> None:
    """Every module under inputkit/: the layers import one way."""
    graph = import_graph()
    assert "inputkit.planning.memory" in graph and "inputkit.workers" in graph  # the walk found the tree
    parts = [part for part in strongly_connected(graph) if frozenset(part) not in KNOWN]
    described = [f"{' <-> '.join(part)}\n    e.g. " + "\n         ".join(one_cycle(graph, part))
                 for part in parts]
    assert not parts, "import cycles in inputkit/ (function-level imports included):\n" + \
        "\n".join(described)

"""The package's layering holds: no module imports, at run time, a module that imports it back
(docs/architecture.md), and a plugin's imports of a moved module's old name still work."""

from __future__ import annotations

import ast
import importlib
from pathlib import Path

import invkit

PACKAGE = Path(invkit.__file__).parent


def module_name(path: Path) -> str:
    parts = path.relative_to(PACKAGE.parent).with_suffix("").parts
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def runtime_imports(path: Path, known: set[str]) -> set[str]:
    """invkit modules ``path`` imports when it runs (inside functions too), leaving out the
    imports made for type checkers only."""
    tree = ast.parse(path.read_text())
    typing_only = {
        id(node)
        for block in ast.walk(tree)
        if isinstance(block, ast.If) and "TYPE_CHECKING" in ast.unparse(block.test)
        for node in ast.walk(block)
    }
    found = set()
    for node in ast.walk(tree):
        if id(node) in typing_only:
            continue
        if isinstance(node, ast.ImportFrom) and (node.module or "").startswith("invkit"):
            for alias in node.names:
                full = f"{node.module}.{alias.name}"
                found.add(full if full in known else node.module)
        elif isinstance(node, ast.Import):
            found |= {alias.name for alias in node.names if alias.name.startswith("invkit")}
    return found & known


def cycles(graph: dict[str, set[str]]) -> list[list[str]]:
    """The strongly connected components with more than one module (Tarjan)."""
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    found: list[list[str]] = []

    def visit(node: str) -> None:
        index[node] = low[node] = len(index)
        stack.append(node)
        for other in graph[node]:
            if other not in index:
                visit(other)
                low[node] = min(low[node], low[other])
            elif other in stack:
                low[node] = min(low[node], index[other])
        if low[node] == index[node]:
            component = []
            while True:
                member = stack.pop()
                component.append(member)
                if member == node:
                    break
            if len(component) > 1:
                found.append(sorted(component))

    for node in graph:
        if node not in index:
            visit(node)
    return found


def test_no_module_imports_one_that_imports_it_back():
    paths = {module_name(p): p for p in PACKAGE.rglob("*.py")}
    known = set(paths)
    # the package's public face imports its parts; its parts take only __version__ from it
    graph = {
        name: runtime_imports(path, known) - {name, "invkit"}
        for name, path in paths.items()
        if name != "invkit"
    }
    assert "invkit.lookup" in graph["invkit.run.passes"]  # the graph is read for real
    assert "invkit.results.render" in graph["invkit.results.analyses"]
    assert cycles(graph) == []


def test_a_moved_module_is_still_imported_by_its_old_name():
    for old, new in invkit.MOVED_MODULES.items():
        assert importlib.import_module(old) is importlib.import_module(new)
    from invkit.analysis import AnalysisResult  # as docs of an older invkit told plugins

    from invkit.results.analyses import AnalysisResult as moved

    assert AnalysisResult is moved

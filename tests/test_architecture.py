"""The package's layering holds: no module imports, at run time, a module that imports it back
or one from a layer above its own (docs/architecture.md); every module is in the docs' table
and every module the table names exists; a plugin's imports of a moved module's old name still
work."""

from __future__ import annotations

import ast
import importlib
import re
from pathlib import Path

import invkit

PACKAGE = Path(invkit.__file__).parent
ARCHITECTURE = PACKAGE.parent / "docs" / "architecture.md"

# The layers, lowest first: a folder each, but for the modules beside the host. A module may
# import, at run time, only from its own layer and those below it.
LAYERS = (
    "plugin",  # the contract
    "",  # the host and what every layer shares: invkit/*.py but api.py and cli.py
    "inputs",
    "results",
    "analysis",
    "report",
    "run",
    "api",  # the public face: invkit/api.py
    "builtins",  # the built-in plugins, which use the public face as a third party does
    "demo",
    "cli",  # invkit/cli.py
)


def layer_of(module: str) -> int:
    parts = module.split(".")[1:]
    if len(parts) > 1 or (parts and (PACKAGE / parts[0]).is_dir()):
        return LAYERS.index(parts[0])
    return LAYERS.index(parts[0]) if parts and parts[0] in LAYERS else LAYERS.index("")


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
    assert "invkit.analysis.render" in graph["invkit.analysis.analyses"]
    assert cycles(graph) == []


def test_no_module_imports_one_from_a_layer_above_it():
    paths = {module_name(p): p for p in PACKAGE.rglob("*.py")}
    known = set(paths)
    upward = [
        f"{name} ({LAYERS[layer_of(name)] or 'host'}) imports {other} "
        f"({LAYERS[layer_of(other)] or 'host'})"
        for name, path in paths.items()
        if name != "invkit"  # the package's public face imports its parts
        for other in sorted(runtime_imports(path, known) - {"invkit"})
        if layer_of(other) > layer_of(name)
    ]
    assert layer_of("invkit.inputs.data") < layer_of("invkit.run.passes")  # read for real
    assert layer_of("invkit.config") == LAYERS.index("") < layer_of("invkit.cli")
    assert upward == []


def test_the_architecture_table_names_every_module_and_only_modules():
    text = ARCHITECTURE.read_text()
    table = text[text.index("## Modules") : text.index("## Which file an extension touches")]
    named = set(re.findall(r"`(invkit/[\w/]+\.py)`", table))
    modules = {
        str(path.relative_to(PACKAGE.parent))
        for path in PACKAGE.rglob("*.py")
        if path.name != "__init__.py" or len(ast.parse(path.read_text()).body) > 1
    }  # a folder's __init__.py that holds only its docstring is the folder's description
    assert sorted(modules - named) == [], "modules docs/architecture.md's table does not name"
    assert sorted(named - modules) == [], "modules docs/architecture.md's table names, not there"


def test_a_moved_module_is_still_imported_by_its_old_name():
    for old, new in invkit.MOVED_MODULES.items():
        assert importlib.import_module(old) is importlib.import_module(new)
    from invkit.analysis import AnalysisResult  # as docs of an older invkit told plugins
    from invkit.analysis.analyses import AnalysisResult as moved

    assert AnalysisResult is moved

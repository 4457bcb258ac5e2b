"""The package's layering, read from the source's import statements (nothing is imported).

Rules (DESIGN.md, "Layout"):
- code that runs inside the images never imports the build-host tools (``smneuron.tools``),
  not even inside a function;
- ``neuron/`` implements the backend interface that ``artifact/`` defines, so the dependency
  runs one way: ``artifact`` reaches ``neuron`` only lazily (inside a function, when the Neuron
  backend is asked for), and ``neuron`` imports ``artifact`` only inside the ``main`` of a
  child-process entry point (``python -m smneuron.neuron.compile`` runs ``smneuron compile``'s
  work), never at import time;
- no import cycle between modules at import time anywhere in the package.
"""

from __future__ import annotations

import ast
from dataclasses import dataclass
from pathlib import Path

import pytest

import smneuron

PACKAGE_DIR = Path(smneuron.__file__).resolve().parent
IN_IMAGE = (
    "smneuron.errors",
    "smneuron.env",
    "smneuron.typed",
    "smneuron.job",
    "smneuron.versions",
    "smneuron.accelerator",
    "smneuron.cpus",
    "smneuron.dockerentry",
    "smneuron.artifact",
    "smneuron.neuron",
    "smneuron.training",
    "smneuron.serving",
)


@dataclass(frozen=True)
class Edge:
    importer: str
    imported: str
    line: int
    lazy: bool  # inside a function (runs when called, not at import time)
    type_only: bool  # under ``if TYPE_CHECKING:``
    function: str | None = None  # the outermost function it is in

    def __str__(self) -> str:
        kind = "lazy" if self.lazy else "module-level"
        return f"{self.importer}:{self.line} imports {self.imported} ({kind})"


def module_name(path: Path) -> str:
    parts = path.relative_to(PACKAGE_DIR.parent).with_suffix("").parts
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def all_modules() -> dict[str, Path]:
    return {module_name(path): path for path in sorted(PACKAGE_DIR.rglob("*.py"))}


def _is_type_checking(test: ast.expr) -> bool:
    return (isinstance(test, ast.Name) and test.id == "TYPE_CHECKING") or (
        isinstance(test, ast.Attribute) and test.attr == "TYPE_CHECKING"
    )


def _resolve(importer: str, is_package: bool, node: ast.ImportFrom) -> str:
    if not node.level:
        return node.module or ""
    base = importer.split(".")
    base = base if is_package else base[:-1]
    base = base[: len(base) - (node.level - 1)]
    return ".".join(base + ([node.module] if node.module else []))


def edges_of(name: str, path: Path, known: set[str]) -> list[Edge]:
    """Every smneuron module that ``name`` imports: ``from a import b`` counts as ``a.b``
    when that is a module, else as ``a``."""
    tree = ast.parse(path.read_text(encoding="utf-8"), filename=str(path))
    is_package = path.name == "__init__.py"
    found: list[Edge] = []

    def visit(node: ast.AST, function: str | None, type_only: bool) -> None:
        lazy = function is not None
        if isinstance(node, ast.Import):
            for alias in node.names:
                found.append(Edge(name, alias.name, node.lineno, lazy, type_only, function))
        elif isinstance(node, ast.ImportFrom):
            source = _resolve(name, is_package, node)
            for alias in node.names:
                target = f"{source}.{alias.name}"
                imported = target if target in known else source
                found.append(Edge(name, imported, node.lineno, lazy, type_only, function))
        if function is None and isinstance(node, ast.FunctionDef | ast.AsyncFunctionDef):
            function = node.name
        elif function is None and isinstance(node, ast.Lambda):
            function = "<lambda>"
        for child in ast.iter_child_nodes(node):
            inner_type_only = type_only or (
                isinstance(node, ast.If) and _is_type_checking(node.test) and child in node.body
            )
            visit(child, function, inner_type_only)

    visit(tree, None, False)
    return [edge for edge in found if edge.imported.split(".")[0] == "smneuron"]


def within(module: str, prefix: str) -> bool:
    return module == prefix or module.startswith(prefix + ".")


@pytest.fixture(scope="module")
def graph() -> list[Edge]:
    modules = all_modules()
    known = set(modules)
    return [edge for name, path in modules.items() for edge in edges_of(name, path, known)]


def test_the_graph_sees_imports_inside_functions_and_from_forms(graph):
    """The reader itself: a known lazy import and a known module-level one are found."""
    assert any(
        e.importer == "smneuron.artifact.backends"
        and e.imported == "smneuron.neuron.backend"
        and e.lazy
        for e in graph
    )
    assert any(
        e.importer == "smneuron.artifact.build"
        and e.imported == "smneuron.artifact.backends"
        and not e.lazy
        for e in graph
    )
    assert len(all_modules()) > 40


def test_nothing_that_runs_in_an_image_imports_the_build_host_tools(graph):
    offending = [
        str(e)
        for e in graph
        if any(within(e.importer, prefix) for prefix in IN_IMAGE)
        and within(e.imported, "smneuron.tools")
    ]
    assert offending == []


def test_every_in_image_module_is_covered_by_the_rule():
    """A new top-level module must be put on one side or the other of the line."""
    top_level = {".".join(name.split(".")[:2]) for name in all_modules()} - {"smneuron"}
    assert top_level - set(IN_IMAGE) == {"smneuron.tools"}


def test_neuron_imports_artifact_only_in_an_entry_point_and_artifact_neuron_only_lazily(graph):
    upward = [
        str(e)
        for e in graph
        if within(e.importer, "smneuron.neuron")
        and within(e.imported, "smneuron.artifact")
        and e.function != "main"
    ]
    eager = [
        str(e)
        for e in graph
        if within(e.importer, "smneuron.artifact")
        and within(e.imported, "smneuron.neuron")
        and not e.lazy
        and not e.type_only
    ]
    assert upward == [] and eager == []


def _cycle(adjacency: dict[str, set[str]]) -> list[str] | None:
    """One cycle of the directed graph, as a path that ends where it starts, or None."""
    state: dict[str, int] = {}  # 1: on the current path, 2: done
    path: list[str] = []

    def walk(node: str) -> list[str] | None:
        state[node] = 1
        path.append(node)
        for nxt in sorted(adjacency.get(node, ())):
            if state.get(nxt) == 1:
                return path[path.index(nxt) :] + [nxt]
            if nxt not in state and (found := walk(nxt)):
                return found
        path.pop()
        state[node] = 2
        return None

    for start in sorted(adjacency):
        if start not in state and (found := walk(start)):
            return found
    return None


def test_the_cycle_finder_finds_a_cycle():
    assert _cycle({"a": {"b"}, "b": {"c"}, "c": {"a"}}) == ["a", "b", "c", "a"]
    assert _cycle({"a": {"b"}, "b": set()}) is None


def test_no_import_cycle_at_import_time(graph):
    """Module-level imports only: a lazy import inside a function runs after both modules
    are loaded, so it cannot deadlock the import order."""
    adjacency: dict[str, set[str]] = {}
    for e in graph:
        if not e.lazy and not e.type_only and e.imported != e.importer:
            # importing a.b.c runs the __init__ of a.b first; package inits are edges too
            adjacency.setdefault(e.importer, set()).add(e.imported)
    assert _cycle(adjacency) is None

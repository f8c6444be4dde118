"""The package's import graph has no cycle, and no module defers an import of the package into a function."""

from __future__ import annotations

import ast
from pathlib import Path

import stn_repro

PACKAGE = Path(stn_repro.__file__).parent


def module_name(path: Path) -> str:
    parts = path.relative_to(PACKAGE.parent).with_suffix("").parts
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def import_graph() -> tuple[dict[str, set[str]], list[str]]:
    """``{module: modules it imports}`` over ``stn_repro`` (``from a import b`` names ``a.b`` when that is a
    module, else ``a``), and the imports made inside functions or classes, as ``"module -> target"``."""
    files = {module_name(path): path for path in PACKAGE.rglob("*.py")}
    graph: dict[str, set[str]] = {name: set() for name in files}
    nested: list[str] = []
    for name, path in files.items():
        tree = ast.parse(path.read_text(encoding="utf-8"))
        top_level = {id(node) for node in tree.body}
        for node in ast.walk(tree):
            if isinstance(node, ast.ImportFrom) and node.module and node.module.startswith("stn_repro"):
                targets = {f"{node.module}.{alias.name}" for alias in node.names} & files.keys() or {node.module}
            elif isinstance(node, ast.Import):
                targets = {alias.name for alias in node.names if alias.name.startswith("stn_repro")}
            else:
                continue
            graph[name] |= targets - {name}
            if id(node) not in top_level and not _under_main_guard(tree, node):
                nested.extend(f"{name} -> {target}" for target in targets)
    return graph, nested


def _under_main_guard(tree: ast.Module, node: ast.AST) -> bool:
    return any(
        isinstance(top, ast.If) and "__main__" in ast.unparse(top.test) and node in list(ast.walk(top))
        for top in tree.body
    )


def cycles(graph: dict[str, set[str]]) -> list[list[str]]:
    """The strongly connected components of more than one module (Tarjan)."""
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    found: list[list[str]] = []

    def visit(node: str) -> None:
        index[node] = low[node] = len(index)
        stack.append(node)
        for target in graph.get(node, ()):
            if target not in index:
                visit(target)
                low[node] = min(low[node], low[target])
            elif target in stack:
                low[node] = min(low[node], index[target])
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


def test_the_cycle_finder_finds_a_cycle():
    assert cycles({"a": {"b"}, "b": {"c"}, "c": {"a"}, "d": {"a"}}) == [["a", "b", "c"]]
    assert cycles({"a": {"b"}, "b": set()}) == []


def test_the_package_has_no_import_cycle():
    graph, _ = import_graph()
    assert len(graph) > 50  # the walk found the package
    assert cycles(graph) == []


def test_no_module_defers_a_package_import_into_a_function():
    _, nested = import_graph()
    assert nested == []

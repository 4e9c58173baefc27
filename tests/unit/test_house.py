"""The shape of the package: no import cycle among its modules, no module over 600 lines (STYLE.md 1)."""

from __future__ import annotations

import ast
from pathlib import Path

import forgetscale

SRC = Path(forgetscale.__file__).parent
MAX_LINES = 600


def _modules() -> dict[str, Path]:
    """Dotted name -> file, for every module of the package (a package is its ``__init__.py``)."""
    out = {}
    for path in sorted(SRC.rglob("*.py")):
        parts = path.relative_to(SRC.parent).with_suffix("").parts
        out[".".join(parts[:-1] if parts[-1] == "__init__" else parts)] = path
    return out


def _is_type_checking(test: ast.expr) -> bool:
    return (isinstance(test, ast.Name) and test.id == "TYPE_CHECKING") or (
        isinstance(test, ast.Attribute) and test.attr == "TYPE_CHECKING"
    )


def _imports(tree: ast.AST) -> list[ast.Import | ast.ImportFrom]:
    """Every import statement that can run: module level *and* inside functions (a lazy import that
    closes a circle is still a circle), but not those under ``if TYPE_CHECKING:``, which never run."""
    found: list[ast.Import | ast.ImportFrom] = []

    def visit(node: ast.AST) -> None:
        if isinstance(node, ast.Import | ast.ImportFrom):
            found.append(node)
        if isinstance(node, ast.If) and _is_type_checking(node.test):
            for child in node.orelse:
                visit(child)
            return
        for child in ast.iter_child_nodes(node):
            visit(child)

    visit(tree)
    return found


def _ancestors(name: str) -> list[str]:
    parts = name.split(".")
    return [".".join(parts[:i]) for i in range(1, len(parts))]


def import_graph() -> dict[str, set[str]]:
    """Module -> the package modules importing it executes.

    Importing ``a.b.c`` from outside package ``a.b`` also runs ``a/b/__init__.py`` first, so that is an
    edge too; from inside ``a.b`` the package is already being imported, so it is not.
    """
    modules = _modules()
    graph: dict[str, set[str]] = {}
    for name, path in modules.items():
        is_package = path.name == "__init__.py"
        package = name if is_package else name.rpartition(".")[0]
        own = {*_ancestors(name), name}
        targets: set[str] = set()
        for node in _imports(ast.parse(path.read_text(encoding="utf-8"), str(path))):
            if isinstance(node, ast.Import):
                targets.update(a.name for a in node.names)
                continue
            base = node.module or ""
            if node.level:
                anchor = package.split(".")[: len(package.split(".")) - (node.level - 1)]
                base = ".".join([*anchor, *([base] if base else [])])
            for a in node.names:  # `from pkg import mod` imports the submodule pkg.mod
                targets.add(f"{base}.{a.name}" if f"{base}.{a.name}" in modules else base)
        edges = set()
        for t in targets:
            while t and t not in modules:  # `import a.b.func`-style names: the module that holds them
                t = t.rpartition(".")[0]
            if not t:
                continue
            edges.update(x for x in [*_ancestors(t), t] if x not in own)
        graph[name] = edges
    return graph


def find_cycle(graph: dict[str, set[str]]) -> list[str] | None:
    """One cycle as ``[a, b, ..., a]``, or None when the graph is acyclic."""
    state: dict[str, int] = {}  # 1: on the current path, 2: done
    path: list[str] = []

    def dfs(node: str) -> list[str] | None:
        state[node] = 1
        path.append(node)
        for nxt in sorted(graph.get(node, ())):
            if state.get(nxt) == 1:
                return [*path[path.index(nxt) :], nxt]
            if nxt not in state and (cycle := dfs(nxt)):
                return cycle
        state[node] = 2
        path.pop()
        return None

    for start in sorted(graph):
        if start not in state and (cycle := dfs(start)):
            return cycle
    return None


def test_the_cycle_finder_finds_lazy_back_imports_and_ignores_type_only_ones():
    assert find_cycle({"a": {"b"}, "b": {"c"}, "c": set()}) is None
    assert find_cycle({"a": {"b"}, "b": {"c"}, "c": {"a"}}) == ["a", "b", "c", "a"]
    tree = ast.parse(
        "import os\nfrom typing import TYPE_CHECKING\nif TYPE_CHECKING:\n    import x.typed\n"
        "def f():\n    from x import lazy\n"
    )
    assert [getattr(n, "module", None) or n.names[0].name for n in _imports(tree)] == ["os", "typing", "x"]


def test_the_graph_sees_the_package_modules():
    graph = import_graph()
    assert "forgetscale.cli" in graph and "forgetscale.errors" in graph["forgetscale.cli"]
    assert len(graph) >= 30


def test_no_import_cycle_among_package_modules():
    cycle = find_cycle(import_graph())
    assert cycle is None, "import cycle: " + " -> ".join(cycle or [])


def test_no_module_over_600_lines():
    long = {
        str(p.relative_to(SRC.parent)): n
        for p in _modules().values()
        if (n := len(p.read_text(encoding="utf-8").splitlines())) > MAX_LINES
    }
    assert not long, f"split these modules (STYLE.md 1: under ~{MAX_LINES} lines): {long}"

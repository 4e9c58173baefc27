"""The house check: the shape rules of the package (docs/architecture.md, "Keeping the package in shape").

- no import cycle among its modules, lazy (inside a function) and type-only imports counted;
- no module over :data:`MAX_LINES` lines;
- no private (``_underscored``) name imported from another module.

A package ``__init__.py`` that only hands names on (imports, re-exports, a lazy ``__getattr__``) is a
face, left out of the graph; one that defines a function or class is a module like any other.
``tests/unit/test_house.py`` runs these checks; ``python -m tests.house`` prints what breaks them
(nothing when the package is in shape) and exits 1 if anything does.
"""

from __future__ import annotations

import ast
import sys
from pathlib import Path

import forgetscale

SRC = Path(forgetscale.__file__).parent
MAX_LINES = 600
"""Split a module before it grows past this: a long module is several stages sharing a file."""


def _modules() -> dict[str, Path]:
    """Dotted name -> file, for every module of the package (a package is its ``__init__.py``)."""
    out = {}
    for path in sorted(SRC.rglob("*.py")):
        parts = path.relative_to(SRC.parent).with_suffix("").parts
        out[".".join(parts[:-1] if parts[-1] == "__init__" else parts)] = path
    return out


def _imports(tree: ast.AST) -> list[ast.Import | ast.ImportFrom]:
    """Every import statement: module level, inside functions (a lazy import that closes a circle is
    still a circle) and under ``if TYPE_CHECKING:`` (a type-only import that points up is still a layer
    pointing the wrong way: the executors <-> study circle hid there)."""
    return [n for n in ast.walk(tree) if isinstance(n, ast.Import | ast.ImportFrom)]


_LAZY = {"__getattr__", "__dir__"}  # a lazy re-export still only hands names on


def is_face(path: Path) -> bool:
    """A package ``__init__.py`` that defines no function or class of its own: it only hands names on."""
    if path.name != "__init__.py":
        return False
    tree = ast.parse(path.read_text(encoding="utf-8"), str(path))
    return not any(
        isinstance(n, ast.FunctionDef | ast.AsyncFunctionDef | ast.ClassDef) and n.name not in _LAZY for n in tree.body
    )


def _base(node: ast.ImportFrom, name: str, is_package: bool) -> str:
    """The absolute module a ``from ... import`` reads from, relative imports resolved."""
    if not node.level:
        return node.module or ""
    package = name if is_package else name.rpartition(".")[0]
    parts = package.split(".")
    anchor = parts[: len(parts) - (node.level - 1)]
    return ".".join([*anchor, *([node.module] if node.module else [])])


def _ancestors(name: str) -> list[str]:
    parts = name.split(".")
    return [".".join(parts[:i]) for i in range(1, len(parts))]


def import_graph() -> dict[str, set[str]]:
    """Module -> the package modules importing it executes, faces (:func:`is_face`) left out.

    Importing ``a.b.c`` from outside package ``a.b`` also runs ``a/b/__init__.py`` first, so that is an
    edge too; from inside ``a.b`` the package is already being imported, so it is not.
    """
    modules = _modules()
    faces = {m for m, p in modules.items() if is_face(p)}
    graph: dict[str, set[str]] = {}
    for name, path in modules.items():
        if name in faces:
            continue
        is_package = path.name == "__init__.py"
        own = {*_ancestors(name), name}
        targets: set[str] = set()
        for node in _imports(ast.parse(path.read_text(encoding="utf-8"), str(path))):
            if isinstance(node, ast.Import):
                targets.update(a.name for a in node.names)
                continue
            base = _base(node, name, is_package)
            for a in node.names:  # `from pkg import mod` imports the submodule pkg.mod
                targets.add(f"{base}.{a.name}" if f"{base}.{a.name}" in modules else base)
        edges = set()
        for t in targets:
            while t and t not in modules:  # `import a.b.func`-style names: the module that holds them
                t = t.rpartition(".")[0]
            if not t:
                continue
            edges.update(x for x in [*_ancestors(t), t] if x not in own and x not in faces)
        graph[name] = edges
    return graph


def private_imports() -> dict[str, list[str]]:
    """Module -> the ``_private`` names it imports from another module of the package (dunders aside)."""
    modules = _modules()
    out: dict[str, list[str]] = {}
    for name, path in modules.items():
        found = []
        for node in _imports(ast.parse(path.read_text(encoding="utf-8"), str(path))):
            if not isinstance(node, ast.ImportFrom):
                continue
            base = _base(node, name, path.name == "__init__.py")
            if base not in modules or base == name:
                continue
            found += [f"{base}.{a.name}" for a in node.names if a.name.startswith("_") and not a.name.startswith("__")]
        if found:
            out[str(path.relative_to(SRC.parent))] = sorted(set(found))
    return out


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


def long_modules() -> dict[str, int]:
    """Module file (relative to ``src``) -> its line count, for every module over :data:`MAX_LINES`."""
    return {
        str(p.relative_to(SRC.parent)): n
        for p in _modules().values()
        if (n := len(p.read_text(encoding="utf-8").splitlines())) > MAX_LINES
    }


def problems() -> list[str]:
    """Every breach of the rules, one line each."""
    out = []
    if cycle := find_cycle(import_graph()):
        out.append("import cycle: " + " -> ".join(cycle))
    out += [f"{path}: {n} lines (split it before ~{MAX_LINES})" for path, n in sorted(long_modules().items())]
    out += [f"{path} imports private names: {', '.join(names)}" for path, names in sorted(private_imports().items())]
    return out


def main() -> int:
    found = problems()
    print("\n".join(found) if found else "the package is in shape")
    return 1 if found else 0


if __name__ == "__main__":
    sys.exit(main())

"""The shape of the package (STYLE.md 1, 11): no import cycle among its modules, type-only imports counted;
no module over 600 lines; no private (``_underscored``) name imported from another module.

The rules are those of ``../shared/tools/house_check.py``: a package ``__init__.py`` that only hands names
on (imports, re-exports, a lazy ``__getattr__``) is a face, left out of the graph; one that defines a
function or class is a module like any other.
"""

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


def test_the_cycle_finder_finds_lazy_and_type_only_back_imports():
    assert find_cycle({"a": {"b"}, "b": {"c"}, "c": set()}) is None
    assert find_cycle({"a": {"b"}, "b": {"c"}, "c": {"a"}}) == ["a", "b", "c", "a"]
    tree = ast.parse(
        "import os\nfrom typing import TYPE_CHECKING\nif TYPE_CHECKING:\n    import x.typed\n"
        "def f():\n    from x import lazy\n"
    )
    names = sorted(getattr(n, "module", None) or n.names[0].name for n in _imports(tree))
    assert names == ["os", "typing", "x", "x.typed"]


def test_a_face_hands_names_on_and_a_package_that_defines_things_is_a_module(tmp_path):
    face = tmp_path / "face" / "__init__.py"
    face.parent.mkdir()
    face.write_text("from a import b\n__all__ = ['b']\ndef __getattr__(name):\n    return name\n")
    module = tmp_path / "module" / "__init__.py"
    module.parent.mkdir()
    module.write_text("from a import b\ndef helper():\n    return b\n")
    assert is_face(face) and not is_face(module) and not is_face(tmp_path / "plain.py")


def test_relative_imports_resolve_to_the_module_they_read():
    node = ast.parse("from ..x import _y").body[0]
    assert isinstance(node, ast.ImportFrom)
    assert _base(node, "pkg.sub.mod", is_package=False) == "pkg.x"
    assert _base(node, "pkg.sub", is_package=True) == "pkg.x"


def test_the_graph_sees_the_package_modules():
    graph = import_graph()
    assert "forgetscale.cli" in graph and "forgetscale.errors" in graph["forgetscale.cli"]
    assert len(graph) >= 30


def test_no_import_cycle_among_package_modules():
    cycle = find_cycle(import_graph())
    assert cycle is None, "import cycle: " + " -> ".join(cycle or [])


def test_no_private_name_is_imported_from_another_module():
    """A name its module marked ``_private`` and another module uses is internal API: spell it public."""
    assert not private_imports(), private_imports()


def test_no_module_over_600_lines():
    long = {
        str(p.relative_to(SRC.parent)): n
        for p in _modules().values()
        if (n := len(p.read_text(encoding="utf-8").splitlines())) > MAX_LINES
    }
    assert not long, f"split these modules (STYLE.md 1: under ~{MAX_LINES} lines): {long}"

"""The house check (``tests/house.py``) on the package, and on small cases where its answer is known."""

from __future__ import annotations

import ast

from tests.house import (
    MAX_LINES,
    _base,
    _imports,
    find_cycle,
    import_graph,
    is_face,
    long_modules,
    private_imports,
)


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


def test_a_breach_is_reported(monkeypatch, tmp_path):
    """problems() names a cycle, a long module and a private import when there are some (a fake package)."""
    import tests.house as house

    pkg = tmp_path / "pkg"
    pkg.mkdir()
    (pkg / "__init__.py").write_text("")
    (pkg / "a.py").write_text("from pkg.b import _hidden\n")
    (pkg / "b.py").write_text("import pkg.a\n_hidden = 1\n" + "x = 1\n" * MAX_LINES)
    monkeypatch.setattr(house, "SRC", pkg)
    found = house.problems()
    assert any(p.startswith("import cycle: ") and "pkg.a" in p and "pkg.b" in p for p in found), found
    assert any(p.startswith("pkg/b.py: ") and f"{MAX_LINES + 2} lines" in p for p in found), found
    assert "pkg/a.py imports private names: pkg.b._hidden" in found, found
    assert house.main() == 1


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
    long = long_modules()
    assert not long, f"split these modules (under ~{MAX_LINES} lines each): {long}"

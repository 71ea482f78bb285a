"""The layers import only from the layers below them (docs/architecture.md)."""

import ast
import pathlib

import pytest

PACKAGE = pathlib.Path(__file__).resolve().parents[1] / "fedcore"

# layer -> layers it must never import
FORBIDDEN = {
    "core": {"aggregators", "learning", "data", "testing", "cli"},
    "aggregators": {"learning", "data", "testing", "cli"},
    "learning": {"data", "testing", "cli"},
    "data": {"aggregators", "learning", "testing", "cli"},
    "testing": {"cli"},
}
# Private modules of the top package that sit below every layer: any layer may use them,
# and they import nothing of fedcore.
BELOW_EVERY_LAYER = {"_atomic"}


def _imported_layers(path: pathlib.Path) -> set[str]:
    tree = ast.parse(path.read_text())
    rel_parts = path.relative_to(PACKAGE).parts
    layers = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            names = [a.name for a in node.names]
        elif isinstance(node, ast.ImportFrom):
            if node.level:  # relative: resolve against the file's package
                base = list(rel_parts[:-1])
                base = base[: len(base) - (node.level - 1)] if node.level > 1 else base
                module = ".".join(["fedcore", *base, *(node.module.split(".") if node.module else [])])
            else:
                module = node.module or ""
            names = [module]
        else:
            continue
        for name in names:
            parts = name.split(".")
            if parts[0] == "fedcore" and len(parts) > 1:
                layers.add(parts[1])
    return layers


@pytest.mark.parametrize("layer", sorted(FORBIDDEN))
def test_layer_imports_only_from_below(layer):
    files = sorted((PACKAGE / layer).rglob("*.py"))
    assert files, f"no files in layer {layer}"
    for path in files:
        bad = _imported_layers(path) & FORBIDDEN[layer]
        assert not bad, f"{path.relative_to(PACKAGE)} imports {sorted(bad)}, above its layer {layer!r}"


@pytest.mark.parametrize("name", sorted(BELOW_EVERY_LAYER))
def test_the_modules_below_every_layer_import_no_fedcore(name):
    path = PACKAGE / f"{name}.py"
    assert path.is_file(), f"fedcore/{name}.py is listed as below every layer but does not exist"
    assert not _imported_layers(path), f"fedcore/{name}.py imports {sorted(_imported_layers(path))}"


def _module_name(path: pathlib.Path) -> str:
    parts = list(path.relative_to(PACKAGE.parent).with_suffix("").parts)
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


MODULES = {_module_name(p): p for p in sorted(PACKAGE.rglob("*.py"))}


def _imported_modules(name: str, source: str) -> set[str]:
    """The fedcore modules `name` imports anywhere (top level, in functions, under TYPE_CHECKING alike).

    `from pkg import x` counts as importing `pkg.x` when that is a module, else `pkg`.
    """
    is_package = MODULES.get(name, pathlib.Path()).name == "__init__.py"
    package = name if is_package else name.rpartition(".")[0]
    found = set()
    for node in ast.walk(ast.parse(source)):
        if isinstance(node, ast.Import):
            found |= {a.name for a in node.names if a.name in MODULES}
        elif isinstance(node, ast.ImportFrom):
            if node.level:
                base = package.split(".")
                base = base[: len(base) - (node.level - 1)]
                module = ".".join(base + (node.module.split(".") if node.module else []))
            else:
                module = node.module or ""
            for a in node.names:
                if f"{module}.{a.name}" in MODULES:
                    found.add(f"{module}.{a.name}")
                elif module in MODULES:
                    found.add(module)
    found.discard(name)
    return found


def _cycles(graph: dict[str, set[str]]) -> list[list[str]]:
    """The import cycles of `graph`: its strongly connected components of more than one module (Tarjan)."""
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    on_stack: set[str] = set()
    out = []

    def visit(v):
        index[v] = low[v] = len(index)
        stack.append(v)
        on_stack.add(v)
        for w in sorted(graph.get(v, ())):
            if w not in index:
                visit(w)
                low[v] = min(low[v], low[w])
            elif w in on_stack:
                low[v] = min(low[v], index[w])
        if low[v] == index[v]:
            component = []
            while True:
                w = stack.pop()
                on_stack.discard(w)
                component.append(w)
                if w == v:
                    break
            if len(component) > 1:
                out.append(sorted(component))

    for v in sorted(graph):
        if v not in index:
            visit(v)
    return out


def test_no_import_cycles():
    """No module imports, even lazily inside a function, a module that imports it back (e.g. a package's
    `__init__` imported from one of its own modules, or two private modules using each other)."""
    graph = {name: _imported_modules(name, path.read_text()) for name, path in MODULES.items()}
    assert "fedcore.core._intrinsics" in graph["fedcore.core"]  # the graph sees the package's imports
    assert _cycles(graph) == [], "import cycles (cut each by moving the shared piece below both)"


def test_cycle_checker_sees_a_cycle():
    src = "from ._summary import DataSummary\ndef f():\n    from . import _client_data\n"
    assert _imported_modules("fedcore.data._client_data", src) == {"fedcore.data._summary"}
    assert _imported_modules("fedcore.data._summary", src) == {"fedcore.data._client_data"}
    graph = {"a": {"b"}, "b": {"c"}, "c": {"a"}, "d": {"a"}}
    assert _cycles(graph) == [["a", "b", "c"]]
    assert _cycles({"a": {"b"}, "b": set()}) == []


def test_checker_sees_a_violation(tmp_path, monkeypatch):
    """The checker itself can fail: a core file importing learning is caught."""
    fake = PACKAGE / "core" / "x.py"
    tree_src = "from ..learning import models\nimport fedcore.data\n"
    monkeypatch.setattr(pathlib.Path, "read_text", lambda self: tree_src)
    assert _imported_layers(fake) == {"learning", "data"}

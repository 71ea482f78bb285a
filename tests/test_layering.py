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


def test_checker_sees_a_violation(tmp_path, monkeypatch):
    """The checker itself can fail: a core file importing learning is caught."""
    fake = PACKAGE / "core" / "x.py"
    tree_src = "from ..learning import models\nimport fedcore.data\n"
    monkeypatch.setattr(pathlib.Path, "read_text", lambda self: tree_src)
    assert _imported_layers(fake) == {"learning", "data"}

"""Imports run one way: base -> data -> card -> checkpoint -> models -> train -> analysis -> finetune
-> the top-level front doors, and widgets on top. The test reads every module's source (imports at
module level *and* inside functions, so a late import cannot hide a cycle) and fails on a cycle or
on an import from a higher layer."""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]

# The layers, lowest first. A module may import its own layer's modules (without a cycle) and any
# lower layer's; never a higher one.
LAYERS = [
    ("base", ["eossl.errors", "eossl.progress", "eossl.validate", "eossl.outputs", "eossl.device",
              "eossl.distributed"]),
    ("data", ["eossl.data"]),
    ("card", ["eossl.card", "eossl.checkpoint"]),
    ("models", ["eossl.models"]),
    ("train", ["eossl.train"]),
    ("analysis", ["eossl.analysis"]),
    ("finetune", ["eossl.finetune"]),
    ("front", ["eossl.plot", "eossl.datasets", "eossl.cli", "eossl.__main__", "eossl"]),
    ("widgets", ["eossl_widgets"]),
]


def _module_files() -> dict[str, Path]:
    files = {}
    for package, folder in (("eossl", ROOT / "eossl"), ("eossl_widgets", ROOT / "widgets")):
        for path in folder.rglob("*.py"):
            parts = (package, *path.relative_to(folder).with_suffix("").parts)
            name = ".".join(parts[:-1] if parts[-1] == "__init__" else parts)
            files[name] = path
    return files


FILES = _module_files()


def _imports(name: str, path: Path) -> set[str]:
    """eossl modules ``name`` imports anywhere in its file (a package import counts as its __init__)."""
    found = set()
    package = name if path.name == "__init__.py" else name.rpartition(".")[0]
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.ImportFrom):
            base = node.module or ""
            if node.level:  # relative import
                base = ".".join(package.split(".")[: len(package.split(".")) - node.level + 1] + ([base] if base else []))
            for alias in node.names:
                full = f"{base}.{alias.name}"
                found.add(full if full in FILES else base)
        elif isinstance(node, ast.Import):
            found.update(alias.name for alias in node.names)
    return {m for m in found if m in FILES and m != name}


GRAPH = {name: _imports(name, path) for name, path in FILES.items()}


def _layer(name: str) -> int:
    best, best_len = None, -1
    for i, (_, prefixes) in enumerate(LAYERS):
        for prefix in prefixes:
            if (name == prefix or name.startswith(prefix + ".")) and len(prefix) > best_len:
                best, best_len = i, len(prefix)
    assert best is not None, f"{name} is in no layer: add it to LAYERS in {__file__}"
    return best


def test_every_module_has_a_layer():
    for name in FILES:
        _layer(name)


def test_no_import_goes_up_a_layer():
    upward = [f"{a} ({LAYERS[_layer(a)][0]}) imports {b} ({LAYERS[_layer(b)][0]})"
              for a, targets in GRAPH.items() for b in targets if _layer(b) > _layer(a)]
    assert not upward, "imports against the layer order:\n" + "\n".join(sorted(upward))


def _cycle() -> list[str] | None:
    state: dict[str, int] = {}  # 1: on the current path, 2: done
    path: list[str] = []

    def visit(node):
        state[node] = 1
        path.append(node)
        for nxt in sorted(GRAPH[node]):
            if state.get(nxt) == 1:
                return path[path.index(nxt):] + [nxt]
            if nxt not in state:
                found = visit(nxt)
                if found:
                    return found
        path.pop()
        state[node] = 2
        return None

    for node in sorted(GRAPH):
        if node not in state:
            found = visit(node)
            if found:
                return found
    return None


def test_no_import_cycle():
    cycle = _cycle()
    assert cycle is None, "import cycle: " + " -> ".join(cycle)


def test_the_checker_sees_a_cycle_and_a_late_import(monkeypatch):
    # the walk reads imports inside functions too, and finds a cycle through them
    assert "eossl.analysis.embed" in GRAPH["eossl.analysis.scene_scale"]
    monkeypatch.setitem(GRAPH, "eossl.data.units", GRAPH["eossl.data.units"] | {"eossl.card"})
    assert _cycle() is not None


@pytest.mark.parametrize("name", ["ipywidgets", "leafmap", "holoviews", "bokeh", "ipyleaflet", "eossl_widgets"])
def test_eossl_never_imports_widget_packages(name):
    offenders = []
    for module, path in FILES.items():
        if not module.startswith("eossl_widgets"):
            for node in ast.walk(ast.parse(path.read_text())):
                names = ([a.name for a in node.names] if isinstance(node, ast.Import)
                         else [node.module or ""] if isinstance(node, ast.ImportFrom) else [])
                if any(n == name or n.startswith(name + ".") for n in names):
                    offenders.append(module)
    assert not offenders, f"{name} imported by {offenders}"


def test_widgets_only_display_no_scikit_learn_in_them():
    offenders = [m for m, path in FILES.items() if m.startswith("eossl_widgets")
                 and any((isinstance(n, ast.Import) and any(a.name.split(".")[0] == "sklearn" for a in n.names))
                         or (isinstance(n, ast.ImportFrom) and (n.module or "").split(".")[0] == "sklearn")
                         for n in ast.walk(ast.parse(path.read_text())))]
    assert not offenders, f"widgets fitting their own models: {offenders} (put the analysis in eossl.analysis)"


def test_import_eossl_leaves_scikit_learn_umap_and_pyplot_for_first_use():
    """`import eossl` is paid by every kernel, CLI call and worker; scikit-learn (~2 s here),
    umap-learn and matplotlib.pyplot (~0.8 s) load inside the functions that use them."""
    import subprocess
    import sys
    code = ("import sys, eossl; "
            "print(sorted(m for m in ('sklearn', 'umap', 'numba', 'matplotlib.pyplot') if m in sys.modules))")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "[]", out.stdout

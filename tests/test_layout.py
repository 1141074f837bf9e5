"""The package's shape: a light `import cipm`, no import cycles, no shadowed subpackages,
small modules."""

from __future__ import annotations

import ast
import importlib
import pkgutil
import subprocess
import sys
from pathlib import Path

import cipm

ROOT = Path(cipm.__file__).parent
HEAVY = (
    "scipy.optimize",
    "matplotlib",
    "torch_geometric",
    "onnx",
    "onnxruntime",
    "transformers",
    "flwr",
    "ray",
)


def modules() -> list[str]:
    names = ["cipm"]
    names += [m.name for m in pkgutil.walk_packages([str(ROOT)], prefix="cipm.")]
    return sorted(names)


def source(name: str) -> Path:
    path = ROOT.joinpath(*name.split(".")[1:])
    return path / "__init__.py" if path.is_dir() else path.with_suffix(".py")


def test_import_cipm_imports_nothing_heavy() -> None:
    code = (
        "import sys, cipm\n"
        "cipm.list_plugins()\n"
        f"print([m for m in sys.modules if m.startswith({HEAVY!r})])"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "[]"


def test_no_name_shadows_a_subpackage_or_module() -> None:
    """`cipm.alignment` is the package and `cipm.align` the function: no attribute of a
    package hides one of its submodules (a face re-exporting a same-named function would)."""
    for name in modules():
        parent, _, child = name.rpartition(".")
        module = importlib.import_module(name)
        if parent:
            assert getattr(sys.modules[parent], child) is module, name


def _imports(name: str) -> set[str]:
    """cipm modules `name` imports when it is imported (not inside functions or under
    TYPE_CHECKING)."""
    tree = ast.parse(source(name).read_text())
    found: set[str] = set()
    for node in tree.body:
        if isinstance(node, ast.ImportFrom) and node.module and node.module.startswith("cipm"):
            for alias in node.names:
                full = f"{node.module}.{alias.name}"
                found.add(full if full in set(modules()) else node.module)
        elif isinstance(node, ast.Import):
            found |= {a.name for a in node.names if a.name.startswith("cipm")}
    return found - {name}


def test_no_import_cycle_at_import_time() -> None:
    graph = {name: _imports(name) for name in modules()}
    done: set[str] = set()

    def visit(name: str, path: list[str]) -> None:
        assert name not in path, f"import cycle: {' -> '.join([*path, name])}"
        if name in done:
            return
        for dep in sorted(graph.get(name, ())):
            visit(dep, [*path, name])
        done.add(name)

    for name in graph:
        visit(name, [])


def test_no_module_over_300_lines() -> None:
    long = {n: c for n in modules() if (c := len(source(n).read_text().splitlines())) > 300}
    assert not long, long

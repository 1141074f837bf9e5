"""The package's shape: a light `import cipm`, no import cycles (imports inside functions
counted), rooms that only import downward, plugins that use only the public API and the
plugin contract, short signatures, no shadowed subpackages, small modules."""

from __future__ import annotations

import ast
import dataclasses
import importlib
import inspect
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
# The one place imports inside functions are allowed: optional extras, loaded at first use.
LAZY = {
    ("cipm.meta", "cipm.meta.analyzer"): "torch-geometric, torchsort: pip install 'cipm[meta]'",
    ("cipm.meta.builtin", "cipm.meta.analyzer"): "the same: the learned methods' network",
    ("cipm.cli.meta", "cipm.meta.analyzer"): "the same, for `cipm meta`",
    ("cipm.cli.meta", "cipm.meta.evaluate"): "the same, for `cipm meta eval`",
    ("cipm.cli.meta", "cipm.meta.zoo"): "scikit-learn, mnist1d: pip install 'cipm[data]'",
    ("cipm.federated", "cipm.federated.strategy"): "Flower: pip install 'cipm[federated]'",
}
# Rooms from the ground up; a room imports only rooms on lower floors (or its own).
FLOORS = (
    ("errors", "version"),
    ("batches", "examples", "graph", "hooks", "io"),
    ("tensors",),
    ("discovery",),
    ("statistics",),
    ("alignment", "merging", "ordering", "pruning"),
    ("exporting",),
    ("meta",),
    ("federated", "plugin"),
    ("cli",),
    ("cipm",),  # the package face
    ("plugins",),  # built-in plugins: the public API and the plugin contract only
)
ARROWS_UP: set[tuple[str, str]] = set()  # at most 2, each with its reason


def modules() -> list[str]:
    names = ["cipm"]
    names += [m.name for m in pkgutil.walk_packages([str(ROOT)], prefix="cipm.")]
    return sorted(names)


def source(name: str) -> Path:
    path = ROOT.joinpath(*name.split(".")[1:])
    return path / "__init__.py" if path.is_dir() else path.with_suffix(".py")


def _imports(name: str) -> dict[str, bool]:
    """cipm modules `name` imports, anywhere (under ``if TYPE_CHECKING:`` too: an import for
    annotations ties modules as much as any), each with whether it is inside a function."""
    known = set(modules())
    found: dict[str, bool] = {}

    def visit(node: ast.AST, inside: bool) -> None:
        for child in ast.iter_child_nodes(node):
            deeper = inside or isinstance(child, ast.FunctionDef | ast.AsyncFunctionDef)
            if isinstance(child, ast.ImportFrom) and (child.module or "").startswith("cipm"):
                assert child.module is not None
                for alias in child.names:
                    full = f"{child.module}.{alias.name}"
                    target = full if full in known else child.module
                    found[target] = found.get(target, False) or deeper
            elif isinstance(child, ast.Import):
                for alias in child.names:
                    if alias.name.startswith("cipm"):
                        found[alias.name] = found.get(alias.name, False) or deeper
            visit(child, deeper)

    visit(ast.parse(source(name).read_text()), False)
    found.pop(name, None)
    return found


def _room(name: str) -> str:
    return name.split(".")[1] if "." in name else name


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


def test_no_import_cycle() -> None:
    graph = {name: set(_imports(name)) for name in modules()}
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


def test_imports_inside_functions_are_only_the_listed_extras() -> None:
    inner = {(m, d) for m in modules() for d, inside in _imports(m).items() if inside}
    assert inner == set(LAZY), inner ^ set(LAZY)


def test_rooms_only_import_downward() -> None:
    floor = {room: i for i, rooms in enumerate(FLOORS) for room in rooms}
    assert {_room(m) for m in modules()} <= set(floor), "a room without a floor"
    up = {
        (_room(m), _room(d))
        for m in modules()
        for d in _imports(m)
        if floor[_room(d)] > floor[_room(m)]
    }
    assert up == ARROWS_UP and len(ARROWS_UP) <= 2, up


def test_plugins_use_only_the_public_api_and_the_plugin_contract() -> None:
    allowed = {"cipm", "cipm.plugin"}
    for name in modules():
        if name.startswith("cipm.plugins."):
            deeper = {d for d in _imports(name) if d not in allowed}
            assert all(d.startswith("cipm.plugins.") for d in deeper), (name, deeper)


def _public_callables() -> dict[str, object]:
    """Every function and public method the package faces export (`__all__` of `cipm`, of
    each subpackage, and of `cipm.plugin`), by qualified name; data classes' generated
    constructors are data, not functions, and are left out."""
    faces = ["cipm", "cipm.plugin"]
    faces += [f"cipm.{m.name}" for m in pkgutil.iter_modules([str(ROOT)]) if m.ispkg]
    found: dict[str, object] = {}
    for face in faces:
        module = importlib.import_module(face)
        for name in getattr(module, "__all__", ()):
            obj = getattr(module, name)
            if inspect.isfunction(obj):
                found[f"{face}.{name}"] = obj
            elif inspect.isclass(obj):
                for attr, value in vars(obj).items():
                    fn = getattr(value, "__func__", value)
                    data = attr == "__init__" and dataclasses.is_dataclass(obj)
                    if (
                        inspect.isfunction(fn)
                        and (attr == "__init__" or attr[0] != "_")
                        and not data
                    ):
                        found[f"{face}.{name}.{attr}"] = fn
    return found


def test_no_public_function_takes_more_than_six_parameters_besides_a_config() -> None:
    long = {}
    for name, fn in _public_callables().items():
        params = [
            p
            for p in inspect.signature(fn).parameters.values()  # type: ignore[arg-type]
            if p.name not in ("self", "cls", "config")
            and p.kind not in (p.VAR_POSITIONAL, p.VAR_KEYWORD)
        ]
        if len(params) > 6:
            long[name] = [p.name for p in params]
    assert not long, long


def test_no_module_over_300_lines() -> None:
    long = {n: c for n in modules() if (c := len(source(n).read_text().splitlines())) > 300}
    assert not long, long

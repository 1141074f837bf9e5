"""Symmetries a module declares (`cipm_module_groups`), admitted only once they are shown
to hold.

The per-op rules see dims; a mixture of experts' expert axis lives in the *values* of the
router's top-k indices, so the rules fix it. A plugin that knows the module names the dims
that permute together. The trace admits the declaration when the solved axes agree (no
undeclared tensor dim is tied to it, every activation carrying it lies inside the module,
none reaches the outputs) and a random permutation of it leaves the module's output on the
traced inputs the same; otherwise a `CipmWarning` says why and the ops' answer stands.
"""

from __future__ import annotations

import warnings
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field, replace
from typing import Any

import torch
from torch.utils._pytree import tree_flatten

from cipm.batches import as_args
from cipm.discovery.axes import AxisSolver
from cipm.discovery.program import eval_semantics
from cipm.discovery.rules import Axes, ModuleGroup
from cipm.errors import CipmWarning, PluginError
from cipm.graph.layout import groups_in
from cipm.graph.parts import GroupKind
from cipm.graph.symmetry import SymmetryGraph
from cipm.hooks.manager import hook_caller

__all__ = ["Declared", "admitted", "declarations", "objections", "roots"]

_TOLERANCE = {torch.float64: 1e-9, torch.float32: 1e-5}  # relative; others: 1e-2


@dataclass(frozen=True)
class Declared:
    """A `ModuleGroup` placed in a model: the module's path and its members' full keys."""

    module: str
    group: ModuleGroup
    size: int
    keys: tuple[tuple[str, int], ...] = field(init=False)

    def __post_init__(self) -> None:
        prefix = f"{self.module}." if self.module else ""
        object.__setattr__(self, "keys", tuple((prefix + n, d) for n, d in self.group.members))

    @property
    def name(self) -> str:
        return f"{self.module or 'model'}:{self.group.kind.value}"


def declarations(model: torch.nn.Module, blocked: tuple[str, ...]) -> list[Declared]:
    """Every module's declared groups.

    Raises:
        PluginError: a plugin returned something other than `ModuleGroup`s, or named a
            tensor or dim the module does not have, or dims of different sizes.
    """
    hook = hook_caller("cipm_module_groups", blocked)
    found: list[Declared] = []
    for path, module in model.named_modules():
        for result in hook(module=module):
            for group in result or ():
                found.append(_placed(path, module, group))
    return found


def _placed(path: str, module: torch.nn.Module, group: Any) -> Declared:
    where = f"cipm_module_groups for module '{path or type(module).__name__}'"
    if not isinstance(group, ModuleGroup) or not group.members:
        raise PluginError(f"{where} must return ModuleGroups with members, got {group!r}")
    tensors = _tensors(module)
    sizes, members = set(), []
    for name, dim in group.members:
        t = tensors.get(name)
        if t is None or not -t.ndim <= dim < t.ndim:
            raise PluginError(f"{where} names ({name!r}, {dim}), which the module does not have")
        sizes.add(int(t.shape[dim]))
        members.append((name, dim % t.ndim))
    if len(sizes) != 1:
        raise PluginError(f"{where} declares dims of different sizes {sorted(sizes)}")
    return Declared(path, replace(group, members=tuple(members)), sizes.pop())


def _tensors(module: torch.nn.Module) -> dict[str, torch.Tensor]:
    return {**dict(module.named_parameters()), **dict(module.named_buffers())}


def admitted(
    build: Callable[[Mapping[int, tuple[str, GroupKind]]], SymmetryGraph],
    declared: list[Declared],
    solver: AxisSolver,
    params: Mapping[str, Axes],
    model: torch.nn.Module,
    example_inputs: Any,
) -> SymmetryGraph:
    """`build`'s graph with every declared group that holds (`build` takes the solver
    classes to make groups of, with their names and kinds); each one that does not is named
    in a `CipmWarning` and left to what the ops say."""
    while True:
        placed = roots(declared, solver, params)
        graph = build({root: (d.name, d.group.kind) for root, d in placed.items()})
        failed = objections(graph, list(dict.fromkeys(placed.values())), model, example_inputs)
        if not failed:
            return graph
        for d, reason in failed.items():
            tensors = ", ".join(f"{key} dim {dim}" for key, dim in d.keys)
            warnings.warn(
                f"module '{d.module or type(model).__name__}' declares {tensors} one group "
                f"of {d.group.kind.value} units, but {reason}; it is left out",
                CipmWarning,
                stacklevel=5,
            )
        declared = [d for d in declared if d not in failed]


def roots(
    declared: list[Declared], solver: AxisSolver, params: Mapping[str, Axes]
) -> dict[int, Declared]:
    """The solver class of each declaration's members (the declarations whose members all
    appear in the traced program; one class per declaration is not required: the members
    may sit in several classes, which the declaration then joins)."""
    found: dict[int, Declared] = {}
    for d in declared:
        if all(k in params for k, _ in d.keys):
            for key, dim in d.keys:
                found.setdefault(solver.find(params[key][dim]), d)
    return found


def objections(
    graph: SymmetryGraph, declared: list[Declared], model: torch.nn.Module, example_inputs: Any
) -> dict[Declared, str]:
    """Why each declaration that does not hold fails: structure first, then numbers."""
    found: dict[Declared, str] = {}
    for d in declared:
        reason = _structure(graph, d)
        if reason is not None:
            found[d] = reason
    numeric = [d for d in declared if d not in found]
    if numeric:
        found.update(_numbers(model, numeric, example_inputs))
    return found


def _structure(graph: SymmetryGraph, d: Declared) -> str | None:
    group = next((g for g in graph if g.name == d.name), None)
    if group is None:
        return "no activation of the traced program carries it"
    named = set(d.keys)
    extra = sorted(f"{m.key} dim {m.dim}" for m in group.members if (m.key, m.dim) not in named)
    if extra:
        return f"the ops tie it to {', '.join(extra[:3])}, which the declaration does not name"
    inside = d.module + "." if d.module else ""
    outside = [s.module for s in group.sites if not (s.module + ".").startswith(inside)]
    if outside:
        return f"its units reach module '{outside[0]}', outside the module"
    if any(d.name in groups_in(a.layout) for a in graph.outputs):
        return "the model returns its units"
    return None


def _numbers(
    model: torch.nn.Module, declared: list[Declared], example_inputs: Any
) -> dict[Declared, str]:
    """Run the model once to capture each module's inputs, then each module with its
    declared group permuted at random: outputs must agree to the dtype's tolerance."""
    modules = dict(model.named_modules())
    calls: dict[str, tuple[tuple[Any, ...], dict[str, Any]]] = {}
    handles = [
        modules[d.module].register_forward_pre_hook(
            lambda m, a, k, path=d.module: calls.setdefault(path, (a, k)) and None,
            with_kwargs=True,
        )
        for d in declared
    ]
    args, kwargs = as_args(example_inputs)
    try:
        with torch.no_grad(), eval_semantics(model, warn=False):
            model(*args, **kwargs)
            return {
                d: reason
                for d in declared
                if (reason := _permuted_differs(modules[d.module], d, calls.get(d.module)))
            }
    except Exception as e:  # the model fails eagerly where it exported: nothing is shown
        return dict.fromkeys(declared, f"the model does not run on the traced inputs ({e})")
    finally:
        for h in handles:
            h.remove()


def _permuted_differs(
    module: torch.nn.Module, d: Declared, call: tuple[tuple[Any, ...], dict[str, Any]] | None
) -> str | None:
    if call is None:
        return "the module does not run on the traced inputs"
    g = torch.Generator().manual_seed(0)
    perm = torch.randperm(d.size, generator=g)
    if d.size > 1 and bool((perm == torch.arange(d.size)).all()):
        perm = perm.roll(1)
    tensors = _tensors(module)
    permuted: dict[str, torch.Tensor] = {}
    for name, dim in d.group.members:
        t = permuted.get(name, tensors[name])
        permuted[name] = t.index_select(dim, perm.to(t.device))
    before = tree_flatten(module(*call[0], **call[1]))[0]
    after = tree_flatten(torch.func.functional_call(module, permuted, call[0], call[1]))[0]
    for a, b in zip(before, after, strict=True):
        if not isinstance(a, torch.Tensor) or not a.is_floating_point():
            continue
        if a.shape != b.shape:
            return f"a permuted module returns shape {tuple(b.shape)}, not {tuple(a.shape)}"
        scale = float(a.abs().max()) if a.numel() else 0.0
        error = float((a - b).abs().max()) / max(scale, 1e-30) if a.numel() else 0.0
        if error > _TOLERANCE.get(a.dtype, 1e-2):
            return f"a random permutation of it changes the module's output (relative {error:.1e})"
    return None

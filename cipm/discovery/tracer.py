"""`cipm.trace`: export a model with torch.export and solve its symbolic axes.

The pass is a loop over the exported graph's nodes, as torch.fx passes are: placeholders get
fresh atoms (parameters and buffers free, user inputs fixed), each call runs its op's rule,
outputs are fixed, as is a non-persistent buffer (LLaMA's rotary ``inv_freq``), which no
checkpoint stores. The solved atoms become a `SymmetryGraph` in `cipm.discovery.build`.
"""

from __future__ import annotations

import operator
import warnings
from collections.abc import Mapping
from dataclasses import dataclass, field, replace
from typing import Any, Literal

import torch
from torch.export import ExportedProgram
from torch.export.graph_signature import InputKind, OutputKind

from cipm.discovery.axes import AxisSolver
from cipm.discovery.build import build_graph
from cipm.discovery.declared import admitted, declarations
from cipm.discovery.nodes import bind, module_path, op_name, output_shapes, single, source_line
from cipm.discovery.primitives import freeze, in_place_rule
from cipm.discovery.program import program_of
from cipm.discovery.rules import Axes, OpCall, Rule
from cipm.errors import CipmError, CipmWarning, RuleError, UnsupportedOpError
from cipm.graph.symmetry import SymmetryGraph
from cipm.hooks.manager import for_op, op_roles, op_rules
from cipm.tensors.fitted import structure

__all__ = ["trace"]

Unknown = Literal["error", "freeze"]
Outputs = Literal["fixed", "free"]

# Ops that only check metadata at run time: no tensor flows through them.
_CHECKS = ("aten._assert", "aten.sym_constrain_range")


def trace(
    model: torch.nn.Module,
    example_inputs: Any,
    *,
    unknown: Unknown = "error",
    outputs: Outputs = "fixed",
    blocked_plugins: tuple[str, ...] = (),
) -> SymmetryGraph:
    """Find the permutation symmetries of `model` automatically.

    Args:
        model: any ``torch.nn.Module``; it is traced in eval semantics and left as it came.
        example_inputs: a tensor, a tuple of positional inputs, or a dict of keyword inputs.
        unknown: ``"error"`` raises `UnsupportedOpError` on an op with no rule;
            ``"freeze"`` fixes every axis such an op touches (fewer symmetries, still exact).
        outputs: ``"fixed"`` (the default): permuting never changes what the model returns.
            ``"free"``: groups may reach the outputs (a residual stream that a model returns
            as its embeddings), so a permuted model returns permuted outputs, which
            `Permutation.restore_output` puts back in the original order.
        blocked_plugins: names of plugins not to use, for tracing and for every hook later
            called for this graph's model (the graph records them).

    Returns:
        The model's `SymmetryGraph`.

    Raises:
        TraceError: torch.export failed (the cause is chained).
        UnsupportedOpError: an op has no rule and ``unknown="error"``.
        PluginError: a blocked name is no plugin's, or a plugin returned something malformed.

    Example:
        >>> import torch, cipm
        >>> layers = torch.nn.Linear(4, 8), torch.nn.ReLU(), torch.nn.Linear(8, 2)
        >>> mlp = torch.nn.Sequential(*layers).eval()
        >>> [(g.name, g.size) for g in cipm.trace(mlp, torch.randn(3, 4))]
        [('0:hidden', 8)]
    """
    if unknown not in ("error", "freeze"):
        raise CipmError(f"unknown must be 'error' or 'freeze', not {unknown!r}")
    if outputs not in ("fixed", "free"):
        raise CipmError(f"outputs must be 'fixed' or 'free', not {outputs!r}")
    if not isinstance(model, torch.nn.Module):
        raise CipmError(f"cipm.trace needs a torch.nn.Module, got {type(model).__name__}")
    blocked = tuple(sorted(set(blocked_plugins)))
    rules = op_rules(blocked=blocked)
    views = {op: role for op, role in op_roles(blocked).items() if role == "view"}
    program = program_of(model, example_inputs)
    state = _propagate(program, rules, views, unknown, outputs)
    _tie_shared(state, model)
    solved = (state.solver, state.params, state.activations, state.outputs, state.consumed)
    graph = admitted(
        lambda declared: build_graph(type(model).__name__, *solved, declared),
        declarations(model, blocked),
        state.solver,
        state.params,
        model,
        example_inputs,
    )
    return replace(
        graph, blocked_plugins=blocked, structure=structure(model), example_inputs=example_inputs
    )


def _tie_shared(state: _State, model: torch.nn.Module) -> None:
    """Names that hold one tensor (tied weights) are one set of axes."""
    tensors: dict[str, torch.Tensor] = dict(model.named_parameters(remove_duplicate=False))
    tensors.update(model.named_buffers(remove_duplicate=False))
    first: dict[int, Axes] = {}
    for key, axes in state.params.items():
        t = tensors.get(key)
        if t is None:
            continue
        seen = first.setdefault(id(t), axes)
        for a, b in zip(seen, axes, strict=True):
            state.solver.unify(a, b)


@dataclass
class _State:
    rules: dict[str, Rule]
    views: Mapping[str, str]  # ops that only re-view a tensor (role "view")
    unknown: Unknown
    free_outputs: bool
    root: torch.nn.Module  # the exported graph module, which owns any subgraphs
    solver: AxisSolver = field(default_factory=AxisSolver)
    values: dict[torch.fx.Node, Any] = field(default_factory=dict)  # node -> Axes | list
    params: dict[str, Axes] = field(default_factory=dict)  # state key -> atoms
    keys: dict[torch.fx.Node, list[str]] = field(default_factory=dict)  # placeholder -> keys
    consumed: set[tuple[str, int]] = field(default_factory=set)  # (key, dim) summed over
    activations: list[tuple[torch.fx.Node, list[Axes | None]]] = field(default_factory=list)
    outputs: list[Axes | None] = field(default_factory=list)  # user outputs, in order

    def axes_of(self, v: Any) -> Axes | None:
        got = self.values.get(v) if isinstance(v, torch.fx.Node) else None
        return got if isinstance(got, tuple) else None


def _propagate(
    program: ExportedProgram,
    rules: dict[str, Rule],
    views: Mapping[str, str],
    unknown: Unknown,
    outputs: Outputs,
) -> _State:
    state = _State(rules, views, unknown, outputs == "free", program.graph_module)
    specs: dict[str, list[Any]] = {}  # placeholder -> its specs (tied weights have several)
    for spec in program.graph_signature.input_specs:
        if hasattr(spec.arg, "name"):
            specs.setdefault(spec.arg.name, []).append(spec)
    for node in program.graph.nodes:
        if node.op == "placeholder":
            _placeholder(state, node, specs.get(node.name, []))
        elif node.op == "call_function":
            _call(state, node)
        elif node.op == "output":
            _output(state, node, program)
        elif node.op != "get_attr":  # get_attr: subgraphs, read where they are called
            raise UnsupportedOpError(
                f"{node.op} {node.target}", module_path(node), source_line(node)
            )
    return state


def _inline(state: _State, node: torch.fx.Node, graph: torch.fx.Graph, operands: list[Any]) -> None:
    """A call of a subgraph (torch.export's wrap_with_set_grad_enabled / autocast regions):
    its placeholders are the operands, its nodes are traced like any others (but are not
    activation sites: they don't exist in the top-level graph), its outputs are the call's."""
    placeholders = [n for n in graph.nodes if n.op == "placeholder"]
    for inner, outer in zip(placeholders, operands, strict=True):
        state.values[inner] = state.values.get(outer) if isinstance(outer, torch.fx.Node) else None
    for inner in graph.nodes:
        if inner.op == "call_function":
            _call(state, inner, site=False)
        elif inner.op == "output":
            results = inner.args[0] if isinstance(inner.args[0], tuple | list) else (inner.args[0],)
            state.values[node] = [state.axes_of(r) for r in results]


def _subgraph(state: _State, node: torch.fx.Node) -> tuple[torch.fx.Graph, list[Any]] | None:
    """The subgraph a higher-order op calls, and its operands (the arguments after it)."""
    for i, arg in enumerate(node.args):
        if isinstance(arg, torch.fx.Node) and arg.op == "get_attr":
            module = getattr(state.root, str(arg.target), None)
            if isinstance(module, torch.fx.GraphModule):
                return module.graph, list(node.args[i + 1 :])
    return None


def _placeholder(state: _State, node: torch.fx.Node, specs: list[Any]) -> None:
    val = node.meta.get("val")
    if not isinstance(val, torch.Tensor):
        return
    axes = tuple(state.solver.new(n) for n in val.shape)
    state.values[node] = axes
    state_specs = [s for s in specs if s.kind in (InputKind.PARAMETER, InputKind.BUFFER)]
    for spec in state_specs:
        state.params[spec.target] = axes
    state.keys[node] = [s.target for s in state_specs]
    if not state_specs or any(s.persistent is False for s in state_specs):
        state.solver.fix(*axes)  # user inputs, constants, and state no checkpoint carries


def _output(state: _State, node: torch.fx.Node, program: ExportedProgram) -> None:
    results = node.args[0] if isinstance(node.args[0], tuple | list) else (node.args[0],)
    for spec, value in zip(program.graph_signature.output_specs, results, strict=False):
        axes = state.axes_of(value)
        if axes is None:
            if spec.kind == OutputKind.USER_OUTPUT:
                state.outputs.append(None)
            continue
        if spec.kind == OutputKind.BUFFER_MUTATION and spec.target in state.params:
            for a, b in zip(axes, state.params[spec.target], strict=True):
                state.solver.unify(a, b)
            continue
        if spec.kind == OutputKind.USER_OUTPUT:
            state.outputs.append(axes)
            if state.free_outputs:
                continue
        state.solver.fix(*axes)


def _call(state: _State, node: torch.fx.Node, site: bool = True) -> None:
    if node.target is operator.getitem:
        source, index = node.args
        value = state.values.get(source, [None] * (index + 1))[index]  # type: ignore
        state.values[node] = value
        if site and isinstance(value, tuple) and node.users:  # one output of a tuple result
            state.activations.append((node, [value]))
        return
    subgraph = _subgraph(state, node)
    if subgraph is not None:
        _inline(state, node, *subgraph)
        return
    op = op_name(node.target)
    outputs = output_shapes(node.meta.get("val"))
    if op.startswith(_CHECKS) or (all(s is None for s in outputs) and not node.users):
        return
    schema = getattr(node.target, "_schema", None)
    positional = [a.name for a in schema.arguments] if schema else []
    args = bind(node, schema)
    call = OpCall(node.name, op, args, positional, outputs, state)
    rule = for_op(state.rules, op) or in_place_rule(state.rules, op, schema)
    if rule is None:
        if state.unknown == "error":
            raise UnsupportedOpError(op, module_path(node), source_line(node))
        rule = freeze
    try:
        with state.solver.transaction():
            rule(call)
            results = call.outputs()
    except Exception as e:  # a rule's own bug or a case it does not cover
        where = f"node '{node.name}' in module '{module_path(node)}'"
        if state.unknown == "error":
            raise RuleError(
                f"the symmetry rule for {op} failed on {where}: {e}. Pass unknown='freeze' to "
                "cipm.trace to treat this call's axes as fixed (always correct, fewer "
                "symmetries), and report it to the rule's plugin"
            ) from e
        warnings.warn(
            f"the symmetry rule for {op} failed on {where} ({e}); its axes are fixed",
            CipmWarning,
            stacklevel=4,
        )
        call = OpCall(node.name, op, args, positional, outputs, state)
        freeze(call)
        results = call.outputs()
    state.values[node] = results[0] if single(node.meta.get("val")) else results
    if call.contracted:
        _record_consumed(state, node, call.contracted, results)
    if site:
        state.activations.append((node, results))


def _record_consumed(
    state: _State, node: torch.fx.Node, atoms: set[int], results: list[Axes | None]
) -> None:
    """Parameter axes this call sums over: a contracted atom of a parameter (or of a view of
    one) that is an argument of this very call. An activation carries its producer's output
    atom too, so being contracted somewhere is not enough. Such a weight's other axes that
    reach the output are units this call makes (``x @ w.T`` is a layer as ``linear`` is)."""
    find = state.solver.find
    out = {find(a) for axes in results if axes is not None for a in axes}
    for arg in node.all_input_nodes:
        while arg.op == "call_function" and for_op(state.views, op_name(arg.target)):
            arg = arg.all_input_nodes[0]
        for key in state.keys.get(arg, ()):
            axes = state.params[key]
            if not any(atom in atoms for atom in axes):
                continue
            for dim, atom in enumerate(axes):
                if atom in atoms:
                    state.consumed.add((key, dim))
                elif find(atom) in out and len(axes) == 2:
                    state.solver.tag(atom, "hidden")
                    state.solver.tag(atom, f"made:{node.name}")

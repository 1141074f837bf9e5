"""The primitives rule plugins are written with: common rules (`same_as_input`, `freeze`,
`in_place`) and the axes of broadcasts and reshapes, all stated through an `OpCall`."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

from cipm.discovery.axes import Atom
from cipm.discovery.refine import refine_product
from cipm.discovery.rules import Axes, OpCall, Rule, TensorRef
from cipm.errors import RuleError

__all__ = [
    "broadcast",
    "broadcast_axes",
    "freeze",
    "in_place",
    "in_place_rule",
    "reshape_axes",
    "same_as_input",
]


def same_as_input(call: OpCall) -> None:
    """Output has the input's axes (unary elementwise, dropout, clone, contiguous, casts)."""
    call.set_output(call.tensor(0).axes)


def in_place(functional: Rule) -> Rule:
    """The rule of an in-place op (``relu_``, ``add_``) from its functional op's rule: the
    result is the mutated argument itself, so their axes are one; where the functional rule
    fixes the result, the argument is fixed too."""

    def rule(call: OpCall) -> None:
        functional(call)
        target, result = call.tensor(0), call.output_axes(0)
        if result is None:
            call.fix(*target.axes)
        else:
            call.unify_all(target.axes, result)

    return rule


def in_place_rule(rules: Mapping[str, Rule], op: str, schema: Any) -> Rule | None:
    """An in-place op (``aten.silu_``, ``aten.add_.Tensor``) takes its functional op's rule."""
    first = schema.arguments[0] if schema is not None and schema.arguments else None
    alias = getattr(first, "alias_info", None)
    packet, _, overload = op.rpartition(".")
    if alias is None or not alias.is_write or not packet.endswith("_"):
        return None
    functional = rules.get(f"{packet[:-1]}.{overload}") or rules.get(packet[:-1])
    return in_place(functional) if functional is not None else None


def freeze(call: OpCall) -> None:
    """Fix every axis of every tensor argument; outputs get fixed axes."""
    for ref in call.all_tensors():
        call.fix(*ref.axes)


def broadcast_axes(
    call: OpCall, refs: Sequence[TensorRef | None], shape: Sequence[int]
) -> list[Atom]:
    """Atoms of a broadcast result of `shape`: right-aligned dims of size > 1 are one axis.

    A dim where every operand has size 1 (or none reaches) is new and free: the operands are
    constant along it.
    """
    out: list[Atom | None] = [None] * len(shape)
    for ref in refs:
        if ref is None:
            continue
        offset = len(shape) - ref.ndim
        for d, (n, atom) in enumerate(zip(ref.shape, ref.axes, strict=True)):
            if n == 1 and shape[offset + d] != 1:
                continue
            current = out[offset + d]
            if current is None:
                out[offset + d] = atom
            else:
                call.unify(current, atom)
    return [a if a is not None else call.new(n) for a, n in zip(out, shape, strict=True)]


def broadcast(call: OpCall, refs: Sequence[TensorRef | None], index: int = 0) -> Axes:
    """Elementwise with broadcasting: sets and returns the atoms of output `index`."""
    shape = call.output_shapes[index]
    if shape is None:
        raise RuleError(f"{call.op}: output {index} is not a tensor")
    axes = tuple(broadcast_axes(call, refs, shape))
    call.set_output(axes, index)
    return axes


def reshape_axes(call: OpCall, ref: TensorRef, shape: Sequence[int]) -> Axes:
    """Atoms of `ref` viewed with a new `shape` (row-major): merges become products.

    Dims are cut into the finest common factorization of both shapes; a dim that spans several
    factors is their product. Shapes that don't nest that way (6x4 -> 4x6) fix both sides.
    """
    shape = [int(s) for s in shape]
    in_dims = [(n, a) for n, a in zip(ref.shape, ref.axes, strict=True) if n != 1]
    out_sizes = [n for n in shape if n != 1]
    refined = refine_product([n for n, _ in in_dims], out_sizes) if out_sizes else None
    if not in_dims or refined is None:
        if in_dims and out_sizes:
            call.fix(*(a for _, a in in_dims))
        fresh = [call.new(n) for n in shape]
        if out_sizes:
            call.fix(*(a for a, n in zip(fresh, shape, strict=True) if n != 1))
        return tuple(fresh)
    fine, in_spans, out_spans = refined
    atoms: list[Atom] = []
    for (_, atom), span in zip(in_dims, in_spans, strict=True):
        atoms.extend(call.split(atom, "product", [fine[i] for i in span]))
    merged = iter([call.join("product", [atoms[i] for i in span]) for span in out_spans])
    return tuple(next(merged) if n != 1 else call.new(1) for n in shape)

"""What a symmetry rule sees and says: the public API for rule plugins.

A rule is a function ``rule(call: OpCall) -> None`` registered for one or more ATen op names
(``"aten.linear"`` for every overload, ``"aten.add.Tensor"`` for one). It reads the call's
tensor arguments as tuples of atoms (one per dimension), states equalities between atoms, fixes
the ones that cannot be permuted, and sets the atoms of the call's output(s). Output dims it
leaves unset are fixed: a rule that forgets something loses symmetries, never correctness.

Example, the rule for a unary elementwise op::

    def unary(call: OpCall) -> None:
        call.set_output(call.tensor(0).axes)
"""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

from cipm.discovery.axes import Atom, AxisSolver, Kind
from cipm.discovery.refine import refine_product
from cipm.errors import RuleError

__all__ = [
    "Axes",
    "OpCall",
    "Rule",
    "TensorRef",
    "broadcast",
    "broadcast_axes",
    "freeze",
    "in_place",
    "in_place_rule",
    "reshape_axes",
    "same_as_input",
]

Axes = tuple[Atom, ...]
Rule = Callable[["OpCall"], None]


@dataclass(frozen=True)
class TensorRef:
    """A tensor argument or output: its shape and the atom of each dimension."""

    shape: tuple[int, ...]
    axes: Axes

    @property
    def ndim(self) -> int:
        return len(self.shape)

    def dim(self, d: int) -> int:
        """Normalize a possibly negative dimension index."""
        if not -self.ndim <= d < max(self.ndim, 1):
            raise RuleError(f"dimension {d} out of range for a tensor of shape {self.shape}")
        return d % max(self.ndim, 1)


class OpCall:
    """One call of an op in the traced graph, with the solver's primitives for rules."""

    def __init__(
        self,
        node: str,
        op: str,
        args: dict[str, Any],
        positional: list[str],
        outputs: list[tuple[int, ...] | None],
        solver: AxisSolver,
        axes_of: Callable[[Any], Axes | None],
    ) -> None:
        self.node = node
        self.op = op
        self._args = args
        self._positional = positional
        self._solver = solver
        self._axes_of = axes_of
        self.output_shapes = outputs
        self._outputs: list[Axes | None] = [None] * len(outputs)
        self.contracted: set[Atom] = set()  # atoms this call sums over (see `contract`)

    # -- reading arguments -----------------------------------------------------------------
    def value(self, arg: int | str, default: Any = None) -> Any:
        """A non-tensor argument by position or schema name (ints, lists, flags)."""
        name = self._positional[arg] if isinstance(arg, int) else arg
        return self._args.get(name, default)

    def tensor(self, arg: int | str) -> TensorRef:
        """A tensor argument; raises RuleError if it is not a tensor."""
        ref = self.maybe_tensor(arg)
        if ref is None:
            raise RuleError(f"{self.op}: argument {arg!r} is not a tensor")
        return ref

    def maybe_tensor(self, arg: int | str) -> TensorRef | None:
        """A tensor argument, or None when it is absent or not a tensor (an optional bias)."""
        return self._ref(self.value(arg))

    def maybe_tensor_value(self, value: Any) -> TensorRef | None:
        """A tensor given as a value found inside an argument (an element of a list)."""
        return self._ref(value)

    def tensors(self, arg: int | str) -> list[TensorRef]:
        """A list-of-tensors argument (cat, stack, index)."""
        return [r for r in (self._ref(v) for v in self.value(arg) or ()) if r is not None]

    def all_tensors(self) -> list[TensorRef]:
        """Every tensor among the arguments, lists included."""
        refs: list[TensorRef] = []
        for v in self._args.values():
            for item in v if isinstance(v, list | tuple) else (v,):
                ref = self._ref(item)
                if ref is not None:
                    refs.append(ref)
        return refs

    def _ref(self, v: Any) -> TensorRef | None:
        axes = self._axes_of(v)
        if axes is None:
            return None
        shape = tuple(self._solver.size(a) for a in axes)
        return TensorRef(shape, axes)

    # -- outputs ---------------------------------------------------------------------------
    @property
    def out_shape(self) -> tuple[int, ...]:
        """Shape of the first (usually only) output."""
        shape = self.output_shapes[0]
        if shape is None:
            raise RuleError(f"{self.op}: output 0 is not a tensor")
        return shape

    def set_output(self, axes: Sequence[Atom], index: int = 0) -> None:
        """Set the atoms of output `index` (one per dimension)."""
        shape = self.output_shapes[index]
        got = tuple(self._solver.size(a) for a in axes)
        if shape is None or got != shape:
            raise RuleError(f"{self.op}: output {index} has shape {shape}, rule gave {got}")
        self._outputs[index] = tuple(axes)

    def output_axes(self, index: int = 0) -> Axes | None:
        """The atoms a rule set for output `index` so far (None if none yet)."""
        return self._outputs[index]

    def outputs(self) -> list[Axes | None]:
        """Output atoms, fresh fixed atoms wherever the rule set none."""
        result: list[Axes | None] = []
        for shape, axes in zip(self.output_shapes, self._outputs, strict=True):
            if axes is None and shape is not None:
                axes = tuple(self.new(s) for s in shape)
                self.fix(*axes)
            result.append(axes)
        return result

    # -- solver primitives -----------------------------------------------------------------
    def new(self, size: int) -> Atom:
        """A fresh axis of `size` units, free to be permuted until constrained."""
        return self._solver.new(size)

    def unify(self, a: Atom, b: Atom) -> None:
        """The two axes are the same: permuting one permutes the other."""
        try:
            self._solver.unify(a, b)
        except ValueError as e:
            raise RuleError(f"{self.op}: {e}") from e

    def contract(self, a: Atom, b: Atom) -> None:
        """The op sums over these two axes against each other (a matmul's inner dim, a layer's
        input features against its weight's input axis): they unify, and a parameter axis among
        them is recorded as *consuming* its units (the side that pruning by merging corrects)."""
        self.unify(a, b)
        self.contracted.update((a, b))

    def unify_all(self, xs: Sequence[Atom], ys: Sequence[Atom]) -> None:
        for a, b in zip(xs, ys, strict=True):
            self.unify(a, b)

    def fix(self, *atoms: Atom) -> None:
        """These axes cannot be permuted (order matters to the op)."""
        self._solver.fix(*atoms)

    def tag(self, atom: Atom, kind: str) -> None:
        """Say what the axis holds: 'hidden' or 'channels' (this call makes new units there),
        'sum' (two activations are added there), 'heads' or 'within_head'."""
        self._solver.tag(atom, kind)
        if kind in ("hidden", "channels"):
            self._solver.tag(atom, f"made:{self.node}")

    def split(self, atom: Atom, kind: Kind, sizes: Sequence[int]) -> list[Atom]:
        """The axis as consecutive parts: `kind` 'product' (factors) or 'sum' (segments)."""
        return self._solver.split(atom, kind, list(sizes))

    def join(self, kind: Kind, parts: Sequence[Atom]) -> Atom:
        """A new axis made of `parts`: 'product' (factors) or 'sum' (segments)."""
        return self._solver.join(kind, list(parts))

    def size(self, atom: Atom) -> int:
        return self._solver.size(atom)


# -- helpers shared by rule plugins ----------------------------------------------------------


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

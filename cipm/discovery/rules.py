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

from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any, Protocol

from cipm.discovery.axes import Atom, AxisSolver, Kind
from cipm.errors import RuleError
from cipm.graph.parts import GroupKind

__all__ = ["Axes", "ModuleGroup", "OpCall", "Rule", "TensorRef", "Tracing"]

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


class Tracing(Protocol):
    """What an `OpCall` reads from the trace it is part of: the axis solver, and the axes of
    a value of the graph (None for a non-tensor)."""

    solver: AxisSolver

    def axes_of(self, value: Any) -> Axes | None: ...


class OpCall:
    """One call of an op in the traced graph, with the solver's primitives for rules (the
    tracer makes them; a rule only reads and states)."""

    def __init__(
        self,
        node: str,
        op: str,
        args: dict[str, Any],
        positional: list[str],
        outputs: list[tuple[int, ...] | None],
        tracing: Tracing,
    ) -> None:
        self.node = node
        self.op = op
        self._args = args
        self._positional = positional
        self._solver = tracing.solver
        self._axes_of = tracing.axes_of
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


@dataclass(frozen=True)
class ModuleGroup:
    """A permutation group of one module: dim ``d`` of every ``(name, d)`` in `members`
    (the module's own parameter and buffer names, as ``named_parameters`` gives them),
    permuted together."""

    members: tuple[tuple[str, int], ...]
    kind: GroupKind = GroupKind.OTHER

    def __post_init__(self) -> None:
        object.__setattr__(self, "members", tuple((str(n), int(d)) for n, d in self.members))
        object.__setattr__(self, "kind", GroupKind(self.kind))

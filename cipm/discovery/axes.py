"""Symbolic axes and their unification: the type inference behind symmetry discovery.

Every tensor dimension in a traced graph is an *atom*. Rules state that two atoms are the same
axis (`unify`), that an atom cannot be permuted (`fix`), or that an atom is made of parts: a
*product* of factors where a reshape splits or merges dims (heads x head_dim), or a *sum* of
segments where cat/split/slice join or cut a dim (GPT-2's fused q|k|v). Union-find over atoms,
with decompositions refined to a common one when two decomposed atoms meet, solves it. After
solving, every class that is a leaf (no decomposition), unfixed and larger than one is a
permutation group.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from typing import Literal

from cipm.discovery.refine import refine_product, refine_sum

__all__ = ["Atom", "AxisSolver", "Decomposition"]

Atom = int
Kind = Literal["product", "sum"]


@dataclass(frozen=True)
class Decomposition:
    """An atom as consecutive parts: factors (outer to inner) or segments (first to last)."""

    kind: Kind
    parts: tuple[Atom, ...]


class AxisSolver:
    """Union-find over atoms with product/sum decompositions, fixed marks and kind tags."""

    def __init__(self) -> None:
        self._parent: list[int] = []
        self._size: list[int] = []
        self._decomp: dict[int, Decomposition] = {}
        self._fixed: set[int] = set()
        self._tags: dict[int, set[str]] = {}
        self._undo: list[Callable[[], None]] | None = None  # inside a `transaction`

    @contextmanager
    def transaction(self) -> Iterator[None]:
        """Constraints stated in the block hold only if it completes: an exception undoes
        every change the block made, in reverse order (a failing rule leaves no half-stated
        constraints)."""
        outer, self._undo = self._undo, []
        try:
            yield
        except BaseException:
            for undo in reversed(self._undo):
                undo()
            raise
        finally:
            done, self._undo = self._undo, outer
            if outer is not None:
                outer.extend(done)

    # -- atoms -----------------------------------------------------------------------------
    def new(self, size: int) -> Atom:
        """A fresh atom of `size` units."""
        self._parent.append(len(self._parent))
        self._size.append(int(size))
        if self._undo is not None:
            self._undo.append(self._drop_last)
        return len(self._parent) - 1

    def find(self, a: Atom) -> Atom:
        root = a
        while self._parent[root] != root:
            root = self._parent[root]
        while self._parent[a] != root:  # path compression (undone with its transaction)
            a, up = self._parent[a], a
            self._set_parent(up, root)
        return root

    def size(self, a: Atom) -> int:
        return self._size[a]

    def decomposition(self, a: Atom) -> Decomposition | None:
        return self._decomp.get(self.find(a))

    # -- constraints -----------------------------------------------------------------------
    def fix(self, *atoms: Atom) -> None:
        """Mark atoms as not permutable (and, once solved, every part of them)."""
        if self._undo is not None:
            new = {a for a in atoms if a not in self._fixed}
            self._undo.append(lambda: self._fixed.difference_update(new))
        self._fixed.update(atoms)

    def tag(self, a: Atom, kind: str) -> None:
        """Record what kind of units an atom holds (heads, hidden, ...); parts inherit it."""
        tags = self._tags.setdefault(a, set())
        if self._undo is not None and kind not in tags:
            self._undo.append(lambda: tags.discard(kind))
        tags.add(kind)

    def unify(self, a: Atom, b: Atom) -> None:
        """State that `a` and `b` are the same axis, permuted together."""
        if self._size[a] != self._size[b]:
            raise ValueError(f"cannot unify axes of sizes {self._size[a]} and {self._size[b]}")
        work = [(a, b)]
        while work:
            x, y = (self.find(v) for v in work.pop())
            if x == y:
                continue
            dx, dy = self._decomp.get(x), self._decomp.get(y)
            root, other = (x, y) if x < y else (y, x)
            self._set_parent(other, root)
            if dx is None or dy is None:
                if (dx or dy) is not None:
                    self._set_decomp(root, dx or dy)
                self._set_decomp(other, None)
                continue
            self._set_decomp(other, None)
            self._set_decomp(root, dx)  # provisional; refined below
            pairs = self._align(dx, dy)
            if pairs is None:  # product against sum, or factorizations that don't nest
                self.fix(root, *dx.parts, *dy.parts)
                continue
            work.extend(pairs)

    def split(self, a: Atom, kind: Kind, sizes: list[int]) -> list[Atom]:
        """Atoms for consecutive parts of `a` (factors or segments of the given sizes).

        Refines `a`'s decomposition of that kind so the parts exist. If `a` cannot be cut that
        way (it is already cut the other way, or incompatibly), `a` is fixed and the returned
        parts are fresh fixed atoms: fewer symmetries, still correct.
        """
        unit = 1 if kind == "product" else 0  # parts of this size carry no permutation
        real = [s for s in sizes if s != unit]
        if len(real) == 1:
            parts = [a]
        else:
            found = self._parts_as(a, kind, real)
            if found is None:
                self.fix(a)
                found = [self.new(s) for s in real]
                self.fix(*found)
            parts = found
        it = iter(parts)
        return [self.new(s) if s == unit else next(it) for s in sizes]

    def join(self, kind: Kind, parts: list[Atom]) -> Atom:
        """A new atom made of `parts` (a product of factors or a sum of segments)."""
        parts = [p for p in parts if self._size[p] != (1 if kind == "product" else 0)]
        if len(parts) == 1:
            return parts[0]
        size = 1 if kind == "product" else 0
        for p in parts:
            size = size * self._size[p] if kind == "product" else size + self._size[p]
        atom = self.new(size)
        if parts:
            self._set_decomp(atom, Decomposition(kind, tuple(parts)))
        return atom

    # -- solution --------------------------------------------------------------------------
    def solve(self) -> tuple[frozenset[int], dict[int, frozenset[str]]]:
        """Fixed roots and tags per root, with both passed down to every part."""
        fixed = {self.find(a) for a in self._fixed}
        tags: dict[int, set[str]] = {}
        for a, ts in self._tags.items():
            tags.setdefault(self.find(a), set()).update(ts)
        stack = list(fixed)
        while stack:
            for part in self._children(stack.pop()):
                if part not in fixed:
                    fixed.add(part)
                    stack.append(part)
        for root in self._topological():
            for part in self._children(root):
                tags.setdefault(part, set()).update(tags.get(root, ()))
        return frozenset(fixed), {r: frozenset(t) for r, t in tags.items()}

    # -- internals -------------------------------------------------------------------------
    def _set_parent(self, a: Atom, parent: Atom) -> None:
        if self._undo is not None:
            old = self._parent[a]
            self._undo.append(lambda: self._parent.__setitem__(a, old))
        self._parent[a] = parent

    def _set_decomp(self, a: Atom, d: Decomposition | None) -> None:
        if self._undo is not None:
            old = self._decomp.get(a)
            self._undo.append(lambda: self._set_decomp_now(a, old))
        self._set_decomp_now(a, d)

    def _set_decomp_now(self, a: Atom, d: Decomposition | None) -> None:
        if d is None:
            self._decomp.pop(a, None)
        else:
            self._decomp[a] = d

    def _drop_last(self) -> None:
        self._parent.pop()
        self._size.pop()

    def _children(self, root: int) -> list[int]:
        d = self._decomp.get(root)
        return [self.find(p) for p in d.parts] if d else []

    def _topological(self) -> list[int]:
        order: list[int] = []
        seen: set[int] = set()
        for start in list(self._decomp):
            stack: list[tuple[int, bool]] = [(self.find(start), False)]
            while stack:
                node, done = stack.pop()
                if done:
                    order.append(node)
                elif node not in seen:
                    seen.add(node)
                    stack.append((node, True))
                    stack.extend((c, False) for c in self._children(node))
        return order[::-1]

    def _leaves(self, a: Atom, kind: Kind) -> list[Atom]:
        d = self._decomp.get(self.find(a))
        if d is None or d.kind != kind:
            return [a]
        return [leaf for p in d.parts for leaf in self._leaves(p, kind)]

    def _parts_as(self, a: Atom, kind: Kind, sizes: list[int]) -> list[Atom] | None:
        leaves = self._leaves(a, kind)
        have = [self._size[leaf] for leaf in leaves]
        refined = refine_product(have, sizes) if kind == "product" else refine_sum(have, sizes)
        if refined is None:
            return None
        fine, leaf_spans, part_spans = refined
        atoms: list[Atom] = []
        for leaf, span in zip(leaves, leaf_spans, strict=True):
            if len(span) == 1:
                atoms.append(leaf)
                continue
            if self.find(leaf) in self._decomp:  # cut the other way already
                return None
            pieces = [self.new(fine[i]) for i in span]
            self._set_decomp(self.find(leaf), Decomposition(kind, tuple(pieces)))
            atoms.extend(pieces)
        return [
            atoms[span[0]] if len(span) == 1 else self.join(kind, [atoms[i] for i in span])
            for span in part_spans
        ]

    def _align(self, dx: Decomposition, dy: Decomposition) -> list[tuple[Atom, Atom]] | None:
        if dx.kind != dy.kind:
            return None
        x_sizes = [self._size[p] for p in dx.parts]
        y_sizes = [self._size[p] for p in dy.parts]
        refine = refine_product if dx.kind == "product" else refine_sum
        refined = refine(x_sizes, y_sizes)
        if refined is None:
            return None
        fine = refined[0]
        xs = self._parts_of(dx, fine)
        ys = self._parts_of(dy, fine)
        if xs is None or ys is None:
            return None
        return list(zip(xs, ys, strict=True))

    def _parts_of(self, d: Decomposition, fine: list[int]) -> list[Atom] | None:
        holder = self.join(d.kind, list(d.parts))
        return self._parts_as(holder, d.kind, fine)

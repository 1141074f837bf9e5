"""Rules for picking positions: select, index_select, gather, advanced indexing and its
assignment (index_put).

An index chooses positions along a dim, so that dim's order matters: it is fixed. The dims an
index leaves alone pass through; values written into a tensor share its untouched dims.
"""

from __future__ import annotations

from collections.abc import Mapping

import torch

from cipm.plugin import Axes, OpCall, Rule, TensorRef, broadcast_axes, hookimpl


def select(call: OpCall) -> None:
    """select(dim, index): the chosen position matters, so the axis is fixed."""
    x = call.tensor(0)
    d = x.dim(call.value("dim", 0))
    call.fix(x.axes[d])
    call.set_output(x.axes[:d] + x.axes[d + 1 :])


def index_select(call: OpCall) -> None:
    x = call.tensor(0)
    d = x.dim(call.value("dim", 0))
    call.fix(x.axes[d])
    axes = list(x.axes)
    axes[d] = call.new(call.out_shape[d])
    call.fix(axes[d])
    call.set_output(axes)


def gather(call: OpCall) -> None:
    """gather(dim, index): out[..i..] = x[..index[..i..]..] along dim; other dims line up."""
    x, index = call.tensor(0), call.tensor("index")
    d = x.dim(call.value("dim", 0))
    call.fix(x.axes[d])
    for k in range(x.ndim):
        if k != d and x.shape[k] == index.shape[k]:
            call.unify(x.axes[k], index.axes[k])
        elif k != d:
            call.fix(x.axes[k], index.axes[k])
    call.set_output(index.axes)


def index(call: OpCall) -> None:
    """x[i0, i1, ...] with index tensors (see `_selected`)."""
    x = call.tensor(0)
    call.set_output(_selected(call, x))


def index_put(call: OpCall) -> None:
    """x[i0, i1, ...] = values: values broadcast into the selection `_selected` describes;
    the result is x's axes (indexed dims fixed)."""
    x, values = call.tensor(0), call.tensor("values")
    target = _selected(call, x)
    shape = [call.size(a) for a in target]
    broadcast_axes(call, [values, TensorRef(tuple(shape), target)], shape)
    call.set_output(x.axes)


def scatter(call: OpCall) -> None:
    """scatter_add / scatter_reduce / scatter(x, dim, index, src): ``out = x`` with
    ``src[.., i, ..]`` combined into ``out[.., index[.., i, ..], ..]`` along `dim`.

    Positions along `dim` of x are chosen by value: fixed. The other dims of x, index and src
    line up (where index spans the whole dim; else fixed). With a commutative reduction (a
    sum, a product, a mean, a max or min) the entries along `dim` of index and src can be
    listed in any order, together; plain scatter writes in order (the last write of a
    repeated index wins), so there they are fixed."""
    x, index, src = call.tensor(0), call.tensor("index"), call.maybe_tensor("src")
    d = x.dim(call.value("dim"))
    refs = [index] if src is None else [index, src]
    call.fix(x.axes[d])
    commutative = not call.op.startswith("aten.scatter.") or call.value("reduce") is not None
    for k in range(x.ndim):
        if k == d:
            if commutative and src is not None and src.shape[d] == index.shape[d]:
                call.unify(index.axes[d], src.axes[d])
            else:
                call.fix(*(r.axes[d] for r in refs))
        elif all(r.shape[k] == x.shape[k] for r in refs):
            for r in refs:
                call.unify(x.axes[k], r.axes[k])
        else:
            call.fix(x.axes[k], *(r.axes[k] for r in refs))
    call.set_output(x.axes)


def index_add(call: OpCall) -> None:
    """index_add(x, dim, index[E], source): ``out = x`` with ``source``'s slice e added at
    position ``index[e]`` along `dim` (fixed). A sum: the E slices (and their indices) can be
    listed in any order, together; the other dims of x and source are one."""
    x, index, source = call.tensor(0), call.tensor("index"), call.tensor("source")
    d = x.dim(call.value("dim"))
    call.fix(x.axes[d])
    if index.ndim == 1 and source.ndim == x.ndim:
        call.unify(index.axes[0], source.axes[d])
        call.unify_all(
            [a for k, a in enumerate(x.axes) if k != d],
            [a for k, a in enumerate(source.axes) if k != d],
        )
    else:  # a 0-d index or source: one slice
        call.fix(*index.axes, *source.axes)
    call.set_output(x.axes)


def diagonal(call: OpCall) -> None:
    """diagonal(x, offset, dim1, dim2): the main diagonal (offset 0) of two equal dims is
    equivariant under the same permutation of both, ``diag(P x P^T) = P diag(x)``, so they are
    one axis, the output's last; an off-diagonal pairs positions i and i + offset: fixed."""
    x = call.tensor(0)
    d1, d2 = x.dim(call.value("dim1", 0)), x.dim(call.value("dim2", 1))
    rest = [a for k, a in enumerate(x.axes) if k not in (d1, d2)]
    call.set_output([*rest, _diagonal_axis(call, x.axes[d1], x.axes[d2])])


def diag_embed(call: OpCall) -> None:
    """diag_embed(x, offset, dim1, dim2): x's last dim laid on the diagonal of two new dims,
    zeros elsewhere; on the main diagonal both are x's last axis (see `diagonal`)."""
    x = call.tensor(0)
    shape = call.out_shape
    d1, d2 = (call.value(n, default) % len(shape) for n, default in (("dim1", -2), ("dim2", -1)))
    last = x.axes[-1]
    if call.value("offset", 0) == 0:
        pair = (last, last)
    else:
        call.fix(last)
        pair = (call.new(shape[d1]), call.new(shape[d2]))
        call.fix(*pair)
    rest = iter(x.axes[:-1])
    call.set_output(
        [pair[0] if k == d1 else pair[1] if k == d2 else next(rest) for k in range(len(shape))]
    )


def diag(call: OpCall) -> None:
    """diag(x, diagonal): a vector to a diagonal matrix or a matrix's diagonal (see
    `diagonal`, `diag_embed`)."""
    x = call.tensor(0)
    offset = call.value("diagonal", 0)
    if x.ndim == 1:
        if offset == 0:
            call.set_output([x.axes[0], x.axes[0]])
        else:
            call.fix(x.axes[0])
        return
    call.set_output([_diagonal_axis(call, x.axes[0], x.axes[1])])


def _diagonal_axis(call: OpCall, a: int, b: int) -> int:  # atoms are ints
    """The axis of the diagonal of dims a and b (offset from `call`): a and b as one where
    it is the main diagonal of equal dims, else a fresh fixed axis (a and b fixed)."""
    offset = call.value("offset", call.value("diagonal", 0)) or 0
    if offset == 0 and call.size(a) == call.size(b):
        call.unify(a, b)
        return a
    call.fix(a, b)
    out = call.new(call.out_shape[-1])
    call.fix(out)
    return out


def _selected(call: OpCall, x: TensorRef) -> Axes:
    """Axes of x[indices]: indexed dims are fixed (positions are chosen) and replaced by the
    index tensors' broadcast dims, in place if the indexed dims are adjacent, else first;
    the other dims pass through."""
    raw = list(call.value("indices") or [])
    refs = [call.maybe_tensor_value(v) for v in raw] + [None] * (x.ndim - len(raw))
    given = [r for r in refs if r is not None]
    indexed = [k for k, r in enumerate(refs) if r is not None]
    call.fix(*(x.axes[k] for k in indexed))
    index_axes = broadcast_axes(call, given, torch.broadcast_shapes(*(r.shape for r in given)))
    kept = [x.axes[k] for k in range(x.ndim) if refs[k] is None]
    adjacent = indexed == list(range(indexed[0], indexed[-1] + 1))
    at = indexed[0] if adjacent else 0
    before = [x.axes[k] for k in range(at) if refs[k] is None]
    return (*before, *index_axes, *kept[len(before) :])


@hookimpl
def cipm_rules() -> Mapping[str, Rule]:
    return {
        "aten.select": select,
        "aten.index_select": index_select,
        "aten.gather": gather,
        "aten.index": index,
        "aten.index_put": index_put,
        "aten.scatter_add": scatter,
        "aten.scatter_reduce": scatter,
        "aten.scatter": scatter,
        "aten.index_add": index_add,
        "aten.diagonal": diagonal,
        "aten.diag_embed": diag_embed,
        "aten.diag": diag,
    }

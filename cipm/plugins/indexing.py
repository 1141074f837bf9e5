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
    }

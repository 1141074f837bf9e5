"""Rules for picking positions: select, index_select, gather, advanced indexing and its
assignment (index_put).

An index chooses positions along a dim, so that dim's order matters: it is fixed. The dims an
index leaves alone pass through; values written into a tensor share its untouched dims.
"""

from __future__ import annotations

from collections.abc import Mapping

from cipm import hookimpl
from cipm.discovery.rules import OpCall, Rule, broadcast_axes


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
    """x[i0, i1, ...] with index tensors: indexed dims are fixed (positions are chosen) and
    replaced by the index tensors' broadcast dims; the other dims pass through."""
    x = call.tensor(0)
    raw = list(call.value("indices") or [])
    refs = [call.maybe_tensor_value(v) for v in raw] + [None] * (x.ndim - len(raw))
    indexed = [k for k, r in enumerate(refs) if r is not None]
    call.fix(*(x.axes[k] for k in indexed))
    out = call.out_shape
    n_index_dims = len(out) - (x.ndim - len(indexed))
    kept = [x.axes[k] for k in range(x.ndim) if refs[k] is None]
    adjacent = indexed == list(range(indexed[0], indexed[-1] + 1))
    at = indexed[0] if adjacent else 0  # adjacent indexed dims stay in place, others go first
    index_shape = out[at : at + n_index_dims]
    index_axes = broadcast_axes(call, [r for r in refs if r is not None], index_shape)
    before = [x.axes[k] for k in range(at) if refs[k] is None]
    after = kept[len(before) :]
    call.set_output([*before, *index_axes, *after])


def index_put(call: OpCall) -> None:
    """x[i0, i1, ...] = values: indexed dims are fixed; values broadcast into the rest."""
    x, values = call.tensor(0), call.tensor("values")
    raw = list(call.value("indices") or [])
    indexed = {k for k, v in enumerate(raw) if call.maybe_tensor_value(v) is not None}
    call.fix(*(x.axes[k] for k in indexed))
    rest = [a for k, a in enumerate(x.axes) if k not in indexed]
    tail = values.axes[len(values.axes) - len(rest) :] if rest else []
    sizes = [call.size(a) for a in rest]
    if rest and values.ndim >= len(rest) and list(values.shape[-len(rest) :]) == sizes:
        call.unify_all(rest, tail)
        call.fix(*values.axes[: values.ndim - len(rest)])
    else:
        call.fix(*rest, *values.axes)
    call.set_output(x.axes)


@hookimpl
def cipm_rules() -> Mapping[str, Rule]:
    return {
        "aten.select": select,
        "aten.index_select": index_select,
        "aten.gather": gather,
        "aten.index": index,
        "aten.index_put": index_put,
    }

"""Rules for reductions and normalizations over an axis.

A sum, mean, max or norm over an axis is invariant to permuting it, and softmax is equivariant,
so those axes stay free. Anything that reports a position (argmax, max's indices, sort, topk,
cumsum) makes order matter: that axis is fixed.
"""

from __future__ import annotations

from collections.abc import Mapping

from cipm.plugin import OpCall, Rule, hookimpl

INVARIANT = """
sum mean amax amin prod logsumexp var std var_mean std_mean linalg_vector_norm norm any all
nansum nanmean count_nonzero histc
""".split()

POSITIONAL = "argmax argmin max min median mode kthvalue sort topk cumsum cumprod cummax cummin"


def _dims(call: OpCall, ndim: int) -> list[int]:
    dims = call.value("dim")
    if dims is None or dims == []:
        return list(range(ndim))
    return sorted({d % max(ndim, 1) for d in ([dims] if isinstance(dims, int) else dims)})


def reduce(call: OpCall) -> None:
    """Reduce over `dim` (all dims if none): output keeps the other axes."""
    x = call.tensor(0)
    dims = _dims(call, x.ndim)
    keep = bool(call.value("keepdim", False))
    for i, shape in enumerate(call.output_shapes):
        if shape is None:
            continue
        if keep:
            axes = [call.new(1) if d in dims else a for d, a in enumerate(x.axes)]
        else:
            axes = [a for d, a in enumerate(x.axes) if d not in dims]
        if len(axes) == len(shape):
            call.set_output(axes, i)


def positional(call: OpCall) -> None:
    """argmax/sort/topk/cumsum...: the axis is fixed; the rest passes through."""
    x = call.tensor(0)
    dims = _dims(call, x.ndim)
    call.fix(*(x.axes[d] for d in dims))
    for i, shape in enumerate(call.output_shapes):
        if shape is None:
            continue
        if len(shape) == x.ndim:
            axes = [
                call.new(n) if d in dims else a
                for d, (a, n) in enumerate(zip(x.axes, shape, strict=True))
            ]
            call.fix(*(axes[d] for d in dims))
        else:
            axes = [a for d, a in enumerate(x.axes) if d not in dims]
        if len(axes) == len(shape):
            call.set_output(axes, i)


def softmax(call: OpCall) -> None:
    call.set_output(call.tensor(0).axes)


@hookimpl
def cipm_rules() -> Mapping[str, Rule]:
    rules: dict[str, Rule] = {f"aten.{op}": reduce for op in INVARIANT}
    rules.update({f"aten.{op}": positional for op in POSITIONAL.split()})
    # max/min over a dim also return indices; the plain overloads are whole-tensor values
    rules.update({"aten.max.default": reduce, "aten.min.default": reduce})
    for op in ("softmax", "_softmax", "log_softmax", "_log_softmax", "_safe_softmax"):
        rules[f"aten.{op}"] = softmax
    return rules

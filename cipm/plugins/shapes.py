"""Rules for ops that move, cut or join dimensions without computing on values.

Reshapes become products of axes, cat/split/slice become sums, dims that are reordered keep
their atoms. Picking a position out of an axis (unbind, stack, flip) makes order matter, so
that axis is fixed (indexing: `indexing.py`).
"""

from __future__ import annotations

from collections.abc import Mapping

from cipm.plugin import OpCall, OpRole, Rule, hookimpl, reshape_axes

RESHAPES = (
    "view reshape _unsafe_view flatten unflatten view_as reshape_as squeeze unsqueeze".split()
)


def reshape(call: OpCall) -> None:
    x = call.tensor(0)
    call.set_output(reshape_axes(call, x, call.out_shape))


def permute(call: OpCall) -> None:
    x = call.tensor(0)
    order = [x.dim(d) for d in call.value(1)]
    call.set_output([x.axes[d] for d in order])


def transpose(call: OpCall) -> None:
    """transpose(dim0, dim1), or t() on a matrix."""
    x = call.tensor(0)
    axes = list(x.axes)
    if x.ndim >= 2:
        i, j = (
            (0, 1)
            if call.op.startswith("aten.t.")
            else (x.dim(call.value(1)), x.dim(call.value(2)))
        )
        axes[i], axes[j] = axes[j], axes[i]
    call.set_output(axes)


def swap(call: OpCall) -> None:
    """swapaxes / swapdims(x, a, b): transpose under other names."""
    x = call.tensor(0)
    axes = list(x.axes)
    i, j = x.dim(call.value(1)), x.dim(call.value(2))
    axes[i], axes[j] = axes[j], axes[i]
    call.set_output(axes)


def reverse_dims(call: OpCall) -> None:
    """x.T (numpy_T): every dim in reverse order."""
    call.set_output(list(reversed(call.tensor(0).axes)))


def movedim(call: OpCall) -> None:
    """movedim(x, source, destination): dims moved, the others in their order."""
    x = call.tensor(0)
    source, destination = call.value(1), call.value(2)
    source = [source] if isinstance(source, int) else list(source)
    destination = [destination] if isinstance(destination, int) else list(destination)
    order: list[int | None] = [None] * x.ndim
    for s, d in zip(source, destination, strict=True):
        order[x.dim(d)] = x.dim(s)
    rest = iter(k for k in range(x.ndim) if k not in {x.dim(s) for s in source})
    call.set_output([x.axes[next(rest) if k is None else k] for k in order])


def expand(call: OpCall) -> None:
    x = call.tensor(0)
    shape = call.out_shape
    lead = len(shape) - x.ndim
    axes = [call.new(n) for n in shape[:lead]]  # new dims: the same value along them
    for n_in, atom, n_out in zip(x.shape, x.axes, shape[lead:], strict=True):
        axes.append(atom if n_in == n_out else call.new(n_out))
    call.set_output(axes)


def cat(call: OpCall) -> None:
    parts = [t for t in call.tensors(0) if t.ndim > 0 and sum(t.shape) > 0]
    shape = call.out_shape
    d = parts[0].dim(call.value(1, 0))
    axes = list(parts[0].axes)
    for t in parts[1:]:
        for k in range(len(shape)):
            if k != d:
                call.unify(axes[k], t.axes[k])
    axes[d] = call.join("sum", [t.axes[d] for t in parts])
    call.set_output(axes)


def split(call: OpCall) -> None:
    """split / split_with_sizes / chunk / tensor_split: segments of one axis."""
    x = call.tensor(0)
    d = x.dim(call.value("dim", 0))
    sizes = [shape[d] for shape in call.output_shapes if shape is not None]
    segments = call.split(x.axes[d], "sum", sizes)
    for i, seg in enumerate(segments):
        axes = list(x.axes)
        axes[d] = seg
        call.set_output(axes, i)


def slice_(call: OpCall) -> None:
    """slice(dim, start, end, step) / narrow(dim, start, length): the middle segment."""
    x = call.tensor(0)
    d = x.dim(call.value("dim", 0))
    n = x.shape[d]
    start = call.value("start") or 0
    start = max(start + n, 0) if start < 0 else min(start, n)
    axes = list(x.axes)
    if (call.value("step") or 1) != 1:
        call.fix(x.axes[d])
        axes[d] = call.new(call.out_shape[d])
        call.fix(axes[d])
    elif call.out_shape[d] != n:
        axes[d] = call.split(
            x.axes[d], "sum", [start, call.out_shape[d], n - start - call.out_shape[d]]
        )[1]
    call.set_output(axes)


def unbind(call: OpCall) -> None:
    x = call.tensor(0)
    d = x.dim(call.value("dim", 0))
    call.fix(x.axes[d])
    for i in range(len(call.output_shapes)):
        call.set_output(x.axes[:d] + x.axes[d + 1 :], i)


def stack(call: OpCall) -> None:
    parts = call.tensors(0)
    d = call.value(1, 0) % (parts[0].ndim + 1)
    for t in parts[1:]:
        call.unify_all(parts[0].axes, t.axes)
    new = call.new(len(parts))
    call.fix(new)
    call.set_output([*parts[0].axes[:d], new, *parts[0].axes[d:]])


def pad(call: OpCall) -> None:
    """constant_pad_nd: padded dims are [pad | x | pad]; the pad segments are constant."""
    x = call.tensor(0)
    pads = list(call.value(1))
    axes = list(x.axes)
    for i in range(len(pads) // 2):
        d = x.ndim - 1 - i
        before, after = pads[2 * i], pads[2 * i + 1]
        if before < 0 or after < 0 or call.value("mode", "constant") != "constant":
            # cropping, or reflect/replicate padding that copies edge values
            call.fix(axes[d])
            axes[d] = call.new(call.out_shape[d])
            call.fix(axes[d])
        elif before or after:
            axes[d] = call.join("sum", [call.new(before), axes[d], call.new(after)])
    call.set_output(axes)


def repeat(call: OpCall) -> None:
    """repeat tiles a dim: copies outer, the original inner (product [copies, x])."""
    x = call.tensor(0)
    reps = list(call.value(1))
    lead = len(reps) - x.ndim
    axes = [call.new(n) for n in reps[:lead]]
    for r, atom in zip(reps[lead:], x.axes, strict=True):
        axes.append(call.join("product", [call.new(r), atom]) if r != 1 else atom)
    call.set_output(axes)


def repeat_interleave(call: OpCall) -> None:
    """repeat_interleave(x, r, dim): each unit repeated r times in place (product [x, r]);
    without a dim, x is flattened first, so every dim's position matters."""
    x = call.tensor(0)
    dim, repeats = call.value("dim"), call.value("repeats")
    if dim is None or not isinstance(repeats, int):
        call.fix(*x.axes)  # the output gets fresh fixed atoms
        return
    d = x.dim(dim)
    axes = list(x.axes)
    axes[d] = call.join("product", [axes[d], call.new(repeats)]) if repeats != 1 else axes[d]
    call.set_output(axes)


def fix_last_two(call: OpCall) -> None:
    """tril / triu: which entries are kept depends on (row, column) positions."""
    x = call.tensor(0)
    call.fix(*x.axes[-2:])
    call.set_output(x.axes)


def fix_dims(call: OpCall) -> None:
    """flip / roll / cumsum-like: the listed dims' order matters."""
    x = call.tensor(0)
    dims = call.value("dims", call.value("dim"))
    dims = [dims] if isinstance(dims, int) else list(dims or range(x.ndim))
    call.fix(*(x.axes[x.dim(d)] for d in dims))
    call.set_output(x.axes)


@hookimpl
def cipm_rules() -> Mapping[str, Rule]:
    rules: dict[str, Rule] = {f"aten.{op}": reshape for op in RESHAPES}
    rules.update(
        {
            "aten.permute": permute,
            "aten.transpose": transpose,
            "aten.t": transpose,
            "aten.swapaxes": swap,
            "aten.swapdims": swap,
            "aten.numpy_T": reverse_dims,
            "aten.movedim": movedim,
            "aten.moveaxis": movedim,
            "aten.repeat_interleave.self_int": repeat_interleave,
            "aten.expand": expand,
            "aten.expand_as": expand,
            "aten.broadcast_to": expand,
            "aten.cat": cat,
            "aten.concat": cat,
            "aten.concatenate": cat,
            "aten.split": split,
            "aten.split_with_sizes": split,
            "aten.chunk": split,
            "aten.tensor_split": split,
            "aten.slice": slice_,
            "aten.narrow": slice_,
            "aten.unbind": unbind,
            "aten.stack": stack,
            "aten.constant_pad_nd": pad,
            "aten.pad": pad,
            "aten.repeat": repeat,
            "aten.tril": fix_last_two,
            "aten.triu": fix_last_two,
            "aten.flip": fix_dims,
            "aten.roll": fix_dims,
            "aten.diff": fix_dims,
        }
    )
    return rules


# ops that only re-view a tensor: a weight seen through them is still the weight
VIEWS = [
    *"t transpose swapaxes swapdims numpy_T movedim permute".split(),
    *"view reshape _unsafe_view expand".split(),
]


@hookimpl
def cipm_op_roles() -> Mapping[str, OpRole]:
    return {f"aten.{op}": "view" for op in VIEWS}

"""Rules for layers with weights: linear and matmul family, convolution, norms, embedding.

Each rule says which weight axis consumes the input's units (the co-inverse side), and which
makes new units shared by the weight's output axis, the bias and the output (the permuted side).
"""

from __future__ import annotations

from collections.abc import Callable, Mapping

import torch
from torch import nn
from torch.nn.utils.spectral_norm import SpectralNorm
from torch.nn.utils.weight_norm import WeightNorm

from cipm.plugin import OpCall, OpRole, Rule, TensorRef, broadcast, broadcast_axes, hookimpl


def linear(call: OpCall) -> None:
    """y[..., out] = x[..., in] @ w[out, in].T + b[out]."""
    x, w, b = call.tensor(0), call.tensor(1), call.maybe_tensor(2)
    out_axis = w.axes[0] if w.ndim == 2 else None
    call.contract(x.axes[-1], w.axes[-1])
    if b is not None and out_axis is not None:
        call.unify(b.axes[-1], out_axis)
    if out_axis is None:  # 1-D weight: a dot product
        call.set_output(x.axes[:-1])
        return
    call.tag(out_axis, "hidden")
    call.set_output([*x.axes[:-1], out_axis])


def matmul(call: OpCall) -> None:
    """mm / bmm / matmul: contracted axes unify, batch dims broadcast."""
    a, b = call.tensor(0), call.tensor(1)
    call.contract(a.axes[-1], b.axes[-2] if b.ndim >= 2 else b.axes[-1])
    rows = [a.axes[-2]] if a.ndim >= 2 else []
    cols = [b.axes[-1]] if b.ndim >= 2 else []
    batch_a = TensorRef(a.shape[:-2], a.axes[:-2]) if a.ndim > 2 else None
    batch_b = TensorRef(b.shape[:-2], b.axes[:-2]) if b.ndim > 2 else None
    out = call.out_shape
    n_batch = len(out) - len(rows) - len(cols)
    batch = broadcast_axes(call, [batch_a, batch_b], out[:n_batch])
    call.set_output([*batch, *rows, *cols])


def grouped_mm(call: OpCall) -> None:
    """_grouped_mm(x[T, K], w[G, K, N], offs): row segment g of x times expert g's matrix
    (mixtures of experts). K contracts and N is made as in a linear layer, with one
    permutation for every group's units; which rows meet which group is fixed."""
    x, w = call.tensor(0), call.tensor(1)
    if x.ndim != 2 or w.ndim != 3:
        call.fix(*x.axes, *w.axes)  # other layouts: nothing claimed
        return
    call.contract(x.axes[-1], w.axes[-2])
    call.fix(w.axes[0])
    call.tag(w.axes[-1], "hidden")
    call.set_output([x.axes[0], w.axes[-1]])


def addmm(call: OpCall) -> None:
    """addmm(bias, a, b) / baddbmm: a matmul plus a broadcast bias."""
    bias, a, b = call.tensor(0), call.tensor(1), call.tensor(2)
    call.contract(a.axes[-1], b.axes[-2])
    batch = list(a.axes[:-2])
    if len(batch) and b.ndim > 2:
        call.unify_all(batch, b.axes[:-2])
    product = TensorRef(call.out_shape, (*batch, a.axes[-2], b.axes[-1]))
    if bias.ndim >= 1 and bias.shape[-1] == b.shape[-1] > 1:  # a layer: GPT-2's Conv1D
        call.tag(b.axes[-1], "hidden")
    broadcast(call, [product, bias])


def einsum(call: OpCall) -> None:
    """einsum: the same letter is the same axis; a letter absent from the output is summed."""
    spec = str(call.value(0)).replace(" ", "")
    ins, _, out = spec.partition("->")
    refs = call.tensors(1)
    if "..." in spec or (not out and "->" not in spec):
        for r in refs:
            call.fix(*r.axes)
        return
    seen: dict[str, int] = {}
    for letters, ref in zip(ins.split(","), refs, strict=True):
        for letter, atom, n in zip(letters, ref.axes, ref.shape, strict=True):
            if n == 1:
                continue
            if letter in seen:
                (call.unify if letter in out else call.contract)(seen[letter], atom)
            else:
                seen[letter] = atom
    call.set_output([seen[c] if c in seen else call.new(1) for c in out])


def convolution(call: OpCall) -> None:
    """convNd / convolution: channels like linear; grouped convs are products (groups x per-group).

    Spatial axes are fixed (a kernel reads neighbours). With g groups, the input channels are
    g x (C_in/g) and the output channels g x (C_out/g): permuting whole groups, or channels
    within every group alike, preserves the function. Depthwise convs tie in to out.
    """
    x, w, b = call.tensor(0), call.tensor(1), call.maybe_tensor(2)
    transposed = bool(call.value("transposed", False)) or "conv_transpose" in call.op
    groups = int(call.value("groups", 1) or 1)
    c = 1 if x.ndim == w.ndim else 0  # unbatched input has no batch dim
    call.fix(*x.axes[c + 1 :], *w.axes[2:])
    group, per_group_in = call.split(x.axes[c], "product", [groups, x.shape[c] // groups])
    if transposed:  # weight [C_in, C_out / g, *k]
        call.contract(w.axes[0], x.axes[c])
        out_axis = call.join("product", [group, w.axes[1]])
    else:  # weight [C_out, C_in / g, *k]
        call.contract(w.axes[1], per_group_in)
        out_axis = w.axes[0]
        out_group, _ = call.split(out_axis, "product", [groups, w.shape[0] // groups])
        call.unify(out_group, group)
    if b is not None:
        call.unify(b.axes[0], out_axis)
    call.tag(out_axis, "channels")
    spatial = [call.new(n) for n in call.out_shape[c + 1 :]]
    call.fix(*spatial)
    call.set_output([*x.axes[:c], out_axis, *spatial])


def batch_norm(call: OpCall) -> None:
    """batch_norm and its eval/no-stats forms: per-channel (dim 1) affine and statistics."""
    x = call.tensor(0)
    channel = x.axes[1] if x.ndim > 1 else x.axes[0]
    for name in ("weight", "bias", "running_mean", "running_var"):
        ref = call.maybe_tensor(name)
        if ref is not None:
            call.unify(ref.axes[0], channel)
    call.set_output(x.axes, 0)
    for i in range(1, len(call.output_shapes)):  # saved mean/invstd of native variants
        shape = call.output_shapes[i]
        if shape is not None:
            call.set_output(
                [channel] if shape == (x.shape[1],) else [call.new(n) for n in shape], i
            )


def weight_norm(call: OpCall) -> None:
    """_weight_norm(v, g, dim) = v * g / ||v||, the norm over every dim but `dim` (over all of
    them when g is a scalar): g broadcasts against v, and the norm is invariant to permuting
    the dims it sums over, so v's axes pass through. _weight_norm_interface also returns the
    norms, shaped as g."""
    v, g = call.tensor(0), call.tensor(1)
    broadcast(call, [v, g])
    if len(call.output_shapes) > 1 and call.output_shapes[1] == g.shape:
        call.set_output(g.axes, 1)


def layer_norm(call: OpCall) -> None:
    """layer_norm / rms_norm: equivariant over the normalized (trailing) dims."""
    x = call.tensor(0)
    k = len(call.value("normalized_shape"))
    for name in ("weight", "bias"):
        ref = call.maybe_tensor(name)
        if ref is not None:
            call.unify_all(ref.axes, x.axes[x.ndim - k :])
    call.set_output(x.axes, 0)
    for i in range(1, len(call.output_shapes)):  # native_layer_norm's mean and rstd
        call.set_output([*x.axes[: x.ndim - k], *(call.new(1) for _ in range(k))], i)


def group_norm(call: OpCall) -> None:
    """group_norm: channels are groups x per-group; whole groups or within-group alike move."""
    x = call.tensor(0)
    groups = int(call.value("num_groups", call.value("group", 1)))
    channel = x.axes[1]
    call.split(channel, "product", [groups, x.shape[1] // groups])
    for name in ("weight", "bias"):
        ref = call.maybe_tensor(name)
        if ref is not None:
            call.unify(ref.axes[0], channel)
    call.set_output(x.axes, 0)
    for i in range(1, len(call.output_shapes)):
        shape = call.output_shapes[i]
        if shape is not None:
            call.set_output([call.new(n) for n in shape], i)


def embedding(call: OpCall) -> None:
    """embedding(weight[V, D], indices): rows are looked up by value, so V is fixed."""
    w, idx = call.tensor(0), call.tensor(1)
    call.fix(w.axes[0])
    call.tag(w.axes[1], "hidden")
    call.set_output([*idx.axes, w.axes[1]])


@hookimpl
def cipm_rules() -> Mapping[str, Rule]:
    rules: dict[str, Rule] = {
        "aten.linear": linear,
        "aten.einsum": einsum,
        "aten._grouped_mm": grouped_mm,
        "aten.embedding": embedding,
    }
    for rule, ops in (
        (matmul, "mm bmm matmul mv dot vdot"),
        (addmm, "addmm baddbmm"),
        (convolution, "conv1d conv2d conv3d conv_transpose1d conv_transpose2d convolution"),
        (convolution, "_convolution"),
        (batch_norm, "batch_norm native_batch_norm _native_batch_norm_legit instance_norm"),
        (batch_norm, "_native_batch_norm_legit_no_training"),
        (layer_norm, "layer_norm native_layer_norm rms_norm _fused_rms_norm"),
        (group_norm, "group_norm native_group_norm"),
        (weight_norm, "_weight_norm _weight_norm_interface"),
    ):
        rules.update({f"aten.{op}": rule for op in ops.split()})
    return rules


# ops whose output is weight x input + bias per output unit of the module that calls them
AFFINE = """
linear addmm conv1d conv2d conv3d conv_transpose1d conv_transpose2d convolution _convolution
batch_norm native_batch_norm _native_batch_norm_legit _native_batch_norm_legit_no_training
layer_norm native_layer_norm group_norm native_group_norm instance_norm
""".split()


@hookimpl
def cipm_op_roles() -> Mapping[str, OpRole]:
    roles: dict[str, OpRole] = {f"aten.{op}": "affine" for op in AFFINE}
    # weight normalization re-scales a weight (v, its first argument): a layer reading the
    # result reads v's units, so v's input axis consumes them as the layer's weight would
    roles["aten._weight_norm"] = "view"
    return roles


@hookimpl
def cipm_affine_parameters(module: torch.nn.Module) -> tuple[str, str] | None:
    """torch's layers and norms, where built with both a weight and a bias."""
    kinds = (nn.Linear, nn.modules.conv._ConvNd, nn.modules.batchnorm._NormBase, nn.LayerNorm)
    known = isinstance(module, (*kinds, nn.GroupNorm))
    both = getattr(module, "weight", None) is not None and getattr(module, "bias", None) is not None
    return ("weight", "bias") if known and both else None


@hookimpl
def cipm_reset_running_stats(module: torch.nn.Module) -> Callable[[], None] | None:
    """BatchNorm: running mean and variance reset, a cumulative average over what follows."""
    if not isinstance(module, nn.modules.batchnorm._BatchNorm):
        return None
    momentum = module.momentum
    module.reset_running_stats()
    module.momentum = None  # cumulative moving average: every batch weighs the same
    module.train()

    def restore() -> None:
        module.momentum = momentum

    return restore


@hookimpl
def cipm_resized(module: torch.nn.Module) -> None:
    """Size attributes of torch's layers, read back from their resized tensors (a weight
    computed from others, as weight and spectral norms do, computed again first)."""
    _recompute_hooked_weights(module)
    if isinstance(module, nn.Linear):
        module.out_features, module.in_features = module.weight.shape
    elif isinstance(module, nn.modules.conv._ConvNd):
        w = module.weight.shape
        if module.groups > 1 and module.out_channels == module.groups:  # depthwise
            module.groups = int(w[0])  # one group per channel (in = out, dim 0 either way)
        g = module.groups
        channels = (w[1] * g, w[0]) if module.transposed else (w[0], w[1] * g)
        module.out_channels, module.in_channels = channels
    elif isinstance(module, nn.modules.batchnorm._NormBase):
        module.num_features = _first(module, "weight", "running_mean")
    elif isinstance(module, nn.LayerNorm | nn.RMSNorm) and module.weight is not None:
        module.normalized_shape = tuple(module.weight.shape)
    elif isinstance(module, nn.GroupNorm) and module.weight is not None:
        module.num_channels = module.weight.shape[0]
    elif isinstance(module, nn.Embedding):
        module.num_embeddings, module.embedding_dim = module.weight.shape


def _first(module: nn.Module, *names: str) -> int:
    for name in names:
        t = getattr(module, name, None)
        if isinstance(t, torch.Tensor):
            return int(t.shape[0])
    return int(getattr(module, "num_features", 0))


def _recompute_hooked_weights(module: nn.Module) -> None:
    """The weights the old weight and spectral norms keep as plain attributes, computed by a
    forward pre-hook from the (resized) parameters: computed again, so sizes read from them
    are the new ones (spectral norm without a power iteration, as in eval mode)."""
    for hook in module._forward_pre_hooks.values():
        if isinstance(hook, WeightNorm):
            setattr(module, hook.name, hook.compute_weight(module))
        elif isinstance(hook, SpectralNorm):
            with torch.no_grad():
                weight = hook.compute_weight(module, do_power_iteration=False)
            setattr(module, hook.name, weight)

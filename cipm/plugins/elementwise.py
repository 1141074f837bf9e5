"""Rules for elementwise ops: unary maps, broadcasting arithmetic, activations (with per-channel
slopes: prelu; gated: glu), constants.

An elementwise op is equivariant under any permutation of any axis, so its output axes are its
inputs' (broadcast-matched). Adding two activations of the same shape is how residual streams
are tied together: the rule tags those axes 'sum'.
"""

from __future__ import annotations

from collections.abc import Mapping

import torch

from cipm.plugin import OpCall, OpRole, Rule, broadcast, hookimpl, same_as_input

UNARY = """
relu relu_ gelu silu sigmoid tanh hardtanh hardswish hardsigmoid leaky_relu elu selu celu
softplus mish neg abs exp exp2 expm1 log log2 log10 log1p sqrt rsqrt reciprocal sin cos tan
erf erfc sign square logical_not bitwise_not isnan isinf isfinite nan_to_num floor ceil round
trunc frac sgn clamp clamp_min clamp_max clip threshold dropout alpha_dropout feature_dropout
clone contiguous detach alias lift_fresh_copy _to_copy to type_as _conj positive fill
""".split()

BINARY = """
add sub rsub mul div true_divide floor_divide remainder fmod pow maximum minimum fmax fmin
atan2 eq ne lt le gt ge logical_and logical_or logical_xor bitwise_and bitwise_or bitwise_xor
hypot copysign xlogy __and__ __or__ __xor__ bitwise_left_shift bitwise_right_shift
""".split()

TERNARY = "where masked_fill lerp addcmul addcdiv clamp.Tensor".split()

# Results whose values depend on position: every axis fixed (a rule that sets no output).
POSITION_DEPENDENT = (
    "arange linspace eye rand randn randint randperm rand_like randn_like bernoulli".split()
)

# Constant-filled results: the same value at every index, so every axis is free.
FILLED = "zeros_like ones_like empty_like full_like new_zeros new_ones new_empty new_full"


def binary(call: OpCall) -> None:
    a, b = call.maybe_tensor(0), call.maybe_tensor(1)
    axes = broadcast(call, [a, b])
    both = a is not None and b is not None and a.shape == b.shape == call.out_shape
    if both and call.op.startswith(("aten.add", "aten.sub")):
        for atom in axes:
            call.tag(atom, "sum")


def ternary(call: OpCall) -> None:
    broadcast(call, call.all_tensors())


def native_dropout(call: OpCall) -> None:
    x = call.tensor(0)
    call.set_output(x.axes, 0)
    call.set_output(x.axes, 1)


def prelu(call: OpCall) -> None:
    """prelu(x, weight[C] or [1]): one slope per channel (dim 1; none below two dims), or one
    slope for every unit."""
    x, w = call.tensor(0), call.tensor(1)
    if w.ndim == 1 and w.shape[0] > 1 and x.ndim >= 2 and x.shape[1] == w.shape[0]:
        call.unify(w.axes[0], x.axes[1])
    elif w.shape != (1,) and w.ndim > 0:
        call.fix(*w.axes)  # a slope layout this rule does not know: nothing claimed
        call.fix(*x.axes)
    call.set_output(x.axes)


def glu(call: OpCall) -> None:
    """glu(x, dim) = a * sigmoid(b), a | b the halves of `dim`: output unit c gates input
    unit c with unit c + n/2, so the halves are one axis (a sum of two equal segments)."""
    x = call.tensor(0)
    d = x.dim(call.value("dim", -1))
    half = x.shape[d] // 2
    a, b = call.split(x.axes[d], "sum", [half, half])
    call.unify(a, b)
    axes = list(x.axes)
    axes[d] = a
    call.set_output(axes)


def position_dependent(call: OpCall) -> None:
    """Outputs stay unset, so they are fixed."""


def filled(call: OpCall) -> None:
    call.set_output([call.new(n) for n in call.out_shape])


@hookimpl
def cipm_rules() -> Mapping[str, Rule]:
    rules: dict[str, Rule] = {f"aten.{op}": same_as_input for op in UNARY}
    rules.update({f"aten.{op}": binary for op in BINARY})
    rules.update({f"aten.{op}": ternary for op in TERNARY})
    rules.update({f"aten.{op}": filled for op in FILLED.split()})
    rules.update(
        {f"aten.{op}": filled for op in ("zeros", "ones", "full", "scalar_tensor", "zero")}
    )
    rules.update({f"aten.{op}": position_dependent for op in POSITION_DEPENDENT})
    rules["aten.native_dropout"] = native_dropout
    rules["aten.glu"] = glu
    rules["aten.prelu"] = prelu
    rules["aten._prelu_kernel"] = ternary  # slopes already shaped to broadcast
    return rules


# ops that only copy or re-type a tensor: a weight seen through them is still the weight
VIEWS = "contiguous clone alias detach to _to_copy type_as".split()


@hookimpl
def cipm_op_roles() -> Mapping[str, OpRole]:
    return {f"aten.{op}": "view" for op in VIEWS}


@hookimpl
def cipm_resized(module: torch.nn.Module) -> None:
    """nn.PReLU's slope count, read back from its resized weight."""
    if isinstance(module, torch.nn.PReLU):
        module.num_parameters = int(module.weight.shape[0])

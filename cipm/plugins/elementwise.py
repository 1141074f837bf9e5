"""Rules for elementwise ops: unary maps, broadcasting arithmetic, activations, constants.

An elementwise op is equivariant under any permutation of any axis, so its output axes are its
inputs' (broadcast-matched). Adding two activations of the same shape is how residual streams
are tied together: the rule tags those axes 'sum'.
"""

from __future__ import annotations

from collections.abc import Mapping

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
    return rules


# ops that only copy or re-type a tensor: a weight seen through them is still the weight
VIEWS = "contiguous clone alias detach to _to_copy type_as".split()


@hookimpl
def cipm_op_roles() -> Mapping[str, OpRole]:
    return {f"aten.{op}": "view" for op in VIEWS}

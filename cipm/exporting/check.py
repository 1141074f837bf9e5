"""Checking a written model against torch: fresh inputs of new shapes, outputs compared.

Exporters check what they wrote before cipm renames it into place, so a file that would
compute something else is never written. The inputs are fresh: the dims an exporter keeps
dynamic (the batch, and the positions of token inputs) get new sizes, float tensors new
values of the example's mean and spread, integer and boolean tensors (token ids, masks) new
values drawn from those the example holds.
"""

from __future__ import annotations

from typing import Any

import torch
from torch.utils import _pytree as pytree

from cipm.batches import as_args
from cipm.errors import CipmError

__all__ = ["TOLERANCE", "dynamic_dims", "fresh_inputs", "mismatch", "outputs"]

# How far a written model's outputs may be from torch's: max |difference| <= tolerance *
# max(1, max |torch's output|), per output, by the output's dtype (a float32 graph
# optimized by onnxruntime sums in other orders; float64 agrees to rounding).
TOLERANCE = {torch.float64: 1e-9, torch.float32: 1e-4, torch.float16: 1e-2, torch.bfloat16: 2e-2}


def dynamic_dims(value: torch.Tensor) -> tuple[int, ...]:
    """The dims of an input kept dynamic: the batch (dim 0), and for integer or boolean
    inputs of two dims or more (token ids, masks) the positions (dim 1) too."""
    if value.dim() == 0:
        return ()
    tokens = not (value.is_floating_point() or value.is_complex()) and value.dim() >= 2
    return (0, 1) if tokens else (0,)


def fresh_inputs(example: Any, seed: int = 0, resize: bool = True) -> Any:
    """Inputs like `example` (same structure and dtypes), with a batch one larger, one
    position fewer for token inputs longer than one (unless not `resize`: a model of fixed
    shapes, such as a loaded torch.export archive), and new values."""
    gen = torch.Generator().manual_seed(seed)

    def fresh(x: Any) -> Any:
        if not isinstance(x, torch.Tensor):
            return x
        shape = list(x.shape)
        for d in dynamic_dims(x) if resize else ():
            shape[d] = shape[d] + 1 if d == 0 else max(1, shape[d] - 1)
        if x.is_floating_point():
            base = x.detach().double()
            std = float(base.std()) if base.numel() > 1 else 1.0
            noise = torch.randn(shape, generator=gen, dtype=torch.float64)
            return (noise * (std or 1.0) + float(base.mean())).to(x.dtype)
        pool = x.detach().flatten()
        if not len(pool):
            return torch.zeros(shape, dtype=x.dtype)
        pick = torch.randint(0, len(pool), shape, generator=gen)
        return pool[pick]

    return pytree.tree_map(fresh, example)


def outputs(model: torch.nn.Module, inputs: Any) -> list[torch.Tensor]:
    """The model's output tensors on `inputs`, flattened (a Hugging Face output's fields in
    order, Nones left out), under no_grad."""
    args, kwargs = as_args(inputs)
    with torch.no_grad():
        out = model(*args, **kwargs)
    return [t for t in pytree.tree_leaves(out) if isinstance(t, torch.Tensor)]


def mismatch(expected: list[torch.Tensor], got: list[Any], what: str) -> None:
    """Raise a CipmError naming the first output of `got` (tensors or arrays) that is not
    `expected` to within `TOLERANCE`.

    Raises:
        CipmError: a different number of outputs, a shape, or values outside the tolerance.
    """
    if len(expected) != len(got):
        raise CipmError(f"{what} gives {len(got)} outputs, torch {len(expected)}")
    for i, (want, have) in enumerate(zip(expected, got, strict=True)):
        have = torch.as_tensor(have)
        if tuple(have.shape) != tuple(want.shape):
            raise CipmError(
                f"{what}: output {i} has shape {tuple(have.shape)}, torch's {tuple(want.shape)}"
            )
        if not want.is_floating_point():
            if not torch.equal(have.to(want.dtype), want):
                raise CipmError(f"{what}: output {i} differs from torch's")
            continue
        tol = TOLERANCE.get(want.dtype, 1e-4) * max(1.0, _peak(want))
        err = _peak(have.to(want.dtype) - want)
        if not err <= tol:  # NaN fails too
            raise CipmError(
                f"{what}: output {i} differs from torch's by {err:.3g} (tolerance {tol:.3g})"
            )


def _peak(t: torch.Tensor) -> float:
    return float(t.abs().max()) if t.numel() else 0.0

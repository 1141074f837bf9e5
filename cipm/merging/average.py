"""`cipm.merge`: average aligned models, then re-estimate running statistics on data."""

from __future__ import annotations

import copy
import math
from collections.abc import Iterable, Sequence
from typing import Any

import torch

from cipm.batches import as_args, batch_list, model_inputs
from cipm.errors import CipmError
from cipm.graph.symmetry import SymmetryGraph
from cipm.hooks.manager import reset_running_stats
from cipm.merging.renormalize import repair as repair_units
from cipm.tensors.fitted import fitted_tensors

__all__ = ["interpolate", "merge", "reset_batchnorm"]


def merge(
    models: Sequence[torch.nn.Module],
    graph: SymmetryGraph | None = None,
    *,
    weights: Sequence[float] | None = None,
    data: Iterable[Any] | None = None,
    repair: bool = False,
) -> torch.nn.Module:
    """A new model whose floating-point parameters and buffers are the weighted average of
    `models` (align them first: `cipm.align`, `cipm.permute`).

    Args:
        models: two or more models of one architecture (and, if given, fitting `graph`).
        weights: one weight per model, summing to 1 (default: equal).
        data: batches to recompute BatchNorm running statistics on, which averaging breaks
            (variance collapse; `reset_batchnorm`); ignored for models without BatchNorm.
        repair: then also REPAIR every unit's pre-activation statistics to the models'
            weighted average (`cipm.repair`; needs `graph` and `data`).

    Raises:
        CipmError: fewer than two models, mismatched architectures (naming the tensor),
            weights of the wrong length or not summing to 1, non-finite weights, or REPAIR
            without a graph or data.
    """
    if repair and (graph is None or data is None):
        raise CipmError("merge(repair=True) needs the symmetry graph and data")
    if isinstance(models, torch.nn.Module) or not isinstance(models, Sequence):
        raise CipmError(
            f"merge takes a list of models, got a {type(models).__name__}: merge([a, b])"
        )
    if len(models) < 2:
        raise CipmError(f"merge needs at least two models, got {len(models)}")
    if weights is None:
        weights = [1.0 / len(models)] * len(models)
    try:
        weights = [float(w) for w in weights]
    except (TypeError, ValueError):
        raise CipmError(f"merge weights must be a list of numbers, got {weights!r}") from None
    if len(weights) != len(models):
        raise CipmError(f"{len(weights)} weights given for {len(models)} models")
    if not all(math.isfinite(w) for w in weights):
        raise CipmError(f"merge weights must be finite, got {weights}")
    if abs(sum(weights) - 1.0) > 1e-6:
        raise CipmError(f"merge weights must sum to 1, got {sum(weights)}")
    states = [m.state_dict() for m in models]
    _check_same(states, graph, models)
    merged = copy.deepcopy(models[0])
    with torch.no_grad():
        for key, target in merged.state_dict().items():
            if target.is_floating_point():
                mean = sum(
                    w * s[key].to(torch.float64) for w, s in zip(weights, states, strict=True)
                )
                target.copy_(mean)
    if data is not None:
        blocked = graph.blocked_plugins if graph is not None else ()
        batches = batch_list(data, "merge")
        reset_batchnorm(merged, batches, blocked_plugins=blocked)
        if repair:
            assert graph is not None  # checked above
            merged = repair_units(merged, models, graph, batches, weights=weights)
    return merged


def interpolate(
    model_a: torch.nn.Module, model_b: torch.nn.Module, alpha: float, **kwargs: Any
) -> torch.nn.Module:
    """The model at `alpha` on the straight line from A (0) to B (1)."""
    return merge([model_a, model_b], weights=[1.0 - alpha, alpha], **kwargs)


def reset_batchnorm(
    model: torch.nn.Module, data: Iterable[Any], *, blocked_plugins: Sequence[str] = ()
) -> torch.nn.Module:
    """Recompute every BatchNorm's running mean and variance of `model` on `data` (in place,
    cumulative average over all batches); the model's modes are restored afterwards. Modules
    of other kinds with running statistics join through the `cipm_reset_running_stats` hook.
    """
    modes = {m: m.training for m in model.modules()}
    model.eval()
    restores = [r for m in model.modules() if (r := reset_running_stats(m, blocked_plugins))]
    if not restores:
        for module, training in modes.items():
            module.training = training
        return model
    seen = False
    try:
        with torch.no_grad():
            for batch in data:
                args, kwargs = as_args(model_inputs(batch))
                model(*args, **kwargs)
                seen = True
    finally:
        for restore in restores:
            restore()
        for module, training in modes.items():
            module.training = training
    if not seen:
        raise CipmError("reset_batchnorm: the data yielded no batches")
    return model


def _check_same(
    states: list[dict[str, torch.Tensor]],
    graph: SymmetryGraph | None,
    models: Sequence[torch.nn.Module],
) -> None:
    first = states[0]
    for i, state in enumerate(states[1:], start=1):
        if state.keys() != first.keys():
            missing = sorted(set(first) ^ set(state))[:3]
            raise CipmError(f"model {i} has other tensors than model 0 (e.g. {missing})")
        for key, t in state.items():
            if t.shape != first[key].shape:
                raise CipmError(
                    f"model {i}'s '{key}' has shape {tuple(t.shape)}, model 0's "
                    f"{tuple(first[key].shape)}: merge models of one architecture"
                )
    for i, state in enumerate(states):
        for key, t in state.items():
            if t.is_floating_point() and not torch.isfinite(t).all():
                raise CipmError(f"model {i} has non-finite values in '{key}'")
    if graph is not None:
        for i, m in enumerate(models):
            fitted_tensors(m, graph, f"models[{i}]")

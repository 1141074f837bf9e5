"""Straight-through estimator matching (Git Re-Basin, algorithm 3).

Free weights theta start at A's. Each step projects them onto B's permutation orbit by weight
matching (P = argmax <theta, P(B)>), evaluates the task loss of the midpoint (A + P(B)) / 2 on
a batch with the straight-through trick (the forward pass uses P(B), the gradient flows into
theta), and takes an Adam step. The permutation of the last projection is the answer: it
lines B up with A so that their midpoint does well on data, not only so that weights agree.
"""

from __future__ import annotations

import itertools
from collections.abc import Iterable
from typing import Any

import torch
import torch.nn.functional as F
from torch.func import functional_call

from cipm.alignment.methods import AlignProblem
from cipm.alignment.weight import weight_matching
from cipm.batches import Loss, as_args, batch_list
from cipm.graph.symmetry import Permutation, SymmetryGraph
from cipm.tensors.modify import permute_state

__all__ = ["ste_matching", "ste_method"]


def ste_matching(
    model_a: torch.nn.Module,
    model_b: torch.nn.Module,
    graph: SymmetryGraph,
    data: Iterable[tuple[Any, torch.Tensor]],
    *,
    loss: Loss = F.cross_entropy,
    steps: int = 50,
    lr: float = 1e-3,
    seed: int = 0,
) -> Permutation:
    """The permutation of B found by STE matching against A (see the module docstring).

    `data` yields (inputs, targets) batches and is cycled for `steps` steps.
    """
    batches = batch_list(data, "ste matching")
    state_a = {k: v.detach() for k, v in model_a.state_dict().items()}
    state_b = {k: v.detach() for k, v in model_b.state_dict().items()}
    keys = [k for k, v in state_a.items() if v.is_floating_point()]
    theta = {k: state_a[k].clone().requires_grad_(True) for k in keys}
    fixed = {k: v for k, v in state_a.items() if k not in theta}  # integer buffers
    opt = torch.optim.Adam(theta.values(), lr=lr)
    for inputs, targets in itertools.islice(itertools.cycle(batches), steps):
        perm = weight_matching({k: v.detach() for k, v in theta.items()}, state_b, graph, seed=seed)
        projected = {**state_b, **permute_state(state_b, perm)}
        midpoint = {
            k: (state_a[k] + theta[k] + (projected[k] - theta[k]).detach()) / 2 for k in keys
        }
        args, kwargs = as_args(inputs)
        out = functional_call(model_a, {**fixed, **midpoint}, args, kwargs)
        opt.zero_grad()
        loss(out, targets).backward()
        opt.step()
    current = {k: v.detach() for k, v in theta.items()}
    return weight_matching(current, state_b, graph, seed=seed, start=perm)


def ste_method(problem: AlignProblem) -> Permutation:
    """The built-in ``"ste"`` method of `cipm.align`: `data` yields (inputs, targets)."""
    data = problem.needs_data("ste")
    return ste_matching(
        problem.model_a, problem.model_b, problem.graph, data, seed=problem.config.seed
    )

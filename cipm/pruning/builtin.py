"""The analytic pruning methods of `cipm.prune`, registered as any plugin's would be (the
meta-analysis network registers ``"learned"`` the same way, from `cipm.meta.builtin`)."""

from __future__ import annotations

from collections.abc import Mapping

import torch

from cipm.hooks.hookspecs import hookimpl
from cipm.pruning.choose import magnitude, second_moment
from cipm.pruning.problem import PruneMethod, PruneProblem


@hookimpl
def cipm_prune_methods() -> Mapping[str, PruneMethod]:
    return {
        "fold": PruneMethod(
            description="keep the units that explain the others best; fold the rest into "
            "them by least squares"
        ),
        "magnitude": PruneMethod(
            weight_path_norms, fold=False, description="keep the largest ||in|| * ||out||"
        ),
        "activation": PruneMethod(
            activation_energy,
            fold=False,
            needs_statistics=True,
            description="keep the largest RMS activation times outgoing norm",
        ),
    }


def weight_path_norms(problem: PruneProblem) -> dict[str, torch.Tensor]:
    """||in|| * ||out|| per unit (data-free)."""
    graph = problem.graph
    return {name: magnitude(problem.tensors, graph, graph[name]) for name in problem.targets}


def activation_energy(problem: PruneProblem) -> dict[str, torch.Tensor]:
    """RMS activation times the outgoing weight norm, per unit."""
    stats = problem.statistics("activation")
    return {
        name: second_moment(stats[name].moments).diagonal().sqrt() * stats[name].features.out_norm
        for name in problem.targets
    }

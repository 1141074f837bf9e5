"""The analytic ordering methods of `cipm.canonicalize` and `cipm.reorganize` /
`cipm.partition`, registered as any plugin's would be (the meta-analysis network registers
``"learned"`` for both the same way, from `cipm.meta.builtin`)."""

from __future__ import annotations

from collections.abc import Mapping
from functools import partial

import torch

from cipm.graph.symmetry import Permutation
from cipm.hooks.hookspecs import hookimpl
from cipm.ordering.canonical import canonical_order
from cipm.ordering.problem import CanonicalMethod, OrderProblem, ReorganizeMethod
from cipm.ordering.seriation import Seriation, seriate


@hookimpl
def cipm_canonical_methods() -> Mapping[str, CanonicalMethod]:
    return {"analytic": analytic_order}


@hookimpl
def cipm_reorganize_methods() -> Mapping[str, ReorganizeMethod]:
    return {name: partial(seriated, method=name) for name in ("auto", "spectral", "olo")}


def analytic_order(problem: OrderProblem) -> Permutation:
    """Weight keys (activation RMS first, given statistics): see `cipm.canonicalize`."""
    return canonical_order(problem.tensors, problem.graph, stats=problem.stats)


def seriated(problem: OrderProblem, method: Seriation) -> dict[str, torch.Tensor]:
    """Each group's units seriated by |correlation| (see `cipm.ordering.seriation`)."""
    stats = problem.statistics(method)
    return {g: seriate(stats[g].corr, method) for g in problem.groups}

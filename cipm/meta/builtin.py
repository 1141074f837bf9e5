"""What the meta-analysis network offers every verb, as a built-in plugin: its ``"learned"``
methods. The analytic core never imports the meta room; it finds these in its registries.
The network (and torch-geometric with it) is loaded at a method's first call, not when the
plugin is registered."""

from __future__ import annotations

from collections.abc import Mapping
from typing import TYPE_CHECKING

import torch

from cipm.alignment.methods import AlignMethod, AlignProblem
from cipm.alignment.windowed import DEFAULT_WINDOW
from cipm.graph.symmetry import Permutation
from cipm.hooks.hookspecs import hookimpl
from cipm.ordering.problem import CanonicalMethod, OrderProblem, ReorganizeMethod
from cipm.pruning.problem import PruneMethod

if TYPE_CHECKING:
    from cipm.meta.analyzer import MetaAnalyzer


@hookimpl
def cipm_align_methods() -> Mapping[str, AlignMethod]:
    return {"learned": learned_alignment, "learned-windowed": learned_windowed_alignment}


@hookimpl
def cipm_prune_methods() -> Mapping[str, PruneMethod]:
    return {
        "learned": PruneMethod(
            lambda problem: pretrained().unit_scores(problem),
            needs_statistics=True,
            description="keep the units the pretrained meta-analysis network ranks highest; "
            "fold the rest into them",
        )
    }


@hookimpl
def cipm_canonical_methods() -> Mapping[str, CanonicalMethod]:
    return {"learned": learned_order}


@hookimpl
def cipm_reorganize_methods() -> Mapping[str, ReorganizeMethod]:
    return {"learned": learned_seriation}


def learned_alignment(problem: AlignProblem) -> Permutation:
    """Co-canonicalization by the pretrained network's scores (needs data for each model's
    statistics; `cipm.MetaAnalyzer.align` takes another network)."""
    problem.needs_data("learned")
    return pretrained().solve(problem)


def learned_windowed_alignment(problem: AlignProblem) -> Permutation:
    """``"learned"``, refined by exact assignments inside windows of 256 units of the
    learned order (`cipm.alignment.windowed`): weight matching's objective at a fraction of
    its cost on wide groups; both models' weights are needed in one place."""
    problem.needs_data("learned-windowed")
    return pretrained().solve(problem, window=DEFAULT_WINDOW)


def learned_order(problem: OrderProblem) -> Permutation:
    """Units sorted by the pretrained network's scores, ties by the analytic keys."""
    return pretrained().order(problem)


def learned_seriation(problem: OrderProblem) -> dict[str, torch.Tensor]:
    """The pretrained network's order of each chosen group."""
    return pretrained().seriation(problem)


def pretrained() -> MetaAnalyzer:
    """The network shipped in the package, loaded (with torch-geometric) at first use."""
    from cipm.meta.analyzer import MetaAnalyzer  # optional extra: see cipm.meta

    return MetaAnalyzer.pretrained()

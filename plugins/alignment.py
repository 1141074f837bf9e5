"""The built-in alignment methods of `cipm.align`, registered as any other plugin's would be."""

from __future__ import annotations

from collections.abc import Mapping

from cipm import Permutation, hookimpl
from cipm.alignment import AlignMethod, AlignProblem
from cipm.alignment.activation import activation_method
from cipm.alignment.sinkhorn import sinkhorn_method
from cipm.alignment.ste import ste_method
from cipm.alignment.weight import weight_method


@hookimpl
def cipm_align_methods() -> Mapping[str, AlignMethod]:
    return {
        "weight": weight_method,
        "activation": activation_method,
        "sinkhorn": sinkhorn_method,
        "ste": ste_method,
        "learned": learned_method,
        "learned-windowed": learned_windowed_method,
    }


def learned_method(problem: AlignProblem) -> Permutation:
    """Co-canonicalization by the pretrained meta-analysis network's scores (needs data
    for each model's statistics; `cipm.MetaAnalyzer.align` takes another network)."""
    from cipm.meta.analyzer import MetaAnalyzer  # torch-geometric: only when used

    data = problem.needs_data("learned")
    return MetaAnalyzer.pretrained().align(problem.model_b, problem.model_a, problem.graph, data)


def learned_windowed_method(problem: AlignProblem) -> Permutation:
    """``"learned"``, refined by exact assignments inside windows of 256 units of the
    learned order (`cipm.alignment.windowed`): weight matching's objective at a fraction of
    its cost on wide groups; both models' weights are needed in one place."""
    from cipm.alignment.windowed import DEFAULT_WINDOW
    from cipm.meta.analyzer import MetaAnalyzer

    data = problem.needs_data("learned-windowed")
    meta = MetaAnalyzer.pretrained()
    return meta.align(problem.model_b, problem.model_a, problem.graph, data, window=DEFAULT_WINDOW)

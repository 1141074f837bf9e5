"""Alignment (re-basin): the permutation that lines one model's units up with another's, by
weight matching, activation matching, Sinkhorn or STE (methods are plugins), and MergeMany
for many models."""

from cipm.alignment.dispatch import align, align_methods
from cipm.alignment.many import align_many
from cipm.alignment.methods import AlignConfig, AlignMethod, AlignProblem

__all__ = ["AlignConfig", "AlignMethod", "AlignProblem", "align", "align_many", "align_methods"]

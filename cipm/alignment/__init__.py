"""Alignment (re-basin): the permutation that lines one model's units up with another's, by
weight matching, activation matching, Sinkhorn or STE, and MergeMany for many models."""

from cipm.alignment.dispatch import align, align_many

__all__ = ["align", "align_many"]

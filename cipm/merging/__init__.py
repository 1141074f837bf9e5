"""Merging aligned models: weighted averages, BatchNorm statistics reset, REPAIR, and the loss
and error barriers along the line between two models."""

from cipm.merging.average import interpolate, merge, reset_batchnorm
from cipm.merging.connectivity import BarrierCurve, barrier, plot_barriers
from cipm.merging.renormalize import repair

__all__ = [
    "BarrierCurve",
    "barrier",
    "interpolate",
    "merge",
    "plot_barriers",
    "repair",
    "reset_batchnorm",
]

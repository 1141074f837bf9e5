"""The analytic alignment methods of `cipm.align`, registered as any plugin's would be (the
meta-analysis network registers ``"learned"`` the same way, from `cipm.meta.builtin`)."""

from __future__ import annotations

from collections.abc import Mapping

from cipm.alignment.activation import activation_method
from cipm.alignment.methods import AlignMethod
from cipm.alignment.sinkhorn import sinkhorn_method
from cipm.alignment.ste import ste_method
from cipm.alignment.weight import weight_method
from cipm.hooks.hookspecs import hookimpl


@hookimpl
def cipm_align_methods() -> Mapping[str, AlignMethod]:
    return {
        "weight": weight_method,
        "activation": activation_method,
        "sinkhorn": sinkhorn_method,
        "ste": ste_method,
    }

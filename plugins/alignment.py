"""The built-in alignment methods of `cipm.align`, registered as any other plugin's would be."""

from __future__ import annotations

from collections.abc import Mapping

from cipm import hookimpl
from cipm.alignment import AlignMethod
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
    }

"""Hook specifications: the plugin author's reference.

A cipm plugin is a module (or object) with functions marked ``@cipm.hookimpl`` and named after
the specs below. Register it under the ``cipm`` entry-point group of your package::

    [project.entry-points.cipm]
    my_rules = "my_package.cipm_rules"

Built-in plugins register the same way, so any of them can be blocked by name.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import TYPE_CHECKING

import pluggy
import torch

if TYPE_CHECKING:
    from cipm.discovery.rules import Rule

__all__ = ["hookimpl", "hookspec"]

hookspec = pluggy.HookspecMarker("cipm")
hookimpl = pluggy.HookimplMarker("cipm")


@hookspec
def cipm_rules() -> Mapping[str, Rule]:  # type: ignore[empty-body]
    """Symmetry rules, keyed by ATen op name.

    A key is an op packet (``"aten.linear"``, every overload) or one overload
    (``"aten.add.Tensor"``); an overload's rule wins over its packet's. A rule is a function
    ``rule(call: cipm.rules.OpCall) -> None`` that states, for one call of the op, which input
    and output axes are the same, which are fixed and which are products or sums of others.
    See ``cipm.rules`` for the primitives and ``plugins/`` for the built-in rules.

    When two plugins give a rule for the same key, the plugin called first wins; mark your
    implementation ``@hookimpl(tryfirst=True)`` to override a built-in rule.

    Returns:
        A mapping from op name to rule.
    """


@hookspec
def cipm_resized(module: torch.nn.Module) -> None:
    """Bring a module's size attributes in line with its tensors after cipm resized them.

    Pruning gives tensors fewer units; a module that records sizes (``nn.Linear``'s
    ``in_features``, a norm's ``normalized_shape``, an attention layer's head count) must say
    so where its forward or its repr reads them. Called once for every module whose own
    tensors or whose submodules' tensors changed shape, innermost first, so an attention
    module sees its projections already resized. Implementations check the module's type
    and return without doing anything for modules they don't know.
    """

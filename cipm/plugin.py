"""The plugin contract: everything a cipm plugin uses that is not the public `cipm` API.

A plugin is a module of functions marked ``@hookimpl`` and named after the hook
specifications (`cipm.hooks.hookspecs`, whose docstrings are the reference; docs/plugins.md
has an example of each). Every type a hook takes or returns, the primitives rules are written
with, the helpers exporters check their files with, and the constants plugins need are here,
so a plugin imports ``cipm`` and ``cipm.plugin`` and nothing deeper. The built-in plugins
(`cipm.plugins`) are written against exactly this module.

Example, a rule for an elementwise op cipm does not know::

    from cipm.plugin import OpCall, hookimpl, same_as_input

    @hookimpl
    def cipm_rules():
        return {"aten.my_activation": same_as_input}
"""

from cipm.alignment.methods import AlignConfig, AlignMethod, AlignProblem
from cipm.batches import as_args, model_inputs
from cipm.discovery.primitives import (
    broadcast,
    broadcast_axes,
    freeze,
    in_place,
    reshape_axes,
    same_as_input,
)
from cipm.discovery.program import eval_semantics
from cipm.discovery.rules import Axes, ModuleGroup, OpCall, Rule, TensorRef
from cipm.exporting.check import dynamic_dims, fresh_inputs, mismatch, outputs
from cipm.exporting.formats import Exporter, ExportJob, ModelSource
from cipm.exporting.policy import METADATA_KEY, Policy
from cipm.hooks.hookspecs import OpRole, hookimpl
from cipm.meta.objective import Objective, ObjectiveInput, Partner, Subject
from cipm.ordering.canonical import canonical_order
from cipm.ordering.problem import CanonicalMethod, OrderProblem, ReorganizeMethod
from cipm.pruning.problem import PruneMethod, PruneProblem

__all__ = [
    "METADATA_KEY",
    "AlignConfig",
    "AlignMethod",
    "AlignProblem",
    "Axes",
    "CanonicalMethod",
    "ExportJob",
    "Exporter",
    "ModelSource",
    "ModuleGroup",
    "Objective",
    "ObjectiveInput",
    "OpCall",
    "OpRole",
    "OrderProblem",
    "Partner",
    "Policy",
    "PruneMethod",
    "PruneProblem",
    "ReorganizeMethod",
    "Rule",
    "Subject",
    "TensorRef",
    "as_args",
    "broadcast",
    "broadcast_axes",
    "canonical_order",
    "dynamic_dims",
    "eval_semantics",
    "freeze",
    "fresh_inputs",
    "hookimpl",
    "in_place",
    "mismatch",
    "model_inputs",
    "outputs",
    "reshape_axes",
    "same_as_input",
]

"""Hook specifications: the plugin author's reference.

A cipm plugin is a module (or object) with functions marked ``@hookimpl`` and named after the
specs below; it imports ``cipm`` and ``cipm.plugin`` (the plugin contract: every type these
hooks take or return) and nothing deeper. Register it under the ``cipm`` entry-point group
of your package::

    [project.entry-points.cipm]
    my_rules = "my_package.cipm_rules"

or, to try it without packaging, in-process: ``cipm.get_plugin_manager().register(module)``
(every cipm call from then on uses it). The built-in plugins (`cipm.plugins` and each
room's ``builtin`` module) are registered by the plugin manager itself, under names
(`cipm.hooks.manager.BUILT_INS`) by which any of them can be blocked
(``cipm.trace(..., blocked_plugins=...)``; the graph it returns carries the names, and every
hook called for that graph's model leaves them out too).

Architecture knowledge lives here and nowhere else: what an op does to axes (`cipm_rules`),
what else an op is (`cipm_op_roles`), which symmetries a whole module has that its ops don't
show (`cipm_module_groups`), how a module follows resized tensors (`cipm_resized`),
which modules keep running statistics (`cipm_reset_running_stats`), which of a module's
parameters scale and shift its units (`cipm_affine_parameters`), which file formats models
export to (`cipm_exporters`) and are read from (`cipm_model_sources`), and what the
meta-analysis network can be trained for (`cipm_objectives`). Every verb's ``method=`` is a
registry too (`cipm_align_methods`, `cipm_prune_methods`, `cipm_canonical_methods`,
`cipm_reorganize_methods`): the analytic methods are built-in plugins of their rooms, the
learned ones of `cipm.meta`.

Every type these hooks take or return is in `cipm.plugin`, the plugin contract; each spec's
docstring names them (the annotations below are kept to what this low module can name: the
types are defined in the rooms above it, and pluggy checks names, not types).
"""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from typing import Any, Literal

import pluggy
import torch

__all__ = ["OpRole", "hookimpl", "hookspec"]

hookspec = pluggy.HookspecMarker("cipm")
hookimpl = pluggy.HookimplMarker("cipm")

OpRole = Literal["view", "affine"]


@hookspec
def cipm_rules() -> Mapping[str, Callable[..., None]]:  # type: ignore[empty-body]
    """Symmetry rules, keyed by ATen op name.

    A key is an op packet (``"aten.linear"``, every overload) or one overload
    (``"aten.add.Tensor"``); an overload's rule wins over its packet's. A rule is a function
    ``rule(call: cipm.plugin.OpCall) -> None`` that states, for one call of the op,
    which input and output axes are the same, which are fixed and which are products or sums
    of others. See `cipm.plugin` for the primitives and `cipm.plugins` for the
    built-in rules.

    When two plugins give a rule for the same key, the plugin called first wins, and cipm
    says so in a `CipmWarning` naming both; mark your implementation
    ``@hookimpl(tryfirst=True)`` to override a built-in rule on purpose (then nothing is said).

    Returns:
        A mapping from op name to rule.
    """


@hookspec
def cipm_op_roles() -> Mapping[str, OpRole]:  # type: ignore[empty-body]
    """What ops are beyond their symmetry rule, keyed by op name as `cipm_rules`.

    ``"view"``: the op only re-views or re-types a tensor (transpose, reshape, a cast), so a
    weight seen through it is still that weight (the tracer follows it back to find which
    parameter axes a layer sums over). ``"affine"``: its output is a layer's pre-activation,
    ``weight`` times the input plus ``bias`` per output unit of the module that calls it
    (linear, convolution, a norm's affine step), so REPAIR can fold a per-unit rescaling
    into that module's weight and bias.

    Returns:
        A mapping from op name to role.
    """


@hookspec
def cipm_module_groups(module: torch.nn.Module) -> Sequence[Any] | None:
    """Permutation symmetries of a whole module that its ops cannot show.

    Some symmetries act on a tensor's values rather than its dims: a mixture of experts
    routes each token by the *index* its router's top-k picks, so permuting the experts
    (expert e's weights with the router's row e) reorders which tokens meet which weights,
    data-dependently, and leaves the block's output the same. The per-op rules fix such an
    axis; a plugin that knows the module declares it here, as the module's own parameter
    and buffer names and dims (``("gate.weight", 0), ("experts.down_proj", 0), ...``).

    cipm admits a declaration only if it holds: every tensor dim the ops tie to it is
    declared, every activation that carries it lies inside the module (none reaches the
    model's outputs), and permuting it at random leaves the module's output on the traced
    inputs the same. Otherwise it is left out with a `CipmWarning` saying why.
    Implementations check the module's type or structure and return None (or nothing) for
    modules they don't know.

    Returns:
        The module's groups (`cipm.plugin.ModuleGroup`), or None.
    """


@hookspec
def cipm_resized(module: torch.nn.Module) -> None:
    """Bring a module's size attributes in line with its tensors after cipm resized them.

    Pruning gives tensors fewer units; a module that records sizes (``nn.Linear``'s
    ``in_features``, a norm's ``normalized_shape``, an attention layer's head count) must say
    so where its forward or its repr reads them. Called once for every module whose own
    tensors or whose submodules' tensors changed shape, innermost first, so an attention
    module sees its projections already resized. Implementations check the module's type
    and return without doing anything for modules they don't know. Raise a `CipmError` for a
    module that cannot take its new sizes at all.
    """


@hookspec(firstresult=True)
def cipm_reset_running_stats(module: torch.nn.Module) -> Callable[[], None] | None:
    """Prepare a module that keeps running statistics of its inputs to estimate them anew.

    Averaging aligned models averages BatchNorm's running mean and variance too, which
    no longer describe the merged model's activations; `cipm.reset_batchnorm` re-estimates
    them on data. For a module it knows, an implementation resets the statistics, makes the
    module average every batch it sees equally and puts it in training mode; the batches
    that follow then estimate them.

    Returns:
        A function that restores the module's settings (not the new statistics) once the
        batches are through, or None for a module without running statistics.
    """


@hookspec
def cipm_align_methods() -> Mapping[str, Callable[..., Any]]:  # type: ignore[empty-body]
    """Alignment methods for `cipm.align`, keyed by the name passed as ``method=``.

    A method is a function ``method(problem: cipm.plugin.AlignProblem) ->
    cipm.Permutation`` returning the permutation of model B that lines it up with model A
    (see `cipm.alignment.methods`). Conflicts between plugins are resolved and reported as
    for `cipm_rules`.

    Returns:
        A mapping from method name to method.
    """


@hookspec
def cipm_prune_methods() -> Mapping[str, Any]:  # type: ignore[empty-body]
    """Pruning methods for `cipm.prune`, keyed by the name passed as ``method=``.

    A method is a `cipm.plugin.PruneMethod`: ``scores(problem)`` gives one score per unit of
    every group in ``problem.targets`` (a `cipm.plugin.PruneProblem`: the model's tensors,
    its statistics if any, the units each group keeps), and the highest are kept; ``fold``
    says whether the removed units are folded into the kept ones by least squares (with
    ``scores=None`` the fold chooses the units that explain the rest best);
    ``needs_statistics`` that `scores` reads ``problem.stats``. Conflicts between plugins are
    resolved and reported as for `cipm_rules`.

    Returns:
        A mapping from method name to method.
    """


@hookspec
def cipm_canonical_methods() -> Mapping[str, Callable[..., Any]]:  # type: ignore[empty-body]
    """Canonical orders for `cipm.canonicalize`, keyed by the name passed as ``method=``.

    A method is a function ``method(problem: cipm.plugin.OrderProblem) -> cipm.Permutation``
    whose result is the same for every permuted copy of a model (an order computed from
    permutation-invariant keys); `cipm.ordering.canonical_order` sorts by given scores and
    breaks ties by the analytic keys. Conflicts are resolved and reported as for
    `cipm_rules`.

    Returns:
        A mapping from method name to method.
    """


@hookspec
def cipm_reorganize_methods() -> Mapping[str, Callable[..., Any]]:  # type: ignore[empty-body]
    """Reorganization orders for `cipm.reorganize` and `cipm.partition`, keyed by the name
    passed as ``method=``.

    A method is a function ``method(problem: cipm.plugin.OrderProblem) -> Mapping[str,
    Tensor]`` giving an order (indices) of the units of each group in ``problem.groups`` that
    puts correlated units next to each other (``problem.stats`` holds the correlations).
    Conflicts are resolved and reported as for `cipm_rules`.

    Returns:
        A mapping from method name to method.
    """


@hookspec
def cipm_exporters() -> Mapping[str, Any]:  # type: ignore[empty-body]
    """File formats for `cipm.export`, keyed by the name passed as ``format=``.

    An exporter is a `cipm.plugin.Exporter`: ``write(job, path)`` writes ``job.model``
    (with ``job.example_inputs`` and ``job.policy``, a `cipm.plugin.Policy` or None) to
    ``path``, a temporary file beside the target (an empty temporary folder if
    ``folder=True``) that cipm renames onto the target once ``write`` returns, so a failure
    never leaves a partial file; ``suffixes`` choose the format by path (``(".onnx",)``), a
    folder format is chosen for paths without one if ``accepts(model)``; ``read_policy(path)``
    returns the policy JSON the file holds (for `cipm.read_policy`). Store the policy with
    ``job.policy.to_json()`` under `cipm.plugin.METADATA_KEY` where the format has
    metadata. Raise a `CipmError` saying what failed and what to use instead. Conflicts
    between plugins are resolved and reported as for `cipm_rules`.

    Returns:
        A mapping from format name to exporter.
    """


@hookspec
def cipm_objectives() -> Mapping[str, Callable[..., Any]]:  # type: ignore[empty-body]
    """Training objectives of the meta-analysis network, keyed by the name given to
    ``MetaAnalyzer.fit(zoo, objectives={name: weight})``.

    An objective is a function ``objective(batch: cipm.plugin.ObjectiveInput) -> Tensor``
    returning a scalar loss that is differentiable in ``batch.ranks`` (soft ranks per
    group, 1 for the unit a policy puts first) or ``batch.scores``; ``batch.subject`` holds
    the model, its statistics, disjoint views of them, calibration batches and a partner to
    align with (see `cipm.meta.objective`). Lower is better; scale it so a random order
    scores about 1, so weights compare. Conflicts between plugins are resolved and reported
    as for `cipm_rules`.

    Returns:
        A mapping from objective name to objective.
    """


@hookspec(firstresult=True)
def cipm_affine_parameters(module: torch.nn.Module) -> tuple[str, str] | None:
    """Which of a module's own parameters scale and shift each unit it outputs.

    For a module whose output is computed by an op of role ``"affine"`` (`cipm_op_roles`):
    a linear layer, a convolution, a norm's affine step. Each output unit is the unit's
    slice of ``weight`` applied to the input plus the unit's entry of ``bias``, so
    multiplying both by s multiplies the unit by s, and adding t to the ``bias`` entry adds
    t to it. REPAIR (`cipm.repair`) folds a per-unit rescaling into the module so. Give the
    names of the module's own parameters (``"weight"``, not ``"fc.weight"``) and nothing
    about dims: cipm reads along which dim, and in which layout, each holds the units from
    the symmetry graph (``nn.Linear``'s weight along dim 0, GPT-2's ``Conv1D`` along dim 1).

    Return None (or nothing) for modules you don't know, and for a module without both (a
    layer built with ``bias=False``, a norm without affine parameters): REPAIR then leaves
    its units as they are. The first plugin that gives an answer wins.

    Returns:
        The names ``(weight, bias)``, or None.
    """


@hookspec
def cipm_model_sources() -> Mapping[str, Any]:  # type: ignore[empty-body]
    """Formats the command line reads models from, keyed by a name for listings.

    A source is a `cipm.plugin.ModelSource`: ``accepts(path)`` says whether an existing
    file or folder is in the format (look at names and small files only, never raise),
    ``load(path)`` builds the model (raise a `CipmError` saying what is wrong, and what to
    install where an optional package is missing), ``description`` names the format as a
    noun phrase (``"a Hugging Face model folder (config.json and weights)"``: the command
    line lists it among what a model can be, and says a folder no source accepts is not
    one). The first source that accepts a path reads it, before the command line's own
    formats. Conflicts between plugins are resolved and reported as for `cipm_rules`.

    Returns:
        A mapping from source name to source.
    """

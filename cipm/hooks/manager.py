"""The plugin manager: one per process, holding cipm's hook specs, its built-in plugins, the
plugins of the `cipm` entry-point group, and any plugin registered in-process.

The built-ins are registered by the manager itself (as pytest registers its own), by module
name from `BUILT_INS`, so a checkout that is only on ``sys.path`` has them too; each can be
blocked by its name there, as any third-party plugin can by its entry-point name.

Every hook cipm calls goes through `get_plugin_manager()`, so ``register`` and ``set_blocked``
(pluggy's own methods) take effect for every hook at once; a call that names
``blocked_plugins`` leaves those out of that call only.
"""

from __future__ import annotations

import importlib
import warnings
from collections.abc import Callable, Iterable, Mapping
from typing import Any

import pluggy
import torch

from cipm.errors import CipmError, CipmWarning, PluginError
from cipm.hooks import hookspecs
from cipm.hooks.hookspecs import OpRole

__all__ = [
    "BUILT_INS",
    "ENTRY_POINT_GROUP",
    "affine_parameters",
    "for_op",
    "get_plugin_manager",
    "hook_caller",
    "list_plugins",
    "method_of",
    "new_plugin_manager",
    "op_roles",
    "op_rules",
    "plugin_table",
    "reset_running_stats",
    "resized",
]

ENTRY_POINT_GROUP = "cipm"
# name -> module of every built-in plugin. Architecture knowledge is in cipm.plugins (which
# uses the public API and the plugin contract, cipm.plugin, only); each room with methods
# ships its own as a plugin, so a verb's methods are an open registry from the start.
BUILT_INS: Mapping[str, str] = {
    "torch_elementwise": "cipm.plugins.elementwise",
    "torch_shapes": "cipm.plugins.shapes",
    "torch_indexing": "cipm.plugins.indexing",
    "torch_layers": "cipm.plugins.layers",
    "torch_reductions": "cipm.plugins.reductions",
    "torch_resampling": "cipm.plugins.resampling",
    "torch_attention": "cipm.plugins.attention",
    "torch_multihead": "cipm.plugins.multihead",
    "torch_recurrent": "cipm.plugins.recurrent",
    "transformers_layers": "cipm.plugins.transformers",
    "mixture_of_experts": "cipm.plugins.experts",
    "onnx_exporter": "cipm.plugins.onnx_export",
    "safetensors_exporter": "cipm.plugins.safetensors_export",
    "huggingface_exporter": "cipm.plugins.hf_export",
    "huggingface_source": "cipm.plugins.hf_source",
    "alignment_methods": "cipm.alignment.builtin",
    "pruning_methods": "cipm.pruning.builtin",
    "ordering_methods": "cipm.ordering.builtin",
    "meta_methods": "cipm.meta.builtin",
    "meta_objectives": "cipm.meta.builtin_objectives",
}
_shared: pluggy.PluginManager | None = None


def new_plugin_manager() -> pluggy.PluginManager:
    """A fresh plugin manager: cipm's hook specs, its built-in plugins and every `cipm`
    entry-point plugin (an entry point named as a built-in is left out).

    Raises:
        PluginError: an entry-point plugin failed to import or implements an unknown hook.
    """
    pm = pluggy.PluginManager("cipm")
    pm.add_hookspecs(hookspecs)
    for name, module in BUILT_INS.items():
        pm.register(importlib.import_module(module), name=name)
    try:
        pm.load_setuptools_entrypoints(ENTRY_POINT_GROUP)
        pm.check_pending()
    except Exception as e:  # an import error inside someone's plugin, a misspelt hook
        raise PluginError(f"loading a '{ENTRY_POINT_GROUP}' entry-point plugin failed: {e}") from e
    return pm


def get_plugin_manager() -> pluggy.PluginManager:
    """The plugin manager every cipm call uses, made on first use.

    Try a plugin without packaging it: ``cipm.get_plugin_manager().register(my_module)``;
    every later `cipm.trace`, `cipm.prune`, ... uses its hooks. ``.unregister(my_module)``
    takes it out again, ``.set_blocked(name)`` leaves a plugin out of everything.
    """
    global _shared
    if _shared is None:
        _shared = new_plugin_manager()
    return _shared


def list_plugins(blocked_plugins: Iterable[str] = ()) -> list[str]:
    """Names of the loaded plugins, but the `blocked_plugins` ones."""
    pm = get_plugin_manager()
    left_out = set(_checked(pm, blocked_plugins))
    return sorted(
        name
        for name, plugin in pm.list_name_plugin()
        if plugin is not None and name not in left_out
    )


def hook_caller(
    name: str, blocked: Iterable[str] = (), pm: pluggy.PluginManager | None = None
) -> Any:
    """The hook `name` of the shared manager (or `pm`), leaving the `blocked` plugins out.

    Raises:
        PluginError: a blocked name is no plugin's.
    """
    pm = pm or get_plugin_manager()
    plugins = [pm.get_plugin(n) for n in _checked(pm, blocked)]
    hook = getattr(pm.hook, name)
    if not any(p is not None for p in plugins):
        return hook
    return pm.subset_hook_caller(name, remove_plugins=[p for p in plugins if p is not None])


def plugin_table(
    name: str,
    what: str,
    blocked: Iterable[str] = (),
    pm: pluggy.PluginManager | None = None,
    check: Callable[[Any], bool] = callable,
) -> dict[str, Any]:
    """The mappings every plugin returns from hook `name` merged into one table: the
    plugin called first wins a key, and a `CipmWarning` names both plugins, unless the
    winner is marked ``tryfirst`` (an override on purpose).

    Raises:
        PluginError: a plugin returned something other than a mapping, or a value that
            fails `check` (naming the plugin and the key).
    """
    table: dict[str, Any] = {}
    source: dict[str, Any] = {}
    for impl in reversed(hook_caller(name, blocked, pm).get_hookimpls()):  # call order
        result = impl.function()
        if not isinstance(result, Mapping):
            raise PluginError(
                f"{name} of plugin '{impl.plugin_name}' must return a mapping of name to "
                f"{what}, got {result!r}"
            )
        for key, value in result.items():
            if not check(value):
                raise PluginError(
                    f"{what} for '{key}' from plugin '{impl.plugin_name}' is not valid: {value!r}"
                )
            if key not in table:
                table[key], source[key] = value, impl
            elif not source[key].tryfirst:
                warnings.warn(
                    f"plugins '{source[key].plugin_name}' and '{impl.plugin_name}' both give "
                    f"a {what} for '{key}'; '{source[key].plugin_name}' wins. Mark the "
                    "winner's hook @cipm.hookimpl(tryfirst=True) if it overrides on purpose.",
                    CipmWarning,
                    stacklevel=3,
                )
    return table


def method_of(
    hook: str, what: str, method: Any, blocked: Iterable[str] = (), kind: type | None = None
) -> Any:
    """The method a verb's ``method=`` names in the registry of hook `hook` (see
    `plugin_table`), or `method` itself if it is already one (an instance of `kind`, or a
    function where the registry holds functions).

    Raises:
        CipmError: a name no plugin registers (listing those that are), or neither a name
            nor a method.
    """
    check: Callable[[Any], bool] = callable if kind is None else (lambda v: isinstance(v, kind))
    if not isinstance(method, str):
        if check(method):
            return method
        raise CipmError(f"method must be a name or a {what}, got {type(method).__name__}")
    table = plugin_table(hook, what, blocked, check=check)
    if method not in table:
        raise CipmError(f"unknown {what} {method!r}; use one of {sorted(table)}")
    return table[method]


def op_rules(
    pm: pluggy.PluginManager | None = None, *, blocked: Iterable[str] = ()
) -> dict[str, Callable[..., None]]:
    """Every plugin's symmetry rules merged into one table (see `plugin_table`)."""
    return plugin_table("cipm_rules", "rule", blocked, pm)


def op_roles(blocked: Iterable[str] = ()) -> dict[str, OpRole]:
    """Every plugin's op roles merged into one table (see `cipm_op_roles`)."""
    return plugin_table("cipm_op_roles", "role", blocked, check=lambda r: r in ("view", "affine"))


def resized(module: torch.nn.Module, blocked: Iterable[str] = ()) -> None:
    """Let every plugin update `module`'s size attributes to its resized tensors."""
    hook_caller("cipm_resized", blocked)(module=module)


def reset_running_stats(
    module: torch.nn.Module, blocked: Iterable[str] = ()
) -> Callable[[], None] | None:
    """The first plugin's preparation of `module` to re-estimate its running statistics, or
    None if no plugin says it keeps any (see `cipm_reset_running_stats`)."""
    result: Callable[[], None] | None = hook_caller("cipm_reset_running_stats", blocked)(
        module=module
    )
    return result


def affine_parameters(
    module: torch.nn.Module, blocked: Iterable[str] = ()
) -> tuple[str, str] | None:
    """The names of `module`'s own parameters that scale and shift each unit it outputs,
    ``(weight, bias)``, from the first plugin that knows (see `cipm_affine_parameters`), or
    None."""
    result: tuple[str, str] | None = hook_caller("cipm_affine_parameters", blocked)(module=module)
    return result


def for_op(table: Mapping[str, Any], op: str) -> Any:
    """What `table` (keyed by op overload or packet) holds for op overload `op`
    ("aten.add.Tensor"): the overload's entry, else its packet's ("aten.add"), else None."""
    return table.get(op) or table.get(op.rsplit(".", 1)[0])


def _checked(pm: pluggy.PluginManager, blocked: Iterable[str]) -> list[str]:
    names = sorted(set(blocked))
    unknown = [n for n in names if pm.get_plugin(n) is None and not pm.is_blocked(n)]
    if unknown:
        known = sorted(n for n, p in pm.list_name_plugin() if p is not None)
        raise PluginError(f"no plugin named {unknown} to block; plugins are {known}")
    return names

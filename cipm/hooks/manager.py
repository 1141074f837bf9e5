"""The plugin manager: hook specs, built-in and third-party plugins from the `cipm` entry points."""

from __future__ import annotations

import functools
from collections.abc import Iterable
from typing import TYPE_CHECKING

import pluggy
import torch

from cipm.hooks import hookspecs

if TYPE_CHECKING:
    from cipm.discovery.rules import Rule
from cipm.errors import PluginError

__all__ = ["get_plugin_manager", "list_plugins", "op_rules", "resized"]

ENTRY_POINT_GROUP = "cipm"


def get_plugin_manager(blocked: Iterable[str] = ()) -> pluggy.PluginManager:
    """A plugin manager with every `cipm` entry-point plugin loaded except the `blocked` ones.

    Args:
        blocked: plugin names (entry-point names, e.g. ``"torch_layers"``) not to load.
    """
    pm = pluggy.PluginManager("cipm")
    pm.add_hookspecs(hookspecs)
    for name in blocked:
        pm.set_blocked(name)
    try:
        pm.load_setuptools_entrypoints(ENTRY_POINT_GROUP)
    except Exception as e:  # an import error inside someone's plugin
        raise PluginError(f"loading a '{ENTRY_POINT_GROUP}' entry-point plugin failed: {e}") from e
    pm.check_pending()
    return pm


@functools.lru_cache(maxsize=8)
def _default_manager(blocked: tuple[str, ...]) -> pluggy.PluginManager:
    return get_plugin_manager(blocked)


def list_plugins(blocked: Iterable[str] = ()) -> list[str]:
    """Names of the loaded plugins."""
    pm = _default_manager(tuple(sorted(blocked)))
    return sorted(name for name, plugin in pm.list_name_plugin() if plugin is not None)


def op_rules(pm: pluggy.PluginManager | None = None) -> dict[str, Rule]:
    """Every plugin's rules merged into one table; the first plugin called wins a key."""
    pm = pm or _default_manager(())
    table: dict[str, Rule] = {}
    for rules in pm.hook.cipm_rules():
        if not hasattr(rules, "items"):
            raise PluginError(f"cipm_rules must return a mapping of op name to rule, got {rules!r}")
        for op, rule in rules.items():
            if not callable(rule):
                raise PluginError(f"rule for '{op}' is not callable: {rule!r}")
            table.setdefault(op, rule)
    return table


def resized(module: torch.nn.Module, pm: pluggy.PluginManager | None = None) -> None:
    """Let every plugin update `module`'s size attributes to its resized tensors."""
    (pm or _default_manager(())).hook.cipm_resized(module=module)

"""The plugin boundary: hook specifications (the plugin author's reference) and the plugin
manager that loads built-in and third-party plugins."""

from cipm.hooks.hookspecs import hookimpl, hookspec
from cipm.hooks.manager import get_plugin_manager, list_plugins

__all__ = ["get_plugin_manager", "hookimpl", "hookspec", "list_plugins"]

"""The one error family of cipm: every failure a user can cause derives from `CipmError`."""

from __future__ import annotations

__all__ = [
    "CipmError",
    "CipmWarning",
    "PermutationError",
    "PluginError",
    "ResizeError",
    "RuleError",
    "TraceError",
    "UnknownGroupError",
    "UnsupportedOpError",
]


class CipmError(Exception):
    """Base class of every error cipm raises on bad input or an unsupported model."""


class CipmWarning(UserWarning):
    """Something cipm did differently from what was asked, and why."""


class UnknownGroupError(CipmError, KeyError):
    """A group name that a graph, permutation or statistics do not hold (a KeyError too, as
    a mapping's, so ``in`` and ``.get`` work as usual)."""

    def __str__(self) -> str:
        return str(self.args[0]) if self.args else ""


class TraceError(CipmError):
    """`torch.export` could not trace the model; the export error is chained as the cause."""


class ResizeError(CipmError):
    """A module cannot take the sizes pruning gave its tensors (a plugin said so).

    Attributes:
        module: the module's path in the model (``""`` for the model itself).
    """

    def __init__(self, module: str, message: str) -> None:
        self.module = module
        super().__init__(f"module '{module or '<top>'}': {message}")


class UnsupportedOpError(CipmError):
    """An op in the traced graph has no symmetry rule.

    Attributes:
        op: the ATen op name, e.g. ``aten.fft_rfft.default``.
        module: the module path the op was called from (``""`` for the top level).
        source: the source line that called it, when torch.export recorded one.
    """

    def __init__(self, op: str, module: str, source: str) -> None:
        self.op, self.module, self.source = op, module, source
        where = f"in module '{module or '<top>'}'" + (f" at {source}" if source else "")
        super().__init__(
            f"no symmetry rule for op '{op}' {where}. Pass unknown='freeze' to cipm.trace to "
            "treat every axis this op touches as fixed (always correct, fewer symmetries), "
            "or register a rule for it in a plugin (see docs/plugins.md)."
        )


class RuleError(CipmError):
    """A symmetry rule failed on a node; names the node, op and module."""


class PermutationError(CipmError, ValueError):
    """A permutation does not fit the symmetry graph or model it is used with."""


class PluginError(CipmError):
    """A plugin could not be loaded or returned something malformed."""

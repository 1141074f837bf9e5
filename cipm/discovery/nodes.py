"""Reading exported graph nodes: where a node came from (module path, source line, for
messages and sites), its op name, arguments and output shapes."""

from __future__ import annotations

from typing import Any

import torch

__all__ = ["bind", "module_path", "op_name", "output_shapes", "single", "source_line"]


def module_path(node: torch.fx.Node) -> str:
    """Path of the innermost module the node was called from ('' at the top level)."""
    stack = node.meta.get("nn_module_stack") or {}
    return str(list(stack.values())[-1][0]) if stack else ""


def source_line(node: torch.fx.Node) -> str:
    """'File "x.py", line N, in f: code' of the innermost frame torch.export recorded."""
    lines = [ln.strip() for ln in (node.meta.get("stack_trace") or "").strip().splitlines()]
    for i in range(len(lines) - 1, -1, -1):
        if lines[i].startswith("File "):
            code = lines[i + 1] if i + 1 < len(lines) else ""
            return f"{lines[i]}: {code}" if code else lines[i]
    return ""


def bind(node: torch.fx.Node, schema: Any) -> dict[str, Any]:
    if schema is None:
        return {str(i): a for i, a in enumerate(node.args)} | dict(node.kwargs)
    bound: dict[str, Any] = {}
    for i, arg in enumerate(schema.arguments):
        if i < len(node.args) and not arg.kwarg_only:
            bound[arg.name] = node.args[i]
        elif arg.name in node.kwargs:
            bound[arg.name] = node.kwargs[arg.name]
        elif arg.has_default_value():
            bound[arg.name] = arg.default_value
    return bound


def single(val: Any) -> bool:
    return not isinstance(val, tuple | list)


def output_shapes(val: Any) -> list[tuple[int, ...] | None]:
    vals = val if isinstance(val, tuple | list) else [val]
    return [tuple(int(n) for n in v.shape) if isinstance(v, torch.Tensor) else None for v in vals]


def op_name(target: Any) -> str:
    name = getattr(target, "name", None)
    if callable(name):  # OpOverload.name() -> 'aten::linear' ; str(target) -> 'aten.linear.default'
        return str(target)
    return getattr(target, "__qualname__", None) or str(target)

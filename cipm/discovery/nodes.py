"""Where a graph node came from: module path and source line, for messages and sites."""

from __future__ import annotations

import torch

__all__ = ["module_path", "source_line"]


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

"""A symmetry graph as a table for people: one row per group (what ``print(graph)`` shows)."""

from __future__ import annotations

from collections.abc import Sequence

from cipm.graph.parts import PermGroup

__all__ = ["group_table"]


def group_table(model: str, groups: Sequence[PermGroup], max_members: int = 3) -> str:
    """One row per group: name, kind, size (x unit span), nesting, member axes."""
    rows = [("group", "kind", "size", "within", "members")]
    for g in groups:
        size = f"{g.size}" + (f" x {g.unit}" if g.kind.value == "heads" else "")
        shown = ", ".join(f"{m.key}:{m.dim}" for m in g.members[:max_members])
        more = len(g.members) - max_members
        rows.append(
            (g.name, g.kind.value, size, g.within or "", shown + (f" +{more}" if more > 0 else ""))
        )
    widths = [max(len(r[i]) for r in rows) for i in range(4)]
    lines = [
        "  ".join(c.ljust(w) for c, w in zip(r[:4], widths, strict=True)) + "  " + r[4]
        for r in rows
    ]
    lines.insert(1, "-" * max(len(ln) for ln in lines))
    kinds: dict[str, int] = {}
    for g in groups:
        kinds[g.kind.value] = kinds.get(g.kind.value, 0) + 1
    summary = ", ".join(f"{n} {k}" for k, n in kinds.items())
    header = f"SymmetryGraph of {model}: {len(groups)} groups ({summary})"
    return "\n".join([header, *lines])
